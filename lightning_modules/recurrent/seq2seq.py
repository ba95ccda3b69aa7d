"""Encoder-decoder translation (many-to-many): Sutskever et al. 2014, optionally with Luong attention.

The encoder reads the (by default reversed, Sutskever et al. 2014 sec. 3.3) source with the suite's
own stacked cells; the decoder is a stacked RNN of the same cell and depth started from the encoder's
final state of every layer. With ``attention="luong"`` each decoder output h_t attends over the
encoder states with the "general" score h_t^T W_a h_s (Luong et al. 2015, arXiv:1508.04025, sec. 3.1);
``"luong_scaled"`` divides it by sqrt(hidden), which keeps seeds from collapsing onto one source position;
W_a h_s is computed once per sentence, not at every step. The attentional state
h~_t = tanh(W_c [c_t; h_t]) feeds the output layer, and with ``input_feeding`` the next input too.

Speed (2 CPU cores): with full teacher forcing and no input feeding the decoder does not depend on
its own outputs, so the whole target runs through StackedRNN at once (torch's kernel, one call) and
attention is two batched matmuls over all steps. Otherwise a per-step loop collects the features. In
both cases the output projection and the loss run once, over all steps, after the recurrence.
The networks are in seq2seq_nets.py; this file holds the system: losses, decoding, BLEU.
"""

from __future__ import annotations

import math
import re
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_modules.recurrent.decoding import (EOS, PAD, SPECIALS, UNK, beam_search, bleu_signature, corpus_bleu,
                                                  detokenize, greedy_decode, ids_to_tokens)
# Re-exported: the networks live in seq2seq_nets.py, the tests and older imports reach them from here.
from lightning_modules.recurrent.seq2seq_nets import ATTENTIONS, Seq2SeqNet, run_masked  # noqa: F401

DEFAULT_CORPUS = "multi30k test_2016_flickr"


class Seq2Seq(pl.LightningModule):
    """Encoder-decoder translation system: teacher-forced cross-entropy, greedy val BLEU, beam test BLEU.

    ``val/loss`` and ``test/loss`` are the teacher-forced NLL in nats per target token (<eos> included,
    no label smoothing, whatever ``label_smoothing`` trains with); ``*/ppl`` is exp of that epoch mean.
    BLEU: sacrebleu on detokenized hypotheses against the datamodule's raw references
    (``references(split)``), greedy at validation; at test both, ``test/bleu`` with beam search (``beam_size``)
    and ``test/bleu_greedy``, the figure that sits beside greedy anchors.

    ``early_stopping_patience``: the budget stays ``max_epochs``, and Lightning's EarlyStopping ends the fit once
    val/loss has not improved for that many epochs (recorded as ``stopped_by: early_stopping``).
    """

    monitor = "val/loss"  # the checkpoint keeps the epoch of the lowest validation objective
    monitor_mode = "min"

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
        impl: str = "auto",
        src_itos: list[str] | None = None,
        token_pattern: str = "",
        early_stopping_patience: int | None = None,
    ) -> None:
        super().__init__()
        for name, value, low in (("src_vocab_size", src_vocab_size, len(SPECIALS) + 1),
                                 ("tgt_vocab_size", tgt_vocab_size, len(SPECIALS) + 1), ("embed_dim", embed_dim, 1),
                                 ("hidden_size", hidden_size, 1), ("num_layers", num_layers, 1),
                                 ("beam_size", beam_size, 1), ("max_decode_len", max_decode_len, 1),
                                 ("sample_count", sample_count, 0),
                                 *((("early_stopping_patience", early_stopping_patience, 1),)
                                   if early_stopping_patience is not None else ())):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if len(tgt_itos) != tgt_vocab_size or tuple(tgt_itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"tgt_itos must hold tgt_vocab_size={tgt_vocab_size} tokens starting with {list(SPECIALS)}")
        # What translating new text needs, carried in the checkpoint: the source vocabulary and the tokenizer.
        if src_itos is not None and (len(src_itos) != src_vocab_size or tuple(src_itos[: len(SPECIALS)]) != SPECIALS):
            raise ValueError(f"src_itos must hold src_vocab_size={src_vocab_size} tokens starting with {list(SPECIALS)}")
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
                              attention, input_feeding, reverse_source, impl)
        self._reset_eval()
        self._sample_src: tuple[Tensor, Tensor] | None = None  # first val sentences, decoded by make_samples
        self._bleu_info: dict[str, Any] = {}

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> Tensor:
        return self.net(src, src_len, tgt_in)

    # ---- decoding -------------------------------------------------------------------------------
    def finite(self) -> bool:
        """False once any weight is NaN or inf: a diverged model, whose decodes would be noise."""
        return all(bool(torch.isfinite(p).all()) for p in self.parameters())

    def translate(self, src: Tensor, src_len: Tensor, beam_size: int | None = None) -> list[str]:
        """Detokenized (lowercase) translations; beam_size 1 is greedy, None uses the model's beam_size.

        A diverged model translates every sentence to "" with a warning instead of decoding from NaN
        logits; its NaN loss is what the suite's divergence check stops the run on.
        """
        if not self.finite():
            rank_zero_warn("Seq2Seq has non-finite weights (the run diverged): decoding nothing")
            return [""] * src.size(0)
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

    def encode_source(self, sentence: str) -> tuple[list[int], list[str]]:
        """Raw source text -> ids (words + <eos>) by the checkpoint's own tokenizer and vocabulary, and the
        tokens it maps to <unk> (reported, not hidden)."""
        if not self.hparams.src_itos or not self.hparams.token_pattern:
            raise ValueError("this checkpoint has no source vocabulary or tokenizer (trained before they were "
                             "saved); train it again to translate raw text")
        stoi = {w: i for i, w in enumerate(self.hparams.src_itos)}
        tokens = re.findall(self.hparams.token_pattern, sentence.lower())
        return [stoi.get(t, UNK) for t in tokens] + [EOS], [t for t in tokens if t not in stoi]

    def translate_text(self, sentences: list[str], beam_size: int | None = None) -> list[str]:
        """Translations of raw source sentences (beam search at the model's beam_size unless given)."""
        ids = [self.encode_source(s)[0] for s in sentences]
        src = torch.nn.utils.rnn.pad_sequence([torch.tensor(i) for i in ids], batch_first=True,
                                              padding_value=PAD).to(self.device)  # [batch, S]
        src_len = torch.tensor([len(i) for i in ids], device=self.device)  # [batch]
        with torch.no_grad():
            return self.translate(src, src_len, beam_size)

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

    def configure_callbacks(self) -> list[pl.Callback]:
        patience = self.hparams.early_stopping_patience
        if patience is None:
            return []
        from lightning.pytorch.callbacks import EarlyStopping

        return [EarlyStopping(monitor="val/loss", mode="min", patience=patience)]

    # ---- evaluation -----------------------------------------------------------------------------
    def _reset_eval(self) -> None:
        self._nll, self._tokens = 0.0, 0
        self._hyps: list[str] = []
        self._greedy: list[str] = []  # greedy decodes beside beam search at test, for the greedy anchors
        self._tgt_refs: list[str] = []  # detokenized targets: the fallback references without a datamodule

    def _eval_step(self, batch: tuple[Tensor, Tensor, Tensor], beam_size: int) -> None:
        src, src_len, tgt = batch
        logits = self.net(src, src_len, tgt[:, :-1])
        target = tgt[:, 1:]
        self._nll += float(F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD, reduction="sum"))
        self._tokens += int((target != PAD).sum())
        self._hyps += self.translate(src, src_len, beam_size)
        if self._trainer is not None and self.trainer.testing:
            self._greedy += self._hyps[-len(src):] if beam_size == 1 else self.translate(src, src_len, 1)
        self._tgt_refs += [self.detok(row) for row in tgt.tolist()]

    def _gathered(self) -> tuple[float, int, list[str], list[str], list[str]]:
        """The summed NLL, token count, hypotheses, greedy hypotheses (test) and target references: this rank's,
        or under DDP all ranks' (each decoded its own shard), so every rank logs the same corpus-level numbers."""
        if self._trainer is None or self.trainer.world_size == 1:
            return self._nll, self._tokens, self._hyps, self._greedy, self._tgt_refs
        import torch.distributed as dist

        sums = torch.tensor([self._nll, float(self._tokens)], dtype=torch.float64, device=self.device)
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        parts: list[Any] = [None] * self.trainer.world_size
        dist.all_gather_object(parts, (self._hyps, self._greedy, self._tgt_refs))
        return (float(sums[0]), int(sums[1]), [h for p in parts for h in p[0]], [g for p in parts for g in p[1]],
                [r for p in parts for r in p[2]])

    def _eval_end(self, stage: str) -> None:
        nll, tokens, hyps, greedy, tgt_refs = self._gathered()
        if not tokens:
            return
        loss = nll / tokens
        # Equal on every rank after _gathered, so sync_dist's mean changes nothing; it keeps DDP runs uniform.
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/ppl", math.exp(min(loss, 50.0)), sync_dist=True)
        refs, kind = self._references(stage, len(hyps), tgt_refs)
        self.log(f"{stage}/bleu", corpus_bleu(hyps, refs), prog_bar=stage == "val", sync_dist=True)
        if greedy:
            self.log(f"{stage}/bleu_greedy", corpus_bleu(greedy, refs), sync_dist=True)
        if stage == "test":
            self._bleu_info = {"bleu_references": kind, "bleu_sentences": len(hyps)}
        self._reset_eval()

    def _datamodule(self) -> Any:
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def _references(self, stage: str, n: int, tgt_refs: list[str]) -> tuple[list[str], str]:
        """The datamodule's raw references for the first n sentences (loaders keep file order), if any.

        Under DDP the distributed sampler interleaves the shards, so file order is lost: the detokenized
        targets, gathered beside their hypotheses, are the references then.
        """
        if self._trainer is not None and self.trainer.world_size > 1:
            return tgt_refs, "detokenized target ids (DDP shards do not keep file order)"
        dm = self._datamodule()
        refs = dm.references(stage) if hasattr(dm, "references") else []
        if len(refs) >= n:
            return refs[:n], "raw references (cased, untokenized)"
        return tgt_refs, "detokenized target ids (no datamodule references)"

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
            "bleu_greedy": "test BLEU of greedy decodes, the same references and tokenizer",
            "early_stopping": (f"val/loss, patience {self.hparams.early_stopping_patience} epochs"
                               if self.hparams.early_stopping_patience else "none"),
            "loss_unit": "nats per target token incl. <eos>, teacher forced, no label smoothing",
            "ppl": "exp(loss)",
        } | self._bleu_info

    def make_samples(self) -> dict[str, str]:
        """'src ||| hyp ||| ref' for the first val sentences, greedy-decoded."""
        if self._sample_src is None or not self.finite():
            return {}
        src, src_len = self._sample_src
        hyps = self.translate(src.to(self.device), src_len.to(self.device), beam_size=1)
        dm = self._datamodule()
        srcs = dm.sources("val")[: len(hyps)] if hasattr(dm, "sources") else [" ".join(map(str, r)) for r in src.tolist()]
        refs = dm.references("val")[: len(hyps)] if hasattr(dm, "references") else ["?"] * len(hyps)
        return {"translations.txt": "".join(f"{s} ||| {h} ||| {r}\n" for s, h, r in zip(srcs, hyps, refs))}
