"""The leaderboards as plain data: one table per task (benchmarks/report/tasks.py), its columns with their
units, and its rows: our runs, published ones, the task's trivial baseline and the published anchors.

No column mixes units: a column is a metric key *and* a unit, and a key that rows report in two units (a
``loss``, whose unit is each model's ``loss_unit``) becomes two columns. Baselines join a table only when
they were computed on the split its rows saw (same data hash). Both the site and leaderboard.md render it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from benchmarks.report.site.anchors import anchors_for
from benchmarks.report.site.vocab import direction, lookup
from benchmarks.report.tasks import TASKS, binarized, columns_for, task_id, task_kinds, task_of



# A model's ``loss_unit`` spelled out, and the vocabulary's short name for the same unit: one table, one spelling.
SHORT_UNITS = {"nats per character": "nats/char"}


def unit_of(key: str, settings: dict[str, Any] | None) -> str:
    """The key's unit from the vocabulary; a ``loss`` key's unit is the model's own ``loss_unit`` setting."""
    found = lookup(key)
    unit = getattr(found, "unit", "") if found is not None else ""
    base = key.split("/", 1)[-1].removesuffix("_best")
    if not unit and base.endswith("loss"):
        unit = str((settings or {}).get("loss_unit") or "")
    return SHORT_UNITS.get(unit, unit)


def stat_of(row: dict[str, Any], key: str | None) -> dict[str, Any] | None:
    """A row's summary of ``key``; a run's FID/floor is derived per seed where the run did not log it."""
    if key is None:
        return None
    found = row["summary"].get(key)
    if found or key != "test/fid_ratio" or "seeds" not in row:
        return found
    from benchmarks.report.site.collect import stats

    ratios = [s["metrics"]["test/fid"] / s["metrics"]["test/fid_floor"] for s in row["seeds"]
              if s["metrics"].get("test/fid_floor") and "test/fid" in s["metrics"]]
    return (stats(ratios) | {"derived": "test/fid / test/fid_floor per seed"}) if ratios else None


def rows_of(entries: dict[str, dict[str, Any]], published: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Our experiments, then published ones we have not rerun (the ledger alone fills a fresh clone)."""
    return list(entries.values()) + [e for n, e in published.items() if n not in entries]


def _fid_protocol(row: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two runs' floors the same number: extractor, sample count, reference split, data form."""
    settings = row.get("settings") or {}
    n = settings.get("fid_n_fake") or settings.get("fid_samples")
    form = "binarized" if binarized(settings, row.get("config")) else "8-bit"
    return settings.get("fid_extractor_sha256"), n, settings.get("fid_reference_split"), form


def _fid_floor_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Real training images as a row, per FID protocol: the floor each run computed beside its FID."""
    from benchmarks.report.site.collect import stats

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for e in rows:
        if stat_of(e, "test/fid_floor"):
            groups[_fid_protocol(e)].append(e)
    out = []
    for protocol, members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        floors = [v for e in members for v in stat_of(e, "test/fid_floor").get("values", [])]
        names = ", ".join(e["name"] for e in members)
        out.append({"kind": "baseline", "name": f"real training images ({protocol[3]}, n = {protocol[1]})",
                    "model": "FID floor", "recipe": f"the floor of {names}", "command": None,
                    "summary": {"test/fid": stats(floors), "test/fid_floor": stats(floors),
                                "test/fid_ratio": stats([1.0] * len(floors))},
                    "settings": {"fid_extractor_sha256": protocol[0], "fid_samples": protocol[1],
                                 "fid_reference_split": protocol[2]},
                    "how": f"as many real training images ({protocol[3]}) as generated ones, against the same test "
                           f"reference, in the same classifier's features: computed inside each run ({names})"})
    return out


def _baseline_rows(kind: str, data: str, rows: list[dict[str, Any]], baselines: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
    if task_of(kind).baseline == "fid_floor":
        return _fid_floor_rows(rows)
    hashes = {(e.get("settings") or {}).get("data_hash") for e in rows} - {None}
    out = []
    for b in baselines:
        if b.get("task") == kind and b.get("data") == data and b.get("data_hash") in hashes:
            values = {k: {"mean": v, "n": 1, "values": [v], "exact": True} for k, v in b["metrics"].items()}
            out.append({"kind": "baseline", "name": b["model"], "model": "trivial baseline", "summary": values,
                        "settings": b.get("settings") or {}, "record": b, "command": b.get("command"),
                        "recipe": f"counted on the split of {', '.join(b.get('experiments', []))} (data {b['data_hash'][:8]})",
                        "how": str((b.get("settings") or {}).get("rule", "")) + f"; data {b['data_hash'][:12]}; "
                               f"same split as {', '.join(b.get('experiments', []))}"})
    return out


def _columns(kind: str, members: list[dict[str, Any]], anchors: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, unit) columns in the task's order; a key reported in several units gets a column per unit."""
    keys = {k for m in members for k in m["summary"]} | {a["metric"] for a in anchors}
    if kind == "sample_quality" and any(stat_of(m, "test/fid_ratio") for m in members):
        keys.add("test/fid_ratio")
    cols: list[tuple[str, str]] = []
    for key in columns_for(task_of(kind), keys):
        units = {unit_of(key, m.get("settings")) for m in members if stat_of(m, key)}
        units |= {unit_of(key, None) for a in anchors if a["metric"] == key}
        cols += [(key, u) for u in sorted(units)]
    return cols


def _primary(columns: list[tuple[str, str]], anchors: list[dict[str, Any]], runs: list[dict[str, Any]]
             ) -> tuple[str, str] | None:
    """The anchors' metric where our rows report it, else the first ranked column that a run reports."""
    reported = [c for c in columns if direction(c[0]) != "none" and any(stat_of(e, c[0]) for e in runs)]
    paired = [c for c in reported if any(a["metric"] == c[0] for a in anchors)]
    return (paired or reported or [None])[0]


def sort_key(value: float | None, key: str | None) -> tuple[int, float]:
    """Best first in the metric's direction; rows without the value last."""
    if key is None or value is None or not math.isfinite(value):
        return (1, 0.0)
    return (0, -value if direction(key) == "max" else value)


def boards(entries: dict[str, dict[str, Any]], published: dict[str, dict[str, Any]],
           baselines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every task's table: {id, kind, data, title, columns, primary, rows (ranked), anchors}."""
    tables: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in rows_of(entries, published):
        for kind in task_kinds(e["model"], binarized(e.get("settings"), e.get("config")), set(e["summary"])):
            tables[(kind, str(e["data"]))].append(e)
    order = list(TASKS)
    out = []
    for (kind, data), runs in sorted(tables.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order
                                                                       else len(order), kv[0])):
        anchors = anchors_for(data, kind)
        base = _baseline_rows(kind, data, runs, baselines)
        columns = _columns(kind, runs + base, anchors)
        primary = _primary(columns, anchors, runs)
        key = primary[0] if primary else None

        def rank(row: dict[str, Any]) -> tuple[tuple[int, float], str]:
            if row["kind"] == "anchor":
                return sort_key(row["value"] if row["metric"] == key else None, key), "~" + row["model"]
            stat = stat_of(row, key)
            return sort_key(stat.get("mean") if stat else None, key), row["name"]

        ranked = sorted([*({"kind": "run"} | e for e in runs), *base, *({"kind": "anchor"} | a for a in anchors)], key=rank)
        out.append({"id": task_id(kind, data), "kind": kind, "data": data, "title": f"{task_of(kind).title} · {data}",
                    "task": task_of(kind), "columns": columns, "primary": primary, "rows": ranked, "anchors": anchors,
                    "runs": runs})
    return out


def cell(row: dict[str, Any], column: tuple[str, str]) -> dict[str, Any] | None:
    """The stat a row shows in a column, only when the row reports that key in that column's unit."""
    key, unit = column
    if row["kind"] == "anchor":
        return {"mean": row["value"], "n": 0, "anchor": True} if row["metric"] == key else None
    stat = stat_of(row, key)
    if not stat or unit_of(key, row.get("settings")) != unit:
        return None
    return stat
