"""Issue case 1 against a real `mlflow server`: killed in the middle of a run, it comes back after a pause (the run
ends FINISHED in the same MLflow run with every epoch's values), or never (one line within the retry window,
checkpoints kept, and the next run resumes in the same MLflow run to the numbers of an uninterrupted run)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import env_for_subprocess, tiny_params, write_params
from tests.faults.conftest import MlflowServer, archbench, one_error_line, start_archbench, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]
PAUSE_S = 3.0  # the server stays down this long, plus its own restart (15-30 s on this machine)


def _project(project: Path, epochs: int) -> None:
    params = tiny_params()
    params["experiments"]["hello_lstm"] |= {"seeds": [0], "trainer": {"max_epochs": epochs}}
    write_params(project / "params.yaml", params)


def _env(server: MlflowServer, window_s: float) -> dict[str, str]:
    return env_for_subprocess() | {"MLFLOW_TRACKING_URI": server.uri, "ARCHBENCH_TRACKING_RETRY_S": str(window_s),
                                   "OMP_NUM_THREADS": "1"}


def _state(project: Path) -> Path:
    return project / ".archbench" / "runs" / "hello_lstm"


def _histories(client: Any, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}


def _reference(project: Path, server: MlflowServer) -> tuple[dict[str, Any], dict[str, list[tuple[int, float]]]]:
    """An uninterrupted run of the same seed (a new MLflow run): its result and its curves."""
    straight = archbench("train", "hello_lstm", "--no-progress", "--restart", cwd=project, env=_env(server, 60))
    assert straight.returncode == 0, straight.stderr[-3000:]
    result = json.loads((project / "results" / "hello_lstm" / "seeds" / "seed_0" / "result.json").read_text())
    prov = json.loads((project / "results" / "hello_lstm" / "seeds" / "seed_0" / "provenance.json").read_text())
    return result, _histories(server.client(), prov["run_id"])


def _first_checkpoint(project: Path, proc: Any) -> str:
    wait_for(lambda: list(_state(project).glob("*/ckpt/last.ckpt")), proc, "the first checkpoint")
    return next(_state(project).glob("*/run_id")).read_text().strip()


def test_a_server_killed_mid_run_and_back_after_a_pause(project: Path, mlflow_server: MlflowServer) -> None:
    _project(project, epochs=30)
    proc = start_archbench("train", "hello_lstm", "--no-progress", cwd=project, env=_env(mlflow_server, 240))
    run_id = _first_checkpoint(project, proc)
    mlflow_server.kill()
    time.sleep(PAUSE_S)
    mlflow_server.start()
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    assert f"MLflow at {mlflow_server.uri} unreachable, retrying" in err and "answers again" in err
    client = mlflow_server.client()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    outage = _histories(client, run_id)
    assert len(outage["val/loss"]) == 30  # one value per epoch, none lost, none twice
    assert {"best.ckpt", "last.ckpt"} <= {Path(a.path).name for a in client.list_artifacts(run_id, "checkpoints")}
    assert not list((project / ".archbench" / "outbox").glob("*.jsonl"))  # everything was sent
    result = json.loads((project / "results" / "hello_lstm" / "seeds" / "seed_0" / "result.json").read_text())
    reference, curves = _reference(project, mlflow_server)
    assert result["metrics"] == reference["metrics"]
    assert outage == curves  # every key, every step, every value


def test_a_server_that_never_comes_back_stops_the_run_in_one_line_and_the_next_run_resumes(
        project: Path, mlflow_server: MlflowServer) -> None:
    _project(project, epochs=40)
    window = 6
    proc = start_archbench("train", "hello_lstm", "--no-progress", cwd=project, env=_env(mlflow_server, window))
    run_id = _first_checkpoint(project, proc)
    mlflow_server.kill()
    out, err = proc.communicate(timeout=900)
    assert proc.returncode != 0
    line = one_error_line(err)
    assert f"MLflow at {mlflow_server.uri} unreachable for" in line and "resumes in the same MLflow run" in line, line
    assert f"unreachable, retrying, {window} s left" in err  # said at once, with the window it will wait
    state = next(_state(project).glob("seed0-*"))
    assert not (state / "done.json").exists(), "the run was stopped in the middle, not after its end"
    assert (state / "ckpt" / "last.ckpt").is_file()  # kept for the resume
    assert list((project / ".archbench" / "outbox").glob("*.jsonl"))  # what the server did not get, kept
    mlflow_server.start()
    again = archbench("train", "hello_lstm", "--no-progress", cwd=project, env=_env(mlflow_server, 60))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Restoring states from the checkpoint" in again.stdout + again.stderr
    client = mlflow_server.client()
    assert client.get_run(run_id).info.status == "FINISHED"
    resumed = _histories(client, run_id)
    result = json.loads((project / "results" / "hello_lstm" / "seeds" / "seed_0" / "result.json").read_text())
    reference, curves = _reference(project, mlflow_server)
    assert result["metrics"] == reference["metrics"]
    assert resumed == curves  # the outbox and the resumed run together: each step once


def test_a_frozen_server_is_waited_for_within_the_window(project: Path, mlflow_server: MlflowServer) -> None:
    """New case: the server hangs (SIGSTOP: connections open, no answer) instead of dying; requests time out,
    the run goes on, and the server's values arrive when it wakes."""
    _project(project, epochs=20)
    env = _env(mlflow_server, 240) | {"MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}
    proc = start_archbench("train", "hello_lstm", "--no-progress", cwd=project, env=env)
    run_id = _first_checkpoint(project, proc)
    mlflow_server.signal(signal.SIGSTOP)
    time.sleep(8)
    mlflow_server.signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert "unreachable, retrying" in err
    client = mlflow_server.client()
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "val/loss")) == 20
