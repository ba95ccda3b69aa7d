"""The claims machinery: confidence intervals against scipy, verdicts on known numbers, bad definitions,
and a tiny claim run end to end through the CLI into the report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from benchmarks.claims import cell_experiments, claim_config, judge, mean_ci, summarise, welch_interval
from benchmarks.cli import main
from benchmarks.errors import ArchbenchError
from benchmarks.params import load_params
from tests.conftest import ROOT, tiny_params


def test_mean_ci_matches_scipy_t_interval() -> None:
    values = [0.61, 0.72, 0.55, 0.68, 0.70]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 5, scale=stats.sem(values))
    got = mean_ci(values)
    assert got["mean"] - got["ci"] == pytest.approx(low, abs=1e-12)
    assert got["mean"] + got["ci"] == pytest.approx(high, abs=1e-12)
    assert math.isnan(mean_ci([1.0])["ci"])


def test_welch_interval_matches_scipy() -> None:
    a, b = [0.9, 0.95, 0.97, 0.92], [0.41, 0.52, 0.39]
    diff, low, high = welch_interval(a, b)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-10)
    assert diff == pytest.approx(sum(a) / 4 - sum(b) / 3)


def test_judge_respects_direction_and_noise() -> None:
    high, low = [0.9, 0.92, 0.91], [0.5, 0.52, 0.49]
    assert judge(high, low, higher_is_better=True) == "better"
    assert judge(high, low, higher_is_better=False) == "worse"
    assert judge([0.5, 0.9, 0.1], [0.55, 0.2, 0.8], higher_is_better=True) == "no significant difference"
    assert judge([1.0, 1.0], [0.25, 0.25], higher_is_better=True) == "better"  # identical seeds: an exact gap


def _conf(**over: Any) -> dict[str, Any]:
    conf = {"statement": "s", "model": "sequence_classifier", "data": "long_lag", "seeds": [0, 1, 2],
            "arms": {"elman": {"model_args": {"cell": "elman"}}, "lstm": {"model_args": {"cell": "lstm"}}},
            "sweep": {"path": "data_args.lag", "values": [5, 50]}, "metric": "test/acc", "mode": "max",
            "verdict": [{"type": "better", "arm": "lstm", "than": "elman"}]}
    return conf | over


def test_better_verdict_is_judged_at_the_largest_sweep_value() -> None:
    _, conf = claim_config({"claims": {"c": _conf()}}, "c")
    solved, chance = {"test/acc": [1.0, 0.99, 1.0]}, {"test/acc": [0.26, 0.24, 0.25]}
    per_seed = {("elman", 5): solved, ("lstm", 5): solved, ("elman", 50): chance, ("lstm", 50): solved}
    result = summarise("c", conf, per_seed)
    assert result["supported"] is True and result["verdict"].startswith("Supported")
    assert [c["outcome"] for c in result["verdicts"][0]["comparisons"]] == ["no significant difference", "better"]
    per_seed[("lstm", 50)] = chance
    assert summarise("c", conf, per_seed)["supported"] is False


def test_plateau_verdict() -> None:
    conf = _conf(arms={"lstm": {}}, sweep={"path": "model_args.num_layers", "values": [1, 3, 5]}, metric="test/loss",
                 mode="min", verdict={"type": "plateau", "arm": "lstm", "after": 3})
    _, conf = claim_config({"claims": {"d": conf}}, "d")
    per_seed = {("lstm", 1): {"test/loss": [2.4, 2.41, 2.39]}, ("lstm", 3): {"test/loss": [2.2, 2.21, 2.19]},
                ("lstm", 5): {"test/loss": [2.21, 2.19, 2.2]}}
    assert summarise("d", conf, per_seed)["supported"] is True
    per_seed[("lstm", 5)] = {"test/loss": [2.0, 2.01, 1.99]}  # depth 5 clearly better: the claim fails
    result = summarise("d", conf, per_seed)
    assert result["supported"] is False and "5" in result["verdict"]


def test_cells_combine_base_arm_and_sweep() -> None:
    profile, conf = claim_config({"full_claims": {"c": _conf(model_args={"hidden_size": 16})}}, "c")
    cells = cell_experiments("c", profile, conf)
    exp = cells[("lstm", 50)]
    assert profile == "full" and exp.model_args == {"hidden_size": 16, "cell": "lstm"} and exp.data_args == {"lag": 50}
    assert exp.seeds == (0, 1, 2) and len({e.name for e in cells.values()}) == 4


@pytest.mark.parametrize(("over", "message"), [
    ({"seeds": [0]}, "at least 2 integers"),
    ({"verdict": {"type": "better", "arm": "gru", "than": "elman"}}, "verdict.arm 'gru' is not an arm"),
    ({"verdict": {"type": "wins"}}, "verdict.type must be one of"),
    ({"sweep": {"path": "lag", "values": [1]}}, "sweep.path must be"),
    ({"mode": "up"}, "mode must be min or max"),
    ({"colour": 1}, "unknown key 'colour'"),
])
def test_bad_claims_give_one_line(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ArchbenchError, match=message) as info:
        claim_config({"claims": {"c": _conf(**over)}}, "c")
    assert "\n" not in str(info.value)


def test_unknown_claim_names_the_known_ones() -> None:
    with pytest.raises(ArchbenchError, match="unknown claim 'nope'.*long_lag"):
        claim_config(tiny_params(), "nope")


def test_tiny_claim_runs_through_the_cli_into_the_report(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["claim", "long_lag", "--no-progress"]) == 0
    out = project / "results" / "claims" / "long_lag"
    claim = json.loads((out / "claim.json").read_text())
    assert (out / "claim.png").is_file()
    assert len(claim["table"]) == 3 * 2 and all(len(row["seeds"]) == 2 for row in claim["table"])
    assert {"test/acc", "test/grad_norm_first"} <= claim["table"][0].keys()
    assert claim["supported"] in (True, False) and len(claim["verdicts"]) == 2
    # Each cell is a normal experiment: its per-seed results sit beside the claim.
    assert (out / "runs" / "claim_long_lag_lstm_lag6" / "metrics.json").is_file()
    assert main(["report"]) == 0
    board = (project / "results" / "report" / "leaderboard.md").read_text()
    assert "### long_lag" in board and claim["verdicts"][0]["text"] in board
    assert (project / "results" / "report" / "claim_long_lag.png").is_file()
    # Rerunning resumes every finished seed instead of training again: the same numbers come back.
    assert main(["claim", "long_lag", "--no-progress"]) == 0
    again = json.loads((out / "claim.json").read_text())
    assert again["table"] == claim["table"]


def test_every_claim_in_params_yaml_builds_its_cells() -> None:
    params = load_params(ROOT / "params.yaml")
    names = [(section, name) for section in ("claims", "full_claims") for name in params.get(section, {})]
    assert ("full_claims", "frames_context") in names and ("claims", "long_lag") in names
    for section, name in names:
        profile, conf = claim_config(params, name)
        cells = cell_experiments(name, profile, conf)
        assert profile == ("default" if section == "claims" else "full"), name
        assert len(cells) == len(conf["arms"]) * len(conf["sweep"]["values"]) and len(conf["seeds"]) >= 3, name
