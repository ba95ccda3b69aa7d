"""Reading params.yaml: the single source of truth for experiments, studies and global settings.

An experiment is ``{model, data, model_args, data_args, trainer, seeds}``. Experiments live in two
sections: ``experiments`` (the default suite, run by ``dvc repro``) and ``full_experiments`` (the full
profile). A full experiment may say ``extends: <name>`` to start from another experiment and override
parts of it, so the profiles differ in params, never in code. It may also say ``continues: <name>``: each
seed then goes on from that experiment's best checkpoint of the same seed (weights, optimiser states,
epoch and elapsed time), e.g. a second training phase with a changed recipe.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError

PARAMS_ENV = "ARCHBENCH_PARAMS"
EXPERIMENT_SECTIONS = ("experiments", "full_experiments")
SECTIONS = {"settings", "experiments", "full_experiments", "studies", "full_studies", "claims", "full_claims", "density"}
EXPERIMENT_KEYS = {"model", "data", "model_args", "data_args", "trainer", "seeds", "description", "extends", "continues",
                   "tuned_by"}
# Experiment, study and claim names become folder and file names (results/<exp>/, leases, MLflow run names): a
# plain identifier, and none of the folders the suite keeps beside experiments in results/.
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
RESERVED_NAMES = {"report", "tune", "claims", "data", "code", "baselines", "density", "density_full"}


def check_name(kind: str, name: Any) -> None:
    """A name that is a plain identifier (letters, digits, _; a letter first) and not a reserved folder name."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ArchbenchError(f"{kind} name {name!r} is not a plain identifier (letters, digits and _, starting with a "
                             f"letter; it becomes a folder name); rename it in params.yaml")
    if name in RESERVED_NAMES:
        raise ArchbenchError(f"{kind} name '{name}' is reserved (results/{name}/ holds the suite's "
                             f"{'report' if name == 'report' else 'own files'}); rename it in params.yaml")


@dataclass(frozen=True)
class Experiment:
    name: str
    model: str
    data: str
    model_args: dict[str, Any] = field(default_factory=dict)
    data_args: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    profile: str = "default"
    description: str = ""
    continues: str | None = None  # the experiment whose best checkpoint (same seed) this one goes on from
    tuned_by: str | None = None  # the study whose best parameters it uses (shown in the report; not in the hash)

    def as_dict(self) -> dict[str, Any]:
        # "continues" only when set, so every other experiment keeps its config hash.
        return {
            "model": self.model,
            "data": self.data,
            "model_args": self.model_args,
            "data_args": self.data_args,
            "trainer": self.trainer,
            "seeds": list(self.seeds),
        } | ({"continues": self.continues} if self.continues else {})

    def config_hash(self) -> str:
        """Hash of everything that changes the numbers; a resumed run must match it."""
        blob = json.dumps(self.as_dict() | {"seeds": None}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def params_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get(PARAMS_ENV) or "params.yaml")


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Parse params.yaml; any problem becomes one ArchbenchError line naming the file and the fix."""
    import yaml

    p = params_path(path)
    if p.is_dir():
        raise ArchbenchError(f"{p} is a folder, not a params file; pass --params PATH to a YAML file")
    if not p.is_file():
        raise ArchbenchError(f"{p} not found: run from the project root or pass --params PATH (or set {PARAMS_ENV})")
    from benchmarks.core.yaml_safe import AliasBomb, load_yaml

    try:
        # libyaml's parser where PyYAML has it (0.1 s for params.yaml, paid by every command), refusing
        # duplicate keys and runaway aliases.
        data = load_yaml(p.read_text(encoding="utf-8"))
    except AliasBomb as exc:
        where = f" (at {exc.where})" if exc.where else ""
        raise ArchbenchError(f"{p}: {exc}{where}; write the values out, or use fewer nested aliases") from None
    except UnicodeDecodeError:
        raise ArchbenchError(f"{p} is not a text file (not UTF-8); point --params at a YAML params file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ArchbenchError(f"{p} is not valid YAML{where}: {problem}; fix the syntax there") from None
    if not isinstance(data, dict):
        raise ArchbenchError(f"{p} must be a mapping of sections (experiments, studies, ...), got {type(data).__name__}")
    unknown = sorted(set(data) - SECTIONS)
    if unknown:
        raise ArchbenchError(f"{p}: unknown section '{unknown[0]}' (known: {', '.join(sorted(SECTIONS))}); "
                             f"fix its name or remove it")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def raw_experiments(params: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (profile, raw mapping), across both sections; names must be unique."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for section in EXPERIMENT_SECTIONS:
        entries = params.get(section) or {}
        if not isinstance(entries, dict):
            raise ArchbenchError(f"params section '{section}' must be a mapping of experiment names, got {type(entries).__name__}")
        profile = "default" if section == "experiments" else "full"
        for name, raw in entries.items():
            check_name("experiment", name)
            if name in found:
                raise ArchbenchError(f"experiment '{name}' is defined twice; rename one of them")
            if not isinstance(raw, dict):
                raise ArchbenchError(f"experiment '{name}' must be a mapping with model, data, ...; got {type(raw).__name__}")
            found[name] = (profile, raw)
    return found


def _resolve_raw(name: str, table: dict[str, tuple[str, dict[str, Any]]], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    profile, raw = table[name]
    parent = raw.get("extends")
    if parent is None:
        return raw
    if parent not in table:
        raise ArchbenchError(f"experiment '{name}': extends unknown experiment '{parent}'")
    if parent in seen:
        raise ArchbenchError(f"experiment '{name}': 'extends' forms a cycle through '{parent}'")
    base = _resolve_raw(parent, table, seen + (name,))
    # tuned_by names the study that chose this entry's own values: an entry that extends it and overrides some
    # of them was not tuned by it, so it says so itself or not at all.
    return deep_merge({k: v for k, v in base.items() if k not in ("extends", "tuned_by")}, raw)


def experiment_from_params(params: dict[str, Any], name: str) -> Experiment:
    table = raw_experiments(params)
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise ArchbenchError(f"unknown experiment '{name}' (known: {known}); add it to params.yaml or pick one of these")
    raw = _resolve_raw(name, table)
    unknown = set(raw) - EXPERIMENT_KEYS
    if unknown:
        raise ArchbenchError(
            f"experiment '{name}': unknown key '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(EXPERIMENT_KEYS))})"
        )
    for key in ("model", "data"):
        if not isinstance(raw.get(key), str):
            raise ArchbenchError(f"experiment '{name}': '{key}' is required and must be a name")
    for key in ("model_args", "data_args", "trainer"):
        if not isinstance(raw.get(key) or {}, dict):
            raise ArchbenchError(f"experiment '{name}': '{key}' must be a mapping")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ArchbenchError(f"experiment '{name}': 'seeds' must be a non-empty list of integers, got {seeds!r}")
    continues = raw.get("continues")
    if continues is not None and (not isinstance(continues, str) or continues not in table or continues == name):
        raise ArchbenchError(f"experiment '{name}': 'continues' must name another experiment in params.yaml, "
                             f"got {continues!r}")
    tuned_by = raw.get("tuned_by")
    if tuned_by is not None and tuned_by not in (params.get("studies") or {}) | (params.get("full_studies") or {}):
        raise ArchbenchError(f"experiment '{name}': 'tuned_by' must name a study in params.yaml, got {tuned_by!r}")
    data_args = dict(raw.get("data_args") or {})
    return Experiment(
        name=name,
        model=raw["model"],
        data=raw["data"],
        model_args=dict(raw.get("model_args") or {}),
        data_args=data_args,
        trainer=dict(raw.get("trainer") or {}),
        seeds=tuple(seeds),
        profile=table[name][0],
        description=str(raw.get("description", "")),
        continues=continues,
        tuned_by=tuned_by,
    )


def experiment_names(params: dict[str, Any], profile: str | None = None) -> list[str]:
    return [n for n, (p, _) in raw_experiments(params).items() if profile is None or p == profile]


def settings(params: dict[str, Any]) -> dict[str, Any]:
    """Global settings with their defaults: where data, results and tracking live."""
    # threads: one torch thread per job. On a shared 2-core machine two threads ran 3-8x slower under load
    # than one, and jobs (seeds, trials, claim cells) run side by side; raise it for a single job on a big machine.
    defaults = {"data_dir": "data", "results_dir": "results", "state_dir": ".archbench", "mlflow_experiment": "archbench",
                "optuna_storage": "sqlite:///optuna.db", "threads": 1}
    given = params.get("settings") or {}
    if not isinstance(given, dict):
        raise ArchbenchError("params section 'settings' must be a mapping")
    unknown = set(given) - set(defaults)
    if unknown:
        raise ArchbenchError(f"settings: unknown key '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(defaults))})")
    merged = defaults | given
    threads = merged["threads"]
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ArchbenchError(f"settings.threads must be a positive integer (torch threads per job), got {threads!r}")
    for key in ("data_dir", "results_dir", "state_dir", "mlflow_experiment", "optuna_storage"):
        if not isinstance(merged[key], str) or not merged[key]:
            if key == "data_dir" and merged[key] is None:
                continue
            raise ArchbenchError(f"settings.{key} must be a non-empty string, got {merged[key]!r}")
    return merged
