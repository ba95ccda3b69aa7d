"""The DVC pipeline on the tiny profile: repro, a no-op second repro, metrics, plots, `exp run -S`,
and the MLflow runs it leaves behind."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from benchmarks.claim.claims import cell_experiments, claim_config
from tests.conftest import ROOT, env_for_subprocess, tiny_params, write_params

COPIED = ("benchmarks", "lightning_modules", "datamodules", "estimators", "dvc.yaml", ".dvcignore", ".gitignore")


def _sh(cwd: Path, *cmd: str) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env_for_subprocess(), capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def test_report_stage_lists_every_default_experiment_and_study() -> None:
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    deps = set(dvc["stages"]["report"]["deps"])
    # Every experiment through the folder of headline files that each training stage writes as its metrics.
    assert "results/headline" in deps
    assert dvc["stages"]["train"]["do"]["metrics"] == ["results/headline/${key}.json"]
    assert {f"results/tune/{name}" for name in params["studies"]} <= deps
    assert {f"results/claims/{name}" for name in params["claims"]} <= deps


@pytest.fixture
def repo(tmp_path: Path, project: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, root / name)
    write_params(root / "params.yaml", tiny_params())
    _sh(root, "git", "init", "-q")
    _sh(root, "dvc", "init", "-q")
    _sh(root, "git", "add", "-A")
    _sh(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return root


@pytest.mark.slow
def test_repro_noop_metrics_plots_and_exp_run(repo: Path) -> None:
    log = _sh(repo, "dvc", "repro")
    params = tiny_params()
    for name in params["experiments"]:
        assert (repo / "results" / name / "metrics.json").is_file(), log[-2000:]
    assert (repo / "results" / "report" / "leaderboard.md").is_file()
    assert (repo / "results" / "tune" / "lstm_depth" / "best_params.json").is_file()
    board = (repo / "results" / "report" / "leaderboard.md").read_text()
    assert "crossover d =" in board and (repo / "results" / "report" / "kde_vs_dim.png").is_file()
    rows = {line.split(":")[0].strip("| ") : line for line in board.splitlines() if line.startswith("| ") and ":" in line}
    for claim in params["claims"]:  # each claim is a row of the claims table with its verdict
        assert claim in rows and any(f"| {v} |" in rows[claim] for v in ("Supported", "Refuted", "Inconclusive")), board

    # The no-op is checked by what happened, not by how long it took: no stage ran and no output was rewritten.
    written = {p: p.stat().st_mtime_ns for p in (repo / "results").rglob("*") if p.is_file()}
    second = _sh(repo, "dvc", "repro")
    assert "Running stage" not in second and "up to date" in second
    assert {p: p.stat().st_mtime_ns for p in (repo / "results").rglob("*") if p.is_file()} == written

    out = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=repo, env=env_for_subprocess(), capture_output=True,
                         text=True, check=True)
    shown = json.loads(out.stdout)  # stderr notes the ledger's metrics, which this copy has none of
    flat = json.dumps(shown)
    assert "results/headline/hello_lstm.json" in flat and "test/loss" in flat
    _sh(repo, "dvc", "plots", "show", "-o", "plots_out")
    assert (repo / "plots_out" / "index.html").is_file()

    # One MLflow run per experiment and seed (plus the study's parent and trials).
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("archbench")
    every = [r for r in client.search_runs([exp.experiment_id]) if "optuna.study" not in r.data.tags]
    runs = [r for r in every if r.data.tags.get("archbench.role") != "claim"]  # each claim's parent run apart
    assert {r.data.tags["archbench.claim"] for r in every if r not in runs} == set(params["claims"])
    expected = {(name, str(s)) for name, e in params["experiments"].items() for s in e["seeds"]}
    for claim in params["claims"]:  # every claim cell is an ordinary run too
        profile, conf = claim_config(params, claim)
        expected |= {(e.name, str(s)) for e in cell_experiments(claim, profile, conf).values() for s in e.seeds}
    assert {(r.data.tags["experiment"], r.data.tags["seed"]) for r in runs} == expected
    assert len(runs) == len(expected)

    # Changing one experiment's value reruns that experiment only (and what reads it), nothing else.
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ran")
    out = _sh(repo, "dvc", "exp", "run", "-S", "experiments.hello_elman.model_args.hidden_size=12")
    assert "Running stage 'train@hello_elman'" in out
    for other in ("hello_lstm", "words_elman", "words_lstm"):
        assert f"Running stage 'train@{other}'" not in out
    assert "Running stage 'tune@lstm_depth'" not in out and "Running stage 'density'" not in out
    assert "Running stage 'claim@" not in out


@pytest.mark.slow
def test_a_full_repro_on_a_fresh_clone_reproduces_the_lock_and_records_clean_commits(tmp_path: Path) -> None:
    """The committed dvc.lock is what the pipeline makes: a fresh clone's `dvc repro` rewrites no tracked file,
    and every MLflow run records the clean commit (DVC's own rewrites of dvc.lock mid-pipeline don't count)."""
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                      text=True, check=True).stdout.strip():
        pytest.skip("the working tree has uncommitted changes; this test checks the committed pipeline")
    clone = tmp_path / "clone"
    _sh(tmp_path, "git", "clone", "-q", str(ROOT), str(clone))
    env = {k: v for k, v in env_for_subprocess().items()
           if k not in ("ARCHBENCH_DATA_DIR", "MLFLOW_TRACKING_URI", "OPTUNA_STORAGE", "ARCHBENCH_PARAMS")}
    out = subprocess.run(["dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    changed = _sh(clone, "git", "status", "--porcelain")
    diff = _sh(clone, "git", "diff", "--", "dvc.lock")[:4000]
    assert changed.strip() == "", f"dvc repro rewrote tracked files:\n{changed}\n{diff}"
    head = _sh(clone, "git", "rev-parse", "HEAD").strip()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    trained = [r for r in runs if "seed" in r.data.tags]
    assert trained and all(r.data.tags["mlflow.source.git.commit"] == head for r in trained)
    assert all(r.data.params.get("git_commit") == head for r in trained)
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}  # pruned trials end KILLED; nothing RUNNING
    # And the pipeline is then up to date, with or without running anything.
    assert "up to date" in _sh(clone, "dvc", "repro", "--dry")


def test_a_fresh_clone_reads_as_up_to_date_without_running_anything(tmp_path: Path) -> None:
    """The committed dvc.lock matches the committed code and params: `dvc repro --dry --allow-missing` on a
    fresh clone (no results yet) would run nothing. Plain `--dry` trips over DVC's run-cache lookup of a
    dependency that no stage has made yet (treeverse/dvc#9818), so the README gives this form."""
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                      text=True, check=True).stdout.strip():
        pytest.skip("the working tree has uncommitted changes; this test checks the committed pipeline")
    clone = tmp_path / "clone"
    _sh(tmp_path, "git", "clone", "-q", str(ROOT), str(clone))
    out = _sh(clone, "dvc", "repro", "--dry", "--allow-missing")
    assert "Data and pipelines are up to date." in out and "Running stage" not in out, out[-3000:]
