"""Studies under faults of their shared storage and workers: PostgreSQL stopped in the middle of a study (one
worker: issue case 7; three workers: a new case), and a tune worker frozen past its heartbeat (a new case).
Each ends in one line per worker, no MLflow run left RUNNING, and, once things are back, exactly n_trials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.faults.conftest import MlflowServer, Postgres, one_error_line, wait_for
from tests.studies import check_runs, check_study, tiny_study, worker_env

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _worker(cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([str(Path(sys.executable).parent / "archbench"), "tune", "lstm_depth", "--no-progress"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _env(**extra: str) -> dict[str, str]:
    data = {"ARCHBENCH_DATA_DIR": os.environ["ARCHBENCH_DATA_DIR"]} if "ARCHBENCH_DATA_DIR" in os.environ else {}
    return worker_env(**data, **extra)


def _storage(url: str) -> optuna.storages.RDBStorage:
    """One storage for a test's polling: each load_study(storage=URL) would open a connection pool of its own."""
    return optuna.storages.RDBStorage(url)


def _finished(storage: optuna.storages.RDBStorage) -> int:
    try:
        study = optuna.load_study(study_name="lstm_depth", storage=storage)
    except KeyError:
        return 0
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _stopped_mid_study(project: Path, postgres: Postgres, workers: int) -> None:
    from mlflow.tracking import MlflowClient

    n = tiny_study(project, n_trials=8)["studies"]["lstm_depth"]["n_trials"]
    env = _env(OPTUNA_STORAGE=postgres.url)
    procs = [_worker(project, env) for _ in range(workers)]
    polling = _storage(postgres.url)
    wait_for(lambda: _finished(polling) >= 2, procs[0], "two finished trials")
    polling.engine.dispose()
    postgres.stop()
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 2, err[-3000:]
        line = one_error_line(err)
        assert "its storage postgresql+psycopg2://postgres@127.0.0.1" in line and "stopped answering" in line, line
    uri = f"sqlite:///{project / 'mlflow.db'}"
    runs = MlflowClient(tracking_uri=uri).search_runs(["1"])
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []  # the parent too: KILLED
    assert {r.info.status for r in runs if r.data.tags.get("archbench.role") == "study"} == {"KILLED"}
    postgres.start()
    again = _worker(project, env)
    out, err = again.communicate(timeout=900)
    assert again.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="lstm_depth", storage=postgres.url)
    check_study(study, n)  # exactly n_trials, the ones cut short failed as stale
    check_runs(uri, "archbench", study)


def test_postgres_stopped_mid_study_is_one_line_and_leaves_no_run_running(project: Path, postgres: Postgres) -> None:
    _stopped_mid_study(project, postgres, workers=1)


def test_postgres_stopped_under_three_workers(project: Path, postgres: Postgres) -> None:
    _stopped_mid_study(project, postgres, workers=3)


def test_a_tune_worker_frozen_past_its_heartbeat(project: Path, postgres: Postgres, mlflow_server: MlflowServer) -> None:
    """Its trial is failed as stale and retried by the other worker, which completes the study; woken, the frozen
    worker cannot tell its value, says so, and leaves; nothing is left RUNNING and exactly n_trials count.
    On the stores of several machines: a process frozen inside a SQLite write would hold the file's lock."""
    n = tiny_study(project, n_trials=6)["studies"]["lstm_depth"]["n_trials"]
    url = postgres.url
    env = _env(OPTUNA_STORAGE=url, MLFLOW_TRACKING_URI=mlflow_server.uri)
    polling = _storage(url)
    frozen, other = _worker(project, env), None
    try:
        def running_trial() -> object:
            try:
                study = optuna.load_study(study_name="lstm_depth", storage=polling)
            except KeyError:
                return None
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get("worker_pid") == frozen.pid and t.user_attrs.get("mlflow_run_id"):
                    return t
            return None

        trial = wait_for(running_trial, frozen, "a trial of the first worker with its MLflow run")
        os.kill(frozen.pid, signal.SIGSTOP)
        other = _worker(project, env)
        out, err = other.communicate(timeout=900)
        assert other.returncode == 0, err[-3000:]
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    out, err = frozen.communicate(timeout=600)
    assert frozen.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[max(0, err.find("Traceback") - 500):][:2500]
    study = optuna.load_study(study_name="lstm_depth", storage=url)
    trials = check_study(study, n)
    assert trials[trial.number].state == TrialState.FAIL
    from mlflow.tracking import MlflowClient

    assert MlflowClient(tracking_uri=mlflow_server.uri).get_run(trial.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    check_runs(mlflow_server.uri, "archbench", study)

