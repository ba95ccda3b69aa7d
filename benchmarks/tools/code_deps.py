"""``archbench code-hash``: the code hash of every experiment, study and claim of a profile, one small JSON file
each, for DVC.

DVC cannot compute which files an experiment's model imports, so each training, study and claim stage depends
on its own file here (``results/code/experiments/<name>.json``, ``results/code/claims/<name>.json``) instead of
on whole packages. The files come from ``code_files``, the same list behind ``code_hash``, so an edit to one
model changes only the hashes of the experiments that use it, and ``dvc repro`` reruns only their stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.core.params import experiment_from_params, experiment_names
from benchmarks.core.provenance import ROOT, code_files, code_hash
from benchmarks.run.results import write_json


def _entry(exp: Any) -> dict[str, Any]:
    return {"code_hash": code_hash(exp), "files": [str(p.relative_to(ROOT)) for p in code_files(exp)]}


def write_code_hashes(params: dict[str, Any], profile: str, out: Path) -> dict[str, str]:
    """Write one file per experiment (with the experiments the profile's studies tune) and per claim; returns
    {path: code hash}. Files of names no longer in params are removed, so the folder mirrors the profile."""
    from benchmarks.claim.claims import CLAIM_SECTIONS, cell_experiments, claim_config

    wanted: dict[Path, dict[str, Any]] = {}
    names = set(experiment_names(params, profile))
    for section in ("studies",) if profile == "default" else ("studies", "full_studies"):
        names |= {conf["experiment"] for conf in (params.get(section) or {}).values() if isinstance(conf, dict)}
    for name in sorted(names):
        wanted[out / "experiments" / f"{name}.json"] = _entry(experiment_from_params(params, name))
    sections = CLAIM_SECTIONS[:1] if profile == "default" else CLAIM_SECTIONS
    for section in sections:
        for name in sorted(params.get(section) or {}):
            claim_profile, conf = claim_config(params, name)
            cell = next(iter(cell_experiments(name, claim_profile, conf).values()))  # arms share model and data
            wanted[out / "claims" / f"{name}.json"] = _entry(cell)
    for old in out.glob("*/*.json"):
        if old not in wanted:
            old.unlink()
    for path, entry in wanted.items():
        write_json(path, entry)
    return {str(path): entry["code_hash"] for path, entry in wanted.items()}
