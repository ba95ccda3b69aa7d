"""Sequence tagger: synchronous many-to-many, one label per token (UPOS tagging on UD English-EWT).

word embedding -> (bi)directional StackedRNN of the suite's recurrent cells -> linear map to tag logits at
every token (the stacked BiLSTM tagger of Plank et al. 2016, https://arxiv.org/abs/1604.05529, without
its character model). As in torch.nn.LSTM(bidirectional=True), layer k+1 reads both directions of layer k,
and the backward direction reads each sentence from its own last token, so the padding of a batch never
enters it.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.recurrent.stack import StackedRNN

IGNORE = -100  # padded tags, cross_entropy's ignore_index
PAD_ID = 0  # the datamodule's <pad> word id


class TaggerNet(nn.Module):
    def __init__(self, vocab_size: int, num_tags: int, cell: str, embed_dim: int, hidden_size: int,
                 num_layers: int, dropout: float, forget_bias: float, bidirectional: bool, impl: str = "auto") -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.rnn = StackedRNN(cell, embed_dim, hidden_size, num_layers, dropout=dropout, forget_bias=forget_bias,
                              bidirectional=bidirectional, impl=impl)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.rnn.output_size, num_tags)

    def forward(self, words: Tensor, lengths: Tensor) -> Tensor:
        # words [batch, T], lengths [batch]
        h, _ = self.rnn(self.drop(self.embed(words)), lengths=lengths)  # [batch, T, dirs * hidden]
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
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("num_tags", num_tags), ("embed_dim", embed_dim),
                            ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if len(tag_names) != num_tags:
            raise ValueError(f"tag_names must list num_tags={num_tags} names, got {len(tag_names)}")
        if not isinstance(bidirectional, bool):
            raise ValueError(f"bidirectional must be true or false, got {bidirectional!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.save_hyperparameters()
        self.net = TaggerNet(vocab_size, num_tags, cell, embed_dim, hidden_size, num_layers, dropout, forget_bias,
                             bidirectional, impl)
        # micro + ignore_index: the fraction of real tokens tagged right (padding never counts).
        self.val_acc = MulticlassAccuracy(num_tags, average="micro", ignore_index=IGNORE)
        self.test_acc = MulticlassAccuracy(num_tags, average="micro", ignore_index=IGNORE)

    def forward(self, words: Tensor, lengths: Tensor) -> Tensor:
        return self.net(words, lengths)

    def _loss(self, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor, int]:
        words, tags, lengths = batch  # [batch, T], [batch, T], [batch]
        logits = self(words, lengths)  # [batch, T, num_tags]
        loss = F.cross_entropy(logits.flatten(0, 1), tags.flatten(), ignore_index=IGNORE)
        return loss, logits, tags, int(lengths.sum())

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _, _, n = self._loss(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def _eval_step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str, accuracy: MulticlassAccuracy) -> None:
        loss, logits, tags, n = self._loss(batch)
        # Weighted by token count: the epoch value is the per-token mean, not a mean of batch means.
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=n, sync_dist=True)
        accuracy(logits.flatten(0, 1), tags.flatten())
        self.log(f"{stage}/acc", accuracy, on_epoch=True, prog_bar=stage == "val", batch_size=n, sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def metric_settings(self) -> dict[str, str]:
        return {"acc": "UPOS token accuracy over all non-pad tokens (micro), punctuation included",
                "loss_unit": "nats per token (cross-entropy)"}
