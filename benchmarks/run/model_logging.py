"""Trained models as MLflow Models: each seed's best checkpoint logged with a signature and an input example, and
the registry entry ``archbench-<exp>`` whose alias ``champion`` names the best seed (set by ``archbench publish``).

MLflow 3 keeps a logged model outside the run's artifacts (a LoggedModel, listed on the run's page and under the
experiment's "Models" tab), linked to the run that made it. The model is a pyfunc around the Lightning checkpoint:
``mlflow.pyfunc.load_model("models:/archbench-words_lstm@champion").predict(...)`` works without the suite's CLI,
and ``archbench sample models:/archbench-words_lstm@champion`` reads the same checkpoint. Nested runs (Optuna
trials, claim cells) log no model: they are measurements, not things to use.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning_modules.contracts import GeneratesImages, is_conditional

CHECKPOINT = "checkpoint"  # the artifact key (and file stem) of the Lightning checkpoint inside the MLflow Model
ALIAS = "champion"
PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
KEY_PACKAGES = ("torch", "lightning", "torchmetrics", "mlflow", "numpy", "pandas")


def registered_name(experiment: str) -> str:
    return f"archbench-{experiment}"


def model_kind(model: Any) -> str:
    """What a model does for a user: text, translate, tag, images (a generator), or none."""
    if hasattr(model, "continue_text"):
        return "text"
    if hasattr(model, "translate_text"):
        return "translate"
    if hasattr(model, "tag_tokens"):
        return "tag"
    if isinstance(model, GeneratesImages) or (hasattr(model, "sample") and hasattr(model.hparams, "image_shape")):
        return "images"
    return "none"


def generate_images(model: Any, n: int, seed: int, label: int | None = None) -> Any:
    """n images [n, C, H, W] in [0, 1] from any of the suite's generators, from a seeded CPU generator.

    The GAN has ``generate(n, seed)``; the VAEs and DDPM ``sample(n, generator=...)``. A class-conditional
    generator (the cgan) has ``generate(n, seed, label=K)`` and ``num_classes`` in its hparams."""
    import torch

    if label is not None:
        return model.generate(n, seed, label=label)
    if isinstance(model, GeneratesImages):
        return model.generate(n, seed)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        images = model.sample(n, generator=torch.Generator(device=model.device).manual_seed(seed))
    model.train(was_training)
    return images


def signature(model: Any) -> tuple[Any, Any]:
    """(ModelSignature, input example) for the model's kind."""
    import numpy as np
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    kind = model_kind(model)
    if kind == "text":
        params = ParamSchema([ParamSpec("length", "long", 200), ParamSpec("temperature", "double", 1.0),
                              ParamSpec("seed", "long", 0)])
        prime = "".join(c for c in "the" if c in model.stoi)
        # A short example length: MLflow runs the example through the model when it logs it.
        return (ModelSignature(Schema([ColSpec("string", "prime")]), Schema([ColSpec("string")]), params),
                (pd.DataFrame({"prime": [prime]}), {"length": 8}))
    if kind in ("translate", "tag"):
        example = "Ein Mann fährt Fahrrad." if kind == "translate" else "The cat sat on the mat."
        return ModelSignature(Schema([ColSpec("string", "text")]), Schema([ColSpec("string")])), pd.DataFrame({"text": [example]})
    if kind == "images":
        c, h, w = (int(v) for v in model.hparams.image_shape)
        columns = [ColSpec("long", "seed")]
        example = {"seed": [0]}
        if is_conditional(model):
            columns.append(ColSpec("long", "label"))
            example["label"] = [0]
        return (ModelSignature(Schema(columns), Schema([TensorSpec(np.dtype(np.float32), (-1, c, h, w))])),
                pd.DataFrame(example))
    raise ValueError(f"{type(model).__name__} has no inference interface to log")


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's INFO lines and download bars while it saves and checks a model: a training's output stays its own."""
    log = logging.getLogger("mlflow")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with _env(PROGRESS_ENV, "false"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "add type hints to predict": the signature is given
            yield
    finally:
        log.setLevel(level)


def _requirements() -> list[str]:
    found = []
    for name in KEY_PACKAGES:
        try:
            found.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def log_model(model_name: str, checkpoint: Path, run_id: str, uri: str, experiment: str, seed: int) -> str | None:
    """Log ``checkpoint`` (a model of MODELS[model_name]) as an MLflow Model linked to ``run_id``; its id, or None
    for a model with nothing to offer a user (a classifier, an image-to-image model)."""
    import mlflow
    from mlflow.models import Model

    from lightning_modules import MODELS

    model = MODELS[model_name].load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    if model_kind(model) == "none":
        return None
    sig, example = signature(model)
    mlflow.set_tracking_uri(uri)
    # MLflow files a logged model under the fluent API's current experiment ("Default" here, where nothing sets
    # one), not its run's: name the run's experiment for this call.
    experiment_id = mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id
    with _quiet(), _env("MLFLOW_EXPERIMENT_ID", experiment_id):
        info = Model.log(
            artifact_path=None, name=f"{experiment}-seed{seed}", flavor=mlflow.pyfunc, run_id=run_id,
            python_model=str(Path(__file__).with_name("pyfunc_model.py")), artifacts={CHECKPOINT: str(checkpoint)},
            signature=sig, input_example=example, pip_requirements=_requirements(), model_config={"model": model_name},
            metadata={"archbench": {"experiment": experiment, "seed": seed, "model": model_name,
                                    "kind": model_kind(model)}},
            tags={"experiment": experiment, "seed": str(seed), "model": model_name},
        )
    return info.model_id


def log_seed_model(exp: Any, seed: int, best_path: str, run_id: str | None, uri: str, tags: dict[str, str]) -> None:
    """The one call from a finished training seed: its best checkpoint as an MLflow Model (not for nested runs)."""
    if not best_path or not run_id or "mlflow.parentRunId" in tags:
        return
    log_model(exp.model, Path(best_path), run_id, uri, exp.name, seed)


def find_logged_model(client: Any, run_id: str) -> str | None:
    """The id of the newest model a run logged, if any."""
    run = client.get_run(run_id)
    found = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'",
                                        order_by=[{"field_name": "creation_timestamp", "ascending": False}], max_results=1)
    return found[0].model_id if found else None


def register_champion(exp: Any, seed: int, run_id: str, checkpoint: Path, uri: str) -> str:
    """Register the seed's model as a new version of ``archbench-<exp>`` with the alias ``champion``; the version.

    A seed trained before models were logged gets its model logged now, from the checkpoint in results/."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    model_id = find_logged_model(client, run_id) or log_model(exp.model, checkpoint, run_id, uri, exp.name, seed)
    if model_id is None:
        raise ValueError(f"{exp.model} has no inference interface")
    name = registered_name(exp.name)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, description=exp.description or f"{exp.model} on {exp.data}")
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.source == f"models:/{model_id}":  # publishing twice registers once
            break
    else:
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
                                              tags={"seed": str(seed)})
    client.set_registered_model_alias(name, ALIAS, version.version)
    return str(version.version)


def chosen_keys(metrics: dict[str, float]) -> set[str]:
    """The key(s) a seed's checkpoint was chosen on, as its run recorded them (``<monitor>_best``, run/fit.py)."""
    return {key.removesuffix("_best") for key in metrics if key.endswith("_best")}


def best_seed(metrics: dict[int, dict[str, float]]) -> int | None:
    """The seed whose checkpoint has the best monitored validation value, compared in that key's direction; seeds
    without a finite value lose, ties fall to the lowest seed.

    Each seed's run recorded the value its checkpoint was chosen on as ``<monitor>_best`` (run/fit.py), under the
    monitor that run used: read there, not from the model class, because an image model's monitor depends on its
    arguments (val/fid with an FID extractor, else its fallback) and a run may override it. Seeds chosen on
    different keys cannot be ranked against each other: one line says so."""
    import math

    from benchmarks.core.errors import ArchbenchError
    from benchmarks.core.metric_keys import direction

    keys = set().union(*map(chosen_keys, metrics.values()))
    if len(keys) > 1:
        raise ArchbenchError(f"the seeds' checkpoints were chosen on different keys "
                             f"({', '.join(sorted(k + '_best' for k in keys))}), so no seed is the best of them; "
                             f"retrain them with one monitor")
    if not keys:
        return min(metrics) if metrics else None
    monitor = keys.pop()
    mode = direction(monitor)
    if mode not in ("min", "max"):
        raise ArchbenchError(f"{monitor} has no direction in benchmarks/core/metric_keys.py, so "
                             f"no seed is the best by it; add the key there with 'min' or 'max'")

    def score(seed: int) -> float:
        value = metrics[seed].get(f"{monitor}_best")
        if value is None or not math.isfinite(float(value)):
            return math.inf
        return (-1.0 if mode == "max" else 1.0) * float(value)

    return min(sorted(metrics), key=score)


def publish_model(exp: Any, record: dict[str, Any], results_dir: Path) -> dict[str, Any]:
    """At ``archbench publish``: register the best seed as ``archbench-<exp>@champion`` (when the model has an
    inference interface and the seed its MLflow run), and return the record with no machine-local path in it."""
    from benchmarks.core.errors import ArchbenchError
    from benchmarks.core.portable import portable
    from benchmarks.run.tracking import project_root, tracking_uri

    seeds = {int(s): entry for s, entry in record["seeds"].items()}
    best = best_seed({s: e["metrics"] for s, e in seeds.items()})
    run_id = seeds[best]["provenance"].get("run_id") if best is not None else None
    checkpoint = results_dir / exp.name / "seeds" / f"seed_{best}" / "best.ckpt"
    if run_id and checkpoint.is_file():
        from mlflow.exceptions import MlflowException

        try:
            version = register_champion(exp, best, run_id, checkpoint, tracking_uri())
        except ValueError:
            print(f"{exp.name}: {exp.model} has no inference interface; nothing registered in the Model Registry")
        except MlflowException as exc:
            raise ArchbenchError(f"cannot register {exp.name} seed {best} (MLflow run {run_id}) in the Model "
                                 f"Registry: {str(exc).splitlines()[0][:200]}") from None
        else:
            print(f"registered {exp.name} seed {best} as models:/{registered_name(exp.name)}@{ALIAS} (version {version})")
    return portable(record, project_root(results_dir.parent))
