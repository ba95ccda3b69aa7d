"""UPOS tagging: CoNLL-U parsing, length-aware reversal, padding-proof BiRNN, and a tiny run on UD-EWT."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from datamodules.conllu import UPOS, UDPOSDataModule, parse_conllu
from datamodules.sources import ENV_VAR
from lightning_modules.recurrent.stack import reverse_padded
from lightning_modules.recurrent.tagger import Tagger
from tests.conftest import copy_from_torch, real_data_dir


CONLLU = """# sent_id = 1
# text = I don't know.
1	I	I	PRON	PRP	_	3	nsubj	_	_
2-3	don't	_	_	_	_	_	_	_	_
2	do	do	AUX	VBP	_	4	aux	_	_
3	n't	not	PART	RB	_	4	advmod	_	_
4	know	know	VERB	VB	_	0	root	_	_
4.1	knows	know	VERB	VBZ	_	_	_	0:root	_
5	.	.	PUNCT	.	_	4	punct	_	_

# sent_id = 2
1	Go	go	VERB	VB	_	0	root	_	_
2	!	!	PUNCT	.	_	1	punct	_	_
"""


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


# A time loop of tiny matmuls gains nothing from intra-op threads, and on a busy 2-core machine
# their synchronisation made these runs ~8x slower (measured: 5 s vs 43 s for the tiny run).
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_parse_skips_comments_multiword_ranges_and_empty_nodes() -> None:
    sents = parse_conllu(CONLLU)
    assert sents == [(["I", "do", "n't", "know", "."], ["PRON", "AUX", "PART", "VERB", "PUNCT"]),
                     (["Go", "!"], ["VERB", "PUNCT"])]  # the second has no trailing blank line
    with pytest.raises(ValueError, match="line 3"):
        parse_conllu("# c\n1\tI\tI\tPRON\t_\t_\t0\troot\t_\t_\n1\tbad line\n")


def test_reverse_padded_reverses_within_lengths_and_is_an_involution() -> None:
    x = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [9, 0, 0, 0, 0]])
    lengths = torch.tensor([3, 5, 1])
    rev = reverse_padded(x, lengths)
    assert rev.tolist() == [[3, 2, 1, 0, 0], [8, 7, 6, 5, 4], [9, 0, 0, 0, 0]]
    feats = torch.randn(3, 5, 4)  # [batch, T, features] reverses along T only
    torch.testing.assert_close(reverse_padded(reverse_padded(feats, lengths), lengths), feats)
    torch.testing.assert_close(reverse_padded(feats, lengths)[0, :3], feats[0, :3].flip(0))


def _tagger(**kw: object) -> Tagger:
    torch.manual_seed(0)
    args = dict(vocab_size=20, num_tags=3, tag_names=["A", "B", "C"], embed_dim=6, hidden_size=5, dropout=0.0)
    return Tagger(**(args | kw)).eval()


@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_bidirectional_outputs_ignore_appended_padding(cell: str) -> None:
    model = _tagger(cell=cell)
    words = torch.tensor([[3, 4, 5, 6]])
    base = model(words, torch.tensor([4]))  # [1, 4, 3]
    # Longer padding, even junk word ids past the length: the real positions must not move.
    padded = torch.tensor([[3, 4, 5, 6, 0, 0, 0], [3, 4, 5, 6, 7, 8, 9]])
    out = model(padded, torch.tensor([4, 4]))
    torch.testing.assert_close(out[:, :4], base.expand(2, -1, -1), atol=1e-6, rtol=1e-6)
    # The backward direction is real: changing the last word changes the first position's output.
    other = model(torch.tensor([[3, 4, 5, 7]]), torch.tensor([4]))
    assert not torch.allclose(other[0, 0], base[0, 0])


@pytest.mark.parametrize("impl", ["torch", "equations"])
def test_bilstm_matches_torch_bidirectional_lstm_on_packed_sequences(impl: str) -> None:
    model = _tagger(num_layers=2, forget_bias=0.0, impl=impl)
    rnn = model.net.rnn
    ref = nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
    copy_from_torch(rnn, ref)
    x = torch.randn(3, 6, 6)  # [batch, T, embed]
    lengths = torch.tensor([6, 2, 4])
    ours, _ = rnn(x, lengths=lengths)  # [batch, T, 10]
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    theirs, _ = nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(ours[b, :n], theirs[b, :n], atol=1e-5, rtol=1e-5)


def test_datamodule_batches_from_injected_sentences() -> None:
    sents = parse_conllu(CONLLU)
    dm = UDPOSDataModule.from_sentences({"train": sents + sents, "val": sents, "test": sents[:1]},
                                        batch_size=2, min_freq=2)
    pl.seed_everything(0)
    args = dm.model_args()
    assert args["tag_names"] == list(UPOS) and args["num_tags"] == 17
    assert dm.words[:2] == ["<pad>", "<unk>"] and args["vocab_size"] == len(dm.words) == 2 + 7
    words, tags, lengths, chars = next(iter(dm.val_dataloader()))  # eval batches are in length order
    assert words.shape == tags.shape == (2, 5) and lengths.tolist() == [2, 5]
    assert tags[0, 2:].eq(-100).all() and words[0, 2:].eq(0).all() and tags[1].ge(0).all()
    # Characters, case kept: "Go" is G, o then padding; a padded token has none.
    assert dm.chars[:2] == ["<pad>", "<unk>"] and chars.shape == (2, 5, 4)  # "know" is the longest word
    assert [dm.chars[i] for i in chars[0, 0].tolist() if i] == list("Go") and chars[0, 2:].eq(0).all()
    assert [dm.chars[i] for i in chars[1, 3].tolist() if i] == list("know")
    assert json.dumps(dm.describe()) and len(dm.content_hash()) == 64
    Tagger(**args)  # every model arg the data supplies is a constructor argument


@pytest.mark.parametrize("kwargs, word", [({"hidden_size": 0}, "hidden_size"), ({"lr": 0}, "lr"),
                                          ({"cell": "gru"}, "gru"), ({"tag_names": ["A"]}, "tag_names")])
def test_bad_values_name_the_argument(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        _tagger(**kwargs)
    with pytest.raises(ValueError, match="min_freq"):
        UDPOSDataModule(min_freq=0)
    with pytest.raises(ValueError, match="'NN'"):
        UDPOSDataModule.from_sentences({"train": [(["a"], ["NN"])], "val": [], "test": []}).setup()


def test_ewt_splits_and_tag_set() -> None:
    dm = UDPOSDataModule(data_dir=str(real_data_dir("ud_ewt")))
    sizes = {k: v["sentences"] for k, v in dm.describe()["splits"].items()}
    assert sizes == {"train": 12544, "val": 2001, "test": 2077}
    assert {t for _, tags in dm.sentences("train") for t in tags} == set(UPOS) == set(dm.tag_names)


def test_tiny_run_on_200_sentences_improves_accuracy() -> None:
    pl.seed_everything(0)
    dm = UDPOSDataModule(data_dir=str(real_data_dir("ud_ewt")), limit=200, batch_size=50, min_freq=1)
    model = Tagger(**dm.model_args(), embed_dim=32, hidden_size=32, num_layers=1, lr=2e-2, dropout=0.0)
    trainer = pl.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    before = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    trainer.fit(model, datamodule=dm)
    after = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    assert after > before + 0.3 and after > 0.5, (before, after)  # measured: 0.04 -> 0.61


def test_char_encoder_is_a_bidirectional_rnn_over_each_words_characters() -> None:
    model = _tagger(chars=["<pad>", "<unk>", "a", "b", "c"], char_dim=4, char_hidden=3, forget_bias=0.0)
    enc = model.net.chars
    ref = nn.LSTM(4, 3, bidirectional=True, batch_first=True)
    copy_from_torch(enc.rnn, ref)
    chars = torch.tensor([[[2, 3, 4], [3, 0, 0]], [[4, 4, 0], [0, 0, 0]]])  # [batch 2, T 2, L 3]; last token padding
    out = enc(chars)  # [2, 2, 6]
    for b, t, word in ((0, 0, [2, 3, 4]), (0, 1, [3]), (1, 0, [4, 4])):
        _, (h, _) = ref(enc.embed(torch.tensor([word])))  # h [2 directions, 1, 3]
        torch.testing.assert_close(out[b, t], torch.cat([h[0, 0], h[1, 0]]), atol=1e-6, rtol=1e-6)
    assert out[1, 1].eq(0).all()  # no characters, no features
    with pytest.raises(ValueError, match="char_dim"):
        _tagger(char_dim=4)  # without the datamodule's character list


def test_tagger_with_characters_trains_and_tags_raw_tokens() -> None:
    sents = parse_conllu(CONLLU)
    dm = UDPOSDataModule.from_sentences({"train": sents * 4, "val": sents, "test": sents}, batch_size=2, min_freq=1)
    pl.seed_everything(0)
    model = Tagger(**dm.model_args(), embed_dim=8, hidden_size=8, char_dim=4, char_hidden=4, lr=2e-2, dropout=0.0)
    trainer = pl.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert tested["test/acc"] == 1.0  # memorised: 7 tokens
    assert model.tag_tokens([["Go", "!"], ["I", "do", "n't", "know", "."]]) == [["VERB", "PUNCT"],
                                                                             ["PRON", "AUX", "PART", "VERB", "PUNCT"]]
    assert "bidirectional lstm over each token's characters" in model.metric_settings()["char_features"]
