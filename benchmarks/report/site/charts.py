"""Plotly figure specs (plain dicts: traces and layout) that the page's script draws; units on every axis."""

from __future__ import annotations

from typing import Any

from benchmarks.report.site.vocab import label_with

# One colour per experiment across every chart of a page; seeds of one experiment share it.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def layout(x_title: str, y_title: str, title: str = "", **extra: Any) -> dict[str, Any]:
    return {"title": {"text": title, "font": {"size": 14}}, "height": 340, "margin": {"l": 64, "r": 16, "t": 40, "b": 48},
            "xaxis": {"title": {"text": x_title}}, "yaxis": {"title": {"text": y_title}},
            "legend": {"font": {"size": 10}}, "hovermode": "closest"} | extra


def curve_groups(columns: set[str]) -> dict[str, list[str]]:
    """{'loss': ['train/loss', 'val/loss'], ...}: the train and val twins of a metric share one chart."""
    groups: dict[str, list[str]] = {}
    for col in sorted(columns - {"epoch", "step"}):
        groups.setdefault(col.split("/", 1)[-1], []).append(col)
    return groups


def curve_traces(name: str, curves: dict[str, dict[str, list[float | None]]], columns: list[str], i: int,
                 tag: str = "") -> list[dict[str, Any]]:
    """One line per seed and column; the experiment's colour, a dash per column (train dashed, val solid)."""
    traces = []
    for seed, curve in sorted(curves.items(), key=lambda kv: int(kv[0])):
        x = curve.get("epoch") or list(range(len(next(iter(curve.values()), []))))
        for j, col in enumerate(columns):
            if col not in curve:
                continue
            dash = "dash" if col.startswith("train/") else DASHES[j % len(DASHES)] if len(columns) > 2 else "solid"
            traces.append({"type": "scatter", "mode": "lines+markers", "x": x, "y": curve[col],
                           "name": f"{name}{tag} seed {seed} {col}", "legendgroup": f"{name}{tag}",
                           "line": {"color": colour(i), "dash": dash, "width": 1.6}, "marker": {"size": 4},
                           "connectgaps": True})
    return traces


def experiment_curve_charts(name: str, curves: dict[str, dict[str, list[float | None]]], settings: dict[str, Any]
                            ) -> list[dict[str, Any]]:
    columns = {c for curve in curves.values() for c in curve}
    charts = []
    for base, cols in curve_groups(columns).items():
        y_key = next((c for c in cols if c.startswith("val/")), cols[0])
        charts.append({"traces": curve_traces(name, curves, cols, 0),
                       "layout": layout("epoch", label_with(y_key, [settings]), f"{name}: {', '.join(cols)}")})
    return charts


def overlay_chart(entries: list[dict[str, Any]], key: str, title: str) -> dict[str, Any] | None:
    """Every experiment's seeds of one curve column on one chart (the leaderboard's per-task view)."""
    traces = []
    for i, entry in enumerate(entries):
        tag = " [published]" if entry["source"] == "ledger" else ""
        traces += curve_traces(entry["name"], entry["curves"], [key], i, tag)
    units = [e.get("settings") or {} for e in entries]
    return {"traces": traces, "layout": layout("epoch", label_with(key, units), title)} if traces else None


def claim_chart(claim: dict[str, Any]) -> dict[str, Any]:
    """The claim's metric against its sweep value, one line per arm, 95% CI error bars."""
    metric = claim.get("metric", "")
    traces = []
    for i, arm in enumerate(claim.get("arms", [])):
        rows = [r for r in claim.get("table", []) if r.get("arm") == arm and isinstance(r.get(metric), dict)]
        ci = [r[metric].get("ci") if r[metric].get("ci") == r[metric].get("ci") else None for r in rows]
        traces.append({"type": "scatter", "mode": "lines+markers", "name": arm,
                       "x": [str(r.get("value")) if r.get("value") is not None else arm for r in rows],
                       "y": [r[metric].get("mean") for r in rows], "line": {"color": colour(i)},
                       "error_y": {"type": "data", "array": ci, "visible": True}})
    sweep = (claim.get("sweep") or {}).get("path") or "arm"
    return {"traces": traces, "layout": layout(sweep, label_with(metric, []), f"{claim.get('claim')}: mean ± 95% CI",
                                               xaxis={"title": {"text": sweep}, "type": "category"})}


def density_chart(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    dims = sorted(entry.get("dims", {}), key=lambda d: int(d))
    methods = sorted({m for d in dims for m, v in entry["dims"][d].items() if isinstance(v, dict)})  # not pca_*
    traces = [{"type": "scatter", "mode": "lines+markers", "name": m, "x": [int(d) for d in dims],
               "y": [entry["dims"][d].get(m, {}).get("test_mean_log_lik_per_dim") for d in dims],
               "line": {"color": colour(i)}} for i, m in enumerate(methods)]
    return {"traces": traces, "layout": layout("PCA dimension d", "held-out log-likelihood (nats/dim)",
                                               f"{name}: MLE vs KDE", xaxis={"title": {"text": "PCA dimension d"},
                                                                             "type": "log", "dtick": 0.30103})}
