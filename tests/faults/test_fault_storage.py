"""A study's storage that stops answering, in-process: its loss is recognised by type through Optuna's wrapping,
and said once (Optuna's own logs and its heartbeat thread keep their lines but not their tracebacks)."""

from __future__ import annotations

import io
import logging
import threading

import optuna
import pytest
from sqlalchemy.exc import DataError, OperationalError

from benchmarks.study.storage import quiet_storage_loss, storage_down

pytestmark = pytest.mark.faults


def _lost() -> optuna.exceptions.StorageInternalError:
    """As Optuna raises it when PostgreSQL is gone: its StorageInternalError over SQLAlchemy's OperationalError."""
    try:
        try:
            raise OperationalError("UPDATE trials ...", {}, Exception("server closed the connection unexpectedly"))
        except OperationalError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc
    except optuna.exceptions.StorageInternalError as wrapped:
        return wrapped


def test_a_lost_connection_is_told_from_bad_data_by_type() -> None:
    assert isinstance(storage_down(_lost()), OperationalError)
    try:
        try:
            raise DataError("INSERT ...", {}, Exception("value too long"))
        except DataError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc
    except optuna.exceptions.StorageInternalError as bad_data:
        assert storage_down(bad_data) is None  # invalid data is a bug to show, not an outage
    assert storage_down(ValueError("Cannot tell a FAIL trial.")) is None


def test_optuna_logs_keep_their_line_but_not_the_traceback_of_a_lost_trial() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("optuna")
    logger.addHandler(handler)
    try:
        with quiet_storage_loss():
            for exc in (_lost(), optuna.exceptions.UpdateFinishedTrialError("Trial#0 has already finished")):
                logging.getLogger("optuna.study._optimize").warning("Trial 0 failed", exc_info=exc)
            logging.getLogger("optuna.study._optimize").warning("Trial 1 failed", exc_info=RuntimeError("a bug"))
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.count("Trial 0 failed") == 2 and "Trial 1 failed\nRuntimeError: a bug" in text
    assert "StorageInternalError" not in text and "UpdateFinishedTrialError" not in text


def test_a_heartbeat_thread_that_loses_the_database_is_left_to_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: reported.append(args.exc_value))

    def beat(exc: BaseException) -> None:
        raise exc

    with quiet_storage_loss():
        for exc in (_lost(), RuntimeError("a bug in a thread")):
            thread = threading.Thread(target=beat, args=(exc,))
            thread.start()
            thread.join()
    assert [type(e).__name__ for e in reported] == ["RuntimeError"]  # only what is not the lost database
