"""The ledger (``archbench publish``) against a second computation: its means, sample stds and t intervals
recomputed with ``statistics`` and scipy from the per-seed values written here (tests/published_seeds.py), what it
refuses, how it thins curves and copies samples, and that publishing twice gives the same bytes.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.params import experiment_from_params
from benchmarks.run.results import merge_seeds
from tests.published_seeds import VALUES, assert_numbers, publishable


pytestmark = pytest.mark.usefixtures("data_now_is_d0")


def test_the_ledger_publishes_the_numbers_statistics_and_scipy_give(project: Path) -> None:
    from benchmarks.report.ledger import publish

    params = publishable(project, (0, 1, 2, 3), VALUES)  # seed 3 never ran: published only when asked
    with pytest.raises(ArchbenchError, match=r"seed \[3\] not finished.*--allow-missing"):
        publish(params, "hello_lstm", project / "results")
    path = publish(params, "hello_lstm", project / "results", allow_missing=True)
    assert path == project / "ledger" / "hello_lstm.json"
    record = json.loads(path.read_text())
    assert_numbers(record["summary"], VALUES)
    numbers = json.loads((project / "ledger" / "metrics" / "hello_lstm.json").read_text())
    assert numbers == record["summary"] | {"n_seeds": 3}
    assert record["seeds"]["1"] == {"metrics": VALUES[1], "stopped_by": "max_epochs", "epochs": 2, "steps": 11,
                                    "provenance": {"run_id": "run1", "git_commit": "abc", "experiment_id": None}}
    assert sorted(record["seeds"]) == ["0", "1", "2"] and record["missing_seeds"] == [3]
    exp = experiment_from_params(params, "hello_lstm")
    assert record["config"] == json.loads(json.dumps(exp.as_dict())) and record["config_hash"] == exp.config_hash()
    assert {k: record[k] for k in ("experiment", "model", "data", "profile", "data_hash", "budget", "settings",
                                   "truncated", "schema", "description")} == {
        "description": exp.description,
        "experiment": "hello_lstm", "model": exp.model, "data": exp.data, "profile": exp.profile, "data_hash": "d0",
        "budget": {"max_epochs": 2}, "settings": {"loss_unit": "nats per character"}, "truncated": False, "schema": 1}
    # the same numbers as metrics.json: one rule for both
    merge_seeds(exp, project / "results", code=record["code_hash"])
    assert json.loads((project / "results" / "hello_lstm" / "metrics.json").read_text()) == numbers


def test_the_ledger_std_is_the_sample_std_and_one_seed_has_no_spread(project: Path) -> None:
    from benchmarks.report.ledger import publish

    publish(publishable(project, (0, 1, 2), VALUES), "hello_lstm", project / "results")
    std = json.loads((project / "ledger" / "metrics" / "hello_lstm.json").read_text())["test/loss"]["std"]
    assert std == pytest.approx(statistics.stdev([m["test/loss"] for m in VALUES.values()]), rel=1e-12)
    publish(publishable(project / "one", (0,), VALUES), "hello_lstm", project / "one" / "results")
    assert json.loads((project / "one" / "ledger" / "metrics" / "hello_lstm.json").read_text()) == {
        "test/bpc": {"mean": 2.164, "n": 1}, "test/loss": {"mean": 1.5, "n": 1}, "n_seeds": 1}


def test_the_ledger_refuses_a_seed_from_another_config(project: Path) -> None:
    from benchmarks.report.ledger import publish

    params = publishable(project, (0, 1), VALUES)
    seed1 = project / "results" / "hello_lstm" / "seeds" / "seed_1" / "result.json"
    seed1.write_text(json.dumps(json.loads(seed1.read_text()) | {"config_hash": "feedfeedfeed"}))
    with pytest.raises(ArchbenchError) as err:
        publish(params, "hello_lstm", project / "results")
    assert str(err.value) == ("cannot publish hello_lstm: seed 1: made by another config of hello_lstm "
                              "(feedfeedfeed); run `archbench train hello_lstm` for it (or publish the current "
                              "seeds alone with --allow-missing, which the ledger records)")
    assert not (project / "ledger").exists()


def test_the_ledger_refuses_no_seeds_and_diverged_seeds(project: Path) -> None:
    from benchmarks.report.ledger import publish

    params = publishable(project, (0, 1), {})
    with pytest.raises(ArchbenchError) as err:
        publish(params, "hello_lstm", project / "results")
    assert str(err.value) == (f"cannot publish hello_lstm: no finished seed under "
                              f"{project / 'results' / 'hello_lstm' / 'seeds'}; run `archbench train hello_lstm` first")
    params = publishable(project, (0, 1), VALUES)
    seed0 = project / "results" / "hello_lstm" / "seeds" / "seed_0" / "result.json"
    seed0.write_text(json.dumps(json.loads(seed0.read_text()) | {"stopped_by": "diverged"}))
    with pytest.raises(ArchbenchError) as err:
        publish(params, "hello_lstm", project / "results")
    assert str(err.value) == "cannot publish hello_lstm: seed 0 diverged; fix the recipe and rerun it"


def test_ledger_curves_are_thinned_to_the_last_point_at_six_digits(project: Path) -> None:
    from benchmarks.report.ledger import MAX_CURVE_POINTS, publish, thin

    params = publishable(project, (0, 1), VALUES)
    rows = ["epoch,val/loss,val/bleu"] + [f"{e},{1 + 1 / (e + 3)},{'' if e % 2 else e / 7}" for e in range(450)]
    curves = project / "results" / "hello_lstm" / "curves"
    curves.mkdir(parents=True)
    (curves / "seed_0.csv").write_text("\n".join(rows) + "\n")
    (curves / "seed_5.csv").write_text("epoch,val/loss\n0,1.0\n")  # a seed that is not current
    record = json.loads(publish(params, "hello_lstm", project / "results").read_text())
    assert sorted(record["curves"]) == ["0"]
    curve = record["curves"]["0"]
    kept = list(range(0, 450, 3)) + [449]  # ceil(450 / 200) = 3
    assert MAX_CURVE_POINTS == 200 and curve["epoch"] == [float(e) for e in kept]
    assert curve["val/loss"] == [float(f"{1 + 1 / (e + 3):.6g}") for e in kept]
    assert curve["val/bleu"] == [None if e % 2 else float(f"{e / 7:.6g}") for e in kept]
    assert thin({"a": [0.123456789, None]}) == {"a": [0.123457, None]} and thin({}) == {}
    assert thin({"a": [float(i) for i in range(200)]})["a"] == [float(i) for i in range(200)]
    assert thin({"a": [float(i) for i in range(201)]})["a"] == [float(i) for i in range(0, 201, 2)]


def test_ledger_samples_inline_text_of_every_seed_and_images_of_the_first(project: Path) -> None:
    from benchmarks.report.ledger import publish

    params = publishable(project, (0, 1), VALUES)
    seeds = project / "results" / "hello_lstm" / "seeds"
    for seed in (0, 1):
        (seeds / f"seed_{seed}" / "samples").mkdir()
        (seeds / f"seed_{seed}" / "samples" / "words.txt").write_text(f"hello {seed}\n")
        (seeds / f"seed_{seed}" / "samples" / "grid.png").write_bytes(b"\x89PNG seed %d" % seed)
        (seeds / f"seed_{seed}" / "samples" / "more.png").write_bytes(b"\x89PNG more %d" % seed)
    stale = project / "ledger" / "samples" / "hello_lstm" / "seed_7"
    stale.mkdir(parents=True)
    record = json.loads(publish(params, "hello_lstm", project / "results").read_text())
    assert record["samples"] == {
        "0": [{"name": "grid.png", "file": "samples/hello_lstm/seed_0/grid.png"},
              {"name": "more.png", "file": "samples/hello_lstm/seed_0/more.png"},
              {"name": "words.txt", "text": "hello 0\n"}],
        "1": [{"name": "words.txt", "text": "hello 1\n"}]}
    assert (project / "ledger" / "samples" / "hello_lstm" / "seed_0" / "grid.png").read_bytes() == b"\x89PNG seed 0"
    assert not stale.exists() and not (project / "ledger" / "samples" / "hello_lstm" / "seed_1").exists()
    assert not list((project / "ledger").rglob(".*.tmp"))


def test_publishing_twice_gives_the_same_bytes(project: Path) -> None:
    from benchmarks.report.ledger import publish

    params = publishable(project, (0, 1, 2), VALUES)
    first = publish(params, "hello_lstm", project / "results").read_bytes()
    assert publish(params, "hello_lstm", project / "results").read_bytes() == first
    assert list(json.loads(first)) == sorted(json.loads(first)) and first.endswith(b"}\n")
    assert not math.isnan(json.loads(first)["summary"]["test/loss"]["ci95"])


def test_the_ledger_keeps_each_seeds_provenance_and_marks_a_truncated_run(project: Path) -> None:
    from benchmarks.report.ledger import publish

    params = publishable(project, (0, 1, 2), VALUES)
    seeds = project / "results" / "hello_lstm" / "seeds"
    (seeds / "seed_0" / "provenance.json").write_text(json.dumps({"run_id": "r0", "experiment_id": "7"}))
    (seeds / "seed_1" / "provenance.json").write_text(json.dumps({"git_commit": "abc"}))  # no MLflow run
    (seeds / "seed_2" / "provenance.json").unlink()
    result = json.loads((seeds / "seed_2" / "result.json").read_text())
    (seeds / "seed_2" / "result.json").write_text(json.dumps(result | {"stopped_by": "max_time"}))
    result = json.loads((seeds / "seed_0" / "result.json").read_text())  # the first seed, read for budget/settings
    (seeds / "seed_0" / "result.json").write_text(json.dumps({k: v for k, v in result.items()
                                                              if k not in ("budget", "settings")}))
    record = json.loads(publish(params, "hello_lstm", project / "results").read_text())
    assert [record["seeds"][s]["provenance"] for s in ("0", "1", "2")] == [
        {"run_id": "r0", "experiment_id": "7"}, {"git_commit": "abc"}, {}]
    assert record["truncated"] is True and record["seeds"]["2"]["stopped_by"] == "max_time"
    assert (record["budget"], record["settings"]) == ({}, {})


def test_an_empty_curve_thins_to_nothing() -> None:
    from benchmarks.report.ledger import thin

    assert thin({"epoch": [], "val/loss": []}) == {"epoch": [], "val/loss": []}
