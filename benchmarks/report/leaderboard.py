"""The report stage: a static site in results/report/ (index.html and the pages of benchmarks/report/site/), and its
Markdown and JSON twins (leaderboard.md, leaderboard.json) for terminals and diffs.

The report reads the user's results/ and the committed ledger (ledger/*.json), so a fresh clone renders
the published benchmark before anything is trained. Seeds that are no longer current (another config, code or
data made them) are named and left out. The site is built in a folder beside results/report/ and swapped in
whole, so a full disk or a kill leaves the previous report as it was, never half of a new one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.claim.claims import claims_section
from benchmarks.core.files import atomic_copy, atomic_write_text, check_writable, swapped_in
from benchmarks.report.current import leave_out_stale


def write_report(results_dir: Path, params: dict[str, Any] | None = None, *, ledger_dir: Path | None = None,
                 ledger: dict[str, dict[str, Any]] | None = None, mlflow_url: str | None = None) -> Path:
    """Write results/report/; returns index.html. ``ledger`` replaces ledger/ (e.g. the ledger at a revision)."""
    from benchmarks.report.ledger import ledger_dir_for, load_ledger
    from benchmarks.report.site.build import build_site, gather

    out = results_dir / "report"
    check_writable(results_dir, "results_dir")
    if ledger is None:
        ledger = load_ledger(ledger_dir or ledger_dir_for(results_dir))
    model = gather(results_dir, ledger, params, mlflow_url)
    leave_out_stale(model, results_dir, params)
    with swapped_in(out, "the previous report is left as it was") as build:
        build_site(model, build)
        atomic_write_text(build / "leaderboard.md", leaderboard_markdown(model) + claims_section(results_dir, build)
                          + density_section(results_dir, build))
        board = {name: {"model": e["model"], "data": e["data"], "source": e["source"],
                        "seeds": [s["seed"] for s in e["seeds"]], "summary": _json_stats(e["summary"]),
                        "budget": e["budget"], "settings": e["settings"]}
                 for name, e in {**model["published"], **model["entries"]}.items()}
        atomic_write_text(build / "leaderboard.json", json.dumps(board, indent=2, sort_keys=True) + "\n")
    return out / "index.html"


def _json_stats(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in s.items() if f != "values" and v == v} for k, s in summary.items()}


def leaderboard_markdown(model: dict[str, Any]) -> str:
    from benchmarks.report.site.html import mean_ci
    from benchmarks.report.site.pages import board_keys, rows_for, sort_value
    from benchmarks.report.site.anchors import anchors_for

    entries, published, ledger = model["entries"], model["published"], model["ledger"]
    lines = ["# archbench leaderboard", "",
             "Test metrics and the best validation value, mean ± half-width of the 95% t-interval over seeds "
             "(n = number of seeds). Rows marked (published) come from ledger/; anchors are published references.", ""]
    for data in sorted({str(e["data"]) for e in [*entries.values(), *published.values()]}):
        rows = rows_for(data, entries, published)
        anchors = anchors_for(data)
        primary, keys = board_keys(rows, anchors)
        lines += [f"## {data}", "", "| experiment | model | n | " + " | ".join(keys) + " | published | parameters | stopped by |",
                  "|---|---|---|" + "---|" * len(keys) + "---|---|---|"]
        for e in sorted(rows, key=lambda e: (sort_value(e["summary"].get(primary, {}).get("mean"), primary), e["name"])):
            cells = [mean_ci(e["summary"].get(k)) for k in keys]
            pub = (ledger.get(e["name"]) or {}).get("summary", {}).get(primary) if e["source"] == "results" else None
            size = f"{e['parameters']:,}" if isinstance(e.get("parameters"), int) else "–"
            stopped = ", ".join(sorted({str(s["stopped_by"]) for s in e["seeds"]})) + (" (truncated)" if e["truncated"] else "")
            name = e["name"] + (" (published)" if e["source"] == "ledger" else "")
            lines.append(f"| {name} | {e['model']} | {len(e['seeds'])} | " + " | ".join(cells)
                         + f" | {mean_ci(pub) if pub else '–'} | {size} | {stopped} |")
        for a in anchors:
            lines.append(f"| *{a['model']}* (anchor: {a['source']}) | | | "
                         + " | ".join(f"{a['value']}" if k == a["metric"] else "–" for k in keys) + f" | {a['protocol']} | | |")
        lines.append("")
    studies = model["studies"]
    if studies:
        lines += ["## Tuned hyperparameters", ""]
        for best in studies:
            repeats = f", {best['n_repeats']} of them repeats" if best.get("n_repeats") else ""
            lines.append(f"- **{best['study']}** ({best['n_complete']} complete{repeats}, {best['n_pruned']} pruned trials): "
                         f"{best['metric']} = {best['value']:.4f} with `{json.dumps(best['params'])}`")
        lines.append("")
    return "\n".join(lines) + "\n"


def density_section(results_dir: Path, out: Path) -> str:
    """The KDE-vs-dimension claim: held-out log-likelihood per dimension, the plot, the crossover.

    ``results/density`` is the default profile (a DVC stage), ``results/density_full`` the full one."""
    md: list[str] = []
    for folder, label in (("density", "default profile"), ("density_full", "full profile")):
        path = results_dir / folder / "density.json"
        if not path.is_file():
            continue
        study = json.loads(path.read_text())
        image = "kde_vs_dim.png" if folder == "density" else f"kde_vs_dim_{folder.removeprefix('density_')}.png"
        if path.with_name("kde_vs_dim.png").is_file():
            atomic_copy(path.with_name("kde_vs_dim.png"), out / image)
        md += ["", f"## Density estimation: MLE vs KDE against the dimension ({label})", "",
               "Held-out mean log-likelihood in nats per dimension (higher is better), PCA fitted on train.", ""]
        for name, entry in study["results"].items():
            methods = ["gaussian", "gmm", "kde"]
            md += [f"**{name}** (n_train={entry['n_train']}, n_test={entry['n_test']}): crossover d = {entry['crossover']}",
                   "", "| d | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
            for d, r in entry["dims"].items():
                md.append(f"| {d} | " + " | ".join(f"{r[m]['test_mean_log_lik_per_dim']:+.3f}" for m in methods) + " |")
            md.append("")
        md.append(f"![KDE vs dimension, {label}]({image})")
    return "\n".join(md) + "\n" if md else ""
