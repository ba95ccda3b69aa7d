"""The claims machinery: definitions and their one-line errors, cells, and running a claim: one worker or
several at once (processes sharing the results folder), a killed worker's cell-seed taken over, the table
built only from finished seed files, and the claim through the CLI into the report.

The statistics and the verdicts' outcomes are tested in test_claim_stats.py."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import benchmarks.run.train
from benchmarks.claim.stats import OUTCOMES
from benchmarks.claim.claims import cell_experiments, claim_config, run_claim
from benchmarks.cli import main
from benchmarks.core.errors import ArchbenchError
from benchmarks.run.leases import holders
from benchmarks.core.params import Experiment, load_params
from tests.conftest import ROOT, env_for_subprocess, kill_if_still, run_options, tiny_params, write_params

def _conf(**over: Any) -> dict[str, Any]:
    conf = {"statement": "s", "model": "sequence_classifier", "data": "long_lag", "seeds": [0, 1, 2],
            "arms": {"elman": {"model_args": {"cell": "elman"}}, "lstm": {"model_args": {"cell": "lstm"}}},
            "sweep": {"path": "data_args.lag", "values": [5, 50]}, "metric": "test/acc", "mode": "max",
            "verdict": [{"type": "better", "arm": "lstm", "than": "elman", "margin": 0.05}]}
    return conf | over


def test_cells_combine_base_arm_and_sweep() -> None:
    profile, conf = claim_config({"full_claims": {"c": _conf(model_args={"hidden_size": 16})}}, "c")
    cells = cell_experiments("c", profile, conf)
    exp = cells[("lstm", 50)]
    assert profile == "full" and exp.model_args == {"hidden_size": 16, "cell": "lstm"} and exp.data_args == {"lag": 50}
    assert exp.seeds == (0, 1, 2) and len({e.name for e in cells.values()}) == 4


@pytest.mark.parametrize(("over", "message"), [
    ({"seeds": [0]}, "at least 2 integers"),
    ({"verdict": {"type": "better", "arm": "gru", "than": "elman", "margin": 0.05}}, "verdict.arm 'gru' is not an arm"),
    ({"verdict": {"type": "better", "arm": "lstm", "than": "elman"}}, "a 'better' verdict needs 'margin'"),
    ({"verdict": {"type": "better", "arm": "lstm", "than": "elman", "margin": 0}}, "margin must be a positive number"),
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


@pytest.mark.slow
def test_tiny_claim_runs_through_the_cli_into_the_report(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["claim", "long_lag", "--no-progress"]) == 0
    out = project / "results" / "claims" / "long_lag"
    claim = json.loads((out / "claim.json").read_text())
    assert (out / "claim.png").is_file()
    assert len(claim["table"]) == 3 * 2 and all(len(row["seeds"]) == 2 for row in claim["table"])
    assert {"test/acc", "test/grad_norm_first"} <= claim["table"][0].keys()
    assert claim["outcome"] in OUTCOMES and [v["outcome"] for v in claim["verdicts"]][1] is None
    assert claim["outcome"] == claim["verdicts"][0]["outcome"] and claim["verdicts"][0]["margin"] == 0.05
    assert len(_trained(capsys.readouterr().out)) == 12
    # Each cell-seed is a normal run: its result file (made by that cell's config) sits beside the claim.
    result = json.loads((out / "runs" / "claim_long_lag_lstm_lag6" / "seeds" / "seed_1" / "result.json").read_text())
    cell = cell_experiments("long_lag", *claim_config(tiny_params(), "long_lag"))[("lstm", 6)]
    assert result["config_hash"] == cell.config_hash()
    assert result["metrics"]["test/acc"] == next(r for r in claim["table"] if r["value"] == 6
                                                 and r["arm"] == "lstm")["seeds"][1]
    # In MLflow every cell-seed is nested under one finished parent run, "claim:long_lag".
    from tests.conftest import mlflow_runs

    runs = mlflow_runs(project)
    parents = [r for r in runs if r.data.tags.get("archbench.role") == "claim"]
    assert [(p.info.run_name, p.info.status) for p in parents] == [("claim:long_lag", "FINISHED")]
    cells = [r for r in runs if "seed" in r.data.tags]
    assert len(cells) == 12 and {r.data.tags.get("mlflow.parentRunId") for r in cells} == {parents[0].info.run_id}
    assert main(["report"]) == 0
    board = (project / "results" / "report" / "leaderboard.md").read_text()
    assert f"| long_lag: {claim['statement']} | {claim['outcome']} | lstm over elman at data_args.lag = 6: " in board
    page = (project / "results" / "report" / "claims.html").read_text()
    assert claim["verdicts"][0]["text"] in html.unescape(page) and "(margin 0.05 fraction)" in page
    assert (project / "results" / "report" / "img" / "claims" / "long_lag.png").is_file()
    # Published, it is the same table and verdict, and a report from the ledger alone shows it.
    assert main(["publish", "long_lag"]) == 0
    record = json.loads((project / "ledger" / "claims" / "long_lag.json").read_text())
    assert record["table"] == claim["table"] and record["outcome"] == claim["outcome"]
    assert all(s["provenance"]["run_id"] for c in record["cells"] for s in c["seeds"].values())
    # Rerunning trains nothing: every finished seed file is current, the same numbers come back.
    assert main(["claim", "long_lag", "--no-progress"]) == 0
    assert _trained(capsys.readouterr().out) == []
    again = json.loads((out / "claim.json").read_text())
    assert again["table"] == claim["table"]


# ---- workers -----------------------------------------------------------------------------------------------
def _trained(stdout: str) -> list[tuple[str, int]]:
    return [(m[1], int(m[2])) for m in re.finditer(r"claim \w+: trained (\S+) seed (\d+)", stdout)]


def _fake_training(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """run_seed replaced by a result file written at once: the LSTM solves every lag, Elman only the short one."""
    calls: list[tuple[str, int]] = []

    def run_seed(exp: Experiment, seed: int, opts: Any) -> dict[str, Any]:
        calls.append((exp.name, seed))
        solved = exp.model_args["cell"] != "elman" or exp.data_args["lag"] < 6
        result = {"experiment": exp.name, "seed": seed, "config_hash": exp.config_hash(),
                  "metrics": {"test/acc": (1.0 if solved else 0.25) - 0.01 * seed, "test/grad_norm_first": 0.1}}
        path = opts.results_dir / exp.name / "seeds" / f"seed_{seed}" / "result.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
        return result

    monkeypatch.setattr(benchmarks.run.train, "run_seed", run_seed)
    return calls


@pytest.mark.slow
def test_workers_take_each_cell_seed_once_and_skip_live_leases(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls, params, opts = _fake_training(monkeypatch), tiny_params(), run_options(project)
    runs, leases = project / "results" / "claims" / "long_lag" / "runs", project / "results" / "claims" / ".leases"
    stale = runs / "claim_long_lag_lstm_lag3" / "seeds" / "seed_0" / "result.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"experiment": "claim_long_lag_lstm_lag3", "seed": 0, "config_hash": "another",
                                 "metrics": {"test/acc": 0.0}}))
    held = leases / "long_lag" / "claim_long_lag_elman_lag6.seed1.lease"  # a worker on another machine, alive
    held.parent.mkdir(parents=True)
    held.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "t"}))
    assert run_claim(params, "long_lag", opts, worker=True) is None  # it leaves the held cell-seed to its holder
    assert len(calls) == len(set(calls)) == 11 and ("claim_long_lag_lstm_lag3", 0) in calls  # the stale file: rerun
    assert run_claim(params, "long_lag", opts, worker=True) is None and len(calls) == 11
    assert not (runs.parent / "claim.json").exists()
    os.utime(held)  # its last heartbeat: now
    started = time.monotonic()
    result = run_claim(params, "long_lag", opts, stale_after_s=1.5)  # waits until that lease's heartbeat is stale
    assert result is not None and time.monotonic() - started >= 1.0
    assert calls[11:] == [("claim_long_lag_elman_lag6", 1)] and not list(leases.glob("*/*.lease*"))
    assert result["outcome"] == "Supported"  # lstm [1.0, 0.99] vs elman [0.25, 0.24] at lag 6
    row = next(r for r in result["table"] if r["arm"] == "lstm" and r["value"] == 3)
    assert row["seeds"] == [1.0, 0.99]  # from the current files only, never the stale one
    assert json.loads((runs.parent / "claim.json").read_text())["table"] == result["table"]


def test_a_diverged_cell_seed_is_noted_once_and_the_claim_writes_no_verdict(project: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.core.errors import DivergedError

    calls, params, opts = _fake_training(monkeypatch), tiny_params(), run_options(project)
    fake = benchmarks.run.train.run_seed

    def run_seed(exp: Experiment, seed: int, opts: Any) -> dict[str, Any]:
        if exp.name == "claim_long_lag_elman_lag6" and seed == 1:
            calls.append((exp.name, seed))
            raise DivergedError(f"experiment '{exp.name}' seed 1 diverged: train/loss is nan at step 4; nothing was "
                                f"published; lower the learning rate")
        return fake(exp, seed, opts)

    monkeypatch.setattr(benchmarks.run.train, "run_seed", run_seed)
    for attempt in range(2):  # a second worker (or a rerun) does not train the diverged cell-seed again
        with pytest.raises(DivergedError) as info:
            run_claim(params, "long_lag", opts, worker=attempt == 1)
        assert "1 cell-seed(s) diverged, first: experiment 'claim_long_lag_elman_lag6' seed 1 diverged: train/loss " \
               "is nan at step 4" in str(info.value) and "\n" not in str(info.value)
        assert calls.count(("claim_long_lag_elman_lag6", 1)) == 1 and len(calls) == 12
    out = project / "results" / "claims" / "long_lag"
    assert not (out / "claim.json").exists() and not list(out.parent.glob(".leases/*/*.lease*"))
    # Another recipe (here a wider net) is another config: its cell-seeds are trained, the old note is not read.
    params["claims"]["long_lag"]["model_args"]["hidden_size"] = 9
    with pytest.raises(DivergedError):
        run_claim(params, "long_lag", opts)
    assert calls.count(("claim_long_lag_elman_lag6", 1)) == 2 and len(calls) == 24


def _two_arm_project(project: Path, results: str) -> Path:
    """The tiny long-lag claim cut to 2 arms x 2 lags x 2 seeds, with its own results and state folders."""
    params = tiny_params()
    params["settings"] = (params.get("settings") or {}) | {"results_dir": results, "state_dir": f".state_{results}"}
    claim = params["claims"]["long_lag"]
    claim["arms"].pop("peephole")
    claim["verdict"] = [v for v in claim["verdict"] if v["type"] == "better"]
    path = project / f"params_{results}.yaml"
    write_params(path, params)
    return path


@pytest.mark.slow
def test_two_workers_and_a_killed_one_give_the_table_of_one(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = _two_arm_project(project, "one")
    assert main(["--params", str(one), "claim", "long_lag", "--no-progress"]) == 0
    alone = json.loads((project / "one" / "claims" / "long_lag" / "claim.json").read_text())
    capsys.readouterr()

    many = _two_arm_project(project, "many")
    command = [str(Path(sys.executable).parent / "archbench"), "--params", str(many), "claim", "long_lag", "--worker",
               "--no-progress"]
    workers = [subprocess.Popen(command, cwd=project, env=env_for_subprocess(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    leases = project / "many" / "claims" / ".leases" / "long_lag"
    victim, taken = workers[0], None
    deadline = time.monotonic() + 120
    while taken is None and victim.poll() is None and time.monotonic() < deadline:
        if any(lease.get("pid") == victim.pid for lease in holders(leases).values()):
            # The cell-seed it held may have been finished since.
            taken = kill_if_still(victim.pid, lambda: next(
                (key for key, lease in holders(leases).items() if lease.get("pid") == victim.pid), None))
        time.sleep(0.05)
    assert taken is not None, "the first worker never took a cell-seed"
    # Killed mid-run: its lease stays behind, its MLflow run is left RUNNING.
    victim.wait()  # reaped: its pid is gone, so its lease is stale at once on this host
    logs = [w.communicate(timeout=300)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers[1:]), logs[1:]
    # Whatever the survivors left (none, or the killed one's cell-seed if they had gone) a plain run finishes.
    assert main(["--params", str(many), "claim", "long_lag", "--no-progress"]) == 0
    others = [t for log in [*logs[1:], capsys.readouterr().out] for t in _trained(log)]
    trained = _trained(logs[0]) + others
    assert len(trained) == len(set(trained)) == 8  # every cell-seed trained, none twice
    cell, seed = taken.rsplit(".seed", 1)
    assert (cell, int(seed)) in others  # the killed worker's cell-seed was taken over
    shared = json.loads((project / "many" / "claims" / "long_lag" / "claim.json").read_text())
    assert [(r["arm"], r["value"], r["seeds"]) for r in shared["table"]] == \
        [(r["arm"], r["value"], r["seeds"]) for r in alone["table"]]  # the very same floats
    assert shared["outcome"] == alone["outcome"] and shared["verdict"] == alone["verdict"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("archbench").experiment_id])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]  # the killed one's run is closed too


def test_every_claim_in_params_yaml_builds_its_cells() -> None:
    params = load_params(ROOT / "params.yaml")
    names = [(section, name) for section in ("claims", "full_claims") for name in params.get(section, {})]
    assert ("full_claims", "frames_context") in names and ("claims", "long_lag") in names
    for section, name in names:
        profile, conf = claim_config(params, name)
        cells = cell_experiments(name, profile, conf)
        assert profile == ("default" if section == "claims" else "full"), name
        assert len(cells) == len(conf["arms"]) * len(conf["sweep"]["values"]) and len(conf["seeds"]) >= 3, name
