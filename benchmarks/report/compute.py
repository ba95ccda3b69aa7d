"""What a published number cost: CPU-seconds and the machine, per seed, cell-seed, trial or baseline.

A run's provenance holds its fit's wall time and its torch thread count; where it also records the
process's CPU time (``cpu_s``) that is used as is. Otherwise the CPU time is estimated as wall time x
threads, which is what the seeds could have used at most, and the record says which of the two it is.
Only whitelisted machine fields are copied, so nothing machine-local (paths) reaches the ledger.
"""

from __future__ import annotations

import math
from typing import Any

MACHINE_FIELDS = ("host", "cpu_model", "cpu_capability", "cores", "threads", "gpu", "cudnn", "torch")
MEASURED = "process CPU time"
ESTIMATED = "wall time x torch threads (an upper bound)"


def machine_brief(machine: dict[str, Any] | None) -> dict[str, Any]:
    return {k: machine[k] for k in MACHINE_FIELDS if machine and machine.get(k) is not None}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def run_compute(provenance: dict[str, Any]) -> dict[str, Any]:
    """{cpu_s, how, wall_s, machine} of one run from its provenance (cpu_s None when nothing was recorded)."""
    machine = provenance.get("machine") or {}
    threads = _number(machine.get("threads")) or _number(provenance.get("threads")) or 1.0
    wall, cpu = _number(provenance.get("fit_s")), _number(provenance.get("cpu_s"))
    if cpu is not None:
        how = MEASURED
    elif wall is not None:
        cpu, how = wall * threads, ESTIMATED
    else:
        how = "not recorded"
    return {"cpu_s": None if cpu is None else round(cpu, 3), "how": how, "wall_s": wall, "machine": machine_brief(machine)}


def total(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum over runs, the ways it was measured, the machines, and how many runs recorded nothing."""
    known = [p for p in parts if p.get("cpu_s") is not None]
    machines = sorted({(p.get("machine") or {}).get("host") or "?" for p in parts})
    return {"cpu_s": round(sum(p["cpu_s"] for p in known), 3), "runs": len(parts), "unrecorded": len(parts) - len(known),
            "how": sorted({p["how"] for p in known}), "hosts": machines}


def experiment_compute(record: dict[str, Any]) -> dict[str, Any]:
    """The total of a published experiment (ledger/<exp>.json) from its seeds' provenance."""
    return total([run_compute(s.get("provenance") or {}) for s in (record.get("seeds") or {}).values()])


def cpu_hours(seconds: float | None) -> str:
    """Always CPU-hours, so a column of them never mixes units; three decimals below a tenth (a minute is 0.017)."""
    if seconds is None:
        return "–"
    hours = seconds / 3600
    return f"{hours:.2f} CPU-h" if hours >= 0.1 else f"{hours:.3f} CPU-h"
