"""Optuna studies from params.yaml: a seeded TPE sampler, median pruning on the validation loss through
Optuna's Lightning callback, durable storage (rerunning continues the study up to ``n_trials``), and one
MLflow parent run per study with a nested run per trial."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.errors import ArchbenchError
from benchmarks.params import Experiment, experiment_from_params, settings
from benchmarks.train import RunOptions, run_seed

STUDY_KEYS = {"experiment", "n_trials", "metric", "direction", "seed", "pruner", "search_space", "trainer", "description"}
STORAGE_ENV = "OPTUNA_STORAGE"


def study_config(params: dict[str, Any], name: str) -> dict[str, Any]:
    # `studies` run in the default suite (a DVC stage each); `full_studies` only on request.
    studies = (params.get("studies") or {}) | (params.get("full_studies") or {})
    if name not in studies:
        raise ArchbenchError(f"unknown study '{name}' (known: {', '.join(sorted(studies)) or 'none'}); define it under 'studies' in params.yaml")
    conf = studies[name]
    unknown = set(conf) - STUDY_KEYS
    if unknown:
        raise ArchbenchError(f"study '{name}': unknown key '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(STUDY_KEYS))})")
    if not isinstance(conf.get("search_space"), dict) or not conf["search_space"]:
        raise ArchbenchError(f"study '{name}': 'search_space' must map model_args names to distributions")
    if conf.get("direction", "minimize") not in ("minimize", "maximize"):
        raise ArchbenchError(f"study '{name}': direction must be minimize or maximize")
    if not isinstance(conf.get("n_trials"), int) or conf["n_trials"] < 1:
        raise ArchbenchError(f"study '{name}': n_trials must be a positive integer")
    return conf


def suggest(trial: Any, space: dict[str, dict[str, Any]], study: str) -> dict[str, Any]:
    chosen = {}
    for key, spec in space.items():
        kind = spec.get("type")
        if kind == "int":
            chosen[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False))
        elif kind == "float":
            chosen[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=spec.get("log", False))
        elif kind == "categorical":
            choices = spec["choices"]
            if any(isinstance(c, (list, dict)) for c in choices):
                # Optuna stores only scalar choices: suggest their JSON text and decode it.
                chosen[key] = json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in choices]))
            else:
                chosen[key] = trial.suggest_categorical(key, choices)
        else:
            raise ArchbenchError(f"study '{study}': search_space.{key} needs type int, float or categorical, got {kind!r}")
    return chosen


def _storage(params: dict[str, Any]) -> Any:
    import optuna

    url = os.environ.get(STORAGE_ENV) or settings(params).get("optuna_storage") or "sqlite:///optuna.db"
    # Heartbeats let a rerun mark trials of a killed process as failed instead of leaving them RUNNING.
    return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90)


def _parent_run(study: Any, name: str, opts: RunOptions) -> str:
    """The study's MLflow parent run: created once, reopened when the study continues."""
    from mlflow.tracking import MlflowClient

    from benchmarks.tracking import artifact_location, tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri(opts.project_dir))
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return run_id
    exp = client.get_experiment_by_name(opts.mlflow_experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(opts.mlflow_experiment, artifact_location(opts.project_dir))
    run = client.create_run(exp_id, run_name=f"study:{name}", tags={"optuna.study": study.study_name})
    study.set_user_attr("mlflow_parent_run_id", run.info.run_id)
    return run.info.run_id


def run_study(params: dict[str, Any], name: str, opts: RunOptions, n_trials: int | None = None) -> dict[str, Any]:
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna_integration import PyTorchLightningPruningCallback

    from benchmarks.build import accepted_args, check_experiment
    from benchmarks.tracking import tracking_uri
    from lightning_modules import MODELS

    conf = study_config(params, name)
    base: Experiment = experiment_from_params(params, conf["experiment"])
    check_experiment(base)
    bad = sorted(set(conf["search_space"]) - set(accepted_args(MODELS[base.model])))
    if bad:
        raise ArchbenchError(f"study '{name}': search_space key '{bad[0]}' is not a model_args name of {base.model}")
    metric, direction, seed = conf.get("metric", "val/loss"), conf.get("direction", "minimize"), int(conf.get("seed", 0))
    target = n_trials or conf["n_trials"]
    # The name carries a hash of the definition: editing the search space starts a new study, rerunning continues.
    digest = hashlib.sha256(json.dumps([conf, base.as_dict()], sort_keys=True, default=str).encode()).hexdigest()[:8]
    pruner_conf = conf.get("pruner") or {}
    study = optuna.create_study(
        study_name=f"{name}-{digest}",
        storage=_storage(params),
        load_if_exists=True,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(pruner_conf.get("sampler_startup_trials", 4))),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=int(pruner_conf.get("n_startup_trials", 2)), n_warmup_steps=int(pruner_conf.get("n_warmup_steps", 1))
        ),
    )
    # A continued study reseeds its sampler past the trials it already holds: with the original seed, a
    # rerun after an interruption would replay the same proposals. An uninterrupted study keeps `seed` itself.
    if study.trials:
        study.sampler = optuna.samplers.TPESampler(
            seed=seed + len(study.trials), n_startup_trials=int(pruner_conf.get("sampler_startup_trials", 4)))
    parent = _parent_run(study, name, opts)
    state_root = opts.state_dir / "tune" / study.study_name

    def objective(trial: optuna.Trial) -> float:
        chosen = suggest(trial, conf["search_space"], name)
        # Every trial trains with the same seed and the same code, so a repeated choice would reproduce a
        # finished trial's value exactly. TPE repeats often on small categorical spaces (4 latent sizes, 8
        # trials): answer from the finished trial instead of training again.
        for done in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if done.params == trial.params:
                trial.set_user_attr("repeat_of", done.number)
                trial.set_user_attr("mlflow_run_id", done.user_attrs.get("mlflow_run_id"))
                return float(done.value)
        exp = dataclasses.replace(base, name=f"{name}-trial{trial.number}", model_args=base.model_args | chosen,
                                  trainer=base.trainer | (conf.get("trainer") or {}))
        trial_opts = dataclasses.replace(
            opts, results_dir=None, resume=False, state_dir=state_root / f"trial{trial.number}", progress_bar=False,
            extra_callbacks=[PyTorchLightningPruningCallback(trial, monitor=metric)],
            tags={"mlflow.parentRunId": parent, "optuna.study": study.study_name, "optuna.trial": str(trial.number)},
        )
        result = run_seed(exp, seed, trial_opts)
        trial.set_user_attr("mlflow_run_id", result["run_id"])
        # The best value of the monitored metric over the epochs; a study on another key needs the model to monitor it.
        best = result["metrics"].get(f"{metric}_best")
        if best is None:
            raise ArchbenchError(f"study '{name}': the model does not monitor '{metric}'; use its monitored metric")
        return float(best)

    def counted() -> int:
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return len(study.get_trials(deepcopy=False, states=states))

    remaining = target - counted()
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, show_progress_bar=opts.progress_bar, catch=())
    return _finish(study, name, conf, parent, opts, metric, MlflowClient(tracking_uri=tracking_uri(opts.project_dir)))


def _finish(study: Any, name: str, conf: dict[str, Any], parent: str, opts: RunOptions, metric: str, client: Any) -> dict[str, Any]:
    import optuna

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    if not complete:
        raise ArchbenchError(f"study '{name}': no trial completed ({len(pruned)} pruned); loosen the pruner or raise n_trials")
    best = study.best_trial
    summary = {
        "study": name, "study_name": study.study_name, "metric": metric, "direction": conf.get("direction", "minimize"),
        "value": best.value, "params": best.params, "trial": best.number,
        "n_complete": len(complete), "n_pruned": len(pruned), "n_trials": conf["n_trials"], "experiment": conf["experiment"],
        "n_repeats": sum("repeat_of" in t.user_attrs for t in complete),  # answered by an earlier identical trial
    }
    # Tags, not params: params are immutable, and a continued study may find a new best.
    for key, value in best.params.items():
        client.set_tag(parent, f"best.{key}", str(value))
    client.log_metric(parent, f"best/{metric}", best.value, step=len(trials))
    client.log_dict(parent, summary, "best_params.json")
    client.set_terminated(parent, "FINISHED")
    if opts.results_dir is not None:
        out = opts.results_dir / "tune" / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "best_params.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        _plot_history(study, out / "history.png")
    return summary


def _plot_history(study: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for state, colour in ((optuna.trial.TrialState.COMPLETE, "tab:blue"), (optuna.trial.TrialState.PRUNED, "tab:red")):
        pts = [(t.number, t.value if t.value is not None else max(t.intermediate_values.values()))
               for t in study.get_trials(deepcopy=False, states=(state,)) if t.value is not None or t.intermediate_values]
        if pts:
            ax.scatter(*zip(*pts), c=colour, label=state.name.lower(), s=18)
    ax.set(xlabel="trial", ylabel="objective", title=study.study_name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
