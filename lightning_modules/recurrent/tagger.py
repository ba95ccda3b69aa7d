"""Sequence tagger: synchronous many-to-many, one label per token (UPOS tagging on UD English-EWT).

word embedding [+ a character BiRNN's summary of the word] -> (bi)directional StackedRNN of the suite's
recurrent cells -> linear map to tag logits at every token: the hierarchical BiLSTM tagger of Plank et al. 2016
(https://arxiv.org/abs/1604.05529). With ``char_dim`` > 0 each token's characters (case kept) run through a
one-layer bidirectional RNN of the same cell, and its two final states join the word embedding: spelling,
suffixes and capitals tag the words the word table has never seen. As in torch.nn.LSTM(bidirectional=True),
layer k+1 reads both directions of layer k, and the backward direction reads each sentence from its own last
token, so the padding of a batch never enters it.
"""

from __future__ import annotations

import re

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.recurrent.stack import StackedRNN

IGNORE = -100  # padded tags, cross_entropy's ignore_index
MAX_WORD_CHARS = 30  # as the datamodule: a token's first 30 characters
PAD_ID = 0  # the datamodule's <pad> word id
UNK_ID = 1  # and its <unk>


class CharWordEncoder(nn.Module):
    """Each token's characters [batch, T, L] -> [batch, T, 2 * hidden]: the forward RNN's state after the last
    character beside the backward one's after the first (a one-layer bidirectional StackedRNN of ``cell``)."""

    def __init__(self, n_chars: int, cell: str, char_dim: int, hidden_size: int, forget_bias: float,
                 impl: str) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_chars, char_dim, padding_idx=PAD_ID)
        self.rnn = StackedRNN(cell, char_dim, hidden_size, 1, forget_bias=forget_bias, bidirectional=True, impl=impl)
        self.output_size = 2 * hidden_size

    def forward(self, chars: Tensor) -> Tensor:
        batch, steps, width = chars.shape
        n_chars = (chars != PAD_ID).sum(-1)  # [batch, T]; 0 at padded tokens
        real = n_chars > 0
        out = chars.new_zeros(batch, steps, self.output_size, dtype=self.embed.weight.dtype)
        if bool(real.any()):
            words = chars[real]  # [tokens, L]: only real tokens run (a packed run refuses length 0)
            _, final = self.rnn(self.embed(words), lengths=n_chars[real])  # one state per direction
            ends = [st[0] if isinstance(st, tuple) else st for st in final]  # y_T of each direction [tokens, hidden]
            out[real] = torch.cat(ends, dim=-1)
        return out  # [batch, T, 2 * hidden]


class TaggerNet(nn.Module):
    def __init__(self, vocab_size: int, num_tags: int, cell: str, embed_dim: int, hidden_size: int,
                 num_layers: int, dropout: float, forget_bias: float, bidirectional: bool, impl: str = "auto",
                 n_chars: int = 0, char_dim: int = 0, char_hidden: int = 0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.chars = CharWordEncoder(n_chars, cell, char_dim, char_hidden, forget_bias, impl) if char_dim else None
        width = embed_dim + (self.chars.output_size if self.chars is not None else 0)
        self.rnn = StackedRNN(cell, width, hidden_size, num_layers, dropout=dropout, forget_bias=forget_bias,
                              bidirectional=bidirectional, impl=impl)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.rnn.output_size, num_tags)

    def forward(self, words: Tensor, lengths: Tensor, chars: Tensor | None = None) -> Tensor:
        # words [batch, T], lengths [batch], chars [batch, T, L]
        x = self.embed(words)  # [batch, T, embed]
        if self.chars is not None:
            if chars is None:
                raise ValueError("this tagger reads characters: pass each token's character ids")
            x = torch.cat([x, self.chars(chars)], dim=-1)  # [batch, T, embed + 2 * char_hidden]
        h, _ = self.rnn(self.drop(x), lengths=lengths)  # [batch, T, dirs * hidden]
        return self.head(self.drop(h))  # logits [batch, T, num_tags]


class Tagger(pl.LightningModule):
    """Token-level tagging with cross-entropy over non-pad tokens; reports token accuracy."""

    monitor = "val/loss"  # the checkpoint keeps the epoch of the lowest validation objective
    monitor_mode = "min"

    def __init__(
        self,
        vocab_size: int,
        num_tags: int,
        tag_names: list[str],
        cell: str = "lstm",
        bidirectional: bool = True,
        embed_dim: int = 100,
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.3,
        lr: float = 2e-3,
        forget_bias: float = 1.0,
        impl: str = "auto",
        words: list[str] | None = None,
        lowercase: bool = True,
        token_pattern: str = "",
        chars: list[str] | None = None,
        char_dim: int = 0,
        char_hidden: int = 50,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("num_tags", num_tags), ("embed_dim", embed_dim),
                            ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if len(tag_names) != num_tags:
            raise ValueError(f"tag_names must list num_tags={num_tags} names, got {len(tag_names)}")
        # What tagging new text needs, carried in the checkpoint: the word list (id = position), its case rule and
        # the tokenizer that splits raw text the way the treebank does.
        if words is not None and (len(words) != vocab_size or words[PAD_ID] != "<pad>"):
            raise ValueError(f"words must list vocab_size={vocab_size} words starting with <pad>, got {len(words)}")
        if not isinstance(bidirectional, bool):
            raise ValueError(f"bidirectional must be true or false, got {bidirectional!r}")
        for name, value, low in (("char_dim", char_dim, 0), ("char_hidden", char_hidden, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if char_dim and (not chars or chars[PAD_ID] != "<pad>"):
            raise ValueError("char_dim > 0 needs the datamodule's character list (chars, starting with <pad>)")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.save_hyperparameters()
        self.net = TaggerNet(vocab_size, num_tags, cell, embed_dim, hidden_size, num_layers, dropout, forget_bias,
                             bidirectional, impl, len(chars or ()), char_dim, char_hidden)
        # micro + ignore_index: the fraction of real tokens tagged right (padding never counts).
        self.val_acc = MulticlassAccuracy(num_tags, average="micro", ignore_index=IGNORE)
        self.test_acc = MulticlassAccuracy(num_tags, average="micro", ignore_index=IGNORE)

    def forward(self, words: Tensor, lengths: Tensor, chars: Tensor | None = None) -> Tensor:
        return self.net(words, lengths, chars)

    def tokenize(self, text: str) -> list[str]:
        """Raw text -> tokens by the checkpoint's tokenizer (whitespace when it has none)."""
        return re.findall(self.hparams.token_pattern, text) if self.hparams.token_pattern else text.split()

    @torch.no_grad()
    def tag_tokens(self, sentences: list[list[str]]) -> list[list[str]]:
        """One UPOS tag per token of each sentence; unknown words go through <unk>, as in training."""
        if not self.hparams.words:
            raise ValueError("this checkpoint has no word list (trained before it was saved); train it again to tag text")
        stoi = {w: i for i, w in enumerate(self.hparams.words)}
        norm = str.lower if self.hparams.lowercase else str
        ids = [torch.tensor([stoi.get(norm(w), UNK_ID) for w in sent] or [PAD_ID]) for sent in sentences]
        lengths = torch.tensor([len(s) for s in sentences])  # [batch]
        words = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=PAD_ID)  # [batch, T]
        chars = None
        if self.hparams.char_dim:
            ctoi = {c: i for i, c in enumerate(self.hparams.chars)}
            width = min(max((len(w) for sent in sentences for w in sent), default=1), MAX_WORD_CHARS)
            chars = torch.zeros(*words.shape, width, dtype=torch.long)  # [batch, T, L]
            for b, sent in enumerate(sentences):
                for t, w in enumerate(sent):
                    ids = [ctoi.get(c, UNK_ID) for c in w[:width]]
                    chars[b, t, : len(ids)] = torch.tensor(ids)
            chars = chars.to(self.device)
        was_training = self.training
        self.eval()
        best = self(words.to(self.device), lengths, chars).argmax(-1).tolist()  # [batch, T]
        self.train(was_training)
        return [[self.hparams.tag_names[t] for t in row[: len(sent)]] for row, sent in zip(best, sentences)]

    def _loss(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor, int]:
        words, tags, lengths = batch[:3]  # [batch, T], [batch, T], [batch]; then chars [batch, T, L]
        logits = self(words, lengths, batch[3] if len(batch) > 3 else None)  # [batch, T, num_tags]
        loss = F.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=IGNORE)
        return loss, logits, tags, int(lengths.sum())

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        loss, _, _, n = self._loss(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def _eval_step(self, batch: tuple[Tensor, ...], stage: str, accuracy: MulticlassAccuracy) -> None:
        loss, logits, tags, n = self._loss(batch)
        # Weighted by token count: the epoch value is the per-token mean, not a mean of batch means.
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=n, sync_dist=True)
        accuracy(logits.flatten(0, 1), tags.flatten())
        self.log(f"{stage}/acc", accuracy, on_epoch=True, prog_bar=stage == "val", batch_size=n, sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def metric_settings(self) -> dict[str, str]:
        chars = (f"a one-layer bidirectional {self.hparams.cell} over each token's characters (case kept), "
                 f"{self.hparams.char_dim}-d char embeddings, {self.hparams.char_hidden} units a direction"
                 if self.hparams.char_dim else "none (word embeddings only)")
        return {"acc": "UPOS token accuracy over all non-pad tokens (micro), punctuation included",
                "loss_unit": "nats per token (cross-entropy)", "char_features": chars}
