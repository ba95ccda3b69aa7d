"""The tracker link on its own, with an injected clock and a store that refuses connections on demand: writes
wait in an outbox and arrive in order with their own timestamps, the wait is bounded and said, what the next
run finds is sent on its first contact, and a server's "no" is not taken for an outage."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException, RestException

from benchmarks.run.resumable_logger import LinkedClient
from benchmarks.run.tracker_link import TrackerLink, TrackerUnreachable, flush_outboxes, read_ops, unreachable

pytestmark = pytest.mark.faults


def _refused() -> MlflowException:
    """What MLflow raises for a dead server: its own exception, the connection error in the chain."""
    try:
        raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")
    except requests.exceptions.ConnectionError as exc:
        try:
            raise MlflowException(f"API request to http://127.0.0.1:1/api failed with exception {exc}")
        except MlflowException as wrapped:
            return wrapped


class Store:
    """A stand-in MlflowClient that records what it was sent and can be taken down."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[tuple[str, Any]] = []
        self.status: dict[str, str] = {}

    def _call(self, name: str, value: Any) -> None:
        if self.down:
            raise _refused()
        self.sent.append((name, value))

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        self._call("log_batch", [(m.key, m.value, m.timestamp, m.step) for m in metrics])

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._call("set_tag", (key, value))

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        self._call("set_terminated", (status, end_time))
        self.status[run_id] = str(status)

    def get_run(self, run_id: str) -> str:
        self._call("get_run", run_id)
        return run_id


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _link(tmp_path: Path, store: Store, clock: Clock, window_s: float = 40.0) -> TrackerLink:
    return TrackerLink("http://tracker.test:5000", tmp_path / "outbox", "exp.seed0", window_s=window_s, clock=clock,
                       sleep=clock.sleep, client=store)


def _metric(step: int, ts: int) -> Metric:
    return Metric("val/loss", 1.0 / (step + 1), ts, step)


def test_writes_wait_in_the_outbox_and_arrive_in_order_when_the_server_answers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, clock = Store(), Clock()
    client = LinkedClient(_link(tmp_path, store, clock))
    client.log_batch("r", metrics=[_metric(0, 111)])
    store.down = True
    client.log_batch("r", metrics=[_metric(1, 222)])
    assert "MLflow at http://tracker.test:5000 unreachable, retrying, 40 s left" in capsys.readouterr().err
    client.set_tag("r", "stopped_by", "max_epochs")
    clock.now += 2  # a probe is not due yet: the next write waits too, nothing is tried
    client.log_batch("r", metrics=[_metric(2, 333)])
    assert len(store.sent) == 1 and client.link.pending == 3
    store.down = False
    clock.now += 10
    client.log_batch("r", metrics=[_metric(3, 444)])
    assert "answers again after 12 s" in capsys.readouterr().err
    assert store.sent == [("log_batch", [("val/loss", 1.0, 111, 0)]), ("log_batch", [("val/loss", 0.5, 222, 1)]),
                          ("set_tag", ("stopped_by", "max_epochs")), ("log_batch", [("val/loss", 1 / 3, 333, 2)]),
                          ("log_batch", [("val/loss", 0.25, 444, 3)])]  # in order, their own timestamps
    client.link.close()
    assert not list((tmp_path / "outbox").iterdir())  # nothing waits: nothing left behind


def test_the_wait_is_bounded_by_the_window_and_the_outbox_is_kept(tmp_path: Path) -> None:
    store, clock = Store(), Clock()
    link = _link(tmp_path, store, clock, window_s=40)
    client = LinkedClient(link)
    store.down = True
    client.log_batch("r", metrics=[_metric(0, 1)])
    clock.now += 41
    with pytest.raises(TrackerUnreachable) as caught:
        client.log_batch("r", metrics=[_metric(1, 2)])
    text = str(caught.value)
    assert "unreachable for 41 s" in text and "ARCHBENCH_TRACKING_RETRY_S" in text and "\n" not in text
    link.close()
    (kept,) = (tmp_path / "outbox").glob("*.jsonl")
    assert [op["metrics"][0][3] for op in read_ops(kept)] == [0, 1]


def test_values_after_the_last_checkpoint_are_dropped_before_a_stop(tmp_path: Path) -> None:
    """The resumed run logs them again from the checkpoint: kept, they would appear twice."""
    store, clock = Store(), Clock()
    link = _link(tmp_path, store, clock)
    store.down = True
    for step in range(6):
        LinkedClient(link).log_batch("r", metrics=[_metric(step, step)])
    LinkedClient(link).set_terminated("r", "KILLED")
    link.checkpoint_step = 3
    link.drop_after_checkpoint()
    ops = link.outbox.ops()
    assert [op["metrics"][0][3] for op in ops if op["op"] == "log_batch"] == [0, 1, 2, 3]
    assert ops[-1]["op"] == "set_terminated"


def test_reads_are_retried_within_the_window_then_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, clock = Store(), Clock()
    link = _link(tmp_path, store, clock, window_s=12)
    store.down = True
    with pytest.raises(TrackerUnreachable):
        LinkedClient(link).get_run("r")
    assert clock.now - 1000.0 == pytest.approx(12, abs=5.01)  # it waited the window (by its clock), no more
    assert capsys.readouterr().err.count("unreachable, retrying") >= 1


def test_the_next_contact_sends_what_a_dead_run_left_and_closes_its_run(tmp_path: Path) -> None:
    store, clock = Store(), Clock()
    dead = _link(tmp_path, store, clock)
    store.down = True
    LinkedClient(dead).log_batch("r1", metrics=[_metric(0, 5)])
    LinkedClient(dead).set_terminated("r1", "FINISHED", end_time=777)
    alive = _link(tmp_path, store, clock)
    LinkedClient(alive).log_batch("r2", metrics=[_metric(0, 6)])  # another run, also waiting, still alive
    dead.outbox._handle.close()  # the process died: its lock went with it
    dead.outbox._handle = None
    store.down = False
    assert flush_outboxes(tmp_path / "outbox", "http://tracker.test:5000", client=store) == 2
    assert store.status == {"r1": "FINISHED"} and ("set_terminated", ("FINISHED", 777)) in store.sent
    assert [p.name for p in (tmp_path / "outbox").glob("*.jsonl")] == [alive.outbox.path.name]  # locked: its own
    assert flush_outboxes(tmp_path / "outbox", "http://another:5000", client=store) == 0  # another store's: untouched
    alive.flush()
    alive.close()


def test_a_refused_write_in_an_outbox_is_said_and_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, clock = Store(), Clock()
    link = _link(tmp_path, store, clock)
    store.down = True
    LinkedClient(link).log_batch("r", metrics=[_metric(0, 1)])
    LinkedClient(link).set_tag("gone", "k", "v")
    link.outbox._handle.close()
    link.outbox._handle = None
    store.down = False
    original = store.set_tag

    def refuse(run_id: str, key: str, value: str) -> None:
        raise RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"Run '{run_id}' not found"})

    store.set_tag = refuse  # type: ignore[method-assign]
    flush_outboxes(tmp_path / "outbox", "http://tracker.test:5000", client=store)
    store.set_tag = original  # type: ignore[method-assign]
    assert "refused a set_tag for run gone" in capsys.readouterr().err
    assert store.sent == [("log_batch", [("val/loss", 1.0, 1, 0)])]
    assert not list((tmp_path / "outbox").glob("*.jsonl"))


def test_only_a_silent_or_failing_server_is_an_outage() -> None:
    assert unreachable(_refused())
    assert unreachable(RestException({"error_code": "INTERNAL_ERROR", "message": "database is down"}))
    assert not unreachable(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad key"}))
    assert not unreachable(MlflowException("Changing param values is not allowed"))


def test_a_locked_outbox_is_not_sent_by_another_process(tmp_path: Path) -> None:
    store, clock = Store(), Clock()
    link = _link(tmp_path, store, clock)
    store.down = True
    LinkedClient(link).log_batch("r", metrics=[_metric(0, 1)])
    store.down = False
    with open(link.outbox.path) as other:  # another open file: flock sees a second holder
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert flush_outboxes(tmp_path / "outbox", "http://tracker.test:5000", client=store) == 0
    assert link.flush() and store.sent
    link.close()
