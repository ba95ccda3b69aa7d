"""Provenance for strangers: no path of the publishing machine in the ledger, and a dirty check that reads git's
porcelain lines as they are (a leading space included)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.core.portable import absolute_paths, is_absolute_path, portable, rewrite_ledger

ROOT = Path(__file__).resolve().parents[1]


def test_no_string_in_the_ledger_is_an_absolute_path() -> None:
    files = sorted((ROOT / "ledger").rglob("*.json"))  # ledger/*.json, metrics/, and any claims/ or studies/
    assert files, "the ledger is empty"
    found = [f"{p.relative_to(ROOT)}{hit}" for p in files for hit in absolute_paths(json.loads(p.read_text()))]
    assert not found, "machine-local paths in the ledger (rewrite with `python -m benchmarks.core.portable ledger`):\n" \
        + "\n".join(found[:20])


@pytest.mark.parametrize("value, absolute", [
    ("/usr/share/dict/american-english", True), ("sqlite:////tmp/lr5/mlflow.db", True),
    ("file:///home/u/mlruns", True), ("C:\\data\\x.gz", True), ("~/data/x", True),
    ("sqlite:///mlflow.db", False), ("https://example.org/a/b", False), ("results/x/best.ckpt", False),
    (".../multi30k/train.de.gz", False), ("sqlite (project mlflow.db)", False), ("a / b", False),
])
def test_absolute_paths_are_recognised(value: str, absolute: bool) -> None:
    assert is_absolute_path(value) is absolute


def test_portable_names_stores_project_files_and_data_files_without_this_machine(tmp_path: Path) -> None:
    record = {"provenance": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "other": "sqlite:////elsewhere/m.db",
                             "server": "http://tracking:5000"},
              "settings": {"fid_checkpoint": f"{tmp_path}/results/c/seeds/seed_0/best.ckpt",
                           "data": {"source": "/work/shared/datasets/multi30k/train.de.gz", "n": 3, "ok": [1.5, None]}}}
    out = portable(record, tmp_path)
    assert out["provenance"] == {"tracking_uri": "sqlite (project mlflow.db)", "other": "sqlite (m.db)",
                                 "server": "http://tracking:5000"}
    assert out["settings"]["fid_checkpoint"] == "results/c/seeds/seed_0/best.ckpt"
    assert out["settings"]["data"] == {"source": ".../multi30k/train.de.gz", "n": 3, "ok": [1.5, None]}
    assert not absolute_paths(out)


def test_rewrite_ledger_touches_only_files_with_local_paths(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    (ledger / "metrics").mkdir(parents=True)
    clean = ledger / "metrics" / "a.json"
    clean.write_text('{"test/loss": {"mean": 1.0}}\n')
    dirty = ledger / "a.json"
    dirty.write_text(json.dumps({"seeds": {"0": {"provenance": {"tracking_uri": "sqlite:////tmp/x/mlflow.db"}}}}))
    assert rewrite_ledger(ledger, tmp_path) == [dirty]
    assert json.loads(dirty.read_text())["seeds"]["0"]["provenance"]["tracking_uri"] == "sqlite (mlflow.db)"
    assert clean.read_text() == '{"test/loss": {"mean": 1.0}}\n'


def test_a_changed_dvc_lock_as_the_first_porcelain_line_is_not_dirty(tmp_path: Path) -> None:
    from benchmarks.core.provenance import git_commit

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "z.txt").write_text("z\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = git("rev-parse", "HEAD").strip()
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert git("status", "--porcelain", "--untracked-files=no").splitlines()[0] == " M dvc.lock"
    assert git_commit(tmp_path) == head
    (tmp_path / "z.txt").write_text("changed\n")
    assert git_commit(tmp_path) == f"{head}-dirty"
