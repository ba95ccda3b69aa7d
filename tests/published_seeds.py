"""Per-seed files written as train.py leaves them (benchmarks/run/results.py), and the independent computation
of the numbers published from them: the shared ground of test_published_numbers.py (metrics.json, staleness, a
seed's files) and test_published_ledger.py (ledger/)."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

import benchmarks.run.results as _results
from benchmarks.core.params import Experiment, experiment_from_params
from tests.conftest import tiny_params

CODE = "c0de00c0de00"  # the code hash these seeds were made by (merge_seeds takes it as an argument)
DATA = "d0"  # the data hash they saw; the data "now" is that too, unless a test says otherwise

REAL_DATA_HASH = _results.data_hash  # before the fixture below stands in for it

# Per-seed values, chosen so that the sample and the population std differ by a fifth (n = 3).
VALUES = {0: {"test/loss": 1.50, "test/bpc": 2.164}, 1: {"test/loss": 1.62, "test/bpc": 2.337},
          2: {"test/loss": 1.41, "test/bpc": 2.034}}


def experiment(seeds: tuple[int, ...] = (0, 1, 2)) -> Experiment:
    return replace(experiment_from_params(tiny_params(), "hello_lstm"), seeds=seeds)


def write_seed(results: Path, exp: Experiment, seed: int, metrics: dict[str, float], **override: Any) -> Path:
    """results/<exp>/seeds/seed_N/result.json and provenance.json as train.py writes them."""
    seed_dir = results / exp.name / "seeds" / f"seed_{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    result = {"experiment": exp.name, "seed": seed, "metrics": metrics, "stopped_by": "max_epochs", "epochs": 2,
              "steps": 10 + seed, "budget": {"max_epochs": 2}, "settings": {"loss_unit": "nats per character"},
              "config_hash": exp.config_hash(), "code_hash": CODE, "data_hash": "d0"} | override
    (seed_dir / "provenance.json").write_text(json.dumps({"run_id": f"run{seed}", "git_commit": "abc"}))
    (seed_dir / "result.json").write_text(json.dumps(result))
    return seed_dir


def oracle(values: list[float]) -> dict[str, float]:
    """mean, sample std and 95% t half-width computed independently of benchmarks.core.stats."""
    mean = statistics.mean(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return {"mean": mean, "std": statistics.stdev(values), "ci95": (high - low) / 2, "n": len(values)}


def assert_numbers(published: dict[str, Any], values: dict[int, dict[str, float]]) -> None:
    keys = sorted({k for m in values.values() for k in m})
    assert sorted(k for k in published if k != "n_seeds") == keys
    for key in keys:
        expected = oracle([m[key] for m in values.values() if key in m])
        assert set(published[key]) == set(expected), key
        for stat, value in expected.items():
            assert published[key][stat] == pytest.approx(value, rel=1e-12), (key, stat)


def publishable(project: Path, seeds: tuple[int, ...], values: dict[int, dict[str, float]]) -> dict[str, Any]:
    """params whose hello_lstm has ``seeds``, and those seeds written under project/results for the current code."""
    from benchmarks.core.provenance import code_hash

    params = tiny_params()
    params["experiments"]["hello_lstm"]["seeds"] = list(seeds)
    exp = experiment_from_params(params, "hello_lstm")
    for seed in seeds:
        if seed in values:
            write_seed(project / "results", exp, seed, values[seed], code_hash=code_hash(exp))
    return params
