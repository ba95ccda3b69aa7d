"""Everything the report shows, read from results/ and the ledger into plain dicts (no HTML here).

An entry is one experiment as the report sees it, whether it comes from the user's results/<exp>/ or from
the published ledger/<exp>.json: the same keys either way, so the ledger alone renders the full report.
"""

from __future__ import annotations

import csv
import json
import math
import os
import functools
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError

TEXT_SAMPLE_CHARS = 4000  # a text sample beyond this is cut in the page; the file keeps it whole


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArchbenchError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); delete or regenerate it") from None


def stats(values: list[float]) -> dict[str, Any]:
    """Mean, std, 95% t half-width and n over seeds (nan half-width for one seed), plus the values."""
    from benchmarks.run.results import mean_std_ci

    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return mean_std_ci(finite) | {"values": finite} if finite else {}


def summarise(seeds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    keys = sorted({k for s in seeds for k in s["metrics"]})
    found = {k: stats([s["metrics"][k] for s in seeds if k in s["metrics"]]) for k in keys}
    return {k: v for k, v in found.items() if v}


# ---- MLflow links ---------------------------------------------------------------------------------------
def _http(uri: str | None) -> str | None:
    return uri.rstrip("/") if uri and uri.split(":", 1)[0] in ("http", "https") else None


def mlflow_experiment_id(tracking_uri: str | None, run_id: str | None) -> str | None:
    """The MLflow experiment id of a run in a local SQLite store, through MlflowClient (MLflow's own API keeps
    working when MLflow migrates its tables); None when the store or the run is not here."""
    if not tracking_uri or not run_id or not tracking_uri.startswith("sqlite:///"):
        return None
    if not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        return None
    from mlflow.exceptions import MlflowException

    try:
        return str(_mlflow_client(tracking_uri).get_run(run_id).info.experiment_id)
    except MlflowException:
        return None


@functools.cache
def _mlflow_client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def run_link(provenance: dict[str, Any], server: str | None) -> str | None:
    """The run's page in the MLflow UI, when there is a server to open it (the UI's own routes)."""
    run_id = provenance.get("run_id")
    base = _http(server) or _http(os.environ.get("MLFLOW_TRACKING_URI")) or _http(provenance.get("tracking_uri"))
    if not run_id or not base:
        return None
    exp_id = provenance.get("experiment_id")
    return f"{base}/#/experiments/{exp_id}/runs/{run_id}" if exp_id else f"{base}/#/runs/{run_id}"


# ---- one experiment -------------------------------------------------------------------------------------
def read_curves(exp_dir: Path) -> dict[str, dict[str, list[float | None]]]:
    """seed -> column -> values (None where a column has no value at that epoch)."""
    curves = {}
    for path in sorted((exp_dir / "curves").glob("seed_*.csv")):
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            continue
        columns = {col: [_number(r.get(col)) for r in rows] for col in rows[0]}
        curves[path.stem.removeprefix("seed_")] = {k: v for k, v in columns.items() if any(x is not None for x in v)}
    return curves


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def read_samples(seed_dir: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted((seed_dir / "samples").glob("*")):
        if path.suffix.lower() == ".png":
            found.append({"name": path.name, "src": path})
        elif path.suffix.lower() == ".txt":
            found.append({"name": path.name, "text": path.read_text(errors="replace")[:TEXT_SAMPLE_CHARS]})
    return found


def _seed_record(seed: int, result: dict[str, Any], provenance: dict[str, Any], server: str | None) -> dict[str, Any]:
    prov = dict(provenance)
    if "experiment_id" not in prov:
        prov["experiment_id"] = mlflow_experiment_id(prov.get("tracking_uri"), prov.get("run_id"))
    machine = prov.get("machine") or {}
    return {"seed": seed, "metrics": result.get("metrics", {}), "stopped_by": result.get("stopped_by"),
            "epochs": result.get("epochs"), "steps": result.get("steps"), "run_id": prov.get("run_id"),
            "link": run_link(prov, server), "commit": prov.get("git_commit"), "machine": machine,
            "threads": machine.get("threads", prov.get("threads")), "device": prov.get("device"),
            "fit_s": prov.get("fit_s"), "cpu_s": prov.get("cpu_s"), "finished_at": prov.get("finished_at"),
            "tracking_uri": prov.get("tracking_uri")}


def entry_from_results(exp_dir: Path, server: str | None) -> dict[str, Any] | None:
    """One experiment from results/<exp>/ (summary.json names its current seeds); None when not merged yet."""
    path = exp_dir / "summary.json"
    if not path.is_file():
        legacy = exp_dir / "metrics.json"  # the earlier layout kept the summary in metrics.json
        if not legacy.is_file() or "summary" not in (data := read_json(legacy)):
            return None
    else:
        data = read_json(path)
    seeds, samples = [], {}
    for seed in data.get("seeds", []):
        seed_dir = exp_dir / "seeds" / f"seed_{seed}"
        result = read_json(seed_dir / "result.json") if (seed_dir / "result.json").is_file() else {
            "metrics": data.get("per_seed", {}).get(str(seed), {}), "stopped_by": data.get("stopped_by", {}).get(str(seed)),
            "epochs": data.get("epochs", {}).get(str(seed))}
        prov = read_json(seed_dir / "provenance.json") if (seed_dir / "provenance.json").is_file() else {}
        seeds.append(_seed_record(int(seed), result, prov, server))
        samples[str(seed)] = read_samples(seed_dir)
    settings = data.get("settings", {})
    return {"name": data.get("experiment", exp_dir.name), "model": data.get("model"), "data": data.get("data"),
            "profile": data.get("profile"), "description": data.get("description", ""), "source": "results",
            "seeds": seeds, "summary": summarise(seeds), "budget": data.get("budget", {}),
            "parameters": settings.get("parameters"), "settings": settings, "missing_seeds": data.get("missing_seeds", []),
            "truncated": any(s["stopped_by"] == "max_time" for s in seeds), "config": None,
            "curves": read_curves(exp_dir), "samples": samples}


def entry_from_ledger(record: dict[str, Any], server: str | None) -> dict[str, Any]:
    """One published experiment (ledger/<exp>.json) in the shape of entry_from_results."""
    seeds = [_seed_record(int(s), r, r.get("provenance", {}), server) for s, r in sorted(record["seeds"].items(),
                                                                                          key=lambda kv: int(kv[0]))]
    settings = record.get("settings", {})
    return {"name": record["experiment"], "model": record.get("model"), "data": record.get("data"),
            "profile": record.get("profile"), "description": record.get("description", ""), "source": "ledger",
            "seeds": seeds, "summary": summarise(seeds), "budget": record.get("budget", {}),
            "parameters": settings.get("parameters"), "settings": settings,
            "missing_seeds": record.get("missing_seeds", []), "truncated": record.get("truncated", False),
            "config": record.get("config"), "curves": record.get("curves", {}),
            "samples": {seed: [item for item in items if "text" in item or item.get("src") is not None]
                        for seed, items in record.get("samples", {}).items()}}


def load_experiments(results_dir: Path, server: str | None) -> dict[str, dict[str, Any]]:
    entries = {}
    for path in sorted(p for p in results_dir.glob("*/") if p.is_dir()):
        entry = entry_from_results(path, server)
        if entry is not None:
            entries[entry["name"]] = entry
    return entries


def attach_config(entries: dict[str, dict[str, Any]], params: dict[str, Any] | None) -> None:
    """The experiment's definition from params.yaml, only while it is the one that made the numbers."""
    from benchmarks.core.params import experiment_from_params, experiment_names

    if not params:
        return
    known = set(experiment_names(params))
    for name, entry in entries.items():
        if entry["config"] is None and name in known:
            exp = experiment_from_params(params, name)
            if exp.config_hash() == entry["settings"].get("config_hash"):
                entry["config"] = exp.as_dict()


# ---- claims, studies, density ---------------------------------------------------------------------------
def load_claims(results_dir: Path) -> list[dict[str, Any]]:
    claims = []
    for path in sorted((results_dir / "claims").glob("*/claim.json")):
        claim = read_json(path)
        claim["png"] = path.with_name("claim.png") if path.with_name("claim.png").is_file() else None
        claims.append(claim)
    return claims


def verdict_status(verdict: dict[str, Any]) -> str:
    """Supported / Refuted / Inconclusive (or the claim's own word, e.g. Comparison) for a badge."""
    for key in ("status", "verdict", "outcome"):
        if isinstance(verdict.get(key), str) and verdict[key]:
            return verdict[key].split()[0].strip(":").capitalize()
    text = str(verdict.get("text", ""))
    if text.startswith("Not supported"):
        return "Refuted"
    word = text.split(":")[0].split(" (")[0].strip()
    if word:
        return word
    return {True: "Supported", False: "Refuted"}.get(verdict.get("supported"), "Inconclusive")


def load_studies(results_dir: Path) -> list[dict[str, Any]]:
    studies = []
    for path in sorted((results_dir / "tune").glob("*/best_params.json")):
        best = read_json(path)
        best["png"] = path.with_name("history.png") if path.with_name("history.png").is_file() else None
        studies.append(best)
    return studies


def load_density(results_dir: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(results_dir.glob("density*/density.json")):
        study = read_json(path)
        profile = path.parent.name.removeprefix("density").lstrip("_") or "default"
        png = path.with_name("kde_vs_dim.png")
        found.append({"profile": profile, "folder": path.parent.name, "results": study.get("results", {}),
                      "png": png if png.is_file() else None})
    return found
