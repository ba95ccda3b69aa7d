"""A tracker outage inside whole runs, without a server: the store's answers are taken away at the one place the
link sends through (``outbox.apply``), so these run in every CI job. The real-server versions are in
test_fault_tracker_server.py."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import requests
from mlflow.exceptions import MlflowException

from benchmarks.cli import main
from benchmarks.run import outbox, tracker_link
from tests.conftest import mlflow_client, mlflow_runs, tiny_params, write_params

pytestmark = pytest.mark.faults


def _refused() -> MlflowException:
    try:
        raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")
    except requests.exceptions.ConnectionError as exc:
        try:
            raise MlflowException(f"API request failed with exception {exc}")
        except MlflowException as wrapped:
            return wrapped


class Outage:
    """Takes the store away (every write the link sends fails as a refused connection) while ``down`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = False
        real: Callable[[Any, dict[str, Any]], None] = outbox.apply

        def apply(client: Any, op: dict[str, Any]) -> None:
            if self.down:
                raise _refused()
            real(client, op)

        monkeypatch.setattr(outbox, "apply", apply)
        monkeypatch.setattr(tracker_link, "PROBE_EVERY_S", 0.0)  # probe at every write: a short test


class DownDuring(pl.Callback):
    def __init__(self, outage: Outage, first: int, last: int) -> None:
        self.outage, self.first, self.last = outage, first, last

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.outage.down = self.first <= trainer.current_epoch <= self.last


def _hello(project: Path, epochs: int) -> None:
    params = tiny_params()
    params["experiments"]["hello_lstm"] |= {"seeds": [0], "trainer": {"max_epochs": epochs}}
    write_params(project / "params.yaml", params)


@pytest.mark.slow
def test_an_outage_in_the_middle_of_a_run_is_caught_up(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.core.params import experiment_from_params, load_params
    from benchmarks.run.train import run_seed
    from tests.conftest import run_options

    _hello(project, epochs=4)
    outage = Outage(monkeypatch)
    exp = experiment_from_params(load_params(), "hello_lstm")
    result = run_seed(exp, 0, run_options(project, extra_callbacks=[DownDuring(outage, 1, 2)]))
    err = capsys.readouterr().err
    assert "unreachable, retrying" in err and "answers again" in err
    (run,) = mlflow_runs(project)
    assert run.info.status == "FINISHED" and run.info.run_id == result["run_id"]
    steps = [m.step for m in mlflow_client(project).get_metric_history(run.info.run_id, "val/loss")]
    assert len(steps) == len(set(steps)) == 4  # every epoch once, the two in the outage too
    assert not list((project / ".archbench" / "outbox").glob("*.jsonl"))


@pytest.mark.slow
def test_a_run_that_ends_in_an_outage_is_closed_on_the_next_contact(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """New case: the server goes away as the run ends (its numbers are safe on disk); the run is not left
    RUNNING: the next run of another experiment sends what waited and closes it FINISHED."""
    _hello(project, epochs=2)
    outage = Outage(monkeypatch)
    monkeypatch.setenv("ARCHBENCH_TRACKING_RETRY_S", "0")
    import benchmarks.run.seed_run as seed_run

    real_publish = seed_run.SeedRun.publish

    def publish_then_down(self: Any, done: dict[str, Any]) -> None:
        real_publish(self, done)
        outage.down = True  # the server goes away after the results are on disk

    monkeypatch.setattr(seed_run.SeedRun, "publish", publish_then_down)
    assert main(["train", "hello_lstm", "--no-progress"]) == 2
    err = re.sub(r"--- Logging error ---.*?\nArguments: [^\n]*\n", "", capsys.readouterr().err, flags=re.S)
    (line,) = [x for x in err.splitlines() if x.startswith("archbench: error:")]
    assert "unreachable" in line and "the results are safe on disk" in line, line
    assert (project / "results" / "hello_lstm" / "seeds" / "seed_0" / "result.json").is_file()
    (run,) = mlflow_runs(project)
    assert run.info.status == "RUNNING"  # for now: the server never heard it end
    monkeypatch.setattr(seed_run.SeedRun, "publish", real_publish)
    outage.down = False
    assert main(["train", "hello_elman", "--seed", "0", "--no-progress"]) == 0  # another experiment's run
    closed = mlflow_client(project).get_run(run.info.run_id)
    assert closed.info.status == "FINISHED" and closed.data.tags["stopped_by"] == "max_epochs"
    assert {"best.ckpt", "last.ckpt"} <= {Path(a.path).name for a in
                                          mlflow_client(project).list_artifacts(run.info.run_id, "checkpoints")}
    assert not list((project / ".archbench" / "outbox").glob("*.jsonl"))


def test_a_kill_in_the_middle_of_an_outbox_line_loses_only_that_line(tmp_path: Path) -> None:
    """New case: the last line of an outbox cut short by a kill is left out; the rest is sent."""
    from tests.faults.test_fault_tracker_link import Clock, Store, _link, _metric
    from benchmarks.run.resumable_logger import LinkedClient

    store, clock = Store(), Clock()
    link = _link(tmp_path, store, clock)
    store.down = True
    for step in range(3):
        LinkedClient(link).log_batch("r", metrics=[_metric(step, step)])
    link.outbox._handle.write('{"op": "log_batch", "run_id": "r", "metr')  # the kill, mid-line
    link.outbox._handle.flush()
    link.outbox._handle.close()
    link.outbox._handle = None
    store.down = False
    assert tracker_link.flush_outboxes(tmp_path / "outbox", "http://tracker.test:5000", client=store) == 3
    assert [v[0][3] for _, v in store.sent] == [0, 1, 2]


@pytest.mark.slow
def test_a_killed_report_build_leaves_the_previous_report(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """New case: a report killed while it builds (Ctrl-C, a crash) leaves the previous one whole, and no build
    folder behind."""
    import benchmarks.report.site.build as build

    _hello(project, epochs=1)
    assert main(["train", "hello_lstm", "--no-progress"]) == 0 and main(["report"]) == 0
    report = project / "results" / "report"
    before = {p.relative_to(report): p.read_bytes() for p in report.rglob("*") if p.is_file()}
    real = build.experiment_page

    def killed(*args: Any, **kwargs: Any) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "experiment_page", killed)
    with pytest.raises(KeyboardInterrupt):
        main(["report"])
    monkeypatch.setattr(build, "experiment_page", real)
    assert {p.relative_to(report): p.read_bytes() for p in report.rglob("*") if p.is_file()} == before
    assert not list((project / "results").glob(".report*"))
    assert json.loads((report / "leaderboard.json").read_text())["hello_lstm"]["seeds"] == [0]
