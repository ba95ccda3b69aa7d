"""The data stage: locate and verify the dataset of every experiment in a profile, and record it.

Each experiment gets ``<out>/<experiment>.json`` with its dataset's content hash, source and split
sizes. Its training stage depends on that file alone, so a change in the data or in that experiment's
data_args retrains exactly the experiments it touches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.run.build import build_datamodule, check_experiment
from benchmarks.core.params import experiment_from_params, experiment_names, settings


def prepare(params: dict[str, Any], profile: str, out: Path) -> dict[str, dict[str, Any]]:
    conf = settings(params)
    exps = [experiment_from_params(params, n) for n in experiment_names(params, profile)]
    for exp in exps:  # validate every experiment before touching any data
        check_experiment(exp)
    manifests: dict[str, dict[str, Any]] = {}
    built: dict[str, Any] = {}  # experiments with identical data settings share one verification
    missing: dict[str, str] = {}  # every dataset that cannot be had, not just the first: one run tells all
    for exp in exps:
        key = json.dumps([exp.data, exp.data_args], sort_keys=True, default=str)
        if key in missing:
            continue
        if key not in built:
            try:
                built[key] = build_datamodule(exp, conf["data_dir"])
            except ArchbenchError as exc:
                missing[key] = str(exc)
                continue
        dm = built[key]
        manifests[exp.name] = {"dataset": exp.data, "data_args": exp.data_args, "content_hash": dm.content_hash(),
                               "describe": dm.describe()}
    if missing:
        raise ArchbenchError(f"{len(missing)} of the {len(built) + len(missing)} data sets of profile '{profile}' "
                             f"cannot be used: " + " | ".join(missing.values()))
    out.mkdir(parents=True, exist_ok=True)
    for name, entry in manifests.items():
        (out / f"{name}.json").write_text(json.dumps(entry, indent=2, sort_keys=True, default=str) + "\n")
        print(f"{name}: {entry['dataset']} verified, sha256 {entry['content_hash'][:12]}")
    return manifests
