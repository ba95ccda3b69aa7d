"""The pyfunc face of a suite checkpoint (logged by model_logging.py): what ``mlflow.pyfunc.load_model`` returns."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

from benchmarks.run.model_logging import CHECKPOINT, generate_images, model_kind


class ArchbenchModel(mlflow.pyfunc.PythonModel):
    """The pyfunc face of a suite checkpoint. Input rows by kind (see ``signature``):

    - text (char LM): ``prime`` -> the prime and its sampled continuation (params length, temperature, seed);
    - translate: ``text`` (source sentence) -> translation; tag: ``text`` -> "token/TAG token/TAG ...";
    - images: ``seed`` (and ``label`` for a class-conditional generator) -> one image [C, H, W] per row.
    """

    def load_context(self, context: Any) -> None:
        from lightning_modules import MODELS

        self.model = MODELS[context.model_config["model"]].load_from_checkpoint(
            context.artifacts[CHECKPOINT], map_location="cpu", weights_only=False)
        self.model.eval()

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import numpy as np
        import torch

        params = params or {}
        kind, model = model_kind(self.model), self.model
        if kind == "text":
            return [model.continue_text(str(p), int(params.get("length", 200)), float(params.get("temperature", 1.0)),
                                        int(params.get("seed", 0))) for p in model_input["prime"]]
        if kind == "translate":
            return model.translate_text([str(t) for t in model_input["text"]])
        if kind == "tag":
            sentences = [model.tokenize(str(t)) for t in model_input["text"]]
            return [" ".join(f"{w}/{t}" for w, t in zip(s, tags)) for s, tags in zip(sentences, model.tag_tokens(sentences))]
        labels = model_input["label"] if "label" in model_input else [None] * len(model_input)
        images = [generate_images(model, 1, int(s), None if lab is None else torch.tensor([int(lab)]))[0]
                  for s, lab in zip(model_input["seed"], labels)]
        return np.stack([img.cpu().numpy().astype(np.float32) for img in images])  # [rows, C, H, W]
