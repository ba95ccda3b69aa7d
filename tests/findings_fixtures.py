"""A finished claim and a finished study as the suite leaves them on disk, without training (the publish and
report tests of claims, studies and baselines share them).

- ``write_claim``: every cell-seed of the tiny ``long_lag`` claim (tests/conftest.py's TINY) under
  results/claims/long_lag/runs/, with the current config, code and data hashes, so it can be published;
- ``write_study``: the tiny ``lstm_depth`` study in the project's optuna.db (3 complete trials and a pruned
  one) with its definition hash, and each trial's MLflow run carrying the current code and data hashes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# (arm, lag) -> test/acc of seeds 0 and 1: the LSTM arms remember at lag 6, Elman does not.
ACC = {("elman", 3): [0.90, 0.92], ("elman", 6): [0.30, 0.34], ("lstm", 3): [0.95, 0.97], ("lstm", 6): [0.90, 0.93],
       ("peephole", 3): [0.94, 0.96], ("peephole", 6): [0.88, 0.90]}
TRIALS = ({"num_layers": 1, "hidden_size": 32, "lr": 0.001}, {"num_layers": 2, "hidden_size": 64, "lr": 0.003},
          {"num_layers": 3, "hidden_size": 128, "lr": 0.01}, {"num_layers": 4, "hidden_size": 32, "lr": 0.02})
VALUES = (1.9, 1.4, 1.6, None)  # the last trial is pruned after two epochs


def _dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def claim_cells(params: dict[str, Any], name: str = "long_lag") -> dict[tuple[str, Any], Any]:
    from benchmarks.claim.claims import cell_experiments, claim_config

    profile, conf = claim_config(params, name)
    return cell_experiments(name, profile, conf)


def write_claim(project: Path, params: dict[str, Any]) -> dict[tuple[str, Any], Any]:
    """Every cell-seed of the tiny long_lag claim, finished and current; returns the cells."""
    from benchmarks.core.provenance import code_hash
    from benchmarks.run.build import build_datamodule

    cells = claim_cells(params)
    for (arm, lag), exp in cells.items():
        data_hash = build_datamodule(exp, None).content_hash()
        for seed in exp.seeds:
            acc = ACC[(arm, lag)][seed]
            seed_dir = project / "results" / "claims" / "long_lag" / "runs" / exp.name / "seeds" / f"seed_{seed}"
            _dump(seed_dir / "result.json", {
                "experiment": exp.name, "seed": seed, "metrics": {"test/acc": acc, "test/grad_norm_first": 0.01 * acc},
                "stopped_by": "max_epochs", "epochs": 1, "steps": 2, "config_hash": exp.config_hash(),
                "code_hash": code_hash(exp), "data_hash": data_hash,
                "settings": {"loss_unit": "nats per sequence (cross-entropy)", "data_hash": data_hash}})
            _dump(seed_dir / "provenance.json", {
                "run_id": f"{exp.name}-s{seed}", "tracking_uri": f"sqlite:///{project / 'mlflow.db'}",
                "git_commit": "abc123def456", "fit_s": 2.0 + seed, "finished_at": "2026-12-01T03:00:00Z", "device": "cpu",
                "machine": {"host": "box", "cpu_model": "AMD EPYC", "cpu_capability": "AVX2", "cores": 2, "threads": 1}})
    return cells


def write_study(project: Path, params: dict[str, Any], code: str | None = None) -> Any:
    """The tiny lstm_depth study, finished, in the project's storage and MLflow store; returns the study."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    from benchmarks.core.params import experiment_from_params
    from benchmarks.core.provenance import code_hash
    from benchmarks.run import tracking
    from benchmarks.run.build import build_datamodule
    from benchmarks.study.spec import definition_hash, study_config

    conf = study_config(params, "lstm_depth")
    base = experiment_from_params(params, conf["experiment"])
    data_hash = build_datamodule(base, None).content_hash()
    uri = tracking.tracking_uri(project)
    tracking.ensure_tracking_store(uri)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name("archbench")
    exp_id = found.experiment_id if found else client.create_experiment("archbench")
    dists = {"num_layers": IntDistribution(1, 4), "hidden_size": CategoricalDistribution([32, 64, 128]),
             "lr": FloatDistribution(3e-4, 3e-2, log=True)}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="lstm_depth", storage=f"sqlite:///{project / 'optuna.db'}")
    study.set_user_attr("definition_hash", definition_hash(conf, base))
    for number, (chosen, value) in enumerate(zip(TRIALS, VALUES)):
        run = client.create_run(exp_id, run_name=f"lstm_depth-trial{number}/seed0")
        client.log_param(run.info.run_id, "code_hash", code or code_hash(base))
        client.log_param(run.info.run_id, "data_hash", data_hash)
        state = TrialState.COMPLETE if value is not None else TrialState.PRUNED
        steps = {0: 2.2 + 0.1 * number, 1: (value or 2.1) + 0.05}
        study.add_trial(create_trial(params=chosen, distributions=dists, value=value, state=state,
                                     intermediate_values=steps,
                                     user_attrs={"mlflow_run_id": run.info.run_id, "worker": f"box:{100 + number}:ab12cd"}))
    return study


def absolute_paths(tree: Any, where: str = "") -> list[str]:
    """Every string in a JSON tree that names an absolute filesystem path (a URI's path included)."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in absolute_paths(v, f"{where}.{k}")]
    if isinstance(tree, list):
        return [p for i, v in enumerate(tree) for p in absolute_paths(v, f"{where}[{i}]")]
    if isinstance(tree, str) and (tree.startswith("/") or ":///" in tree and tree.split(":///", 1)[1].startswith("/")
                                  or tree.startswith("file:")):
        return [f"{where} = {tree}"]
    return []


def published_findings(project: Path) -> None:
    """A fresh clone's view: the claim, the study and the hello baseline published, a published long-lag row run
    under another recipe than the claim's arms, words_lstm tuned by the study; then results/ and the stores gone."""
    import shutil

    from benchmarks.cli import main
    from tests.conftest import tiny_params, write_params
    from tests.test_report import _ledger_entry

    params = tiny_params()
    params["experiments"]["words_lstm"]["tuned_by"] = "lstm_depth"
    write_params(project / "params.yaml", params)
    write_claim(project, params)
    write_study(project, params)
    assert main(["publish", "--claim", "long_lag", "--study", "lstm_depth"]) == 0
    assert main(["baselines", "hello_lstm", "--publish"]) == 0
    _ledger_entry(project)
    seeds = {str(s): {"metrics": {"test/acc": v}, "stopped_by": "max_epochs", "epochs": 10,
                      "provenance": {"run_id": f"ll-{s}", "fit_s": 30.0, "machine": {"host": "vm", "threads": 1}}}
             for s, v in ((0, 0.26), (1, 0.41), (2, 0.33))}
    _dump(project / "ledger" / "long_lag_lstm.json", {
        "schema": 1, "experiment": "long_lag_lstm", "model": "sequence_classifier", "data": "long_lag", "seeds": seeds,
        "config": {"model": "sequence_classifier", "data": "long_lag", "model_args": {"cell": "lstm", "hidden_size": 64},
                   "data_args": {"lag": 100}, "trainer": {"max_epochs": 10}, "seeds": [0, 1, 2]},
        "settings": {"data_hash": "6b1986ca", "loss_unit": "nats per sequence (cross-entropy)"}})
    hello = json.loads((project / "ledger" / "hello_lstm.json").read_text())  # published with the baseline's split
    baseline = json.loads(next((project / "ledger" / "baselines").glob("char_unigram-hello-*.json")).read_text())
    hello["settings"] = {"data_hash": baseline["data_hash"], "loss_unit": "nats per character"}
    hello["seeds"] = {"0": {"metrics": {"test/loss": 0.8, "test/bpc": 1.15}, "stopped_by": "max_epochs"},
                      "1": {"metrics": {"test/loss": 0.9, "test/bpc": 1.3}, "stopped_by": "max_epochs"}}
    _dump(project / "ledger" / "hello_lstm.json", hello)
    for what in ("results", "optuna.db", "mlflow.db", "mlruns"):
        path = project / what
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
