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
    model = gather(results_dir, ledger, params, mlflow_url, ledger_dir or ledger_dir_for(results_dir))
    leave_out_stale(model, results_dir, params)
    with swapped_in(out, "the previous report is left as it was") as build:
        build_site(model, build)
        atomic_write_text(build / "leaderboard.md", leaderboard_markdown(model) + findings_markdown(model)
                          + density_section(results_dir, build))
        board = {name: {"model": e["model"], "data": e["data"], "source": e["source"],
                        "seeds": [s["seed"] for s in e["seeds"]], "summary": _json_stats(e["summary"]),
                        "budget": e["budget"], "settings": e["settings"], "older": e.get("older")}
                 for name, e in {**model["published"], **model["entries"]}.items()}
        atomic_write_text(build / "leaderboard.json", json.dumps(board, indent=2, sort_keys=True) + "\n")
    return out / "index.html"


def _json_stats(summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in s.items() if f != "values" and v == v} for k, s in summary.items()}


def leaderboard_markdown(model: dict[str, Any]) -> str:
    """One table per task, as on index.html: ranked rows, the trivial baseline, anchors; units in the headers."""
    from benchmarks.report.site.board_model import boards, cell
    from benchmarks.report.site.boards import recipe_keys, recipe_text
    from benchmarks.report.site.html import mean_ci, num

    lines = ["# archbench leaderboard", "",
             "Test metrics and the best validation value, mean ± half-width of the 95% t-interval over seeds "
             "(n = number of seeds). Rows marked (published) come from ledger/, and (older code: rerun pending) or (older "
             "config: ...) marks a published row that today's params.yaml or code would no longer make; (baseline) rows "
             "are computed by `archbench baselines` on the same split; anchors are published references.", ""]
    for table in boards(model["entries"], model["published"], model["baselines"]):
        heads = [f"{k} ({u})" if u else k for k, u in table["columns"]]
        keys = recipe_keys(table)
        lines += [f"## {table['title']}", "", "| row | model | recipe | n | " + " | ".join(heads) + " | stopped by |",
                  "|---|---|---|---|" + "---|" * len(heads) + "---|"]
        for row in table["rows"]:
            cells, approx = [], "≈" if row.get("approx") else ""  # an anchor on a nearby protocol
            for column in table["columns"]:
                stat = cell(row, column)
                cells.append("–" if not stat else mean_ci(stat) if row["kind"] == "run" else approx + num(stat["mean"]))
            recipe = ""
            if row["kind"] == "anchor":
                name, n, stopped = f"*{row['model']}* (anchor: {row['source']})", "", row["protocol"]
            elif row["kind"] == "baseline":
                name, n, stopped, recipe = f"{row['name']} (baseline)", "", "", row["recipe"]
            else:
                name = row["name"] + (" (published)" if row["source"] == "ledger" else "")
                name += f" (older {row['older']}: rerun pending)" if row.get("older") else ""
                n, recipe = str(len(row["seeds"])), recipe_text(row, keys)
                stopped = ", ".join(sorted({str(s["stopped_by"]) for s in row["seeds"]})) + (
                    " (truncated)" if row["truncated"] else "")
            lines.append(f"| {name} | {row['model']} | {recipe} | {n} | " + " | ".join(cells) + f" | {stopped} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def findings_markdown(model: dict[str, Any]) -> str:
    """The claims (statement, verdict, effect ± CI) and the studies (best value and parameters)."""
    from benchmarks.report.compute import cpu_hours
    from benchmarks.report.effects import effect_text, verdict_numbers

    lines = []
    if model["claims"]:
        lines += ["## Claims", "", "| claim | verdict | effect (95% CI) | seeds per cell | source |", "|---|---|---|---|---|"]
        for claim in model["claims"]:
            effects = [effect_text(n, claim.get("unit", "")) for v in claim.get("verdicts", [])
                       if (n := v.get("numbers") or verdict_numbers(claim, v))]
            seeds = sorted({len(r.get("seeds", [])) for r in claim.get("table", [])})
            lines.append(f"| {claim['claim']}: {claim.get('statement')} | {claim.get('outcome') or 'not judged'} | "
                         f"{'; '.join(effects) or '–'} | {', '.join(map(str, seeds))} | {claim.get('source')} |")
        lines.append("")
    if model["studies"]:
        lines += ["## Studies", ""]
        for s in model["studies"]:
            best, counts = s.get("best") or {}, s.get("counts") or {}
            spent = (s.get("compute") or {}).get("cpu_s")
            lines.append(f"- **{s['study']}** ({counts.get('COMPLETE')} complete, {counts.get('PRUNED')} pruned of "
                         f"{s.get('n_trials')}; {s.get('source')}"
                         + (f"; {cpu_hours(spent)}" if spent is not None else "") + f"): {s.get('metric')} = "
                         f"{best.get('value'):.4f} with `{json.dumps(best.get('params'), sort_keys=True)}`")
        lines.append("")
    return "\n".join(lines) + "\n" if lines else ""


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
