"""Write the static site: index.html (leaderboards), compare.html, claims/studies/density pages, a page per
experiment, the images they show (copied under img/) and assets/ (Plotly's bundle, CSS, the page script)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

from benchmarks.report.site.assets import write_assets
from benchmarks.report.site.collect import (
    attach_config,
    entry_from_ledger,
    load_claims,
    load_density,
    load_experiments,
    load_studies,
)
from benchmarks.report.site.pages import experiment_page, index_page
from benchmarks.report.site.views import claims_page, compare_page, density_page, studies_page


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
           mlflow_url: str | None) -> dict[str, Any]:
    """Everything the pages show, as plain data (also what the Markdown twin is written from)."""
    entries = load_experiments(results_dir, mlflow_url) if results_dir.is_dir() else {}
    attach_config(entries, params)
    published = {name: entry_from_ledger(rec, mlflow_url) for name, rec in ledger.items()}
    return {"entries": entries, "published": published, "ledger": ledger,
            "claims": load_claims(results_dir), "studies": load_studies(results_dir), "density": load_density(results_dir)}


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
    for study in model["studies"]:
        images.add(study.get("png"), "tune", f"{study.get('study')}_history.png")
    for density in model["density"]:
        images.add(density.get("png"), density["folder"], "kde_vs_dim.png")
    entries, published, ledger = model["entries"], model["published"], model["ledger"]
    _write(out / "index.html", index_page(entries, published, ledger))
    _write(out / "compare.html", compare_page(entries, published))
    _write(out / "claims.html", claims_page(model["claims"], images.paths))
    _write(out / "studies.html", studies_page(model["studies"], images.paths))
    _write(out / "density.html", density_page(model["density"], images.paths))
    for name, entry in published.items():
        if name not in entries:
            _write(out / f"exp-{name}.html", experiment_page(entry, ledger, images.paths))
    for name, entry in entries.items():
        _write(out / f"exp-{name}.html", experiment_page(entry, ledger, images.paths))
    return out / "index.html"
