"""Issue case 2 and its neighbours: a full disk is one line with the path and the bytes needed, nothing finished
is thrown away, no temporary file is left, and every file a reader trusts is whole (old or new).

Each case runs twice where it can: on a real 600 KB tmpfs (needs root, skipped with the reason otherwise)
and with ENOSPC injected at the suite's one file writer, so CI always checks the handling."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cli import main
from tests.conftest import mlflow_runs, tiny_params, write_params

pytestmark = pytest.mark.faults


@contextmanager
def tmpfs(path: Path, size: str = "600k") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}); the injected cases cover it")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """A filler file that leaves ``leave`` bytes free on the disk of ``folder``."""
    free = shutil.disk_usage(folder).free
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, free - leave))
    return filler


def full_under(root: Path) -> Callable[..., None]:
    """An injected full disk for every file the suite writes under ``root`` (a partial file is written first,
    as a real full disk leaves it)."""
    from benchmarks.core import files

    real_write, real_copy = files._write_file, files._copy_file

    def write(path: Path, data: bytes) -> None:
        if Path(path).resolve().is_relative_to(root.resolve()):
            Path(path).write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    def copy(src: Path, dst: Path) -> None:
        if Path(dst).resolve().is_relative_to(root.resolve()):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        real_copy(src, dst)

    def install(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(files, "_write_file", write)
        monkeypatch.setattr(files, "_copy_file", copy)

    return install


def temporaries(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if ".tmp" in p.name]


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    # In-process runs only: a library's log handler may still hold an earlier test's closed capture stream, and
    # logging reports that as "--- Logging error ---" with a traceback of its own; the suite's output is the rest.
    err = re.sub(r"--- Logging error ---.*?\nArguments: [^\n]*\n", "", capsys.readouterr().err, flags=re.S)
    lines = [line for line in err.splitlines() if line.startswith("archbench: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _hello(project: Path, epochs: int = 2) -> None:
    params = tiny_params()
    params["experiments"]["hello_lstm"] |= {"seeds": [0], "trainer": {"max_epochs": epochs}}
    write_params(project / "params.yaml", params)


def _finished_again(project: Path, capsys: pytest.CaptureFixture[str], done: dict[str, Any]) -> None:
    """The rerun writes the results from done.json: no training, the same MLflow run, now FINISHED."""
    assert main(["train", "hello_lstm", "--seed", "0", "--no-progress"]) == 0
    assert "already trained" in capsys.readouterr().out
    (run,) = mlflow_runs(project)
    assert run.info.status == "FINISHED" and run.info.run_id == done["run_id"]
    result = json.loads((project / "results" / "hello_lstm" / "seeds" / "seed_0" / "result.json").read_text())
    assert result == json.loads(json.dumps(done["result"]))


def _check_full_results(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line(capsys, ["train", "hello_lstm", "--seed", "0", "--no-progress"])
    assert "no space left on the disk of" in line and "needed" in line and "free" in line, line
    assert "writes its results without training it again" in line
    assert not temporaries(project / "results", project / ".archbench")
    (state,) = (project / ".archbench" / "runs" / "hello_lstm").glob("seed0-*")
    done = json.loads((state / "done.json").read_text())  # the finished training is kept
    assert (state / "ckpt" / "best.ckpt").is_file()
    (run,) = mlflow_runs(project)
    assert run.info.status == "KILLED"  # not FAILED: the numbers were safe
    assert not (project / "results" / "hello_lstm" / "seeds" / "seed_0" / "result.json").exists()
    return done


@pytest.mark.slow
def test_a_full_results_disk_injected(project: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _hello(project)
    with monkeypatch.context() as patch:
        full_under(project / "results")(patch)
        done = _check_full_results(project, capsys)
    _finished_again(project, capsys, done)


@pytest.mark.slow
def test_a_full_results_disk_on_a_tmpfs(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _hello(project)
    with tmpfs(project / "results"):
        filler = fill(project / "results", leave=8 * 1024)
        done = _check_full_results(project, capsys)
        filler.unlink()
        _finished_again(project, capsys, done)


def _check_full_state(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line(capsys, ["train", "hello_lstm", "--seed", "0", "--no-progress"])
    assert "no space left on the disk of" in line and ".archbench" in line and "needed" in line, line
    assert not temporaries(project / ".archbench")
    (run,) = mlflow_runs(project)
    assert run.info.status == "KILLED"


@pytest.mark.slow
def test_a_full_state_disk_injected_into_lightnings_checkpoint_write(project: Path, capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The second epoch's checkpoint meets a full disk: the first one stays, and the rerun resumes from it to the
    numbers of an uninterrupted run."""
    import lightning.fabric.plugins.io.torch_io as torch_io

    _hello(project, epochs=3)
    real, saves = torch_io._atomic_save, []

    def save(checkpoint: dict[str, Any], path: Any) -> None:
        saves.append(path)
        if len(saves) > 2:  # best and last of epoch 0 are written; then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(checkpoint, path)

    with monkeypatch.context() as patch:
        patch.setattr(torch_io, "_atomic_save", save)
        _check_full_state(project, capsys)
    (state,) = (project / ".archbench" / "runs" / "hello_lstm").glob("seed0-*")
    assert (state / "ckpt" / "last.ckpt").is_file() and not (state / "done.json").exists()
    assert main(["train", "hello_lstm", "--seed", "0", "--no-progress"]) == 0
    resumed = json.loads((project / "results" / "hello_lstm" / "seeds" / "seed_0" / "result.json").read_text())
    assert main(["train", "hello_lstm", "--seed", "0", "--no-progress", "--restart"]) == 0
    straight = json.loads((project / "results" / "hello_lstm" / "seeds" / "seed_0" / "result.json").read_text())
    assert resumed["metrics"] == straight["metrics"]


@pytest.mark.slow
def test_a_full_state_disk_on_a_tmpfs(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _hello(project)
    with tmpfs(project / ".archbench"):
        filler = fill(project / ".archbench", leave=40 * 1024)  # the run starts; its checkpoints do not fit
        _check_full_state(project, capsys)
        filler.unlink()
        assert main(["train", "hello_lstm", "--seed", "0", "--no-progress"]) == 0
    assert {r.info.status for r in mlflow_runs(project)} == {"FINISHED", "KILLED"}


def _published(project: Path) -> None:
    assert main(["train", "hello_lstm", "--no-progress"]) == 0
    assert main(["report"]) == 0
    assert main(["publish", "hello_lstm"]) == 0


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_full_disk_during_report_and_publish_leaves_the_old_files_whole(
        project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """New case (publish), and the report of issue case 2: the previous report and ledger stay as they were."""
    _hello(project)
    _published(project)
    report, ledger = _snapshot(project / "results" / "report"), _snapshot(project / "ledger")
    capsys.readouterr()
    with monkeypatch.context() as patch:
        full_under(project / "results")(patch)  # the report is built beside results/report/, then swapped in
        line = _one_line(capsys, ["report"])
        assert "no space left on the disk of" in line and "report" in line and "previous report" in line, line
    assert _snapshot(project / "results" / "report") == report
    with monkeypatch.context() as patch:
        full_under(project / "ledger")(patch)
        line = _one_line(capsys, ["publish", "hello_lstm"])
        assert "no space left on the disk of" in line and "ledger" in line, line
    assert _snapshot(project / "ledger") == ledger
    assert not temporaries(project / "results", project / "ledger")
    assert not [p for p in project.glob("results/.report*")]


@pytest.mark.slow
def test_a_full_disk_during_report_on_a_tmpfs(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _hello(project)
    with tmpfs(project / "results", size="8m"):
        assert main(["train", "hello_lstm", "--no-progress"]) == 0
        assert main(["report"]) == 0
        before = _snapshot(project / "results" / "report")
        fill(project / "results", leave=2 * 1024)
        capsys.readouterr()
        line = _one_line(capsys, ["report"])
        assert "no space left on the disk of" in line and "previous report" in line, line
        assert _snapshot(project / "results" / "report") == before
        assert not temporaries(project / "results") and not list((project / "results").glob(".report*"))


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue case 8 (leaderboard files): a write cut short keeps the old bytes and no temporary file."""
    from benchmarks.core import files

    target = tmp_path / "leaderboard.json"
    files.atomic_write_text(target, "old\n")
    full_under(tmp_path)(monkeypatch)
    with pytest.raises(files.DiskFullError, match=r"leaderboard.json \(4 B needed"):
        files.atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["leaderboard.json"]
