"""The leaderboard page (index.html): one table per task with its trivial baseline and anchors (board_model.py),
each row with the settings that decide what it means, who tuned it, what it cost, and the claims that test it."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from benchmarks.core.stats import within
from benchmarks.report.compute import cpu_hours, run_compute, total
from benchmarks.report.model_defaults import UNKNOWN, model_default
from benchmarks.report.site.board_model import boards, cell, stat_of, unit_of
from benchmarks.report.site.charts import overlay_chart
from benchmarks.report.site.html import chart_div, esc, mean_ci, num, page, settings_tooltip
from benchmarks.report.site.pages import budget_text, run_links, stopped_text
from benchmarks.report.site.vocab import direction, lookup

ARROW = {"min": "↓", "max": "↑", "none": ""}
# Config leaves that never change what a row means (loaders, sampling for show, paths).
NOISE = {"batch_size", "num_workers", "sample_count", "sample_length", "fid_checkpoint", "data_dir", "download"}
MAX_RECIPE = 6


def entry_compute(entry: dict[str, Any]) -> dict[str, Any]:
    """CPU time of an experiment's seeds, as the seeds table records them (compute.py's rules)."""
    return total([run_compute({"fit_s": s.get("fit_s"), "cpu_s": s.get("cpu_s"),
                               "machine": (s.get("machine") or {}) | {"threads": s.get("threads")}}) for s in entry["seeds"]])


def _leaf(row: dict[str, Any], key: str) -> tuple[Any, bool] | None:
    """(value, is_default) of a config leaf such as model_args.forget_bias; None when unknown."""
    root, name = key.split(".", 1)
    conf = (row.get("config") or {}).get(root) or {}
    if name in conf:
        return conf[name], False
    if root == "data_args" and name in ((row.get("settings") or {}).get("data") or {}):
        return row["settings"]["data"][name], True
    default = model_default(str(row.get("model")), name) if root == "model_args" else UNKNOWN
    return None if default is UNKNOWN else (default, True)


def recipe_keys(table: dict[str, Any]) -> list[str]:
    """The task's declared settings, then every model/data argument on which the table's runs differ."""
    leaves: dict[str, set[str]] = defaultdict(set)
    for root in ("model_args", "data_args"):
        names = {n for row in table["runs"] for n in ((row.get("config") or {}).get(root) or {})} - NOISE
        for name in names:
            for row in table["runs"]:
                value = ((row.get("config") or {}).get(root) or {}).get(name, "<default>")
                leaves[f"{root}.{name}"].add(json.dumps(value, sort_keys=True))
    keys = list(table["task"].recipe) + [k for k in sorted(leaves) if len(leaves[k]) > 1]
    return list(dict.fromkeys(keys))[:MAX_RECIPE]


def recipe_text(row: dict[str, Any], keys: list[str]) -> str:
    """'cell lstm · forget_bias 1.0 (default) · lag 100'; '–' for a row whose config is unknown (its defaults
    cannot be told from the values it set)."""
    if not row.get("config"):
        return "–"
    parts = []
    for key in keys:
        found = _leaf(row, key)
        if found is not None:
            value, default = found
            parts.append(f"{key.split('.', 1)[1]} {value if not isinstance(value, (list, dict)) else json.dumps(value)}"
                         + (" (default)" if default else ""))
    return " · ".join(parts) or "–"


def _tuned(row: dict[str, Any], ctx: dict[str, Any]) -> str:
    study = ctx["tuned_by"].get(row["name"])
    if not study:
        return ""
    best = ((ctx["studies"].get(study) or {}).get("best") or {}).get("params") or {}
    args = (row.get("config") or {}).get("model_args") or {}
    differ = [k for k, v in best.items() if k in args and _decoded(v) != args[k]]
    note = f" (differs from its best {differ[0]} = {best[differ[0]]})" if differ else ""
    return (f' <a class="badge tuned" href="studies.html#study-{esc(study)}" title="model arguments chosen by the Optuna '
            f'study {esc(study)}">tuned by {esc(study)}{esc(note)}</a>')


def _decoded(value: Any) -> Any:
    """Optuna stores list-valued choices as their JSON text (benchmarks/study/spec.py)."""
    if isinstance(value, str) and value[:1] in "[{":
        return json.loads(value)
    return value


def _metric_cell(row: dict[str, Any], column: tuple[str, str]) -> str:
    stat = cell(row, column)
    key, unit = column
    if not stat:
        return '<td class="num" data-v="">–</td>'
    attrs = f'data-key="{esc(key)}" data-unit="{esc(unit)}" data-v="{stat["mean"]!r}"'
    if row["kind"] == "anchor":
        return (f'<td class="num" {attrs} title="{esc(row["protocol"])}">{"≈" if row.get("approx") else ""}'
                f'{num(row["value"])}</td>')
    if row["kind"] == "baseline":
        return f'<td class="num" {attrs} title="{esc(row["how"])}">{esc(num(stat["mean"]))}</td>'
    tip = settings_tooltip(row, key) + (f"\n{stat['derived']}" if stat.get("derived") else "")
    return (f'<td class="num" {attrs} data-mean="{stat["mean"]!r}" data-ci="{stat.get("ci95")!r}" data-n="{stat["n"]}" '
            f'title="{esc(tip)}"><a href="exp-{esc(row["name"])}.html#seeds">{esc(mean_ci(stat))}</a></td>')


def older_text(row: dict[str, Any]) -> str:
    """What the "older" badge means, for its tooltip."""
    return (f"published from an older {row['older']} than params.yaml and the code define now: the number is the "
            f"older recipe's until `archbench train {row['name']}` and `archbench publish {row['name']}` run again")


def _published_cell(row: dict[str, Any], key: str | None, ledger: dict[str, dict[str, Any]]) -> str:
    if row["source"] == "ledger":
        return '<td class="pub">this row is the published result</td>'
    pub = (ledger.get(row["name"]) or {}).get("summary", {}).get(key) if key else None
    ours = stat_of(row, key)
    if not pub:
        return '<td class="pub">–</td>'
    inside = within(ours["mean"], pub) if ours else None
    verdict = {True: '<span class="badge ok">within CI</span>', False: '<span class="badge bad">outside CI</span>',
               None: '<span class="badge">no CI (1 seed)</span>'}[inside]
    return f'<td class="pub" data-within="{inside}">{esc(mean_ci(pub))} {verdict if ours else ""}</td>'


def _row(row: dict[str, Any], table: dict[str, Any], keys: list[str], rank: int, ctx: dict[str, Any]) -> str:
    cells = "".join(_metric_cell(row, c) for c in table["columns"])
    if row["kind"] == "anchor":
        return (f'<tr class="row-anchor"><td class="rank"></td><td>{esc(row["model"])} <span class="badge anchor">'
                f'published anchor</span></td><td>{esc(row["source"])}</td><td></td><td></td>{cells}'
                f'<td class="pub" title="{esc(row["protocol"])}">protocol below</td><td colspan="5"></td></tr>')
    if row["kind"] == "baseline":
        command = f"; run by `{row['command']}`" if row.get("command") else ""
        return (f'<tr class="row-baseline" title="{esc(row["how"] + command)}"><td class="rank"></td><td>{esc(row["name"])} '
                f'<span class="badge base">trivial baseline</span></td><td>{esc(row["model"])}</td>'
                f'<td class="recipe">{esc(row["recipe"])}</td><td></td>{cells}<td class="pub">computed by the suite on the '
                f'same split</td><td colspan="5"></td></tr>')
    badge = ' <span class="badge pubd">published</span>' if row["source"] == "ledger" else ""
    if row.get("older"):  # published, but today's params or code would make another number
        badge += (f' <span class="badge warn older" title="{esc(older_text(row))}">older {esc(row["older"])}'
                  f'</span>')
    size = f"{row['parameters']:,}" if isinstance(row.get("parameters"), int) else "–"
    budget, budget_tip = budget_text(row)
    spent = entry_compute(row)
    primary = table["primary"][0] if table["primary"] else None
    return (f'<tr class="row-{row["source"]}" data-exp="{esc(row["name"])}"><td class="rank">{rank}</td>'
            f'<td><a href="exp-{esc(row["name"])}.html">{esc(row["name"])}</a>{badge}{_tuned(row, ctx)}</td>'
            f'<td>{esc(row["model"])}</td><td class="recipe">{esc(recipe_text(row, keys))}</td>'
            f'<td class="num">{len(row["seeds"])}</td>{cells}' + _published_cell(row, primary, ctx["ledger"])
            + f'<td class="num">{size}</td><td title="{esc(budget_tip)}">{esc(budget)}</td><td>{stopped_text(row)}</td>'
            f'<td class="num" title="{esc(", ".join(spent["how"]) or "not recorded")}">{cpu_hours(spent["cpu_s"] if spent["how"] else None)}</td>'
            f'<td>{run_links(row)}</td></tr>')


def _claim_notes(table: dict[str, Any], claims: list[dict[str, Any]]) -> str:
    """The claims that test this task's model on this data: their verdict, and the arms they compare, so that a row
    run under another recipe (e.g. another forget bias) is not read as the claim's answer."""
    notes, models = [], {r["model"] for r in table["runs"]}
    for claim in claims:
        if claim.get("model") not in models or claim.get("data") != table["data"]:
            continue
        arms = "; ".join(f"{arm} {json.dumps(over, sort_keys=True)}" for arm, over in (claim.get("arm_overrides") or {}).items())
        sweep = claim.get("sweep") or {}
        seeds = len((claim.get("table") or [{}])[0].get("seeds", [])) or len(claim.get("seeds") or [])
        over = f" over {sweep['path']} = {sweep.get('values')}" if sweep.get("path") else ""
        if claim.get("source") == "params":  # defined, not run or published yet
            name, state = esc(claim["claim"]), "defined in params.yaml, no verdict published yet"
        else:
            name = f'<a href="claims.html#claim-{esc(claim["claim"])}">{esc(claim["claim"])}</a>'
            state = f'<b>{esc(claim.get("outcome") or "not judged")}</b>'
        notes.append(f'<li>Claim {name} ({state}, {seeds} seeds per cell): {esc(claim.get("statement"))} It compares '
                     f'{esc(arms or ", ".join(claim.get("arms", [])))}{esc(over)}. The rows above ran the recipe their row '
                     f'shows; where it differs from the claim\'s arms, the claim is the test of the statement.</li>')
    return f'<ul class="claims-here">{"".join(notes)}</ul>' if notes else ""


def board_html(table: dict[str, Any], ctx: dict[str, Any]) -> str:
    keys = recipe_keys(table)
    head = "".join(f'<th class="sortable" data-key="{esc(k)}" data-unit="{esc(u)}" data-dir="{direction(k)}" '
                   f'title="{esc(getattr(lookup(k), "description", ""))}">{esc(k)}{" (" + esc(u) + ")" if u else ""} '
                   f'{ARROW[direction(k)]}</th>' for k, u in table["columns"])
    body, rank = [], 0
    for row in table["rows"]:
        rank += row["kind"] == "run"
        body.append(_row(row, table, keys, rank, ctx))
    primary = table["primary"]
    how = (f"Ranked by {esc(primary[0])}{' (' + esc(primary[1]) + ')' if primary[1] else ''}, "
           f"{'higher' if direction(primary[0]) == 'max' else 'lower'} is better" if primary else "No ranked metric")
    base = "" if any(r["kind"] == "baseline" for r in table["rows"]) else (
        " No trivial baseline row: " + ("none is defined for this task." if not table["task"].baseline else
                                        f"run <code>archbench baselines</code> ({esc(table['task'].baseline)})."))
    notes = "".join(f"<li><b>{esc(a['model'])}</b>: {num(a['value'])} {esc(a['metric'])}. Source: {esc(a['source'])}. "
                    f"Protocol: {esc(a['protocol'])}.</li>" for a in table["anchors"])
    return (f'<section class="task" id="task-{esc(table["id"])}" data-task="{esc(table["kind"])}">'
            f'<h2>{esc(table["title"])}</h2><p class="note">{how}. Mean ± half-width of the 95% Student-t interval over '
            f'n seeds; hover a number for its seeds, runs and settings; click a header to re-sort.{base}</p>'
            f'<div class="scroll"><table class="board" data-primary="{esc(primary[0] if primary else "")}"><thead><tr>'
            f'<th>#</th><th>experiment</th><th>model</th><th>recipe</th><th>n</th>{head}<th>published '
            f'{esc(primary[0] if primary else "")}</th><th>parameters</th><th>budget</th><th>stopped by</th><th>CPU</th>'
            f'<th>MLflow runs</th></tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            + (f'<ul class="anchors">{notes}</ul>' if notes else "") + _claim_notes(table, ctx["claims"]) + "</section>")


def _charts(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Curves of the table's runs, one chart per unit (never two units on one axis)."""
    runs = table["runs"]
    columns = {c for e in runs for curve in e["curves"].values() for c in curve}
    fid = table["kind"] in ("sample_quality", "paired_translation") and "val/fid" in columns
    key = "val/fid" if fid else "val/loss" if "val/loss" in columns else next(
        (c for c in sorted(columns) if c.startswith("val/")), None)
    if key is None:
        return {}
    by_unit: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in runs:
        by_unit[unit_of(key, e.get("settings"))].append(e)
    charts = {}
    for i, (unit, members) in enumerate(sorted(by_unit.items())):
        chart = overlay_chart(members, key, f"{table['title']}: {key} per epoch" + (f" ({unit})" if len(by_unit) > 1 else ""))
        if chart:
            chart["layout"]["yaxis"]["title"]["text"] = f"{key} ({unit})" if unit else key
            charts[f"task-{table['id']}-{i}"] = chart | {"unit": unit, "key": key}
    return charts


def index_page(entries: dict[str, dict[str, Any]], published: dict[str, dict[str, Any]], ctx: dict[str, Any]) -> str:
    charts: dict[str, Any] = {}
    sections = []
    for table in boards(entries, published, ctx["baselines"]):
        section = board_html(table, ctx)
        drawn = _charts(table)
        charts |= drawn
        sections.append(section.removesuffix("</section>") + "".join(chart_div(c) for c in drawn) + "</section>")
    intro = ('<h1>Leaderboards</h1><p>One table per task; a dataset may host several (a classifier, likelihood models '
             'and generators of Fashion-MNIST), and no column mixes units. Rows marked <span class="badge pubd">published'
             '</span> come from the ledger (ledger/*.json, committed results), and <span class="badge warn">older code'
             '</span> or <span class="badge warn">older config</span> beside one says that today\'s params.yaml or code '
             'would no longer make it (its number is the older recipe\'s until rerun); <span class="badge base">trivial baseline'
             '</span> rows are computed by <code>archbench baselines</code> on the rows\' own split; anchors are numbers '
             'from the literature, with their source and protocol.</p>' + ctx.get("compute_html", ""))
    if not sections:
        sections = ['<p class="empty">No results and no ledger yet: run <code>archbench train EXP</code> or '
                    '<code>dvc repro</code>, then <code>archbench report</code>.</p>']
    return page("Leaderboard", "index.html", intro + "".join(sections), {"charts": charts})

