"""A char LM's loss on any UTF-8 text, read the way its own test loop reads its test split.

- A model with an end symbol (``hello``, ``words``: one word per sequence) reads each non-empty line as one
  sequence: start symbol + line -> line + end symbol, every character and the end symbol a target.
- A free-running model (tiny-shakespeare) reads the text as one stream in windows of its datamodule's
  ``seq_len`` + 1 characters with stride ``seq_len`` (from the checkpoint), the state reset at each window, as
  in training; the first character is context only. Unlike the test split, a short tail window is scored too.

Characters outside the model's vocabulary cannot be predicted: they are taken out of the text before it is
read, and counted and listed in the result, never silently dropped.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

BATCH = 128  # sequences per forward pass


@dataclass
class Score:
    nats: float  # summed negative log-likelihood of the scored targets
    targets: int  # characters (and end symbols) scored
    characters: int  # characters in the text (newlines included), in or out of the vocabulary
    outside: Counter  # characters outside the vocabulary -> count

    @property
    def nats_per_char(self) -> float:
        return self.nats / self.targets if self.targets else math.nan

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)


def _nll(model: Any, sequences: list[list[int]], pad: int) -> tuple[float, int]:
    """Summed cross-entropy of seq[1:] given seq[:-1] over padded batches of sequences."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(sequences), BATCH):
            chunk = [torch.tensor(s) for s in sequences[i:i + BATCH] if len(s) > 1]
            if not chunk:
                continue
            x = torch.nn.utils.rnn.pad_sequence([s[:-1] for s in chunk], batch_first=True, padding_value=pad)
            y = torch.nn.utils.rnn.pad_sequence([s[1:] for s in chunk], batch_first=True, padding_value=-100)
            logits, _ = model(x.to(model.device))  # [batch, time, vocab]
            total += float(F.cross_entropy(logits.flatten(0, 1).double(), y.flatten().to(model.device),
                                           ignore_index=-100, reduction="sum"))
            count += int((y != -100).sum())
    return total, count


def score_text(model: Any, text: str, seq_len: int | None) -> Score:
    """The char LM ``model``'s summed NLL on ``text`` (see the module note for how the text is read)."""
    vocab, end = model.hparams.vocab, model.hparams.end_symbol
    stoi = {c: i for i, c in enumerate(vocab)}
    start = stoi.get(end or "\n", 0)
    if end:
        lines = [line for line in text.split("\n") if line]
        outside = Counter(c for line in lines for c in line if c not in stoi)
        sequences = [[start] + [stoi[c] for c in line if c in stoi] + [stoi[end]] for line in lines]
        nats, targets = _nll(model, sequences, pad=stoi[end])
    else:
        outside = Counter(c for c in text if c not in stoi)
        ids = [stoi[c] for c in text if c in stoi]
        step = seq_len or 128
        windows = [ids[i:i + step + 1] for i in range(0, max(len(ids) - 1, 0), step)]
        nats, targets = _nll(model, windows, pad=0)
    return Score(nats, targets, len(text), outside)


def window_length(checkpoint: Any) -> int | None:
    """The training windows' seq_len, from the datamodule hyperparameters Lightning keeps in the checkpoint."""
    import torch

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    value = (ckpt.get("datamodule_hyper_parameters") or {}).get("seq_len")
    return int(value) if value else None
