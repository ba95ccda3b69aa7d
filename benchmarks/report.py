"""The report stage: a leaderboard (Markdown and JSON) of every experiment's test metrics, mean ± std
over seeds, plus validation curves as PNG, and the best parameters of each study."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from benchmarks.claims import claims_section


def collect(results_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(results_dir.glob("*/metrics.json")):
        data = json.loads(path.read_text())
        if "summary" in data:
            rows.append(data)
    return rows


def _fmt(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def leaderboard_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["# archbench leaderboard", "", "Test metrics and the best validation value, mean ± sample std over seeds (n = number of seeds).", ""]
    by_data: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_data.setdefault(row["data"], []).append(row)
    for data, group in sorted(by_data.items()):
        keys = sorted({k for r in group for k in r["summary"] if k.startswith("test/") or k.endswith("_best")})
        lines += [f"## {data}", "", "| experiment | model | n | " + " | ".join(keys) + " | parameters | fit time (s) |",
                  "|---|---|---|" + "---|" * len(keys) + "---|---|"]
        first = keys[0] if keys else None
        for r in sorted(group, key=lambda r: r["summary"].get(first, {}).get("mean", float("inf")) if first else 0):
            cells = [_fmt(r["summary"][k]) if k in r["summary"] else "–" for k in keys]
            n = max((s["n"] for s in r["summary"].values()), default=0)
            n_params = r.get("settings", {}).get("parameters")
            size = f"{n_params:,}" if isinstance(n_params, int) else "–"
            lines.append(f"| {r['experiment']} | {r['model']} | {n} | " + " | ".join(cells) + f" | {size} | {r['wall_time_s']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def plot_curves(results_dir: Path, rows: list[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for row in rows:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        drew = False
        for curve in sorted((results_dir / row["experiment"]).glob("curves/seed_*.csv")):
            with curve.open() as fh:
                data = list(csv.DictReader(fh))
            for key, style in (("train/loss", "--"), ("val/loss", "-")):
                pts = [(float(d["epoch"]), float(d[key])) for d in data if d.get(key)]
                if pts:
                    ax.plot(*zip(*pts), style, marker="o", ms=3, label=f"{curve.stem} {key}")
                    drew = True
        if drew:
            ax.set(xlabel="epoch", ylabel="loss (nats)", title=row["experiment"])
            ax.legend(fontsize=7)
            fig.tight_layout()
            name = f"curves_{row['experiment']}.png"
            fig.savefig(out / name, dpi=110)
            written.append(name)
        plt.close(fig)
    return written


def density_section(results_dir: Path, out: Path) -> str:
    """The KDE-vs-dimension claim: held-out log-likelihood per dimension, the plot, the crossover.

    ``results/density`` is the default profile (a DVC stage), ``results/density_full`` the full one."""
    import shutil

    md: list[str] = []
    for folder, label in (("density", "default profile"), ("density_full", "full profile")):
        path = results_dir / folder / "density.json"
        if not path.is_file():
            continue
        study = json.loads(path.read_text())
        image = "kde_vs_dim.png" if folder == "density" else f"kde_vs_dim_{folder.removeprefix('density_')}.png"
        shutil.copy(path.with_name("kde_vs_dim.png"), out / image)
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


def write_report(results_dir: Path, params: dict[str, Any] | None = None) -> Path:
    out = results_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = collect(results_dir)
    md = leaderboard_markdown(rows)
    studies = sorted((results_dir / "tune").glob("*/best_params.json"))
    if studies:
        md += "\n## Tuned hyperparameters\n\n"
        for path in studies:
            best = json.loads(path.read_text())
            repeats = f", {best['n_repeats']} of them repeats" if best.get("n_repeats") else ""
            md += (f"- **{best['study']}** ({best['n_complete']} complete{repeats}, {best['n_pruned']} pruned trials): "
                   f"{best['metric']} = {best['value']:.4f} with `{json.dumps(best['params'])}`\n")
    md += claims_section(results_dir, out)
    md += density_section(results_dir, out)
    plots = plot_curves(results_dir, rows, out)
    if plots:
        md += "\n## Curves\n\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n"
    (out / "leaderboard.md").write_text(md)
    board = {r["experiment"]: {"model": r["model"], "data": r["data"], "seeds": r["seeds"], "summary": r["summary"],
                               "settings": r["settings"], "wall_time_s": r["wall_time_s"]} for r in rows}
    (out / "leaderboard.json").write_text(json.dumps(board, indent=2, sort_keys=True) + "\n")
    return out / "leaderboard.md"
