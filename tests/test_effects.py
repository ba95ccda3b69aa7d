"""A claim's verdicts as numbers (benchmarks/report/effects.py), read back from the table stats.py writes:
the effect and its Welch interval against scipy, and the power figures against stats.py's own functions."""

from __future__ import annotations

import statistics

import pytest
from scipy import stats

from benchmarks.claim.stats import detectable_difference, pooled_sd, seeds_needed, summarise
from benchmarks.report.effects import claim_numbers, effect_text

# test/loss per seed of a depth sweep: a clear gain from 1 to 3 layers, about none beyond.
LOSS = {1: [1.90, 1.92, 1.95], 3: [1.70, 1.71, 1.69], 5: [1.695, 1.70, 1.705]}


def _claim() -> dict:
    conf = {"statement": "little gain beyond 3 layers", "metric": "test/loss", "mode": "min", "also": [],
            "sweep": {"path": "model_args.num_layers", "values": [1, 3, 5]}, "arms": {"lstm": {}},
            "verdict": [{"type": "plateau", "arm": "lstm", "after": 3, "margin": 0.02}]}
    return summarise("depth", conf, {("lstm", n): {"test/loss": v} for n, v in LOSS.items()})


def test_a_plateau_reads_as_the_rise_to_its_knee_and_the_largest_gain_beyond() -> None:
    claim = _claim()
    (numbers,) = claim_numbers(claim)
    rise = stats.ttest_ind(LOSS[1], LOSS[3], equal_var=False).confidence_interval(0.95)  # 1 - 3: a gain when lower
    assert numbers["what"] == "lstm: 3 over 1"
    assert numbers["gain"] == pytest.approx(statistics.fmean(LOSS[1]) - statistics.fmean(LOSS[3]))
    assert (numbers["low"], numbers["high"]) == (pytest.approx(rise.low), pytest.approx(rise.high))
    beyond = stats.ttest_ind(LOSS[3], LOSS[5], equal_var=False).confidence_interval(0.95)
    assert numbers["beyond"]["what"] == "lstm: 5 over 3" and numbers["beyond"]["high"] == pytest.approx(beyond.high)
    sd = pooled_sd([LOSS[3], LOSS[1]])
    assert numbers["pooled_sd"] == pytest.approx(sd) and numbers["n"] == [3, 3]
    assert numbers["detectable"] == pytest.approx(detectable_difference(3, 3, sd))
    assert numbers["seeds_needed"] == seeds_needed(0.02, sd)
    text = effect_text(numbers, "nats")
    assert text.startswith(f"lstm: 3 over 1: {numbers['gain']:+.3g} (95% CI") and "; lstm: 5 over 3:" in text


def test_a_comparison_has_no_effect_to_report() -> None:
    claim = _claim()
    claim["verdicts"][0] |= {"type": "compare"}
    assert claim_numbers(claim) == []
