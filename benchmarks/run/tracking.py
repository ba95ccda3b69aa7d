"""MLflow and Optuna wiring: where runs and studies live, and the provenance every run carries.

Embedded stores (``sqlite:///mlflow.db``, ``sqlite:///optuna.db``, ``mlruns/``) belong to the PROJECT ROOT,
not the current directory: ``dvc exp run --queue`` runs a stage in a temporary copy of the workspace,
``<root>/.dvc/tmp/exps/<...>/``, which DVC deletes afterwards (and DVC_ROOT points at that copy too), so a
store created there would vanish with the runs in it.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TRACKING_ENV = "MLFLOW_TRACKING_URI"
KEY_PACKAGES = ("torch", "lightning", "torchmetrics", "mlflow", "optuna", "numpy", "dvc")
# Where DVC's queue and temp-dir executors put their workspace copies, relative to the repository root.
DVC_EXP_WORKSPACE = (".dvc", "tmp", "exps")
_READY_STORES: set[str] = set()


def project_root(path: str | os.PathLike = ".") -> Path:
    """``path`` resolved, or the real repository root when ``path`` lies in a DVC experiment workspace copy."""
    resolved = Path(path).resolve()
    parts = resolved.parts
    for i in range(len(parts) - len(DVC_EXP_WORKSPACE) + 1):
        if parts[i:i + len(DVC_EXP_WORKSPACE)] == DVC_EXP_WORKSPACE:
            return Path(*parts[:i])
    return resolved


def resolve_uri(uri: str, project_dir: str | os.PathLike = ".") -> str:
    """A relative SQLite or file URI made absolute against the project root; any other URI unchanged.

    ``sqlite:///optuna.db`` is relative (three slashes), ``sqlite:////abs/optuna.db`` absolute.
    """
    root = project_root(project_dir)
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        if path and path != ":memory:" and not path.startswith("/"):
            return f"sqlite:///{root / path}"
        return uri
    if "://" not in uri and not uri.startswith(("file:", "databricks")):
        return str(root / uri) if not os.path.isabs(uri) else uri  # a bare path: MLflow's file store
    return uri


def tracking_uri(project_dir: str | os.PathLike = ".") -> str:
    """An embedded SQLite store in the project root unless MLFLOW_TRACKING_URI names a server or another store."""
    given = os.environ.get(TRACKING_ENV)
    if given:
        return resolve_uri(given, project_dir)
    return f"sqlite:///{project_root(project_dir) / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "databricks"))


def artifact_location(project_dir: str | os.PathLike = ".") -> str | None:
    """``<root>/mlruns`` for an embedded store; None for a server, which stores (and, with
    ``--serve-artifacts``, receives) artifacts itself: a client path would mean nothing on another machine."""
    if is_server(tracking_uri(project_dir)):
        return None
    return (project_root(project_dir) / "mlruns").as_uri()


@contextmanager
def sqlite_creation_lock(uri: str) -> Iterator[None]:
    """An exclusive file lock beside a SQLite database (``<db>.lock``) for the first creation of its schema.

    Two processes opening a fresh database at once both run the migrations and one fails with
    "duplicate column" or "table already exists". Other URIs need no lock (a server migrates once).
    """
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    # Its folder is checked to exist before (check_tracking_uri, check_storage): never made here, as root, for a typo.
    with open(f"{db}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_tracking_uri(uri: str) -> None:
    """Before a run: an embedded store's folder must exist and be writable (a server is checked on contact,
    with the tracker link's bounded retries)."""
    from benchmarks.core.errors import ArchbenchError
    from benchmarks.core.files import check_writable

    if uri.startswith("sqlite:///") and not uri.endswith(":memory:"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise ArchbenchError(f"the MLflow store {uri} ({TRACKING_ENV}) is in a folder that does not exist ({folder}); "
                                 f"create it or fix the path")
        check_writable(folder, "the folder of the MLflow store")


def ensure_tracking_store(uri: str) -> None:
    """Create (migrate) an MLflow SQLite store once, under a file lock; a no-op for servers and when done."""
    if uri in _READY_STORES:
        return
    if uri.startswith("sqlite:///"):
        from mlflow.tracking import MlflowClient

        with sqlite_creation_lock(uri):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # opens the store: runs the migrations
    _READY_STORES.add(uri)


def end_run(run_id: str | None, status: str, uri: str) -> bool:
    """End an MLflow run with ``status`` if it is still RUNNING; True when it was."""
    if not run_id:
        return False
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if client.get_run(run_id).info.status != "RUNNING":
        return False
    client.set_terminated(run_id, status)
    return True


def package_versions() -> dict[str, str]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[f"version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[f"version.{name}"] = "absent"
    return versions


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; MLflow params are flat strings."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def set_status(run_id: str, status: str, uri: str | None = None) -> None:
    """Force a run's final status (FAILED on an exception, KILLED for a pruned trial)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=uri or tracking_uri()).set_terminated(run_id, status)
