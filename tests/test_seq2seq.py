"""Encoder-decoder translation on Multi30k: data, attention masking, decoding, overfitting and BLEU."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from datamodules.sources import ENV_VAR, DataNotFoundError
from datamodules.translation import BOS, EOS, PAD, SPECIALS, UNK, Multi30kDataModule, build_vocab, tokenize
from lightning_modules.recurrent.decoding import beam_search, bleu_signature, corpus_bleu, detokenize, greedy_decode
from lightning_modules.recurrent.stack import StackedRNN
from lightning_modules.recurrent.seq2seq import Seq2Seq, run_masked
from tests.conftest import real_data_dir



@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # These models' matmuls are tiny: a second thread gains nothing, and on a busy shared machine the
    # OpenMP barriers of each of the thousands of small per-step ops made one test 30x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data_dir() -> str:
    return str(real_data_dir("multi30k/train.de.gz"))


def _dm(**kw: object) -> Multi30kDataModule:
    return Multi30kDataModule(data_dir=_data_dir(), download=False, **kw)


def _model(vocab: int = 30, **kw: object) -> Seq2Seq:
    torch.manual_seed(0)
    itos = list(SPECIALS) + [f"w{i}" for i in range(vocab - len(SPECIALS))]
    args = dict(src_vocab_size=vocab + 5, tgt_vocab_size=vocab, tgt_itos=itos, embed_dim=16, hidden_size=24,
                num_layers=2, dropout=0.0) | kw
    return Seq2Seq(**args)


def _src_batch(lengths: list[int], vocab: int = 35) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    src = torch.full((len(lengths), max(lengths)), PAD, dtype=torch.long)  # [batch, S]
    for i, n in enumerate(lengths):
        src[i, : n - 1] = torch.randint(len(SPECIALS), vocab, (n - 1,), generator=gen)
        src[i, n - 1] = EOS
    return src, torch.tensor(lengths)


# --- data -----------------------------------------------------------------------------------------
def test_tokenizer_and_vocab_rules() -> None:
    assert tokenize("A man's T-shirt, 3.5 \"big\" dogs.") == ["a", "man's", "t-shirt", ",", "3.5", '"', "big", '"',
                                                             "dogs", "."]
    assert detokenize(["a", "dog", ",", "a", "cat", "."]) == "a dog, a cat."
    vocab = build_vocab([["b", "a", "b"], ["a", "c", "b"]], min_freq=2, max_vocab=None)
    assert vocab == [*SPECIALS, "b", "a"]  # by count, "c" seen once is out
    assert build_vocab([["b", "a", "b"], ["a", "c"]], min_freq=1, max_vocab=5) == [*SPECIALS, "a"]  # tie: alphabetical


def test_vocab_from_train_only_and_unknowns() -> None:
    dm = _dm(limit=300, batch_size=16)
    dm.setup()
    train_tokens = [t for line in dm.references("train") for t in tokenize(line)]
    assert dm.tgt_itos == build_vocab([train_tokens], min_freq=2, max_vocab=None)
    counts = {t: train_tokens.count(t) for t in set(train_tokens)}
    val_only = next(t for line in dm.references("val") for t in tokenize(line) if t not in counts)
    pos = next(i for i, line in enumerate(dm.references("val")) if val_only in tokenize(line))
    tgt = dm.split("val")[pos][1]
    assert tgt[1 + tokenize(dm.references("val")[pos]).index(val_only)] == UNK
    assert dm.model_args()["tgt_itos"] == dm.tgt_itos and dm.model_args()["src_vocab_size"] == len(dm.src_itos)
    assert all(counts[t] >= 2 for t in dm.tgt_itos[len(SPECIALS):])


def test_batches_are_padded_bucketed_and_reproducible() -> None:
    dm = _dm(limit=256, batch_size=32)
    pl.seed_everything(0)
    batches = list(dm.train_dataloader())
    assert sum(b[0].size(0) for b in batches) == 256
    for src, src_len, tgt in batches:  # [batch, S], [batch], [batch, T]
        assert src.dtype == tgt.dtype == torch.long and src.shape == (src_len.numel(), int(src_len.max()))
        for row, n in zip(src, src_len.tolist()):
            assert row[n - 1] == EOS and (row[n:] == PAD).all() and ((row[: n - 1] > EOS) | (row[: n - 1] == UNK)).all()
        assert (tgt[:, 0] == BOS).all() and ((tgt == EOS).sum(1) == 1).all()
        assert torch.equal(src_len, src_len.sort().values)  # cut from a length-sorted chunk
    padding = sum(int(b[0].numel() - b[1].sum()) for b in batches)
    lengths = [len(s) for s, _ in dm.split("train").pairs]
    unbucketed = sum(max(lengths[i : i + 32]) * 32 - sum(lengths[i : i + 32]) for i in range(0, 256, 32))
    assert padding < unbucketed / 3
    pl.seed_everything(0)
    again = list(dm.train_dataloader())
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    loader = dm.train_dataloader()
    loader.batch_sampler.sampler.set_epoch(1)  # what Lightning calls before epoch 1
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(batches, loader))
    src, src_len, tgt = next(iter(dm.val_dataloader()))  # val keeps the file order
    assert tgt[0, : len(dm.split("val")[0][1])].tolist() == dm.split("val")[0][1]
    assert json.dumps(dm.describe()) and dm.content_hash() == _dm(limit=256).content_hash() != _dm(limit=8).content_hash()


def test_missing_data_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        Multi30kDataModule(data_dir=str(tmp_path), download=False).prepare_data()
    assert "\n" not in str(err.value) and "multi30k/train.de.gz" in str(err.value)


@pytest.mark.parametrize("kwargs, word", [({"batch_size": 0}, "batch_size"), ({"min_freq": 0}, "min_freq"),
                                          ({"max_vocab": 2}, "max_vocab"), ({"limit": True}, "limit")])
def test_datamodule_rejects_bad_args(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        Multi30kDataModule(**kwargs)


# --- model ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, word", [({"attention": "bahdanau"}, "attention"), ({"cell": "gru"}, "cell"),
                                          ({"beam_size": 0}, "beam_size"), ({"teacher_forcing": 1.5}, "teacher_forcing"),
                                          ({"tgt_itos": ["a"]}, "tgt_itos")])
def test_model_rejects_bad_values(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        _model(**kwargs)


@pytest.mark.parametrize("cell", ["elman", "lstm", "peephole"])
def test_encoder_final_state_is_at_each_rows_last_token(cell: str) -> None:
    torch.manual_seed(0)
    rnn = StackedRNN(cell, 5, 7, num_layers=2)
    x = torch.randn(3, 6, 5)  # [batch, S, input]; rows are real up to lengths, garbage after
    lengths = torch.tensor([6, 2, 4])
    out, final = run_masked(rnn, x, lengths)
    for i, n in enumerate(lengths.tolist()):
        ref_out, ref_final = rnn(x[i : i + 1, :n])
        torch.testing.assert_close(out[i : i + 1, :n], ref_out)
        for got, ref in zip(final, ref_final):
            got, ref = (got, ref) if cell == "elman" else (torch.cat(got, -1), torch.cat(ref, -1))
            torch.testing.assert_close(got[i : i + 1], ref)


def test_attention_ignores_padding() -> None:
    model = _model(attention="luong").eval()
    src, src_len = _src_batch([7, 4, 2])
    tgt_in = torch.randint(len(SPECIALS), 30, (3, 5))
    ds = model.net.start(src, src_len)
    _, weights = model.net.attention(torch.randn(3, 5, 24), ds.memory)  # [batch, T, S]
    for i, n in enumerate(src_len.tolist()):
        assert (weights[i, :, n:] == 0).all() and torch.allclose(weights[i, :, :n].sum(-1), torch.ones(5))
    noisy = src.clone()
    noisy[src == PAD] = 9  # garbage in the padding must change nothing
    torch.testing.assert_close(model(src, src_len, tgt_in), model(noisy, src_len, tgt_in))
    alone = model(src[1:2, :4], src_len[1:2], tgt_in[1:2])  # the same sentence without padding
    torch.testing.assert_close(model(src, src_len, tgt_in)[1:2], alone, atol=1e-5, rtol=1e-5)


def test_scaled_attention_is_the_general_score_over_root_hidden() -> None:
    plain, scaled = _model(attention="luong").eval(), _model(attention="luong_scaled").eval()
    scaled.load_state_dict(plain.state_dict())  # the same weights: only the score's scale differs
    src, src_len = _src_batch([7, 4, 2])
    h = torch.randn(3, 5, 24)  # [batch, T, hidden] decoder outputs
    memory = plain.net.start(src, src_len).memory
    w_a = plain.net.attention.w_a.weight  # [hidden, hidden]
    score = torch.einsum("bth,bsh->bts", h, memory.values @ w_a.T) / 24 ** 0.5  # h_t^T W_a h_s / sqrt(hidden)
    expected = score.masked_fill(~memory.mask[:, None, :], float("-inf")).softmax(-1)  # [batch, T, S]
    torch.testing.assert_close(scaled.net.attention(h, memory)[1], expected)
    assert not torch.allclose(plain.net.attention(h, memory)[1], expected)
    with pytest.raises(ValueError, match="attention must be one of"):
        _model(attention="bahdanau")


@pytest.mark.parametrize("kwargs", [{"attention": "none"}, {"attention": "luong"}, {"attention": "luong_scaled"},
                                    {"attention": "luong", "input_feeding": True, "cell": "peephole"},
                                    {"attention": "none", "cell": "elman", "reverse_source": False}])
def test_beam_width_one_is_greedy_and_fast_path_matches_steps(kwargs: dict) -> None:
    model = _model(**kwargs).eval()
    src, src_len = _src_batch([6, 3, 9, 1, 5])
    greedy = greedy_decode(model.net, src, src_len, max_len=12)
    assert torch.equal(greedy, beam_search(model.net, src, src_len, beam_size=1, max_len=12, alpha=0.6))
    wide = beam_search(model.net, src, src_len, beam_size=4, max_len=12, alpha=0.6)
    assert wide.size(0) == 5 and wide.size(1) <= 12
    tgt_in = torch.cat([torch.full((5, 1), BOS), torch.randint(len(SPECIALS), 30, (5, 6))], dim=1)
    torch.testing.assert_close(model.net(src, src_len, tgt_in), model.net(src, src_len, tgt_in, stepwise=True),
                               atol=1e-5, rtol=1e-5)


def test_bleu_and_settings() -> None:
    refs = ["A man's T-shirt, 3.5 \"big\" dogs.", "Two people (a boy and a girl) sit on a bench!"]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert corpus_bleu([detokenize(tokenize(r)) for r in refs], refs) == pytest.approx(100.0)  # lowercase, 13a
    sig = bleu_signature()
    assert "case:lc" in sig and "tok:13a" in sig and "version:2." in sig
    settings = _model(beam_size=3).metric_settings()
    assert settings["bleu_signature"] == sig and settings["bleu_corpus"] == "multi30k test_2016_flickr"
    assert settings["bleu_decoding"] == "beam" and settings["beam_size"] == 3
    assert json.dumps(settings)


def test_tiny_model_overfits_eight_pairs_and_reports_metrics() -> None:
    dm = _dm(limit=8, batch_size=8, min_freq=1)
    pl.seed_everything(0)
    model = Seq2Seq(**dm.model_args(), embed_dim=32, hidden_size=64, num_layers=1, dropout=0.0, attention="luong",
                    lr=1e-2, beam_size=2, max_decode_len=40)
    src, src_len, tgt = next(iter(dm.train_dataloader()))
    first = float(model.training_step((src, src_len, tgt), 0))
    trainer = pl.Trainer(max_epochs=100, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, deterministic=True)
    trainer.fit(model, train_dataloaders=dm.train_dataloader())
    last = float(trainer.callback_metrics["train/loss"])
    assert last < 0.05 * first, (first, last)
    target = detokenize(tokenize(dm.references("train")[0]))
    train0 = dm.split("train")[0][0]
    assert model.translate(torch.tensor([train0]), torch.tensor([len(train0)]), beam_size=1) == [target]
    # the evaluation path: val/test metrics against the datamodule's raw references, and samples
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    val = trainer.validate(model, datamodule=dm, verbose=False)[0]
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"val/loss", "val/ppl", "val/bleu"} <= set(val) and {"test/loss", "test/ppl", "test/bleu"} <= set(test)
    assert test["test/ppl"] == pytest.approx(torch.tensor(test["test/loss"]).exp().item(), rel=1e-4)
    # Greedy BLEU beside beam BLEU at test, on the same references: recomputed from greedy decodes directly.
    greedy = [h for src, src_len, _ in dm.test_dataloader() for h in model.translate(src, src_len, beam_size=1)]
    assert test["test/bleu_greedy"] == pytest.approx(corpus_bleu(greedy, dm.references("test")[: len(greedy)]))
    assert model.metric_settings()["bleu_sentences"] == 8
    assert model.metric_settings()["bleu_references"].startswith("raw")
    lines = model.make_samples()["translations.txt"].splitlines()
    assert len(lines) == 8 and lines[0].split(" ||| ")[2] == dm.references("val")[0]


def test_teacher_forcing_below_one_trains() -> None:
    model = _model(attention="luong", teacher_forcing=0.5)
    src, src_len = _src_batch([5, 3])
    tgt = torch.tensor([[BOS, 5, 6, 7, EOS], [BOS, 8, EOS, PAD, PAD]])
    loss = model.training_step((src, src_len, tgt), 0)
    loss.backward()
    assert torch.isfinite(loss) and model.net.encoder.embed.weight.grad.abs().sum() > 0


def test_early_stopping_ends_the_fit_and_is_recorded_as_such() -> None:
    from benchmarks.run.guards import DivergenceGuard, stopped_by

    dm = _dm(limit=8, batch_size=8, min_freq=1)
    pl.seed_everything(0)
    # lr 0: val/loss never improves after the first epoch, so patience 2 stops at epoch 3 of 20.
    model = Seq2Seq(**dm.model_args(), embed_dim=8, hidden_size=8, num_layers=1, lr=1e-12, beam_size=1,
                    max_decode_len=5, early_stopping_patience=2)
    assert [type(cb).__name__ for cb in model.configure_callbacks()] == ["EarlyStopping"]
    guard = DivergenceGuard()
    trainer = pl.Trainer(max_epochs=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[guard], num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch == 3 and stopped_by(trainer, guard) == "early_stopping"
    assert model.metric_settings()["early_stopping"] == "val/loss, patience 2 epochs"
    assert Seq2Seq(**dm.model_args()).configure_callbacks() == []
    with pytest.raises(ValueError, match="early_stopping_patience"):
        Seq2Seq(**dm.model_args(), early_stopping_patience=0)
