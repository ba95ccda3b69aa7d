"""Shuffling that a resumed run reproduces exactly.

A DataLoader's own shuffle draws from one generator across epochs, so a run resumed at epoch k would
replay epoch 0's order. Here epoch k's order depends only on (seed, k): Lightning calls ``set_epoch``
on the sampler before each epoch, including after a resume.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


SEED_MODULUS = 2**63 - 1  # manual_seed takes at most a 64-bit value; Python ints must be brought below it


def epoch_seed(seed: int, epoch: int, offset: int = 0) -> int:
    """The generator seed of one epoch: a function of (seed, epoch) only, so a resumed epoch k replays k.

    Modulo: without seed_everything, torch.initial_seed() is a full 64-bit value, and seed * 100_003 would
    overflow manual_seed; seeds of seed_everything (< 2**32) are unchanged by it.
    """
    return (seed * 100_003 + epoch + offset) % SEED_MODULUS


class EpochShuffleSampler(Sampler[int]):
    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))  # a CPU generator, even on a GPU
        yield from torch.randperm(self.size, generator=gen).tolist()
