"""Optuna studies from params.yaml, run by any number of workers that share one RDB storage.

Each ``archbench tune NAME`` is a worker: SQLite storage serves workers on one machine, PostgreSQL
(``OPTUNA_STORAGE``) workers on many. A study ends with exactly ``n_trials`` finished trials whatever the
number of workers (how: ``benchmarks/study/storage.py``; the definition and its checks:
``benchmarks/study/spec.py``). Whoever fails a killed worker's trial as stale closes its MLflow run and
retries it (``max_retry``) while the study still needs it. One MLflow parent run per study: the worker
whose ``create_study`` succeeds (the storage's unique study name is the guard) creates it, and the worker
that finished the last counted trial closes it and writes ``best_params.json``.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import socket
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError, DivergedError
from benchmarks.core.files import atomic_write_bytes, atomic_write_json
from benchmarks.core.params import Experiment, experiment_from_params
from benchmarks.study.spec import (check_positive, definition_hash, make_pruner, make_sampler, metric_check, study_config,
                                   suggest)
from benchmarks.study.storage import TrialNotNeeded, admit, counts, fail_stale, more_needed, open_storage, shown_url, storage_url
from benchmarks.run import train
from benchmarks.run.train import RunOptions, run_seed

PARENT_WAIT_S = 60.0


class Tracker:
    """The study's MLflow side: the experiment, the parent run, and closing the runs a trial leaves behind."""

    def __init__(self, opts: RunOptions) -> None:
        from mlflow.tracking import MlflowClient

        from benchmarks.run.tracking import ensure_tracking_store, tracking_uri

        self.uri = tracking_uri(opts.project_dir)
        ensure_tracking_store(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.opts = opts

    def experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        from benchmarks.run.tracking import artifact_location

        exp = self.client.get_experiment_by_name(self.opts.mlflow_experiment)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(self.opts.mlflow_experiment, artifact_location(self.opts.project_dir))
        except MlflowException:  # another worker created it in between
            return self.client.get_experiment_by_name(self.opts.mlflow_experiment).experiment_id

    def create_parent(self, name: str, conf: dict[str, Any], digest: str, url: str) -> str:
        from benchmarks.run.tracking import flatten

        tags = {"optuna.study": name, "archbench.role": "study", "definition_hash": digest,
                "optuna.storage": shown_url(url), "mlflow.note.content": conf.get("description") or f"Optuna study {name}"}
        exp_id = self.experiment_id()
        # The experiment's note, written here by the one creator before any trial starts: trials that check
        # and set it at once would race on a server (a duplicate-key error from the backend store).
        note = getattr(train, "EXPERIMENT_NOTE", None)
        if note and "mlflow.note.content" not in self.client.get_experiment(exp_id).tags:
            self.client.set_experiment_tag(exp_id, "mlflow.note.content", note)
        run = self.client.create_run(exp_id, run_name=f"study:{name}", tags=tags)
        params = {"experiment": conf["experiment"], "metric": conf.get("metric", "val/loss"), "seed": conf.get("seed", 0),
                  "direction": conf.get("direction", "minimize")}
        params |= {f"space.{k}": v for k, v in flatten(conf["search_space"]).items()}
        params |= {f"pruner.{k}": v for k, v in (conf.get("pruner") or {}).items()}
        for key, value in params.items():
            self.client.log_param(run.info.run_id, key, str(value)[:250])
        return run.info.run_id

    def close_trial(self, study: Any, trial: Any, status: str) -> None:
        """Give a trial that did not complete its status in MLflow: the RUNNING run its user attr names, and
        every run tagged with its number (one created just before its worker died, before the attr was written).

        A run of the trial's own that already ended FINISHED is closed too: Lightning's logger finishes the
        run when fit ends, before the checkpoints are uploaded and the value is told, and a worker killed in
        between (or a value that is not finite) leaves a trial that failed; MLflow must not show it finished.
        Only under this study's parent run, though: a study made again under the same name (its storage
        deleted) numbers its trials from 0 again. The attr's run may be another trial's (a repeated choice
        answers from a finished trial), so only a RUNNING one is touched there."""
        from benchmarks.run.tracking import end_run

        end_run(trial.user_attrs.get("mlflow_run_id"), status, self.uri)
        exp_id = study.user_attrs.get("mlflow_experiment_id")
        parent = study.user_attrs.get("mlflow_parent_run_id")
        if exp_id:
            found = self.client.search_runs([exp_id], filter_string=(
                f"tags.`optuna.study` = '{study.study_name}' and tags.`optuna.trial` = '{trial.number}'"))
            for run in found:
                ours = parent is not None and run.data.tags.get("mlflow.parentRunId") == parent
                if run.info.status == "RUNNING" or (run.info.status == "FINISHED" and ours):
                    self.client.set_terminated(run.info.run_id, status)


def _open_study(name: str, conf: dict[str, Any], digest: str, storage: Any, url: str, tracker: Tracker) -> tuple[Any, str]:
    """Create or load the study and its parent run; the one worker whose create_study succeeds makes the parent."""
    import optuna

    kw = {"storage": storage, "sampler": make_sampler(conf, int(conf.get("seed", 0))), "pruner": make_pruner(conf)}
    try:
        study = optuna.create_study(study_name=name, direction=conf.get("direction", "minimize"), **kw)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, **kw)
    else:
        study.set_user_attr("definition_hash", digest)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([conf.get("metric", "val/loss")])  # the dashboard's axis label
        for key in ("experiment", "description", "search_space"):
            study.set_user_attr(key, conf.get(key))
        study.set_user_attr("mlflow_experiment_id", tracker.experiment_id())
        study.set_user_attr("mlflow_parent_run_id", tracker.create_parent(name, conf, digest, url))
    deadline = time.monotonic() + PARENT_WAIT_S
    while True:
        attrs = study.user_attrs
        if attrs.get("definition_hash") not in (None, digest):
            raise ArchbenchError(
                f"study '{name}' in {shown_url(url)} was defined differently (definition {attrs['definition_hash']}, params.yaml "
                f"now {digest}); rename the study in params.yaml, or delete the old one with `optuna delete-study "
                f"--study-name {name} --storage {shown_url(url)}`")
        if attrs.get("mlflow_parent_run_id"):
            _check_parent(name, attrs["mlflow_parent_run_id"], tracker, url)
            return study, attrs["mlflow_parent_run_id"]
        if time.monotonic() > deadline:  # its creator died between creating the study and the parent: take over
            study.set_user_attr("definition_hash", digest)
            study.set_user_attr("mlflow_experiment_id", tracker.experiment_id())
            study.set_user_attr("mlflow_parent_run_id", tracker.create_parent(name, conf, digest, url))
        time.sleep(0.5)


def _check_parent(name: str, run_id: str, tracker: Tracker, url: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        tracker.client.get_run(run_id)
    except MlflowException:
        raise ArchbenchError(
            f"study '{name}': its MLflow parent run {run_id} is not in {tracker.uri}; point MLFLOW_TRACKING_URI at the "
            f"store its first worker used, or delete the study with `optuna delete-study --study-name {name} "
            f"--storage {shown_url(url)}`") from None


def run_study(params: dict[str, Any], name: str, opts: RunOptions, n_trials: int | None = None) -> dict[str, Any]:
    """One worker of the study ``name``: runs trials until the storage holds ``n_trials`` finished ones."""
    import optuna
    from optuna.trial import TrialState

    from benchmarks.run.build import accepted_args, check_experiment
    from lightning_modules import MODELS

    # Every check before anything is created: storage, MLflow store, state folders.
    conf = study_config(params, name)
    base: Experiment = experiment_from_params(params, conf["experiment"])
    check_experiment(base)
    bad = sorted(set(conf["search_space"]) - set(accepted_args(MODELS[base.model])))
    if bad:
        raise ArchbenchError(f"study '{name}': search_space key '{bad[0]}' is not a model_args name of {base.model}")
    if n_trials is not None:
        check_positive(name, "--n-trials", n_trials)
    metric, seed, target = conf.get("metric", "val/loss"), int(conf.get("seed", 0)), n_trials or conf["n_trials"]
    heartbeat_s, max_retry = int(conf.get("heartbeat_s", 30)), int(conf.get("max_retry", 2))
    poll_s = min(2.0, heartbeat_s / 2)
    digest, url = definition_hash(conf, base), storage_url(params, opts.project_dir)
    worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    tracker = Tracker(opts)
    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = retry_cls(max_retry=max_retry)

    def on_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # Whoever fails a dead worker's trial closes its MLflow run, and retries it while it is still needed.
        tracker.close_trial(study, trial, "FAILED")
        finished, running = counts(study)
        if finished + len(running) < target:
            retry(study, trial)

    study, parent = _open_study(name, conf, digest, open_storage(url, heartbeat_s, on_stale), url, tracker)
    state_root = opts.state_dir / "tune" / name
    shared: dict[str, Any] = {}  # the datamodule, built once for all the trials of this worker

    def objective(trial: optuna.Trial) -> float:
        # A retried trial inherits its predecessor's attrs: its run id is cleared before this worker claims it.
        trial.set_user_attr("mlflow_run_id", "")
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("worker_pid", os.getpid())
        if not admit(study, trial.number, target, poll_s):
            trial.set_user_attr("not_needed", True)
            raise TrialNotNeeded(f"trial {trial.number} started as the study reached {target} finished trials")
        # A sampler seeded per trial number: one worker replays a study exactly, and concurrent workers (or
        # a continued study) do not propose the same points from the same seed.
        study.sampler = make_sampler(conf, seed + trial.number)
        chosen = suggest(trial, conf["search_space"])
        # Every trial trains with the same seed and code, so a repeated choice would reproduce a finished
        # trial's value exactly (TPE repeats often on small categorical spaces): answer from that trial.
        for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if done.params == trial.params:
                trial.set_user_attr("repeat_of", done.number)
                trial.set_user_attr("mlflow_run_id", done.user_attrs.get("mlflow_run_id"))
                return float(done.value)
        return _train_trial(trial, chosen)

    def _train_trial(trial: optuna.Trial, chosen: dict[str, Any]) -> float:
        import lightning.pytorch as pl
        from optuna_integration import PyTorchLightningPruningCallback

        from benchmarks.run.build import build_datamodule

        if "datamodule" not in shared:
            pl.seed_everything(seed, workers=True, verbose=False)  # as run_seed does before it builds one
            shared["datamodule"] = build_datamodule(base, opts.data_dir)
        exp = dataclasses.replace(base, name=f"{name}-trial{trial.number}", model_args=base.model_args | chosen,
                                  trainer=base.trainer | (conf.get("trainer") or {}))
        described = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items())
        trial_opts = dataclasses.replace(
            opts, results_dir=None, resume=False, state_dir=state_root / f"trial{trial.number}", progress_bar=False,
            extra_callbacks=[PyTorchLightningPruningCallback(trial, monitor=metric), metric_check(name, base.model, metric)],
            tags={"mlflow.parentRunId": parent, "optuna.study": name, "optuna.trial": str(trial.number),
                  "optuna.params": described},
            datamodule=shared["datamodule"], skip_test=True, monitor=metric,
            on_run_created=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
        )
        try:
            result = run_seed(exp, seed, trial_opts)
        except BaseException as exc:
            # run_seed ends its run on errors inside fit; this also covers the ones before (e.g. the Trainer's).
            stopped = isinstance(exc, (optuna.TrialPruned, KeyboardInterrupt, SystemExit))
            frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
            tracker.close_trial(study, frozen, "KILLED" if stopped else "FAILED")
            if isinstance(exc, SystemExit):  # Optuna marks FAIL only on Exception/KeyboardInterrupt
                raise KeyboardInterrupt from exc
            raise
        if next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number).state != TrialState.RUNNING:
            # Failed as stale by another worker while it ran (heartbeats held up past the grace period): its
            # result can no longer be told, and it was retried if still needed.
            if result.get("run_id"):
                tracker.client.set_terminated(result["run_id"], "FAILED")
            raise TrialNotNeeded(f"trial {trial.number} was failed as stale while it ran")
        value = result["metrics"].get(f"{metric}_best")
        if value is None or not math.isfinite(value):
            tracker.close_trial(study, trial, "FAILED")
            raise DivergedError(f"study '{name}' trial {trial.number}: best {metric} is {value}; the trial failed")
        return float(value)

    budget = max(3 * target, target + 10)  # trials this worker may start: ends a study whose every trial fails

    def enough(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # The other needed trials are running: wait for them (in _more_needed) rather than start a trial
        # that would only be needed if one of them failed.
        finished, running = counts(study)
        if finished + len(running) >= target:
            study.stop()

    try:
        fail_stale(study)  # a killed worker's trial is failed even when no trial remains to run
        finished, running = counts(study)
        if finished < target or running:
            tracker.client.update_run(parent, status="RUNNING")  # a continued study reopens its parent
        while more_needed(study, target, poll_s):
            started = len([t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker])
            if started >= budget:
                raise ArchbenchError(f"study '{name}': {started} trials started by this worker and only {counts(study)[0]} "
                                     f"of {target} finished; see the failed trials in MLflow and fix their cause")
            try:
                study.optimize(objective, n_trials=budget - started, show_progress_bar=opts.progress_bar,
                               catch=(DivergedError, TrialNotNeeded),
                               callbacks=[optuna.study.MaxTrialsCallback(target, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                                          enough])
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
                # Another worker failed this worker's trial as stale while it still ran (heartbeats held up
                # past the grace period): that trial is lost and retried, and this worker goes on.
                if not isinstance(exc, optuna.exceptions.UpdateFinishedTrialError) and not str(exc).startswith("Cannot tell a"):
                    raise
                optuna.logging.get_logger("optuna").warning(f"study '{name}': a trial of this worker was failed as stale: {exc}")
        return _close(study, name, conf, target, parent, opts, tracker, worker)
    except BaseException as exc:
        if not counts(study)[1]:  # no other worker is running a trial: nobody else will close the parent
            from benchmarks.run.tracking import end_run

            end_run(parent, "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED", tracker.uri)
        raise


def _close(study: Any, name: str, conf: dict[str, Any], target: int, parent: str, opts: RunOptions,
           tracker: Tracker, worker: str) -> dict[str, Any]:
    """The worker that finished the last counted trial closes the study; so does one that found it complete.

    Every worker reads the same finished trials from the storage, so exactly one of them is the closer."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counted = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
                     key=lambda t: (t.datetime_complete.timestamp() if t.datetime_complete else 0.0, t.number))
    mine = [t for t in trials if t.user_attrs.get("worker") == worker]
    if mine and counted[-1].user_attrs.get("worker") != worker:
        return summarize(study, name, conf, target)  # another worker closes it
    return _finish(study, name, conf, target, parent, opts, tracker)


def summarize(study: Any, name: str, conf: dict[str, Any], target: int) -> dict[str, Any]:
    """The study as the storage holds it: the same content whichever worker reads it."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        raise ArchbenchError(f"study '{name}': no trial completed ({pruned} pruned); loosen the pruner or raise n_trials")
    best = study.best_trial
    return {
        "study": name, "study_name": study.study_name, "metric": conf.get("metric", "val/loss"),
        "direction": conf.get("direction", "minimize"), "value": best.value, "params": best.params, "trial": best.number,
        "n_complete": len(complete), "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_failed": sum(t.state == TrialState.FAIL for t in trials), "n_trials": target, "experiment": conf["experiment"],
        "n_repeats": sum("repeat_of" in t.user_attrs for t in complete),  # answered by an earlier identical trial
        "definition_hash": study.user_attrs.get("definition_hash"),
    }


def _finish(study: Any, name: str, conf: dict[str, Any], target: int, parent: str, opts: RunOptions,
            tracker: Tracker) -> dict[str, Any]:
    from benchmarks.run.tracking import end_run

    try:
        summary = summarize(study, name, conf, target)
    except ArchbenchError:
        end_run(parent, "FAILED", tracker.uri)
        raise
    client, metric = tracker.client, summary["metric"]
    # Tags, not params: params are immutable, and a continued study may find a new best.
    for key, value in summary["params"].items():
        client.set_tag(parent, f"best.{key}", str(value))
    client.set_tag(parent, "best.trial", str(summary["trial"]))
    client.log_metric(parent, f"best/{metric}", summary["value"], step=len(study.trials))
    client.log_dict(parent, summary, "best_params.json")
    if opts.results_dir is not None:
        out = opts.results_dir / "tune" / name
        atomic_write_json(out / "best_params.json", summary)  # a reader never sees half a file
        _plot_history(study, out / "history.png")
    client.set_terminated(parent, "FINISHED")
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
    image = io.BytesIO()
    fig.savefig(image, dpi=110, format="png")
    plt.close(fig)
    atomic_write_bytes(path, image.getvalue())
