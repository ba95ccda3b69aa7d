"""Trials that fail: a non-finite value, a diverging learning rate, a trial failed as stale while its worker
lives, a worker killed after its run finished but before its value was told, and a study made again under
the same name. A failed trial counts for nothing, its MLflow run says FAILED, and the study goes on."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.core.params import load_params
from benchmarks.study.tune import run_study
from tests.conftest import run_options
from tests.studies import check_runs, check_study, finished_run, tiny_study, worker_env


@pytest.mark.slow
def test_non_finite_values_fail_their_trial_and_the_study_goes_on(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.study.tune as tune
    from benchmarks.core.errors import DivergedError
    from mlflow.tracking import MlflowClient

    params = load_params()
    conf = params["studies"]["lstm_depth"]
    conf["n_trials"] = 3
    outcomes = iter(["inf", "diverged", 2.5, "nan", 2.0, 3.0])  # what each training returns, in order

    def fake_run_seed(exp: Any, seed: int, opts: Any) -> dict[str, Any]:
        outcome = next(outcomes)
        if outcome == "diverged":
            raise DivergedError("loss became nan")
        return {"metrics": {"val/loss_best": float(outcome)}, "run_id": finished_run(exp.name, opts)}

    monkeypatch.setattr(tune, "run_seed", fake_run_seed)
    best = run_study(params, "lstm_depth", run_options(project))
    study = optuna.load_study(study_name="lstm_depth", storage=f"sqlite:///{project / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2 + [TrialState.COMPLETE, TrialState.FAIL] + [TrialState.COMPLETE] * 2
    # The non-finite trials failed, and so did their runs; the counted ones stay FINISHED.
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
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
    import benchmarks.study.tune as tune
    from mlflow.tracking import MlflowClient

    params = load_params()
    params["studies"]["lstm_depth"]["n_trials"] = 1
    outcomes = iter([2.5, math.nan, 2.0])
    monkeypatch.setattr(tune, "run_seed", lambda exp, seed, opts: {"metrics": {"val/loss_best": next(outcomes)},
                                                                    "run_id": finished_run(exp.name, opts)})
    run_study(params, "lstm_depth", run_options(project))
    storage = f"sqlite:///{project / 'optuna.db'}"
    (old,) = optuna.load_study(study_name="lstm_depth", storage=storage).trials
    (project / "optuna.db").unlink()  # the same study made again: its trial 0 fails this time
    run_study(params, "lstm_depth", run_options(project))
    first, second = optuna.load_study(study_name="lstm_depth", storage=storage).trials
    assert (first.number, first.state, second.state) == (old.number, TrialState.FAIL, TrialState.COMPLETE)
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    assert client.get_run(first.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    assert client.get_run(old.user_attrs["mlflow_run_id"]).info.status == "FINISHED"


@pytest.mark.slow
def test_a_trial_failed_as_stale_while_alive_is_lost_not_the_worker(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.study.tune as tune

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
import benchmarks.study.tune as tune
from benchmarks.core.params import load_params
from tests.conftest import run_options
from tests.studies import finished_run

def run_seed_then_die(exp, seed, opts):
    finished_run(exp.name, opts)
    os.kill(os.getpid(), signal.SIGKILL)

tune.run_seed = run_seed_then_die
tune.run_study(load_params(), "lstm_depth", run_options(Path.cwd()))
"""


@pytest.mark.slow
def test_a_worker_killed_after_its_run_finished_leaves_that_run_failed(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.study.tune as tune
    from mlflow.tracking import MlflowClient

    params = tiny_study(project, n_trials=2)
    script = project / "dies.py"
    script.write_text(_DIES_AFTER_ITS_RUN_FINISHED.format(root=str(Path(__file__).resolve().parents[1])))
    victim = subprocess.run([sys.executable, str(script)], cwd=project, env=worker_env(), capture_output=True,
                            text=True, timeout=300)
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
    trials = check_study(study, 2)
    assert trials[0].state == TrialState.FAIL
    assert [t.system_attrs.get("failed_trial") for t in trials[1:]].count(0) == 1  # retried once, with its params
    assert MlflowClient(tracking_uri=uri).get_run(dead.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    check_runs(uri, "archbench", study)
    assert best["n_complete"] == 2 and best["value"] == 2.25


@pytest.mark.slow
def test_diverging_trials_fail_or_are_pruned_and_the_best_is_finite(project: Path) -> None:
    params = load_params()
    conf = params["studies"]["lstm_depth"]
    # No pruner: a wild learning rate must fail through the divergence check, not be pruned by luck.
    conf |= {"n_trials": 4, "pruner": {"kind": "none"}, "trainer": {"max_epochs": 2, "limit_train_batches": 3, "limit_val_batches": 2},
             "search_space": {"lr": {"type": "categorical", "choices": [0.003, 0.03, 1000.0]},
                              "num_layers": {"type": "int", "low": 1, "high": 2}}}
    best = run_study(params, "lstm_depth", run_options(project))
    study = optuna.load_study(study_name="lstm_depth", storage=f"sqlite:///{project / 'optuna.db'}")
    check_study(study, 4)
    wild = [t for t in study.trials if t.params["lr"] > 10]
    assert wild, "the seeded sampler proposes lr = 1000 at least once"
    assert all(t.state == TrialState.FAIL for t in wild), [(t.params, t.state.name) for t in wild]
    assert math.isfinite(best["value"]) and best["params"]["lr"] < 10
    check_runs(f"sqlite:///{project / 'mlflow.db'}", "archbench", study)
