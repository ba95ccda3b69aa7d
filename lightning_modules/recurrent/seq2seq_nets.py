"""The networks of the encoder-decoder translator (seq2seq.py holds the system that trains and decodes them).

The encoder reads the (by default reversed) source with the suite's own stacked cells; the decoder is a
stacked RNN of the same cell and depth started from the encoder's final state of every layer, with
optional Luong attention ("general" score, arXiv:1508.04025 sec. 3.1) whose keys W_a h_s are computed
once per sentence; "luong_scaled" divides that score by sqrt(hidden) (Vaswani et al. 2017, sec. 3.2.1). ``Seq2SeqNet`` offers ``start``/``step``/``reorder`` for the decoders of decoding.py.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_modules.recurrent.decoding import PAD
from lightning_modules.recurrent.stack import StackedRNN, reverse_padded

ATTENTIONS = ("none", "luong", "luong_scaled")


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


def run_masked(rnn: StackedRNN, x: Tensor, lengths: Tensor) -> tuple[Tensor, list]:
    """StackedRNN over right-padded sequences x [batch, S, in]: each row's final state is taken at its own last
    token, so padding never reaches the state handed to the decoder; outputs past a row's length are zero
    (attention masks them)."""
    return rnn(x, lengths=lengths)


class Encoder(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int, cell: str,
                 dropout: float, reverse: bool, impl: str) -> None:
        super().__init__()
        self.reverse = reverse
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.drop = nn.Dropout(dropout)
        self.rnn = StackedRNN(cell, embed_dim, hidden_size, num_layers, dropout=dropout, impl=impl)

    def forward(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, list]:
        # src [batch, S] right-padded ids; src_len [batch]
        if self.reverse:  # reverse each row's real tokens in place; padding stays at the end
            src = reverse_padded(src, src_len)
        return run_masked(self.rnn, self.drop(self.embed(src)), src_len)


class LuongAttention(nn.Module):
    """Global attention, "general" score (Luong et al. 2015 eq. 8) and attentional state (eq. 5).

    scaled: the score h_t^T W_a h_s over sqrt(hidden). Unscaled, a seed whose scores grow early can saturate the
    softmax onto one fixed source position (weights ~0.99, so almost no gradient reaches the score) and train on
    as a model without attention; the scale keeps the softmax where it still learns.
    """

    def __init__(self, hidden_size: int, scaled: bool = False) -> None:
        super().__init__()
        self.scale = hidden_size ** -0.5 if scaled else 1.0
        self.w_a = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_c = nn.Linear(2 * hidden_size, hidden_size, bias=False)

    def memory(self, enc_out: Tensor, mask: Tensor) -> Memory:
        return Memory(enc_out, self.w_a(enc_out), mask)  # keys [batch, S, hidden]: once per sentence

    def forward(self, h: Tensor, memory: Memory) -> tuple[Tensor, Tensor]:
        """h [batch, T, hidden] decoder outputs -> (h~ [batch, T, hidden], weights [batch, T, S])."""
        scores = torch.bmm(h, memory.keys.transpose(1, 2)) * self.scale  # [batch, T, S]
        scores = scores.masked_fill(~memory.mask[:, None, :], float("-inf"))  # padding gets weight exactly 0
        weights = scores.softmax(-1)
        context = torch.bmm(weights, memory.values)  # [batch, T, hidden]
        return torch.tanh(self.w_c(torch.cat([context, h], dim=-1))), weights


class Seq2SeqNet(nn.Module):
    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, cell: str, embed_dim: int, hidden_size: int,
                 num_layers: int, dropout: float, attention: str, input_feeding: bool, reverse_source: bool,
                 impl: str = "auto") -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.input_feeding = input_feeding
        self.encoder = Encoder(src_vocab_size, embed_dim, hidden_size, num_layers, cell, dropout, reverse_source,
                               impl)
        self.embed = nn.Embedding(tgt_vocab_size, embed_dim, padding_idx=PAD)
        self.drop = nn.Dropout(dropout)
        self.decoder = StackedRNN(cell, embed_dim + (hidden_size if input_feeding else 0), hidden_size, num_layers,
                                  dropout=dropout, impl=impl)
        self.attention = LuongAttention(hidden_size, scaled=attention == "luong_scaled") if attention != "none" else None
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
        h, states = self.decoder(x[:, None], ds.rnn)  # one step through every layer: [N, 1, hidden]
        feat = h[:, 0] if self.attention is None else self.attention(h, ds.memory)[0][:, 0]
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
