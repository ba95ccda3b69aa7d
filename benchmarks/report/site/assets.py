"""The report's stylesheet and script, and Plotly's bundle copied from the ``plotly`` package (no CDN)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from benchmarks.core.errors import ArchbenchError

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       color: #1d2430; background: #f6f7f9; }
header { background: #1d2430; color: #fff; padding: 10px 24px; display: flex; gap: 24px; align-items: baseline; }
header .brand { font-weight: 700; font-size: 18px; }
header nav a { color: #c9d4e6; margin-right: 16px; text-decoration: none; }
header nav a.active, header nav a:hover { color: #fff; border-bottom: 2px solid #5aa0ff; }
main { padding: 16px 24px 40px; max-width: 1500px; }
footer { color: #6a7385; font-size: 12px; padding: 12px 24px; }
h1 { font-size: 22px; margin: 8px 0 12px; } h2 { font-size: 18px; margin: 28px 0 8px; }
section.task, section.claim, section.study, section.density { background: #fff; border: 1px solid #dde2ea;
       border-radius: 6px; padding: 4px 16px 12px; margin: 16px 0; }
.note, .hint, .empty { color: #545e70; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; background: #fff; }
th, td { border-bottom: 1px solid #e4e8ef; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f6; font-weight: 600; }
th.sortable { cursor: pointer; min-width: 80px; max-width: 190px; } th.sorted { background: #dbe7fb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.rank { color: #6a7385; text-align: right; }
tr.row-anchor td { background: #fbf8ef; font-style: italic; }
tr.row-ledger td { background: #f3f7ff; }
tr.row-baseline td { background: #f1f4ef; color: #3d4a36; }
td.recipe { font-size: 12px; color: #39435a; max-width: 260px; }
ul.claims-here { font-size: 13px; color: #39435a; }
td.pub { font-size: 12px; color: #39435a; }
a { color: #1a5fc4; } a.run, span.run { font-family: ui-monospace, monospace; font-size: 12px; margin-right: 4px; }
.badge { display: inline-block; padding: 0 6px; border-radius: 9px; font-size: 11px; font-style: normal;
         background: #e4e8ef; color: #39435a; }
.badge.ok { background: #d9f2e0; color: #17622f; } .badge.bad { background: #fadddd; color: #8a1c1c; }
.badge.warn { background: #fdeccc; color: #7a4a00; } .badge.anchor { background: #f3e7bf; color: #6b5200; }
.badge.pubd { background: #dbe7fb; color: #1a4a8a; }
.badge.base { background: #e3ecd9; color: #35502a; } .badge.tuned { background: #efe1fa; color: #55207a; text-decoration: none; }
.chart { width: 100%; max-width: 1100px; min-height: 340px; }
figure { display: inline-block; margin: 8px 16px 8px 0; vertical-align: top; }
figure img { max-width: 560px; border: 1px solid #dde2ea; }
figcaption { font-size: 12px; color: #545e70; }
pre.sample { max-width: 720px; max-height: 320px; overflow: auto; background: #fff; border: 1px solid #dde2ea;
             padding: 8px; white-space: pre-wrap; }
fieldset { border: 1px solid #dde2ea; background: #fff; margin: 6px 0; } fieldset label { margin-right: 14px; }
#compare-table td { overflow-wrap: anywhere; }  /* a 64-digit data hash must not widen its column past the screen */
#compare-table td.best { font-weight: 700; color: #17622f; }
#compare-table tr.differs td, #compare-table tr.differs th { background: #fff6d8; }
#compare-table tr.section th { background: #1d2430; color: #fff; }
#compare-table .delta { display: block; color: #6a7385; font-size: 12px; }
#compare-table.only-diff tr.same { display: none; }
code { font-size: 12px; }
"""

JS = r"""
(function () {
  "use strict";
  var node = document.getElementById("page-data");
  var data = JSON.parse((node && node.textContent) || "{}");
  // No "share chart" button: it would send the data to a chart server; the report never leaves the machine.
  var CONFIG = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["sendChartToCloud"]};

  function drawCharts() {
    var charts = data.charts || {};
    document.querySelectorAll("div.chart[data-chart]").forEach(function (el) {
      var spec = charts[el.getAttribute("data-chart")];
      if (spec) { Plotly.newPlot(el, spec.traces, spec.layout, CONFIG); }
    });
  }

  // Leaderboards: a click on a metric header sorts by it, best first in that metric's direction.
  function value(row, idx) {
    var cell = row.cells[idx], v = cell ? cell.getAttribute("data-v") : null;
    return v === null || v === "" ? null : parseFloat(v);
  }
  function sortBoard(th) {
    var table = th.closest("table"), idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var sign = th.getAttribute("data-dir") === "max" ? -1 : 1, body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, idx), y = value(b, idx);
      if (x === null || y === null) { return (x === null) - (y === null); }
      return sign * (x - y);
    });
    var rank = 0;
    rows.forEach(function (r) {
      body.appendChild(r);
      if (!r.classList.contains("row-anchor") && !r.classList.contains("row-baseline")) {
        r.cells[0].textContent = String(++rank);
      }
    });
    table.querySelectorAll("th.sorted").forEach(function (h) { h.classList.remove("sorted"); });
    th.classList.add("sorted");
  }
  document.querySelectorAll("table.board th.sortable").forEach(function (th) {
    th.addEventListener("click", function () { sortBoard(th); });
  });

  // Compare view: two or more experiments side by side.
  function fmt(s) {
    if (!s || s.mean === null || s.mean === undefined) { return "–"; }
    var t = Number(s.mean).toPrecision(4);
    return s.ci95 === null || s.ci95 === undefined ? t + " (n=" + s.n + ")" : t + " ± " + Number(s.ci95).toPrecision(2);
  }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }
  function picked() {
    return Array.prototype.slice.call(document.querySelectorAll("#compare-picker input[name=exp]:checked"))
      .map(function (i) { return i.value; });
  }
  function sectionRow(table, text, n) {
    var tr = el("tr", null, "section"), th = el("th", text); th.colSpan = n + 1; tr.appendChild(th); table.appendChild(tr);
  }
  function metricRows(table, cmp, ids) {
    var keys = {};
    ids.forEach(function (id) { Object.keys(cmp.choices[id].summary).forEach(function (k) { keys[k] = 1; }); });
    Object.keys(keys).sort().forEach(function (k) {
      var stats = ids.map(function (id) { return cmp.choices[id].summary[k]; });
      var means = stats.map(function (s) { return s ? s.mean : null; });
      var dir = cmp.directions[k] || "none", best = -1;
      means.forEach(function (m, i) {
        if (m === null || dir === "none") { return; }
        if (best < 0 || (dir === "min" ? m < means[best] : m > means[best])) { best = i; }
      });
      var tr = el("tr"), th = el("th", cmp.labels[k] || k);
      th.title = dir === "none" ? "no direction" : (dir === "min" ? "lower is better" : "higher is better");
      tr.appendChild(th);
      stats.forEach(function (s, i) {
        var td = el("td", fmt(s), "num" + (i === best ? " best" : ""));
        if (i > 0 && s && stats[0] && means[0] !== null) {
          var d = s.mean - means[0];
          td.appendChild(el("span", " (Δ " + (d >= 0 ? "+" : "") + d.toPrecision(3) + ")", "delta"));
        }
        tr.appendChild(td);
      });
      var distinct = means.filter(function (m, i, a) { return a.indexOf(m) === i; });
      tr.className = distinct.length > 1 ? "differs" : "same";
      table.appendChild(tr);
    });
  }
  function paramRows(table, cmp, ids) {
    var keys = {};
    ids.forEach(function (id) { Object.keys(cmp.choices[id].params).forEach(function (k) { keys[k] = 1; }); });
    Object.keys(keys).sort().forEach(function (k) {
      var vals = ids.map(function (id) {
        var v = cmp.choices[id].params[k]; return v === undefined || v === null ? "–" : String(v);
      });
      var tr = el("tr"); tr.appendChild(el("th", k));
      vals.forEach(function (v) { tr.appendChild(el("td", v)); });
      tr.className = vals.every(function (v) { return v === vals[0]; }) ? "same" : "differs";
      table.appendChild(tr);
    });
  }
  function drawCompareCurves(cmp, ids) {
    var box = document.getElementById("compare-curves"), select = document.getElementById("compare-metric");
    var cols = {};
    ids.forEach(function (id) {
      var curves = cmp.choices[id].curves;
      Object.keys(curves).forEach(function (s) { Object.keys(curves[s]).forEach(function (c) { cols[c] = 1; }); });
    });
    delete cols.epoch; delete cols.step;
    var names = Object.keys(cols).sort();
    box.hidden = names.length === 0;
    if (!names.length) { return; }
    var keep = select.value && cols[select.value] ? select.value : (cols["val/loss"] ? "val/loss" : names[0]);
    select.innerHTML = "";
    names.forEach(function (n) { var o = el("option", n); o.value = n; select.appendChild(o); });
    select.value = keep;
    var palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
    var traces = [];
    ids.forEach(function (id, i) {
      var curves = cmp.choices[id].curves;
      Object.keys(curves).sort().forEach(function (s) {
        var c = curves[s];
        if (!c[keep]) { return; }
        traces.push({type: "scatter", mode: "lines+markers", x: c.epoch || c[keep].map(function (_, j) { return j; }),
                     y: c[keep], name: id + " seed " + s, legendgroup: id, connectgaps: true,
                     line: {color: palette[i % palette.length], width: 1.6}, marker: {size: 4}});
      });
    });
    Plotly.react(document.getElementById("compare-chart"), traces,
                 {height: 360, margin: {l: 64, r: 16, t: 30, b: 48}, xaxis: {title: {text: "epoch"}},
                  yaxis: {title: {text: cmp.labels[keep] || keep}}, legend: {font: {size: 10}}}, CONFIG);
  }
  function renderCompare() {
    var cmp = data.compare, ids = picked(), out = document.getElementById("compare-out");
    // The address names what is ticked, so a link or a reload shows the same comparison.
    history.replaceState(null, "", "#" + ids.map(encodeURIComponent).join(","));
    out.innerHTML = "";
    if (ids.length < 2) {
      out.appendChild(el("p", "Pick at least two experiments.", "hint"));
      document.getElementById("compare-curves").hidden = true;
      return;
    }
    var table = el("table"); table.id = "compare-table";
    if (document.getElementById("only-diff").checked) { table.classList.add("only-diff"); }
    var head = el("tr"); head.appendChild(el("th", ""));
    ids.forEach(function (id) {
      var th = el("th"), a = el("a", id); a.href = cmp.choices[id].page; th.appendChild(a); head.appendChild(th);
    });
    table.appendChild(head);
    sectionRow(table, "metrics (mean ± 95% CI)", ids.length); metricRows(table, cmp, ids);
    sectionRow(table, "parameters and settings", ids.length); paramRows(table, cmp, ids);
    var wrap = el("div", null, "scroll"); wrap.appendChild(table); out.appendChild(wrap);  // wide tables scroll
    drawCompareCurves(cmp, ids);
  }
  function initCompare() {
    var form = document.getElementById("compare-picker");
    if (!form || !data.compare) { return; }
    var wanted = decodeURIComponent(location.hash.slice(1)).split(",");
    form.querySelectorAll("input[name=exp]").forEach(function (i) { i.checked = wanted.indexOf(i.value) >= 0; });
    form.addEventListener("change", renderCompare);
    document.getElementById("only-diff").addEventListener("change", renderCompare);
    document.getElementById("compare-metric").addEventListener("change", renderCompare);
    renderCompare();
  }

  drawCharts();
  initCompare();
})();
"""


def plotly_js() -> bytes:
    """The minified plotly.js bundle that ships inside the ``plotly`` Python package."""
    from importlib import resources

    try:
        return (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise ArchbenchError("the report needs the plotly package for its charts; pip install 'plotly>=7,<8' "
                             "(or reinstall archbench)") from None


def write_assets(out: Path) -> None:
    """assets/{plotly.min.js, report.css, report.js}; the 4.8 MB bundle is rewritten only when it changed."""
    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    bundle = plotly_js()
    target = assets / "plotly.min.js"
    if not target.is_file() or _digest(target.read_bytes()) != _digest(bundle):
        _write(target, bundle)
    _write(assets / "report.css", CSS.lstrip().encode())
    _write(assets / "report.js", JS.lstrip().encode())


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _write(path: Path, blob: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
