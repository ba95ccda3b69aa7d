"""Issue cases 6-8: bad input from the world around a run is one line, before any side effect: storage URLs,
names, ledger and result files, duplicate keys and alias bombs in params.yaml, a read-only checkout, a checkpoint
of another experiment, and a kill between done.json and result.json."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.cli import main
from tests.conftest import env_for_subprocess, mlflow_runs, tiny_params, write_params

pytestmark = pytest.mark.faults


def one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = re.sub(r"--- Logging error ---.*?\nArguments: [^\n]*\n", "", capsys.readouterr().err, flags=re.S)
    lines = [line for line in err.splitlines() if line.startswith("archbench: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def nothing_written(project: Path) -> None:
    left = [p for p in ("mlflow.db", "optuna.db", "results", ".archbench", "mlruns", "ledger") if (project / p).exists()]
    assert not left, f"bad input left {left} behind"


# ---- storage URLs (issue cases 6 and 7) --------------------------------------------------------------------
STORAGES = {
    "not_a_url": ("notaurl", "is not a database URL"),
    "unknown_kind": ("redis://", "'redis' is not a database SQLAlchemy knows"),
    "driver_missing": ("postgresql://127.0.0.1/x", "its driver (psycopg) is not installed"),
    "refused": ("postgresql+psycopg2://127.0.0.1:1/x", "does not answer"),
    "missing_folder": ("sqlite:////nonexistent/dir/x.db", "the folder /nonexistent/dir does not exist"),
}


@pytest.mark.parametrize("case", sorted(STORAGES))
def test_a_bad_optuna_storage_is_one_line_before_anything_is_created(case: str, project: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    url, expected = STORAGES[case]
    monkeypatch.setenv("OPTUNA_STORAGE", url)
    assert expected in one_line(capsys, ["tune", "lstm_depth"])
    nothing_written(project)
    assert not Path("/nonexistent").exists()


def test_a_tracking_store_in_a_missing_folder_is_one_line(project: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """New case: MLFLOW_TRACKING_URI's SQLite file in a folder that does not exist (it was made, as root)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'typo' / 'mlflow.db'}")
    assert "in a folder that does not exist" in one_line(capsys, ["train", "hello_lstm", "--seed", "0"])
    assert not (project / "typo").exists()
    monkeypatch.setenv("ARCHBENCH_TRACKING_RETRY_S", "soon")  # new case: a retry window that is not a number
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert "ARCHBENCH_TRACKING_RETRY_S='soon'" in one_line(capsys, ["train", "hello_lstm", "--seed", "0",
                                                                    "--no-progress"])


# ---- names (issue cases 7 and 8) ---------------------------------------------------------------------------
BAD_NAMES = ["a/b", "..", "../../escape", ".hidden", "", "x;touch pwned", "report", "tune", "claims", "data", "code"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_experiment_name_is_one_line_for_list_and_train(name: str, project: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    params = tiny_params()
    params["experiments"][name] = params["experiments"]["hello_lstm"]
    write_params(project / "params.yaml", params)
    assert f"experiment name {name!r}" in one_line(capsys, ["list"]) or "is reserved" in one_line(capsys, ["list"])
    line = one_line(capsys, ["train", name])
    assert ("is not a plain identifier" in line) or (f"'{name}' is reserved" in line), line
    nothing_written(project)
    assert not (project / "pwned").exists()


def test_bad_claim_study_and_arm_names_and_sweep_values(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tiny_params()
    params["claims"]["../x"] = params["claims"]["long_lag"]
    params["studies"]["report"] = params["studies"]["lstm_depth"]
    params["claims"]["arms"] = params["claims"]["long_lag"] | {"arms": {"a/b": {}}}
    params["claims"]["sweeps"] = params["claims"]["long_lag"] | {"sweep": {"path": "data_args.lag", "values": ["../x"]}}
    write_params(project / "params.yaml", params)
    assert "claim name '../x' is not a plain identifier" in one_line(capsys, ["claim", "../x"])
    assert "study name 'report' is reserved" in one_line(capsys, ["tune", "report"])
    assert "arm name 'a/b' is not a plain identifier" in one_line(capsys, ["claim", "arms"])
    assert "sweep.values must be numbers or plain words" in one_line(capsys, ["claim", "sweeps"])  # new case
    nothing_written(project)


# ---- params.yaml: duplicate keys and alias bombs (issue case 8) ------------------------------------------
def test_duplicate_keys_in_params_yaml_are_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (project / "params.yaml").read_text()
    twice = text.replace("experiments:\n", "experiments:\n  hello_lstm:\n    model: char_lm\n", 1)
    (project / "params.yaml").write_text(twice)
    line = one_line(capsys, ["list"])
    assert "duplicate key 'hello_lstm' (first at line" in line and "keep one of them" in line, line
    params = tiny_params()
    params["settings"] = {"threads": 1}
    write_params(project / "params.yaml", params)
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("  threads: 1\n",
                                                                                      "  threads: 1\n  threads: 2\n"))
    assert "duplicate key 'threads'" in one_line(capsys, ["train", "hello_lstm"])
    nothing_written(project)


BOMB = ("[&a [lol,lol,lol,lol,lol,lol,lol,lol,lol], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
        "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], "
        "&g [*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g], &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]]")


@pytest.mark.parametrize("plugins, expected", [(BOMB, "aliases expand to more than 100,000 values "
                                                      "(at experiments.hello_lstm.trainer.plugins"),
                                               ("&r [x, *r]", "an alias refers to the node that contains it")],
                         ids=["billion_laughs", "recursive_alias"])
def test_an_alias_bomb_is_refused_at_once(plugins: str, expected: str, project: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    params = tiny_params()
    params["experiments"]["hello_lstm"]["trainer"] = {"max_epochs": 1, "plugins": "BOMB"}
    write_params(project / "params.yaml", params)
    text = (project / "params.yaml").read_text().replace("plugins: BOMB", f"plugins: {plugins}")
    (project / "params.yaml").write_text(text)
    assert len(plugins.encode()) < 600  # a few hundred bytes that expand to 387 million values
    assert expected in one_line(capsys, ["train", "hello_lstm"])
    nothing_written(project)


# ---- ledger files (issue case 7) ---------------------------------------------------------------------------
LEDGERS = {
    "list": (b"[]", "holds a JSON list, not a published experiment"),
    "binary": (bytes(range(256)), "is not text (binary bytes)"),
    "unknown_schema": (b'{"schema": 99, "experiment": "hello_lstm", "seeds": {}}', "has schema 99; this archbench "
                                                                                   "reads schema 1"),
    "newer_schema": (b'{"schema": 2, "experiment": "hello_lstm", "seeds": {}}', "has schema 2"),
    "no_schema": (b'{"experiment": "hello_lstm", "seeds": {}}', "has no schema version"),
    "truncated": (b'{"schema": 1, "experiment": "hel', "is not valid JSON"),
    "another_experiment": (b'{"schema": 1, "experiment": "words_lstm", "seeds": {}}', "names experiment 'words_lstm'"),
    "metric_not_a_number": (b'{"schema": 1, "experiment": "hello_lstm", "seeds": {"0": {"metrics": {"test/loss": "x"}}}}',
                            "seeds.0.metrics.test/loss is not a number"),
}


@pytest.mark.parametrize("case", sorted(LEDGERS))
def test_a_bad_ledger_file_is_one_line(case: str, project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blob, expected = LEDGERS[case]
    (project / "ledger").mkdir()
    (project / "ledger" / "hello_lstm.json").write_bytes(blob)
    line = one_line(capsys, ["report"])
    assert "ledger/hello_lstm.json" in line and expected in line and "archbench publish hello_lstm" in line, line


def _git(cwd: Path, *args: str) -> None:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env_for_subprocess(), check=False)
    assert done.returncode == 0, done.stderr


def test_compare_with_a_revision_whose_ledger_is_malformed(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _git(project, "init", "-q")
    _git(project, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "empty")
    (project / "ledger").mkdir()
    (project / "ledger" / "hello_lstm.json").write_text('{"schema": 1, "experiment": ')
    _git(project, "add", "ledger")
    _git(project, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "bad ledger")
    (project / "ledger" / "hello_lstm.json").unlink()
    line = one_line(capsys, ["report", "--compare", "HEAD"])
    assert "HEAD:ledger/hello_lstm.json is not valid JSON" in line, line


# ---- result files (issue case 7) ---------------------------------------------------------------------------
def _result(project: Path, seed: int, body: object) -> Path:
    path = project / "results" / "hello_lstm" / "seeds" / f"seed_{seed}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return path


@pytest.mark.parametrize("seed, body, expected", [
    (0, [], "is not a seed result"),
    (1, {"experiment": "hello_lstm", "seed": 0, "metrics": {"test/loss": 0.1}}, "says seed 0 but lies in seed_1/"),
    (0, {"experiment": "words_lstm", "seed": 0, "metrics": {}}, "is a result of experiment 'words_lstm'"),
], ids=["list", "another_seeds_result", "another_experiments_result"])
def test_a_bad_result_file_is_one_line(seed: int, body: object, expected: str, project: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = _result(project, seed, body)
    line = one_line(capsys, ["collect", "hello_lstm"])
    assert str(path.relative_to(project)) in line and expected in line and f"--seed {seed}" in line, line


# ---- a checkpoint of another experiment, and a kill between done.json and result.json ---------------------
@pytest.mark.slow
def test_continue_from_another_experiments_checkpoint(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "hello_lstm", "--seed", "0", "--no-progress"]) == 0
    (ckpt,) = project.glob(".archbench/runs/hello_lstm/seed0-*/ckpt/last.ckpt")
    capsys.readouterr()
    line = one_line(capsys, ["train", "words_lstm", "--seed", "0", "--continue-from", str(ckpt)])
    assert "was not made by a model of experiment 'words_lstm'" in line and "has shape" in line, line
    assert [r.data.tags["experiment"] for r in mlflow_runs(project)] == ["hello_lstm"]  # no words_lstm run opened


@pytest.mark.slow
def test_a_kill_between_done_and_result_costs_no_retraining(project: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.run.results as results

    def killed(*args: object, **kwargs: object) -> None:
        raise SystemExit(137)  # the process dies right after done.json, before any result file

    with monkeypatch.context() as patch:
        patch.setattr(results, "write_seed_results", killed)
        with pytest.raises(SystemExit):
            main(["train", "hello_lstm", "--seed", "0", "--no-progress"])
    (state,) = project.glob(".archbench/runs/hello_lstm/seed0-*")
    trained = (state / "ckpt" / "last.ckpt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["train", "hello_lstm", "--seed", "0", "--no-progress"]) == 0
    assert "already trained" in capsys.readouterr().out
    assert (state / "ckpt" / "last.ckpt").stat().st_mtime_ns == trained  # not trained again
    (run,) = mlflow_runs(project)
    assert run.info.status == "FINISHED"
    done = json.loads((state / "done.json").read_text())
    result = json.loads((project / "results" / "hello_lstm" / "seeds" / "seed_0" / "result.json").read_text())
    assert result["metrics"] == done["result"]["metrics"]


# ---- a read-only checkout (issue case 7) ------------------------------------------------------------------
@pytest.fixture
def read_only(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The project as a read-only checkout: a read-only bind mount as root (root ignores permission bits), or
    no write permission otherwise."""
    view = project.parent / f"{project.name}-ro"
    view.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "--bind", str(project), str(view)], check=False,
                                                   capture_output=True).returncode == 0
    if mounted:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=False, capture_output=True).returncode:
            subprocess.run(["umount", str(view)], check=False)
            pytest.skip("cannot remount a bind mount read-only here")
    elif os.geteuid() == 0:
        pytest.skip("root without mount rights: permission bits cannot make a folder read-only for root")
    else:
        view.rmdir()
        view = project
        for path in [project, *project.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
    monkeypatch.chdir(view)
    yield view
    monkeypatch.chdir(project)
    if mounted:
        subprocess.run(["umount", str(view)], check=False)
    else:
        for path in [project, *project.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


@pytest.mark.parametrize("argv", [["report"], ["tune", "lstm_depth"], ["claim", "long_lag"], ["density"],
                                  ["prepare"], ["train", "hello_lstm"]], ids=lambda a: a[0])
def test_a_read_only_checkout_is_one_line(argv: list[str], read_only: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "not writable" in one_line(capsys, argv)
    assert sorted(p.name for p in read_only.iterdir()) == ["params.yaml"]
