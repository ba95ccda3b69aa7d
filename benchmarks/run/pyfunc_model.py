"""The pyfunc face of a suite checkpoint (logged by model_logging.py): what ``mlflow.pyfunc.load_model`` returns.

Logged as MLflow's "model from code": this file is copied into the model and run on load, and its last line
hands MLflow the model object, so nothing is pickled. Loading needs the suite importable (run it in the project,
or `pip install` it).
"""

from __future__ import annotations

import warnings
from typing import Any

# MLflow warns, whenever a PythonModel subclass is defined (some of its own, on import), that predict has no type
# hints: ours gets its signature at log time instead (model_logging.signature), one per kind of model.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    import mlflow.models
    import mlflow.pyfunc

from benchmarks.run.model_logging import CHECKPOINT, generate_images, model_kind


with warnings.catch_warnings():  # the same warning for this class, whose predict MLflow checks at its definition
    # MLflow sets its own "once" filter around that check, over any filter here: drop the one message instead.
    shown = warnings.showwarning
    warnings.showwarning = lambda message, *args, **kwargs: (  # noqa: E731
        None if "Add type hints to the `predict` method" in str(message) else shown(message, *args, **kwargs))

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

        # No type hints here: MLflow reads predict's hints as a signature of their own, and ours is given at log time.
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
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
            images = [generate_images(model, 1, int(s), None if lab is None else int(lab))[0]
                      for s, lab in zip(model_input["seed"], labels)]
            return np.stack([img.cpu().numpy().astype(np.float32) for img in images])  # [rows, C, H, W]


mlflow.models.set_model(ArchbenchModel())
