"""What the study tests share (test_scale_out.py: many workers; test_trial_failures.py: trials that fail):
a tiny study, a worker's environment, the checks every finished study must pass, and a trial's MLflow run
as Lightning's logger leaves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from benchmarks.core.params import load_params
from tests.conftest import env_for_subprocess, write_params

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
# A study small enough for several worker processes on two cores: trials of a few batches, heartbeats every second.
WORKER_STUDY = {"n_trials": 6, "heartbeat_s": 1, "max_retry": 2,
                "trainer": {"max_epochs": 2, "limit_train_batches": 2, "limit_val_batches": 1}}


def tiny_study(project: Path, **study: Any) -> dict[str, Any]:
    """The project's params with ``lstm_depth`` made a WORKER_STUDY (and ``study`` on top), written back."""
    params = load_params(project / "params.yaml")
    params["studies"]["lstm_depth"] |= WORKER_STUDY | study
    write_params(project / "params.yaml", params)
    return params


def worker_env(**extra: str) -> dict[str, str]:
    """A worker process's environment: this install first, one OpenMP thread, the project's params.yaml."""
    env = env_for_subprocess() | {"OMP_NUM_THREADS": "1"} | extra
    env.pop("ARCHBENCH_PARAMS", None)
    return env


def check_study(study: optuna.Study, n_trials: int) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``n_trials`` counted trials and none left RUNNING or WAITING; all the trials."""
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state in COUNTED]
    assert len(counted) == n_trials, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    return trials


def check_runs(uri: str, experiment: str, study: optuna.Study) -> None:
    """One parent run, FINISHED; no run left RUNNING; every trial run nested under the parent."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if r.data.tags.get("archbench.role") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].info.run_id == study.user_attrs["mlflow_parent_run_id"]
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    assert all(r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for r in runs if r not in parents)


def finished_run(name: str, opts: Any) -> str:
    """A trial's MLflow run, made as ``run_seed`` makes it (``opts``' tags, reported through
    ``on_run_created``) and ended FINISHED, as Lightning's logger ends it when fit ends, whatever the
    value turns out to be; its id."""
    from mlflow.tracking import MlflowClient

    from benchmarks.run.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(opts.project_dir))
    exp_id = client.get_experiment_by_name(opts.mlflow_experiment).experiment_id
    run_id = client.create_run(exp_id, run_name=name, tags=opts.tags).info.run_id
    opts.on_run_created(run_id)
    client.set_terminated(run_id, "FINISHED")
    return run_id
