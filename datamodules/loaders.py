"""The one seeded DataLoader of the suite, the worker default, and the train/val/test trio built on them.

Reproducibility: the loader's seed is ``torch.initial_seed()`` read when the loader is made, so
``seed_everything(s)`` fixes every shuffle; train order comes from an ``EpochShuffleSampler`` (epoch k's
order depends only on (seed, k), so a resumed run replays it), and workers are seeded by Lightning's
``pl_worker_init_function``. The generators stay on the CPU even when training runs on a GPU: CPU and
CUDA generators draw different streams, and the order must not depend on the device.

GPU-ready: batches go to pinned memory when CUDA is available (a faster, asynchronous copy to the GPU),
and ``num_workers=None`` (every datamodule's default) means 0 worker processes on a CPU-only machine,
where workers only compete with training for cores, and ``min(4, cpus - 1)`` when a GPU is present, so
batch assembly overlaps the GPU's work. An explicit integer is always used as given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset

from datamodules.checks import check_optional_int
from datamodules.sampling import SEED_MODULUS, EpochShuffleSampler

# seed -> what a DataLoader takes as ``sampler`` (indices) or ``batch_sampler`` (lists of indices).
SamplerFactory = Callable[[int], Iterable[Any]]
Collate = Callable[[list[Any]], Any]  # a batch's items -> the batch
MAX_DEFAULT_WORKERS = 4


def loader_seed() -> int:
    """The seed of loaders made now; reduced so an unseeded process's 64-bit seed fits every generator."""
    return torch.initial_seed() % SEED_MODULUS


def default_workers() -> int:
    """0 without a GPU; with one, min(4, cpus - 1): one core stays free for the training process."""
    if not torch.cuda.is_available():
        return 0
    return max(0, min(MAX_DEFAULT_WORKERS, (os.cpu_count() or 1) - 1))


def resolve_workers(num_workers: int | None) -> int:
    """A datamodule's ``num_workers`` argument: an integer >= 0 as given, None for ``default_workers()``."""
    check_optional_int("num_workers", num_workers, 0)
    return default_workers() if num_workers is None else num_workers


def seeded_loader(dataset: Dataset[Any], batch_size: int, *, train: bool, num_workers: int,
                  collate_fn: Collate | None = None, sampler: SamplerFactory | None = None,
                  batch_sampler: SamplerFactory | None = None) -> DataLoader[Any]:
    """A DataLoader whose order is fixed by the current torch seed.

    ``sampler`` / ``batch_sampler`` are factories called with the loader's seed; without them, train
    shuffles with an ``EpochShuffleSampler`` and val/test keep the dataset's order.
    """
    seed = loader_seed()
    if batch_sampler is not None:
        order: dict[str, Any] = {"batch_sampler": batch_sampler(seed)}
    else:
        if sampler is not None:
            chosen = sampler(seed)
        else:
            chosen = EpochShuffleSampler(len(dataset), seed) if train else None  # type: ignore[arg-type]
        order = {"batch_size": batch_size, "sampler": chosen}
    workers = num_workers > 0
    return DataLoader(
        dataset,
        collate_fn=collate_fn,
        num_workers=num_workers,
        # A private generator: loaders never consume (and so never shift) the global RNG stream.
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=pl_worker_init_function if workers else None,
        persistent_workers=workers,
        pin_memory=torch.cuda.is_available(),
        **order,
    )


class SplitLoaders:
    """``train/val/test_dataloader`` for a LightningDataModule: list it before ``pl.LightningDataModule``.

    The host sets ``batch_size`` and ``num_workers`` and provides ``_dataset(split)``; ``_collate`` and
    ``_sampler`` are optional hooks, and a host with its own needs overrides ``_loader`` whole.
    """

    batch_size: int
    num_workers: int

    def _dataset(self, split: str) -> Dataset[Any]:
        raise NotImplementedError

    def _collate(self) -> Collate | None:
        return None

    def _sampler(self, split: str) -> SamplerFactory | None:
        return None

    def _loader(self, split: str) -> DataLoader[Any]:
        return seeded_loader(self._dataset(split), self.batch_size, train=split == "train",
                             num_workers=self.num_workers, collate_fn=self._collate(), sampler=self._sampler(split))

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader("test")
