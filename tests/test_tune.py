"""Optuna studies: seeded TPE, pruning through the Lightning callback, continuation, nested MLflow runs."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from benchmarks.core.params import load_params
from benchmarks.study.tune import run_study
from tests.conftest import run_options


def _study(project: Path) -> optuna.Study:
    (summary,) = optuna.get_all_study_summaries(storage=f"sqlite:///{project / 'optuna.db'}")
    return optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{project / 'optuna.db'}")


@pytest.mark.slow
def test_study_prunes_continues_and_nests_runs(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = load_params()
    # Learning rates down to 1e-6 learn nothing in three batches: those trials fall behind the median and are pruned.
    params["studies"]["lstm_depth"]["search_space"]["lr"] = {"type": "float", "low": 1e-6, "high": 0.03, "log": True}
    opts = run_options(project)
    # An interrupted first session: the third trial is killed (Ctrl-C) after two finished.
    import benchmarks.study.tune as tune

    real_run_seed, calls = tune.run_seed, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_run_seed(*args, **kwargs)

    monkeypatch.setattr(tune, "run_seed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(params, "lstm_depth", opts)
    first = _study(project)
    done_before = [t for t in first.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    assert len(done_before) == 2
    before = [(t.number, t.params) for t in done_before]

    # Running the command again continues the same study up to n_trials.
    monkeypatch.setattr(tune, "run_seed", real_run_seed)
    best = run_study(params, "lstm_depth", opts)
    study = _study(project)
    assert study.study_name == first.study_name
    counted = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(counted) == params["studies"]["lstm_depth"]["n_trials"]
    assert [(t.number, t.params) for t in counted[:2]] == before
    # The continuation reseeds its sampler: it proposes new points instead of replaying the first session's.
    assert len({tuple(sorted(t.params.items())) for t in counted}) == len(counted)
    assert best["n_pruned"] >= 1, "the tiny study is set up so that bad learning rates are pruned"

    written = json.loads((project / "results" / "tune" / "lstm_depth" / "best_params.json").read_text())
    assert written["params"] == study.best_params and written["value"] == pytest.approx(study.best_value)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("archbench")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.info.run_name == "study:lstm_depth"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) >= len(counted)
    assert {"KILLED", "FINISHED"} <= {r.info.status for r in children}  # pruned trials end KILLED

    # Published: every trial, checked against the code and data hashes its MLflow run logged.
    from benchmarks.report.publish import publish_all

    publish_all(params, [], {"study": ["lstm_depth"]}, project / "results", project)
    record = json.loads((project / "ledger" / "studies" / "lstm_depth.json").read_text())
    assert record["best"]["params"] == study.best_params and record["definition_hash"] == study.user_attrs["definition_hash"]
    assert [t["number"] for t in record["trials"]] == [t.number for t in study.trials]
    assert any(t["state"] == "PRUNED" and t["pruned_at_step"] is not None for t in record["trials"])
    trained = [t["compute"] for t in record["trials"] if t["state"] == "COMPLETE" and t["repeat_of"] is None]
    assert trained and all(c["how"] == "process CPU time" and c["cpu_s"] > 0 for c in trained)  # the runs' own clocks


@pytest.mark.slow
def test_a_repeated_choice_reuses_the_finished_trial(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = load_params()
    conf = params["studies"]["lstm_depth"]
    # One point in the space: every trial after the first repeats it.
    conf["search_space"] = {"hidden_size": {"type": "categorical", "choices": [16]}}
    conf["n_trials"] = 3
    import benchmarks.study.tune as tune

    real_run_seed, calls = tune.run_seed, {"n": 0}

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real_run_seed(*args, **kwargs)

    monkeypatch.setattr(tune, "run_seed", counting)
    best = run_study(params, "lstm_depth", run_options(project))
    assert calls["n"] == 1  # trained once
    trials = _study(project).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert [t.user_attrs.get("repeat_of") for t in trials] == [None, 0, 0]
    assert len({t.value for t in trials}) == 1 and best["value"] == trials[0].value
    assert best["n_complete"] == 3 and best["n_repeats"] == 2
    assert trials[1].user_attrs["mlflow_run_id"] == trials[0].user_attrs["mlflow_run_id"]


# (study key, bad value, what the one-line message must say): each is refused before anything is created.
BAD_STUDIES = [
    ("pruner", "median", "pruner must be a mapping"),
    ("pruner", {"kind": "bogus"}, "unknown pruner kind 'bogus'"),
    ("pruner", {"kind": "median", "percentile": 25.0}, "pruner key 'percentile' does not apply to the median pruner"),
    ("search_space", {"num_layers": {"type": "int", "low": 4, "high": 1}}, "search_space.num_layers: low (4) is above high (1)"),
    ("search_space", {"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, "search_space.lr: a log range needs low > 0"),
    ("search_space", {"hidden_size": {"type": "categorical", "choices": []}}, "choices must be a non-empty list"),
    ("search_space", {"lr": {"type": "float", "low": 0.001, "hihg": 0.1}}, "search_space.lr: unknown key 'hihg'"),
    ("search_space", {"lr": {"low": 0.001, "high": 0.1}}, "search_space.lr needs type int, float or categorical"),
    ("search_space", {"dropuot": {"type": "float", "low": 0.0, "high": 0.5}}, "'dropuot' is not a model_args name"),
    ("metric", "test/bpc", "metric 'test/bpc' is not a validation key"),
    ("metric", "val/perplexity", "'val/perplexity' is not in the metric vocabulary"),
    ("direction", "down", "direction must be minimize or maximize"),
    ("direction", "maximize", "val/loss is better when minimised; set direction: minimize"),
    ("n_trials", 0, "n_trials must be a positive integer"),
    ("heartbeat_s", 0, "heartbeat_s must be a positive integer"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_STUDIES, ids=[f"{k}-{m[:24]}" for k, _, m in BAD_STUDIES])
def test_bad_study_is_one_line_before_anything_is_created(project: Path, key: str, value: object, message: str) -> None:
    from benchmarks.core.errors import ArchbenchError

    params = load_params()
    params["studies"]["lstm_depth"][key] = value
    with pytest.raises(ArchbenchError) as caught:
        run_study(params, "lstm_depth", run_options(project))
    text = str(caught.value)
    assert message in text and "\n" not in text and text.startswith("study 'lstm_depth'")
    assert not (project / "optuna.db").exists() and not (project / "mlflow.db").exists()
    assert not (project / ".archbench").exists() and not (project / "results").exists()


@pytest.mark.slow
def test_a_metric_the_model_does_not_log_stops_at_the_sanity_check(project: Path) -> None:
    from mlflow.tracking import MlflowClient

    from benchmarks.core.errors import ArchbenchError

    params = load_params()
    params["studies"]["lstm_depth"]["metric"] = "val/fid"  # in the vocabulary, but the char LM does not log it
    with pytest.raises(ArchbenchError, match=r"does not log 'val/fid' \(its validation keys: val/bpc, val/loss\)"):
        run_study(params, "lstm_depth", run_options(project))
    runs = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}").search_experiments()])
    assert runs and {r.info.status for r in runs} == {"FAILED"}  # the parent and the one trial: none left RUNNING
    assert [t.state for t in _study(project).trials] == [optuna.trial.TrialState.FAIL]


@pytest.mark.slow
def test_a_changed_definition_is_refused_and_more_trials_continue(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.study.tune as tune
    from benchmarks.core.errors import ArchbenchError

    values = iter([3.0, 2.0, 1.0, 0.5, 0.25, 0.125])
    monkeypatch.setattr(tune, "run_seed", lambda exp, seed, opts: {"metrics": {"val/loss_best": next(values)}, "run_id": ""})
    params = load_params()
    params["studies"]["lstm_depth"]["n_trials"] = 2
    run_study(params, "lstm_depth", run_options(project))
    assert _study(project).study_name == "lstm_depth"  # no hash in the name: the dashboard shows the study's name
    # More trials continue the same study; a different search space would mix incomparable trials.
    params["studies"]["lstm_depth"]["n_trials"] = 3
    assert run_study(params, "lstm_depth", run_options(project))["n_complete"] == 3
    params["studies"]["lstm_depth"]["search_space"]["num_layers"]["high"] = 2
    with pytest.raises(ArchbenchError, match=r"was defined differently .* rename the study in params.yaml, or delete the old one "
                                             r"with `optuna delete-study --study-name lstm_depth --storage sqlite:///"):
        run_study(params, "lstm_depth", run_options(project))
    assert len(_study(project).trials) == 3


def test_a_models_own_monitor_may_wait_for_the_first_real_validation() -> None:
    """A GAN logs val/fid only in real validation passes (not the sanity batches); a study on it must start."""
    from types import SimpleNamespace

    from benchmarks.core.errors import ArchbenchError
    from benchmarks.study.spec import metric_check

    check = metric_check("gan_latent", "gan", "val/fid")
    gan = SimpleNamespace(monitor="val/fid")
    trainer = SimpleNamespace(callback_metrics={"val/d_loss": 0.7}, sanity_checking=True)
    check.on_sanity_check_end(trainer, gan)  # promised by the model: no error yet
    trainer.sanity_checking = False
    with pytest.raises(ArchbenchError, match="does not log 'val/fid'"):
        check.on_validation_end(trainer, gan)  # a real pass without it: the one line
    trainer.callback_metrics["val/fid"] = 12.0
    check.on_validation_end(trainer, gan)
    with pytest.raises(ArchbenchError, match="does not log 'val/fid'"):  # not the model's own key: at once
        check.on_sanity_check_end(SimpleNamespace(callback_metrics={}, sanity_checking=True),
                                  SimpleNamespace(monitor="val/loss"))
