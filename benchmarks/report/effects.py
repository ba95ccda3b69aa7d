"""A claim's verdicts as numbers: the effect each test judged, its 95% interval, and what the seeds could detect.

Read from the claim's own table (per-seed values of every cell) and each verdict's comparisons, as
benchmarks/claim/stats.py wrote them, so a claim from results/ and a published one give the same numbers:

- ``better`` (arm beats than at the largest sweep value): the gain of arm over than there;
- ``plateau`` (no gain worth having beyond ``after``): the gain of ``after`` over the smallest sweep value
  (the rise), and the largest gain any value beyond ``after`` shows over it (the plateau);

each gain in the metric's better direction with Welch's 95% interval, the margin, the smallest difference
these seeds detect at 80% power, and the seeds per arm that would detect the margin (stats.py's planning
approximation). ``compare`` verdicts are reported, not judged: they have no effect here.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.claim.stats import POWER, detectable_difference, gain_interval, pooled_sd, seeds_needed


def _values(claim: dict[str, Any]) -> dict[tuple[str, Any], list[float]]:
    return {(str(r["arm"]), r.get("value")): [float(v) for v in r.get("seeds", [])] for r in claim.get("table", [])}


def _interval(a: list[float], b: list[float], higher: bool) -> dict[str, float]:
    gain, low, high = gain_interval(a, b, higher)
    return {"gain": gain, "low": low, "high": high}


def _power(a: list[float], b: list[float], margin: float) -> dict[str, Any]:
    sd = pooled_sd([a, b])
    if math.isnan(sd):
        return {"n": [len(a), len(b)], "pooled_sd": None, "detectable": None, "seeds_needed": None}
    return {"n": [len(a), len(b)], "pooled_sd": sd, "power": POWER,
            "detectable": detectable_difference(len(a), len(b), sd), "seeds_needed": seeds_needed(margin, sd)}


def verdict_numbers(claim: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Any] | None:
    """The judged effect of one verdict (see the module doc); None for a comparison or a table that lacks it."""
    kind, rows = verdict.get("type"), verdict.get("comparisons") or []
    if kind not in ("better", "plateau") or not rows or "margin" not in verdict:
        return None
    higher, cells, margin = claim.get("mode") == "max", _values(claim), float(verdict["margin"])
    values = (claim.get("sweep") or {}).get("values") or [None]
    if kind == "better":
        last = rows[-1]
        a, b = cells.get((last["a"], last["value"])), cells.get((last["b"], last["value"]))
        if not a or not b:
            return None
        where = f" at {claim['sweep']['path']} = {last['value']}" if (claim.get("sweep") or {}).get("path") else ""
        return {"type": kind, "what": f"{last['a']} over {last['b']}{where}", "margin": margin,
                **_interval(a, b, higher), **_power(a, b, margin)}
    arm, after_text = str(rows[0]["b"]).rsplit("@", 1)  # plateau rows compare "arm@v" with "arm@after"
    after = next((v for v in values if str(v) == after_text), None)
    if after is None:
        return None
    smallest = min(values)
    top, base = cells.get((arm, after)), cells.get((arm, smallest))
    if not top or not base:
        return None
    beyond = [(v, _interval(cells[(arm, v)], top, higher)) for v in values if v > after and cells.get((arm, v))]
    worst = max(beyond, key=lambda vi: vi[1]["high"]) if beyond else None
    return {"type": kind, "what": f"{arm}: {after} over {smallest}", "margin": margin, **_interval(top, base, higher),
            **_power(top, base, margin),
            "beyond": None if worst is None else {"what": f"{arm}: {worst[0]} over {after}", **worst[1]}}


def claim_numbers(claim: dict[str, Any]) -> list[dict[str, Any]]:
    """verdict_numbers of every judged verdict of a claim, in order."""
    return [n for v in claim.get("verdicts", []) if (n := verdict_numbers(claim, v)) is not None]


def effect_text(numbers: dict[str, Any], unit: str = "") -> str:
    """'lstm over elman at data_args.lag = 100: +0.41 (95% CI +0.35 to +0.47) fraction'."""
    def one(n: dict[str, Any]) -> str:
        ci = (f" (95% CI {n['low']:+.3g} to {n['high']:+.3g})" if math.isfinite(n["low"]) else " (no interval)")
        return f"{n['what']}: {n['gain']:+.3g}{ci}{' ' + unit if unit else ''}"

    text = one(numbers)
    if numbers.get("beyond"):
        text += "; " + one(numbers["beyond"])
    return text
