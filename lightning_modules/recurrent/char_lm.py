"""Character-level language model: synchronous many-to-many next-character prediction.

The recurrent core is a StackedRNN of the suite's cells (Elman, LSTM, peephole; stack.py, cells.py). Training is
backpropagation through time on the unrolled net, either full (one backward per sequence) or truncated
(the sequence is cut into chunks of ``tbptt_steps``; the state flows forward across chunks but the
gradient stops at each cut). Lightning 2 has no built-in truncated BPTT, so the loop is written here
with manual optimisation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_modules.recurrent.cells import detach_state
from lightning_modules.recurrent.stack import StackedRNN

IGNORE = -100  # padded targets; the datamodules use cross_entropy's ignore_index


class CharNet(nn.Module):
    """Input encoding -> stacked recurrent net -> output projection V (the seed's y_t = f(V s_t), f = softmax)."""

    def __init__(self, vocab_size: int, cell: str, hidden_size: int, num_layers: int, embed_dim: int,
                 dropout: float, forget_bias: float, learn_s0: bool, impl: str = "auto") -> None:
        super().__init__()
        self.vocab_size = vocab_size
        # embed_dim 0 keeps the seed's one-hot input; otherwise a learned embedding.
        self.embed = nn.Embedding(vocab_size, embed_dim) if embed_dim > 0 else None
        in_size = embed_dim if embed_dim > 0 else vocab_size
        self.rnn = StackedRNN(cell, in_size, hidden_size, num_layers, dropout=dropout,
                              forget_bias=forget_bias, learn_s0=learn_s0, impl=impl)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        # x [batch, time] char ids
        inp = self.embed(x) if self.embed is not None else F.one_hot(x, self.vocab_size).float()
        out, state = self.rnn(inp, state)  # [batch, time, hidden]
        return self.head(self.drop(out)), state  # logits [batch, time, vocab]


def chunk_losses(net: CharNet, x: Tensor, y: Tensor, k: int) -> Iterator[tuple[Tensor, int]]:
    """Truncated BPTT: yields (mean loss of a chunk, its target count) for consecutive chunks of k steps.

    The state is carried across chunks but detached, so each backward stops at the chunk's start.
    With k >= sequence length this is one chunk: exactly full BPTT.
    """
    state = None
    for xc, yc in zip(x.split(k, dim=1), y.split(k, dim=1)):  # [batch, k]
        n = int((yc != IGNORE).sum())
        logits, state = net(xc, state)
        if n:
            yield F.cross_entropy(logits.flatten(0, 1), yc.flatten(), ignore_index=IGNORE), n
        state = detach_state(state)


class CharLM(pl.LightningModule):
    """Next-character prediction with manual optimisation, so truncated BPTT can step per chunk."""

    monitor = "val/loss"  # the checkpoint keeps the epoch of the lowest validation objective
    monitor_mode = "min"

    def __init__(
        self,
        vocab: str,
        end_symbol: str = "",
        cell: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 1,
        embed_dim: int = 0,
        dropout: float = 0.0,
        forget_bias: float = 0.0,
        learn_s0: bool = False,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        tbptt_steps: int = 0,
        grad_clip: float = 1.0,
        sample_count: int = 8,
        sample_length: int = 200,
        temperature: float = 1.0,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if not vocab:
            raise ValueError("vocab must be a non-empty string of characters")
        for name, value in (("lr", lr), ("temperature", temperature)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, value in (("tbptt_steps", tbptt_steps), ("embed_dim", embed_dim), ("weight_decay", weight_decay),
                            ("grad_clip", grad_clip), ("sample_count", sample_count)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if end_symbol and end_symbol not in vocab:
            raise ValueError(f"end_symbol {end_symbol!r} is not in the vocabulary")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.stoi = {ch: i for i, ch in enumerate(vocab)}
        self.net = CharNet(len(vocab), cell, hidden_size, num_layers, embed_dim, dropout, forget_bias, learn_s0, impl)

    def forward(self, x: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        return self.net(x, state)

    # ---- training -------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch  # [batch, time] each
        opt = self.optimizers()
        k = self.hparams.tbptt_steps or x.size(1)
        total, loss_sum = 0, torch.zeros((), device=self.device)
        for loss, n in chunk_losses(self.net, x, y, k):
            opt.zero_grad()
            self.manual_backward(loss)
            if self.hparams.grad_clip:
                self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
            opt.step()
            loss_sum += loss.detach() * n
            total += n
        mean = loss_sum / max(total, 1)
        self.log("train/loss", mean, on_step=False, on_epoch=True, prog_bar=True, batch_size=total)
        return mean

    def _eval_step(self, batch: tuple[Tensor, ...], stage: str) -> None:
        x, y = batch[0], batch[1]  # [batch, time] each
        logits, _ = self(x)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="none").view_as(y)
        counted = y != IGNORE  # [batch, time]
        if len(batch) == 3:  # test windows (tag 1) with val windows (tag 0): also val + test as one text
            self._log_mean(f"{stage}/loss_valtest", losses, counted)
            counted = counted & (batch[2] == 1)[:, None]
        loss = self._log_mean(f"{stage}/loss", losses, counted, prog_bar=stage == "val")
        if loss is not None:
            self.log(f"{stage}/bpc", loss / math.log(2), on_epoch=True, batch_size=int(counted.sum()), sync_dist=True)

    def _log_mean(self, key: str, losses: Tensor, counted: Tensor, prog_bar: bool = False) -> Tensor | None:
        """Logs the mean loss over the counted targets; weighted by their number, so the epoch value is the
        per-character mean over the split, not a mean of batch means. None when the batch counts none."""
        n = int(counted.sum())
        if not n:
            return None
        loss = (losses * counted).sum() / n
        self.log(key, loss, on_epoch=True, prog_bar=prog_bar, batch_size=n, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    def metric_settings(self) -> dict[str, str]:
        return {"loss_unit": "nats per character", "bpc": "loss / ln 2",
                "eval_context": "windows scored from a zero state, each target seeing only its window's earlier chars",
                "loss_valtest": "test pass on tiny-shakespeare: the per-character loss over the val and test windows "
                                "together (the text's last 10%, nanoGPT's validation split)"}

    # ---- sampling -------------------------------------------------------------------------------
    def _start(self) -> int:
        return self.stoi.get(self.hparams.end_symbol or "\n", 0)

    @torch.no_grad()
    def next_char_probs(self, prefix: str) -> dict[str, float]:
        """P(next char | start symbol + prefix), e.g. next_char_probs('ee')['l'] for the seed's eel."""
        ids = [self._start()] + [self.stoi[c] for c in prefix]
        was_training = self.training
        self.eval()
        logits, _ = self(torch.tensor([ids], device=self.device))
        self.train(was_training)
        probs = logits[0, -1].softmax(-1)
        return {ch: float(probs[i]) for i, ch in enumerate(self.hparams.vocab)}

    @torch.no_grad()
    def sample(self, count: int, length: int, seed: int = 0) -> list[str]:
        """Ancestral sampling with its own CPU generator, so samples are reproducible, the same on every
        device, and don't move the global RNG.

        A diverged model (NaN or inf logits, which torch.multinomial refuses) samples nothing: [] and a
        warning, so the run goes on to report its NaN loss as a divergence instead of crashing here.
        """
        gen = torch.Generator(device="cpu").manual_seed(seed)
        was_training = self.training
        self.eval()
        x = torch.full((count, 1), self._start(), dtype=torch.long, device=self.device)
        state, out = None, []
        done = torch.zeros(count, dtype=torch.bool)
        end = self.stoi.get(self.hparams.end_symbol) if self.hparams.end_symbol else None
        for _ in range(length):
            logits, state = self(x, state)
            probs = (logits[:, -1] / self.hparams.temperature).softmax(-1).cpu()  # [count, vocab]
            if not bool(torch.isfinite(probs).all()):
                self.train(was_training)
                rank_zero_warn("CharLM produced non-finite next-character probabilities (the run diverged): "
                               "no samples")
                return []
            nxt = torch.multinomial(probs, 1, generator=gen)  # [count, 1]
            out.append(nxt)
            if end is not None:
                done |= nxt[:, 0] == end
                if bool(done.all()):
                    break
            x = nxt.to(self.device)
        self.train(was_training)
        ids = torch.cat(out, dim=1).tolist()
        texts = ["".join(self.hparams.vocab[i] for i in row) for row in ids]
        return [t.split(self.hparams.end_symbol)[0] for t in texts] if end is not None else texts

    @torch.no_grad()
    def continue_text(self, prime: str, length: int, temperature: float = 1.0, seed: int = 0) -> str:
        """``prime`` followed by up to ``length`` sampled characters (fewer when the end symbol comes first),
        read after the start symbol as in training; its own CPU generator, so a seed gives the same text."""
        unknown = sorted(set(prime) - self.stoi.keys())
        if unknown:
            raise ValueError(f"the prime has characters outside this model's vocabulary: {unknown!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        was_training = self.training
        self.eval()
        x = torch.tensor([[self._start()] + [self.stoi[c] for c in prime]], device=self.device)  # [1, time]
        end = self.stoi.get(self.hparams.end_symbol) if self.hparams.end_symbol else None
        state, out = None, []
        for _ in range(length):
            logits, state = self(x, state)
            probs = (logits[0, -1] / temperature).softmax(-1).cpu()  # [vocab]
            nxt = int(torch.multinomial(probs, 1, generator=gen))
            if nxt == end:
                break
            out.append(self.hparams.vocab[nxt])
            x = torch.tensor([[nxt]], device=self.device)
        self.train(was_training)
        return prime + "".join(out)

    def make_samples(self) -> dict[str, str]:
        if not self.hparams.sample_count:
            return {}
        texts = self.sample(self.hparams.sample_count, self.hparams.sample_length, seed=self.current_epoch)
        if not texts:
            return {}
        sep = "\n" if self.hparams.end_symbol else "\n\n---\n\n"
        return {"samples.txt": sep.join(texts) + "\n"}
