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

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.run import outbox
from benchmarks.run.outbox import Outbox, flush_outboxes, read_ops, refused, say, unreachable

__all__ = ["TrackerLink", "TrackerUnreachable", "flush_outboxes", "read_ops", "retry_window", "unreachable"]

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
        self.uri, self.fence = uri, fence
        self.window_s = retry_window() if window_s is None else window_s
        self.clock, self.sleep = clock, sleep
        self._client = client
        self.outbox = Outbox(outbox_dir, uri, f"{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        self.pending = 0
        self.down_since: float | None = None
        self._last_probe = self._last_said = -1e18
        self.checkpoint_step: int | None = None  # the step of the last checkpoint: a resume redoes the later ones
        self.holding = False  # while True, writes past the window wait in the outbox instead of stopping the run

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
            say(f"MLflow at {self.uri} unreachable, retrying, {max(0.0, self._left()):.0f} s left"
                 + (f" ({self.pending} writes wait in {self.outbox.path})" if self.pending else ""))

    def _up(self) -> None:
        if self.down_since is not None:
            say(f"MLflow at {self.uri} answers again after {self.clock() - self.down_since:.0f} s")
        self.down_since = None

    def give_up(self, hint: str = "") -> TrackerUnreachable:
        waited = self.clock() - self.down_since if self.down_since is not None else 0.0
        return TrackerUnreachable(self.uri, waited, self.pending, self.outbox.path, hint)

    @property
    def client(self) -> Any:
        """The MlflowClient, made on first use (opening a database store already reads it: retried as a read)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = self.retried(MlflowClient, tracking_uri=self.uri)
        return self._client

    # ---- reads ---------------------------------------------------------------------------------------------
    def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(...)``, retried while the server is down, up to the window."""
        return self.retried(getattr(self.client, method), *args, **kwargs)

    def retried(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``fn(...)``, retried while the store does not answer, up to the window; said on stderr."""
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
            outbox.apply(self.client, op)
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
            if self._left() <= 0 and not self.holding:
                raise self.give_up()

    def flush(self) -> bool:
        """Send the outbox in order; True when it is empty."""
        if not self.pending:
            return True
        ops = self.outbox.ops()
        for i, op in enumerate(ops):
            try:
                outbox.apply(self.client, op)
            except Exception as exc:
                if not unreachable(exc):
                    refused(self.outbox.path, op, exc)
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
