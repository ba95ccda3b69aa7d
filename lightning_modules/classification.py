"""What the suite's classifiers share: cross-entropy training and top-1 accuracy on val and test.

The domain classifier (one label per image), the sequence classifier (one label per sequence) and the
frame labeller (one label per frame) differ only in how a batch becomes logits and targets; every
number is logged per target, so an epoch value is the mean over images, sequences or frames.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy


class ClassificationModule(pl.LightningModule):
    """Subclasses call ``init_accuracy(num_classes)`` in ``__init__`` and may override ``logits_and_targets``."""

    monitor = "val/loss"  # the checkpoint keeps the epoch of the lowest validation objective
    monitor_mode = "min"

    def init_accuracy(self, num_classes: int) -> None:
        # "micro" = plain top-1 accuracy; torchmetrics' default "macro" would average per-class recalls.
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def logits_and_targets(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Logits [N, num_classes] and class targets [N] of a batch ``(inputs, labels)``."""
        x, y = batch
        return self(x), y

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        logits, y = self.logits_and_targets(batch)
        loss = F.cross_entropy(logits, y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=y.numel())
        return loss

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str, accuracy: MulticlassAccuracy) -> None:
        logits, y = self.logits_and_targets(batch)
        n = y.numel()  # weights by targets: the epoch value is the per-target mean
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, prog_bar=stage == "val", batch_size=n,
                 sync_dist=True)
        accuracy(logits, y)
        self.log(f"{stage}/acc", accuracy, on_epoch=True, prog_bar=stage == "val", batch_size=n, sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc)
