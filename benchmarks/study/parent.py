"""A study's MLflow side and its end: the parent run (made by the one worker whose ``create_study`` succeeds),
closing the runs a failed trial leaves behind, and the summary the closing worker writes (``best_params.json``).

MLflow is reached through a tracker link (run/tracker_link.py), as seed runs reach it: a server that goes away
costs a bounded wait, and what it did not get is sent on the next contact.
"""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.files import atomic_write_bytes, atomic_write_json
from benchmarks.run.train import EXPERIMENT_NOTE, RunOptions
from benchmarks.study.spec import make_pruner, make_sampler
from benchmarks.study.storage import shown_url

PARENT_WAIT_S = 60.0


class Tracker:
    """The study's MLflow side: the experiment, the parent run, and closing the runs a trial leaves behind."""

    def __init__(self, opts: RunOptions, name: str) -> None:
        from benchmarks.run.resumable_logger import LinkedClient
        from benchmarks.run.tracker_link import TrackerLink, flush_outboxes
        from benchmarks.run.tracking import ensure_tracking_store, tracking_uri

        self.uri = tracking_uri(opts.project_dir)
        # Through a tracker link, as a seed run: reads retried within the window, writes kept while it is down.
        self.link = TrackerLink(self.uri, opts.outbox(), f"study.{name}")
        self.link.retried(ensure_tracking_store, self.uri)
        flush_outboxes(opts.outbox(), self.uri)  # what earlier runs could not send: the next contact is now
        self.client = LinkedClient(self.link)
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
        if "mlflow.note.content" not in self.client.get_experiment(exp_id).tags:
            self.client.set_experiment_tag(exp_id, "mlflow.note.content", EXPERIMENT_NOTE)
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
        if trial.user_attrs.get("mlflow_run_id"):
            self.client.end_run(trial.user_attrs["mlflow_run_id"], status)
        exp_id = study.user_attrs.get("mlflow_experiment_id")
        parent = study.user_attrs.get("mlflow_parent_run_id")
        if exp_id:
            found = self.client.search_runs([exp_id], filter_string=(
                f"tags.`optuna.study` = '{study.study_name}' and tags.`optuna.trial` = '{trial.number}'"))
            for run in found:
                ours = parent is not None and run.data.tags.get("mlflow.parentRunId") == parent
                if run.info.status == "RUNNING" or (run.info.status == "FINISHED" and ours):
                    self.client.set_terminated(run.info.run_id, status)


def open_study(name: str, conf: dict[str, Any], digest: str, storage: Any, url: str, tracker: Tracker,
               legacy: str | None = None) -> tuple[Any, str]:
    """Create or load the study and its parent run; the one worker whose create_study succeeds makes the parent.

    A study stamped with the ``legacy`` form of the same definition (spec.legacy_definition_hash) is restamped."""
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
        if legacy is not None and attrs.get("definition_hash") == legacy != digest:
            study.set_user_attr("definition_hash", digest)
            attrs = study.user_attrs
        if attrs.get("definition_hash") not in (None, digest):
            raise ArchbenchError(
                f"study '{name}' in {shown_url(url)} was defined differently (definition {attrs['definition_hash']}, params.yaml "
                f"now {digest}); rename the study in params.yaml, or delete the old one with `optuna delete-study "
                f"--study-name {name} --storage {shown_url(url)}`")
        if attrs.get("mlflow_parent_run_id"):
            check_parent(name, attrs["mlflow_parent_run_id"], tracker, url)
            return study, attrs["mlflow_parent_run_id"]
        if time.monotonic() > deadline:  # its creator died between creating the study and the parent: take over
            study.set_user_attr("definition_hash", digest)
            study.set_user_attr("mlflow_experiment_id", tracker.experiment_id())
            study.set_user_attr("mlflow_parent_run_id", tracker.create_parent(name, conf, digest, url))
        time.sleep(0.5)


def check_parent(name: str, run_id: str, tracker: Tracker, url: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        tracker.client.get_run(run_id)
    except MlflowException:
        raise ArchbenchError(
            f"study '{name}': its MLflow parent run {run_id} is not in {tracker.uri}; point MLFLOW_TRACKING_URI at the "
            f"store its first worker used, or delete the study with `optuna delete-study --study-name {name} "
            f"--storage {shown_url(url)}`") from None


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


def finish(study: Any, name: str, conf: dict[str, Any], target: int, parent: str, opts: RunOptions,
            tracker: Tracker) -> dict[str, Any]:
    try:
        summary = summarize(study, name, conf, target)
    except ArchbenchError:
        tracker.client.end_run(parent, "FAILED")
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
    tracker.link.finish(hint=f"the study is complete in its storage; `archbench tune {name}` sends the rest")
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
