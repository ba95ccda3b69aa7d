"""Write the static site: index.html (leaderboards), compare.html, claims/studies/density pages, a page per
experiment, the images they show (copied under img/) and assets/ (Plotly's bundle, CSS, the page script)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

from benchmarks.report.current import mark_older_published
from benchmarks.report.site.assets import write_assets
from benchmarks.report.site.boards import index_page
from benchmarks.report.site.collect import attach_config, entry_from_ledger, load_density, load_experiments
from benchmarks.report.site.findings import claims_page, studies_page
from benchmarks.report.site.findings_data import (baselines_shown, claims_shown, claims_to_note, ledger_compute,
                                                  studies_shown, tuned_by)
from benchmarks.report.site.pages import experiment_page
from benchmarks.report.site.views import compare_page, density_page


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class Images:
    """Copies each shown image once into img/, under a name derived from its source path."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.paths: dict[str, str] = {}

    def add(self, src: Path | None, *parts: str) -> None:
        if src is None or str(src) in self.paths:
            return
        rel = Path("img", *map(_safe, parts))
        dst = self.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.is_file() or _digest(dst) != _digest(src):
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
        self.paths[str(src)] = rel.as_posix()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def gather(results_dir: Path, ledger: dict[str, dict[str, Any]], params: dict[str, Any] | None,
           mlflow_url: str | None, ledger_dir: Path | None = None) -> dict[str, Any]:
    """Everything the pages show, as plain data (also what the Markdown twin is written from).

    ``ledger`` holds the published experiments (the working tree's or a revision's); the published claims,
    studies and baselines are read from ``ledger_dir`` (ledger/ beside results/ by default)."""
    folder = ledger_dir or results_dir.parent / "ledger"
    entries = load_experiments(results_dir, mlflow_url) if results_dir.is_dir() else {}
    attach_config(entries, params)
    published = {name: entry_from_ledger(rec, mlflow_url) for name, rec in ledger.items()}
    mark_older_published(published, ledger, params)
    claims, studies = claims_shown(results_dir, folder, params), studies_shown(results_dir, folder)
    return {"entries": entries, "published": published, "ledger": ledger, "claims": claims, "studies": studies,
            "claims_noted": claims_to_note(claims, params), "baselines": baselines_shown(results_dir, folder),
            "tuned_by": tuned_by(params),
            "compute": ledger_compute(published, claims, studies, folder), "density": load_density(results_dir)}


def build_site(model: dict[str, Any], out: Path) -> Path:
    """Write every page into ``out``; returns index.html. Pages only reference files inside ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_assets(out)
    images = Images(out)
    for kind, group in (("", model["entries"]), ("published", model["published"])):
        for entry in group.values():
            for seed, items in entry["samples"].items():
                for item in items:
                    images.add(item.get("src"), *filter(None, (kind, entry["name"], f"seed_{seed}", item["name"])))
    for claim in model["claims"]:
        images.add(claim.get("png"), "claims", f"{claim.get('claim')}.png")
    for density in model["density"]:
        images.add(density.get("png"), density["folder"], "kde_vs_dim.png")
    entries, published, ledger = model["entries"], model["published"], model["ledger"]
    ctx = {"ledger": ledger, "claims": model["claims_noted"], "studies": {s["study"]: s for s in model["studies"]},
           "tuned_by": model["tuned_by"], "baselines": model["baselines"], "compute_html": compute_html(model["compute"])}
    _write(out / "index.html", index_page(entries, published, ctx))
    _write(out / "compare.html", compare_page(entries, published))
    _write(out / "claims.html", claims_page(model["claims"], images.paths))
    _write(out / "studies.html", studies_page(model["studies"]))
    _write(out / "density.html", density_page(model["density"], images.paths))
    for name, entry in published.items():
        if name not in entries:
            _write(out / f"exp-{name}.html", experiment_page(entry, ledger, images.paths))
    for name, entry in entries.items():
        _write(out / f"exp-{name}.html", experiment_page(entry, ledger, images.paths))
    return out / "index.html"


def compute_html(totals: dict[str, dict[str, Any]]) -> str:
    """The CPU time behind the published ledger, per kind of entry, and in all."""
    from benchmarks.report.compute import cpu_hours
    from benchmarks.report.site.html import esc, table

    rows = [[esc(kind), esc(t["entries"]), esc(cpu_hours(t["cpu_s"])), esc("; ".join(t["how"]) or "–"),
             esc(", ".join(t["hosts"]) or "–")] for kind, t in totals.items() if t["entries"]]
    if not rows:
        return ""
    spent = sum(t["cpu_s"] for t in totals.values())
    return (f'<details class="compute"><summary>Compute behind the published ledger: {esc(cpu_hours(spent))}</summary>'
            + table(["published", "entries", "CPU", "measured as", "hosts"], rows, "compute") + "</details>")
