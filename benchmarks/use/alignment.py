"""Where an attention translator looks: the attention weights behind each word it writes.

For a translation the model produced (greedy or beam), the decoder is run again on that output, teacher
forced: its state at step t depends only on the tokens before t, so these are the weights it used while
writing the word, not an approximation. ``archbench translate EXP --alignment`` prints, per sentence, each
target word with the source word it weighted most, and a summary that tells a working attention from a
collapsed one: a working one moves across the source (many distinct attended positions per sentence); a
collapsed one puts ~all its weight on one fixed position whatever it writes. ``--attention-png`` draws the
weight matrices as heatmaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.core.errors import ArchbenchError
from lightning_modules.recurrent.decoding import BOS, EOS, PAD, beam_search, detokenize, greedy_decode, ids_to_tokens


@dataclass(frozen=True)
class Alignment:
    source: list[str]  # source tokens in sentence order (<unk> for unknown words), <eos> last
    target: list[str]  # the translation's tokens, <eos> last
    weights: Tensor  # [len(target), len(source)] attention over the source at each target step; rows sum to 1

    @property
    def text(self) -> str:
        """The translation as ``translate_text`` prints it."""
        return detokenize([t for t in self.target if t != "<eos>"])


@dataclass(frozen=True)
class AttentionSummary:
    sentences: int
    max_weight: float  # mean over target steps of the largest weight (1.0: all on one position)
    distinct: float  # mean number of distinct most-attended source positions per sentence
    source_length: float  # mean source length (tokens incl. <eos>), the most ``distinct`` can be


def check_attention(model: Any, experiment: str) -> None:
    if getattr(model.net, "attention", None) is None:
        raise ArchbenchError(f"{experiment} translates without attention: --alignment and --attention-png need an "
                             "attention model (model_args attention: luong or luong_scaled)")


@torch.no_grad()
def weights_for(net: Any, src: Tensor, src_len: Tensor, out: Tensor) -> Tensor:
    """Attention weights [batch, T, S] while the decoder writes out [batch, T] (ids, <eos> then <pad>)."""
    tgt_in = torch.cat([torch.full_like(out[:, :1], BOS), out[:, :-1]], dim=1)  # [batch, T]: <bos> + all but last
    ds = net.start(src, src_len)
    steps = []
    for t in range(tgt_in.size(1)):  # the model's own step, so input feeding and stacked layers are honoured
        x = net.drop(net.embed(tgt_in[:, t]))  # [batch, embed]
        if ds.feed is not None:
            x = torch.cat([x, ds.feed], dim=-1)
        h, states = net.decoder(x[:, None], ds.rnn)  # [batch, 1, hidden]
        feat, w = net.attention(h, ds.memory)  # [batch, 1, hidden], [batch, 1, S]
        steps.append(w[:, 0])
        ds = type(ds)(states, feat[:, 0] if ds.feed is not None else None, ds.memory)
    return torch.stack(steps, dim=1)  # [batch, T, S]


def align(model: Any, sentences: list[str], beam_size: int | None = None) -> list[Alignment]:
    """Translate (as ``model.translate_text`` does) and return each translation with its attention weights."""
    ids = [model.encode_source(s)[0] for s in sentences]
    src = torch.nn.utils.rnn.pad_sequence([torch.tensor(i) for i in ids], batch_first=True,
                                          padding_value=PAD).to(model.device)  # [batch, S]
    src_len = torch.tensor([len(i) for i in ids], device=model.device)  # [batch]
    k = model.hparams.beam_size if beam_size is None else beam_size
    was_training = model.training
    model.eval()
    with torch.no_grad():
        if k == 1:
            out = greedy_decode(model.net, src, src_len, model.hparams.max_decode_len)
        else:
            out = beam_search(model.net, src, src_len, k, model.hparams.max_decode_len, model.hparams.length_penalty)
        weights = weights_for(model.net, src, src_len, out)  # [batch, T, S]
    model.train(was_training)
    src_itos = model.hparams.src_itos
    found = []
    for row, (src_ids, n) in enumerate(zip(ids, src_len.tolist())):
        words = ids_to_tokens(out[row].tolist(), model.hparams.tgt_itos)
        steps = len(words) + int(EOS in out[row].tolist())  # the words, and <eos> when it was written
        w = weights[row, :steps, :n].cpu()  # [steps, n] over the encoder's positions
        if model.net.encoder.reverse:  # the encoder read the sentence backwards: back to sentence order
            w = w.flip(-1)
        found.append(Alignment([src_itos[i] for i in src_ids], words + ["<eos>"] * (steps - len(words)), w))
    return found


def summarise(alignments: list[Alignment]) -> AttentionSummary:
    # every alignment has at least one step: a decode writes <eos> or a word
    steps = torch.cat([a.weights.max(-1).values for a in alignments])  # [all target steps]
    distinct = [len(set(a.weights.argmax(-1).tolist())) for a in alignments]
    n = len(alignments)
    return AttentionSummary(n, float(steps.mean()), sum(distinct) / n, sum(len(a.source) for a in alignments) / n)


def describe(a: Alignment) -> str:
    """'target<-source(weight)' for every target step."""
    best = a.weights.max(-1)
    return " ".join(f"{t}<-{a.source[j]}({w:.2f})" for t, w, j in zip(a.target, best.values.tolist(),
                                                                        best.indices.tolist()))


def plot(alignments: list[Alignment], path: Path) -> Path:
    """One heatmap per sentence (target rows, source columns, up to 4 sentences), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = alignments[:4]
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 4.2), squeeze=False)
    for ax, a in zip(axes[0], shown):
        ax.imshow(a.weights.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(a.source)), a.source, rotation=90, fontsize=8)
        ax.set_yticks(range(len(a.target)), a.target, fontsize=8)
        ax.set_xlabel("source")
    axes[0][0].set_ylabel("translation")
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise ArchbenchError(f"--attention-png {path}: cannot write it ({exc.strerror}); give a writable path") from None
    finally:
        plt.close(fig)
    return path
