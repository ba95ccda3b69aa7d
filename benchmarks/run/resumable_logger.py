"""An MLflow logger whose run can be resumed under changed code, and whose writes survive a tracker outage.

MLflow params are write-once: logging ``git_commit`` again after a new commit, or a model argument whose
code default changed, raises "Changing param values is not allowed", so a killed run could not resume once
the code moved on. Here a resumed run keeps the values it started with as params; every value that differs
now goes to a tag ``changed_on_resume.<key>`` = "<old> -> <new>", so the run says what changed mid-way.

Every call reaches MLflow through a ``TrackerLink`` (tracker_link.py): writes wait in an outbox while the server
is down, reads are retried within a bounded window. The logger never ends its run itself (Lightning ends it
FINISHED as soon as ``fit`` returns, before the test pass and the checkpoints): the seed run closes it once its
numbers are safe on disk and sent.
"""

from __future__ import annotations

import tempfile
import time
from argparse import Namespace
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from benchmarks.run.tracker_link import TrackerLink

# Lightning's MLFlowLogger stores str(value)[:250]; the comparison must see the same strings.
PARAM_CHARS = 250


class LinkedClient:
    """The MlflowClient calls the suite and Lightning make, sent through a TrackerLink: the writes below become
    outbox-able records; any other attribute is a read, retried while the server is down."""

    def __init__(self, link: TrackerLink) -> None:
        self.link = link

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self.link.call(method, *args, **kwargs)

    def log_batch(self, run_id: str, metrics: Sequence[Any] = (), params: Sequence[Any] = (), tags: Sequence[Any] = (),
                  synchronous: bool | None = None) -> None:
        self.link.write({"op": "log_batch", "run_id": run_id,
                         "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                         "params": [[p.key, p.value] for p in params], "tags": [[t.key, t.value] for t in tags]})

    def log_param(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> None:
        self.link.write({"op": "log_batch", "run_id": run_id, "params": [[key, str(value)]]})

    def set_tag(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> None:
        self.link.write({"op": "set_tag", "run_id": run_id, "key": key, "value": str(value)})

    def set_experiment_tag(self, experiment_id: str, key: str, value: Any) -> None:
        self.link.write({"op": "set_experiment_tag", "experiment_id": experiment_id, "key": key, "value": str(value)})

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        self.link.write({"op": "log_artifact", "run_id": run_id, "local_path": str(local_path),
                         "artifact_path": artifact_path})

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.link.write({"op": "log_text", "run_id": run_id, "text": text, "artifact_file": artifact_file})

    def log_dict(self, run_id: str, dictionary: dict[str, Any], artifact_file: str) -> None:
        self.link.write({"op": "log_dict", "run_id": run_id, "dictionary": dictionary, "artifact_file": artifact_file})

    def log_figure(self, run_id: str, figure: Any, artifact_file: str, **_: Any) -> None:
        """Saved to a file first (which the outbox can keep), then logged as that file."""
        folder = Path(artifact_file).parent.as_posix()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            figure.savefig(path)
            self.log_artifact(run_id, str(path), None if folder in ("", ".") else folder)

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        # The end time is fixed now, so a run closed later from the outbox still shows when it ended.
        self.link.write({"op": "set_terminated", "run_id": run_id, "status": status or "FINISHED",
                         "end_time": end_time if end_time is not None else int(time.time() * 1000)})

    def end_run(self, run_id: str, status: str) -> None:
        """Close the run with ``status`` if it is still RUNNING."""
        self.link.write({"op": "end_run", "run_id": run_id, "status": status, "end_time": int(time.time() * 1000)})


class ResumableMLFlowLogger(MLFlowLogger):
    def __init__(self, *args: Any, link: TrackerLink, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.link = link
        self._mlflow_client = LinkedClient(link)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        flat = {k: _one_line(v) for k, v in _flatten_dict(_convert_params(params)).items()}
        logged = self.experiment.get_run(self.run_id).data.params
        changed = {k: v for k, v in flat.items() if k in logged and logged[k] != v}
        for key, value in changed.items():
            self.experiment.set_tag(self.run_id, f"changed_on_resume.{key}", f"{logged[key]} -> {value}")
        fresh = {k: v for k, v in flat.items() if k not in logged}
        if fresh:
            super().log_hyperparams(fresh)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Left to the seed run, which ends the MLflow run once its numbers are safe (see the module note)."""


def make_logger(exp: Any, seed: int, opts: Any, run_id: str | None, commit: str, link: TrackerLink) -> Any:
    from benchmarks.run.tracking import artifact_location

    tags = {"experiment": exp.name, "seed": str(seed), "model": exp.model, "data": exp.data, "profile": exp.profile,
            "mlflow.source.git.commit": commit.removesuffix("-dirty"), "git_dirty": str(commit.endswith("-dirty")),
            "mlflow.note.content": exp.description or f"{exp.model} on {exp.data}"}
    return ResumableMLFlowLogger(
        experiment_name=opts.mlflow_experiment, run_name=f"{exp.name}/seed{seed}", tracking_uri=link.uri,
        artifact_location=artifact_location(opts.project_dir), tags=tags | opts.tags, run_id=run_id, link=link,
    )


def describe_experiment(client: Any, exp_id: str) -> None:
    """The note the MLflow UI shows on the experiment, set once. Two workers may set it at the same moment:
    a tracking server then refuses the second insert, which leaves the same note in place."""
    from mlflow.exceptions import MlflowException

    if "mlflow.note.content" in client.get_experiment(exp_id).tags:
        return
    try:
        from benchmarks.run.train import EXPERIMENT_NOTE

        client.set_experiment_tag(exp_id, "mlflow.note.content", EXPERIMENT_NOTE)
    except MlflowException:
        if "mlflow.note.content" not in client.get_experiment(exp_id).tags:
            raise


def _one_line(value: Any) -> str:
    """A param as one line: control characters (a vocabulary's end-of-word newline) are shown escaped."""
    text = str(value)
    if any(ch in text for ch in "\n\r\t"):
        text = text.encode("unicode_escape").decode("ascii")
    return text[:PARAM_CHARS]
