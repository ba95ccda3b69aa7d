"""The density and compare pages (the claims and studies pages: findings.py)."""

from __future__ import annotations

import json
from typing import Any

from benchmarks.report.site.charts import density_chart
from benchmarks.report.site.html import chart_div, esc, flat, page, table
from benchmarks.report.site.vocab import direction, label_with


def density_page(density: list[dict[str, Any]], images: dict[str, str]) -> str:
    charts, parts = {}, ["<h1>Density estimation: MLE vs KDE against the dimension</h1><p>Held-out mean "
                         "log-likelihood in nats per dimension (higher is better), after PCA fitted on train. The "
                         "crossover is the smallest d where a parametric model beats KDE.</p>"]
    for study in density:
        parts.append(f'<section class="density"><h2>{esc(study["profile"])} profile</h2>')
        for name, entry in study["results"].items():
            dims = sorted(entry.get("dims", {}), key=lambda d: int(d))
            methods = sorted({m for d in dims for m, v in entry["dims"][d].items() if isinstance(v, dict)})
            rows = [[esc(d), *[esc(f"{entry['dims'][d][m]['test_mean_log_lik_per_dim']:+.3f}")
                               if m in entry["dims"][d] else "–" for m in methods]] for d in dims]
            cid = f"density-{study['folder']}-{name}"
            charts[cid] = density_chart(name, entry)
            parts.append(f'<h3>{esc(name)}</h3><p>n_train = {esc(entry.get("n_train"))}, n_test = '
                         f'{esc(entry.get("n_test"))}, crossover d = <b>{esc(entry.get("crossover"))}</b></p>'
                         + table(["d", *map(esc, methods)], rows, "density-table") + chart_div(cid))
        png = images.get(str(study.get("png")))
        if png:
            parts.append(f'<figure><img src="{esc(png)}" alt="KDE vs dimension"><figcaption>kde_vs_dim.png'
                         f'</figcaption></figure>')
        parts.append("</section>")
    if not density:
        parts.append('<p class="empty">The density study has not run yet: <code>archbench density</code>.</p>')
    return page("Density", "density.html", "".join(parts), {"charts": charts})


def compare_data(entries: dict[str, dict[str, Any]], published: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the compare view needs per choice: metrics, flattened params, curves; yours and published apart."""
    choices: dict[str, Any] = {}
    for source, group in (("results", entries), ("ledger", published)):
        for name, e in group.items():
            cid = name if source == "results" else f"{name} [published]"
            params = {"model": e["model"], "data": e["data"], "profile": e.get("profile"), "n seeds": len(e["seeds"]),
                      "parameters": e.get("parameters"), "stopped by": sorted({str(s["stopped_by"]) for s in e["seeds"]}),
                      **{f"budget.{k}": v for k, v in (e.get("budget") or {}).items()},
                      **{f"config.{k}": v for k, v in flat(e.get("config") or {}).items()},
                      **{f"settings.{k}": v for k, v in flat(e.get("settings") or {}).items() if k != "parameters"}}
            choices[cid] = {"name": name, "source": source, "data": e["data"], "page": f"exp-{name}.html",
                            "summary": {k: {"mean": s["mean"], "ci95": s.get("ci95"), "n": s["n"]}
                                        for k, s in e["summary"].items()},
                            "params": {k: v if isinstance(v, (int, float, str)) or v is None else json.dumps(v)
                                       for k, v in params.items()},
                            "curves": e["curves"]}
    keys = sorted({k for c in choices.values() for k in c["summary"]} |
                  {col for c in choices.values() for curve in c["curves"].values() for col in curve})
    units = [e.get("settings") or {} for e in [*entries.values(), *published.values()]]
    return {"choices": choices, "directions": {k: direction(k) for k in keys}, "labels": {k: label_with(k, units) for k in keys}}


def compare_page(entries: dict[str, dict[str, Any]], published: dict[str, dict[str, Any]]) -> str:
    data = compare_data(entries, published)
    by_task: dict[str, list[str]] = {}
    for cid, c in sorted(data["choices"].items()):
        by_task.setdefault(str(c["data"]), []).append(cid)
    picker = "".join(
        f'<fieldset><legend>{esc(task)}</legend>' + "".join(
            f'<label><input type="checkbox" name="exp" value="{esc(cid)}"> {esc(cid)}</label>' for cid in cids)
        + "</fieldset>" for task, cids in sorted(by_task.items()))
    body = ('<h1>Compare experiments</h1><p>Tick two or more experiments (yours, or published ones from the ledger). '
            'Metrics show mean ± 95% CI with the best of each row in bold green; Δ is against the first ticked '
            'column; rows whose values differ are highlighted.</p>'
            f'<form id="compare-picker">{picker}</form>'
            '<p><label><input type="checkbox" id="only-diff"> only rows that differ</label></p>'
            '<div id="compare-out"><p class="hint">Pick at least two experiments.</p></div>'
            '<div id="compare-curves" hidden><h2>Curves</h2><label>metric <select id="compare-metric"></select></label>'
            '<div class="chart" id="compare-chart"></div></div>')
    return page("Compare", "compare.html", body, {"compare": data})
