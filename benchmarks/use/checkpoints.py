"""Which trained model a user means: an experiment's seed (the best one by default) or an MLflow model URI.

``archbench sample words_lstm`` takes the best finished seed of words_lstm (by the checkpoint's own monitor,
e.g. the lowest ``val/loss``), ``--seed N`` a given one, and ``models:/archbench-words_lstm@champion`` (or any
``models:/`` or ``runs:/`` URI of a model the suite logged) the registered model. Every wrong choice is one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError

MODEL_URI_PREFIXES = ("models:/", "runs:/")


@dataclass
class Chosen:
    """A loaded model and where it came from."""

    model: Any
    model_name: str  # the MODELS key
    experiment: str
    seed: int | None
    checkpoint: Path
    source: str  # what to print: "words_lstm seed 0 (best of 2 by val/loss)" or the URI


def seed_checkpoint(results_dir: Path, experiment: str, seed: int) -> Path:
    from benchmarks.run.results import seed_results_dir

    return seed_results_dir(results_dir / experiment, seed) / "best.ckpt"


def best_seed(exp: Any, results_dir: Path) -> tuple[int, str]:
    """The trained seed with the best monitored validation value, and how it was chosen."""
    from benchmarks.run.model_logging import best_seed as best_of
    from benchmarks.run.results import load_seed_results

    finished = {s: r["metrics"] for s, r in load_seed_results(results_dir / exp.name).items()
                if s in exp.seeds and seed_checkpoint(results_dir, exp.name, s).is_file()}
    best = best_of(finished)
    if best is None:
        raise ArchbenchError(f"{exp.name} has no trained seed (no {results_dir / exp.name / 'seeds'}/seed_N/best.ckpt); "
                             f"train it first: archbench train {exp.name}")
    return best, "its only trained seed" if len(finished) == 1 else f"the best of {len(finished)} by validation"


def load_checkpoint(model_name: str, path: Path) -> Any:
    from lightning_modules import MODELS

    try:
        model = MODELS[model_name].load_from_checkpoint(path, map_location="cpu", weights_only=False)
    except (RuntimeError, KeyError, TypeError, EOFError) as exc:
        raise ArchbenchError(f"{path}: not a loadable {model_name} checkpoint ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160]}); retrain that seed") from None
    model.eval()
    return model


def choose(params: dict[str, Any], target: str, seed: int | None) -> Chosen:
    """The model ``target`` names (an experiment or a model URI) at ``seed`` (default: the best)."""
    if target.startswith(MODEL_URI_PREFIXES):
        if seed is not None:
            raise ArchbenchError(f"--seed does not apply to a model URI ({target} names one model); drop it")
        return from_uri(target)
    from benchmarks.core.params import experiment_from_params, settings

    exp = experiment_from_params(params, target)  # one line for an unknown experiment
    results_dir = Path(settings(params)["results_dir"])
    if seed is None:
        seed, how = best_seed(exp, results_dir)
    else:
        if seed not in exp.seeds:
            raise ArchbenchError(f"--seed {seed} is not one of {exp.name}'s seeds {list(exp.seeds)}")
        how = "as asked"
    path = seed_checkpoint(results_dir, exp.name, seed)
    if not path.is_file():
        raise ArchbenchError(f"seed {seed} of {exp.name} is not trained (no {path}); train it: "
                             f"archbench train {exp.name} --seed {seed}")
    return Chosen(load_checkpoint(exp.model, path), exp.model, exp.name, seed, path, f"{exp.name} seed {seed} ({how})")


def from_uri(uri: str) -> Chosen:
    """Download a model the suite logged (``models:/archbench-<exp>@champion``) and load its checkpoint."""
    import yaml
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from benchmarks.run.tracking import tracking_uri

    store = tracking_uri()
    try:
        local = Path(download_artifacts(artifact_uri=uri, tracking_uri=store, registry_uri=store))
    except MlflowException as exc:
        raise ArchbenchError(f"{uri}: {str(exc).splitlines()[0][:200]} (tracking store {store}); publish the "
                             f"experiment first (archbench publish EXP) or check the name") from None
    mlmodel = yaml.safe_load((local / "MLmodel").read_text()) if (local / "MLmodel").is_file() else {}
    meta = (mlmodel.get("metadata") or {}).get("archbench")
    found = sorted((local / "artifacts").glob("*.ckpt")) if (local / "artifacts").is_dir() else []
    if not meta or not found:
        raise ArchbenchError(f"{uri} is not a model logged by archbench (no archbench metadata or checkpoint in it)")
    path = found[0]
    return Chosen(load_checkpoint(meta["model"], path), meta["model"], meta["experiment"], meta.get("seed"), path,
                  f"{uri} ({meta['experiment']} seed {meta.get('seed')})")


def recorded_metrics(params: dict[str, Any], chosen: Chosen) -> dict[str, float]:
    """The seed's metrics as its training recorded them (results/<exp>/seeds/seed_N/result.json)."""
    from benchmarks.core.params import settings
    from benchmarks.run.results import RESULT_FILE

    path = seed_checkpoint(Path(settings(params)["results_dir"]), chosen.experiment, int(chosen.seed or 0)).parent / RESULT_FILE
    return json.loads(path.read_text())["metrics"] if path.is_file() else {}
