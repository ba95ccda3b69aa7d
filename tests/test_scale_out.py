"""Studies and tracking shared by many workers: exact trial counts, killed workers, diverging trials, stores
resolved from a DVC workspace copy, and concurrent creation of the MLflow store.

The PostgreSQL + MLflow-server test needs `eval "$(bash scripts/services.sh start)"` (ARCHBENCH_PG_URL,
ARCHBENCH_MLFLOW_SERVER) and skips without them."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks import tracking
from benchmarks.params import load_params
from benchmarks.study_storage import storage_url
from benchmarks.tune import run_study
from tests.conftest import env_for_subprocess, run_options, write_params

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
# A study small enough for several worker processes on two cores: trials of a few batches, heartbeats every second.
WORKER_STUDY = {"n_trials": 6, "heartbeat_s": 1, "max_retry": 2,
                "trainer": {"max_epochs": 2, "limit_train_batches": 2, "limit_val_batches": 1}}


def _tiny_study(project: Path, **study: Any) -> dict[str, Any]:
    params = load_params(project / "params.yaml")
    params["studies"]["lstm_depth"] |= WORKER_STUDY | study
    write_params(project / "params.yaml", params)
    return params


def _worker(cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    exe = Path(sys.executable).parent / "archbench"
    return subprocess.Popen([str(exe), "tune", "lstm_depth", "--no-progress"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _env(**extra: str) -> dict[str, str]:
    env = env_for_subprocess() | {"OMP_NUM_THREADS": "1"} | extra
    env.pop("ARCHBENCH_PARAMS", None)
    return env


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 600) -> list[str]:
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


def _check_study(study: optuna.Study, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state in COUNTED]
    assert len(counted) == n_trials, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return trials


def _check_runs(uri: str, experiment: str, study: optuna.Study) -> None:
    """One parent run, FINISHED; no run left RUNNING; every trial run nested under the parent."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get("archbench.role") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].info.run_id == study.user_attrs["mlflow_parent_run_id"]
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    assert all(r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for r in runs if r not in parents)


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
def test_non_finite_values_fail_their_trial_and_the_study_goes_on(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.tune as tune
    from benchmarks.errors import DivergedError

    params = load_params()
    conf = params["studies"]["lstm_depth"]
    conf["n_trials"] = 3
    outcomes = iter(["inf", "diverged", 2.5, "nan", 2.0, 3.0])  # what each training returns, in order

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")

    def fake_run_seed(exp: Any, seed: int, opts: Any) -> dict[str, Any]:
        outcome = next(outcomes)
        if outcome == "diverged":
            raise DivergedError("loss became nan")
        # A run that ended FINISHED, as Lightning's logger leaves it when fit ends, whatever the value is.
        exp_id = client.get_experiment_by_name(opts.mlflow_experiment).experiment_id
        run_id = client.create_run(exp_id, run_name=exp.name, tags=opts.tags).info.run_id
        opts.on_run_created(run_id)
        client.set_terminated(run_id, "FINISHED")
        return {"metrics": {"val/loss_best": float(outcome)}, "run_id": run_id}

    monkeypatch.setattr(tune, "run_seed", fake_run_seed)
    best = run_study(params, "lstm_depth", run_options(project))
    study = optuna.load_study(study_name="lstm_depth", storage=f"sqlite:///{project / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2 + [TrialState.COMPLETE, TrialState.FAIL] + [TrialState.COMPLETE] * 2
    # The non-finite trials failed, and so did their runs; the counted ones stay FINISHED.
    status = [client.get_run(t.user_attrs["mlflow_run_id"]).info.status for t in study.trials if t.user_attrs.get("mlflow_run_id")]
    assert status == ["FAILED", "FINISHED", "FAILED", "FINISHED", "FINISHED"]
    assert best["value"] == 2.0 and best["n_failed"] == 3 and best["n_complete"] == 3
    # Running a complete study again trains nothing and closes it again with the same summary.
    (project / "results" / "tune" / "lstm_depth" / "best_params.json").unlink()
    assert run_study(params, "lstm_depth", run_options(project)) == best
    assert len(study.get_trials(deepcopy=False)) == 6
    assert json.loads((project / "results" / "tune" / "lstm_depth" / "best_params.json").read_text()) == best


@pytest.mark.slow
def test_a_study_made_again_leaves_the_old_studys_finished_runs_alone(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.tune as tune
    from mlflow.tracking import MlflowClient

    params = load_params()
    params["studies"]["lstm_depth"]["n_trials"] = 1
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    outcomes = iter([2.5, math.nan, 2.0])

    def fake_run_seed(exp: Any, seed: int, opts: Any) -> dict[str, Any]:
        exp_id = client.get_experiment_by_name(opts.mlflow_experiment).experiment_id
        run_id = client.create_run(exp_id, run_name=exp.name, tags=opts.tags).info.run_id
        opts.on_run_created(run_id)
        client.set_terminated(run_id, "FINISHED")
        return {"metrics": {"val/loss_best": next(outcomes)}, "run_id": run_id}

    monkeypatch.setattr(tune, "run_seed", fake_run_seed)
    run_study(params, "lstm_depth", run_options(project))
    storage = f"sqlite:///{project / 'optuna.db'}"
    (old,) = optuna.load_study(study_name="lstm_depth", storage=storage).trials
    (project / "optuna.db").unlink()  # the same study made again: its trial 0 fails this time
    run_study(params, "lstm_depth", run_options(project))
    first, second = optuna.load_study(study_name="lstm_depth", storage=storage).trials
    assert (first.number, first.state, second.state) == (old.number, TrialState.FAIL, TrialState.COMPLETE)
    assert client.get_run(first.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    assert client.get_run(old.user_attrs["mlflow_run_id"]).info.status == "FINISHED"


@pytest.mark.slow
def test_a_trial_failed_as_stale_while_alive_is_lost_not_the_worker(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.tune as tune

    params = load_params()
    params["studies"]["lstm_depth"]["n_trials"] = 3
    storage = f"sqlite:///{project / 'optuna.db'}"
    calls = {"n": 0}

    def slow_heartbeat_run_seed(exp: Any, seed: int, opts: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:  # another worker gave up on this trial's heartbeats and failed it mid-training
            study = optuna.load_study(study_name="lstm_depth", storage=storage)
            mine = study.trials[int(opts.tags["optuna.trial"])]
            study._storage.set_trial_state_values(mine._trial_id, TrialState.FAIL)
        return {"metrics": {"val/loss_best": 3.0 - calls["n"] / 10}, "run_id": ""}

    monkeypatch.setattr(tune, "run_seed", slow_heartbeat_run_seed)
    best = run_study(params, "lstm_depth", run_options(project))
    states = [t.state for t in optuna.load_study(study_name="lstm_depth", storage=storage).trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert best["n_complete"] == 3 and best["value"] == pytest.approx(2.6)


# A worker that dies in the window between its trial's MLflow run ending FINISHED (Lightning's logger
# closes it when fit ends) and the value being told to Optuna: the uploads of the checkpoints lie there.
_DIES_AFTER_ITS_RUN_FINISHED = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from mlflow.tracking import MlflowClient
import benchmarks.tune as tune
from benchmarks.params import load_params
from benchmarks.tracking import tracking_uri
from tests.conftest import run_options

def run_seed_then_die(exp, seed, opts):
    client = MlflowClient(tracking_uri=tracking_uri(opts.project_dir))
    exp_id = client.get_experiment_by_name(opts.mlflow_experiment).experiment_id
    run_id = client.create_run(exp_id, run_name=exp.name, tags=opts.tags).info.run_id
    opts.on_run_created(run_id)
    client.log_metric(run_id, "val/loss", 2.0)
    client.set_terminated(run_id, "FINISHED")
    os.kill(os.getpid(), signal.SIGKILL)

tune.run_seed = run_seed_then_die
tune.run_study(load_params(), "lstm_depth", run_options(Path.cwd()))
"""


@pytest.mark.slow
def test_a_worker_killed_after_its_run_finished_leaves_that_run_failed(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.tune as tune
    from mlflow.tracking import MlflowClient

    params = _tiny_study(project, n_trials=2)
    script = project / "dies.py"
    script.write_text(_DIES_AFTER_ITS_RUN_FINISHED.format(root=str(Path(__file__).resolve().parents[1])))
    victim = subprocess.run([sys.executable, str(script)], cwd=project, env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert victim.returncode == -signal.SIGKILL, victim.stderr[-3000:]
    storage = f"sqlite:///{project / 'optuna.db'}"
    (dead,) = optuna.load_study(study_name="lstm_depth", storage=storage).get_trials(deepcopy=False)
    assert dead.state == TrialState.RUNNING and dead.user_attrs["mlflow_run_id"]
    uri = f"sqlite:///{project / 'mlflow.db'}"
    assert MlflowClient(tracking_uri=uri).get_run(dead.user_attrs["mlflow_run_id"]).info.status == "FINISHED"

    values = iter([2.5, 2.25])
    monkeypatch.setattr(tune, "run_seed", lambda exp, seed, opts: {"metrics": {"val/loss_best": next(values)}, "run_id": ""})
    best = run_study(params, "lstm_depth", run_options(project))  # fails the dead trial once its heartbeats are stale
    study = optuna.load_study(study_name="lstm_depth", storage=storage)
    trials = _check_study(study, 2)
    assert trials[0].state == TrialState.FAIL
    assert [t.system_attrs.get("failed_trial") for t in trials[1:]].count(0) == 1  # retried once, with its params
    assert MlflowClient(tracking_uri=uri).get_run(dead.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    _check_runs(uri, "archbench", study)
    assert best["n_complete"] == 2 and best["value"] == 2.25


@pytest.mark.slow
def test_two_workers_on_sqlite_finish_exactly_n_trials(project: Path) -> None:
    n = _tiny_study(project)["studies"]["lstm_depth"]["n_trials"]
    env = _env(**({"ARCHBENCH_DATA_DIR": os.environ["ARCHBENCH_DATA_DIR"]} if "ARCHBENCH_DATA_DIR" in os.environ else {}))
    _finish([_worker(project, env), _worker(project, env)])
    study = optuna.load_study(study_name="lstm_depth", storage=f"sqlite:///{project / 'optuna.db'}")
    trials = _check_study(study, n)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers ran trials"
    _check_runs(f"sqlite:///{project / 'mlflow.db'}", "archbench", study)
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
    params = _tiny_study(project, n_trials=8)
    params.setdefault("settings", {})["mlflow_experiment"] = experiment
    n = params["studies"]["lstm_depth"]["n_trials"]
    server = os.environ["ARCHBENCH_MLFLOW_SERVER"]
    env = _env(OPTUNA_STORAGE=pg_url, MLFLOW_TRACKING_URI=server,
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
                # Frozen first, then checked again: the trial may have been told since it was read.
                victim.send_signal(signal.SIGSTOP)
                now = next(u for u in study.get_trials(deepcopy=False) if u.number == t.number)
                if now.state == TrialState.RUNNING:
                    victim.send_signal(signal.SIGKILL)
                    killed = now
                    break
                victim.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    assert killed is not None, "the third worker never ran a trial"
    victim.wait()
    outs = _finish(procs[:2])

    study = optuna.load_study(study_name="lstm_depth", storage=pg_url)
    trials = _check_study(study, n)
    stale = trials[killed.number]
    assert stale.state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) <= 1 and all(t.params == killed.params for t in retried)
    client = MlflowClient(tracking_uri=server)
    assert client.get_run(killed.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    _check_runs(server, experiment, study)
    # Artifacts went through the server, never to a path of the client machine.
    exp = client.get_experiment_by_name(experiment)
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location
    _check_best([p for m in machines for p in m.glob("results/tune/lstm_depth/best_params.json")], study)
    assert any("best val/loss" in out for out in outs)


@pytest.mark.slow
def test_diverging_trials_fail_or_are_pruned_and_the_best_is_finite(project: Path) -> None:
    from mlflow.tracking import MlflowClient

    params = load_params()
    conf = params["studies"]["lstm_depth"]
    # No pruner: a wild learning rate must fail through the divergence check, not be pruned by luck.
    conf |= {"n_trials": 4, "pruner": {"kind": "none"}, "trainer": {"max_epochs": 2, "limit_train_batches": 3, "limit_val_batches": 2},
             "search_space": {"lr": {"type": "categorical", "choices": [0.003, 0.03, 1000.0]},
                              "num_layers": {"type": "int", "low": 1, "high": 2}}}
    best = run_study(params, "lstm_depth", run_options(project))
    study = optuna.load_study(study_name="lstm_depth", storage=f"sqlite:///{project / 'optuna.db'}")
    _check_study(study, 4)
    wild = [t for t in study.trials if t.params["lr"] > 10]
    assert wild, "the seeded sampler proposes lr = 1000 at least once"
    assert all(t.state == TrialState.FAIL for t in wild), [(t.params, t.state.name) for t in wild]
    assert math.isfinite(best["value"]) and best["params"]["lr"] < 10
    _check_runs(f"sqlite:///{project / 'mlflow.db'}", "archbench", study)


CREATE_STORE = """
import sys, time
from pathlib import Path
from benchmarks.tracking import ensure_tracking_store
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
    procs = [subprocess.Popen([sys.executable, "-c", CREATE_STORE, uri, str(go)], env=_env(), cwd=Path(__file__).parents[1],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    time.sleep(8)  # every process has imported mlflow and waits on the same start line
    go.touch()
    _finish(procs, timeout=300)
    client = MlflowClient(tracking_uri=uri)
    assert len(client.search_runs(["0"])) == 3
    assert (tmp_path / "mlflow.db.lock").exists()
