"""The everyday run's resume and staleness checks, on a preset small enough for seconds: the full versions
(tests/test_pipeline.py, tests/test_processes.py: kill -9, new commits, longer budgets) stay slow."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.core.params import Experiment, experiment_from_params, load_params
from benchmarks.run.train import run_experiment, run_seed, seed_state_dir
from tests.conftest import mlflow_runs, run_options
from tests.test_pipeline import _kill_after_first_epoch


def tiny_hello_lstm() -> Experiment:
    """hello_lstm at 2 epochs of 2 passes over its ten words, 4 hidden units, no samples."""
    exp = experiment_from_params(load_params(), "hello_lstm")
    return replace(exp, model_args=exp.model_args | {"hidden_size": 4, "sample_count": 0},
                   data_args=exp.data_args | {"repeats": 2}, trainer=exp.trainer | {"max_epochs": 2})


def test_a_killed_run_resumes_in_its_mlflow_run_and_lands_where_a_straight_run_lands(project: Path,
                                                                                     one_thread: None) -> None:
    exp = tiny_hello_lstm()
    with pytest.raises(SystemExit):
        run_seed(exp, 0, run_options(project, extra_callbacks=[_kill_after_first_epoch()]))
    (killed,) = mlflow_runs(project)
    assert killed.info.status == "KILLED"
    assert (seed_state_dir(exp, 0, run_options(project)) / "ckpt" / "last.ckpt").is_file()
    resumed = run_seed(exp, 0, run_options(project))
    (run,) = mlflow_runs(project)
    assert run.info.run_id == killed.info.run_id == resumed["run_id"] and run.info.status == "FINISHED"
    assert resumed["epochs"] == 2
    straight = run_seed(exp, 0, run_options(project, resume=False, results_dir=project / "straight"))
    assert straight["metrics"] == pytest.approx(resumed["metrics"], rel=1e-6)


def test_a_seed_of_another_config_is_left_out_of_the_merge(project: Path, one_thread: None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    exp = tiny_hello_lstm()
    run_experiment(exp, run_options(project), seeds=[0])
    changed = replace(exp, model_args=exp.model_args | {"hidden_size": 5})
    summary = run_experiment(changed, run_options(project), seeds=[1])
    assert summary["seeds"] == [1] and summary["missing_seeds"] == [0]
    assert f"hello_lstm: left out seed 0: made by another config of hello_lstm ({exp.config_hash()})" in (
        capsys.readouterr().out)
    numbers = json.loads((project / "results" / "hello_lstm" / "metrics.json").read_text())
    assert numbers["n_seeds"] == 1 and numbers["test/loss"]["mean"] == summary["per_seed"]["1"]["test/loss"]
