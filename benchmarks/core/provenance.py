"""Where a number came from: the code that made it, the commit, the machine.

Two identities of the code are kept apart on purpose:
- ``code_hash()`` hashes the sources a trained number depends on (``code_files``: one list, also behind DVC's
  stage dependencies). It decides whether a checkpoint may be resumed and whether a finished seed is still
  current: a commit that touches only the README, another model, or how runs are tracked changes nothing here.
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

# The one list of what a trained number depends on: its model's and its datamodule's modules with every project
# module they import, every other source file beside them (data tables, kernels: anything they load), and the
# part of the run path that decides numbers (seeding, the Trainer, checkpoint choice, divergence; see
# benchmarks/run/fit.py). Tracking, leases, state folders and result files carry numbers without changing them,
# so mending them leaves finished seeds current. ``archbench code-hash`` writes this list per experiment and
# claim for DVC (results/code/), so a stage reruns exactly when its hash changes.
PACKAGES = ("lightning_modules", "datamodules")
NUMERIC_RUN_PATH = ("benchmarks/run/build.py", "benchmarks/run/callbacks.py", "benchmarks/run/fit.py",
                    "benchmarks/run/guards.py")
# Files DVC writes while a pipeline runs; a change there is the pipeline's own bookkeeping, not the code's.
PIPELINE_FILES = ("dvc.lock",)
ROOT = Path(__file__).resolve().parents[2]
_NOT_SOURCE = (".pyc", ".pyo", ".so", ".o")


def code_files(exp: Any = None) -> list[Path]:
    """The sources a trained number of ``exp`` depends on (all models and datamodules without one), sorted."""
    if exp is None:
        found = {p for package in PACKAGES for p in (ROOT / package).rglob("*") if _is_source(p)}
    else:
        from datamodules import DATAMODULES
        from lightning_modules import MODELS

        modules = _closure([MODELS[exp.model].__module__, DATAMODULES[exp.data].__module__])
        found = modules | {p for folder in {m.parent for m in modules} for p in folder.iterdir() if _is_source(p)
                           and p.suffix != ".py"}
    return sorted(found) + [ROOT / name for name in NUMERIC_RUN_PATH]


def code_hash(exp: Any = None) -> str:
    """sha256 (12 hex digits) over ``code_files(exp)``, paths and contents, in a fixed order."""
    return _hash_files(tuple(code_files(exp)))


def _is_source(path: Path) -> bool:
    return path.is_file() and "__pycache__" not in path.parts and path.suffix not in _NOT_SOURCE


@functools.cache
def _hash_files(paths: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _closure(modules: list[str]) -> set[Path]:
    """The files of these modules and of every module of the packages they import, transitively (read, not run)."""
    import ast

    seen: set[Path] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in PACKAGES:  # the registries: they import every model, but no model's numbers depend on them
            continue
        path = _module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                if name.split(".")[0] in PACKAGES:
                    todo.append(name)
                    # `from pkg import mod` names a module too
                    if isinstance(node, ast.ImportFrom):
                        todo.extend(f"{name}.{a.name}" for a in node.names)
                    parent = name.rsplit(".", 1)[0]
                    if "." in name:
                        todo.append(parent)  # a package's __init__ runs on import
    return seen


def _git(project_dir: str | os.PathLike, *args: str, strip: bool = True) -> str:
    out = subprocess.run(["git", *args], cwd=project_dir, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return ""
    return out.stdout.strip() if strip else out.stdout


def git_commit(project_dir: str | os.PathLike = ".") -> str:
    """HEAD's commit, with '-dirty' when a tracked file other than DVC's lock differs from it."""
    commit = _git(project_dir, "rev-parse", "HEAD") or "unknown"
    if commit == "unknown":
        return commit
    # Porcelain lines are "XY path": the status columns may start with a space, so the output is not stripped
    # (a stripped " M dvc.lock" would read as "vc.lock" and mark the run dirty).
    status = _git(project_dir, "status", "--porcelain", "--untracked-files=no", strip=False)
    changed = [line[3:] for line in status.splitlines() if line.strip()]
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
    # The CPU's model and the vector ISA torch dispatches to: MKL, oneDNN and ATen pick kernels by it (AVX2 or
    # AVX-512), so two CPUs round differently and a seed's numbers agree across them only statistically.
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(), "cpu_model": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "threads": threads, "gpu": gpu, "python": platform.python_version(), "torch": torch.__version__,
            # On a GPU the LSTM / Elman layers run cuDNN's kernels, a library versioned apart from torch.
            "cudnn": torch.backends.cudnn.version() if gpu else None}


def cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), or None where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
