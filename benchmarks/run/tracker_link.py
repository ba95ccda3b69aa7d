"""The line to the MLflow tracking store, which may go away: the store is not what keeps a run safe.

A run writes its checkpoints and results to disk first; what it sends to MLflow goes through a ``TrackerLink``.
When the server does not answer (refused, timed out, or a 5xx from a server whose own database is down), a
write is kept in an *outbox* on disk (``<state_dir>/outbox/*.jsonl``, one JSON line per write, in order; files
to upload are hard-linked beside it) and training goes on. The link probes the server every few seconds and
sends the outbox as soon as it answers, with the values' own timestamps and steps, so the MLflow run ends up
as if nothing had happened. It says so on stderr, e.g. "MLflow at http://… unreachable, retrying, 40 s left".

The outage is bounded by one window (``ARCHBENCH_TRACKING_RETRY_S``, default 300 s). When the server is
still down at its end, the link raises ``TrackerUnreachable`` (one line); the run keeps its checkpoints and
its outbox, and the next run sends the outbox first: the interrupted run resumes in the same MLflow run, and
a run that ended while the server was down is closed on that next contact, never left RUNNING.

MLflow's own HTTP retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, 7 with backoff factor 2: minutes of silent
waiting per call, and ``MLFLOW_HTTP_REQUEST_TIMEOUT``, 120 s) are turned down for a server, unless the user
set them, so that this window is the one bound on the wait.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from benchmarks.core.errors import ArchbenchError

RETRY_ENV = "ARCHBENCH_TRACKING_RETRY_S"
DEFAULT_RETRY_S = 300.0
PROBE_EVERY_S = 5.0  # how often a link in an outage tries the server again
SAY_EVERY_S = 10.0  # how often it says so
# MLflow's HTTP knobs for a server: no silent retries of its own, and a bounded wait per request.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class TrackerUnreachable(ArchbenchError):
    """The tracking server stayed down for the whole retry window; what it did not get waits in the outbox."""

    def __init__(self, uri: str, waited_s: float, pending: int, outbox: Path | None, hint: str = "") -> None:
        self.uri, self.waited_s, self.pending, self.outbox = uri, waited_s, pending, outbox
        kept = f"; {pending} tracking writes wait in {outbox}" if pending and outbox else ""
        super().__init__(f"MLflow at {uri} unreachable for {waited_s:.0f} s (the retry window, {RETRY_ENV}){kept}"
                         f"{'; ' + hint if hint else ''}")


def retry_window() -> float:
    text = os.environ.get(RETRY_ENV)
    if text is None:
        return DEFAULT_RETRY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ArchbenchError(f"{RETRY_ENV}={text!r}: give the seconds a run waits for its tracking server (e.g. 300)")
    return value


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the store did not answer (as opposed to answering no): a connection or timeout
    error anywhere in its chain (MLflow wraps them in MlflowException), an HTTP 5xx answer, or, for a database
    store, an operational error (its server gone, or a SQLite file locked by a frozen process)."""
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import RestException

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (requests.exceptions.RequestException, ConnectionError, TimeoutError,
                            sqlalchemy.exc.OperationalError)):
            return True
        if isinstance(cur, RestException) and cur.get_http_status_code() >= 500:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _say(text: str) -> None:
    print(f"archbench: {text}", file=sys.stderr, flush=True)


class Outbox:
    """Writes the server has not taken yet, in order, in ``<folder>/<name>.jsonl`` (first line: the store's URI).

    The file is locked (flock) by the process that owns it; other processes flushing outboxes skip it."""

    def __init__(self, folder: Path, uri: str, name: str) -> None:
        self.folder, self.uri = Path(folder), uri
        self.path = self.folder / f"{name}.jsonl"
        self.files = self.folder / f"{name}.files"
        self._handle: IO[str] | None = None

    def _open(self) -> IO[str]:
        if self._handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
            fcntl.flock(handle, fcntl.LOCK_EX)
            if handle.tell() == 0:
                handle.write(json.dumps({"uri": self.uri}) + "\n")
            self._handle = handle
        return self._handle

    def append(self, op: dict[str, Any]) -> None:
        handle = self._open()
        handle.write(json.dumps(op, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    def keep_file(self, src: Path) -> Path:
        """A link (or copy) of ``src`` in the outbox, so a later clean-up of the state cannot lose it."""
        dst = self.files / uuid.uuid4().hex[:8] / Path(src).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            import shutil

            shutil.copyfile(src, dst)
        return dst

    def ops(self) -> list[dict[str, Any]]:
        return read_ops(self.path)

    def rewrite(self, ops: list[dict[str, Any]]) -> None:
        """Keep only ``ops`` (what is left after a partial send)."""
        handle = self._open()
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"uri": self.uri}) + "\n")
        for op in ops:
            handle.write(json.dumps(op, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    def close(self) -> None:
        """Release the file; remove it (and its kept files) when nothing waits in it."""
        if self._handle is None:
            return
        empty = not self.ops()
        if empty:
            self.path.unlink(missing_ok=True)
            _remove_tree(self.files)
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


def read_ops(path: Path) -> list[dict[str, Any]]:
    """The writes in an outbox file; a last line cut short by a kill is left out."""
    if not path.is_file():
        return []
    ops = []
    for line in path.read_text().splitlines()[1:]:
        try:
            op = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(op, dict) and "op" in op:
            ops.append(op)
    return ops


def _refused(path: Path, op: dict[str, Any], exc: Exception) -> None:
    """A recorded write the server answered no to (e.g. its run was deleted meanwhile): said, and left out."""
    _say(f"outbox {path.name}: MLflow refused a {op['op']} for run {op.get('run_id')} "
         f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); left out")


def _remove_tree(folder: Path) -> None:
    import shutil

    if folder.is_dir():
        shutil.rmtree(folder)


def apply(client: Any, op: dict[str, Any]) -> None:
    """Send one recorded write with the real MLflow client."""
    from mlflow.entities import Metric, Param, RunTag

    kind, run_id = op["op"], op.get("run_id")
    if kind == "log_batch":
        client.log_batch(run_id, metrics=[Metric(k, v, t, s) for k, v, t, s in op.get("metrics", [])],
                         params=[Param(k, v) for k, v in op.get("params", [])],
                         tags=[RunTag(k, v) for k, v in op.get("tags", [])])
    elif kind == "set_tag":
        client.set_tag(run_id, op["key"], op["value"])
    elif kind == "set_experiment_tag":
        client.set_experiment_tag(op["experiment_id"], op["key"], op["value"])
    elif kind == "log_artifact":
        if Path(op["local_path"]).exists():
            client.log_artifact(run_id, op["local_path"], op.get("artifact_path"))
        else:
            _say(f"outbox: {op['local_path']} is gone; run {run_id} will lack that artifact")
    elif kind == "log_text":
        client.log_text(run_id, op["text"], op["artifact_file"])
    elif kind == "log_dict":
        client.log_dict(run_id, op["dictionary"], op["artifact_file"])
    elif kind == "set_terminated":
        client.set_terminated(run_id, op["status"], op.get("end_time"))
    elif kind == "end_run":  # close only a run still RUNNING (a resumed or finished one is left as it is)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, op["status"], op.get("end_time"))
    else:
        raise ValueError(f"unknown outbox write {kind!r}")


class TrackerLink:
    """Reads go through with bounded, visible retries; writes go through, or into the outbox while the server
    is down. ``fence`` (a lease check) runs before every write: a worker that lost its lease writes nothing."""

    def __init__(self, uri: str, outbox_dir: Path, name: str, *, fence: Callable[[], None] | None = None,
                 window_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, client: Any = None) -> None:
        from benchmarks.run.tracking import is_server

        if is_server(uri):
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
        if client is None:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=uri)
        self.uri, self.client, self.fence = uri, client, fence
        self.window_s = retry_window() if window_s is None else window_s
        self.clock, self.sleep = clock, sleep
        self.outbox = Outbox(outbox_dir, uri, f"{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        self.pending = 0
        self.down_since: float | None = None
        self._last_probe = self._last_said = -1e18
        self.checkpoint_step: int | None = None  # the step of the last checkpoint: a resume redoes the later ones

    # ---- the outage clock ------------------------------------------------------------------------------
    def _left(self) -> float:
        return self.window_s - (self.clock() - self.down_since) if self.down_since is not None else self.window_s

    def _down(self) -> None:
        now = self.clock()
        if self.down_since is None:
            self.down_since = now
            self._last_probe = now
        if now - self._last_said >= SAY_EVERY_S:
            self._last_said = now
            _say(f"MLflow at {self.uri} unreachable, retrying, {max(0.0, self._left()):.0f} s left"
                 + (f" ({self.pending} writes wait in {self.outbox.path})" if self.pending else ""))

    def _up(self) -> None:
        if self.down_since is not None:
            _say(f"MLflow at {self.uri} answers again after {self.clock() - self.down_since:.0f} s")
        self.down_since = None

    def give_up(self, hint: str = "") -> TrackerUnreachable:
        waited = self.clock() - self.down_since if self.down_since is not None else 0.0
        return TrackerUnreachable(self.uri, waited, self.pending, self.outbox.path, hint)

    # ---- reads ---------------------------------------------------------------------------------------------
    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(...)``, retried while the server is down, up to the window."""
        fn = getattr(self.client, method)
        while True:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if not unreachable(exc):
                    raise
                self._down()
                if self._left() <= 0:
                    raise self.give_up() from None
                self.sleep(min(PROBE_EVERY_S, max(0.1, self._left())))
                continue
            if self.down_since is not None or self.pending:
                self._up()
                self.flush()
            return result

    # ---- writes --------------------------------------------------------------------------------------------
    def write(self, op: dict[str, Any]) -> None:
        if self.fence is not None:
            self.fence()
        if self.pending or self.down_since is not None:
            self._defer(op)
            self._probe()
            return
        try:
            apply(self.client, op)
        except Exception as exc:
            if not unreachable(exc):
                raise
            self._down()
            self._defer(op)

    def _defer(self, op: dict[str, Any]) -> None:
        if op["op"] == "log_artifact":
            op = op | {"local_path": str(self.outbox.keep_file(Path(op["local_path"])))}
        self.outbox.append(op)
        self.pending += 1

    def _probe(self) -> None:
        """In an outage: try the server every PROBE_EVERY_S; past the window, stop."""
        now = self.clock()
        if now - self._last_probe >= PROBE_EVERY_S:
            self._last_probe = now
            if self.flush():
                return
        if self.down_since is not None:
            self._down()
            if self._left() <= 0:
                raise self.give_up()

    def flush(self) -> bool:
        """Send the outbox in order; True when it is empty."""
        if not self.pending:
            return True
        ops = self.outbox.ops()
        for i, op in enumerate(ops):
            try:
                apply(self.client, op)
            except Exception as exc:
                if not unreachable(exc):
                    _refused(self.outbox.path, op, exc)
                    continue
                self.outbox.rewrite(ops[i:])
                self.pending = len(ops) - i
                self._down()
                return False
        self.outbox.rewrite([])
        self.pending = 0
        self._up()
        return True

    def finish(self, hint: str = "") -> None:
        """At a run's end: wait (within the window) until the outbox is sent; TrackerUnreachable if it cannot be."""
        while not self.flush():
            if self._left() <= 0:
                raise self.give_up(hint)
            self.sleep(min(PROBE_EVERY_S, max(0.1, self._left())))

    def drop_after_checkpoint(self) -> None:
        """Before stopping: forget the metric values logged after the last checkpoint, which the resumed run
        logs again (so no step appears twice in the run)."""
        if self.checkpoint_step is None or not self.pending:
            return
        kept = []
        for op in self.outbox.ops():
            if op["op"] == "log_batch" and op.get("metrics"):
                op = op | {"metrics": [m for m in op["metrics"] if m[3] <= self.checkpoint_step]}
                if not op["metrics"] and not op.get("params") and not op.get("tags"):
                    continue
            kept.append(op)
        self.outbox.rewrite(kept)
        self.pending = len(kept)

    def close(self) -> None:
        self.outbox.close()


def flush_outboxes(folder: Path, uri: str, client: Any = None) -> int:
    """Send what earlier runs left in the outboxes under ``folder`` for this store (one try each, no waiting);
    a run that ended while the server was down is closed here. Returns the number of writes sent."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    sent = 0
    for path in sorted(folder.glob("*.jsonl")):
        try:
            handle = open(path, "r+")
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is alive and sends it itself
            first = handle.readline()
            try:
                header = json.loads(first) if first else {}
            except json.JSONDecodeError:
                header = {}
            if header.get("uri") != uri:
                continue
            sent += _send_file(path, handle, uri, client)
        finally:
            handle.close()
    return sent


def _send_file(path: Path, handle: IO[str], uri: str, client: Any) -> int:
    if client is None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
    ops = read_ops(path)
    for i, op in enumerate(ops):
        try:
            apply(client, op)
        except Exception as exc:
            if unreachable(exc):
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps({"uri": uri}) + "\n" + "".join(json.dumps(o, default=str) + "\n" for o in ops[i:]))
                handle.flush()
                return i
            _refused(path, op, exc)
    path.unlink(missing_ok=True)
    _remove_tree(path.with_name(path.name.removesuffix(".jsonl") + ".files"))
    if ops:
        _say(f"sent {len(ops)} tracking writes that waited in {path}")
    return len(ops)
