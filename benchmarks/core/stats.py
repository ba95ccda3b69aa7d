"""The one summary statistic every published number carries: the mean and the half-width of its 95% t-interval."""

from __future__ import annotations

import math
import statistics
from typing import Any

CONFIDENCE = 0.95


def mean_ci(values: list[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean and the half-width of its Student-t confidence interval (nan with fewer than 2 values)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "ci": math.nan, "n": n}
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "ci": float(half), "n": n}


def within(ours: float, published: dict[str, Any]) -> bool | None:
    """Whether our mean falls inside the published 95% interval; None when it has no interval (one seed)."""
    ci = published.get("ci95")
    if ci is None or not isinstance(ci, (int, float)) or math.isnan(ci):
        return None
    return abs(ours - published["mean"]) <= ci
