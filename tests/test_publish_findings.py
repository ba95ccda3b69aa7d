"""`archbench publish` of claims and studies: what the ledger records hold (values, verdicts with their numbers,
provenance, compute, trials), and the one-line refusals that write nothing (unfinished, stale, diverged)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from scipy import stats

from benchmarks.cli import main
from tests.conftest import tiny_params, write_params
from tests.findings_fixtures import ACC, TRIALS, VALUES, absolute_paths, write_claim, write_study


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    return err


def test_a_finished_claim_is_published_with_its_verdict_numbers_and_provenance(project: Path) -> None:
    write_claim(project, tiny_params())
    assert main(["publish", "long_lag"]) == 0  # a bare name resolves to the claim
    record = json.loads((project / "ledger" / "claims" / "long_lag.json").read_text())
    assert record["statement"].startswith("An LSTM learns") and record["outcome"] == "Supported"
    assert record["arms"] == ["elman", "lstm", "peephole"] and record["sweep"] == {"path": "data_args.lag", "values": [3, 6]}
    assert record["definition"]["arms"]["lstm"] == {"model_args": {"cell": "lstm", "forget_bias": 5.0}}
    cells = {(c["arm"], c["value"]): c for c in record["cells"]}
    assert len(cells) == 6 and all(len(c["seeds"]) == 2 for c in cells.values())
    lstm6 = cells[("lstm", 6)]
    assert [lstm6["seeds"][s]["metrics"]["test/acc"] for s in ("0", "1")] == ACC[("lstm", 6)]
    prov = lstm6["seeds"]["1"]["provenance"]
    assert prov["run_id"] == "claim_long_lag_lstm_lag6-s1" and prov["git_commit"] == "abc123def456"
    assert prov["compute"] == {"cpu_s": 3.0, "how": "wall time x torch threads (an upper bound)", "wall_s": 3.0,
                               "machine": {"host": "box", "cpu_model": "AMD EPYC", "cpu_capability": "AVX2", "cores": 2,
                                           "threads": 1}}
    assert record["compute"]["cpu_s"] == pytest.approx(6 * (2.0 + 3.0)) and record["compute"]["runs"] == 12
    # The better verdict: lstm over elman at lag 6, Welch's interval against scipy, power numbers present.
    better = record["verdicts"][0]
    assert better["type"] == "better" and better["outcome"] == "Supported"
    numbers = better["numbers"]
    a, b = ACC[("lstm", 6)], ACC[("elman", 6)]
    welch = stats.ttest_ind(a, b, equal_var=False)
    low, high = welch.confidence_interval(0.95)
    assert numbers["gain"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert (numbers["low"], numbers["high"]) == (pytest.approx(low), pytest.approx(high))
    assert numbers["margin"] == 0.05 and numbers["n"] == [2, 2] and numbers["seeds_needed"] >= 2
    assert numbers["detectable"] > 0 and record["verdicts"][1]["numbers"] is None  # compare: not judged
    assert absolute_paths(record) == []  # a local tracking store is named, never located


@pytest.mark.parametrize("spoil, words", [
    ("code", ("stale", "claim_long_lag_peephole_lag6 seed 1", "other code")),
    ("config", ("stale", "another config")),
    ("data", ("stale", "other data")),
    ("diverged", ("diverged", "claim_long_lag_peephole_lag6 seed 1")),
    ("missing", ("unfinished", "1 of 12")),
])
def test_a_claim_with_one_bad_cell_seed_is_refused_in_one_line_and_nothing_is_written(
        project: Path, capsys: pytest.CaptureFixture[str], spoil: str, words: tuple[str, ...]) -> None:
    cells = write_claim(project, tiny_params())
    exp = cells[("peephole", 6)]
    seed_dir = project / "results" / "claims" / "long_lag" / "runs" / exp.name / "seeds" / "seed_1"
    result = json.loads((seed_dir / "result.json").read_text())
    if spoil == "diverged":
        note = project / "results" / "claims" / "long_lag" / "runs" / exp.name / "diverged" / "seed_1.json"
        note.parent.mkdir(parents=True)
        note.write_text(json.dumps({"seed": 1, "config_hash": exp.config_hash(), "reason": "train/loss is nan"}))
    elif spoil == "missing":
        (seed_dir / "result.json").unlink()
    else:
        result[f"{spoil}_hash"] = "0123456789ab"
        (seed_dir / "result.json").write_text(json.dumps(result))
    capsys.readouterr()
    assert main(["publish", "--claim", "long_lag"]) != 0
    _one_line_error(capsys, "cannot publish claim long_lag", *words)
    assert not (project / "ledger").exists()


def test_names_resolve_to_one_kind_or_are_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tiny_params()
    params["studies"]["hello_lstm"] = params["studies"]["lstm_depth"]  # a study named like an experiment
    write_params(project / "params.yaml", params)
    assert main(["publish", "hello_lstm"]) == 2
    _one_line_error(capsys, "both an experiment and a study", "--experiment hello_lstm", "--study hello_lstm")
    assert main(["publish", "no_such_thing"]) == 2
    _one_line_error(capsys, "no experiment, claim or study")
    assert main(["publish", "--claim", "lstm_depth"]) == 2
    _one_line_error(capsys, "no such claim", "long_lag")
    assert main(["publish"]) == 2
    _one_line_error(capsys, "nothing to publish")
    write_claim(project, tiny_params())
    assert main(["publish", "--claim", "long_lag", "--experiment", "words_lstm"]) == 2  # checked before anything is written
    _one_line_error(capsys, "cannot publish words_lstm")
    assert not (project / "ledger").exists()


def test_a_finished_study_is_published_with_every_trial(project: Path) -> None:
    study = write_study(project, tiny_params())
    assert main(["publish", "--study", "lstm_depth"]) == 0
    record = json.loads((project / "ledger" / "studies" / "lstm_depth.json").read_text())
    assert record["definition_hash"] == study.user_attrs["definition_hash"] and record["storage"] == "sqlite"
    assert record["best"] == {"trial": 1, "value": 1.4, "params": TRIALS[1]}
    assert record["counts"] == {"COMPLETE": 3, "PRUNED": 1, "FAIL": 0} and record["n_trials"] == 4
    trials = record["trials"]
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    assert [t["value"] for t in trials[:3]] == list(VALUES[:3]) and [t["params"] for t in trials] == list(TRIALS)
    assert trials[3]["pruned_at_step"] == 1 and trials[3]["intermediate_values"] == {"0": 2.5, "1": 2.15}
    assert trials[0]["pruned_at_step"] is None and trials[0]["host"] == "box"
    assert json.loads(trials[0]["distributions"]["lr"])["attributes"]["log"] is True
    assert record["trial_budget"]["max_epochs"] == 2 and record["metric"] == "val/loss"
    assert all(t["compute"]["cpu_s"] is not None for t in trials)
    assert record["compute"]["runs"] == 4 and absolute_paths(record) == []


def test_an_unfinished_or_stale_study_is_refused_in_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import optuna

    assert main(["publish", "--study", "lstm_depth"]) == 2
    _one_line_error(capsys, "no study storage", "archbench tune lstm_depth")
    assert not (project / "optuna.db").exists()  # looking created nothing

    study = write_study(project, tiny_params(), code="0123456789ab")
    capsys.readouterr()
    assert main(["publish", "--study", "lstm_depth"]) == 2
    _one_line_error(capsys, "trial 0 is stale", "other code")

    params = tiny_params()
    params["studies"]["lstm_depth"]["search_space"]["num_layers"]["high"] = 5  # the definition changed
    write_params(project / "params.yaml", params)
    assert main(["publish", "lstm_depth"]) == 2
    _one_line_error(capsys, "it is stale", study.user_attrs["definition_hash"])

    write_params(project / "params.yaml", tiny_params())
    study.ask()  # a trial left RUNNING (a worker that is still at it, or died)
    assert main(["publish", "lstm_depth"]) == 2
    _one_line_error(capsys, "unfinished", "trial 4 is RUNNING")
    params["studies"]["lstm_depth"] = tiny_params()["studies"]["lstm_depth"] | {"n_trials": 6}
    write_params(project / "params.yaml", params)
    optuna.delete_study(study_name="lstm_depth", storage=f"sqlite:///{project / 'optuna.db'}")
    write_study(project, params)
    assert main(["publish", "lstm_depth"]) == 2
    _one_line_error(capsys, "unfinished", "4 of 6 trials finished")
    assert not (project / "ledger").exists()
