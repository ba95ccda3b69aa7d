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
from pathlib import Path
from typing import Any

CHECKPOINT = "checkpoint"  # the artifact key (and file stem) of the Lightning checkpoint inside the MLflow Model
ALIAS = "champion"
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
    if hasattr(model, "generate") or (hasattr(model, "sample") and hasattr(model.hparams, "image_shape")):
        return "images"
    return "none"


def generate_images(model: Any, n: int, seed: int, labels: Any = None) -> Any:
    """n images [n, C, H, W] in [0, 1] from any of the suite's generators, from a seeded CPU generator.

    The GAN has ``generate(n, seed)``; the VAEs and DDPM ``sample(n, generator=...)``. A class-conditional
    generator has ``generate(n, seed, labels=LongTensor [n])`` and ``num_classes`` in its hparams."""
    import torch

    if labels is not None:
        return model.generate(n, seed, labels=labels)
    if hasattr(model, "generate"):
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
        return (ModelSignature(Schema([ColSpec("string", "prime")]), Schema([ColSpec("string")]), params),
                pd.DataFrame({"prime": [prime]}))
    if kind in ("translate", "tag"):
        example = "Ein Mann fährt Fahrrad." if kind == "translate" else "The cat sat on the mat."
        return ModelSignature(Schema([ColSpec("string", "text")]), Schema([ColSpec("string")])), pd.DataFrame({"text": [example]})
    if kind == "images":
        c, h, w = (int(v) for v in model.hparams.image_shape)
        columns = [ColSpec("long", "seed")]
        example = {"seed": [0]}
        if _conditional(model):
            columns.append(ColSpec("long", "label"))
            example["label"] = [0]
        return (ModelSignature(Schema(columns), Schema([TensorSpec(np.dtype(np.float32), (-1, c, h, w))])),
                pd.DataFrame(example))
    raise ValueError(f"{type(model).__name__} has no inference interface to log")


def _conditional(model: Any) -> bool:
    import inspect

    generate = getattr(model, "generate", None)
    return generate is not None and "labels" in inspect.signature(generate).parameters


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

    from benchmarks.run.pyfunc_model import ArchbenchModel
    from lightning_modules import MODELS

    model = MODELS[model_name].load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    if model_kind(model) == "none":
        return None
    sig, example = signature(model)
    mlflow.set_tracking_uri(uri)
    info = Model.log(
        artifact_path=None, name=f"{experiment}-seed{seed}", flavor=mlflow.pyfunc, run_id=run_id, python_model=ArchbenchModel(),
        artifacts={CHECKPOINT: str(checkpoint)}, signature=sig, input_example=example,
        pip_requirements=_requirements(), model_config={"model": model_name},
        metadata={"archbench": {"experiment": experiment, "seed": seed, "model": model_name, "kind": model_kind(model)}},
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
                                        order_by=[{"field_name": "creation_time", "ascending": False}], max_results=1)
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
        if version.model_id == model_id:  # publishing twice registers once
            break
    else:
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
                                              tags={"seed": str(seed)})
    client.set_registered_model_alias(name, ALIAS, version.version)
    return str(version.version)
