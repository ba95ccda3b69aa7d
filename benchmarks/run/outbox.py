"""The outbox: tracking writes a store has not taken yet, kept on disk in order, and sent later.

``<state_dir>/outbox/<run>-<pid>-<id>.jsonl``: a first line naming the store's URI, then one JSON line per write
(``log_batch`` with each value's own timestamp and step, ``set_tag``, ``log_artifact`` of a file hard-linked into
``<same name>.files/``, ``log_dict``, ``set_terminated`` with its end time, ...). The process that writes a file
holds an flock on it; any other process sends only unlocked files of its own store (``flush_outboxes``): what a
dead run left, e.g. the end of a run that finished while the server was down. A last line cut short by a kill
is left out. A write the store refuses (its run was deleted meanwhile) is said and dropped; a store that does
not answer keeps the rest for later.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import uuid
from pathlib import Path
from typing import IO, Any


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


def say(text: str) -> None:
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


def refused(path: Path, op: dict[str, Any], exc: Exception) -> None:
    """A recorded write the server answered no to (e.g. its run was deleted meanwhile): said, and left out."""
    say(f"outbox {path.name}: MLflow refused a {op['op']} for run {op.get('run_id')} "
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
            say(f"outbox: {op['local_path']} is gone; run {run_id} will lack that artifact")
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

        try:
            client = MlflowClient(tracking_uri=uri)
        except Exception as exc:
            if unreachable(exc):
                return 0  # not now: it stays for the next contact
            raise
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
            refused(path, op, exc)
    path.unlink(missing_ok=True)
    _remove_tree(path.with_name(path.name.removesuffix(".jsonl") + ".files"))
    if ops:
        say(f"sent {len(ops)} tracking writes that waited in {path}")
    return len(ops)
