"""``archbench publish --study NAME``: a finished Optuna study into ledger/studies/<name>.json.

The record holds every trial (number, params, value, state, the step a pruned trial stopped at, the
intermediate values the pruner saw, its budget and time), each parameter's distribution (so the report
rebuilds an in-memory study for ``optuna.visualization`` on a fresh clone, which has no optuna.db), the
best trial, the storage's study definition hash (the user attr benchmarks/study/tune.py sets) and the CPU
time the trials took.

Refused in one line, with nothing written, when the study is unfinished (fewer than its ``n_trials``
finished trials, or a trial still RUNNING or WAITING), or stale: its definition hash differs from what
params.yaml defines now, or a trial's MLflow run was made by other code or saw other data than the
study's experiment has now. Failed trials (a divergence, a dead worker) are kept in the record as FAIL:
the study is built to replace them, and they count for nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.report.compute import ESTIMATED, MEASURED, total

SCHEMA = 1


def _load(name: str, url: str) -> Any:
    import optuna

    from benchmarks.study.storage import shown_url

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ArchbenchError(f"cannot publish study {name}: no study storage at {shown_url(url)}; run "
                             f"`archbench tune {name}` first (or set OPTUNA_STORAGE to the storage that holds it)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        raise ArchbenchError(f"cannot publish study {name}: {shown_url(url)} holds no study of that name; run "
                             f"`archbench tune {name}` first") from None


def _check_runs(name: str, trials: list[Any], code: str, data: str, uri: str) -> dict[int, float]:
    """Each counted trial's MLflow run must carry the current code and data hashes (their params); returns the
    process CPU seconds of the trials whose run recorded them (a trained trial's result.json artifact)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client, cpu = MlflowClient(tracking_uri=uri), {}
    for trial in trials:
        run_id = trial.user_attrs.get("mlflow_run_id")
        try:
            params = client.get_run(run_id).data.params if run_id else None
        except MlflowException:
            params = None
        if params is None:
            raise ArchbenchError(f"cannot publish study {name}: trial {trial.number}'s MLflow run ({run_id or 'none'}) is "
                                 f"not in the tracking store, so its code and data cannot be checked; publish from the "
                                 f"project that ran the study (or point MLFLOW_TRACKING_URI at its store)")
        for key, now in (("code_hash", code), ("data_hash", data)):
            if params.get(key) != now:
                what = "code" if key == "code_hash" else "data"
                raise ArchbenchError(f"cannot publish study {name}: trial {trial.number} is stale: made with other {what} "
                                     f"({str(params.get(key))[:12]}, now {now[:12]}); rename the study and rerun "
                                     f"`archbench tune`, or restore what made it")
        if "repeat_of" not in trial.user_attrs:  # a repeat reused another trial's run and cost nothing
            measured = _run_cpu(client, run_id)
            if measured is not None:
                cpu[trial.number] = measured
    return cpu


def _run_cpu(client: Any, run_id: str) -> float | None:
    """provenance.cpu_s from the run's result.json artifact (written when a trial trains to the end)."""
    import json
    import tempfile

    if not any(a.path == "result.json" for a in client.list_artifacts(run_id)):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        found = json.loads(Path(client.download_artifacts(run_id, "result.json", tmp)).read_text())
    value = (found.get("provenance") or {}).get("cpu_s")
    return float(value) if isinstance(value, (int, float)) else None


def _trial(t: Any, threads: int, measured: float | None) -> dict[str, Any]:
    from optuna.distributions import distribution_to_json

    steps = sorted(t.intermediate_values)
    wall = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    value = t.value if t.value is not None and math.isfinite(t.value) else None
    return {"number": t.number, "state": t.state.name, "value": value, "params": t.params,
            "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()},
            "intermediate_values": {str(s): t.intermediate_values[s] for s in steps},
            "last_step": steps[-1] if steps else None, "pruned_at_step": steps[-1] if t.state.name == "PRUNED" and steps else None,
            "repeat_of": t.user_attrs.get("repeat_of"), "not_needed": bool(t.user_attrs.get("not_needed")),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id") or None,
            "host": str(t.user_attrs.get("worker") or "").split(":")[0] or None,
            "datetime_start": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
            "compute": _compute(t, wall, threads, measured)}


def _compute(t: Any, wall: float | None, threads: int, measured: float | None) -> dict[str, Any]:
    """The run's measured CPU time where it recorded one, else the trial's wall time x threads."""
    if measured is not None:
        cpu, how = measured, MEASURED
    elif wall is not None and "repeat_of" not in t.user_attrs:
        cpu, how = round(wall * threads, 3), ESTIMATED + " (trial start to end)"
    else:
        cpu, how = (0.0, "a repeat: answered by an earlier trial") if "repeat_of" in t.user_attrs else (None, "not recorded")
    host = str(t.user_attrs.get("worker") or "").split(":")[0] or None
    return {"cpu_s": cpu, "wall_s": wall, "how": how, "machine": {"host": host, "threads": threads}}


def study_record(params: dict[str, Any], name: str, project_dir: Path, data_dir: str | None) -> dict[str, Any]:
    """The ledger record of a finished, current study (see the module doc), or one line saying why not."""
    from optuna.trial import TrialState

    from benchmarks.core.params import experiment_from_params, settings
    from benchmarks.core.provenance import code_hash
    from benchmarks.run.build import build_datamodule
    from benchmarks.run.tracking import tracking_uri
    from benchmarks.study.spec import definition_hash, legacy_definition_hash, study_config
    from benchmarks.study.storage import storage_url

    conf = study_config(params, name)
    base = experiment_from_params(params, conf["experiment"])
    digest, url = definition_hash(conf, base), storage_url(params, project_dir)
    study = _load(name, url)
    trials = study.get_trials(deepcopy=False)
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    busy = [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    if busy or len(counted) < conf["n_trials"]:
        why = f"trial {busy[0].number} is {busy[0].state.name}" if busy else f"{len(counted)} of {conf['n_trials']} trials finished"
        raise ArchbenchError(f"cannot publish study {name}: it is unfinished ({why}); run `archbench tune {name}` "
                             f"to finish it (a dead worker's trial is failed and retried there)")
    stored = study.user_attrs.get("definition_hash")
    if stored == legacy_definition_hash(conf, base):
        stored = digest  # the same definition, stamped before the base's searched keys were left out
    if stored != digest:
        raise ArchbenchError(f"cannot publish study {name}: it is stale: its storage was defined as {stored} and "
                             f"params.yaml defines {digest} now; rename the study and rerun `archbench tune`, or "
                             f"restore the definition that made it (`archbench tune {name} --restamp-from OLD_PARAMS` "
                             f"restamps it where only the base's searched keys changed)")
    if not any(t.state == TrialState.COMPLETE for t in counted):
        raise ArchbenchError(f"cannot publish study {name}: no trial completed (all were pruned); loosen its pruner")
    measured = _check_runs(name, counted, code_hash(base), build_datamodule(base, data_dir).content_hash(),
                           tracking_uri(project_dir))
    threads = int(settings(params)["threads"])
    records = [_trial(t, threads, measured.get(t.number)) for t in trials]
    best = study.best_trial
    return {"schema": SCHEMA, "kind": "study", "study": name, "experiment": conf["experiment"],
            "model": base.model, "data": base.data, "description": conf.get("description", ""),
            "metric": conf.get("metric", "val/loss"), "direction": conf.get("direction", "minimize"),
            "n_trials": conf["n_trials"], "search_space": conf["search_space"], "pruner": conf.get("pruner"),
            "seed": conf.get("seed", 0), "trial_budget": base.trainer | (conf.get("trainer") or {}),
            "definition_hash": stored, "storage": url.split(":", 1)[0], "code_hash": code_hash(base),
            "best": {"trial": best.number, "value": best.value, "params": best.params},
            "counts": {state.name: sum(t.state == state for t in trials) for state in
                       (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)},
            "trials": records, "command": f"archbench tune {name}",
            "compute": total([r["compute"] for r in records])}


def publish_study(record: dict[str, Any], ledger: Path) -> Path:
    from benchmarks.run.results import write_json

    path = ledger / "studies" / f"{record['study']}.json"
    write_json(path, record)
    return path
