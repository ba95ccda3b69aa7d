"""`archbench evaluate`: a trained seed's checkpoint run through its experiment's test (or validation) loop again.

The data comes from the experiment as params.yaml defines it now, the model from the seed's best checkpoint,
the Trainer from the experiment's arguments, under the seed and thread count training used: on the machine
that trained it the numbers equal the recorded ones bit for bit (a test checks it). Elsewhere they agree
statistically, not exactly (see the README on CPU types).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from lightning_modules.contracts import declared


def evaluate(params: dict[str, Any], chosen: Any, split: str) -> dict[str, float]:
    import lightning.pytorch as pl
    import torch

    from benchmarks.core.params import experiment_from_params, settings
    from benchmarks.run.build import build_datamodule, trainer_args
    from benchmarks.run.results import load_seed_results

    exp = experiment_from_params(params, chosen.experiment)
    result = load_seed_results(Path(settings(params)["results_dir"]) / exp.name).get(int(chosen.seed))
    if result is not None and result.get("config_hash") != exp.config_hash():
        raise ArchbenchError(f"seed {chosen.seed} of {exp.name} was trained under another config of it "
                             f"({result.get('config_hash')}, now {exp.config_hash()}); retrain it to evaluate it")
    conf = settings(params)
    if conf.get("threads"):
        torch.set_num_threads(int(conf["threads"]))
    pl.seed_everything(int(chosen.seed), workers=True, verbose=False)
    dm = build_datamodule(exp, conf["data_dir"])
    args = {k: v for k, v in trainer_args(exp).items() if k not in ("max_time",)}
    trainer = pl.Trainer(**args, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    run = trainer.test if split == "test" else trainer.validate
    out = run(chosen.model, datamodule=dm, verbose=False)
    return {k: float(v) for k, v in (out[0] if out else {}).items()}


def compare(recorded: dict[str, float], fresh: dict[str, float], split: str, model: Any
            ) -> list[tuple[str, float | None, float | None]]:
    """(metric, recorded, recomputed) rows. On the val split training recorded only the monitored value at its
    best epoch (``<monitor>_best``), which is the checkpoint's own epoch: that one is compared."""
    if split == "test":
        keys = sorted(k for k in fresh if k.startswith("test/"))
        return [(k, recorded.get(k), fresh[k]) for k in keys]
    # The key this seed's checkpoint was chosen on, as its run recorded it (a run may override the model's own).
    from benchmarks.run.model_logging import chosen_keys

    chosen = chosen_keys(recorded)
    monitor = chosen.pop() if len(chosen) == 1 else declared(model, "monitor")
    return [(k, recorded.get(f"{k}_best") if k == monitor else None, fresh[k]) for k in sorted(fresh)]
