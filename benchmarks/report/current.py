"""The report shows current numbers only: each seed of each experiment in results/ is checked against the config,
code and data as they are now (the rule of ``collect`` and ``publish``), and a stale one is named and left out.
A published entry stays (the ledger is the record of what was published), but one that today's config or code
would no longer make says so beside its name: the number is the older recipe's until it is rerun and republished.

An experiment no longer in params.yaml is shown as it is (there is nothing current to compare it with); one
whose dataset cannot be found here is shown unchecked, and the report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError


def leave_out_stale(model: dict[str, Any], results_dir: Path, params: dict[str, Any] | None) -> list[str]:
    """Drop stale seeds from ``model["entries"]`` (an experiment left with none is dropped); returns what was said."""
    from benchmarks.core.params import experiment_from_params, experiment_names, settings
    from benchmarks.core.provenance import code_hash
    from benchmarks.report.site.collect import summarise
    from benchmarks.run.results import RESULT_FILE, data_hash, load_seed_results, seed_results_dir, stale_reason

    if not params:
        return []
    known, said = set(experiment_names(params)), []
    for name in sorted(model["entries"]):
        if name not in known:
            continue
        entry, exp = model["entries"][name], experiment_from_params(params, name)
        try:
            data: str | None = data_hash(exp, settings(params)["data_dir"])
        except ArchbenchError as exc:
            data = None
            said.append(f"report: {name}: its data is not here, so its seeds are shown unchecked against it ({exc})")
        results, code = load_seed_results(results_dir / name), code_hash(exp)
        gone = {}
        for seed in (s["seed"] for s in entry["seeds"]):
            result = results.get(seed)
            why = (stale_reason(exp, result, code, data) if result is not None
                   else f"no {seed_results_dir(results_dir / name, seed) / RESULT_FILE}")
            if why:
                gone[seed] = why
        if not gone:
            continue
        said += [f"report: {name}: left out seed {seed}: {why}" for seed, why in gone.items()]
        entry["seeds"] = [s for s in entry["seeds"] if s["seed"] not in gone]
        if not entry["seeds"]:
            del model["entries"][name]
            continue
        entry["summary"] = summarise(entry["seeds"])
        entry["truncated"] = any(s["stopped_by"] == "max_time" for s in entry["seeds"])
        entry["missing_seeds"] = sorted(set(entry["missing_seeds"]) | set(gone))
    for line in said:
        print(line)
    return said


def mark_older_published(published: dict[str, dict[str, Any]], ledger: dict[str, dict[str, Any]],
                         params: dict[str, Any] | None) -> None:
    """Set ``older`` on each published entry whose record's config or code hash is not the experiment's now
    ("config", "code" or "config and code"); None while current, and None where it cannot be told (a record without
    its hashes, an experiment no longer defined or no longer valid: the report shows it as published). Data is not
    rebuilt here: the data hash needs the dataset, which a fresh clone may not have."""
    from benchmarks.core.params import experiment_from_params, experiment_names
    from benchmarks.core.provenance import code_hash

    known = set(experiment_names(params)) if params else set()
    for name, entry in published.items():
        record, entry["older"] = ledger.get(name) or {}, None
        if name not in known or not record.get("config_hash") or not record.get("code_hash"):
            continue
        try:
            exp = experiment_from_params(params, name)
            now = {"config": exp.config_hash(), "code": code_hash(exp)}
        except (ArchbenchError, KeyError):  # a definition that no longer validates, or names a model now gone
            continue
        older = [what for what in ("config", "code") if record[f"{what}_hash"] != now[what]]
        entry["older"] = " and ".join(older) or None
