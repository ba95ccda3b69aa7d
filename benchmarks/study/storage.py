"""Where a study lives and how its workers share it: the RDB storage with heartbeats, and the counts that
keep a study at exactly ``n_trials`` finished (COMPLETE + PRUNED) trials whatever the number of workers.

- A worker stops (``MaxTrialsCallback``) once the storage holds ``n_trials`` finished trials, and one whose
  remaining trials all run elsewhere waits for them (``more_needed``; it takes over if one fails) instead
  of starting one that would not be needed.
- Two workers may still start trials at the same moment: every trial, once RUNNING, is admitted
  (``admit``) only if ``finished + (RUNNING trials started before it) < n_trials``. Otherwise it waits
  while those may still fail, and fails itself as ``not_needed`` once enough have finished. With one
  agreed order (start time, then number; worker clocks in sync), the last admitted trial saw every
  earlier one, so no more than ``n_trials`` can finish; a failure frees a slot for a waiting or later one.
- Heartbeats (``heartbeat_s``) let any worker fail the trials of a killed one: stale after 4 missed beats.
"""

from __future__ import annotations

import inspect
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.params import settings

STORAGE_ENV = "OPTUNA_STORAGE"


class TrialNotNeeded(Exception):
    """A trial started while the last needed ones were finishing; it fails so the count stays exact."""


def storage_url(params: dict[str, Any], project_dir: Path) -> str:
    from benchmarks.run.tracking import resolve_uri

    return resolve_uri(os.environ.get(STORAGE_ENV) or settings(params)["optuna_storage"], project_dir)


def shown_url(url: str) -> str:
    """The storage URL without its password, for messages and tags."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


class StorageUnreachable(ArchbenchError):
    """The study's database stopped answering while workers ran."""


def storage_down(exc: BaseException) -> BaseException | None:
    """The database error in ``exc``'s cause/context chain when the storage stopped answering (a connection lost
    or refused; Optuna wraps SQLAlchemy's OperationalError in its StorageInternalError), else None."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (OperationalError, InterfaceError)):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


class quiet_storage_loss:
    """While a worker runs: a lost storage is said once, by the worker (StorageUnreachable), not also as the
    tracebacks that Optuna's trial-failure log and its heartbeat thread would print for the same lost connection;
    nor is a trial that another worker failed as stale (the worker says that in one line of its own)."""

    def __enter__(self) -> None:
        import logging
        import threading

        # On the handlers: Optuna logs from child loggers (optuna.study._optimize), which a filter on the
        # "optuna" logger itself would not see.
        self.handlers = [*logging.getLogger("optuna").handlers, *logging.getLogger().handlers]
        for handler in self.handlers:
            handler.addFilter(self._filter)
        self.hook = threading.excepthook
        threading.excepthook = self._thread_hook

    def __exit__(self, *exc: object) -> None:
        import threading

        for handler in self.handlers:
            handler.removeFilter(self._filter)
        threading.excepthook = self.hook

    @staticmethod
    def _filter(record: Any) -> bool:
        from optuna.exceptions import UpdateFinishedTrialError

        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (storage_down(exc) or isinstance(exc, UpdateFinishedTrialError)):
            record.exc_info = None  # the warning line stays; its traceback goes
        return True

    def _thread_hook(self, args: Any) -> None:
        if args.exc_value is not None and storage_down(args.exc_value):
            return  # a heartbeat that could not reach the database: the worker itself reports the loss
        self.hook(args)


def check_storage(url: str) -> None:
    """Before anything is created: a database URL of a kind SQLAlchemy knows, its driver installed, a SQLite file
    in an existing writable folder (never made as a side effect of a typo), a server that answers."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    where = f"the Optuna storage {url!r} ({STORAGE_ENV} or settings.optuna_storage)"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ArchbenchError(f"{where} is not a database URL; use sqlite:///optuna.db or "
                             f"postgresql+psycopg2://user@host/db") from None
    where = f"the Optuna storage {shown_url(url)} ({STORAGE_ENV} or settings.optuna_storage)"
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ArchbenchError(f"{where}: '{parsed.drivername}' is not a database SQLAlchemy knows; Optuna stores "
                             f"studies in sqlite:///, postgresql+psycopg2:// or mysql+pymysql://") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise ArchbenchError(f"{where}: its driver ({exc.name or parsed.drivername}) is not installed; for PostgreSQL "
                             f"write postgresql+psycopg2:// and install it with pip install -e '.[scale]'") from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_file(parsed.database, where)
        return
    engine = create_engine(url, connect_args={"connect_timeout": 10} if parsed.get_backend_name() == "postgresql" else {})
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise ArchbenchError(f"{where} does not answer ({reason}); start the database server or fix the URL") from None
    finally:
        engine.dispose()


def _check_sqlite_file(database: str | None, where: str) -> None:
    from benchmarks.core.files import check_writable

    if not database or database == ":memory:":
        return
    folder = Path(database).parent
    if not folder.is_dir():
        raise ArchbenchError(f"{where}: the folder {folder} does not exist; create it, or fix the path (three slashes "
                             f"for a path in the project, four for an absolute one)")
    check_writable(folder, "the folder of the Optuna storage")


def open_storage(url: str, heartbeat_s: int, on_stale: Any) -> Any:
    import optuna

    from benchmarks.run.tracking import sqlite_creation_lock

    kwargs: dict[str, Any] = {"heartbeat_interval": heartbeat_s, "grace_period": 4 * heartbeat_s}
    # Optuna 4.9 renamed failed_trial_callback; pass whichever this version takes.
    names = inspect.signature(optuna.storages.RDBStorage).parameters
    kwargs["heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in names else "failed_trial_callback"] = on_stale
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # workers wait for SQLite's write lock
    with warnings.catch_warnings(), sqlite_creation_lock(url):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, **kwargs)


def fail_stale(study: Any) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    _fail_heartbeatless(study)


def _fail_heartbeatless(study: Any) -> None:
    """Fail, as stale, RUNNING trials that never recorded a heartbeat and started more than the grace period ago.

    Optuna judges staleness by heartbeats only, so a worker that died (or lost the storage) between creating its
    trial and its first heartbeat would leave that trial RUNNING for good, and the study waiting for it. A live
    trial beats within a moment of its creation, so past the grace period no heartbeat means no worker."""
    from datetime import datetime

    import optuna
    import sqlalchemy.orm
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    backend = getattr(study._storage, "_backend", study._storage)  # Optuna wraps an RDBStorage in a cache
    if not isinstance(backend, optuna.storages.RDBStorage) or backend.heartbeat_interval is None:
        return
    grace = backend.grace_period or 2 * backend.heartbeat_interval
    old = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
           if t.datetime_start is not None and (datetime.now() - t.datetime_start).total_seconds() > grace]
    if not old:
        return
    with sqlalchemy.orm.Session(backend.engine) as session:
        beating = {tid for (tid,) in session.query(models.TrialHeartbeatModel.trial_id)
                   .filter(models.TrialHeartbeatModel.trial_id.in_([t._trial_id for t in old]))}
    # The callback the storage was opened with (its name changed in Optuna 4.9), as fail_stale_trials calls it.
    get_callback = getattr(backend, "get_heartbeat_stale_trial_callback", None) or backend.get_failed_trial_callback
    callback = get_callback()
    for trial in old:
        if trial._trial_id in beating:
            continue
        try:
            failed = study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed (or its worker finished) it first
        if failed and callback is not None:
            callback(study, study._storage.get_trial(trial._trial_id))


def counts(study: Any) -> tuple[int, list[Any]]:
    """(finished = COMPLETE + PRUNED, RUNNING trials), read from the storage."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return (sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials),
            [t for t in trials if t.state == TrialState.RUNNING])


def start_order(trial: Any) -> tuple[float, int]:
    return (trial.datetime_start.timestamp() if trial.datetime_start else math.inf, trial.number)


def admit(study: Any, number: int, target: int, poll_s: float) -> bool:
    """True when this RUNNING trial is needed; waits while earlier running trials may still fail."""
    while True:
        finished, running = counts(study)
        if finished >= target:
            return False
        me = next((t for t in running if t.number == number), None)
        if me is None:  # failed as stale under us: its result could not be told anyway
            return False
        ahead = [t for t in running if start_order(t) < start_order(me)]
        if finished + len(ahead) < target:
            return True
        fail_stale(study)
        time.sleep(poll_s)


def more_needed(study: Any, target: int, poll_s: float) -> bool:
    """True when this worker should start trials; False once the study is complete (``target`` finished, none
    running). In between it waits, failing the stale trials of dead workers, which frees their slots."""
    while True:
        fail_stale(study)
        finished, running = counts(study)
        if finished >= target and not running:
            _fail_waiting(study)
            return False
        if finished + len(running) < target:
            return True
        time.sleep(poll_s)


def _fail_waiting(study: Any) -> None:
    """Fail the retries still WAITING in a complete study: a dead worker's trial can be failed as stale (and a
    retry enqueued, while it looked needed) after the live workers already filled the study; left WAITING it
    would be picked up by whoever continues the study, and no trial may stay unfinished."""
    import optuna
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first
