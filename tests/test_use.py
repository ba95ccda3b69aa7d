"""Using trained models: `archbench sample | translate | tag | score | evaluate` on real checkpoints that tiny presets
trained here, the MLflow Model each seed logs, and `publish`'s registry entry read back as models:/...@champion."""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import SHARED_DATA, run_options, tiny_params, write_params

TINY_USE = {
    "digits_gan": {"model": "gan", "data": "digits", "seeds": [0],
                   "model_args": {"latent_dim": 8, "base_channels": 8, "sample_grid": 0},
                   "data_args": {"batch_size": 32},
                   "trainer": {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 2,
                               "limit_test_batches": 2}},
    "m30k_tiny": {"model": "seq2seq", "data": "multi30k", "seeds": [0],
                  "model_args": {"embed_dim": 16, "hidden_size": 16, "num_layers": 1, "beam_size": 2,
                                 "max_decode_len": 12, "sample_count": 0, "attention": "luong_scaled"},
                  "data_args": {"limit": 96, "batch_size": 32, "min_freq": 1}, "trainer": {"max_epochs": 1}},
    "ud_tiny": {"model": "tagger", "data": "ud_ewt", "seeds": [0],
                "model_args": {"embed_dim": 16, "hidden_size": 16, "num_layers": 1},
                "data_args": {"limit": 64, "batch_size": 32, "min_freq": 1}, "trainer": {"max_epochs": 1}},
}



def has_data(name: str) -> bool:
    """A shared copy of a data set beside the checkout, or in $ARCHBENCH_DATA_DIR."""
    dirs = [SHARED_DATA] + [Path(d) for d in os.environ.get("ARCHBENCH_DATA_DIR", "").split(os.pathsep) if d]
    return any((d / name).is_dir() for d in dirs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One project with words_lstm (two seeds) and the tiny GAN trained, shared by the tests of this file."""
    from benchmarks.core.params import experiment_from_params
    from benchmarks.run.train import run_experiment

    root = tmp_path_factory.mktemp("use")
    params = tiny_params()
    params["experiments"]["words_lstm"]["seeds"] = [0, 1]
    params["experiments"].update(TINY_USE)
    write_params(root / "params.yaml", params)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for var in ("MLFLOW_TRACKING_URI", "ARCHBENCH_PARAMS"):
            mp.delenv(var, raising=False)
        if SHARED_DATA.is_dir():
            mp.setenv("ARCHBENCH_DATA_DIR", str(SHARED_DATA))
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        for name in ("words_lstm", "digits_gan"):
            run_experiment(experiment_from_params(params, name), run_options(root))
        torch.set_num_threads(before)
        yield root


def archbench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from benchmarks.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _train(root: Path, name: str) -> None:
    from benchmarks.core.params import experiment_from_params, load_params
    from benchmarks.run.train import run_experiment

    run_experiment(experiment_from_params(load_params(root / "params.yaml"), name), run_options(root))


def _result(root: Path, exp: str, seed: int) -> dict[str, Any]:
    return json.loads((root / "results" / exp / "seeds" / f"seed_{seed}" / "result.json").read_text())


# --- char LM ----------------------------------------------------------------------------------------
def test_sample_prints_text_that_starts_with_the_prime(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = archbench(capsys, "sample", "words_lstm", "--prime", "th", "--count", "3", "--length", "12")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and all(line.startswith("th") for line in lines), out
    assert set("".join(lines)) <= set("abcdefghijklmnopqrstuvwxyz")  # the words model's own alphabet
    assert "words_lstm seed" in err  # which checkpoint answered
    again = archbench(capsys, "sample", "words_lstm", "--prime", "th", "--count", "3", "--length", "12")[1]
    assert again == out  # the same noise seed, the same text


def test_the_default_seed_is_the_best_by_the_models_monitor(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vals = {s: _result(trained, "words_lstm", s)["metrics"]["val/loss_best"] for s in (0, 1)}
    best = min(vals, key=vals.__getitem__)
    err = archbench(capsys, "sample", "words_lstm", "--length", "3")[2]
    assert f"words_lstm seed {best} (the best of 2" in err


def test_score_equals_the_models_own_test_loop_on_that_text(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datamodules.text import WordsDataModule

    dm = WordsDataModule(limit=256, batch_size=64)  # the tiny preset's test split
    text = trained / "test_words.txt"
    text.write_text("\n".join(dm.words("test")) + "\n")
    code, out, _ = archbench(capsys, "score", "words_lstm", "--seed", "0", "--text", str(text))
    nats = float(out.split()[1])
    recorded = _result(trained, "words_lstm", 0)["metrics"]["test/loss"]
    assert code == 0 and nats == pytest.approx(recorded, rel=1e-6, abs=1e-6)
    assert float(out.split()[3]) == pytest.approx(nats / math.log(2), rel=1e-5)
    assert "outside the vocabulary: none" in out


def test_score_counts_and_names_characters_outside_the_vocabulary(trained: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    odd = trained / "odd.txt"
    odd.write_text("Hello 42\nworld\n", encoding="utf-8")
    code, out, _ = archbench(capsys, "score", "words_lstm", "--text", str(odd))
    assert code == 0
    # "ello" + end and "world" + end are scored; H, space, 4 and 2 are reported, not silently dropped.
    assert "(11 targets scored from 15 characters" in out
    assert "outside the vocabulary: 4 characters (4 distinct" in out and "'H' x1" in out and "'4' x1" in out


def test_evaluate_reproduces_the_recorded_test_metrics_exactly(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = archbench(capsys, "evaluate", "words_lstm", "--seed", "1", "--split", "test")
    rows = [line.split() for line in out.splitlines()[1:]]
    recorded = _result(trained, "words_lstm", 1)["metrics"]
    assert code == 0 and {r[0] for r in rows} == {"test/loss", "test/bpc"}
    assert all(r[-1] == "yes" for r in rows), out
    assert float(rows[[r[0] for r in rows].index("test/loss")][2]) == pytest.approx(recorded["test/loss"], rel=1e-7)


def test_wrong_inputs_get_one_line(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [(("translate", "words_lstm", "Ein Hund"), "`archbench translate` needs a translation model"),
             (("translate", "digits_gan", "Ein Hund"), "gan model (images)"),
             (("tag", "words_lstm", "a b"), "needs a tagger"),
             (("sample", "nope"), "unknown experiment 'nope'"),
             (("sample", "words_lstm", "--seed", "7"), "--seed 7 is not one of words_lstm's seeds"),
             (("sample", "words_lstm", "--prime", "TH"), "outside this model's vocabulary"),
             (("sample", "digits_gan", "--label", "3", "--out", str(trained / "x.png")), "not class-conditional"),
             (("score", "digits_gan", "--text", "params.yaml"), "needs a char LM"),
             (("score", "words_lstm", "--text", "missing.txt"), "no such file")]
    for argv, expected in cases:
        code, out, err = archbench(capsys, *argv)
        lines = [line for line in err.splitlines() if line.startswith("archbench: error")]
        assert code == 2 and len(lines) == 1 and expected in lines[0], (argv, err)
        assert "Traceback" not in err


def test_an_untrained_seed_is_named_with_the_command_that_trains_it(trained: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    params = tiny_params()
    params["experiments"]["words_lstm"]["seeds"] = [0, 1, 2]
    params["experiments"].update(TINY_USE)
    write_params(trained / "more.yaml", params)
    code, _, err = archbench(capsys, "--params", str(trained / "more.yaml"), "sample", "words_lstm", "--seed", "2")
    assert code == 2 and "seed 2 of words_lstm is not trained" in err and "archbench train words_lstm --seed 2" in err


# --- image generators -------------------------------------------------------------------------------
def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_sample_on_the_gan_writes_a_png_of_the_asked_size(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.use.images import grid_size

    out = trained / "grid.png"
    code, printed, _ = archbench(capsys, "sample", "digits_gan", "--count", "10", "--scale", "3", "--out", str(out))
    assert code == 0 and printed.strip() == str(out)
    # 10 images of 8x8 in a 4-column grid: 3 rows; (4 * 9 + 1) * 3 wide, (3 * 9 + 1) * 3 high.
    assert _png_size(out) == grid_size(10, 8, 8, 3) == (111, 84)
    from PIL import Image

    pixels = torch.tensor(list(Image.open(out).getdata()), dtype=torch.float32)
    assert pixels.std() > 0  # drawn images, not a blank canvas


class _Conditional(torch.nn.Module):
    """A stand-in with the class-conditional interface: image k is all ``label / 10`` grey."""

    class hparams:  # noqa: N801 - the attribute a LightningModule has
        num_classes = 10
        image_shape = [1, 8, 8]

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def generate(self, n: int, seed: int, chunk: int = 500, label: int | None = None) -> torch.Tensor:
        self.seen.append(label)
        return torch.full((n, 1, 8, 8), (label or 0) / 10)


def test_label_reaches_a_class_conditional_generator_and_is_checked(tmp_path: Path) -> None:
    from benchmarks.core.errors import ArchbenchError
    from benchmarks.use.images import is_conditional, write_samples

    model = _Conditional()
    assert is_conditional(model)
    write_samples(model, 4, 0, 3, tmp_path / "c.png", 1, "stand_in")
    assert model.seen[-1] == 3
    with pytest.raises(ArchbenchError, match="classes 0..9"):
        write_samples(model, 4, 0, 10, tmp_path / "c.png", 1, "stand_in")


def _conditional_models() -> list[str]:
    from benchmarks.use.images import is_conditional
    from lightning_modules import MODELS

    return [name for name, cls in MODELS.items() if is_conditional(cls)]


@pytest.mark.slow
@pytest.mark.skipif(not _conditional_models(), reason="no registered model has the class-conditional interface "
                    "generate(n, seed, label=K) yet: nothing to draw class 3 from")
def test_label_3_draws_images_the_domain_classifier_calls_class_3(trained: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The cgan trained on 8x8 digits (25 epochs, best by FID); `archbench sample --label 3` writes a grid whose
    images the domain classifier calls 3 far more often than chance (1 in 10), by a one-sided binomial test."""
    import lightning.pytorch as pl
    import numpy as np
    from PIL import Image
    from scipy.stats import binomtest

    from datamodules.images import DigitsDataModule
    from lightning_modules.metrics.classifier import DomainClassifier

    # The judge: the digits classifier of the default profile (about 0.9 test accuracy), trained here.
    pl.seed_everything(0, verbose=False)
    judge = DomainClassifier(**DigitsDataModule().model_args(), channels=16, feature_dim=64, lr=0.002)
    trainer = pl.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(judge, datamodule=DigitsDataModule(batch_size=64))
    trainer.save_checkpoint(trained / "judge.ckpt")
    name = _conditional_models()[0]
    params = yaml_params(trained)
    params["experiments"]["digits_cond"] = {"model": name, "data": "digits", "seeds": [0],
                                            "model_args": {"latent_dim": 32, "base_channels": 32, "sample_grid": 0,
                                                           "fid_checkpoint": str(trained / "judge.ckpt"),
                                                           "fid_samples": 200, "fid_repeats": 2},
                                            "data_args": {"batch_size": 32}, "trainer": {"max_epochs": 25}}
    write_params(trained / "params.yaml", params)
    _train(trained, "digits_cond")
    count, out = 100, trained / "threes.png"
    code, _, err = archbench(capsys, "sample", "digits_cond", "--label", "3", "--count", str(count), "--scale", "1",
                             "--out", str(out))
    assert code == 0, err
    grid = np.asarray(Image.open(out), dtype=np.float32) / 255  # [rows * 9 + 1, 10 * 9 + 1]: 8x8 tiles, 1 px apart
    tiles = [grid[1 + 9 * r: 9 + 9 * r, 1 + 9 * c: 9 + 9 * c] for r in range(10) for c in range(10)]
    images = torch.tensor(np.stack(tiles)).unsqueeze(1)  # [100, 1, 8, 8]
    judge.eval()
    with torch.no_grad():
        hits = int((judge(images).argmax(-1) == 3).sum())
    assert binomtest(hits, count, 0.1, alternative="greater").pvalue < 0.01, f"{hits} of {count} called 3"


def yaml_params(root: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((root / "params.yaml").read_text())


# --- translation and tagging ------------------------------------------------------------------------
@pytest.mark.skipif(not has_data("multi30k"), reason="no multi30k copy beside the checkout or in ARCHBENCH_DATA_DIR")
def test_translate_returns_a_sentence_for_a_german_input(trained: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    _train(trained, "m30k_tiny")
    code, out, err = archbench(capsys, "translate", "m30k_tiny", "Ein Mann fährt mit dem Fahrrad.")
    assert code == 0 and len(out.splitlines()) == 1 and out.strip(), (out, err)
    monkeypatch.setattr("sys.stdin", io.StringIO("Zwei Hunde spielen.\n\nEine Frau liest ein Buch.\n"))
    code, out, _ = archbench(capsys, "translate", "m30k_tiny")
    assert code == 0 and len(out.splitlines()) == 2  # one translation per non-blank line
    png = trained / "attention.png"
    code, out, err = archbench(capsys, "translate", "m30k_tiny", "Zwei Hunde spielen.", "Eine Frau liest.",
                               "--alignment", "--attention-png", str(png))
    assert code == 0 and len(out.splitlines()) == 2, err  # stdout: still one translation a line
    lines = [line for line in err.splitlines() if line.startswith("# attention: ")]
    assert len(lines) == 2 and all("<-" in line for line in lines)  # each target word with a source word
    assert "# attention over 2 sentences: mean largest weight" in err and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not has_data("ud_ewt"), reason="no UD-EWT copy beside the checkout or in ARCHBENCH_DATA_DIR")
def test_tag_returns_one_tag_per_token(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datamodules.conllu import UPOS

    _train(trained, "ud_tiny")
    code, out, _ = archbench(capsys, "tag", "ud_tiny", "I don't like green eggs, Sam.")
    pairs = [item.rsplit("/", 1) for item in out.split()]
    assert code == 0 and [w for w, _ in pairs] == ["I", "do", "n't", "like", "green", "eggs", ",", "Sam", "."]
    assert all(tag in UPOS for _, tag in pairs)


# --- MLflow Models and the registry -----------------------------------------------------------------
def test_each_seed_logs_an_mlflow_model_with_signature_and_example(trained: Path) -> None:
    from tests.conftest import mlflow_client

    client = mlflow_client(trained)
    exp = client.get_experiment_by_name("archbench")
    models = client.search_logged_models([exp.experiment_id])
    names = sorted(m.name for m in models)
    assert {"words_lstm-seed0", "words_lstm-seed1", "digits_gan-seed0"} <= set(names)
    for model in models:
        assert model.source_run_id and client.get_run(model.source_run_id).info.run_name.endswith(
            model.name.rsplit("-", 1)[1].replace("seed", "/seed"))
    import mlflow

    info = mlflow.models.get_model_info(f"models:/{models[0].model_id}")
    assert info.signature is not None and info.saved_input_example_info is not None


def test_publish_registers_the_champion_and_the_uri_samples(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import mlflow
    import pandas as pd

    from benchmarks.core.portable import absolute_paths

    code, out, _ = archbench(capsys, "publish", "words_lstm")
    assert code == 0 and "as models:/archbench-words_lstm@champion (version 1)" in out
    assert archbench(capsys, "publish", "words_lstm")[1].count("(version 1)") == 1  # publishing twice registers once
    assert not absolute_paths(json.loads((trained / "ledger" / "words_lstm.json").read_text()))
    code, out, err = archbench(capsys, "sample", "models:/archbench-words_lstm@champion", "--prime", "ab", "--length", "5")
    assert code == 0 and out.startswith("ab") and "models:/archbench-words_lstm@champion" in err
    mlflow.set_tracking_uri(f"sqlite:///{trained / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/archbench-words_lstm@champion")
    texts = model.predict(pd.DataFrame({"prime": ["ab", "x"]}), params={"length": 6})
    assert [t[:len(p)] for t, p in zip(texts, ["ab", "x"])] == ["ab", "x"]
    code, _, err = archbench(capsys, "sample", "models:/archbench-nothing@champion")
    assert code == 2 and "archbench-nothing" in err and len(err.strip().splitlines()) == 1
