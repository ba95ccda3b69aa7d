"""Checks that run before any training, so bad input costs one line and leaves nothing behind.

``check_experiment`` (build.py) knows the names; this module knows the values: budgets, seeds, numbers
that must be finite, Trainer arguments that Lightning would only reject deep inside ``fit``, and folders
the run must be able to write.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.params import Experiment


def _non_finite(tree: Any, path: str) -> str | None:
    if isinstance(tree, float) and not math.isfinite(tree):
        return path
    if isinstance(tree, dict):
        for key, value in tree.items():
            found = _non_finite(value, f"{path}.{key}")
            if found:
                return found
    if isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            found = _non_finite(value, f"{path}[{i}]")
            if found:
                return found
    return None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_budget(exp: Experiment, trainer: dict[str, Any]) -> None:
    """A budget is a positive number of epochs or steps; max_time may only be a safety limit beside it."""
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if steps not in (None, -1) and not _positive_int(steps):
        raise ArchbenchError(f"experiment '{exp.name}': trainer.max_steps must be a positive integer (or -1 for "
                             f"none), got {steps!r}")
    has_steps = _positive_int(steps)
    if epochs is None and not has_steps:
        raise ArchbenchError(f"experiment '{exp.name}': set trainer.max_epochs or trainer.max_steps; a budget is "
                             f"epochs or steps (max_time is only a safety limit)")
    if epochs is not None and not _positive_int(epochs):
        raise ArchbenchError(f"experiment '{exp.name}': trainer.max_epochs must be a positive integer, got {epochs!r} "
                             f"(0 would test an untrained model, -1 would train forever)")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = trainer.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ArchbenchError(f"experiment '{exp.name}': trainer.{key} must be a positive count or fraction, "
                                 f"got {value!r}")


def check_values(exp: Experiment) -> None:
    for section in ("model_args", "data_args", "trainer"):
        where = _non_finite(getattr(exp, section), section)
        if where:
            raise ArchbenchError(f"experiment '{exp.name}': {where} is not a finite number; give a finite value")
    if len(set(exp.seeds)) != len(exp.seeds):
        raise ArchbenchError(f"experiment '{exp.name}': seeds {list(exp.seeds)} repeat a seed; a repeated seed is the "
                             f"same run, not another sample; list distinct seeds")
    if any(s < 0 for s in exp.seeds):
        raise ArchbenchError(f"experiment '{exp.name}': seeds must be non-negative integers, got {list(exp.seeds)}")


def check_seed_choice(exp: Experiment, seeds: list[int] | None) -> None:
    for seed in seeds or []:
        if seed not in exp.seeds:
            raise ArchbenchError(f"--seed {seed} is not one of {exp.name}'s seeds {list(exp.seeds)}; add it to "
                                 f"experiments.{exp.name}.seeds in params.yaml or pick one of these")


def check_trainer(exp: Experiment, args: dict[str, Any]) -> None:
    """Build the Trainer once, bare, so Lightning's own argument errors come out as one line before training."""
    import lightning.pytorch as pl
    import torch

    accelerator = str(args.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ArchbenchError(f"experiment '{exp.name}': trainer.accelerator is '{accelerator}' but this machine has "
                             f"no CUDA GPU; use accelerator: auto (or cpu)")
    # Quiet: this Trainer only checks arguments; its "GPU available" lines would come again from the real one.
    chatty = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero")]
    levels = [log.level for log in chatty]
    for log in chatty:
        log.setLevel(logging.WARNING)
    try:
        pl.Trainer(**args, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False)
    except Exception as exc:  # Lightning raises several types (MisconfigurationException, ValueError, TypeError)
        raise ArchbenchError(f"experiment '{exp.name}': bad trainer settings: {exc}") from None
    finally:
        for log, level in zip(chatty, levels):
            log.setLevel(level)


DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def resolve_strategy(exp: Experiment, args: dict[str, Any]) -> dict[str, Any]:
    """The Trainer arguments with a DDP strategy that lets a step leave networks without gradients, for a model that
    updates its networks in turn (``alternates_networks``: the GAN, pix2pix, CycleGAN). Plain DDP refuses such a
    step, so ``strategy: ddp`` becomes ``ddp_find_unused_parameters_true``, and ``auto`` does too when the run
    will have more than one device (Lightning's ``auto`` picks plain DDP there). Other models keep their arguments."""
    from lightning_modules import MODELS
    from lightning_modules.contracts import declared

    if not declared(MODELS[exp.model], "alternates_networks"):
        return args
    strategy = args.get("strategy", "auto")
    if strategy in DDP_STRATEGIES:
        return args | {"strategy": f"{strategy}_find_unused_parameters_true"}
    if strategy == "auto" and device_count(args) > 1:
        return args | {"strategy": "ddp_find_unused_parameters_true"}
    return args


def device_count(args: dict[str, Any]) -> int:
    """How many devices the Trainer arguments give one node, as Lightning counts them."""
    import torch

    accelerator, devices = str(args.get("accelerator", "auto")), args.get("devices", "auto")
    gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices == "auto":
        return gpus or 1
    if isinstance(devices, int) and not isinstance(devices, bool):
        return gpus if devices == -1 else devices
    return 1

