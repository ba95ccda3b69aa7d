"""The contract every registered model and dataset meets, with no per-model test code: each has an
experiment in params.yaml, every experiment validates, and a tiny version of one experiment per model
trains, validates, tests and tracks through the suite for a couple of batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.build import accepted_args, check_experiment
from benchmarks.params import Experiment, experiment_from_params, experiment_names, load_params
from benchmarks.train import run_seed
from datamodules import DATAMODULES
from lightning_modules import MODELS
from tests.conftest import ROOT, run_options

PARAMS = load_params(ROOT / "params.yaml")
ALL = [experiment_from_params(PARAMS, n) for n in experiment_names(PARAMS)]
# Cheaper evaluation settings for the contract run only; the experiments' own values stay in params.yaml.
TINY_MODEL_ARGS: dict[str, dict] = {
    "vae": {"nll_k": [1, 5], "sample_count": 4},
    "hvae": {"nll_k": [1, 5], "sample_count": 4},
    "ddpm": {"bpd_images": 4, "bpd_timesteps": 4, "sample_steps": 4, "sample_count": 4, "base_channels": 8},
    "seq2seq": {"beam_size": 2, "max_decode_len": 6, "embed_dim": 16, "hidden_size": 16, "sample_count": 2},
}
TINY_DATA_ARGS: dict[str, dict] = {
    "fashion_video": {"train_videos": 8, "val_videos": 4, "test_videos": 4, "batch_size": 4},
    "long_lag": {"train_size": 64, "val_size": 32, "test_size": 32, "lag": 10},
}
TINY_TRAINER = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 1,
                "max_time": None}


def _first_using(model: str) -> Experiment:
    return next(e for e in ALL if e.model == model)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_has_an_experiment(name: str) -> None:
    assert any(e.model == name for e in ALL), f"add an experiment using '{name}' to params.yaml"


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_every_dataset_is_used(name: str) -> None:
    assert any(e.data == name for e in ALL), f"add an experiment using dataset '{name}' to params.yaml"


@pytest.mark.parametrize("cls", [*MODELS.values(), *DATAMODULES.values()], ids=lambda c: c.__name__)
def test_no_constructor_argument_shadows_the_run_seed(cls: type) -> None:
    # Lightning logs every hparam to the run's MLflow params, where "seed" already holds the run's seed;
    # a second "seed" (e.g. the seed of a synthetic dataset) makes MLflow refuse the run for seed != 0.
    assert "seed" not in accepted_args(cls), f"rename {cls.__name__}'s 'seed' argument (e.g. data_seed)"


@pytest.mark.parametrize("exp", ALL, ids=lambda e: e.name)
def test_every_experiment_validates(exp: Experiment) -> None:
    check_experiment(exp)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_tiny_run_per_model(model: str, project: Path) -> None:
    import dataclasses

    exp = _first_using(model)
    data_args = dict(exp.data_args)
    if "limit" in accepted_args(DATAMODULES[exp.data]):
        data_args["limit"] = 64  # a few batches of real data
    if "download" in accepted_args(DATAMODULES[exp.data]):
        data_args["download"] = False  # the tests never reach the network
    # Frozen feature extractors come from another experiment's output; the contract run does without.
    data_args |= TINY_DATA_ARGS.get(exp.data, {})
    model_args = {k: (None if k.endswith("_checkpoint") else v) for k, v in exp.model_args.items()}
    model_args |= TINY_MODEL_ARGS.get(model, {})
    exp = dataclasses.replace(exp, data_args=data_args, model_args=model_args)
    from benchmarks.errors import ArchbenchError

    try:
        result = run_seed(exp, exp.seeds[0], run_options(project, trainer_overrides=TINY_TRAINER))
    except ArchbenchError as exc:
        if "not found" in str(exc):
            pytest.skip(f"data for {exp.data} is not on this machine: {exc}")
        raise
    assert result["metrics"], "test metrics were logged"
    assert any(k.startswith("test/") for k in result["metrics"])
    assert result["settings"]["data_hash"]
