"""Studies and tracking shared by many workers: exact trial counts, a killed worker, stores resolved from a
DVC workspace copy, and concurrent creation of the MLflow store (trials that fail: test_trial_failures.py).

The PostgreSQL + MLflow-server test needs `eval "$(bash scripts/services.sh start)"` (ARCHBENCH_PG_URL,
ARCHBENCH_MLFLOW_SERVER) and skips without them."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.run import tracking
from benchmarks.study.storage import storage_url
from tests.conftest import kill_if_still, write_params
from tests.studies import check_runs, check_study, tiny_study, worker_env


def _worker(cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    exe = Path(sys.executable).parent / "archbench"
    return subprocess.Popen([str(exe), "tune", "lstm_depth", "--no-progress"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 600) -> list[str]:
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def _check_best(files: list[Path], study: optuna.Study) -> None:
    (written,) = files  # exactly one worker wrote it
    best = json.loads(written.read_text())
    assert best["params"] == study.best_params and best["value"] == pytest.approx(study.best_value)
    assert math.isfinite(best["value"])


def test_stores_resolve_to_the_project_root_from_a_dvc_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = tmp_path / ".dvc" / "tmp" / "exps" / "tmpk3x9q"  # where `dvc exp run --queue` runs a stage
    workspace.mkdir(parents=True)
    monkeypatch.chdir(workspace)
    for var in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DVC_ROOT", str(workspace))  # DVC points it at the copy: no help
    assert tracking.project_root(".") == tmp_path
    assert tracking.tracking_uri(".") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking.artifact_location(".") == (tmp_path / "mlruns").as_uri()
    assert storage_url({}, Path(".")) == f"sqlite:///{tmp_path / 'optuna.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:///studies/optuna.db")
    assert tracking.tracking_uri(".") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert storage_url({}, Path(".")) == f"sqlite:///{tmp_path / 'studies' / 'optuna.db'}"
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite:////abs/optuna.db")
    assert storage_url({}, Path(".")) == "sqlite:////abs/optuna.db"
    # A server keeps its own artifacts: no client path is sent.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri(".") == "http://127.0.0.1:5000" and tracking.artifact_location(".") is None
    # Outside a DVC workspace the directory itself is the root.
    assert tracking.project_root(tmp_path / "sub") == tmp_path / "sub"


@pytest.mark.slow
def test_two_workers_on_sqlite_finish_exactly_n_trials(project: Path) -> None:
    n = tiny_study(project)["studies"]["lstm_depth"]["n_trials"]
    env = worker_env(**({"ARCHBENCH_DATA_DIR": os.environ["ARCHBENCH_DATA_DIR"]} if "ARCHBENCH_DATA_DIR" in os.environ else {}))
    _finish([_worker(project, env), _worker(project, env)])
    study = optuna.load_study(study_name="lstm_depth", storage=f"sqlite:///{project / 'optuna.db'}")
    trials = check_study(study, n)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers ran trials"
    check_runs(f"sqlite:///{project / 'mlflow.db'}", "archbench", study)
    _check_best([project / "results" / "tune" / "lstm_depth" / "best_params.json"], study)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server of scripts/services.sh, dropped afterwards."""
    url = os.environ.get("ARCHBENCH_PG_URL")
    if not url or not os.environ.get("ARCHBENCH_MLFLOW_SERVER"):
        pytest.skip('needs PostgreSQL and an MLflow server: eval "$(bash scripts/services.sh start)"')
    psycopg2 = pytest.importorskip("psycopg2", reason="needs psycopg2: pip install -e '.[scale]'")
    from sqlalchemy.engine import make_url

    server = make_url(url)
    name = f"archbench_test_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(host=server.host, port=server.port, user=server.username, password=server.password,
                            dbname=server.database)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    yield server.set(database=name).render_as_string(hide_password=False)
    conn.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    conn.close()


@pytest.mark.slow
def test_three_machines_on_postgres_survive_a_killed_worker(project: Path, tmp_path: Path, pg_url: str) -> None:
    from mlflow.tracking import MlflowClient

    experiment = f"scale-out-{uuid.uuid4().hex[:8]}"
    params = tiny_study(project, n_trials=8)
    params.setdefault("settings", {})["mlflow_experiment"] = experiment
    n = params["studies"]["lstm_depth"]["n_trials"]
    server = os.environ["ARCHBENCH_MLFLOW_SERVER"]
    env = worker_env(OPTUNA_STORAGE=pg_url, MLFLOW_TRACKING_URI=server,
               **({"ARCHBENCH_DATA_DIR": os.environ["ARCHBENCH_DATA_DIR"]} if "ARCHBENCH_DATA_DIR" in os.environ else {}))
    machines = []
    for k in range(3):  # separate project copies: only the storage and the tracking server are shared
        copy = tmp_path / f"machine{k}"
        copy.mkdir()
        write_params(copy / "params.yaml", params)
        machines.append(copy)
    procs = [_worker(m, env) for m in machines]
    victim = procs[2]

    # Kill the third worker with SIGKILL in the middle of a trial whose MLflow run exists.
    deadline, killed = time.monotonic() + 300, None
    while killed is None and time.monotonic() < deadline and victim.poll() is None:
        try:
            study = optuna.load_study(study_name="lstm_depth", storage=pg_url)
        except KeyError:  # not created yet
            time.sleep(0.2)
            continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # Its own run: a repeated choice names the finished trial's run, which must stay FINISHED.
            own = t.user_attrs.get("mlflow_run_id") and "repeat_of" not in t.user_attrs
            if t.user_attrs.get("worker_pid") == victim.pid and own:
                # The trial may have been told since it was read.
                killed = kill_if_still(victim.pid, lambda: next(
                    (u for u in study.get_trials(deepcopy=False) if u.number == t.number and u.state == TrialState.RUNNING),
                    None))
                if killed is not None:
                    break
        time.sleep(0.05)
    assert killed is not None, "the third worker never ran a trial"
    victim.wait()
    outs = _finish(procs[:2])

    study = optuna.load_study(study_name="lstm_depth", storage=pg_url)
    trials = check_study(study, n)
    stale = trials[killed.number]
    assert stale.state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) <= 1 and all(t.params == killed.params for t in retried)
    client = MlflowClient(tracking_uri=server)
    assert client.get_run(killed.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    check_runs(server, experiment, study)
    # Artifacts went through the server, never to a path of the client machine.
    exp = client.get_experiment_by_name(experiment)
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location
    _check_best([p for m in machines for p in m.glob("results/tune/lstm_depth/best_params.json")], study)
    assert any("best val/loss" in out for out in outs)


CREATE_STORE = """
import sys, time
from pathlib import Path
from benchmarks.run.tracking import ensure_tracking_store
from mlflow.tracking import MlflowClient
uri, go = sys.argv[1], Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
ensure_tracking_store(uri)
client = MlflowClient(tracking_uri=uri)
exp = client.get_experiment_by_name("Default")
client.set_terminated(client.create_run(exp.experiment_id).info.run_id)
"""


@pytest.mark.slow
def test_concurrent_processes_create_the_mlflow_store_once(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri, go = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CREATE_STORE, uri, str(go)], env=worker_env(), cwd=Path(__file__).parents[1],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    time.sleep(8)  # every process has imported mlflow and waits on the same start line
    go.touch()
    _finish(procs, timeout=300)
    client = MlflowClient(tracking_uri=uri)
    assert len(client.search_runs(["0"])) == 3
    assert (tmp_path / "mlflow.db.lock").exists()
