"""A callback that watches, from inside ``fit``, what only the suite knows: whether this worker still holds its
lease (checked before every checkpoint and, at most twice a second, at the end of a training step, so a worker
woken from a freeze stops before it writes), and the step of the last checkpoint (a run stopped by a tracker
outage forgets the values logged after it, which the resumed run logs again)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl

CHECK_EVERY_S = 0.5


class RunWatch(pl.Callback):
    def __init__(self, fence: Callable[[str], None] | None, link: Any) -> None:
        self.fence, self.link = fence, link
        self._checked = -1e18

    def _check(self, what: str, always: bool = False) -> None:
        now = time.monotonic()
        if self.fence is not None and (always or now - self._checked >= CHECK_EVERY_S):
            self._checked = now
            self.fence(what)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.is_global_zero:
            self._check("its training values")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._check("its validation values", always=True)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.is_global_zero:
            self._check("a checkpoint", always=True)
            if self.link is not None:
                self.link.checkpoint_step = trainer.global_step
