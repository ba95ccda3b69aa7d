"""Encoder-decoder translation (many-to-many): Sutskever et al. 2014, optionally with Luong attention.

The encoder reads the (by default reversed, Sutskever et al. 2014 sec. 3.3) source with the suite's
own stacked cells; the decoder is a stacked RNN of the same cell and depth started from the encoder's
final state of every layer. With ``attention="luong"`` each decoder output h_t attends over the
encoder states with the "general" score h_t^T W_a h_s (Luong et al. 2015, arXiv:1508.04025, sec. 3.1);
W_a h_s is computed once per sentence, not at every step. The attentional state
h~_t = tanh(W_c [c_t; h_t]) feeds the output layer, and with ``input_feeding`` the next input too.

Speed (2 CPU cores): with full teacher forcing and no input feeding the decoder does not depend on
its own outputs, so the whole target runs through StackedRNN at once (hoisted input projections) and
attention is two batched matmuls over all steps. Otherwise a per-step loop collects the features. In
both cases the output projection and the loss run once, over all steps, after the recurrence.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.decoding import (PAD, SPECIALS, beam_search, bleu_signature, corpus_bleu, detokenize,
                                        greedy_decode, ids_to_tokens)
from lightning_modules.recurrent import StackedRNN

ATTENTIONS = ("none", "luong")
DEFAULT_CORPUS = "multi30k test_2016_flickr"


class Memory(NamedTuple):
    values: Tensor  # [batch, S, hidden] encoder top-layer outputs h_s
    keys: Tensor  # [batch, S, hidden] W_a h_s, projected once per sentence
    mask: Tensor  # [batch, S] True at real (unpadded) source positions


class DecState(NamedTuple):
    rnn: list  # per layer: a tensor (Elman) or (y, s) (LSTMs), each [batch, hidden]
    feed: Tensor | None  # [batch, hidden] previous attentional state (input feeding) or None
    memory: Memory | None


def _select(obj: Any, rows: Tensor) -> Any:
    """index_select(0, rows) on every tensor of a nested state, keeping its structure."""
    if isinstance(obj, Tensor):
        return obj.index_select(0, rows)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_select(o, rows) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_select(o, rows) for o in obj)
    return obj


def _where(keep: Tensor, new: Any, old: Any) -> Any:
    if isinstance(new, Tensor):
        return torch.where(keep, new, old)
    return tuple(_where(keep, n, o) for n, o in zip(new, old))


def run_masked(rnn: StackedRNN, x: Tensor, lengths: Tensor) -> tuple[Tensor, list]:
    """StackedRNN over right-padded sequences; each row's final state is taken at its own last token.

    Up to the shortest row every row is real, so that head runs through StackedRNN's own (fused)
    forward. In the tail a row's state is frozen once t >= its length (torch.where), so padding never
    reaches the state handed to the decoder. Length-bucketed batches make the tail a few steps.
    Outputs at padded positions are left as computed: attention masks them.
    """
    batch, steps, _ = x.shape
    head = int(lengths.min())
    out, state = rnn(x[:, :head])  # [batch, head, hidden], state after step head-1 of every layer
    if head == steps:
        return out, state
    valid = torch.arange(head, steps, device=x.device)[None, :] < lengths[:, None]  # [batch, tail]
    inp, final = x[:, head:], []  # [batch, tail, in]
    for k, (layer, st) in enumerate(zip(rnn.layers, state)):
        if k > 0 and rnn.dropout > 0.0:
            inp = rnn.drop(inp)
        xw = layer.project_input(inp)  # [batch, tail, n_gates*hidden]
        ys: list[Tensor] = []
        for t, xw_t in enumerate(xw.unbind(1)):
            y, new = layer.step(xw_t, st)
            st = _where(valid[:, t, None], new, st)
            ys.append(y)
        inp = torch.stack(ys, dim=1)  # [batch, tail, hidden]
        final.append(st)
    return torch.cat([out, inp], dim=1), final


class Encoder(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int, cell: str,
                 dropout: float, reverse: bool) -> None:
        super().__init__()
        self.reverse = reverse
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.drop = nn.Dropout(dropout)
        self.rnn = StackedRNN(cell, embed_dim, hidden_size, num_layers, dropout=dropout)

    def forward(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, list]:
        # src [batch, S] right-padded ids; src_len [batch]
        if self.reverse:  # reverse each row's real tokens in place; padding stays at the end
            pos = torch.arange(src.size(1), device=src.device)[None, :]  # [1, S]
            last = src_len[:, None] - 1
            src = src.gather(1, torch.where(pos <= last, last - pos, pos))
        return run_masked(self.rnn, self.drop(self.embed(src)), src_len)


class LuongAttention(nn.Module):
    """Global attention, "general" score (Luong et al. 2015 eq. 8) and attentional state (eq. 5)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.w_a = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_c = nn.Linear(2 * hidden_size, hidden_size, bias=False)

    def memory(self, enc_out: Tensor, mask: Tensor) -> Memory:
        return Memory(enc_out, self.w_a(enc_out), mask)  # keys [batch, S, hidden]: once per sentence

    def forward(self, h: Tensor, memory: Memory) -> tuple[Tensor, Tensor]:
        """h [batch, T, hidden] decoder outputs -> (h~ [batch, T, hidden], weights [batch, T, S])."""
        scores = torch.bmm(h, memory.keys.transpose(1, 2))  # [batch, T, S]
        scores = scores.masked_fill(~memory.mask[:, None, :], float("-inf"))  # padding gets weight exactly 0
        weights = scores.softmax(-1)
        context = torch.bmm(weights, memory.values)  # [batch, T, hidden]
        return torch.tanh(self.w_c(torch.cat([context, h], dim=-1))), weights


class Seq2SeqNet(nn.Module):
    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, cell: str, embed_dim: int, hidden_size: int,
                 num_layers: int, dropout: float, attention: str, input_feeding: bool, reverse_source: bool) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.input_feeding = input_feeding
        self.encoder = Encoder(src_vocab_size, embed_dim, hidden_size, num_layers, cell, dropout, reverse_source)
        self.embed = nn.Embedding(tgt_vocab_size, embed_dim, padding_idx=PAD)
        self.drop = nn.Dropout(dropout)
        self.decoder = StackedRNN(cell, embed_dim + (hidden_size if input_feeding else 0), hidden_size, num_layers,
                                  dropout=dropout)
        self.attention = LuongAttention(hidden_size) if attention == "luong" else None
        self.out = nn.Linear(hidden_size, tgt_vocab_size)

    def start(self, src: Tensor, src_len: Tensor) -> DecState:
        enc_out, state = self.encoder(src, src_len)  # [batch, S, hidden], final state per layer
        memory = None
        if self.attention is not None:
            mask = torch.arange(src.size(1), device=src.device)[None, :] < src_len[:, None]  # [batch, S]
            memory = self.attention.memory(enc_out, mask)
        feed = enc_out.new_zeros(src.size(0), self.hidden_size) if self.input_feeding else None
        return DecState(state, feed, memory)

    def features_step(self, prev: Tensor, ds: DecState) -> tuple[Tensor, DecState]:
        """One decoder step from previous tokens prev [N] -> (output feature [N, hidden], new state)."""
        x = self.drop(self.embed(prev))  # [N, embed]
        if ds.feed is not None:
            x = torch.cat([x, ds.feed], dim=-1)
        states = []
        for k, (layer, st) in enumerate(zip(self.decoder.layers, ds.rnn)):
            if k > 0 and self.decoder.dropout > 0.0:
                x = self.decoder.drop(x)
            x, st = layer.step(layer.project_input(x), st)  # [N, hidden]
            states.append(st)
        feat = x if self.attention is None else self.attention(x[:, None], ds.memory)[0][:, 0]
        return feat, DecState(states, feat if self.input_feeding else None, ds.memory)

    def project(self, feat: Tensor) -> Tensor:
        return self.out(self.drop(feat))  # [..., vocab]

    def step(self, prev: Tensor, ds: DecState) -> tuple[Tensor, DecState]:
        feat, ds = self.features_step(prev, ds)
        return self.project(feat), ds

    def reorder(self, ds: DecState, rows: Tensor, same_sentence: bool = False) -> DecState:
        """Rows of the state in the order ``rows``; same_sentence: rows only permute beams of one sentence,
        whose memory is identical, so the (large) memory is not copied."""
        memory = ds.memory if same_sentence else _select(ds.memory, rows)
        return DecState(_select(ds.rnn, rows), _select(ds.feed, rows), memory)

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor, teacher_forcing: float = 1.0,
                stepwise: bool = False) -> Tensor:
        """Logits [batch, T, vocab] for decoder inputs tgt_in [batch, T] (<bos> + target without <eos>).

        stepwise forces the per-step loop even where the all-steps path applies (tests compare the two).
        """
        ds = self.start(src, src_len)
        if teacher_forcing >= 1.0 and not self.input_feeding and not stepwise:
            h, _ = self.decoder(self.drop(self.embed(tgt_in)), ds.rnn)  # [batch, T, hidden], all steps at once
            feats = h if self.attention is None else self.attention(h, ds.memory)[0]
            return self.project(feats)
        feats, prev = [], tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            feat, ds = self.features_step(prev, ds)  # [batch, hidden]
            feats.append(feat)
            if t + 1 < tgt_in.size(1):
                prev = tgt_in[:, t + 1]
                if teacher_forcing < 1.0:  # per sentence: feed the gold token or the model's own argmax
                    with torch.no_grad():
                        own = self.out(feat).argmax(-1)
                    gold = torch.rand(prev.shape, device=prev.device) < teacher_forcing
                    prev = torch.where(gold, prev, own)
        return self.project(torch.stack(feats, dim=1))  # one output matmul over all steps


class Seq2Seq(pl.LightningModule):
    """Encoder-decoder translation system: teacher-forced cross-entropy, greedy val BLEU, beam test BLEU.

    ``val/loss`` and ``test/loss`` are the teacher-forced NLL in nats per target token (<eos> included,
    no label smoothing, whatever ``label_smoothing`` trains with); ``*/ppl`` is exp of that epoch mean.
    BLEU: sacrebleu on detokenized hypotheses against the datamodule's raw references
    (``references(split)``), greedy at validation, beam search (``beam_size`` > 1) at test.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        tgt_itos: list[str],
        cell: str = "lstm",
        embed_dim: int = 256,
        hidden_size: int = 512,
        num_layers: int = 2,
        dropout: float = 0.2,
        attention: str = "none",
        input_feeding: bool = False,
        reverse_source: bool = True,
        teacher_forcing: float = 1.0,
        label_smoothing: float = 0.0,
        lr: float = 1e-3,
        grad_clip: float = 1.0,
        beam_size: int = 5,
        length_penalty: float = 0.6,
        max_decode_len: int = 60,
        sample_count: int = 10,
    ) -> None:
        super().__init__()
        for name, value, low in (("src_vocab_size", src_vocab_size, len(SPECIALS) + 1),
                                 ("tgt_vocab_size", tgt_vocab_size, len(SPECIALS) + 1), ("embed_dim", embed_dim, 1),
                                 ("hidden_size", hidden_size, 1), ("num_layers", num_layers, 1),
                                 ("beam_size", beam_size, 1), ("max_decode_len", max_decode_len, 1),
                                 ("sample_count", sample_count, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if len(tgt_itos) != tgt_vocab_size or tuple(tgt_itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"tgt_itos must hold tgt_vocab_size={tgt_vocab_size} tokens starting with {list(SPECIALS)}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {list(ATTENTIONS)}, got {attention!r}")
        for name, value, ok, valid in (
            ("teacher_forcing", teacher_forcing, 0.0 <= teacher_forcing <= 1.0, "in [0, 1]"),
            ("label_smoothing", label_smoothing, 0.0 <= label_smoothing < 1.0, "in [0, 1)"),
            ("dropout", dropout, 0.0 <= dropout < 1.0, "in [0, 1)"), ("lr", lr, lr > 0, "> 0"),
            ("grad_clip", grad_clip, grad_clip >= 0, ">= 0"), ("length_penalty", length_penalty, length_penalty >= 0, ">= 0"),
        ):
            if not ok:
                raise ValueError(f"{name} must be {valid}, got {value!r}")
        self.save_hyperparameters()
        self.net = Seq2SeqNet(src_vocab_size, tgt_vocab_size, cell, embed_dim, hidden_size, num_layers, dropout,
                              attention, input_feeding, reverse_source)
        self._reset_eval()
        self._sample_src: tuple[Tensor, Tensor] | None = None  # first val sentences, decoded by make_samples
        self._bleu_info: dict[str, Any] = {}

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> Tensor:
        return self.net(src, src_len, tgt_in)

    # ---- decoding -------------------------------------------------------------------------------
    def translate(self, src: Tensor, src_len: Tensor, beam_size: int | None = None) -> list[str]:
        """Detokenized (lowercase) translations; beam_size 1 is greedy, None uses the model's beam_size."""
        k = self.hparams.beam_size if beam_size is None else beam_size
        was_training = self.training
        self.eval()
        if k == 1:
            ids = greedy_decode(self.net, src, src_len, self.hparams.max_decode_len)
        else:
            ids = beam_search(self.net, src, src_len, k, self.hparams.max_decode_len, self.hparams.length_penalty)
        self.train(was_training)
        return [self.detok(row) for row in ids.tolist()]

    def detok(self, ids: list[int]) -> str:
        return detokenize(ids_to_tokens(ids, self.hparams.tgt_itos))

    # ---- training -------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        src, src_len, tgt = batch  # [batch, S], [batch], [batch, T]
        logits = self.net(src, src_len, tgt[:, :-1], self.hparams.teacher_forcing)  # [batch, T-1, vocab]
        target = tgt[:, 1:]
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD,
                               label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=int((target != PAD).sum()))
        return loss

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        # The model's own grad_clip (norm) unless the Trainer sets one.
        clip = gradient_clip_val if gradient_clip_val is not None else self.hparams.grad_clip
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm=gradient_clip_algorithm or "norm")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    # ---- evaluation -----------------------------------------------------------------------------
    def _reset_eval(self) -> None:
        self._nll, self._tokens = 0.0, 0
        self._hyps: list[str] = []
        self._tgt_refs: list[str] = []  # detokenized targets: the fallback references without a datamodule

    def _eval_step(self, batch: tuple[Tensor, Tensor, Tensor], beam_size: int) -> None:
        src, src_len, tgt = batch
        logits = self.net(src, src_len, tgt[:, :-1])
        target = tgt[:, 1:]
        self._nll += float(F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD, reduction="sum"))
        self._tokens += int((target != PAD).sum())
        self._hyps += self.translate(src, src_len, beam_size)
        self._tgt_refs += [self.detok(row) for row in tgt.tolist()]

    def _eval_end(self, stage: str) -> None:
        if not self._tokens:
            return
        loss = self._nll / self._tokens
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}/ppl", math.exp(min(loss, 50.0)))
        refs, kind = self._references(stage, len(self._hyps))
        self.log(f"{stage}/bleu", corpus_bleu(self._hyps, refs), prog_bar=stage == "val")
        if stage == "test":
            self._bleu_info = {"bleu_references": kind, "bleu_sentences": len(self._hyps)}
        self._reset_eval()

    def _datamodule(self) -> Any:
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def _references(self, stage: str, n: int) -> tuple[list[str], str]:
        """The datamodule's raw references for the first n sentences (loaders keep file order), if any."""
        dm = self._datamodule()
        refs = dm.references(stage) if hasattr(dm, "references") else []
        if len(refs) >= n:
            return refs[:n], "raw references (cased, untokenized)"
        return self._tgt_refs, "detokenized target ids (no datamodule references)"

    def on_validation_epoch_start(self) -> None:
        self._reset_eval()

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        if self._sample_src is None and batch_idx == 0 and self.hparams.sample_count:
            n = self.hparams.sample_count
            self._sample_src = (batch[0][:n].clone(), batch[1][:n].clone())
        self._eval_step(batch, beam_size=1)  # greedy: cheap enough to run every epoch

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._reset_eval()

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, beam_size=self.hparams.beam_size)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def metric_settings(self) -> dict[str, Any]:
        k = self.hparams.beam_size
        return {
            "bleu_signature": bleu_signature(),
            "bleu_corpus": getattr(self._datamodule(), "TEST_CORPUS", DEFAULT_CORPUS),
            "bleu_decoding": "greedy" if k == 1 else "beam",
            "beam_size": k,
            "length_penalty": f"GNMT ((5+|y|)/6)**alpha, alpha={self.hparams.length_penalty}",
            "max_decode_len": self.hparams.max_decode_len,
            "val_bleu_decoding": "greedy",
            "loss_unit": "nats per target token incl. <eos>, teacher forced, no label smoothing",
            "ppl": "exp(loss)",
        } | self._bleu_info

    def make_samples(self) -> dict[str, str]:
        """'src ||| hyp ||| ref' for the first val sentences, greedy-decoded."""
        if self._sample_src is None:
            return {}
        src, src_len = self._sample_src
        hyps = self.translate(src.to(self.device), src_len.to(self.device), beam_size=1)
        dm = self._datamodule()
        srcs = dm.sources("val")[: len(hyps)] if hasattr(dm, "sources") else [" ".join(map(str, r)) for r in src.tolist()]
        refs = dm.references("val")[: len(hyps)] if hasattr(dm, "references") else ["?"] * len(hyps)
        return {"translations.txt": "".join(f"{s} ||| {h} ||| {r}\n" for s, h, r in zip(srcs, hyps, refs))}
