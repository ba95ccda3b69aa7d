"""Turning a validated Experiment into a datamodule and a model, with one-line errors for bad input."""

from __future__ import annotations

import inspect
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.params import Experiment

TRAINER_DEFAULTS: dict[str, Any] = {
    "accelerator": "auto",
    "devices": "auto",
    "max_epochs": 1,
    "deterministic": True,
    "log_every_n_steps": 10,
}
# Set by the suite itself; an experiment must not override them.
TRAINER_RESERVED = {"logger", "callbacks", "default_root_dir", "enable_checkpointing"}


def accepted_args(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {n: p for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def check_keys(exp: Experiment, section: str, given: dict[str, Any], allowed: set[str], owner: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ArchbenchError(
            f"experiment '{exp.name}': unknown {section} key '{unknown[0]}' for {owner} (valid: {', '.join(sorted(allowed))})"
        )


def check_experiment(exp: Experiment) -> None:
    """Cheap checks that need no data: names exist and every argument is one the class accepts."""
    from datamodules import DATAMODULES
    from lightning_modules import MODELS

    if exp.model not in MODELS:
        raise ArchbenchError(f"experiment '{exp.name}': unknown model '{exp.model}' (known: {', '.join(sorted(MODELS))})")
    if exp.data not in DATAMODULES:
        raise ArchbenchError(f"experiment '{exp.name}': unknown dataset '{exp.data}' (known: {', '.join(sorted(DATAMODULES))})")
    dm_cls, model_cls = DATAMODULES[exp.data], MODELS[exp.model]
    check_keys(exp, "data_args", exp.data_args, set(accepted_args(dm_cls)), exp.data)
    # Arguments the datamodule supplies (e.g. the vocabulary) are not the experiment's to set.
    supplied = set(getattr(dm_cls, "MODEL_ARGS", ()))
    check_keys(exp, "model_args", exp.model_args, set(accepted_args(model_cls)) - supplied, exp.model)
    import lightning.pytorch as pl

    trainer_ok = set(accepted_args(pl.Trainer)) - TRAINER_RESERVED
    check_keys(exp, "trainer", exp.trainer, trainer_ok, "the Lightning Trainer")


def build_datamodule(exp: Experiment, data_dir: str | None) -> Any:
    from datamodules import DATAMODULES
    from datamodules.sources import DataNotFoundError

    cls = DATAMODULES[exp.data]
    args = dict(exp.data_args)
    if "data_dir" in accepted_args(cls) and args.get("data_dir") is None:
        args["data_dir"] = data_dir
    try:
        dm = cls(**args)
        dm.prepare_data()
        dm.setup("fit")
    except DataNotFoundError as exc:
        raise ArchbenchError(f"experiment '{exp.name}': {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ArchbenchError(f"experiment '{exp.name}': bad data_args for {exp.data}: {exc}") from None
    return dm


def build_model(exp: Experiment, dm: Any, overrides: dict[str, Any] | None = None) -> Any:
    from lightning_modules import MODELS

    args = dm.model_args() | exp.model_args | (overrides or {})
    try:
        return MODELS[exp.model](**args)
    except (ValueError, TypeError) as exc:
        raise ArchbenchError(f"experiment '{exp.name}': bad model_args for {exp.model}: {exc}") from None


def trainer_args(exp: Experiment, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    return TRAINER_DEFAULTS | exp.trainer | (overrides or {})
