"""The numbers archbench publishes, against a second computation: metrics.json (``archbench collect``)
recomputed with ``statistics`` and scipy from the per-seed values written here, the staleness rule that decides
which seeds count at all, and what a finished seed leaves. No training: the seed files are written in the layout
train.py leaves (tests/published_seeds.py), so each test takes milliseconds. The ledger: test_published_ledger.py.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.core.errors import ArchbenchError
from benchmarks.run.results import current_seeds, merge_seeds
from tests.published_seeds import (CODE, REAL_DATA_HASH, VALUES, _results, assert_numbers, experiment,
                                   write_seed)


pytestmark = pytest.mark.usefixtures("data_now_is_d0")


# --- metrics.json and summary.json -------------------------------------------------------------------------
def test_metrics_json_mean_std_and_ci_match_statistics_and_scipy(tmp_path: Path) -> None:
    exp = experiment()
    for seed, metrics in VALUES.items():
        write_seed(tmp_path, exp, seed, metrics)
    summary = merge_seeds(exp, tmp_path, code=CODE)
    numbers = json.loads((tmp_path / exp.name / "metrics.json").read_text())
    assert_numbers(numbers, VALUES)
    assert numbers["n_seeds"] == 3
    on_disk = json.loads((tmp_path / exp.name / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["per_seed"] == {str(s): m for s, m in VALUES.items()} and on_disk["summary"] == {
        k: v for k, v in numbers.items() if k != "n_seeds"}
    assert on_disk["seeds"] == [0, 1, 2] and on_disk["missing_seeds"] == []
    assert on_disk["epochs"] == {"0": 2, "1": 2, "2": 2} and on_disk["stopped_by"]["1"] == "max_epochs"
    assert on_disk["budget"] == {"max_epochs": 2} and on_disk["settings"] == {"loss_unit": "nats per character"}
    assert on_disk["truncated"] is False
    assert {k: on_disk[k] for k in ("experiment", "model", "data", "profile", "description")} == {
        "experiment": exp.name, "model": exp.model, "data": exp.data, "profile": exp.profile,
        "description": exp.description}


def test_published_std_is_the_sample_std_not_the_population_std(tmp_path: Path) -> None:
    """What protects metrics.json's ``std`` from ``statistics.pstdev``: with n = 3 the two differ by sqrt(3/2)."""
    exp = experiment()
    for seed, metrics in VALUES.items():
        write_seed(tmp_path, exp, seed, metrics)
    merge_seeds(exp, tmp_path, code=CODE)
    std = json.loads((tmp_path / exp.name / "metrics.json").read_text())["test/loss"]["std"]
    values = [m["test/loss"] for m in VALUES.values()]
    assert std == pytest.approx(statistics.stdev(values), rel=1e-12)
    assert std != pytest.approx(statistics.pstdev(values), rel=1e-3)


def test_non_finite_values_and_partial_keys_count_only_where_present(tmp_path: Path, capsys) -> None:
    exp = experiment()
    per_seed = {0: {"test/loss": 1.5, "test/acc": 0.25}, 1: {"test/loss": float("nan"), "test/acc": 0.5},
                2: {"test/loss": 1.4, "test/acc": 0.75}, 3: {"test/loss": 9.9}}  # seed 3 is not in exp.seeds
    for seed, metrics in per_seed.items():
        write_seed(tmp_path, exp, seed, metrics, stopped_by="max_time" if seed == 2 else "max_epochs")
    summary = merge_seeds(exp, tmp_path, code=CODE)
    numbers = json.loads((tmp_path / exp.name / "metrics.json").read_text())
    assert_numbers(numbers, {0: {"test/loss": 1.5, "test/acc": 0.25}, 1: {"test/acc": 0.5},
                             2: {"test/loss": 1.4, "test/acc": 0.75}})
    assert summary["seeds"] == [0, 1, 2] and summary["truncated"] is True and capsys.readouterr().out == ""


def test_one_seed_has_no_spread_and_a_missing_seed_is_named(tmp_path: Path) -> None:
    exp = experiment((0, 1))
    write_seed(tmp_path, exp, 0, {"test/loss": 1.25})
    summary = merge_seeds(exp, tmp_path, code=CODE)
    # std 0 and no ci95 (NaN is not JSON a DVC metric can hold) for a single seed
    assert json.loads((tmp_path / exp.name / "metrics.json").read_text()) == {
        "test/loss": {"mean": 1.25, "std": 0.0, "n": 1}, "n_seeds": 1}
    assert summary["missing_seeds"] == [1] and summary["seeds"] == [0]


# --- staleness: which seeds count ---------------------------------------------------------------------------
def test_a_seed_from_another_config_is_not_counted_as_current(tmp_path: Path, capsys) -> None:
    """What protects results.py's config check: a seed made with another hidden_size never reaches a summary."""
    exp = experiment()
    other = replace(exp, model_args=exp.model_args | {"hidden_size": exp.model_args.get("hidden_size", 8) + 1})
    assert other.config_hash() != exp.config_hash()
    for seed, metrics in VALUES.items():
        write_seed(tmp_path, other if seed == 2 else exp, seed, metrics)
    kept, stale = current_seeds(exp, tmp_path / exp.name, CODE)
    assert sorted(kept) == [0, 1]
    assert stale == {2: f"seed 2: made by another config of hello_lstm ({other.config_hash()})"}
    summary = merge_seeds(exp, tmp_path, code=CODE)
    assert summary["seeds"] == [0, 1] and summary["missing_seeds"] == [2]
    assert_numbers(json.loads((tmp_path / exp.name / "metrics.json").read_text()), {0: VALUES[0], 1: VALUES[1]})
    assert f"hello_lstm: left out seed 2: made by another config of hello_lstm ({other.config_hash()})" in (
        capsys.readouterr().out)


def test_a_seed_from_other_code_is_not_counted_as_current(tmp_path: Path) -> None:
    exp = experiment()
    for seed, metrics in VALUES.items():
        write_seed(tmp_path, exp, seed, metrics, code_hash="0ther0c0de00" if seed == 0 else CODE)
    kept, stale = current_seeds(exp, tmp_path / exp.name, CODE)
    assert sorted(kept) == [1, 2] and stale == {0: f"seed 0: made by other code (0ther0c0de00, now {CODE})"}


def test_only_stale_seeds_give_one_line_naming_why(tmp_path: Path) -> None:
    exp = experiment((0,))
    write_seed(tmp_path, exp, 0, VALUES[0], config_hash="feedfeedfeed")
    with pytest.raises(ArchbenchError) as err:
        merge_seeds(exp, tmp_path, code=CODE)
    assert str(err.value) == ("hello_lstm: no finished seed to merge (seed 0: made by another config of hello_lstm "
                              "(feedfeedfeed)); run `archbench train hello_lstm` first")
    assert not (tmp_path / exp.name / "metrics.json").exists()
    with pytest.raises(ArchbenchError, match=r"^hello_lstm: no finished seed to merge; run `archbench train"):
        merge_seeds(experiment((5,)), tmp_path, code=CODE)


def test_seeds_that_saw_different_data_are_refused(tmp_path: Path) -> None:
    exp = experiment()
    for seed, metrics in VALUES.items():
        write_seed(tmp_path, exp, seed, metrics, data_hash="d1" if seed == 1 else "d0")
    with pytest.raises(ArchbenchError) as err:
        current_seeds(exp, tmp_path / exp.name, CODE)
    assert str(err.value) == ("hello_lstm: finished seeds saw different data (d0, d1); rerun them with "
                              "`archbench train hello_lstm --restart`")


def test_a_corrupt_seed_file_is_one_line_naming_it(tmp_path: Path) -> None:
    exp = experiment()
    path = write_seed(tmp_path, exp, 0, VALUES[0]) / "result.json"
    path.write_text('{"seed": 0, "metr')
    with pytest.raises(ArchbenchError) as err:
        merge_seeds(exp, tmp_path, code=CODE)
    assert str(err.value) == (f"{path} is corrupt (not JSON text); delete it and rerun that seed "
                              f"(`archbench train hello_lstm --seed 0`)")


# --- what a finished seed leaves, and the compare view's "within" --------------------------------------------
def test_a_finished_seed_leaves_its_files_with_the_result_last(tmp_path: Path) -> None:
    import torch

    from benchmarks.run.results import load_seed_results, write_seed_results

    state, out = tmp_path / "state", tmp_path / "results" / "hello_lstm"
    (state / "samples").mkdir(parents=True)
    (state / "curve.csv").write_text("epoch,val/loss\n0,1.5\n")
    (state / "samples" / "samples.txt").write_text("hello\n")
    ckpt = {"state_dict": {"w": torch.ones(2)}, "epoch": 3, "callbacks": {"ModelCheckpoint": {"dirpath": "/abs/path"}}}
    torch.save(ckpt, tmp_path / "best.ckpt")
    order: list[str] = []
    import benchmarks.core.files as files

    real_replace = files.os.replace
    try:  # the order in which files land: result.json must be the last, its presence says the seed is complete
        files.os.replace = lambda src, dst: (order.append(Path(dst).name), real_replace(src, dst))[1]
        write_seed_results(out, state, str(tmp_path / "best.ckpt"),
                           {"experiment": "hello_lstm", "seed": 4, "metrics": {"test/loss": 1.0}}, {"run_id": "r4"})
    finally:
        files.os.replace = real_replace
    assert order == ["seed_4.csv", "samples.txt", "best.ckpt", "provenance.json", "result.json"]
    seed_dir = out / "seeds" / "seed_4"
    assert (out / "curves" / "seed_4.csv").read_text() == "epoch,val/loss\n0,1.5\n"
    assert (seed_dir / "samples" / "samples.txt").read_text() == "hello\n"
    saved = torch.load(seed_dir / "best.ckpt", weights_only=False)
    assert "callbacks" not in saved and saved["epoch"] == 3 and torch.equal(saved["state_dict"]["w"], torch.ones(2))
    assert json.loads((seed_dir / "provenance.json").read_text()) == {"run_id": "r4"}
    assert (seed_dir / "result.json").read_text() == json.dumps({"experiment": "hello_lstm", "metrics": {"test/loss": 1.0}, "seed": 4}, indent=2,
                                                                sort_keys=True) + "\n"
    assert load_seed_results(out) == {4: {"experiment": "hello_lstm", "seed": 4, "metrics": {"test/loss": 1.0}}}
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []  # no temporary file left


def test_a_seed_without_curve_samples_or_checkpoint_leaves_only_its_record(tmp_path: Path) -> None:
    from benchmarks.run.results import write_seed_results

    out = tmp_path / "results" / "x"
    write_seed_results(out, tmp_path / "empty_state", "", {"experiment": "hello_lstm", "seed": 0, "metrics": {}}, {})
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "seeds", "seeds/seed_0", "seeds/seed_0/provenance.json", "seeds/seed_0/result.json"]


def test_within_is_inside_the_published_interval_and_none_without_one() -> None:
    from benchmarks.core.stats import within

    published = {"mean": 1.0, "ci95": 0.5}
    assert within(1.5, published) is True and within(0.5, published) is True  # the bounds are inside
    assert within(1.5000001, published) is False and within(0.4999999, published) is False
    assert within(1.0, {"mean": 1.0}) is None and within(1.0, {"mean": 1.0, "ci95": float("nan")}) is None
    assert within(1.0, {"mean": 1.0, "ci95": "0.1"}) is None and within(1.0, {"mean": 1.0, "ci95": 0}) is True


def test_a_rerun_seed_overwrites_its_files_and_any_checkpoint_loads(tmp_path: Path) -> None:
    """A seed run again (``--restart``) writes over its earlier files; a checkpoint holding plain Python objects
    besides tensors (Lightning's hyper-parameters) and no callbacks' state copies as it is."""
    from fractions import Fraction

    import torch

    from benchmarks.run.results import load_seed_results, write_seed_results

    state, out = tmp_path / "state", tmp_path / "results" / "hello_lstm"
    (state / "samples").mkdir(parents=True)
    torch.save({"hyper_parameters": {"ratio": Fraction(1, 3)}, "epoch": 1}, tmp_path / "best.ckpt")
    for run, loss in enumerate((2.0, 1.0)):
        (state / "curve.csv").write_text(f"epoch,val/loss\n0,{loss}\n")
        (state / "samples" / "samples.txt").write_text(f"run {run}\n")
        write_seed_results(out, state, str(tmp_path / "best.ckpt"), {"experiment": "hello_lstm", "seed": 0, "metrics": {"test/loss": loss}}, {})
    assert load_seed_results(out)[0]["metrics"] == {"test/loss": 1.0}
    assert (out / "curves" / "seed_0.csv").read_text() == "epoch,val/loss\n0,1.0\n"
    assert (out / "seeds" / "seed_0" / "samples" / "samples.txt").read_text() == "run 1\n"
    saved = torch.load(out / "seeds" / "seed_0" / "best.ckpt", weights_only=False)
    assert saved == {"hyper_parameters": {"ratio": Fraction(1, 3)}, "epoch": 1}


def test_merging_without_a_code_hash_uses_the_experiments_own(tmp_path: Path) -> None:
    from benchmarks.core.provenance import code_hash

    exp = experiment((0, 1))
    for seed in (0, 1):
        write_seed(tmp_path, exp, seed, VALUES[seed], code_hash=code_hash(exp))
    assert merge_seeds(exp, tmp_path)["seeds"] == [0, 1]


def test_every_stale_seed_is_named_when_none_is_left(tmp_path: Path) -> None:
    exp = experiment((0, 1))
    for seed in (0, 1):
        write_seed(tmp_path, exp, seed, VALUES[seed], code_hash=f"old{seed}")
    with pytest.raises(ArchbenchError) as err:
        merge_seeds(exp, tmp_path, code=CODE)
    assert str(err.value) == (f"hello_lstm: no finished seed to merge (seed 0: made by other code (old0, now {CODE}); "
                              f"seed 1: made by other code (old1, now {CODE})); run `archbench train hello_lstm` first")


def test_json_files_are_written_whole_with_their_folders_and_plain_values(tmp_path: Path) -> None:
    from benchmarks.run.results import write_json

    path = tmp_path / "a" / "b" / "c.json"
    write_json(path, {"where": tmp_path, "n": 1})  # a Path (as in provenance) is written as its string
    assert path.read_text() == json.dumps({"n": 1, "where": str(tmp_path)}, indent=2, sort_keys=True) + "\n"
    assert [p.name for p in path.parent.iterdir()] == ["c.json"]


def test_a_seed_on_disk_outside_the_experiments_seeds_is_skipped_not_the_end(tmp_path: Path) -> None:
    exp = experiment((0, 5))
    for seed in (0, 3, 5):  # seed_3 sorts between the two listed seeds
        write_seed(tmp_path, exp, seed, VALUES[seed % 3])
    kept, stale = current_seeds(exp, tmp_path / exp.name, CODE)
    assert sorted(kept) == [0, 5] and stale == {}


def test_the_headline_file_holds_the_ranked_test_means_to_five_digits(tmp_path: Path) -> None:
    """results/headline/<exp>.json, the training stage's DVC metrics: seed means of the test metrics that rank
    models (not val/, not diagnostics, not spreads), to 5 significant digits, and the seed count."""
    exp = experiment()
    per_seed = {0: {"test/loss": 1.234567, "test/acc": 0.5, "val/loss": 1.1, "test/grad_norm_first": 3.0,
                    "test/fid_std": 0.2, "test/loss_std": 0.1},  # a spread of a ranked key is still a spread
                1: {"test/loss": 1.345678, "test/acc": 0.75, "val/loss": 1.2, "test/grad_norm_first": 4.0,
                    "test/fid_std": 0.3},
                2: {"test/loss": 1.111111, "test/acc": 0.625}}
    for seed, metrics in per_seed.items():
        write_seed(tmp_path, exp, seed, metrics)
    merge_seeds(exp, tmp_path, code=CODE)
    headline = json.loads((tmp_path / "headline" / "hello_lstm.json").read_text())
    loss = statistics.mean(m["test/loss"] for m in per_seed.values())
    assert headline == {"test/loss": float(f"{loss:.5g}"), "test/acc": 0.625, "seeds": 3}
    assert headline["test/loss"] == 1.2305 and loss != 1.2305  # rounded, not the raw mean 1.230452


def test_the_data_now_is_the_content_hash_of_the_datamodule_training_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """What "the data now" is for merging and publishing: the content hash of the datamodule built from the
    experiment's data and data_args, once per process and setting."""
    import benchmarks.run.build as build

    real_build, calls = build.build_datamodule, []
    monkeypatch.setattr(build, "build_datamodule", lambda exp, data_dir: (calls.append(data_dir), real_build(exp, data_dir))[1])
    monkeypatch.setattr(_results, "_DATA_HASHES", {})
    exp = experiment()
    now = REAL_DATA_HASH(exp, None)
    assert now == real_build(exp, None).content_hash() and len(now) >= 12 and calls == [None]
    assert REAL_DATA_HASH(exp, None) == now and calls == [None]  # the second call is the cached one
    other = replace(exp, data_args=exp.data_args | {"repeats": exp.data_args["repeats"] + 1})
    assert REAL_DATA_HASH(other, None) != now and len(calls) == 2  # another split is other data
    assert REAL_DATA_HASH(exp, "elsewhere") == now and calls[-1] == "elsewhere"  # the setting is part of the key
