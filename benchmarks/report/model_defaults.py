"""The default of a model's constructor argument, read from its source (not imported).

A leaderboard row shows the settings that decide what it means (the forget bias and lag of a long-lag
LSTM); a config that leaves one at its default records nothing, so the report reads the default where
the model defines it. Reading the source keeps ``archbench report`` from importing torch and every model
(seconds) to learn a handful of literals; a default that is not a literal is shown as unknown.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "lightning_modules" / "__init__.py"
UNKNOWN = object()


@functools.cache
def _registry() -> dict[str, tuple[str, str]]:
    """model name -> (module, class) from the MODELS dict and the imports of lightning_modules/__init__.py."""
    tree = ast.parse(REGISTRY.read_text())
    where = {a.asname or a.name: (node.module, a.name) for node in tree.body if isinstance(node, ast.ImportFrom)
             and node.module for a in node.names}
    found: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id == "MODELS" and isinstance(value, ast.Dict):
            for key, cls in zip(value.keys, value.values):
                if isinstance(key, ast.Constant) and isinstance(cls, ast.Name) and cls.id in where:
                    found[str(key.value)] = where[cls.id]
    return found


@functools.cache
def _defaults(module: str, cls: str) -> dict[str, Any]:
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    if not path.is_file():
        return {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    return _literal_defaults(item.args)
    return {}


def _literal_defaults(args: ast.arguments) -> dict[str, Any]:
    out: dict[str, Any] = {}
    positional = args.posonlyargs + args.args
    pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    for arg, default in pairs:
        try:
            out[arg.arg] = ast.literal_eval(default)
        except ValueError:
            out[arg.arg] = UNKNOWN
    return out


def model_default(model: str, arg: str) -> Any:
    """The default of ``arg`` in MODELS[model]'s constructor; UNKNOWN when it has none or it is not a literal."""
    spot = _registry().get(model)
    return _defaults(*spot).get(arg, UNKNOWN) if spot else UNKNOWN
