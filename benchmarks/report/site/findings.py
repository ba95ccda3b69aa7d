"""The claims page and the studies page: what the suite found, published (ledger/) or from your own runs.

The claims page opens with one row per claim: its statement, its verdict, and the effect each judged test
measured with its 95% interval, so the first screen answers "what did it find". Each claim follows with
its verdict texts, power, table, chart and (when published) every cell-seed's run and cost. The studies
page opens with each study's best parameters and value, then every trial and Optuna's own figures.
"""

from __future__ import annotations

import json
import math
from typing import Any

from benchmarks.report.compute import cpu_hours
from benchmarks.report.effects import effect_text, verdict_numbers
from benchmarks.report.site.charts import claim_chart
from benchmarks.report.site.collect import verdict_status
from benchmarks.report.site.html import chart_div, esc, finite, num, page, table
from benchmarks.report.site.vocab import label

BADGE = {"Supported": "ok", "Refuted": "bad", "Inconclusive": "warn"}
SOURCE = {"ledger": '<span class="badge pubd">published</span>', "results": '<span class="badge">your run</span>'}


def _badge(outcome: str | None) -> str:
    return f'<span class="badge {BADGE.get(outcome or "", "")}">{esc(outcome or "not judged")}</span>'


def _numbers(claim: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Any] | None:
    return verdict.get("numbers") or verdict_numbers(claim, verdict)


def _power_text(n: dict[str, Any]) -> str:
    if n.get("detectable") is None:
        return "too few seeds for a power estimate"
    need = n.get("seeds_needed")
    return (f"with {n['n'][0]} and {n['n'][1]} seeds the test detects differences above {n['detectable']:.3g} at 80% "
            f"power; {'about ' + str(need) if need else 'more than 1000'} seeds per arm would detect the margin "
            f"{n['margin']:g}")


def _cell_seeds(claim: dict[str, Any]) -> str:
    """Every published cell-seed: its value, run, commit, machine and CPU time."""
    rows = []
    for cell in claim.get("cells", []):
        for seed, s in sorted(cell.get("seeds", {}).items(), key=lambda kv: int(kv[0])):
            prov = s.get("provenance") or {}
            spent = prov.get("compute") or {}
            rows.append([esc(cell["arm"]), esc(cell.get("value")), esc(seed), esc(num(s["metrics"].get(claim["metric"]), 5)),
                         esc(s.get("stopped_by")), f'<code>{esc(prov.get("run_id"))}</code>',
                         f'<code>{esc(str(prov.get("git_commit"))[:12])}</code>', esc((spent.get("machine") or {}).get("host")),
                         esc(cpu_hours(spent.get("cpu_s"))) + ("" if spent.get("how") == "process CPU time" else " (est.)")])
    if not rows:
        return ""
    head = ["arm", esc(claim["sweep"].get("path") or ""), "seed", esc(claim["metric"]), "stopped by", "MLflow run", "commit",
            "host", "CPU"]
    return f'<details><summary>{len(rows)} cell-seeds: runs and cost</summary>{table(head, rows, "cell-seeds")}</details>'


def _summary_row(claim: dict[str, Any]) -> list[str]:
    effects = [effect_text(n, claim.get("unit", "")) for v in claim.get("verdicts", []) if (n := _numbers(claim, v))]
    seeds = sorted({len(r.get("seeds", [])) for r in claim.get("table", [])})
    spent = (claim.get("compute") or {}).get("cpu_s")
    return [f'<a href="#claim-{esc(claim["claim"])}">{esc(claim["claim"])}</a> {SOURCE.get(claim.get("source"), "")}',
            esc(claim.get("statement")), _badge(claim.get("outcome")), "<br>".join(map(esc, effects)) or "–",
            esc(", ".join(map(str, seeds))), esc(cpu_hours(spent) if spent is not None else "–")]


def claims_page(claims: list[dict[str, Any]], images: dict[str, str]) -> str:
    charts = {}
    parts = ['<h1>Claims</h1><p>Each claim of the course notes as an experiment: arms × a sweep × seeds. A test is '
             'Supported or Refuted by Welch\'s 95% interval of the gain (or Refuted by an equivalence test at its margin, '
             'the smallest difference that matters), else Inconclusive, with what its seeds could detect; a claim is '
             'Refuted if any test is. Effects are gains in the metric\'s better direction.</p>']
    if claims:
        parts.append(table(["claim", "statement", "verdict", "effect (95% CI)", "seeds per cell", "CPU"],
                           [_summary_row(c) for c in claims], "claims-summary"))
    for claim in claims:
        name = str(claim.get("claim"))
        metrics = [claim.get("metric"), *claim.get("also", [])]
        items = []
        for v in claim.get("verdicts", []):
            n = _numbers(claim, v)
            extra = f'<br><span class="note">{esc(_power_text(n))}</span>' if n else ""
            unit = f' {esc(claim["unit"])}' if claim.get("unit") else ""
            margin = f' (margin {num(v["margin"])}{unit})' if finite(v.get("margin")) else ""
            items.append(f'<li>{_badge(verdict_status(v))} '
                         f'{esc(v.get("type"))}{margin}: {esc(v.get("text"))}{extra}</li>')
        rows = [[esc(r.get("arm")), esc(r.get("value")), str(len(r.get("seeds", []))),
                 *[esc(f"{num(r[m]['mean'])} ± {num(r[m].get('ci'), 2)}") if isinstance(r.get(m), dict) else "–"
                   for m in metrics]] for r in claim.get("table", [])]
        charts[f"claim-{name}"] = claim_chart(claim)
        png = images.get(str(claim.get("png")))
        published = (f' <span class="note">published: {esc(claim["published_outcome"])}</span>'
                     if claim.get("published_outcome") else "")
        parts.append(f'<section class="claim" id="claim-{esc(name)}"><h2>{esc(name)} {_badge(claim.get("outcome"))} '
                     f'{SOURCE.get(claim.get("source"), "")}{published}</h2>'
                     f'<p class="statement">{esc(claim.get("statement"))}</p><ul class="verdicts">{"".join(items)}</ul>'
                     + table(["arm", esc((claim.get("sweep") or {}).get("path") or ""), "n",
                              *[esc(label(m)) for m in metrics]], rows, "claim-table")
                     + chart_div(f"claim-{name}") + _cell_seeds(claim)
                     + (f'<figure><img src="{esc(png)}" alt="{esc(name)} plot"><figcaption>claim.png</figcaption></figure>'
                        if png else "") + "</section>")
    if not claims:
        parts.append('<p class="empty">No claim has run or been published yet: <code>archbench claim NAME</code>, then '
                     '<code>archbench publish --claim NAME</code>.</p>')
    return page("Claims", "claims.html", "".join(parts), {"charts": charts})


def _value(value: Any) -> str:
    return num(value, 6) if isinstance(value, float) and math.isfinite(value) else esc(value)


def _trials_table(study: dict[str, Any]) -> str:
    trials = study.get("trials") or []
    if not trials:
        return ('<p class="note">Only the best trial is known here (results/tune/); publish the study '
                f'(<code>archbench publish --study {esc(study["study"])}</code>) for every trial and Optuna\'s figures.</p>')
    rows = [[esc(t["number"]), esc(t["state"]), _value(t.get("value")),
             esc(", ".join(f"{k}={_value(v)}" for k, v in sorted(t["params"].items()))),
             esc(t.get("pruned_at_step") if t.get("pruned_at_step") is not None else ""),
             esc(f"trial {t['repeat_of']}" if t.get("repeat_of") is not None else ""),
             esc(cpu_hours((t.get("compute") or {}).get("cpu_s")))] for t in trials]
    return (f'<details><summary>{len(trials)} trials</summary>'
            + table(["trial", "state", esc(study.get("metric")), "params", "pruned at step", "repeat of", "CPU"],
                    rows, "trials") + "</details>")


def studies_page(studies: list[dict[str, Any]]) -> str:
    from benchmarks.report.site.study_figures import study_charts

    charts: dict[str, Any] = {}
    parts = ['<h1>Studies</h1><p>Optuna studies: each one\'s best parameters and value first, then every trial and '
             'Optuna\'s own figures (optimisation history, parameter importance, slices, parallel coordinates, the '
             'values the pruner saw), rebuilt from the published trials.</p>']
    summary = []
    for s in studies:
        counts, best = s.get("counts") or {}, s.get("best") or {}
        summary.append([f'<a href="#study-{esc(s["study"])}">{esc(s["study"])}</a> {SOURCE.get(s.get("source"), "")}',
                        esc(s.get("experiment")), esc(f"{s.get('metric')}, {s.get('direction', 'minimize')}"),
                        f"<b>{_value(best.get('value'))}</b> (trial {esc(best.get('trial'))})",
                        f"<code>{esc(json.dumps(best.get('params'), sort_keys=True))}</code>",
                        esc(f"{counts.get('COMPLETE')} complete, {counts.get('PRUNED')} pruned, {counts.get('FAIL') or 0} "
                            f"failed; n_trials {s.get('n_trials')}"),
                        esc(cpu_hours((s.get("compute") or {}).get("cpu_s")) if s.get("compute") else "–")])
    if summary:
        parts.append(table(["study", "experiment", "objective", "best value", "best parameters", "trials", "CPU"],
                           summary, "studies-summary"))
    for s in studies:
        drawn = study_charts(s) if s.get("trials") else {}
        charts |= {f"study-{s['study']}-{k}": v for k, v in drawn.items()}
        facts = [[what, f"<code>{esc(v if isinstance(v, str) else json.dumps(v, sort_keys=True))}</code>"]
                 for what, v in (("definition hash", s.get("definition_hash")), ("search space", s.get("search_space")),
                                 ("trial budget", s.get("trial_budget")), ("pruner", s.get("pruner")),
                                 ("command", s.get("command") or f"archbench tune {s['study']}")) if v is not None]
        parts.append(f'<section class="study" id="study-{esc(s["study"])}"><h2>{esc(s["study"])} '
                     f'{SOURCE.get(s.get("source"), "")}</h2><p>{esc(s.get("description"))}</p>'
                     + table(["", ""], facts, "facts") + _trials_table(s)
                     + "".join(chart_div(f"study-{s['study']}-{k}") for k in drawn) + "</section>")
    if not studies:
        parts.append('<p class="empty">No study has run or been published yet: <code>archbench tune STUDY</code>, then '
                     '<code>archbench publish --study STUDY</code>.</p>')
    return page("Studies", "studies.html", "".join(parts), {"charts": charts})
