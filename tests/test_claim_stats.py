"""The statistics behind the claims' verdicts, against oracles (scipy's intervals and one-sided tests, a
Monte-Carlo power), and the three outcomes on synthetic per-seed values (no training)."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pytest
from scipy import stats

from benchmarks.claim.stats import (claim_outcome, detectable_difference, equivalent, judge, mean_ci, pooled_sd, power,
                                    seeds_needed, summarise, welch_interval)
from benchmarks.claim.claims import claim_config
from benchmarks.core.errors import ArchbenchError
from benchmarks.core.params import load_params
from tests.conftest import ROOT


def test_mean_ci_matches_scipy_t_interval() -> None:
    values = [0.61, 0.72, 0.55, 0.68, 0.70]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 5, scale=stats.sem(values))
    got = mean_ci(values)
    assert got["mean"] - got["ci"] == pytest.approx(low, abs=1e-12)
    assert got["mean"] + got["ci"] == pytest.approx(high, abs=1e-12)
    assert math.isnan(mean_ci([1.0])["ci"])


@pytest.mark.parametrize("confidence", [0.95, 0.90])
def test_welch_interval_matches_scipy(confidence: float) -> None:
    a, b = [0.9, 0.95, 0.97, 0.92], [0.41, 0.52, 0.39]
    diff, low, high = welch_interval(a, b, confidence)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-10)
    assert diff == pytest.approx(sum(a) / 4 - sum(b) / 3)


def test_judge_respects_direction_and_noise() -> None:
    high, low = [0.9, 0.92, 0.91], [0.5, 0.52, 0.49]
    assert judge(high, low, higher_is_better=True) == "better"
    assert judge(high, low, higher_is_better=False) == "worse"
    assert judge([0.5, 0.9, 0.1], [0.55, 0.2, 0.8], higher_is_better=True) == "no significant difference"
    assert judge([1.0, 1.0], [0.25, 0.25], higher_is_better=True) == "better"  # identical seeds: an exact gap


TOST_CASES = [  # (a, b, margin): equivalent, not, a real gap, noisy, unequal sizes
    ([2.864, 2.866, 2.862], [2.869, 2.871, 2.866], 0.02),
    ([2.864, 2.866, 2.862], [2.869, 2.871, 2.866], 0.004),
    ([2.0, 2.01, 1.99], [2.2, 2.21, 2.19], 0.02),
    ([0.9, 0.6, 0.75], [0.5, 0.8, 0.7], 0.05),
    ([1.0, 1.01, 0.99, 1.0, 1.005], [1.002, 0.998, 1.001], 0.01),
    ([1.0, 1.01, 0.99, 1.0, 1.005], [1.012, 1.008, 1.011], 0.01),
]


@pytest.mark.parametrize(("a", "b", "margin"), TOST_CASES)
def test_equivalence_is_two_one_sided_welch_tests(a: list[float], b: list[float], margin: float) -> None:
    # H0: diff <= -margin, rejected when a + margin beats b; H0: diff >= margin, rejected when a - margin loses to b.
    above = stats.ttest_ind(np.add(a, margin), b, equal_var=False, alternative="greater").pvalue
    below = stats.ttest_ind(np.subtract(a, margin), b, equal_var=False, alternative="less").pvalue
    assert equivalent(a, b, margin) == (max(above, below) < 0.05)


def test_the_tost_cases_cover_both_answers() -> None:
    assert {equivalent(a, b, m) for a, b, m in TOST_CASES} == {True, False}


@pytest.mark.parametrize(("n_a", "n_b"), [(3, 3), (5, 3)])
def test_power_matches_a_monte_carlo_t_test(n_a: int, n_b: int) -> None:
    sd = 0.7
    delta = detectable_difference(n_a, n_b, sd)
    assert power(delta, n_a, n_b, sd) == pytest.approx(0.8, abs=1e-9)
    assert power(0.0, n_a, n_b, sd) == pytest.approx(0.05, abs=1e-9)  # a true null is rejected at the test's level
    rng = np.random.default_rng(0)
    sims = 40_000  # binomial sd of the estimate at 0.8: 0.002
    a = rng.normal(delta, sd, size=(sims, n_a))
    b = rng.normal(0.0, sd, size=(sims, n_b))
    rejected = stats.ttest_ind(a, b, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)


def test_seeds_needed_is_the_first_n_that_reaches_80_percent() -> None:
    sd, margin = 0.01, 0.02
    n = seeds_needed(margin, sd)
    assert n is not None and power(margin, n, n, sd) >= 0.8 > power(margin, n - 1, n - 1, sd)
    assert seeds_needed(margin, 0.0) == 2 and seeds_needed(1e-6, 1.0) is None
    assert pooled_sd([[1.0, 3.0], [2.0, 2.0, 5.0]]) == pytest.approx(math.sqrt((2.0 + 6.0) / 3))


# ---- the three outcomes on synthetic per-seed values ----------------------------------------------------------
def _depth_claim() -> dict[str, Any]:
    return claim_config(load_params(ROOT / "params.yaml"), "depth")[1]


def _plateau(conf: dict[str, Any], by_depth: dict[int, list[float]]) -> dict[str, Any]:
    return summarise("depth", conf, {("lstm", d): {"test/loss": v} for d, v in by_depth.items()})


def test_the_default_depth_claim_on_an_undertrained_sweep_is_not_supported() -> None:
    conf = _depth_claim()
    flat = {1: [2.869, 2.871, 2.866], 3: [2.864, 2.866, 2.862], 5: [2.860, 2.861, 2.857]}  # all about equal
    result = _plateau(conf, flat)
    assert result["outcome"] == "Refuted"  # 3 layers equivalent to 1 within the margin: nothing to plateau from
    assert "no gain up to 3" in result["verdict"]
    noisy = {d: [v + e for v, e in zip(values, (-0.02, 0.0, 0.02))] for d, values in flat.items()}
    result = _plateau(conf, noisy)  # the same means with more seed noise: nothing can be shown either way
    assert result["outcome"] == "Inconclusive" and "(a) the gain up to 3 is not significant" in result["verdict"]
    assert "seeds would be needed for a difference of 0.02" in result["verdict"]


def test_a_gain_then_a_flat_tail_is_supported() -> None:
    result = _plateau(_depth_claim(), {1: [2.40, 2.41, 2.39], 3: [2.20, 2.204, 2.196], 5: [2.202, 2.198, 2.20]})
    assert result["outcome"] == "Supported" and result["verdicts"][0]["outcome"] == "Supported"
    assert result["verdicts"][0]["margin"] == 0.02


def test_a_clear_gain_beyond_after_is_refuted() -> None:
    result = _plateau(_depth_claim(), {1: [2.40, 2.41, 2.39], 3: [2.20, 2.21, 2.19], 5: [2.0, 2.01, 1.99]})
    assert result["outcome"] == "Refuted" and "5 beats 3 by more than the margin 0.02" in result["verdict"]


def test_a_small_gain_beyond_after_that_may_exceed_the_margin_is_inconclusive() -> None:
    result = _plateau(_depth_claim(), {1: [2.40, 2.41, 2.39], 3: [2.20, 2.21, 2.19], 5: [2.19, 2.17, 2.2]})
    assert result["outcome"] == "Inconclusive" and "(b) 5 may still gain up to" in result["verdict"]


def _better(lstm: list[float], elman: list[float], margin: float = 0.05) -> dict[str, Any]:
    conf = {"statement": "s", "model": "sequence_classifier", "data": "long_lag", "seeds": [0, 1],
            "arms": {"elman": {}, "lstm": {}}, "sweep": {"path": "data_args.lag", "values": [5, 50]},
            "metric": "test/acc", "mode": "max",
            "verdict": [{"type": "better", "arm": "lstm", "than": "elman", "margin": margin},
                        {"type": "compare", "arm": "elman", "than": "lstm"}]}
    _, conf = claim_config({"claims": {"c": conf}}, "c")
    solved = {"test/acc": [1.0, 0.99]}
    per_seed = {("elman", 5): solved, ("lstm", 5): solved, ("elman", 50): {"test/acc": elman},
                ("lstm", 50): {"test/acc": lstm}}
    return summarise("c", conf, per_seed)


def test_better_outcomes() -> None:
    assert _better([0.99, 1.0, 0.98], [0.26, 0.24, 0.25])["outcome"] == "Supported"
    worse = _better([0.26, 0.24, 0.25], [0.99, 1.0, 0.98])
    assert worse["outcome"] == "Refuted" and "worse" in worse["verdict"]
    same = _better([0.991, 0.99, 0.989], [0.99, 0.992, 0.99])
    assert same["outcome"] == "Refuted" and "no meaningful gain" in same["verdict"]
    assert same["verdicts"][1]["outcome"] is None  # compare: reported, not judged


def test_too_few_seeds_to_separate_two_arms_is_inconclusive_with_the_power() -> None:
    lstm, elman = [0.9, 0.6], [0.5, 0.8]
    result = _better(lstm, elman)
    verdict = result["verdicts"][0]
    assert result["outcome"] == verdict["outcome"] == "Inconclusive" and "Not supported" not in result["verdict"]
    sd = statistics.pstdev([0.15, -0.15, -0.15, 0.15]) * math.sqrt(4 / 2)  # pooled: each arm's deviations, df 2
    assert pooled_sd([lstm, elman]) == pytest.approx(sd)
    mdd, needed = detectable_difference(2, 2, sd), seeds_needed(0.05, sd)
    assert verdict["text"].startswith(f"Inconclusive: with 2 seeds the test can detect differences above {mdd:.3g}; "
                                      f"about {needed} seeds would be needed for a difference of 0.05")


def test_claim_outcome_takes_the_worst() -> None:
    assert claim_outcome(["Supported", "Inconclusive", "Refuted", None]) == "Refuted"
    assert claim_outcome(["Supported", "Inconclusive", None]) == "Inconclusive"
    assert claim_outcome(["Supported", None]) == "Supported" and claim_outcome([None]) is None


def _plateau_conf(**verdict: Any) -> dict[str, Any]:
    return {"claims": {"d": {"statement": "s", "model": "char_lm", "data": "words", "arms": {"lstm": {}},
                             "sweep": {"path": "model_args.num_layers", "values": [1, 3, 5]}, "metric": "test/loss",
                             "verdict": {"type": "plateau", "arm": "lstm"} | verdict}}}


@pytest.mark.parametrize(("verdict", "message"), [
    ({"after": 3}, "a 'plateau' verdict needs 'margin'"),
    ({"after": 3, "margin": -0.1}, "margin must be a positive number in test/loss's units"),
    ({"after": 3, "margin": "1%"}, "margin must be a positive number"),
    ({"after": 3, "margin": True}, "margin must be a positive number"),
    ({"after": 1, "margin": 0.02}, "needs sweep values below and above it"),
    ({"after": 3, "margin": 0.02, "tail": 1}, "has no key 'tail'"),
])
def test_bad_verdicts_give_one_line(verdict: dict[str, Any], message: str) -> None:
    with pytest.raises(ArchbenchError, match=message) as info:
        claim_config(_plateau_conf(**verdict), "d")
    assert "\n" not in str(info.value)
