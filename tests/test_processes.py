"""Real processes: Lightning DDP on CPU, and a run killed with SIGKILL then resumed by a plain rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import env_for_subprocess, mlflow_runs, tiny_params, write_params


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_writes_what_one_process_writes(project: Path) -> None:
    """strategy ddp, devices 2: every file and MLflow write happens once (rank 0), with the same layout."""
    env = env_for_subprocess() | {"PYTHONUNBUFFERED": "1"}
    single = subprocess.run(["archbench", "train", "hello_lstm", "--no-progress"], cwd=project, env=env,
                            capture_output=True, text=True, check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    layout = _files(project / "results")
    (project / "results").rename(project / "results_single")
    params = tiny_params()
    params["experiments"]["hello_lstm"]["trainer"] |= {"strategy": "ddp", "devices": 2, "accelerator": "cpu"}
    write_params(project / "params.yaml", params)
    ddp = subprocess.run(["archbench", "train", "hello_lstm", "--no-progress"], cwd=project, env=env,
                         capture_output=True, text=True, check=False, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert _files(project / "results") == layout
    # The summary is printed once, by rank 0.
    assert ddp.stdout.count("hello_lstm test/loss:") == 1
    metrics = json.loads((project / "results" / "hello_lstm" / "metrics.json").read_text())
    single_metrics = json.loads((project / "results_single" / "hello_lstm" / "metrics.json").read_text())
    assert set(metrics) == set(single_metrics) and metrics["n_seeds"] == 2
    runs = mlflow_runs(project)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}  # 2 seeds x (single, ddp)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_in_the_same_mlflow_run(project: Path) -> None:
    """kill -9 in the middle of training; the plain rerun resumes and lands where an uninterrupted run lands."""
    params = tiny_params()
    params["experiments"]["hello_lstm"] |= {"seeds": [0], "trainer": {"max_epochs": 6}}
    write_params(project / "params.yaml", params)
    env = env_for_subprocess()
    state = project / ".archbench" / "runs" / "hello_lstm"
    proc = subprocess.Popen(["archbench", "train", "hello_lstm", "--no-progress"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(state.glob("*/ckpt/last.ckpt")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(state.glob("*/ckpt/last.ckpt")), "the run finished no epoch before the deadline"
    assert not (project / "results" / "hello_lstm" / "metrics.json").exists()
    (killed,) = mlflow_runs(project)
    assert killed.info.status == "RUNNING"  # what SIGKILL leaves; the rerun must pick it up
    rerun = subprocess.run(["archbench", "train", "hello_lstm", "--no-progress"], cwd=project, env=env,
                           capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Restoring states from the checkpoint" in rerun.stderr + rerun.stdout
    (run,) = mlflow_runs(project)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    resumed = json.loads((project / "results" / "hello_lstm" / "metrics.json").read_text())
    straight = subprocess.run(["archbench", "train", "hello_lstm", "--no-progress", "--restart"], cwd=project, env=env,
                              capture_output=True, text=True, check=False)
    assert straight.returncode == 0, straight.stderr[-3000:]
    fresh = json.loads((project / "results" / "hello_lstm" / "metrics.json").read_text())
    assert resumed["test/loss"]["mean"] == pytest.approx(fresh["test/loss"]["mean"], rel=1e-5)


@pytest.mark.slow
def test_three_seeds_as_three_processes_merge_to_what_one_process_writes(project: Path) -> None:
    """Seeds 0, 1, 2 as separate processes at once (as on three machines), then `collect`: the same
    metrics.json and summary as one process running all three."""
    params = tiny_params()
    params["experiments"]["hello_lstm"]["seeds"] = [0, 1, 2]
    write_params(project / "params.yaml", params)
    env = env_for_subprocess()
    one = subprocess.run(["archbench", "train", "hello_lstm", "--no-progress"], cwd=project, env=env,
                         capture_output=True, text=True, check=False)
    assert one.returncode == 0, one.stderr[-3000:]
    (project / "results").rename(project / "results_one")
    jobs = [subprocess.Popen(["archbench", "train", "hello_lstm", "--seed", str(s), "--no-progress"], cwd=project,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for s in (0, 1, 2)]
    for job in jobs:
        _, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-3000:]
    collected = subprocess.run(["archbench", "collect", "hello_lstm"], cwd=project, env=env, capture_output=True,
                               text=True, check=False)
    assert collected.returncode == 0, collected.stderr[-3000:]
    for name in ("metrics.json", "summary.json"):
        merged = json.loads((project / "results" / "hello_lstm" / name).read_text())
        single = json.loads((project / "results_one" / "hello_lstm" / name).read_text())
        assert merged == single, name
    assert sorted(_files(project / "results")) == sorted(_files(project / "results_one"))
