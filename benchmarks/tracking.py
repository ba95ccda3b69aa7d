"""MLflow wiring: where runs go, and the provenance every run carries (commit, versions, data hash)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path
from typing import Any

TRACKING_ENV = "MLFLOW_TRACKING_URI"
KEY_PACKAGES = ("torch", "lightning", "torchmetrics", "mlflow", "optuna", "numpy", "dvc")


def tracking_uri(project_dir: str | os.PathLike = ".") -> str:
    """An embedded SQLite store in the project unless MLFLOW_TRACKING_URI names a server or another store."""
    return os.environ.get(TRACKING_ENV) or f"sqlite:///{Path(project_dir).resolve() / 'mlflow.db'}"


def artifact_location(project_dir: str | os.PathLike = ".") -> str | None:
    # Only meaningful for the embedded store; a tracking server decides its own artifact root.
    if os.environ.get(TRACKING_ENV):
        return None
    return (Path(project_dir).resolve() / "mlruns").as_uri()


def git_commit(project_dir: str | os.PathLike = ".") -> str:
    """HEAD's commit, with '-dirty' when tracked files differ, so a number can be traced to its code."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}-dirty" if dirty and commit != "unknown" else commit


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
