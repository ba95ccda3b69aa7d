"""Optuna studies from params.yaml, run by any number of workers that share one RDB storage.

Each ``archbench tune NAME`` is a worker: SQLite storage serves workers on one machine, PostgreSQL
(``OPTUNA_STORAGE``) workers on many. A study ends with exactly ``n_trials`` finished trials whatever the
number of workers (how: ``benchmarks/study/storage.py``; the definition and its checks:
``benchmarks/study/spec.py``). Whoever fails a killed worker's trial as stale closes its MLflow run and
retries it (``max_retry``) while the study still needs it. One MLflow parent run per study
(``benchmarks/study/parent.py``): the worker whose ``create_study`` succeeds creates it, and the worker that
finished the last counted trial closes it and writes ``best_params.json``.

A worker is a ``StudyWorker``, whose methods are its steps: ``check`` (everything that can reject the input,
before anything is created), ``open`` (the storage, the study and its parent run), then per trial
``sample_params`` and ``train_trial``, and ``report``. A storage that stops answering ends the worker with one
line and its parent run KILLED; a rerun, once it is back, fails the trials cut short as stale and goes on.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import uuid
import warnings
from typing import Any

from benchmarks.core.errors import ArchbenchError, DivergedError
from benchmarks.core.params import Experiment, experiment_from_params
from benchmarks.run.train import RunOptions, run_seed
from benchmarks.study.parent import Tracker, finish, open_study, summarize
from benchmarks.study.spec import check_positive, definition_hash, legacy_definition_hash, make_sampler, metric_check, study_config, suggest
from benchmarks.study.storage import (StorageUnreachable, TrialNotNeeded, admit, check_storage, counts, fail_stale,
                                      more_needed, open_storage, quiet_storage_loss, shown_url, storage_down,
                                      storage_url)

__all__ = ["StudyWorker", "run_study", "run_seed", "summarize"]


def run_study(params: dict[str, Any], name: str, opts: RunOptions, n_trials: int | None = None) -> dict[str, Any]:
    """One worker of the study ``name``: runs trials until the storage holds ``n_trials`` finished ones."""
    return StudyWorker(params, name, opts, n_trials).run()


class StudyWorker:
    def __init__(self, params: dict[str, Any], name: str, opts: RunOptions, n_trials: int | None) -> None:
        self.params, self.name, self.opts, self.n_trials = params, name, opts, n_trials
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.datamodule: Any = None  # built once, for every trial of this worker
        self.raised: BaseException | None = None  # what the objective itself raised last (Optuna re-raises it)
        self.current: int | None = None  # the number of the trial this worker runs
        self.tracker: Tracker | None = None
        self.study: Any = None
        self.parent = ""

    # ---- the steps -------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.check()
        self.open()
        try:
            with quiet_storage_loss():
                self.optimize()
            return self.report()
        except BaseException as exc:
            instead = self.stopped(exc)
            if instead is None:
                raise
            raise instead from None
        finally:
            self.tracker.link.close()

    def check(self) -> None:
        """Every check before anything is created: the definition, the model's arguments, the storage URL, the
        folders the worker writes."""
        from benchmarks.core.files import check_writable
        from benchmarks.run.build import accepted_args, check_experiment
        from benchmarks.run.tracking import check_tracking_uri, tracking_uri
        from lightning_modules import MODELS

        conf = self.conf = study_config(self.params, self.name)
        self.base: Experiment = experiment_from_params(self.params, conf["experiment"])
        check_experiment(self.base)
        bad = sorted(set(conf["search_space"]) - set(accepted_args(MODELS[self.base.model])))
        if bad:
            raise ArchbenchError(f"study '{self.name}': search_space key '{bad[0]}' is not a model_args name of "
                                 f"{self.base.model}")
        if self.n_trials is not None:
            check_positive(self.name, "--n-trials", self.n_trials)
        self.metric, self.seed = conf.get("metric", "val/loss"), int(conf.get("seed", 0))
        self.target = self.n_trials or conf["n_trials"]
        self.heartbeat_s, self.max_retry = int(conf.get("heartbeat_s", 30)), int(conf.get("max_retry", 2))
        self.poll_s = min(2.0, self.heartbeat_s / 2)
        self.digest, self.url = definition_hash(conf, self.base), storage_url(self.params, self.opts.project_dir)
        check_storage(self.url)
        check_writable(self.opts.state_dir, "state_dir")
        if self.opts.results_dir is not None:
            check_writable(self.opts.results_dir, "results_dir")
        check_tracking_uri(tracking_uri(self.opts.project_dir))

    def open(self) -> None:
        import optuna

        self.tracker = Tracker(self.opts, self.name)
        retry_cls = (getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # Optuna >= 4.9's name
                     or optuna.storages.RetryFailedTrialCallback)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = retry_cls(max_retry=self.max_retry)
        storage = open_storage(self.url, self.heartbeat_s, self.on_stale)
        self.study, self.parent = open_study(self.name, self.conf, self.digest, storage, self.url, self.tracker,
                                             legacy=legacy_definition_hash(self.conf, self.base))

    def on_stale(self, study: Any, trial: Any) -> None:
        """Whoever fails a dead worker's trial closes its MLflow run, and retries it while it is still needed."""
        self.tracker.close_trial(study, trial, "FAILED")
        finished, running = counts(study)
        if finished + len(running) < self.target:
            self.retry(study, trial)

    def optimize(self) -> None:
        import optuna
        from optuna.trial import TrialState

        study, target = self.study, self.target
        budget = max(3 * target, target + 10)  # trials this worker may start: ends a study whose every trial fails
        fail_stale(study)  # a killed worker's trial is failed even when no trial remains to run
        finished, running = counts(study)
        if finished < target or running:
            self.tracker.client.update_run(self.parent, status="RUNNING")  # a continued study reopens its parent
        while more_needed(study, target, self.poll_s):
            started = len([t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == self.worker])
            if started >= budget:
                raise ArchbenchError(f"study '{self.name}': {started} trials started by this worker and only "
                                     f"{counts(study)[0]} of {target} finished; see the failed trials in MLflow and "
                                     f"fix their cause")
            try:
                study.optimize(self.objective, n_trials=budget - started, show_progress_bar=self.opts.progress_bar,
                               catch=(DivergedError, TrialNotNeeded),
                               callbacks=[optuna.study.MaxTrialsCallback(target, states=(TrialState.COMPLETE,
                                                                                         TrialState.PRUNED)),
                                          self.enough])
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
                # Another worker failed this worker's trial as stale while it still ran (heartbeats held up past
                # the grace period): Optuna cannot tell its value. That trial is lost and retried; this worker goes
                # on. Any other error (the objective's own, or another trial state) is raised.
                ours = exc is self.raised and not isinstance(exc, optuna.exceptions.UpdateFinishedTrialError)
                if ours or not self.lost_current():
                    raise
                optuna.logging.get_logger("optuna").warning(
                    f"study '{self.name}': trial {self.current} of this worker was failed as stale while it ran")

    def enough(self, study: Any, trial: Any) -> None:
        """Stop starting trials while the other needed ones run (more_needed waits for them, and takes over one
        that fails), rather than start one that would only be needed if one of them failed."""
        finished, running = counts(study)
        if finished + len(running) >= self.target:
            study.stop()

    def lost_current(self) -> bool:
        from optuna.trial import TrialState

        mine = [t for t in self.study.get_trials(deepcopy=False) if t.number == self.current]
        return bool(mine) and mine[0].state == TrialState.FAIL

    def objective(self, trial: Any) -> float:
        self.current, self.raised = trial.number, None
        try:
            chosen = self.sample_params(trial)
            if isinstance(chosen, float):
                return chosen
            return self.train_trial(trial, chosen)
        except BaseException as exc:
            self.raised = exc
            raise

    def sample_params(self, trial: Any) -> dict[str, Any] | float:
        """The trial's parameters, or the value of a finished trial that chose the same ones."""
        from optuna.trial import TrialState

        study = self.study
        # A retried trial inherits its predecessor's attrs: its run id is cleared before this worker claims it.
        trial.set_user_attr("mlflow_run_id", "")
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("worker_pid", os.getpid())
        if not admit(study, trial.number, self.target, self.poll_s):
            trial.set_user_attr("not_needed", True)
            raise TrialNotNeeded(f"trial {trial.number} started as the study reached {self.target} finished trials")
        # A sampler seeded per trial number: one worker replays a study exactly, and concurrent workers (or
        # a continued study) do not propose the same points from the same seed.
        study.sampler = make_sampler(self.conf, self.seed + trial.number)
        chosen = suggest(trial, self.conf["search_space"])
        # Every trial trains with the same seed and code, so a repeated choice would reproduce a finished
        # trial's value exactly (TPE repeats often on small categorical spaces): answer from that trial.
        for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if done.params == trial.params:
                trial.set_user_attr("repeat_of", done.number)
                trial.set_user_attr("mlflow_run_id", done.user_attrs.get("mlflow_run_id"))
                return float(done.value)
        return chosen

    def train_trial(self, trial: Any, chosen: dict[str, Any]) -> float:
        import lightning.pytorch as pl
        import optuna
        from optuna.trial import TrialState
        from optuna_integration import PyTorchLightningPruningCallback

        from benchmarks.run.build import build_datamodule

        base, opts, name = self.base, self.opts, self.name
        if self.datamodule is None:
            pl.seed_everything(self.seed, workers=True, verbose=False)  # as run_seed does before it builds one
            self.datamodule = build_datamodule(base, opts.data_dir)
        exp = dataclasses.replace(base, name=f"{name}-trial{trial.number}", model_args=base.model_args | chosen,
                                  trainer=base.trainer | (self.conf.get("trainer") or {}))
        described = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items())
        trial_opts = dataclasses.replace(
            opts, results_dir=None, resume=False, state_dir=opts.state_dir / "tune" / name / f"trial{trial.number}",
            outbox_dir=opts.outbox(), progress_bar=False,
            extra_callbacks=[PyTorchLightningPruningCallback(trial, monitor=self.metric),
                             metric_check(name, base.model, self.metric)],
            tags={"mlflow.parentRunId": self.parent, "optuna.study": name, "optuna.trial": str(trial.number),
                  "optuna.params": described},
            datamodule=self.datamodule, skip_test=True, monitor=self.metric,
            on_run_created=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
        )
        try:
            result = run_seed(exp, self.seed, trial_opts)
        except BaseException as exc:
            # run_seed ends its run on errors inside fit; this also covers the ones before (e.g. the Trainer's).
            stopped = isinstance(exc, (optuna.TrialPruned, KeyboardInterrupt, SystemExit))
            if not storage_down(exc):
                frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
                self.tracker.close_trial(self.study, frozen, "KILLED" if stopped else "FAILED")
            if isinstance(exc, SystemExit):  # Optuna marks FAIL only on Exception/KeyboardInterrupt
                raise KeyboardInterrupt from exc
            raise
        now = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        if now.state != TrialState.RUNNING:
            # Failed as stale by another worker while it ran (heartbeats held up past the grace period): its
            # result can no longer be told, and it was retried if still needed.
            if result.get("run_id"):
                self.tracker.client.set_terminated(result["run_id"], "FAILED")
            raise TrialNotNeeded(f"trial {trial.number} was failed as stale while it ran")
        value = result["metrics"].get(f"{self.metric}_best")
        if value is None or not math.isfinite(value):
            self.tracker.close_trial(self.study, trial, "FAILED")
            raise DivergedError(f"study '{name}' trial {trial.number}: best {self.metric} is {value}; the trial failed")
        return float(value)

    def report(self) -> dict[str, Any]:
        """The worker that finished the last counted trial closes the study; so does one that found it complete.

        Every worker reads the same finished trials from the storage, so exactly one of them is the closer."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        counted = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
                         key=lambda t: (t.datetime_complete.timestamp() if t.datetime_complete else 0.0, t.number))
        mine = [t for t in trials if t.user_attrs.get("worker") == self.worker]
        if mine and counted[-1].user_attrs.get("worker") != self.worker:
            return summarize(self.study, self.name, self.conf, self.target)  # another worker closes it
        return finish(self.study, self.name, self.conf, self.target, self.parent, self.opts, self.tracker)

    # ---- when the worker fails ---------------------------------------------------------------------------
    def stopped(self, exc: BaseException) -> BaseException | None:
        """Close the parent run unless other workers still run trials; a storage that stopped answering is one
        line (nobody can say whether others run: the parent is closed KILLED, and reopened by the next worker)."""
        status = "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED"
        if storage_down(exc):
            self.tracker.client.end_run(self.parent, "KILLED")
            reason = str(storage_down(exc)).strip().splitlines()[0][:200]
            return StorageUnreachable(
                f"study '{self.name}': its storage {shown_url(self.url)} stopped answering ({reason}); nothing "
                f"finished is lost: once it is back, `archbench tune {self.name}` fails the trials cut short as "
                f"stale and goes on")
        if not counts(self.study)[1]:  # no other worker is running a trial: nobody else will close the parent
            self.tracker.client.end_run(self.parent, status)
        return None
