"""`archbench translate --alignment / --attention-png`: the attention weights behind each translated word."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.core.errors import ArchbenchError
from benchmarks.use.alignment import Alignment, align, check_attention, plot, summarise, weights_for
from datamodules.translation import TOKEN_RE
from lightning_modules.recurrent.decoding import BOS, EOS, PAD, SPECIALS, detokenize, greedy_decode
from lightning_modules.recurrent.seq2seq import Seq2Seq

WORDS = ["ein", "mann", "hund", "läuft", "schläft", "."]


def _model(**kw: object) -> Seq2Seq:
    torch.manual_seed(0)
    src_itos = list(SPECIALS) + WORDS
    tgt_itos = list(SPECIALS) + [f"w{i}" for i in range(20)]
    args = dict(src_vocab_size=len(src_itos), tgt_vocab_size=len(tgt_itos), tgt_itos=tgt_itos, src_itos=src_itos,
                token_pattern=TOKEN_RE.pattern, embed_dim=16, hidden_size=24, num_layers=2, dropout=0.0,
                attention="luong_scaled", max_decode_len=8) | kw
    return Seq2Seq(**args).eval()


def test_the_step_weights_are_the_all_steps_attention_of_the_same_output() -> None:
    model = _model()
    n = len(SPECIALS)
    src = torch.tensor([[n, n + 1, n + 3, EOS], [n + 2, n + 4, EOS, PAD]])  # [batch, S]
    src_len = torch.tensor([4, 3])
    out = greedy_decode(model.net, src, src_len, 8)  # [batch, T]
    got = weights_for(model.net, src, src_len, out)  # [batch, T, S]
    # the oracle: the decoder over the whole (teacher-forced) output at once, then one attention call
    tgt_in = torch.cat([torch.full_like(out[:, :1], BOS), out[:, :-1]], dim=1)
    ds = model.net.start(src, src_len)
    h, _ = model.net.decoder(model.net.embed(tgt_in), ds.rnn)  # [batch, T, hidden]
    torch.testing.assert_close(got, model.net.attention(h, ds.memory)[1])
    assert (got[1, :, 3] == 0).all() and torch.allclose(got.sum(-1), torch.ones(got.shape[:2]))


@pytest.mark.parametrize("reverse", [True, False])
def test_columns_are_in_sentence_order_whichever_way_the_encoder_read(reverse: bool,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(reverse_source=reverse)

    def first_position(self: object, h: torch.Tensor, memory: object) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.zeros(h.size(0), h.size(1), memory.mask.size(1))  # [batch, T, S]: all on position 0
        weights[..., 0] = 1.0
        return torch.tanh(h), weights

    monkeypatch.setattr(type(model.net.attention), "forward", first_position)
    (a,) = align(model, ["Ein Mann schläft."], beam_size=1)
    assert a.source == ["ein", "mann", "schläft", ".", "<eos>"] and a.weights.shape == (len(a.target), 5)
    # position 0 of what the encoder read is the last token (<eos>) when it read backwards, else the first
    assert (a.weights.argmax(-1) == (4 if reverse else 0)).all()


def test_alignment_follows_the_beam_translation_and_unknown_words_show() -> None:
    model = _model()
    sentences = ["Ein Hund läuft.", "Ein Mann schläft, ein Hund läuft.", "Ein Zebra."]
    for beam in (1, 3):
        found = align(model, sentences, beam)
        printed = model.translate_text(sentences, beam_size=beam)
        assert [detokenize([t for t in a.target if t != "<eos>"]) for a in found] == printed
        assert [a.text for a in found] == printed
        assert all(torch.allclose(a.weights.sum(-1), torch.ones(len(a.target))) for a in found)
    assert found[2].source == ["ein", "<unk>", ".", "<eos>"]


def test_summary_tells_a_collapsed_attention_from_a_moving_one(tmp_path: Path) -> None:
    eye = Alignment(["a", "b", "c", "<eos>"], ["x", "y", "z", "<eos>"], torch.eye(4))  # one source word per step
    stuck = Alignment(["a", "b", "c", "<eos>"], ["x", "y", "<eos>"], torch.tensor([[0, 0, 1.0, 0]] * 3))
    assert summarise([eye]).distinct == 4 and summarise([eye]).max_weight == pytest.approx(1.0)
    both = summarise([eye, stuck])
    assert (both.sentences, both.distinct, both.source_length) == (2, 2.5, 4.0)
    png = plot([eye, stuck], tmp_path / "attention.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "file").write_text("")
    with pytest.raises(ArchbenchError, match="cannot write it"):  # a file where a folder should be
        plot([eye], tmp_path / "file" / "attention.png")


def test_a_model_without_attention_is_refused_in_one_line() -> None:
    with pytest.raises(ArchbenchError, match="translates without attention.*luong_scaled"):
        check_attention(_model(attention="none"), "multi30k_seq2seq")
