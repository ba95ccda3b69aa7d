"""The leaderboard (index.html) and one page per experiment.

A leaderboard is per task (dataset): rows are experiments, ours and published ones, plus the published
anchors from the literature; they are sorted by the task's primary metric in that metric's direction.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from benchmarks.core.stats import within
from benchmarks.report.site.anchors import anchors_for
from benchmarks.report.site.charts import experiment_curve_charts, overlay_chart
from benchmarks.report.site.html import chart_div, esc, finite, flat, mean_ci, num, page, settings_tooltip, table
from benchmarks.report.site.vocab import direction, label_with, lookup

# The metric a task is ranked by, in this order of preference (the first the task's rows report).
PREFERRED = ("test/bleu", "test/fid_ratio", "test/fid", "test/bpd", "test/nll_k500", "test/acc", "test/loss",
             "test/bpc", "test/elbo")
ARROW = {"min": "↓", "max": "↑", "none": ""}


def board_keys(entries: list[dict[str, Any]], anchors: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    """(primary metric, columns): test metrics and best validation values; the primary first."""
    keys = {k for e in entries for k in e["summary"] if (k.startswith("test/") or k.endswith("_best"))
            and not k.endswith("_std")} | {a["metric"] for a in anchors}
    ranked = [k for k in keys if direction(k) != "none"]
    primary = next((a["metric"] for a in anchors), None) or next((k for k in PREFERRED if k in ranked), None) \
        or (sorted(k for k in ranked if k.startswith("test/")) or sorted(ranked) or [None])[0]
    return primary, ([primary] if primary else []) + sorted(keys - {primary})


def sort_value(value: float | None, key: str | None) -> tuple[int, float]:
    """Best first in the metric's direction; rows without the value last."""
    if key is None or value is None or not finite(value):
        return (1, 0.0)
    return (0, -value if direction(key) == "max" else value)


def rows_for(data: str, entries: dict[str, dict[str, Any]], published: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Our experiments of one task, then published ones we have not rerun (the ledger alone fills a fresh clone)."""
    ours = [e for e in entries.values() if e["data"] == data]
    return ours + [e for n, e in published.items() if e["data"] == data and n not in entries]


def _budget(entry: dict[str, Any]) -> tuple[str, str]:
    budget = entry.get("budget") or {}
    parts = [f"{k.removeprefix('max_')} {budget[k]}" for k in ("max_epochs", "max_steps") if budget.get(k) not in (None, -1)]
    return ", ".join(parts) or "–", f"max_time (safety limit): {budget.get('max_time')}"


def _stopped(entry: dict[str, Any]) -> str:
    counts = Counter(str(s.get("stopped_by") or "–") for s in entry["seeds"])
    text = ", ".join(esc(f"{k} ×{n}" if n > 1 else k) for k, n in sorted(counts.items()))
    if entry.get("truncated") or "max_time" in counts:
        text += (' <span class="badge warn" title="a seed was cut by max_time, a safety limit: its numbers are '
                 'not what the budget would give">truncated</span>')
    return text


def run_links(entry: dict[str, Any]) -> str:
    out = []
    for s in entry["seeds"]:
        tip = esc(f"MLflow run {s.get('run_id')}; commit {s.get('commit')}; {s.get('device')}, "
                  f"{s.get('threads')} threads; fit {s.get('fit_s')} s; finished {s.get('finished_at')}")
        if s.get("link"):
            out.append(f'<a class="run" href="{esc(s["link"])}" target="_blank" rel="noopener" title="{tip}">s{s["seed"]}</a>')
        else:
            out.append(f'<span class="run" title="{tip}; no MLflow server URL (report --mlflow-url)">s{s["seed"]}</span>')
    return " ".join(out)


def cpu_label(machine: dict[str, Any]) -> str:
    """The CPU as the seeds table names it: its model and vector ISA where recorded (older records: the arch)."""
    parts = [machine.get("cpu_model") or machine.get("cpu") or "?", machine.get("cpu_capability")]
    return ", ".join(p for p in parts if p)


def run_link_cell(seed: dict[str, Any]) -> str:
    """The run id, a link to the MLflow UI when there is one."""
    code = f'<code>{esc(seed.get("run_id"))}</code>'
    return f'<a href="{esc(seed["link"])}" target="_blank" rel="noopener">{code}</a>' if seed.get("link") else code


def _metric_cell(entry: dict[str, Any], key: str) -> str:
    stat = entry["summary"].get(key)
    if not stat:
        return '<td class="num" data-v="">–</td>'
    ci = stat.get("ci95")
    href = f"exp-{entry['name']}.html#seeds"
    return (f'<td class="num" data-v="{stat["mean"]!r}" data-mean="{stat["mean"]!r}" '
            f'data-ci="{ci!r}" data-n="{stat["n"]}" title="{esc(settings_tooltip(entry, key))}">'
            f'<a href="{esc(href)}">{esc(mean_ci(stat))}</a></td>')


def _published_cell(entry: dict[str, Any], key: str | None, ledger: dict[str, dict[str, Any]]) -> str:
    if entry["source"] == "ledger":
        return '<td class="pub">this row is the published result</td>'
    pub = (ledger.get(entry["name"]) or {}).get("summary", {}).get(key) if key else None
    ours = entry["summary"].get(key) if key else None
    if not pub:
        return '<td class="pub">–</td>'
    inside = within(ours["mean"], pub) if ours else None
    verdict = {True: '<span class="badge ok">within CI</span>', False: '<span class="badge bad">outside CI</span>',
               None: '<span class="badge">no CI (1 seed)</span>'}[inside]
    return f'<td class="pub" data-within="{inside}">{esc(mean_ci(pub))} {verdict if ours else ""}</td>'


def _anchor_row(anchor: dict[str, Any], keys: list[str]) -> str:
    cells = "".join(
        f'<td class="num" data-v="{anchor["value"]!r}" title="{esc(anchor["protocol"])}">'
        f'{"≈" if anchor.get("approx") else ""}{num(anchor["value"])}</td>' if k == anchor["metric"]
        else '<td class="num" data-v="">–</td>' for k in keys)
    return (f'<tr class="row-anchor"><td class="rank"></td><td>{esc(anchor["model"])} <span class="badge anchor">'
            f'published anchor</span></td><td>{esc(anchor["source"])}</td><td></td>{cells}'
            f'<td class="pub">{esc(anchor["protocol"])}</td><td colspan="4"></td></tr>')


def leaderboard(data: str, rows: list[dict[str, Any]], ledger: dict[str, dict[str, Any]]) -> str:
    anchors = anchors_for(data)
    primary, keys = board_keys(rows, anchors)
    units = [e.get("settings") or {} for e in rows]
    head = "".join(f'<th class="sortable" data-key="{esc(k)}" data-dir="{direction(k)}" '
                   f'title="{esc(getattr(lookup(k), "description", ""))}">{esc(label_with(k, units))} '
                   f'{ARROW[direction(k)]}</th>' for k in keys)
    # Our rows, published rows and anchors in one order, so an anchor sits where its value ranks.
    ranked = [(sort_value(e["summary"].get(primary, {}).get("mean"), primary), e["name"], e) for e in rows]
    ranked += [(sort_value(a["value"] if a["metric"] == primary else None, primary), "~" + a["model"], a) for a in anchors]
    body, rank = [], 0
    for _, _, e in sorted(ranked, key=lambda t: (t[0], t[1])):
        if "seeds" not in e:
            body.append(_anchor_row(e, keys))
            continue
        rank += 1
        badge = ' <span class="badge pubd">published</span>' if e["source"] == "ledger" else ""
        size = f"{e['parameters']:,}" if isinstance(e.get("parameters"), int) else "–"
        budget, budget_tip = _budget(e)
        body.append(f'<tr class="row-{e["source"]}" data-exp="{esc(e["name"])}"><td class="rank">{rank}</td>'
                    f'<td><a href="exp-{esc(e["name"])}.html">{esc(e["name"])}</a>{badge}</td><td>{esc(e["model"])}</td>'
                    f'<td class="num">{len(e["seeds"])}</td>' + "".join(_metric_cell(e, k) for k in keys)
                    + _published_cell(e, primary, ledger) + f'<td class="num">{size}</td>'
                    f'<td title="{esc(budget_tip)}">{esc(budget)}</td><td>{_stopped(e)}</td><td>{run_links(e)}</td></tr>')
    how = (f"Ranked by {esc(label_with(primary, units))}, {'higher' if direction(primary) == 'max' else 'lower'} is better"
           if primary else "No ranked metric")
    notes = "".join(f"<li><b>{esc(a['model'])}</b>: {num(a['value'])} {esc(a['metric'])}. Source: {esc(a['source'])}. "
                    f"Protocol: {esc(a['protocol'])}.</li>" for a in anchors)
    return (f'<section class="task" id="task-{esc(data)}"><h2>{esc(data)}</h2>'
            f'<p class="note">{how}. Mean ± half-width of the 95% Student-t interval over n seeds; hover a number '
            f'for its seeds, runs and settings; click a header to re-sort.</p>'
            f'<div class="scroll"><table class="board" data-primary="{esc(primary or "")}"><thead><tr><th>#</th>'
            f'<th>experiment</th><th>model</th><th>n</th>{head}<th>published {esc(primary or "")}</th><th>parameters</th>'
            f'<th>budget</th><th>stopped by</th><th>MLflow runs</th></tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            + (f'<ul class="anchors">{notes}</ul>' if notes else "") + "</section>")


def index_page(entries: dict[str, dict[str, Any]], published: dict[str, dict[str, Any]],
               ledger: dict[str, dict[str, Any]]) -> str:
    tasks = sorted({str(e["data"]) for e in [*entries.values(), *published.values()]})
    charts: dict[str, Any] = {}
    sections = []
    for data in tasks:
        rows = rows_for(data, entries, published)
        section = leaderboard(data, rows, ledger)
        columns = {c for e in rows for curve in e["curves"].values() for c in curve}
        key = "val/loss" if "val/loss" in columns else next((c for c in sorted(columns) if c.startswith("val/")), None)
        chart = overlay_chart(rows, key, f"{data}: {key} per epoch, every experiment and seed") if key else None
        if chart:
            charts[f"task-{data}"] = chart
            section = section.removesuffix("</section>") + chart_div(f"task-{data}") + "</section>"
        sections.append(section)
    intro = ('<h1>Leaderboards</h1><p>One table per task. Rows marked <span class="badge pubd">published</span> come '
             'from the ledger (ledger/*.json, committed results); the "published" column puts the ledger beside your '
             'own rerun. Anchors are numbers from the literature, with their source and protocol.</p>')
    if not sections:
        sections = ['<p class="empty">No results and no ledger yet: run <code>archbench train EXP</code> or '
                    '<code>dvc repro</code>, then <code>archbench report</code>.</p>']
    return page("Leaderboard", "index.html", intro + "".join(sections), {"charts": charts})


def experiment_page(entry: dict[str, Any], ledger: dict[str, dict[str, Any]], images: dict[str, str]) -> str:
    """Facts, config, settings, per-seed table (every value links to its MLflow run), curves, samples."""
    name = entry["name"]
    keys = sorted(entry["summary"])
    seed_rows = []
    for s in entry["seeds"]:
        cells = []
        for k in keys:
            v = s["metrics"].get(k)
            text = num(v, 6)
            cells.append(f'<a href="{esc(s["link"])}" target="_blank" rel="noopener">{text}</a>' if s.get("link") and finite(v)
                         else f'<span title="MLflow run {esc(s.get("run_id"))}">{text}</span>')
        m = s.get("machine") or {}
        seed_rows.append([str(s["seed"]), *cells, esc(s.get("stopped_by")), esc(s.get("epochs")), esc(s.get("steps")),
                          esc(s.get("fit_s")), f'<code>{esc(str(s.get("commit"))[:12])}</code>',
                          esc(f"{m.get('host', '?')} ({cpu_label(m)}, {s.get('threads')} threads, "
                              f"{m.get('gpu') or s.get('device') or 'cpu'})"), run_link_cell(s)])
    seeds_table = table(["seed", *[esc(k) for k in keys], "stopped by", "epochs", "steps", "fit (s)", "commit", "machine",
                         "MLflow run"], seed_rows, "seeds")
    summary_rows = [[esc(label_with(k, [entry.get("settings") or {}])), esc(mean_ci(entry["summary"][k])), esc(direction(k))] for k in keys]
    pub = (ledger.get(name) or {}).get("summary", {}) if entry["source"] == "results" else {}
    if pub:
        for row, k in zip(summary_rows, keys):
            inside = within(entry["summary"][k]["mean"], pub[k]) if k in pub else None
            row.append(esc(mean_ci(pub.get(k))) + ("" if k not in pub else
                       {True: " ✓ within", False: " ✗ outside", None: ""}[inside]))
    budget = entry.get("budget") or {}
    facts = [["model", esc(entry["model"])], ["data", esc(entry["data"])], ["profile", esc(entry.get("profile"))],
             ["source", "ledger (published)" if entry["source"] == "ledger" else "your results/"],
             ["parameters", f"{entry['parameters']:,}" if isinstance(entry.get("parameters"), int) else "–"],
             ["budget", esc(", ".join(f"{k}={v}" for k, v in budget.items()))], ["stopped by", _stopped(entry)],
             ["missing seeds", esc(entry.get("missing_seeds") or "none")]]
    charts = {f"exp-{i}": c for i, c in enumerate(experiment_curve_charts(name, entry["curves"], entry.get("settings") or {}))}
    samples = []
    for seed, items in sorted(entry.get("samples", {}).items()):
        for item in items:
            if "text" in item:
                samples.append(f'<figure><figcaption>seed {esc(seed)}: {esc(item["name"])}</figcaption>'
                               f'<pre class="sample">{esc(item["text"])}</pre></figure>')
            elif item.get("src") is not None and str(item["src"]) in images:
                samples.append(f'<figure><figcaption>seed {esc(seed)}: {esc(item["name"])}</figcaption>'
                               f'<img src="{esc(images[str(item["src"])])}" alt="{esc(item["name"])}"></figure>')
    body = (f'<h1>{esc(name)}</h1><p>{esc(entry.get("description"))}</p>'
            + table(["", ""], facts, "facts")
            + "<h2>Summary</h2>" + table(["metric", "mean ± 95% CI", "direction"] + (["published"] if pub else []),
                                         summary_rows, "summary")
            + f'<h2 id="seeds">Seeds</h2><div class="scroll">{seeds_table}</div>'
            + "<h2>Curves</h2>" + ("".join(chart_div(c) for c in charts) or "<p>No curves.</p>")
            + ("<h2>Samples</h2>" + "".join(samples) if samples else "")
            + "<h2>Settings</h2>" + table(["setting", "value"], [[esc(k), f"<code>{esc(v)}</code>"] for k, v in
                                                                 flat(entry.get("settings") or {}).items()], "settings")
            + ("<h2>Config</h2>" + table(["key", "value"], [[esc(k), f"<code>{esc(v)}</code>"] for k, v in
                                                           flat(entry["config"]).items()], "settings")
               if entry.get("config") else ""))
    return page(name, "", body, {"charts": charts})

