"""Where a number came from: the code that made it, the commit, the machine.

Two identities of the code are kept apart on purpose:
- ``code_hash()`` hashes the Python sources that training runs through. It decides whether a checkpoint may be
  resumed and whether a finished seed is still current: a commit that touches only the README or params of
  another experiment changes nothing here.
- ``git_commit()`` names the commit for people. ``dvc.lock`` is left out of its "-dirty" check, because DVC
  itself rewrites that file between the stages of one ``dvc repro``; the lock's state is recorded beside it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

# The code a trained number depends on: the models, the data, and the training path of the suite. The
# report, tuning and claim logic read numbers but never change them, so editing them resumes runs as before.
PACKAGES = ("lightning_modules", "datamodules")
TRAINING_PATH = ("benchmarks/build.py", "benchmarks/callbacks.py", "benchmarks/guards.py", "benchmarks/params.py",
                 "benchmarks/train.py", "benchmarks/run_state.py", "benchmarks/validate.py")
# Files DVC writes while a pipeline runs; a change there is the pipeline's own bookkeeping, not the code's.
PIPELINE_FILES = ("dvc.lock",)


@functools.cache
def code_hash() -> str:
    """sha256 (12 hex digits) over the sources a trained number depends on, in a fixed order."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    paths = [p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))]
    for path in paths + [root / name for name in TRAINING_PATH]:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _git(project_dir: str | os.PathLike, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


def git_commit(project_dir: str | os.PathLike = ".") -> str:
    """HEAD's commit, with '-dirty' when a tracked file other than DVC's lock differs from it."""
    commit = _git(project_dir, "rev-parse", "HEAD") or "unknown"
    if commit == "unknown":
        return commit
    changed = [line[3:] for line in _git(project_dir, "status", "--porcelain", "--untracked-files=no").splitlines()]
    dirty = [p for p in changed if Path(p.strip('"')).name not in PIPELINE_FILES]
    return f"{commit}-dirty" if dirty else commit


def lock_state(project_dir: str | os.PathLike = ".") -> str:
    """'clean' when dvc.lock matches HEAD, else 'rewritten by dvc' (a pipeline is running or ran)."""
    changed = _git(project_dir, "status", "--porcelain", "--untracked-files=no", "--", *PIPELINE_FILES)
    return "rewritten by dvc" if changed else "clean"


def machine(threads: int) -> dict[str, Any]:
    """What ran it: host, CPU, cores, torch threads and the accelerator, for the ledger and the report."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": threads, "gpu": gpu, "python": platform.python_version(), "torch": torch.__version__}
