"""Shuffling that a resumed run reproduces exactly.

A DataLoader's own shuffle draws from one generator across epochs, so a run resumed at epoch k would
replay epoch 0's order. Here epoch k's order depends only on (seed, k): Lightning calls ``set_epoch``
on the sampler before each epoch, including after a resume.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


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
        # Modulo: without seed_everything, torch.initial_seed() is a full 64-bit value and would overflow.
        gen = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) % (2**63 - 1))
        yield from torch.randperm(self.size, generator=gen).tolist()
