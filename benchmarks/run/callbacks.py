"""Lightning callbacks of the suite: per-epoch curves for `dvc plots`, and samples for MLflow."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

CURVE_PREFIXES = ("train/", "val/")


class CurveWriter(pl.Callback):
    """Appends one row per epoch (train and val metrics) to a CSV, rewritten whole each epoch.

    Rows already in the file are kept, so a resumed run continues the same curve.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        if self.path.is_file():
            with self.path.open() as fh:
                self.rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row: dict[str, float] = {"epoch": float(trainer.current_epoch)}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(CURVE_PREFIXES) and not key.endswith("_step"):
                row[key.removesuffix("_epoch")] = float(value)
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        self.write()

    def write(self) -> None:
        fields = ["epoch"] + sorted({k for r in self.rows for k in r} - {"epoch"})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: (int(v) if k == "epoch" else v) for k, v in row.items()})
        tmp.replace(self.path)


class SampleLogger(pl.Callback):
    """After each validation epoch, asks the model for samples and logs them as MLflow artifacts.

    A model opts in by defining ``make_samples() -> dict[str, str | matplotlib Figure]``: text goes
    in with ``log_text``, figures with ``log_figure``. The latest text samples are also kept on disk.
    """

    def __init__(self, keep_dir: Path | None = None) -> None:
        self.keep_dir = Path(keep_dir) if keep_dir else None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        make = getattr(pl_module, "make_samples", None)
        # Under DDP one process writes: every rank would make the same samples and race on the same files.
        if trainer.sanity_checking or make is None or not trainer.is_global_zero:
            return
        with torch.no_grad():
            samples: dict[str, Any] = make()
        epoch = trainer.current_epoch
        for name, item in samples.items():
            stem, _, ext = name.rpartition(".")
            artifact = f"samples/{stem}_epoch{epoch:03d}.{ext}"
            for logger in trainer.loggers:
                log_artifact_item(logger, item, artifact)
            if self.keep_dir is not None:
                self.keep_dir.mkdir(parents=True, exist_ok=True)
                if isinstance(item, str):
                    (self.keep_dir / name).write_text(item)
                else:
                    item.savefig(self.keep_dir / name)
        _close_figures(samples)


def log_artifact_item(logger: Any, item: Any, artifact: str) -> None:
    run_id = getattr(logger, "run_id", None)
    client = getattr(logger, "experiment", None)
    if run_id is None or not hasattr(client, "log_text"):
        return
    if isinstance(item, str):
        client.log_text(run_id, item, artifact)
    else:
        client.log_figure(run_id, item, artifact)


def _close_figures(samples: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    for item in samples.values():
        if not isinstance(item, (str, io.StringIO)):
            plt.close(item)
