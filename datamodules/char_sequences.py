"""Char-id sequences as (x, y) next-char pairs: whole sequences or fixed windows, and their padding collate.

x is a LongTensor [time] of input ids, y the same sequence shifted left by one. In a batch, padding
carries ``pad_id`` in x and -100 in y, cross_entropy's default ignore_index, so padded steps never count.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

IGNORE_INDEX = -100
Batch = tuple[torch.Tensor, torch.Tensor]


def pad_collate(batch: Sequence[Batch], pad_id: int) -> Batch:
    """Pad variable-length (x, y) pairs to the batch's longest: x with ``pad_id``, y with -100."""
    xs, ys = zip(*batch)
    x = pad_sequence(list(xs), batch_first=True, padding_value=pad_id)  # [batch, time]
    y = pad_sequence(list(ys), batch_first=True, padding_value=IGNORE_INDEX)  # [batch, time]
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
