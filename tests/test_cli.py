"""The console script: instant --help (no heavy imports), and `list`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cli import main
from tests.conftest import env_for_subprocess

HEAVY = ("torch", "lightning", "mlflow", "optuna", "dvc")


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from benchmarks.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_help() -> None:
    out = subprocess.run(["archbench", "--help"], capture_output=True, text=True, env=env_for_subprocess(), check=True)
    for command in ("list", "train", "tune", "report", "suite", "speed"):
        assert command in out.stdout


def test_list_shows_models_datasets_experiments(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "char_lm" in out and "words" in out and "hello_lstm" in out and "shakespeare_lstm" in out and "lstm_depth" in out


def test_the_summary_line_gives_the_95_ci_and_none_for_one_seed(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.commands import _print_summary
    from benchmarks.run.results import mean_std_ci

    _print_summary("x", {"summary": {"test/acc": mean_std_ci([0.5, 0.6, 0.7]), "test/loss": mean_std_ci([1.25])}})
    out = capsys.readouterr().out.splitlines()
    # t(0.975, 2) * 0.1 / sqrt(3) = 0.2484: the CI half-width, not the standard deviation 0.1
    assert out == ["x test/acc: 0.6000 ± 0.2484 (95% CI, n=3)", "x test/loss: 1.2500 (n=1, no CI)"]
