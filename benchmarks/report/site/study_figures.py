"""A published study's figures from ``optuna.visualization``, built from its ledger record alone.

A fresh clone has no optuna.db, so the study is rebuilt in memory from the record's trials (params, their
distributions, value, state, intermediate values) with ``optuna.create_study`` and ``study.add_trial``; the
Plotly figures Optuna draws from it go into the page as JSON and are drawn by the bundled Plotly. Parameter
importance uses fANOVA with a fixed seed, so the same ledger gives the same page.
"""

from __future__ import annotations

import json
from typing import Any

DRAWN = ("COMPLETE", "PRUNED", "FAIL")


def rebuild(record: dict[str, Any]) -> Any:
    """An in-memory Optuna study holding the record's trials (a FAIL keeps its params, never a value)."""
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=record["study"], direction=record.get("direction", "minimize"))
    for t in sorted(record.get("trials", []), key=lambda t: t["number"]):
        if t["state"] not in DRAWN:
            continue
        study.add_trial(create_trial(
            params=t["params"], distributions={k: json_to_distribution(v) for k, v in t["distributions"].items()},
            value=t["value"] if t["state"] != "FAIL" else None, state=TrialState[t["state"]],
            intermediate_values={int(k): v for k, v in (t.get("intermediate_values") or {}).items()},
            user_attrs={"number": t["number"]}))
    return study


def _spec(fig: Any, title: str) -> dict[str, Any]:
    """Optuna's Plotly figure as the page's chart spec (traces, layout) without plotly.py's 7 kB theme."""
    data = json.loads(fig.to_json())
    layout = {k: v for k, v in data.get("layout", {}).items() if k != "template"}
    layout["title"] = {"text": title, "font": {"size": 14}}
    layout.setdefault("height", 360)
    return {"traces": data.get("data", []), "layout": layout, "source": "optuna.visualization"}


def study_charts(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> chart spec: optimisation history, parameter importance, slice, parallel coordinates, pruning curves."""
    import warnings

    import optuna
    from optuna import visualization as vis
    from optuna.trial import TrialState

    study = rebuild(record)
    metric, name = record.get("metric", "objective"), record["study"]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = sorted({k for t in complete for k in t.params})
    charts: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if complete:
            charts["history"] = _spec(vis.plot_optimization_history(study, target_name=metric),
                                      f"{name}: optimisation history ({metric})")
            charts["slice"] = _spec(vis.plot_slice(study, target_name=metric), f"{name}: {metric} against each parameter")
        varied = [p for p in params if len({json.dumps(t.params.get(p)) for t in complete}) > 1]
        if len(complete) >= 2 and varied:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            charts["importance"] = _spec(vis.plot_param_importances(study, evaluator=evaluator, params=varied,
                                                                    target_name=metric),
                                         f"{name}: parameter importance (fANOVA)")
        if len(params) > 1 and complete:
            charts["parallel"] = _spec(vis.plot_parallel_coordinate(study, target_name=metric),
                                       f"{name}: parallel coordinates")
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            charts["intermediate"] = _spec(vis.plot_intermediate_values(study),
                                           f"{name}: {metric} per epoch as the pruner saw it")
    return charts
