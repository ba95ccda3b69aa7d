"""The long-lag task: data rules, chance level, an LSTM that learns it, and vanishing Elman gradients."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from datamodules.long_lag import LongLagDataModule
from lightning_modules.recurrent.sequence_classifier import SequenceClassifier, input_grad_norms

TRAINER = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


# Tiny per-step matmuls: intra-op threads only add synchronisation on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def test_sequences_follow_the_rules_and_are_deterministic() -> None:
    dm = LongLagDataModule(lag=7, num_symbols=6, num_classes=3, train_size=30, val_size=9, test_size=12, data_seed=5)
    ids, labels = dm.symbols("train")  # [30, 7], [30]
    assert ids.shape == (30, 7) and torch.equal(ids[:, 0], labels)
    assert ids[:, 1:].ge(3).all() and ids[:, 1:].lt(6).all()  # distractors are never class markers
    assert torch.bincount(labels).tolist() == [10, 10, 10]  # balanced
    again = LongLagDataModule(lag=7, num_symbols=6, num_classes=3, train_size=30, val_size=9, test_size=12, data_seed=5)
    assert torch.equal(again.symbols("test")[0], dm.symbols("test")[0]) and again.content_hash() == dm.content_hash()
    assert not torch.equal(dm.symbols("val")[0], dm.symbols("test")[0][:9])
    assert LongLagDataModule(lag=7, num_symbols=6, num_classes=3, train_size=30, data_seed=6).content_hash() != dm.content_hash()
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (9, 7, 6) and x.sum(-1).eq(1).all() and torch.equal(x[:, 0].argmax(-1), y)
    assert json.dumps(dm.describe()) and dm.model_args() == {"input_size": 6, "num_classes": 3}
    SequenceClassifier(**dm.model_args())


@pytest.mark.parametrize("kwargs, word", [({"num_symbols": 4}, "num_symbols"), ({"lag": 0}, "lag"),
                                          ({"num_classes": 1}, "num_classes")])
def test_bad_data_values_name_the_argument(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        LongLagDataModule(**kwargs)


def test_bad_model_values_name_the_argument() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        SequenceClassifier(8, 4, hidden_size=0)
    with pytest.raises(ValueError, match="gru"):
        SequenceClassifier(8, 4, cell="gru")
    with pytest.raises(ValueError, match="optimizer"):
        SequenceClassifier(8, 4, optimizer="rmsprop")


@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_untrained_model_is_at_chance_and_reports_gradient_norms(cell: str) -> None:
    pl.seed_everything(0)
    dm = LongLagDataModule(lag=50, test_size=1000, batch_size=250)
    model = SequenceClassifier(**dm.model_args(), cell=cell, hidden_size=16)
    out = pl.Trainer(**TRAINER).test(model, datamodule=dm, verbose=False)[0]  # under inference_mode, as the suite runs
    assert abs(out["test/acc"] - 0.25) < 0.05
    assert out["test/grad_norm_last"] > 0 and out["test/grad_norm_first"] < out["test/grad_norm_last"]


def test_lstm_learns_lag_10_quickly() -> None:
    pl.seed_everything(0)
    dm = LongLagDataModule(lag=10, train_size=1000, val_size=100, test_size=500)
    model = SequenceClassifier(**dm.model_args(), cell="lstm", hidden_size=32, lr=1e-2)
    trainer = pl.Trainer(max_epochs=3, limit_val_batches=0, **TRAINER)
    trainer.fit(model, datamodule=dm)
    assert trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"] > 0.9  # measured: 1.0


def test_elman_gradient_to_the_first_step_vanishes_far_faster_than_the_lstms() -> None:
    dm = LongLagDataModule(lag=100, test_size=256)
    ids, y = dm.symbols("test")
    x = F.one_hot(ids, 8).double()  # float64: the Elman's signal underflows float32 to exactly 0
    ratios = {}
    for cell in ("elman", "lstm"):
        torch.manual_seed(0)
        net = SequenceClassifier(8, 4, cell=cell, hidden_size=32, forget_bias=1.0).net.double()
        first, last = input_grad_norms(net, x, y)
        ratios[cell] = float(first.mean() / last.mean())
    # Measured over seeds 0-3 and hidden 32/64: Elman 1e-27..1e-20, LSTM 2e-8..2e-6.
    assert 0 < ratios["elman"] < 1e-6 * ratios["lstm"], ratios
