"""The suite's rooms and the arrows between them: `benchmarks/` holds only the CLI entry and its rooms, and a
room imports only from rooms below it (core < run < study, claim < report < tools < the CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
# Lower rooms first; study and claim stand side by side and never import each other, and so do report and use.
LEVELS = {"core": 0, "run": 1, "study": 2, "claim": 2, "report": 3, "use": 3, "tools": 4}


def _imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [(n, node.lineno) for n in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return found


def test_benchmarks_is_rooms_and_the_cli_entry() -> None:
    loose = sorted(p.name for p in BENCH.glob("*.py") if p.name not in ("__init__.py", "cli.py", "commands.py"))
    assert not loose, f"files in benchmarks/ outside a room: {loose}"
    rooms = sorted(p.name for p in BENCH.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert set(rooms) <= set(LEVELS), f"rooms without a level in this test: {sorted(set(rooms) - set(LEVELS))}"


def test_no_room_imports_a_room_above_it() -> None:
    arrows_up = []
    for path in sorted(BENCH.rglob("*.py")):
        rel = path.relative_to(BENCH)
        if len(rel.parts) < 2:
            continue  # the CLI entry and its handlers sit above every room
        room = rel.parts[0]
        for name, line in _imports(path):
            parts = name.split(".")
            if parts[0] == "benchmarks" and len(parts) > 1 and parts[1] in LEVELS and parts[1] != room:
                if LEVELS[parts[1]] >= LEVELS[room]:
                    arrows_up.append(f"{rel}:{line} imports {name}")
        arrows_up += [f"{rel}:{line} imports {name}" for name, line in _imports(path)
                      if name.split(".")[:2] in (["benchmarks", "cli"], ["benchmarks", "commands"])]
    assert not arrows_up, "imports from a room at or above the importer's level:\n" + "\n".join(sorted(set(arrows_up)))


def test_models_data_and_estimators_never_import_the_suite() -> None:
    back = [f"{p.relative_to(ROOT)}:{line} imports {name}"
            for package in ("lightning_modules", "datamodules", "estimators")
            for p in sorted((ROOT / package).rglob("*.py")) for name, line in _imports(p)
            if name.split(".")[0] == "benchmarks"]
    assert not back, "\n".join(back)
