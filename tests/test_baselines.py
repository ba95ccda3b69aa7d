"""The trivial baselines: each estimator against a count done by hand, and `archbench baselines` on tiny
presets against a direct count over the datamodule's own split."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.cli import main
from estimators.baselines import char_unigram, frequent_tag, majority_class


def test_char_unigram_is_the_add_one_cross_entropy() -> None:
    got = char_unigram([0, 0, 1, 2], [0, 1, 3], vocab_size=4)
    # p = (count + 1) / (4 + 4): p(0) = 3/8, p(1) = 2/8, p(3) = 1/8 (unseen in training)
    want = -(math.log(3 / 8) + math.log(2 / 8) + math.log(1 / 8)) / 3
    assert got["loss"] == pytest.approx(want) and got["bpc"] == pytest.approx(want / math.log(2))
    assert (got["n_train"], got["n_eval"]) == (4, 3)
    with pytest.raises(ValueError, match="ids in"):
        char_unigram([0, -100], [0], vocab_size=4)  # padding must be removed first


def test_majority_class_and_its_tie_rule() -> None:
    assert majority_class([2, 2, 1, 0, 1], [1, 1, 2, 0]) == {"acc": 0.5, "label": 1, "n_train": 5, "n_eval": 4}
    assert majority_class([3, 3, 1], [3, 1, 1])["acc"] == pytest.approx(1 / 3)


def test_frequent_tag_per_word_with_the_overall_tag_for_unseen_words() -> None:
    train = [(["the", "dog", "runs"], ["DET", "NOUN", "VERB"]), (["the", "runs", "stop"], ["DET", "NOUN", "VERB"]),
             (["dog", "runs"], ["NOUN", "VERB"])]
    test = [(["the", "dog", "runs", "cat"], ["DET", "NOUN", "VERB", "NOUN"]), (["stop"], ["NOUN"])]
    got = frequent_tag(train, test)
    # runs: VERB x2, NOUN x1 -> VERB; cat unseen -> the most frequent tag overall (NOUN 3, VERB 3, DET 2: NOUN by
    # name); stop: VERB (wrong here). Right: the, dog, runs, cat = 4 of 5.
    assert got["acc"] == pytest.approx(4 / 5) and got["unseen_tag"] == "NOUN" and got["unseen_forms"] == 1


def test_baselines_command_counts_the_rows_own_split(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datamodules.text import HelloDataModule

    from benchmarks.core.params import experiment_from_params, load_params
    from benchmarks.run.build import build_datamodule

    assert main(["baselines", "hello_lstm", "hello_elman", "digits_classifier", "--publish"]) == 0
    out = capsys.readouterr().out
    assert "hello_elman, hello_lstm" in out  # one baseline for the two experiments of one split
    written = sorted(p.name for p in (project / "results" / "baselines").glob("*.json"))
    assert written == sorted(p.name for p in (project / "ledger" / "baselines").glob("*.json")) and len(written) == 2
    hello = json.loads(next((project / "ledger" / "baselines").glob("char_unigram-hello-*.json")).read_text())
    # A direct count: the targets of a word are its letters and the end symbol; train repeats the list.
    params = load_params(project / "params.yaml")
    repeats = experiment_from_params(params, "hello_lstm").data_args["repeats"]
    targets = Counter("".join(w + "\n" for w in HelloDataModule.WORDS))
    vocab = sorted(set("".join(HelloDataModule.WORDS)) | {"\n"})
    n_train = repeats * sum(targets.values())
    want = -sum(n * math.log((repeats * n + 1) / (n_train + len(vocab))) for n in targets.values()) / sum(targets.values())
    assert hello["metrics"]["test/loss"] == pytest.approx(want, rel=1e-12)
    assert hello["task"] == "char_lm" and hello["experiments"] == ["hello_elman", "hello_lstm"]
    dm = build_datamodule(experiment_from_params(params, "hello_lstm"), None)
    assert hello["data_hash"] == dm.content_hash() and hello["settings"]["loss_unit"] == "nats per character"
    assert hello["compute"]["cpu_s"] >= 0 and hello["compute"]["machine"]["cores"] >= 1
    digits = json.loads(next((project / "ledger" / "baselines").glob("majority_class-digits-*.json")).read_text())
    dm = build_datamodule(experiment_from_params(params, "digits_classifier"), None)
    train, test = Counter(dm.labels("train").tolist()), Counter(dm.labels("test").tolist())
    top = max(sorted(train), key=train.__getitem__)
    assert digits["metrics"] == {"test/acc": pytest.approx(test[top] / sum(test.values()))}
    assert main(["baselines", "no_such_experiment"]) == 2


def test_the_pixel_baselines_sit_beside_the_likelihood_rows(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Binarized images get independent Bernoulli pixels in nats per image, 8-bit images independent 256-level
    pixels in bits/dim, each counted on the datamodule's own train split and checked against a direct count."""
    from benchmarks.core.params import experiment_from_params, load_params
    from benchmarks.run.build import build_datamodule
    from tests.conftest import write_params

    params = load_params(project / "params.yaml")
    params["experiments"]["digits_vae"] = {"model": "vae", "data": "digits", "seeds": [0],
                                           "data_args": {"batch_size": 32, "binarize": True}}
    params["experiments"]["digits_ddpm"] = {"model": "ddpm", "data": "digits", "seeds": [0],
                                            "data_args": {"batch_size": 32}}
    write_params(project / "params.yaml", params)
    assert main(["baselines", "digits_vae", "digits_ddpm"]) == 0
    folder = project / "results" / "baselines"
    binary = json.loads(next(folder.glob("bernoulli_pixels-digits-*.json")).read_text())
    levels = json.loads(next(folder.glob("categorical_pixels-digits-*.json")).read_text())
    assert binary["task"] == "likelihood_binarized" and levels["task"] == "likelihood_8bit"

    dm = build_datamodule(experiment_from_params(load_params(project / "params.yaml"), "digits_vae"), None)
    train, test = dm.images("train").flatten(1), dm.images("test").flatten(1)  # [N, 64] of 0/1
    p_one = (train.sum(0).double() + 1) / (len(train) + 2)  # add-one: (n_d + 1) / (N + 2)
    nll = -(test.double() * p_one.log() + (1 - test.double()) * (1 - p_one).log()).sum(1).mean()
    assert binary["metrics"] == {"test/nll_k500": pytest.approx(float(nll), rel=1e-9)}

    dm = build_datamodule(experiment_from_params(load_params(project / "params.yaml"), "digits_ddpm"), None)
    train = (dm.images("train").flatten(1) * 255).round().long()
    test = (dm.images("test").flatten(1) * 255).round().long()
    total = 0.0
    for d in range(train.shape[1]):  # pixel by pixel: (count of the test value at d + 1) / (N + 256)
        counts = Counter(train[:, d].tolist())
        total += sum(-math.log((counts[v] + 1) / (len(train) + 256)) for v in test[:, d].tolist())
    want_bpd = total / len(test) / (train.shape[1] * math.log(2))
    assert levels["metrics"] == {"test/bpd": pytest.approx(want_bpd, rel=1e-9)}
