"""Char-id sequences as (x, y) next-char pairs: whole sequences or fixed windows, and their padding collate.

x is a LongTensor [time] of input ids, y the same sequence shifted left by one. In a batch, padding
carries ``pad_id`` in x and -100 in y, cross_entropy's default ignore_index, so padded steps never count.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

IGNORE_INDEX = -100
Batch = tuple[torch.Tensor, torch.Tensor]


def pad_collate(batch: Sequence[tuple[torch.Tensor, ...]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Pad variable-length (x, y) pairs to the batch's longest: x with ``pad_id``, y with -100. Items of
    ``TaggedConcat`` keep their tags as a third tensor [batch]."""
    xs, ys = [item[0] for item in batch], [item[1] for item in batch]
    x = pad_sequence(xs, batch_first=True, padding_value=pad_id)  # [batch, time]
    y = pad_sequence(ys, batch_first=True, padding_value=IGNORE_INDEX)  # [batch, time]
    if len(batch[0]) == 3:
        return x, y, torch.stack([item[2] for item in batch])  # [batch]
    return x, y


class SequenceDataset(Dataset[Batch]):
    """Whole sequences (start symbol + text + end symbol); item i is (seq[:-1], seq[1:]).

    Kept as int lists and made tensors per item: building ~10^5 tiny tensors up front costs seconds.
    """

    def __init__(self, sequences: list[list[int]]) -> None:
        self.sequences = sequences

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> Batch:
        seq = torch.tensor(self.sequences[i], dtype=torch.long)  # [length]
        return seq[:-1], seq[1:]


class WindowDataset(Dataset[Batch]):
    """Windows of ``seq_len + 1`` ids with stride ``seq_len`` over one long text.

    Consecutive windows share one boundary char, so every char of the split after its first is a
    target exactly once; the tail too short for a full window (< seq_len chars) is dropped.
    """

    def __init__(self, ids: torch.Tensor, seq_len: int) -> None:
        self.ids = ids  # [chars]
        self.seq_len = seq_len

    def __len__(self) -> int:
        return max(0, (len(self.ids) - 1) // self.seq_len)

    def __getitem__(self, i: int) -> Batch:
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.seq_len
        window = self.ids[start : start + self.seq_len + 1]  # [seq_len + 1]
        return window[:-1], window[1:]


class TaggedConcat(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Several datasets' (x, y) items one after another, each with its dataset's integer tag, so one pass can
    score the parts apart and together (e.g. the test windows, and val + test as one text)."""

    def __init__(self, parts: Sequence[tuple[Dataset[Batch], int]]) -> None:
        self.parts = list(parts)
        self.ends = [sum(len(ds) for ds, _ in self.parts[: i + 1]) for i in range(len(self.parts))]  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        part = bisect.bisect_right(self.ends, i)
        dataset, tag = self.parts[part]
        x, y = dataset[i - (self.ends[part - 1] if part else 0)]
        return x, y, torch.tensor(tag)
