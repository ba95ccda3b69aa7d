"""The statistics of the claims: intervals, equivalence, power, and the three-way verdicts built on them.

Every verdict ends Supported, Refuted or Inconclusive, and can fail in both directions:

- ``better`` (``arm`` beats ``than`` at the last, largest sweep value). Refuted when Welch's 95% interval
  of the gain lies wholly on the worse side, or when a TOST at ``margin`` shows the two within ±margin (a
  gain, even a significant one, smaller than anything that matters); Supported when the interval lies
  wholly on the better side; otherwise Inconclusive, with what these seeds can detect at 80% power and
  how many would be needed to detect ``margin``.
- ``plateau`` ("not much gain beyond ``after``"). Supported when (a) ``after`` is significantly better
  than the smallest sweep value and (b) for every value above ``after`` the one-sided 95% upper bound of
  its gain over ``after`` is below ``margin``. Refuted when a value above ``after`` beats it by more than
  ``margin`` (its whole 95% interval above), or when ``after`` is shown equivalent to the smallest value
  (TOST: no gain to plateau from). Otherwise Inconclusive, naming the part that failed.
- ``compare``: reported per sweep value, never judged.

A "gain" is always in the metric's better direction (lower loss, higher accuracy), in the metric's units.
Equivalence is the two one-sided tests at level 5% (Schuirmann 1987), i.e. the 90% Welch interval inside
(-margin, margin). Power uses the pooled sd and the noncentral t of the two-sided two-sample t-test, the
usual planning approximation of the Welch test the verdicts use.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.core.stats import CONFIDENCE, mean_ci  # noqa: F401  (re-exported: the claims read both here)

ALPHA = 1 - CONFIDENCE
POWER = 0.8
MAX_SEEDS = 1000
OUTCOMES = ("Supported", "Refuted", "Inconclusive")


# ---- intervals and tests --------------------------------------------------------------------------------
def welch_interval(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): Welch's interval for the difference of two means, unequal variances."""
    from scipy import stats

    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:  # every seed of both arms agrees: the difference is exact
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return diff, diff - half, diff + half


def gain_interval(a: list[float], b: list[float], higher_is_better: bool, confidence: float = CONFIDENCE
                  ) -> tuple[float, float, float]:
    """(gain, low, high) of a over b in the better direction: positive means a is better."""
    diff, low, high = welch_interval(a, b, confidence)
    return (diff, low, high) if higher_is_better else (-diff, -high, -low)


def judge(a: list[float], b: list[float], higher_is_better: bool) -> str:
    """'better', 'worse' or 'no significant difference' for a against b at 95%."""
    _, low, high = gain_interval(a, b, higher_is_better)
    if math.isnan(low):
        return "inconclusive (fewer than 2 seeds)"
    return "better" if low > 0 else "worse" if high < 0 else "no significant difference"


def equivalent(a: list[float], b: list[float], margin: float, alpha: float = ALPHA) -> bool:
    """TOST: both one-sided Welch tests reject |mean(a) - mean(b)| >= margin at level alpha."""
    _, low, high = welch_interval(a, b, 1 - 2 * alpha)
    return not math.isnan(low) and -margin < low and high < margin


# ---- power --------------------------------------------------------------------------------------------------
def pooled_sd(groups: list[list[float]]) -> float:
    """The sd pooled over groups (each contributes n - 1 degrees of freedom); nan with none to pool."""
    df = sum(len(g) - 1 for g in groups if len(g) > 1)
    if df == 0:
        return math.nan
    return math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in groups if len(g) > 1) / df)


def power(delta: float, n_a: int, n_b: int, sd: float, alpha: float = ALPHA) -> float:
    """Probability that the two-sided two-sample t-test at level alpha detects a true difference delta."""
    from scipy import stats

    df = n_a + n_b - 2
    nc = delta / (sd * math.sqrt(1 / n_a + 1 / n_b))
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def detectable_difference(n_a: int, n_b: int, sd: float, target: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true difference these seeds detect with probability ``target``."""
    from scipy import optimize

    if sd == 0 or math.isnan(sd):
        return 0.0 if sd == 0 else math.nan
    high = sd
    while power(high, n_a, n_b, sd, alpha) < target:
        high *= 2
    return float(optimize.brentq(lambda d: power(d, n_a, n_b, sd, alpha) - target, 0.0, high, xtol=1e-12 * high))


def seeds_needed(delta: float, sd: float, target: float = POWER, alpha: float = ALPHA) -> int | None:
    """Seeds per arm for the test to detect ``delta`` with probability ``target`` (None beyond MAX_SEEDS)."""
    if sd == 0:
        return 2
    if math.isnan(sd) or power(delta, MAX_SEEDS, MAX_SEEDS, sd, alpha) < target:
        return None
    low, high = 1, MAX_SEEDS  # power grows with n: bisect for the first n that reaches the target
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if power(delta, mid, mid, sd, alpha) < target else (low, mid)
    return high


def power_sentence(groups: list[list[float]], margin: float) -> str:
    """What these seeds can detect, and how many would detect ``margin`` (both at 80% power)."""
    sd, n_a, n_b = pooled_sd(groups), len(groups[0]), len(groups[1])
    if math.isnan(sd):
        return "fewer than 2 seeds per cell: no interval, add seeds"
    seeds = f"{n_a} seeds" if n_a == n_b else f"{n_a} and {n_b} seeds"
    needed = seeds_needed(margin, sd)
    if needed is None:
        tail = f"more than {MAX_SEEDS} seeds would be needed for a difference of {margin:g}"
    elif needed <= min(n_a, n_b):
        tail = f"{needed} seeds would detect a difference of {margin:g}, so a real gain is likely smaller than that"
    else:
        tail = f"about {needed} seeds would be needed for a difference of {margin:g}"
    return (f"with {seeds} the test can detect differences above {detectable_difference(n_a, n_b, sd):.3g}; "
            f"{tail} (80% power, pooled sd {sd:.3g})")


# ---- verdicts -------------------------------------------------------------------------------------------------
def _fmt(gain: float, low: float, high: float, level: str = "95%") -> str:
    return f"gain {gain:+.4g}, {level} CI {low:+.4g} to {high:+.4g}"


def better_verdict(a: list[float], b: list[float], higher: bool, margin: float, what: str) -> dict[str, Any]:
    """``what`` names the comparison, e.g. 'lstm vs elman at data_args.lag = 50 on test/acc'."""
    gain, low, high = gain_interval(a, b, higher)
    if math.isnan(low):
        return {"outcome": "Inconclusive", "text": f"Inconclusive: {what}: fewer than 2 seeds, no interval."}
    if high < 0:
        outcome, why = "Refuted", f"{what}: worse ({_fmt(gain, low, high)})."
    elif equivalent(a, b, margin):
        _, elow, ehigh = gain_interval(a, b, higher, 1 - 2 * ALPHA)
        outcome, why = "Refuted", (f"{what}: equivalent within ±{margin:g} ({_fmt(gain, elow, ehigh, '90%')}): "
                                   f"no meaningful gain.")
    elif low > 0:
        outcome, why = "Supported", f"{what}: better ({_fmt(gain, low, high)})."
    else:
        return {"outcome": "Inconclusive", "power": power_sentence([a, b], margin),
                "text": f"Inconclusive: {power_sentence([a, b], margin)}. {what}: {_fmt(gain, low, high)}."}
    return {"outcome": outcome, "text": f"{outcome}: {why}"}


def plateau_verdict(series: dict[Any, list[float]], after: Any, higher: bool, margin: float, what: str
                    ) -> dict[str, Any]:
    """``series`` maps sweep values to per-seed metrics of one arm; ``what`` names arm, path and metric."""
    smallest = min(series)
    top, base = series[after], series[smallest]
    gain, low, high = gain_interval(top, base, higher)
    rise = f"{after} over {smallest}: {_fmt(gain, low, high)}"
    if equivalent(top, base, margin):
        _, elow, ehigh = gain_interval(top, base, higher, 1 - 2 * ALPHA)
        return {"outcome": "Refuted", "text": f"Refuted ({what}): no gain up to {after} to plateau from: {after} is "
                                              f"equivalent to {smallest} within ±{margin:g} "
                                              f"({_fmt(gain, elow, ehigh, '90%')})."}
    beyond, failed = [], []
    for value in (v for v in series if v > after):
        g, lo, hi = gain_interval(series[value], top, higher)
        bound = gain_interval(series[value], top, higher, 1 - 2 * ALPHA)[2]  # one-sided 95% upper bound
        if lo > margin:
            return {"outcome": "Refuted", "text": f"Refuted ({what}): {value} beats {after} by more than the margin "
                                                  f"{margin:g} ({_fmt(g, lo, hi)})."}
        beyond.append(f"{value}: gain at most {bound:+.4g}")
        if not bound < margin:
            failed.append(f"(b) {value} may still gain up to {bound:+.4g} over {after} (one-sided 95% bound, "
                          f"not below the margin {margin:g})")
    if not low > 0:
        failed.insert(0, f"(a) the gain up to {after} is not significant ({rise})")
    if not failed:
        return {"outcome": "Supported", "text": f"Supported ({what}): {rise}; beyond {after} no gain reaches "
                                                f"{margin:g} ({'; '.join(beyond)})."}
    sentence = power_sentence([top, base], margin)
    return {"outcome": "Inconclusive", "power": sentence,
            "text": f"Inconclusive ({what}): {'; '.join(failed)}; {sentence}."}


def claim_outcome(outcomes: list[str | None]) -> str | None:
    """Refuted if any verdict is, else Inconclusive if any is, else Supported; None with nothing judged."""
    judged = [o for o in outcomes if o is not None]
    if not judged:
        return None
    return "Refuted" if "Refuted" in judged else "Inconclusive" if "Inconclusive" in judged else "Supported"


# ---- a claim's table and verdicts -------------------------------------------------------------------------
def summarise(name: str, conf: dict[str, Any], per_seed: dict[tuple[str, Any], dict[str, list[float]]]) -> dict[str, Any]:
    """The claim's table (mean ± 95% CI per cell and metric) and its verdicts, from per-seed values."""
    metric = conf["metric"]
    table = [{"arm": arm, "value": value, "seeds": per_seed[(arm, value)][metric],
              **{m: mean_ci(per_seed[(arm, value)][m]) for m in [metric, *conf["also"]] if per_seed[(arm, value)][m]}}
             for arm, value in per_seed]
    verdicts = [_verdict(conf, verdict, per_seed) for verdict in conf["verdict"]]
    return {"claim": name, "statement": conf["statement"], "metric": metric, "mode": conf["mode"],
            "sweep": conf["sweep"], "arms": list(conf["arms"]), "also": conf["also"], "confidence": CONFIDENCE,
            "table": table, "verdicts": verdicts, "outcome": claim_outcome([v["outcome"] for v in verdicts]),
            "verdict": " ".join(v["text"] for v in verdicts)}


def _verdict(conf: dict[str, Any], verdict: dict[str, Any], per_seed: dict[tuple[str, Any], dict[str, list[float]]]
             ) -> dict[str, Any]:
    metric, higher, path, values = conf["metric"], conf["mode"] == "max", conf["sweep"]["path"], conf["sweep"]["values"]
    kind, arm = verdict["type"], verdict["arm"]

    def where(value: Any) -> str:
        return f" at {path} = {value}" if path else ""

    def row(a: list[float], b: list[float], value: Any, a_name: str, b_name: str) -> dict[str, Any]:
        diff, low, high = welch_interval(a, b)
        return {"value": value, "a": a_name, "b": b_name, "diff": diff, "low": low, "high": high,
                "gain": gain_interval(a, b, higher)[0], "outcome": judge(a, b, higher)}

    if kind in ("better", "compare"):
        than = verdict["than"]
        rows = [row(per_seed[(arm, v)][metric], per_seed[(than, v)][metric], v, arm, than) for v in values]
        if kind == "compare":
            text = "Comparison: " + "; ".join(f"{arm} vs {than}{where(r['value'])} is {r['outcome']}" for r in rows) + "."
            return {"type": kind, "outcome": None, "text": text, "comparisons": rows}
        judged = better_verdict(per_seed[(arm, values[-1])][metric], per_seed[(than, values[-1])][metric], higher,
                                verdict["margin"], f"{arm} vs {than}{where(values[-1])} on {metric}")
    else:  # plateau
        after = verdict["after"]
        series = {v: per_seed[(arm, v)][metric] for v in values}
        rows = [row(series[v], series[after], v, f"{arm}@{v}", f"{arm}@{after}") for v in values if v != after]
        judged = plateau_verdict(series, after, higher, verdict["margin"], f"{arm}, {path} on {metric}")
    return {"type": kind, "margin": verdict["margin"], **judged, "comparisons": rows}
