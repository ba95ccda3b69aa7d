"""What stops a run, and the guard that stops a diverging one.

A budget is epochs or steps; ``max_time`` is only a safety limit. Every run records which of these ended
it (``stopped_by``), so a result cut by a busy machine is marked, never silently compared with full ones.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

STOP_REASONS = ("max_epochs", "max_steps", "max_time", "early_stopping", "diverged")


class DivergenceGuard(pl.Callback):
    """Stops training when a training loss is NaN/inf, or grows ``ratio`` times past its first value.

    Checked every ``every`` steps and at each epoch's end: a NaN stays NaN, so a sparse check still
    catches it, and each check costs a host sync that a GPU run should not pay on every step.
    """

    def __init__(self, ratio: float = 100.0, every: int = 10) -> None:
        self.ratio, self.every = ratio, every
        self.first: dict[str, float] = {}
        self.reason: str | None = None

    def _losses(self, trainer: pl.Trainer, outputs: Any) -> dict[str, float]:
        found: dict[str, float] = {}
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            found["loss"] = float(loss.detach())
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/") and "loss" in key and isinstance(value, torch.Tensor) and value.numel() == 1:
                found[key] = float(value)
        return found

    def _check(self, trainer: pl.Trainer, outputs: Any) -> None:
        for key, value in self._losses(trainer, outputs).items():
            if not math.isfinite(value):
                self.reason = f"{key} is {value} at step {trainer.global_step}"
            elif key not in self.first:
                self.first[key] = value
            elif self.first[key] > 0 and value > self.ratio * self.first[key]:
                self.reason = (f"{key} = {value:.4g} at step {trainer.global_step}, over {self.ratio:g}x its first "
                               f"value {self.first[key]:.4g}")
            if self.reason:
                trainer.should_stop = True
                return

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.reason is None and (trainer.global_step % self.every == 0 or batch_idx == 0):
            self._check(trainer, outputs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.reason is None:
            self._check(trainer, None)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.reason is not None:
            return
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/") and "loss" in key and isinstance(value, torch.Tensor) and value.numel() == 1:
                if not math.isfinite(float(value)):
                    self.reason = f"{key} is {float(value)} at epoch {trainer.current_epoch}"
                    trainer.should_stop = True
                    return


def stopped_by(trainer: pl.Trainer, guard: DivergenceGuard) -> str:
    """Which limit ended a finished fit: the budget, the safety limit, early stopping or divergence."""
    from lightning.pytorch.callbacks import Timer

    if guard.reason is not None:
        return "diverged"
    if 0 < trainer.max_steps <= trainer.global_step:
        return "max_steps"
    if trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs:
        return "max_epochs"
    for cb in trainer.callbacks:
        if isinstance(cb, Timer) and cb.time_remaining("train") is not None and cb.time_remaining("train") <= 0:
            return "max_time"
    # Neither budget nor the safety limit: a callback ended the fit (EarlyStopping or another that stops it).
    return "early_stopping"
