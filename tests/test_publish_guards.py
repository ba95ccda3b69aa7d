"""What keeps a wrong number out of metrics.json and the ledger when the data changed under a finished seed, and
what a user is told when a seed's files cannot be written: each test names the guard it protects (the mutation
run, scripts/mutation.sh, showed these paths unwatched)."""

from __future__ import annotations

import errno
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import benchmarks.run.results as results
from benchmarks.core.errors import ArchbenchError
from benchmarks.core.params import Experiment, experiment_from_params
from tests.conftest import tiny_params

CODE = "c0de00c0de00"
OLD, NOW = "d1d1d1d1d1d1d1d1", "d0d0d0d0d0d0d0d0"  # the data the seeds saw, and the data as it is now
DATA_DIR = "data"  # settings.data_dir's default: where "the data now" is looked for


def _seed(results_dir: Path, exp: Experiment, seed: int, data: str, code: str = CODE) -> None:
    seed_dir = results_dir / exp.name / "seeds" / f"seed_{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    (seed_dir / "result.json").write_text(json.dumps({
        "experiment": exp.name, "seed": seed, "metrics": {"test/loss": 1.0 + seed}, "stopped_by": "max_epochs",
        "epochs": 2, "steps": 10, "budget": {"max_epochs": 2}, "settings": {}, "config_hash": exp.config_hash(),
        "code_hash": code, "data_hash": data}))


@pytest.fixture
def data_now(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """The data now is NOW for hello_lstm looked up where the settings say, anything else for any other question;
    the calls are kept, so a test sees which experiment and folder were asked about."""
    calls: list[tuple[str, Any]] = []

    def now(exp: Experiment, data_dir: str | None) -> str:
        calls.append((getattr(exp, "name", None), data_dir))
        return NOW if isinstance(exp, Experiment) and exp.name == "hello_lstm" and data_dir == DATA_DIR else "other"

    monkeypatch.setattr(results, "data_hash", now)
    return calls


def _exp(seeds: tuple[int, ...] = (0, 1)) -> Experiment:
    return replace(experiment_from_params(tiny_params(), "hello_lstm"), seeds=seeds)


def test_a_seed_made_from_other_data_says_which_data(tmp_path: Path) -> None:
    exp = _exp()
    _seed(tmp_path, exp, 0, OLD)
    _seed(tmp_path, exp, 1, NOW)
    kept, stale = results.current_seeds(exp, tmp_path / exp.name, CODE, NOW)
    assert sorted(kept) == [1]
    assert stale == {0: f"seed 0: made from other data ({OLD[:12]}, now {NOW[:12]})"}


def test_merging_computes_the_data_now_and_leaves_out_seeds_of_other_data(tmp_path: Path,
                                                                           data_now: list[tuple[str, Any]]) -> None:
    """merge_seeds without ``data`` asks for the data now (of this experiment, where the settings look) and a seed of
    older data is left out, named: never averaged with current ones."""
    exp = _exp()
    _seed(tmp_path, exp, 0, OLD)
    with pytest.raises(ArchbenchError) as err:
        results.merge_seeds(exp, tmp_path, code=CODE, data_dir=DATA_DIR)
    assert str(err.value) == (f"hello_lstm: no finished seed to merge (seed 0: made from other data ({OLD[:12]}, "
                              f"now {NOW[:12]})); run `archbench train hello_lstm` first")
    assert data_now == [("hello_lstm", DATA_DIR)]
    _seed(tmp_path, exp, 0, NOW)
    summary = results.merge_seeds(exp, tmp_path, code=CODE, data_dir=DATA_DIR)
    assert summary["seeds"] == [0] and summary["missing_seeds"] == [1]


def test_publishing_refuses_seeds_made_from_other_data(project: Path, data_now: list[tuple[str, Any]]) -> None:
    """The ledger compares every seed with the data as it is now (the settings' data_dir), and writes nothing."""
    from benchmarks.core.provenance import code_hash
    from benchmarks.report.ledger import publish

    params = tiny_params()
    params["experiments"]["hello_lstm"]["seeds"] = [0, 1]
    exp = experiment_from_params(params, "hello_lstm")
    for seed in (0, 1):
        _seed(project / "results", exp, seed, OLD, code=code_hash(exp))
    with pytest.raises(ArchbenchError, match=rf"cannot publish hello_lstm: seed 0: made from other data \({OLD[:12]}, "
                                             rf"now {NOW[:12]}\)"):
        publish(params, "hello_lstm", project / "results")
    assert data_now == [("hello_lstm", DATA_DIR)]
    assert not (project / "ledger").exists()


def test_building_a_record_refuses_missing_seeds_unless_asked(project: Path) -> None:
    """build_record's default is the strict one: a missing seed is refused; allowing it is the caller's word."""
    from benchmarks.report.ledger import build_record

    exp = _exp((0, 1))
    _seed(project / "results", exp, 0, NOW)
    with pytest.raises(ArchbenchError, match=r"seed \[1\] not finished"):
        build_record(exp, project / "results", CODE, NOW)
    assert build_record(exp, project / "results", CODE, NOW, allow_missing=True)["missing_seeds"] == [1]


def test_publishing_without_samples_leaves_no_samples_folder(project: Path) -> None:
    from benchmarks.report.ledger import copy_sample_files

    copy_sample_files({"experiment": "hello_lstm", "samples": {}}, project / "results" / "hello_lstm", project / "ledger")
    copy_sample_files({"experiment": "hello_lstm"}, project / "results" / "hello_lstm", project / "ledger")
    assert not (project / "ledger").exists()


@pytest.mark.parametrize("failing", ["seed_4.csv", "samples.txt", "best.ckpt", "provenance.json", "result.json"])
def test_a_full_disk_while_writing_a_seed_says_the_trained_seed_is_safe(tmp_path: Path, failing: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whichever of a finished seed's files meets a full disk, the one line says where the trained seed is kept and
    the command that writes its results without training again; an older result.json (the seed's "complete") is
    removed first, and the new one never lands."""
    import torch

    import benchmarks.core.files as files

    state, out = tmp_path / "state", tmp_path / "results" / "hello_lstm"
    (state / "samples").mkdir(parents=True)
    (state / "curve.csv").write_text("epoch,val/loss\n0,1.5\n")
    (state / "samples" / "samples.txt").write_text("hello\n")
    torch.save({"state_dict": {"w": torch.ones(2)}, "callbacks": {}}, tmp_path / "best.ckpt")
    stale = out / "seeds" / "seed_4" / "result.json"  # an older run's result: gone before anything is written
    stale.parent.mkdir(parents=True)
    stale.write_text('{"experiment": "hello_lstm", "seed": 4, "metrics": {"test/loss": 9.0}}')
    real_write, real_copy = files._write_file, files._copy_file

    def full(path: Path) -> None:
        if Path(path).name.startswith(f".{failing}") or Path(path).name == failing:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(files, "_write_file", lambda path, data: (full(path), real_write(path, data))[1])
    monkeypatch.setattr(files, "_copy_file", lambda src, dst: (full(dst), real_copy(src, dst))[1])
    with pytest.raises(files.DiskFullError) as err:
        results.write_seed_results(out, state, str(tmp_path / "best.ckpt"),
                                   {"experiment": "hello_lstm", "seed": 4, "metrics": {}}, {"run_id": "r4"})
    message = str(err.value)
    assert message.endswith(f"; the trained seed is safe in {state}: `archbench train hello_lstm --seed 4` writes "
                            f"its results without training it again"), message
    assert not stale.exists()  # so the seed reads as unfinished, never as the older run's numbers


def test_a_full_disk_without_a_hint_ends_at_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """write_json's and portable_checkpoint's default is no hint: the line ends with the fix, nothing after it."""
    import torch

    import benchmarks.core.files as files

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(files, "_write_file", full)
    with pytest.raises(files.DiskFullError) as err:
        results.write_json(tmp_path / "x.json", {"a": 1})
    assert str(err.value).endswith("then rerun"), str(err.value)
    torch.save({"w": torch.ones(1)}, tmp_path / "a.ckpt")
    with pytest.raises(files.DiskFullError) as err:
        results.portable_checkpoint(tmp_path / "a.ckpt", tmp_path / "b.ckpt")
    assert str(err.value).endswith("then rerun"), str(err.value)


def test_the_data_now_follows_archbench_data_dir_within_one_process(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The data hash is cached per process and setting; ARCHBENCH_DATA_DIR is part of the setting, because the
    datamodule finds its files there first: another folder there is other data, never the cached hash."""
    real = results.data_hash
    monkeypatch.setattr(results, "_DATA_HASHES", {})
    exp = experiment_from_params(tiny_params(), "words_lstm")
    hashes = []
    for folder, words in (("a", ["alpha", "beta", "gamma", "delta"]), ("b", ["epsilon", "zeta", "eta", "theta"])):
        listing = tmp_path / folder / "words" / "american-english"
        listing.parent.mkdir(parents=True)
        listing.write_text("\n".join(w + suffix for w in words for suffix in ("", "s", "ed", "ing", "er")) + "\n")
        monkeypatch.setenv("ARCHBENCH_DATA_DIR", str(tmp_path / folder))
        hashes.append(real(exp, None))
    assert hashes[0] != hashes[1]
    monkeypatch.setenv("ARCHBENCH_DATA_DIR", str(tmp_path / "a"))
    assert real(exp, None) == hashes[0]  # back to the first folder: its hash, from the cache


def test_a_full_disk_while_copying_sample_images_leaves_the_ledger_as_it_was(project: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.core.files as files
    from benchmarks.report.ledger import copy_sample_files

    exp_dir, ledger = project / "results" / "hello_lstm", project / "ledger"
    (exp_dir / "seeds" / "seed_0" / "samples").mkdir(parents=True)
    (exp_dir / "seeds" / "seed_0" / "samples" / "grid.png").write_bytes(b"new image")
    old = ledger / "samples" / "hello_lstm" / "seed_0" / "grid.png"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old image")
    record = {"experiment": "hello_lstm",
              "samples": {"0": [{"name": "grid.png", "file": "samples/hello_lstm/seed_0/grid.png"}]}}

    def full(src: Path, dst: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    real_copy = files._copy_file
    monkeypatch.setattr(files, "_copy_file", full)
    with pytest.raises(files.DiskFullError) as err:
        copy_sample_files(record, exp_dir, ledger)
    assert str(err.value).endswith("then rerun; the ledger is left as it was"), str(err.value)
    assert old.read_bytes() == b"old image"
    assert sorted(p.name for p in (ledger / "samples").iterdir()) == ["hello_lstm"]  # no build folder left
    monkeypatch.setattr(files, "_copy_file", real_copy)
    copy_sample_files(record, exp_dir, ledger)
    assert old.read_bytes() == b"new image"


@pytest.mark.parametrize(("folder", "content", "problem"), [
    ("seed_0", "[1, 2]", "is not a seed result (a JSON object with experiment, seed and metrics)"),
    ("seed_0", '{"experiment": "hello_lstm", "seed": 0}', "is not a seed result (a JSON object with experiment, seed "
                                                           "and metrics)"),
    ("seed_0", '{"experiment": "hello_lstm", "seed": 3, "metrics": {}}', "says seed 3 but lies in seed_0/"),
    ("seed_0", '{"experiment": "words_lstm", "seed": 0, "metrics": {}}', "is a result of experiment 'words_lstm', not "
                                                                        "'hello_lstm'"),
])
def test_a_result_file_that_is_not_this_seeds_result_is_one_line_naming_it(tmp_path: Path, folder: str, content: str,
                                                                           problem: str) -> None:
    """A result.json copied into another seed's or experiment's folder, or not a result at all, would stand in for
    that seed's numbers: refused in one line that names the file, the problem and the fix."""
    path = tmp_path / "hello_lstm" / "seeds" / folder / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ArchbenchError) as err:
        results.load_seed_results(tmp_path / "hello_lstm")
    assert str(err.value) == (f"{path} {problem}; delete it and rerun that seed "
                              f"(`archbench train hello_lstm --seed 0`)")


def test_a_folder_among_the_seeds_that_is_not_a_seed_folder_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "hello_lstm" / "seeds" / "seed_best" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    with pytest.raises(ArchbenchError) as err:
        results.load_seed_results(tmp_path / "hello_lstm")
    assert str(err.value) == (f"{path.parent} is not a seed folder (seed_<N>); move it out of "
                              f"{tmp_path / 'hello_lstm' / 'seeds'}")
