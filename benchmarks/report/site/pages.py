"""One page per experiment (facts, summary, seeds, curves, samples, settings), and the row helpers the
leaderboard (boards.py) shares with it: budget, stopped-by, run links, the CPU's label."""

from __future__ import annotations

from collections import Counter
from typing import Any

from benchmarks.core.stats import within
from benchmarks.report.site.charts import experiment_curve_charts
from benchmarks.report.site.html import chart_div, esc, finite, flat, mean_ci, num, page, table
from benchmarks.report.site.vocab import direction, label_with


def budget_text(entry: dict[str, Any]) -> tuple[str, str]:
    """(the budget, as '<epochs N>', and its safety limit for a tooltip)."""
    budget = entry.get("budget") or {}
    parts = [f"{k.removeprefix('max_')} {budget[k]}" for k in ("max_epochs", "max_steps") if budget.get(k) not in (None, -1)]
    return ", ".join(parts) or "–", f"max_time (safety limit): {budget.get('max_time')}"


def stopped_text(entry: dict[str, Any]) -> str:
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
                          esc(s.get("fit_s")), esc(s.get("cpu_s") if s.get("cpu_s") is not None else "–"),
                          f'<code>{esc(str(s.get("commit"))[:12])}</code>',
                          esc(f"{m.get('host', '?')} ({cpu_label(m)}, {s.get('threads')} threads, "
                              f"{m.get('gpu') or s.get('device') or 'cpu'})"), run_link_cell(s)])
    seeds_table = table(["seed", *[esc(k) for k in keys], "stopped by", "epochs", "steps", "fit (s)", "CPU (s)", "commit",
                         "machine",
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
             ["budget", esc(", ".join(f"{k}={v}" for k, v in budget.items()))], ["stopped by", stopped_text(entry)],
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

