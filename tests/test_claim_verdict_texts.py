"""The published verdicts of the claims, word for word: outcome, text and power sentence of each branch of
``better_verdict`` and ``plateau_verdict``, with their intervals recomputed by scipy's Welch test.

Seeds that agree exactly (zero spread) make the intervals exact, so boundaries (a gain equal to the margin, a
gain of exactly zero) are tested where they matter; accuracy-like metrics (higher is better) make sure the
direction is passed through, since lower-is-better is what a dropped direction falls back to.
"""

from __future__ import annotations

import math

import pytest
from scipy import stats

from benchmarks.claim.stats import better_verdict, plateau_verdict, pooled_sd, power_sentence, seeds_needed

WHAT = "lstm vs elman at data_args.lag = 50 on test/acc"


def fmt(gain: float, low: float, high: float, level: str = "95%") -> str:
    return f"gain {gain:+.4g}, {level} CI {low:+.4g} to {high:+.4g}"


def welch(a: list[float], b: list[float], confidence: float) -> tuple[float, float, float]:
    """mean(a) - mean(b) and scipy's Welch interval for it."""
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)
    return sum(a) / len(a) - sum(b) / len(b), float(ci.low), float(ci.high)


# --- better ----------------------------------------------------------------------------------------------------
def test_better_with_one_seed_has_no_interval() -> None:
    assert better_verdict([0.9], [0.5, 0.6], True, 0.05, WHAT) == {
        "outcome": "Inconclusive", "text": f"Inconclusive: {WHAT}: fewer than 2 seeds, no interval."}


def test_better_supported_states_the_gain_and_its_95_percent_interval() -> None:
    a, b = [0.99, 1.0, 0.98], [0.26, 0.24, 0.25]
    assert better_verdict(a, b, True, 0.05, WHAT) == {
        "outcome": "Supported", "text": f"Supported: {WHAT}: better ({fmt(*welch(a, b, 0.95))})."}


def test_better_refuted_when_worse_in_the_metrics_direction() -> None:
    a, b = [0.26, 0.24, 0.25], [0.99, 1.0, 0.98]
    assert better_verdict(a, b, True, 0.05, WHAT) == {
        "outcome": "Refuted", "text": f"Refuted: {WHAT}: worse ({fmt(*welch(a, b, 0.95))})."}
    gain, low, high = welch(a, b, 0.95)  # the same values as a loss (lower is better): a is now the better arm
    assert better_verdict(a, b, False, 0.05, WHAT)["text"] == f"Supported: {WHAT}: better ({fmt(-gain, -high, -low)})."


def test_better_refuted_as_equivalent_states_the_90_percent_interval() -> None:
    a, b = [0.991, 0.99, 0.989], [0.99, 0.992, 0.99]
    gain, low, high = welch(a, b, 0.90)
    assert better_verdict(a, b, True, 0.05, WHAT) == {
        "outcome": "Refuted", "text": f"Refuted: {WHAT}: equivalent within ±0.05 ({fmt(gain, low, high, '90%')}): "
                                      f"no meaningful gain."}


def test_identical_arms_are_equivalent_not_worse() -> None:
    """Seeds that agree exactly: the interval is the point 0, inside ±margin, and not below 0."""
    assert better_verdict([0.5, 0.5], [0.5, 0.5], True, 0.05, WHAT) == {
        "outcome": "Refuted", "text": f"Refuted: {WHAT}: equivalent within ±0.05 ({fmt(0, 0, 0, '90%')}): "
                                      f"no meaningful gain."}


def test_better_inconclusive_carries_its_power_sentence() -> None:
    a, b = [0.9, 0.6], [0.5, 0.8]
    sentence = power_sentence([a, b], 0.05)
    assert better_verdict(a, b, True, 0.05, WHAT) == {
        "outcome": "Inconclusive", "power": sentence,
        "text": f"Inconclusive: {sentence}. {WHAT}: {fmt(*welch(a, b, 0.95))}."}


# --- plateau ---------------------------------------------------------------------------------------------------
PLATEAU = "lstm, model_args.num_layers on test/acc"


def test_plateau_supported_names_the_rise_and_every_value_beyond() -> None:
    series = {1: [0.5, 0.5], 2: [0.75, 0.75], 3: [0.75, 0.75], 4: [0.625, 0.625]}  # exact: zero spread
    assert plateau_verdict(series, 2, True, 0.25, PLATEAU) == {
        "outcome": "Supported", "text": f"Supported ({PLATEAU}): 2 over 1: {fmt(0.25, 0.25, 0.25)}; beyond 2 no gain "
                                        f"reaches 0.25 (3: gain at most +0; 4: gain at most -0.125)."}


def test_plateau_with_a_gain_beyond_equal_to_the_margin_is_neither_refuted_nor_supported() -> None:
    series = {1: [0.5, 0.5], 2: [0.75, 0.75], 3: [1.0, 1.0]}  # 3 gains exactly the margin over 2
    result = plateau_verdict(series, 2, True, 0.25, PLATEAU)
    sentence = power_sentence([[0.75, 0.75], [0.5, 0.5]], 0.25)
    assert result == {"outcome": "Inconclusive", "power": sentence,
                      "text": f"Inconclusive ({PLATEAU}): (b) 3 may still gain up to +0.25 over 2 (one-sided 95% "
                              f"bound, not below the margin 0.25); {sentence}."}


def test_plateau_lists_both_failures_in_order() -> None:
    series = {1: [0.5, 0.5], 2: [0.5, 0.5], 3: [0.5, 0.5]}  # no gain anywhere, and margin 0 forbids equivalence
    sentence = power_sentence([[0.5, 0.5], [0.5, 0.5]], 0.0)
    assert plateau_verdict(series, 2, True, 0.0, PLATEAU) == {
        "outcome": "Inconclusive", "power": sentence,
        "text": f"Inconclusive ({PLATEAU}): (a) the gain up to 2 is not significant (2 over 1: {fmt(0, 0, 0)}); "
                f"(b) 3 may still gain up to +0 over 2 (one-sided 95% bound, not below the margin 0); {sentence}."}


def test_plateau_refuted_when_nothing_was_gained_up_to_after() -> None:
    base, top = [0.80, 0.81, 0.79], [0.805, 0.80, 0.81]
    gain, low, high = welch(top, base, 0.90)
    assert plateau_verdict({1: base, 2: top, 3: top}, 2, True, 0.05, PLATEAU) == {
        "outcome": "Refuted", "text": f"Refuted ({PLATEAU}): no gain up to 2 to plateau from: 2 is equivalent to 1 "
                                      f"within ±0.05 ({fmt(gain, low, high, '90%')})."}


def test_plateau_refuted_by_a_clear_gain_beyond_after() -> None:
    series = {1: [0.40, 0.41, 0.39], 2: [0.60, 0.61, 0.59], 3: [0.90, 0.91, 0.89]}
    gain, low, high = welch(series[3], series[2], 0.95)
    assert plateau_verdict(series, 2, True, 0.05, PLATEAU) == {
        "outcome": "Refuted", "text": f"Refuted ({PLATEAU}): 3 beats 2 by more than the margin 0.05 "
                                      f"({fmt(gain, low, high)})."}


def test_plateau_bound_beyond_after_is_the_one_sided_95_percent_bound() -> None:
    series = {1: [0.40, 0.41, 0.39], 2: [0.60, 0.61, 0.59], 3: [0.60, 0.64, 0.58], 5: [0.61, 0.60, 0.62]}
    rise = fmt(*welch(series[2], series[1], 0.95))
    bounds = [welch(series[v], series[2], 0.90)[2] for v in (3, 5)]  # upper end of the two-sided 90% interval
    text = plateau_verdict(series, 2, True, 0.2, PLATEAU)["text"]
    assert text == (f"Supported ({PLATEAU}): 2 over 1: {rise}; beyond 2 no gain reaches 0.2 "
                    f"(3: gain at most {bounds[0]:+.4g}; 5: gain at most {bounds[1]:+.4g}).")


# --- the power sentence ----------------------------------------------------------------------------------------
def test_power_sentence_without_a_spread_to_pool() -> None:
    assert power_sentence([[0.5], [0.7]], 0.05) == "fewer than 2 seeds per cell: no interval, add seeds"


def test_power_sentence_names_unequal_seed_counts_and_too_many_needed() -> None:
    sentence = power_sentence([[0.1, 0.9, 0.5], [0.2, 0.8]], 0.001)
    assert sentence.startswith("with 3 and 2 seeds the test can detect differences above ")
    assert sentence.endswith("; more than 1000 seeds would be needed for a difference of 0.001 (80% power, "
                             f"pooled sd {pooled_sd([[0.1, 0.9, 0.5], [0.2, 0.8]]):.3g})")


def test_power_sentence_when_these_seeds_already_suffice() -> None:
    a, b = [0.50, 0.51, 0.49, 0.50], [0.40, 0.41, 0.39, 0.40]
    needed = seeds_needed(0.5, pooled_sd([a, b]))
    assert needed == 2  # fewer than the 4 seeds at hand, and exactly 4 is the boundary below
    assert power_sentence([a, b], 0.5).split("; ")[1] == (
        "2 seeds would detect a difference of 0.5, so a real gain is likely smaller than that (80% power, "
        f"pooled sd {pooled_sd([a, b]):.3g})")
    for margin in (0.01, 0.02, 0.03, 0.05):  # the margin whose seeds_needed is exactly the seeds at hand
        if seeds_needed(margin, pooled_sd([a, b])) == 4:
            assert "4 seeds would detect a difference" in power_sentence([a, b], margin)
            break
    else:
        pytest.fail("no margin needs exactly 4 seeds")


def test_pooled_sd_counts_only_groups_with_a_spread() -> None:
    assert pooled_sd([[1.0, 3.0], [7.0]]) == pytest.approx(math.sqrt(2))  # the single seed adds no df
    assert pooled_sd([[1.0], [2.0]]) != pooled_sd([[1.0], [2.0]])  # nan: nothing to pool
    assert pooled_sd([[1.0, 3.0], [2.0, 6.0, 4.0]]) == pytest.approx(math.sqrt((1 * 2 + 2 * 4) / 3))


# --- seeds needed, against a plain scan ------------------------------------------------------------------------
def _scan(delta: float, sd: float, alpha: float) -> int:
    """The first n (per arm) whose two-sided t-test power reaches 80%, by trying n = 2, 3, ... in turn."""
    from benchmarks.claim.stats import power

    return next(n for n in range(2, 1001) if power(delta, n, n, sd, alpha) >= 0.8)


@pytest.mark.parametrize(("delta", "sd", "alpha"), [(0.1, 0.3, 0.05), (0.02, 0.05, 0.05), (0.1, 0.3, 0.01),
                                                    (10.0, 1.0, 0.05)])
def test_seeds_needed_is_the_first_n_a_scan_finds(delta: float, sd: float, alpha: float) -> None:
    needed = seeds_needed(delta, sd, alpha=alpha)
    assert isinstance(needed, int) and needed == _scan(delta, sd, alpha)


def test_seeds_needed_gives_up_beyond_1000_seeds_at_its_own_level() -> None:
    from benchmarks.claim.stats import power

    assert seeds_needed(0.01, 1.0) is None  # undetectable with 1000 seeds at sd 1
    delta = 2.9 * math.sqrt(2 / 1000)  # detectable with 1000 seeds at level 5%, not at level 1%
    assert power(delta, 1000, 1000, 1.0, 0.01) < 0.8 <= power(delta, 1000, 1000, 1.0, 0.05)
    assert seeds_needed(delta, 1.0, alpha=0.01) is None and seeds_needed(delta, 1.0) == _scan(delta, 1.0, 0.05)


# --- a whole claim's table and verdicts ------------------------------------------------------------------------
def _claim(sweep: dict | None, verdict: list[dict]) -> dict:
    from benchmarks.claim.claims import claim_config

    conf = {"statement": "Context matters.", "model": "sequence_classifier", "data": "long_lag", "seeds": [0, 1],
            "arms": {"lstm": {}, "elman": {}}, "metric": "test/acc", "mode": "max", "also": ["test/loss"],
            "verdict": verdict} | ({"sweep": sweep} if sweep else {})
    return claim_config({"claims": {"c": conf}}, "c")[1]


def _mean_ci(values: list[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return {"mean": pytest.approx(mean), "ci": pytest.approx((high - low) / 2), "n": len(values)}


def test_a_claims_summary_holds_its_table_comparisons_and_verdicts() -> None:
    from benchmarks.claim.stats import summarise

    conf = _claim({"path": "data_args.lag", "values": [5, 50]},
                  [{"type": "better", "arm": "lstm", "than": "elman", "margin": 0.05},
                   {"type": "compare", "arm": "elman", "than": "lstm"}])
    acc = {("lstm", 5): [1.0, 0.98], ("elman", 5): [0.99, 0.97], ("lstm", 50): [0.99, 0.97, 0.98],
           ("elman", 50): [0.25, 0.3, 0.28]}
    per_seed = {cell: {"test/acc": v, "test/loss": [1 - x for x in v]} for cell, v in acc.items()}
    result = summarise("c", conf, per_seed)
    assert result["table"] == [{"arm": arm, "value": value, "seeds": v, "test/acc": _mean_ci(v),
                                "test/loss": _mean_ci([1 - x for x in v])} for (arm, value), v in acc.items()]
    better, compare = result["verdicts"]
    assert better["text"] == f"Supported: {WHAT}: better ({fmt(*welch(acc[('lstm', 50)], acc[('elman', 50)], 0.95))})."
    assert (better["type"], better["margin"], better["outcome"]) == ("better", 0.05, "Supported")
    for row, value in zip(better["comparisons"], (5, 50)):
        diff, low, high = welch(acc[("lstm", value)], acc[("elman", value)], 0.95)
        assert row == {"value": value, "a": "lstm", "b": "elman", "diff": pytest.approx(diff), "low": pytest.approx(low),
                       "high": pytest.approx(high), "gain": pytest.approx(diff),
                       "outcome": "better" if low > 0 else "no significant difference"}
    assert compare == {"type": "compare", "outcome": None, "comparisons": compare["comparisons"],
                       "text": "Comparison: elman vs lstm at data_args.lag = 5 is no significant difference; "
                               "elman vs lstm at data_args.lag = 50 is worse."}
    assert {k: result[k] for k in ("claim", "statement", "metric", "mode", "sweep", "arms", "also", "confidence",
                                   "outcome")} == {
        "claim": "c", "statement": "Context matters.", "metric": "test/acc", "mode": "max",
        "sweep": {"path": "data_args.lag", "values": [5, 50]}, "arms": ["lstm", "elman"], "also": ["test/loss"],
        "confidence": 0.95, "outcome": "Supported"}
    assert result["verdict"] == f"{better['text']} {compare['text']}"


def test_a_claim_without_a_sweep_names_no_value() -> None:
    from benchmarks.claim.stats import summarise

    conf = _claim(None, [{"type": "better", "arm": "lstm", "than": "elman", "margin": 0.05},
                         {"type": "compare", "arm": "lstm", "than": "elman"}])
    (value,) = conf["sweep"]["values"]
    acc = {("lstm", value): [0.9, 0.92, 0.91], ("elman", value): [0.5, 0.52, 0.51]}
    result = summarise("c", conf, {cell: {"test/acc": v, "test/loss": v} for cell, v in acc.items()})
    gain = fmt(*welch(acc[("lstm", value)], acc[("elman", value)], 0.95))
    assert result["verdicts"][0]["text"] == f"Supported: lstm vs elman on test/acc: better ({gain})."
    assert result["verdicts"][1]["text"] == "Comparison: lstm vs elman is better."


def test_a_plateau_claims_comparisons_are_each_value_against_after() -> None:
    from benchmarks.claim.stats import summarise

    conf = _claim({"path": "model_args.num_layers", "values": [1, 2, 3]},
                  [{"type": "plateau", "arm": "lstm", "after": 2, "margin": 0.2}])
    acc = {1: [0.40, 0.41, 0.39], 2: [0.60, 0.61, 0.59], 3: [0.60, 0.64, 0.58]}
    per_seed = {(arm, d): {"test/acc": v, "test/loss": v} for d, v in acc.items() for arm in ("lstm", "elman")}
    (verdict,) = summarise("c", conf, per_seed)["verdicts"]
    assert verdict["text"] == plateau_verdict(acc, 2, True, 0.2, "lstm, model_args.num_layers on test/acc")["text"]
    assert [(r["value"], r["a"], r["b"]) for r in verdict["comparisons"]] == [(1, "lstm@1", "lstm@2"),
                                                                               (3, "lstm@3", "lstm@2")]
    assert verdict["comparisons"][0]["gain"] == pytest.approx(0.40 - 0.60) and verdict["outcome"] == "Supported"


# --- the tests under the verdicts, at their boundaries ---------------------------------------------------------
def test_judge_names_each_outcome_and_a_point_interval_at_zero_is_no_difference() -> None:
    from benchmarks.claim.stats import judge

    assert judge([0.9], [0.5, 0.6], True) == "inconclusive (fewer than 2 seeds)"
    assert judge([0.5, 0.5], [0.5, 0.5], True) == "no significant difference"  # the interval is exactly [0, 0]
    assert judge([0.9, 0.91], [0.5, 0.52], True) == "better" and judge([0.9, 0.91], [0.5, 0.52], False) == "worse"


def _margin_between(a: list[float], b: list[float], inner: float, outer: float) -> float:
    """A margin above the upper end of the ``inner`` interval and below that of the ``outer`` one."""
    return (welch(a, b, inner)[2] + welch(a, b, outer)[2]) / 2


def test_equivalence_uses_the_90_percent_interval_at_level_5_percent() -> None:
    from benchmarks.claim.stats import equivalent

    a, b = [0.52, 0.55, 0.50, 0.53], [0.50, 0.51, 0.49, 0.50]  # a small positive difference
    assert equivalent(a, b, _margin_between(a, b, 0.90, 0.95))  # the 90% interval fits, the 95% one would not
    assert not equivalent(a, b, _margin_between(a, b, 0.85, 0.90))  # nor does a narrower one count
    assert equivalent(a, b, _margin_between(a, b, 0.80, 0.85), alpha=0.10)  # level 10%: the 80% interval
    assert not equivalent([0.5, 0.5], [0.75, 0.75], 0.25)  # a difference of exactly -margin is not inside
    assert not equivalent([0.5], [0.5, 0.5], 1.0)  # no interval from one seed


def test_detectable_difference_is_where_the_power_reaches_80_percent() -> None:
    from benchmarks.claim.stats import detectable_difference, power

    assert detectable_difference(3, 3, 0.0) == 0.0 and math.isnan(detectable_difference(3, 3, float("nan")))
    for n_b, sd, alpha in ((4, 1e-9, 0.05), (4, 0.3, 0.05), (4, 0.3, 0.01), (4, 250.0, 0.05), (3, 0.3, 0.01)):
        d = detectable_difference(3, n_b, sd, alpha=alpha)  # (3, 3) at 1%: bracketed at 1%, not at 5%
        assert abs(power(d, 3, n_b, sd, alpha) - 0.8) < 1e-9, (n_b, sd, alpha)


def test_seeds_needed_for_no_spread_is_two() -> None:
    assert seeds_needed(0.1, 0.0) == 2 and seeds_needed(0.1, float("nan")) is None
