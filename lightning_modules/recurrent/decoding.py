"""Decoding for encoder-decoder models: greedy search, batched beam search, detokenization and BLEU.

The decoders only need a net with ``start(src, src_len) -> state``, ``step(prev [N], state) ->
(logits [N, vocab], state)`` and ``reorder(state, rows) -> state`` (see seq2seq.Seq2SeqNet), so they
work for any recurrent decoder with or without attention.

Beam search ranks hypotheses by the GNMT length-normalised score (Wu et al. 2016, eq. 14)
``log P(y) / lp(y)`` with ``lp(y) = ((5 + |y|) / 6) ** alpha``, |y| counting the generated tokens
including <eos>: alpha = 0 is raw log-probability (favours short outputs), alpha = 1 is close to the
mean per-token log-probability. Finished hypotheses stay in the beam, extended by <pad> at no cost,
and compete with the live ones on that score; the search stops when all beams have finished or after
``max_len`` tokens. With beam width 1 every candidate of a row shares one length, so the ranking is
the argmax of the logits and beam search returns exactly the greedy tokens (a test checks it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

# Must match datamodules.translation.SPECIALS; Seq2Seq checks tgt_itos starts with these.
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = range(4)


class StepNet(Protocol):
    def start(self, src: Tensor, src_len: Tensor) -> Any: ...

    def step(self, prev: Tensor, state: Any) -> tuple[Tensor, Any]: ...

    def reorder(self, state: Any, rows: Tensor, same_sentence: bool = False) -> Any: ...


def length_penalty(length: Tensor, alpha: float) -> Tensor:
    return ((5.0 + length.to(torch.float32)) / 6.0) ** alpha


@torch.no_grad()
def greedy_decode(net: StepNet, src: Tensor, src_len: Tensor, max_len: int) -> Tensor:
    """Argmax token at each step; returns ids [batch, L] (L <= max_len), <eos> then <pad> after the end."""
    state = net.start(src, src_len)
    batch = src.size(0)
    prev = torch.full((batch,), BOS, dtype=torch.long, device=src.device)  # [batch]
    done = torch.zeros(batch, dtype=torch.bool, device=src.device)
    out: list[Tensor] = []
    for _ in range(max_len):
        logits, state = net.step(prev, state)  # [batch, vocab]
        tok = logits.argmax(-1).masked_fill(done, PAD)  # [batch]
        out.append(tok)
        done |= tok == EOS
        prev = tok
        if bool(done.all()):
            break
    return torch.stack(out, dim=1)


@torch.no_grad()
def beam_search(net: StepNet, src: Tensor, src_len: Tensor, beam_size: int, max_len: int, alpha: float) -> Tensor:
    """Batched beam search (all sentences at once, beam_size rows each); returns the best ids [batch, L]."""
    batch, k = src.size(0), beam_size
    rows = torch.arange(batch, device=src.device).repeat_interleave(k)  # [batch*k]: sentence of each row
    state = net.reorder(net.start(src, src_len), rows)  # every tensor now [batch*k, ...]
    scores = torch.full((batch, k), float("-inf"), device=src.device)  # summed log-probs
    scores[:, 0] = 0.0  # one live beam at the start, so the k beams don't all pick the same first token
    lengths = torch.zeros(batch * k, dtype=torch.long, device=src.device)  # generated tokens incl. <eos>
    done = torch.zeros(batch * k, dtype=torch.bool, device=src.device)
    tokens = torch.empty(batch * k, 0, dtype=torch.long, device=src.device)  # [batch*k, t]
    prev = torch.full((batch * k,), BOS, dtype=torch.long, device=src.device)
    offsets = torch.arange(batch, device=src.device)[:, None] * k  # [batch, 1]
    for _ in range(max_len):
        logits, state = net.step(prev, state)  # [batch*k, vocab]
        logp = logits.float().log_softmax(-1)
        # A finished row may only continue with <pad>, at no cost: its score and length stay frozen.
        logp[done] = float("-inf")
        logp[done, PAD] = 0.0
        vocab = logp.size(-1)
        cand = scores.reshape(-1, 1) + logp  # [batch*k, vocab]
        new_len = lengths + (~done).long()  # [batch*k]
        ranked = cand / length_penalty(new_len, alpha)[:, None]
        _, best = ranked.view(batch, k * vocab).topk(k, dim=-1)  # [batch, k] flat (beam, token) indices
        parent = (offsets + best // vocab).view(-1)  # [batch*k] row each survivor extends
        tok = (best % vocab).view(-1)  # [batch*k]
        scores = cand.view(batch, k * vocab).gather(1, best)
        state = net.reorder(state, parent, same_sentence=True)
        tokens = torch.cat([tokens[parent], tok[:, None]], dim=1)
        lengths = new_len[parent]
        done = done[parent] | (tok == EOS)
        prev = tok
        if bool(done.all()):
            break
    final = (scores.view(-1) / length_penalty(lengths, alpha)).view(batch, k)
    pick = (offsets[:, 0] + final.argmax(-1))  # [batch]
    return tokens[pick]


def ids_to_tokens(ids: Sequence[int], itos: Sequence[str]) -> list[str]:
    """Target tokens up to (not including) the first <eos>; <pad> and <bos> skipped."""
    words: list[str] = []
    for i in ids:
        if i == EOS:
            break
        if i not in (PAD, BOS):
            words.append(itos[i])
    return words


_NO_SPACE_BEFORE = re.compile(r" ([.,!?;:)\]])")
_NO_SPACE_AFTER = re.compile(r"([(\[]) ")


def detokenize(tokens: Sequence[str]) -> str:
    """Inverse of the datamodule's regex tokenizer up to case: join with spaces, reattach punctuation.

    The tokenizer keeps whole exactly the units sacrebleu's 13a tokenizer keeps whole, so the scored
    text does not depend on this cosmetic reattachment; it makes samples readable and avoids
    sacrebleu's "tokenized period" warning.
    """
    text = " ".join(tokens)
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))


def _bleu() -> Any:
    from sacrebleu.metrics import BLEU

    # Lowercased: the model's vocabulary is lowercase while the references keep their case.
    return BLEU(lowercase=True)


def corpus_bleu(hypotheses: list[str], references: list[str]) -> float:
    """sacrebleu corpus BLEU (13a tokenization, exp smoothing, case-insensitive), one reference each."""
    return float(_bleu().corpus_score(hypotheses, [references]).score)


def bleu_signature() -> str:
    """sacrebleu's signature for ``corpus_bleu`` (it is only defined after one scoring, hence the dummy)."""
    bleu = _bleu()
    bleu.corpus_score(["a"], [["a"]])
    return str(bleu.get_signature())
