"""File leases: one worker at a time on a unit of work, on one machine or many sharing a folder.

A lease is the file ``<dir>/<key>.lease``, created atomically (``O_CREAT | O_EXCL``: exactly one creator
wins, also on NFS v3+) and holding ``{host, pid, token, started, heartbeat}``. While it is held a thread
touches the file every ``heartbeat_s``; its mtime is the latest heartbeat (rewriting the file would race with a
breaker, touching it cannot resurrect a file that was taken away). A lease is stale when its heartbeat is
older than ``stale_after_s``, or when its holder ran on this host and that pid is gone (a SIGKILLed
worker on the same machine is noticed at once). Clocks of machines sharing the folder must agree to well
under ``stale_after_s`` (NTP does).

Breaking a stale lease is a rename to a unique name first, so two breakers cannot both win: only one
rename of the path succeeds, and the winner checks that what it took is still the stale lease it judged
(not a fresh lease created in between, which it puts back). Then it competes for the key like anyone else.

A holder that was frozen (SIGSTOP, a hung machine) past ``stale_after_s`` wakes up without its lease. So a
worker *fences* its writes: before it writes a result, a checkpoint or a tracked value it calls
``lease.check()``, which raises ``LeaseLost`` (one line) once the file is no longer its own, and it stops.

    lease = acquire(Path("leases"), "cell_a.seed0")
    if lease is not None:
        with lease:
            train(before_each_write=lease.check)
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmarks.core.errors import ArchbenchError

SUFFIX = ".lease"
Clock = Callable[[], float]


class LeaseLost(ArchbenchError):
    """This worker's lease was taken over (it was silent past stale_after): another worker does its work now."""


def _read(path: Path) -> tuple[dict[str, Any], float] | None:
    """(content, mtime) of a lease file; content is {} while its creator has not written it yet."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        content = json.loads(text) if text else {}
    except json.JSONDecodeError:
        content = {}  # half-written: judged by its mtime alone
    return (content if isinstance(content, dict) else {}), mtime


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(content: dict[str, Any], mtime: float, stale_after_s: float, clock: Clock = time.time) -> bool:
    """A lease whose heartbeat stopped, or whose holder on this very host has died."""
    if clock() - mtime > stale_after_s:
        return True
    pid = content.get("pid")
    return content.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


class Lease:
    """A held lease; a context manager that releases it (and stops the heartbeat) on exit."""

    def __init__(self, path: Path, token: str, heartbeat_s: float) -> None:
        self.path = path
        self.token = token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True, name=f"lease {path.name}")
        self._thread.start()

    def _beat(self, heartbeat_s: float) -> None:
        while not self._stop.wait(heartbeat_s):
            if not self.held():
                return  # taken by a breaker (this process was frozen past stale_after): never touch theirs
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return  # broken between the check and the touch: the same case

    def held(self) -> bool:
        """Whether the lease file is still ours (False once another worker broke it as stale)."""
        found = _read(self.path)
        return found is not None and found[0].get("token") == self.token

    def check(self, what: str = "anything") -> None:
        """The fence before a write: LeaseLost when another worker has taken this lease over."""
        if not self.held():
            raise LeaseLost(f"lost the lease {self.path} (this worker was silent past its stale limit and another "
                            f"worker took the work over); stopped without writing {what}; the other worker finishes it")

    def release(self) -> None:
        self._stop.set()
        self._thread.join()
        if not self.held():
            return  # broken and re-leased while this worker was frozen: the file is the new holder's, left alone
        grave = _take(self.path)
        if grave is None:
            return
        found = _read(grave)
        if found is not None and found[0].get("token") != self.token:
            _put_back(grave, self.path)  # ours was broken and the key re-leased: leave theirs where it was
        else:
            grave.unlink(missing_ok=True)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _take(path: Path) -> Path | None:
    """Rename ``path`` to a unique name beside it; None when another process moved or deleted it first."""
    grave = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.broken")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return None
    return grave


def _put_back(grave: Path, path: Path) -> bool:
    """Restore a lease taken by mistake, unless a new one already took its place (link never overwrites)."""
    try:
        os.link(grave, path)
        restored = True
    except FileExistsError:
        restored = False  # a newer lease holds the key; the displaced holder sees held() go False and stops
    grave.unlink(missing_ok=True)
    return restored


def acquire(dir: Path, key: str, heartbeat_s: float = 20.0, stale_after_s: float = 120.0,
            clock: Clock = time.time) -> Lease | None:
    """The lease on ``key`` under ``dir``, or None while a live worker holds it (``clock``: the wall clock that
    heartbeats are judged by; tests pass their own)."""
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"lease key {key!r} must be a plain file name")
    if not 0 < heartbeat_s < stale_after_s:
        raise ValueError(f"heartbeat_s ({heartbeat_s}) must be positive and below stale_after_s ({stale_after_s})")
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / f"{key}{SUFFIX}"
    token = uuid.uuid4().hex
    for _ in range(100):  # each round either wins, sees a live holder, or removed a stale lease
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            found = _read(path)
            if found is None:
                continue  # released or broken just now: try again
            content, mtime = found
            if not is_stale(content, mtime, stale_after_s, clock):
                return None
            grave = _take(path)
            if grave is None:
                continue  # another breaker won the rename
            taken = _read(grave)
            if taken is not None and (taken[0].get("token") != content.get("token") or
                                      not is_stale(taken[0], taken[1], stale_after_s, clock)):
                _put_back(grave, path)  # a fresh lease slipped in between our look and the rename
                return None
            grave.unlink(missing_ok=True)
            continue
        now = time.time()
        with os.fdopen(fd, "w") as handle:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "token": token, "started": now,
                       "heartbeat": now}, handle)
        return Lease(path, token, heartbeat_s)
    raise RuntimeError(f"could not settle the lease {path} in 100 rounds; is the folder on a working filesystem?")


def holders(dir: Path, stale_after_s: float = 120.0, clock: Clock = time.time) -> dict[str, dict[str, Any]]:
    """key -> content of every live lease under ``dir`` (for progress messages)."""
    live = {}
    for path in sorted(dir.glob(f"*{SUFFIX}")):
        found = _read(path)
        if found is not None and not is_stale(found[0], found[1], stale_after_s, clock):
            live[path.name.removesuffix(SUFFIX)] = found[0]
    return live
