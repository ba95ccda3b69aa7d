"""The compute a seed cost: process CPU seconds (every thread of the run), summed over the processes that
trained it, so a run killed and resumed reports what the whole seed took, not only its last leg.

The running total is kept in the seed's state folder (``cpu.json``) after every epoch; a resumed run starts
from it, a run that starts over starts from zero. It is provenance, not a number the run produces, so it lives
outside the code hash.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

CPU_FILE = "cpu.json"


class CpuClock(pl.Callback):
    """Counts this process's CPU seconds from its creation on top of ``before`` (earlier legs of the seed)."""

    def __init__(self, state: Path, resumed: bool, started: float | None = None) -> None:
        self.path = state / CPU_FILE
        self.before = _read(self.path) if resumed else 0.0
        self.start = time.process_time() if started is None else started  # a time.process_time() reading

    def total(self) -> float:
        return round(self.before + time.process_time() - self.start, 2)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            tmp = self.path.with_name(f".{CPU_FILE}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"cpu_s": self.total()}))
            tmp.replace(self.path)


def _read(path: Path) -> float:
    try:
        value: Any = json.loads(path.read_text()).get("cpu_s", 0.0)
    except (OSError, ValueError, AttributeError):
        return 0.0
    return float(value) if isinstance(value, (int, float)) else 0.0
