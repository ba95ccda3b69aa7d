"""Small HTML helpers shared by the pages: escaping, number formats, tooltips, the page shell."""

from __future__ import annotations

import html
import json
import math
from typing import Any

NAV = (("index.html", "Leaderboard"), ("compare.html", "Compare"), ("claims.html", "Claims"),
       ("studies.html", "Studies"), ("density.html", "Density"))
# Nothing may leave the machine when a page is viewed: scripts, styles and images come from the report's
# own folder (file:) or are inline; fetch/XHR/WebSocket are refused outright.
CSP = ("default-src 'none'; script-src file: 'self' 'unsafe-inline' 'unsafe-eval'; style-src file: 'self' "
       "'unsafe-inline'; img-src file: 'self' data: blob:; font-src file: 'self' data:; connect-src 'none'")


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def num(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if finite(value) else "–"


def mean_ci(stat: dict[str, Any] | None) -> str:
    """'1.234 ± 0.012' (the 95% half-width), or '1.234 (n=1)' when one seed gives no interval."""
    if not stat or not finite(stat.get("mean")):
        return "–"
    ci = stat.get("ci95")
    return f"{num(stat['mean'])} ± {num(ci, 2)}" if finite(ci) else f"{num(stat['mean'])} (n={stat.get('n', 1)})"


def flat(tree: Any, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}: settings and configs as one line per leaf, for tables and tooltips."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): json.dumps(tree) if isinstance(tree, (list, bool)) or tree is None else str(tree)}
    out: dict[str, str] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}."))
    return out


def settings_tooltip(entry: dict[str, Any], key: str | None = None) -> str:
    """What a number carries: its per-seed values and runs, the data hash and split, sample counts, commit."""
    lines = []
    if key:
        for seed in entry["seeds"]:
            if key in seed["metrics"]:
                lines.append(f"seed {seed['seed']}: {seed['metrics'][key]:.6g} (run {seed.get('run_id') or '?'}, "
                             f"stopped by {seed.get('stopped_by')})")
    commits = sorted({str(s.get("commit")) for s in entry["seeds"] if s.get("commit")})
    if commits:
        lines.append("git commit: " + ", ".join(commits))
    lines += [f"{k}: {v[:90]}" for k, v in flat(entry.get("settings") or {}).items()]
    return "\n".join(lines)


def data_json(data: Any) -> str:
    """JSON for a <script type=application/json> block: NaN becomes null, '</' cannot close the tag."""
    return json.dumps(_clean(data), separators=(",", ":"), sort_keys=True).replace("</", "<\\/")


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value if isinstance(value, (int, str, bool)) or value is None else str(value)


def page(title: str, active: str, body: str, data: dict[str, Any] | None = None, footer: str = "") -> str:
    nav = "".join(f'<a href="{href}"{" class=active" if href == active else ""}>{esc(text)}</a>' for href, text in NAV)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · archbench</title>
<link rel="stylesheet" href="assets/report.css">
</head><body>
<header><span class="brand">archbench</span><nav>{nav}</nav></header>
<main>
{body}
</main>
<footer>{footer}Static report: opens from the file system, no network needed. Charts: Plotly (bundled).</footer>
<script type="application/json" id="page-data">{data_json(data or {})}</script>
<script src="assets/plotly.min.js"></script>
<script src="assets/report.js"></script>
</body></html>
"""


def chart_div(chart_id: str) -> str:
    return f'<div class="chart" id="chart-{esc(chart_id)}" data-chart="{esc(chart_id)}"></div>'


def table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """A plain table; cells are HTML already."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    thead = f"<thead><tr>{th}</tr></thead>" if any(head) else ""
    return f'<table class="{cls}">{thead}<tbody>{body}</tbody></table>'
