"""The claims, studies and baselines the report shows, from results/ and the ledger, as plain dicts.

A claim or study appears once: your own run (results/) where there is one, else the published record
(ledger/claims/, ledger/studies/); a study's own run has only its best parameters (results/tune/), so a
published record, which holds every trial, is shown in its place when there is one. ``tuned_by`` maps the
experiments of params.yaml to the study that chose their parameters. ``ledger_compute`` totals the CPU
time behind everything published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.report.site.collect import load_claims, load_studies, read_json


def _records(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: read_json(p) | {"source": "ledger"} for p in sorted(folder.glob("*.json")) if p.is_file()}


def _claim_definitions(params: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {name: conf for section in ("claims", "full_claims") for name, conf in ((params or {}).get(section) or {}).items()
            if isinstance(conf, dict)}


def claims_shown(results_dir: Path, ledger_dir: Path, params: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every claim, yours first where both exist (with the published outcome beside it)."""
    published = _records(ledger_dir / "claims")
    defined = _claim_definitions(params)
    shown = {}
    for claim in load_claims(results_dir):
        name = str(claim.get("claim"))
        conf = defined.get(name) or {}
        shown[name] = claim | {"source": "results", "model": conf.get("model"), "data": conf.get("data"),
                               "arm_overrides": conf.get("arms"),
                               "published_outcome": (published.get(name) or {}).get("outcome", "not published")}
    for name, record in published.items():
        if name not in shown:
            shown[name] = record | {"arm_overrides": (record.get("definition") or {}).get("arms"), "png": None}
    return [shown[n] for n in sorted(shown)]


def studies_shown(results_dir: Path, ledger_dir: Path) -> list[dict[str, Any]]:
    """Every study: the published record (all trials) where there is one, else your run's best parameters."""
    shown: dict[str, dict[str, Any]] = _records(ledger_dir / "studies")
    for best in load_studies(results_dir):
        name = str(best.get("study"))
        if name in shown:
            shown[name]["local_best"] = best
        else:
            shown[name] = {"study": name, "source": "results", "experiment": best.get("experiment"),
                           "metric": best.get("metric"), "direction": best.get("direction", "minimize"),
                           "n_trials": best.get("n_trials"), "definition_hash": best.get("definition_hash"),
                           "best": {"trial": best.get("trial"), "value": best.get("value"), "params": best.get("params")},
                           "counts": {"COMPLETE": best.get("n_complete"), "PRUNED": best.get("n_pruned"),
                                      "FAIL": best.get("n_failed")}, "trials": []}
    return [shown[n] for n in sorted(shown)]


def baselines_shown(results_dir: Path, ledger_dir: Path) -> list[dict[str, Any]]:
    from benchmarks.report.baselines import load_baselines

    return load_baselines(results_dir / "baselines", ledger_dir / "baselines")


def tuned_by(params: dict[str, Any] | None) -> dict[str, str]:
    """experiment -> the study named by its ``tuned_by`` (experiments of params.yaml only)."""
    from benchmarks.core.params import experiment_from_params, experiment_names

    if not params:
        return {}
    found = {}
    for name in experiment_names(params):
        study = experiment_from_params(params, name).tuned_by
        if study:
            found[name] = study
    return found


def ledger_compute(published: dict[str, dict[str, Any]], claims: list[dict[str, Any]], studies: list[dict[str, Any]],
                   ledger_dir: Path) -> dict[str, dict[str, Any]]:
    """CPU time behind the published ledger, per kind of entry."""
    from benchmarks.report.site.boards import entry_compute

    baselines = _records(ledger_dir / "baselines")
    per_kind = {
        "experiments": [entry_compute(e) for e in published.values()],
        "claims": [c["compute"] for c in claims if c.get("source") == "ledger" and c.get("compute")],
        "studies": [s["compute"] for s in studies if s.get("source") == "ledger" and s.get("compute")],
        "baselines": [b["compute"] | {"how": b["compute"].get("how", "process CPU time")} for b in baselines.values()
                      if b.get("compute")],
    }
    return {kind: _sum(parts) for kind, parts in per_kind.items()}


def _sum(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals of entry totals (compute.total's shape) or single runs ({cpu_s, how, machine})."""
    known = [p for p in parts if p.get("cpu_s") is not None]
    how = sorted({h for p in known for h in (p["how"] if isinstance(p.get("how"), list) else [p.get("how")]) if h})
    hosts = sorted({h for p in parts for h in (p.get("hosts") or [(p.get("machine") or {}).get("host")]) if h})
    return {"cpu_s": round(sum(p["cpu_s"] for p in known), 3), "entries": len(parts), "how": how, "hosts": hosts,
            "unrecorded": len(parts) - len(known) + sum(int(p.get("unrecorded") or 0) for p in known)}


def claims_to_note(shown: list[dict[str, Any]], params: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The claims a leaderboard table names: those shown, then those params.yaml defines that have no verdict yet."""
    names = {c["claim"] for c in shown}
    pending = [{"claim": name, "source": "params", "statement": conf.get("statement"), "model": conf.get("model"),
                "data": conf.get("data"), "arm_overrides": conf.get("arms"), "sweep": conf.get("sweep") or {},
                "seeds": conf.get("seeds") or []}
               for name, conf in sorted(_claim_definitions(params).items()) if name not in names]
    return shown + pending
