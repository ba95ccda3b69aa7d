"""``archbench publish --claim NAME``: a finished claim into ledger/claims/<name>.json.

The record holds the claim as params.yaml defines it (statement, arms, sweep, seeds, verdict tests), every
cell's per-seed values with their provenance (MLflow run, commit, machine, CPU time), the table and the
verdicts that benchmarks/claim/stats.py computes from exactly those values, and each judged verdict's
effect, 95% interval, margin, power and the seeds a decisive answer would need (benchmarks/report/effects.py).

Nothing unfinished, stale or diverged is published: every cell-seed must be finished by the current cell
config, code and data (each seed's recorded config, code and data hashes against the current ones), and
none may have diverged. Any other case is refused in one line naming the first offending cell-seed, and
nothing is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.report.compute import run_compute, total
from benchmarks.report.effects import verdict_numbers

SCHEMA = 1


def _data_hashes(data_dir: str | None) -> Any:
    """A memo of the current data hash of a cell (cells that share data_args share one build)."""
    from benchmarks.run.build import build_datamodule

    seen: dict[str, str] = {}

    def current(exp: Any) -> str:
        key = json.dumps([exp.data, exp.data_args], sort_keys=True, default=str)
        if key not in seen:
            seen[key] = build_datamodule(exp, data_dir).content_hash()
        return seen[key]

    return current


def _provenance(prov: dict[str, Any]) -> dict[str, Any]:
    """The run's identity and cost, without machine-local paths (a local store is named, not located)."""
    uri = str(prov.get("tracking_uri") or "")
    kept = {k: prov[k] for k in ("run_id", "experiment_id", "git_commit", "finished_at", "device") if prov.get(k)}
    kept["tracking"] = uri if uri.startswith(("http://", "https://")) else "local store" if uri else None
    return kept | {"compute": run_compute(prov)}


def check_cells(name: str, cells: dict[tuple[str, Any], Any], runs: Path, data_dir: str | None
                ) -> dict[tuple[str, Any], dict[int, dict[str, Any]]]:
    """Every cell-seed's finished result, or one line about the first one that is unfinished, stale or diverged."""
    from benchmarks.claim.claims import diverged_seeds
    from benchmarks.core.provenance import code_hash
    from benchmarks.run.results import load_seed_results

    total_seeds = sum(len(exp.seeds) for exp in cells.values())
    diverged, unfinished, stale, found = [], [], [], {}
    for key, exp in cells.items():
        notes, results, code = diverged_seeds(exp, runs), load_seed_results(runs / exp.name), code_hash(exp)
        found[key] = {}
        for seed in exp.seeds:
            result = results.get(seed)
            where = f"{exp.name} seed {seed}"
            if seed in notes or (result or {}).get("stopped_by") == "diverged":
                diverged.append(f"{where} diverged ({notes.get(seed, 'stopped_by: diverged')})")
            elif result is None:
                unfinished.append(where)
            elif result.get("config_hash") != exp.config_hash():
                stale.append(f"{where} was made by another config of the cell ({result.get('config_hash')}, now "
                             f"{exp.config_hash()})")
            elif result.get("code_hash") != code:
                stale.append(f"{where} was made by other code ({result.get('code_hash')}, now {code})")
            else:
                found[key][seed] = result
    rerun = f"`archbench claim {name}`"
    if diverged:
        raise ArchbenchError(f"cannot publish claim {name}: {len(diverged)} of {total_seeds} cell-seeds diverged, first: "
                             f"{diverged[0]}; a verdict would rest on a failed run: change the recipe, then rerun {rerun}")
    if unfinished:
        raise ArchbenchError(f"cannot publish claim {name}: {len(unfinished)} of {total_seeds} cell-seeds unfinished, "
                             f"first: {unfinished[0]}; run {rerun} first")
    if stale:
        raise ArchbenchError(f"cannot publish claim {name}: {len(stale)} of {total_seeds} cell-seeds stale, first: "
                             f"{stale[0]}; rerun {rerun} (or restore what made them)")
    current = _data_hashes(data_dir)
    for key, exp in cells.items():  # last: it builds each distinct dataset once
        for seed, result in found[key].items():
            if result.get("data_hash") != current(exp):
                raise ArchbenchError(f"cannot publish claim {name}: cell-seed {exp.name} seed {seed} is stale: it saw "
                                     f"other data ({str(result.get('data_hash'))[:12]}, now {current(exp)[:12]}); "
                                     f"rerun {rerun} with the current data")
    return found


def claim_record(params: dict[str, Any], name: str, results_dir: Path, data_dir: str | None) -> dict[str, Any]:
    """The ledger record of a finished, current claim (see the module doc), or one line saying why not."""
    from benchmarks.claim.claims import cell_experiments, claim_config
    from benchmarks.claim.stats import summarise
    from benchmarks.core.metric_keys import lookup
    from benchmarks.run.results import PROVENANCE_FILE, seed_results_dir

    profile, conf = claim_config(params, name)
    cells = cell_experiments(name, profile, conf)
    runs = results_dir / "claims" / name / "runs"
    found = check_cells(name, cells, runs, data_dir)
    metrics = [conf["metric"], *conf["also"]]
    per_seed = {key: {m: [float(found[key][s]["metrics"][m]) for s in sorted(found[key]) if m in found[key][s]["metrics"]]
                      for m in metrics} for key in cells}
    if not all(per_seed[key][conf["metric"]] for key in cells):
        raise ArchbenchError(f"cannot publish claim {name}: its runs logged no '{conf['metric']}'")
    result = summarise(name, conf, per_seed)
    first = next(iter(next(iter(found.values())).values()))
    unit = getattr(lookup(conf["metric"]), "unit", "") or str(first.get("settings", {}).get("loss_unit", ""))
    result["unit"] = unit
    for verdict in result["verdicts"]:
        verdict["numbers"] = verdict_numbers(result, verdict)
    cell_records, parts = [], []
    for (arm, value), exp in cells.items():
        seeds = {}
        for seed, res in sorted(found[(arm, value)].items()):
            prov_path = seed_results_dir(runs / exp.name, seed) / PROVENANCE_FILE
            prov = _provenance(json.loads(prov_path.read_text()) if prov_path.is_file() else {})
            parts.append(prov["compute"])
            seeds[str(seed)] = {"metrics": {m: res["metrics"][m] for m in metrics if m in res["metrics"]},
                                "stopped_by": res.get("stopped_by"), "epochs": res.get("epochs"),
                                "steps": res.get("steps"), "provenance": prov}
        one = found[(arm, value)][min(found[(arm, value)])]  # every seed of a cell agrees on these (checked)
        cell_records.append({"arm": arm, "value": value, "experiment": exp.name, "config": exp.as_dict(),
                             "config_hash": exp.config_hash(), "code_hash": one["code_hash"],
                             "data_hash": one.get("data_hash"), "seeds": seeds})
    return {"schema": SCHEMA, "kind": "claim", "claim": name, "profile": profile, "model": conf["model"],
            "data": conf["data"], "definition": conf, "command": f"archbench claim {name}",
            **result, "cells": cell_records, "compute": total(parts)}


def publish_claim(record: dict[str, Any], ledger: Path) -> Path:
    from benchmarks.run.results import write_json

    path = ledger / "claims" / f"{record['claim']}.json"
    write_json(path, record)
    return path
