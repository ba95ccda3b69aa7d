"""Bad input gets one line naming the problem and the fix, never a traceback, and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main
from tests.conftest import tiny_params, write_params


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archbench: error: ") and "\n" not in err, err
    return err


def _with(project: Path, name: str, **changes: object) -> None:
    params = tiny_params()
    params["experiments"][name].update(changes)
    write_params(project / "params.yaml", params)


def test_malformed_params_yaml(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "params.yaml").write_text("experiments:\n  hello_lstm: {model: char_lm\n  oops: [\n")
    err = _one_line_error(capsys, ["train", "hello_lstm"])
    assert "not valid YAML" in err and "line" in err


def test_missing_params_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "params.yaml").unlink()
    assert "params.yaml not found" in _one_line_error(capsys, ["list"])


def test_unknown_experiment(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(capsys, ["train", "nope"])
    assert "unknown experiment 'nope'" in err and "hello_lstm" in err


def test_unknown_model(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", model="transformer")
    err = _one_line_error(capsys, ["train", "hello_lstm"])
    assert "experiment 'hello_lstm'" in err and "unknown model 'transformer'" in err and "char_lm" in err


def test_unknown_dataset(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", data="imagenet")
    err = _one_line_error(capsys, ["train", "hello_lstm"])
    assert "unknown dataset 'imagenet'" in err and "words" in err


def test_unknown_model_argument(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", model_args={"hiden_size": 8})
    err = _one_line_error(capsys, ["train", "hello_lstm"])
    assert "experiment 'hello_lstm'" in err and "'hiden_size'" in err and "hidden_size" in err


def test_unknown_trainer_argument(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", trainer={"max_epoch": 1})
    assert "unknown trainer key 'max_epoch'" in _one_line_error(capsys, ["train", "hello_lstm"])


def test_negative_hidden_size(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", model_args={"hidden_size": -4})
    err = _one_line_error(capsys, ["train", "hello_lstm"])
    assert "hello_lstm" in err and "hidden_size" in err and "-4" in err
    # Validated before training: no MLflow run was opened and nothing was written.
    assert not (project / "mlflow.db").exists() and not (project / "results").exists()


def test_bad_data_value(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", data_args={"batch_size": 0})
    assert "batch_size" in _one_line_error(capsys, ["train", "hello_lstm"])


def test_missing_data_file(project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """tinyshakespeare with no data dir and no download gives one line naming every option."""
    monkeypatch.setenv("ARCHBENCH_DATA_DIR", str(project / "empty"))
    params = tiny_params()
    params["full_experiments"]["shakespeare_lstm"]["data_args"]["download"] = False
    write_params(project / "params.yaml", params)
    err = _one_line_error(capsys, ["train", "shakespeare_lstm"])
    assert "tinyshakespeare/input.txt" in err and "ARCHBENCH_DATA_DIR" in err and "http" in err


def test_unknown_study(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown study 'x'" in _one_line_error(capsys, ["tune", "x"])


def test_bad_seeds(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", seeds="zero")
    assert "seeds" in _one_line_error(capsys, ["train", "hello_lstm"])


def test_continue_from_a_missing_checkpoint_or_without_a_seed(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", seeds=[0, 1])
    err = _one_line_error(capsys, ["train", "hello_lstm", "--continue-from", "last.ckpt"])
    assert "seeds [0, 1]" in err and "add --seed N" in err
    err = _one_line_error(capsys, ["train", "hello_lstm", "--seed", "0", "--continue-from", "gone/last.ckpt"])
    assert "--continue-from gone/last.ckpt: no such checkpoint" in err and "ckpt/last.ckpt" in err
