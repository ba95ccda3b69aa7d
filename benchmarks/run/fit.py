"""The part of a run that decides its numbers: seeding, the data and the model, the Trainer, fit, and the test
pass on the best checkpoint.

This file, with ``build.py``, ``callbacks.py`` and ``guards.py``, is the run path that ``code_hash`` covers
(``benchmarks.core.provenance.NUMERIC_RUN_PATH``): editing it stales finished seeds and resumable checkpoints.
What only carries or guards the numbers (tracking, leases, state folders, result files) lives in ``train.py``
and its neighbours, so mending a fault path there leaves finished seeds current.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError, DivergedError
from benchmarks.core.params import Experiment
from benchmarks.run.build import build_datamodule, build_model


@dataclass
class Fitted:
    """What fit and test left: the test metrics (with ``<monitor>_best``), what stopped the fit, where the
    best and last checkpoints are, and the fit's wall time."""

    metrics: dict[str, float]
    stopped_by: str
    epochs: int
    steps: int
    best_path: str
    last_path: str
    monitor: str
    fit_s: float


def seed_and_build(exp: Experiment, seed: int, data_dir: str | None, datamodule: Any = None,
                   overrides: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Seed everything (weights, shuffling, workers, sampling noise), then build the datamodule and model."""
    import lightning.pytorch as pl

    pl.seed_everything(seed, workers=True, verbose=False)
    dm = datamodule if datamodule is not None else build_datamodule(exp, data_dir)
    return dm, build_model(exp, dm, overrides)


def checkpoint_monitor(model: Any, override: str | None) -> tuple[str, str]:
    """The key "best" is chosen on, and its mode: the model's own (a GAN keeps the best val FID), else val/loss."""
    from benchmarks.core.metric_keys import direction

    own = getattr(model, "monitor", "val/loss")
    monitor = override or own
    if monitor == own:
        return monitor, getattr(model, "monitor_mode", "min")
    return monitor, "max" if direction(monitor) == "max" else "min"


def fit_and_test(exp: Experiment, seed: int, model: Any, dm: Any, trainer_args: dict[str, Any], state: Path,
                 logger: Any, resume_from: str | None, *, extra_callbacks: list[Any], monitor: str | None,
                 progress_bar: bool, divergence_ratio: float, skip_test: bool) -> Fitted:
    """Fit (resuming from ``resume_from`` if given), then test the best checkpoint; a divergence raises."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

    from benchmarks.run.callbacks import CurveWriter, SampleLogger
    from benchmarks.run.guards import DivergenceGuard, stopped_by

    key, mode = checkpoint_monitor(model, monitor)
    best = ModelCheckpoint(dirpath=state / "ckpt", filename="best", monitor=key, mode=mode,
                           auto_insert_metric_name=False)
    # last.ckpt every epoch, whatever the monitor did: Lightning 2.6's save_last only writes it on epochs that
    # improved the best. Listed after ``best`` so the file carries the best score of the same epoch.
    last = ModelCheckpoint(dirpath=state / "ckpt", filename="last", enable_version_counter=False)
    guard = DivergenceGuard(ratio=divergence_ratio)
    callbacks = [guard, best, last, CurveWriter(state / "curve.csv"), SampleLogger(state / "samples"),
                 *extra_callbacks]
    if progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    trainer = pl.Trainer(**trainer_args, logger=logger, callbacks=callbacks, default_root_dir=state,
                         enable_progress_bar=progress_bar, enable_model_summary=False)
    started = time.perf_counter()
    trainer.fit(model, datamodule=dm, ckpt_path=resume_from)
    fit_s = time.perf_counter() - started
    stop = stopped_by(trainer, guard)
    if stop == "diverged":
        raise DivergedError(f"experiment '{exp.name}' seed {seed} diverged: {guard.reason}; nothing was published; "
                            f"lower the learning rate (or raise divergence_ratio if this loss may grow)")
    tested = [] if skip_test else trainer.test(model, datamodule=dm, ckpt_path="best" if best.best_model_path else None,
                                              verbose=False)
    metrics = finite_metrics(exp, seed, tested, skip_test)
    if best.best_model_score is not None:
        metrics[f"{key}_best"] = float(best.best_model_score)
    return Fitted(metrics=metrics, stopped_by=stop, epochs=trainer.current_epoch, steps=trainer.global_step,
                  best_path=best.best_model_path, last_path=last.best_model_path, monitor=key, fit_s=round(fit_s, 2))


def finite_metrics(exp: Experiment, seed: int, tested: list[dict[str, Any]], skip_test: bool) -> dict[str, float]:
    """The test pass's numbers; a non-finite loss is a divergence, other non-finite values are left out."""
    if not tested and not skip_test:
        raise ArchbenchError(f"experiment '{exp.name}' seed {seed}: the test pass logged no metric; check the data "
                             f"(an empty or garbage test split?)")
    metrics = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v) and "loss" in k)
    if bad:
        raise DivergedError(f"experiment '{exp.name}' seed {seed}: {bad[0]} is {metrics[bad[0]]} on the test set; "
                            f"nothing was published; lower the learning rate or fix the data")
    return {k: v for k, v in metrics.items() if math.isfinite(v)}
