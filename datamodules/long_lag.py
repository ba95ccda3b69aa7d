"""The long-lag task: remember the first symbol of a sequence until its last step.

Hochreiter & Schmidhuber's argument for the LSTM (1997, experiment 2, "noise-free sequences with long
time lags"): the class is given only by the first symbol, every later symbol is a distractor, and the
answer is asked for at the last step, ``lag`` steps later. An Elman net's error signal to the first
step shrinks geometrically with the lag (vanishing gradients); the LSTM's cell state carries it.

Batches are ``(x, y)``: x float32 one-hot [batch, lag, num_symbols], y int64 [batch] class ids.
Symbols 0..num_classes-1 are the class markers, they occur only at step 0; the distractors are the
other num_symbols - num_classes symbols, drawn uniformly at every later step.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from datamodules.checks import check_int
from datamodules.loaders import SplitLoaders, resolve_workers

SPLITS = ("train", "val", "test")


def make_long_lag(size: int, lag: int, num_symbols: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` sequences as symbol ids [size, lag] and their classes [size], from a private generator.

    Classes are balanced (each occurs size // num_classes or one more times, in random order), so any
    predictor that ignores the first symbol scores 1 / num_classes up to the rounding of ``size``.
    """
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(size) % num_classes)[torch.randperm(size, generator=gen)]  # [size]
    distractors = torch.randint(num_classes, num_symbols, (size, lag), generator=gen)  # [size, lag]
    distractors[:, 0] = labels
    return distractors, labels


class LongLagDataModule(SplitLoaders, pl.LightningDataModule):
    """Synthetic, generated at setup: split k of data_seed s uses generator seed ``s * 1000 + k`` (train 0,
    val 1, test 2), so the splits are fixed by (data_seed, sizes, lag, alphabet) and never by the run's seed.
    """

    MODEL_ARGS = ("input_size", "num_classes")

    def __init__(self, batch_size: int = 64, lag: int = 50, num_symbols: int = 8, num_classes: int = 4,
                 train_size: int = 4000, val_size: int = 500, test_size: int = 1000, data_seed: int = 0,
                 num_workers: int | None = None) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_int("lag", lag, 1)
        check_int("num_classes", num_classes, 2)
        # At least one distractor symbol, else steps after the first have nothing to show.
        check_int("num_symbols", num_symbols, num_classes + 1)
        for name, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            check_int(name, value, 1)
        check_int("data_seed", data_seed, 0)
        self.save_hyperparameters()
        self.batch_size, self.lag, self.num_symbols, self.num_classes = batch_size, lag, num_symbols, num_classes
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.data_seed, self.num_workers = data_seed, resolve_workers(num_workers)
        self._data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self._data:
            return
        for k, split in enumerate(SPLITS):
            self._data[split] = make_long_lag(self.sizes[split], self.lag, self.num_symbols, self.num_classes,
                                              self.data_seed * 1000 + k)

    def model_args(self) -> dict[str, Any]:
        return {"input_size": self.num_symbols, "num_classes": self.num_classes}

    def symbols(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A split as (symbol ids [N, lag], classes [N])."""
        self.setup()
        return self._data[split]

    def _dataset(self, split: str) -> TensorDataset:
        self.setup()
        ids, labels = self._data[split]
        # One-hot up front: 4000 x 50 x 8 floats is 6 MB, cheaper than encoding every batch.
        return TensorDataset(F.one_hot(ids, self.num_symbols).float(), labels)  # [N, lag, symbols], [N]

    def _settings(self) -> dict[str, Any]:
        return {"lag": self.lag, "num_symbols": self.num_symbols, "num_classes": self.num_classes,
                "sizes": self.sizes, "data_seed": self.data_seed}

    def content_hash(self) -> str:
        """sha256 over the generated symbols and the settings: equal hashes mean equal splits."""
        self.setup()
        digest = hashlib.sha256(json.dumps({"class": type(self).__name__, **self._settings()}, sort_keys=True).encode())
        for split in SPLITS:
            for t in self._data[split]:
                digest.update(t.numpy().tobytes())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            "name": "long_lag",
            "source": "synthetic (datamodules/long_lag.py make_long_lag)",
            **self._settings(),
            "splits": dict(self.sizes),
            "split_rule": f"split k (train 0, val 1, test 2) generated with torch.Generator seed {self.data_seed}*1000+k; "
            "balanced classes; class = symbol at step 0, distractors after it; label asked at the last step",
            "chance_acc": 1.0 / self.num_classes,
        }
