"""Provenance a stranger can read: no path of the machine that published it in the ledger.

A ledger record is read on other machines, where ``/tmp/lr5/mlflow.db`` or ``/work/shared/datasets/...``
mean nothing (and say something about the publisher's machine). ``portable`` rewrites every string value that
is an absolute filesystem path, or an embedded store URI holding one:

- a SQLite tracking store -> ``sqlite (project mlflow.db)`` when it lies in the project, else ``sqlite (mlflow.db)``;
- a path inside the project -> the path relative to it (``results/fashion_classifier/seeds/seed_0/best.ckpt``);
- any other path (a data dir, a system package's files) -> its last two parts after ``.../``
  (``.../multi30k/train.de.gz``, ``.../dict/american-english``): the data set's name and file, whose content the
  record identifies by its hash (``data_hash``).

URLs (``https://...``, a tracking server) are kept. ``python -m benchmarks.core.portable ledger/`` rewrites
existing ledger files in place; ``archbench publish`` writes new ones through ``portable``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path, PurePosixPath
from typing import Any

_STORES = {"sqlite": "sqlite:///", "file": "file://"}  # sqlite:////abs/x.db (sqlite:///x.db is relative), file:///abs
_WINDOWS = re.compile(r"^[A-Za-z]:[\\/]")


def _store(value: str) -> tuple[str | None, str]:
    """(the store kind, the path in it) of a local store URI; (None, value) for anything else."""
    for kind, prefix in _STORES.items():
        if value.startswith(prefix):
            return kind, value.removeprefix(prefix)
    return None, value


def is_absolute_path(value: str) -> bool:
    """True for a string that names a file by an absolute path (or a local store URI holding one)."""
    text = _store(value)[1]
    return text.startswith(("/", "~")) or bool(_WINDOWS.match(text))


def portable_path(path: str, root: Path) -> str:
    resolved = Path(path).expanduser()
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        parts = PurePosixPath(resolved.as_posix()).parts[1:]
        return ".../" + "/".join(parts[-2:]) if parts else "..."


def portable_value(value: str, root: Path) -> str:
    if not is_absolute_path(value):
        return value
    kind, path = _store(value)
    if kind == "sqlite":
        db = Path(path)
        inside = db.is_relative_to(root)
        return f"sqlite ({'project ' if inside else ''}{portable_path(path, root) if inside else db.name})"
    if kind:
        return f"{kind} ({portable_path(path, root)})"
    return portable_path(value, root)


def portable(tree: Any, root: Path) -> Any:
    """``tree`` (a JSON value) with every absolute path rewritten (see the module note)."""
    if isinstance(tree, dict):
        return {k: portable(v, root) for k, v in tree.items()}
    if isinstance(tree, list):
        return [portable(v, root) for v in tree]
    if isinstance(tree, str):
        return portable_value(tree, root)
    return tree


def absolute_paths(tree: Any, where: str = "") -> list[str]:
    """``where: value`` for every string in ``tree`` that is an absolute path."""
    if isinstance(tree, dict):
        return [hit for k, v in tree.items() for hit in absolute_paths(v, f"{where}.{k}")]
    if isinstance(tree, list):
        return [hit for i, v in enumerate(tree) for hit in absolute_paths(v, f"{where}[{i}]")]
    return [f"{where}: {tree}"] if isinstance(tree, str) and is_absolute_path(tree) else []


def rewrite_ledger(ledger: Path, root: Path) -> list[Path]:
    """Rewrite every ledger JSON under ``ledger`` that holds an absolute path; the files changed."""
    changed = []
    for path in sorted(ledger.rglob("*.json")):
        data = json.loads(path.read_text())
        if absolute_paths(data):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(portable(data, root), indent=2, sort_keys=True, default=str) + "\n")
            tmp.replace(path)
            changed.append(path)
    return changed


def main(argv: list[str]) -> int:
    ledger = Path(argv[0] if argv else "ledger").resolve()
    for path in rewrite_ledger(ledger, ledger.parent):
        print(f"rewrote {path.relative_to(ledger.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
