"""File leases: processes racing for keys never share one, dead or frozen holders lose theirs, a live
holder keeps its lease past stale_after by its heartbeat."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from benchmarks.run.leases import SUFFIX, acquire, holders

KEYS = [f"cell{i}.seed{i % 3}" for i in range(20)]
CTX = multiprocessing.get_context("fork")  # the children only touch files, nothing of torch


@pytest.fixture
def spawn() -> Iterator[Callable[..., Any]]:
    """Start child processes that are SIGKILLed on teardown, so a failed assert never leaves one frozen."""
    started: list[Any] = []

    def start(target: Callable[..., None], *args: Any) -> Any:
        proc = CTX.Process(target=target, args=args, daemon=True)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)  # also ends a SIGSTOPped one
        proc.join(10)


def _race(folder: str, order: list[str], barrier: Any, out: Any, done: Any) -> None:
    barrier.wait()
    held = [lease for key in order if (lease := acquire(Path(folder), key, 0.2, 5.0)) is not None]
    out.put([lease.path.name for lease in held])
    done.wait(30)  # hold every lease until all racers have reported, so none is released and retaken
    for lease in held:
        lease.release()


def _foreign_lease(path: Path, age_s: float, host: str = "another-machine", body: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body if body is not None else json.dumps({"host": host, "pid": 1, "token": "theirs"}))
    then = time.time() - age_s
    os.utime(path, (then, then))


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_racing_processes_never_get_the_same_key(tmp_path: Path, stale: bool, spawn: Callable[..., Any]) -> None:
    if stale:  # every key starts held by a dead machine: the racers must also race to break it
        for key in KEYS:
            _foreign_lease(tmp_path / f"{key}{SUFFIX}", age_s=600)
    orders = [KEYS, KEYS[::-1], KEYS[7:] + KEYS[:7]]
    barrier, out, done = CTX.Barrier(len(orders)), CTX.Queue(), CTX.Event()
    procs = [spawn(_race, str(tmp_path), order, barrier, out, done) for order in orders]
    got = [out.get(timeout=60) for _ in procs]
    done.set()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    flat = [name for names in got for name in names]
    assert sorted(flat) == sorted(f"{key}{SUFFIX}" for key in KEYS)  # each key exactly once
    assert not list(tmp_path.iterdir())  # released, and no broken lease left behind


def _hold(folder: str, heartbeat_s: float, ready: Any, conn: Any) -> None:
    lease = acquire(Path(folder), "k", heartbeat_s, 60.0)
    assert lease is not None
    ready.set()
    conn.recv()  # continued after a freeze (or never, when killed): report whether the lease is still ours
    conn.send(lease.held())
    lease.release()
    conn.send("released")


def test_a_sigkilled_holder_on_this_host_is_replaced_at_once(tmp_path: Path, spawn: Callable[..., Any]) -> None:
    ready = CTX.Event()
    parent, child = CTX.Pipe()
    proc = spawn(_hold, str(tmp_path), 0.2, ready, child)
    assert ready.wait(30)
    assert acquire(tmp_path, "k") is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    # No heartbeat can go stale in a billion seconds: only the dead pid on this host explains a takeover.
    lease = acquire(tmp_path, "k", stale_after_s=1e9)
    assert lease is not None
    lease.release()
    assert not (tmp_path / f"k{SUFFIX}").exists()


def test_a_frozen_holder_loses_its_lease_after_stale_after_only(tmp_path: Path, spawn: Callable[..., Any]) -> None:
    """Judged by an injected clock, not by waiting: a frozen holder's lease is held until its last heartbeat is
    stale_after old, and taken just after."""
    ready = CTX.Event()
    parent, child = CTX.Pipe()
    proc = spawn(_hold, str(tmp_path), 0.1, ready, child)
    assert ready.wait(30)
    path = tmp_path / f"k{SUFFIX}"
    started = json.loads(path.read_text())["started"]
    while path.stat().st_mtime - started <= 2.0:  # the event: it has lived past stale_after by its heartbeats
        time.sleep(0.05)
    assert acquire(tmp_path, "k", 0.5, stale_after_s=2.0) is None  # alive and beating: older than 2 s, still held
    os.kill(proc.pid, signal.SIGSTOP)  # alive but silent, as a machine that hangs
    time.sleep(0.3)  # a beat in flight when it froze lands before the last heartbeat is read
    beat = path.stat().st_mtime
    assert acquire(tmp_path, "k", 0.5, stale_after_s=2.0, clock=lambda: beat + 1.9) is None
    lease = acquire(tmp_path, "k", 0.5, stale_after_s=2.0, clock=lambda: beat + 2.1)
    assert lease is not None
    os.kill(proc.pid, signal.SIGCONT)
    parent.send("go")
    assert parent.recv() is False  # the woken holder knows it lost the lease
    assert parent.recv() == "released"
    proc.join(10)
    assert lease.held()  # and its release left the new holder's file alone
    lease.release()


def test_foreign_and_half_written_leases_are_judged_by_their_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / f"k{SUFFIX}"
    _foreign_lease(path, age_s=10)
    assert acquire(tmp_path, "k") is None
    assert holders(tmp_path) == {"k": {"host": "another-machine", "pid": 1, "token": "theirs"}}
    _foreign_lease(path, age_s=200)  # past the default stale_after of 120 s
    assert holders(tmp_path) == {}
    with acquire(tmp_path, "k") as lease:
        content = json.loads(path.read_text())
        assert content["host"] == socket.gethostname() and content["pid"] == os.getpid()
        assert content["token"] == lease.token
    assert not path.exists()
    _foreign_lease(path, age_s=1, body="")  # created, not yet written: a fresh creator is respected
    assert acquire(tmp_path, "k") is None
    _foreign_lease(path, age_s=300, body="{")
    lease = acquire(tmp_path, "k")
    assert lease is not None
    lease.release()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="plain file name"):
        acquire(Path("."), "a/b")
    with pytest.raises(ValueError, match="below stale_after_s"):
        acquire(Path("."), "k", heartbeat_s=10, stale_after_s=5)
