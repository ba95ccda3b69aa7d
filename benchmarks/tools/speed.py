"""Forward+backward time of the cells' equations against torch's kernel, measured in one run.

For each cell and depth, StackedRNN's equations path (cells.py, step by step with autograd) and torch's
kernel as training runs it (StackedRNN impl="torch": nn.LSTM, nn.RNN; oneDNN on the CPU) take turns in
every repeat after a warm-up, so load from other processes hits both alike; the ratio is of the medians.
The peephole LSTM has no kernel: its bar is nn.LSTM, the cell it extends. On a shared machine absolute
times drift by ~30% between runs; the per-repeat ratios' range says how far to trust one ratio.
``python -m benchmarks.tools.speed --help``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from lightning_modules.recurrent.stack import StackedRNN

# The torch kernel each cell is timed against: its own, or for a cell torch lacks, the one it extends.
BASELINES: dict[str, str] = {"lstm": "lstm", "elman": "elman", "peephole": "lstm"}


def _fwd_bwd(model: StackedRNN, x: torch.Tensor) -> Callable[[], None]:
    """One training step's recurrent work: forward with grad, then backward of a loss over all outputs."""

    def run() -> None:
        for p in model.parameters():
            p.grad = None
        model(x)[0].sum().backward()

    return run


def _times_ms(fns: Sequence[Callable[[], None]], repeats: int, warmup: int = 1) -> list[list[float]]:
    """Every repeat's ms of each fn, the fns taking turns within each repeat."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(1000.0 * (time.perf_counter() - t0))
    return times


def run_speed(time_steps: int = 100, batch: int = 64, input_size: int = 64, hidden_size: int = 256,
              depths: Sequence[int] = (1, 3), repeats: int = 7,
              cells: Sequence[str] = ("lstm", "elman", "peephole")) -> list[dict]:
    """One row per (cell, depth) at torch's current thread count: the median ms of each path and their ratio."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.manual_seed(0)
    x = torch.randn(batch, time_steps, input_size)  # [batch, time, input]
    rows: list[dict] = []
    for cell in cells:
        for depth in depths:
            eqs = StackedRNN(cell, input_size, hidden_size, depth, impl="equations")
            kernel = StackedRNN(BASELINES[cell], input_size, hidden_size, depth, impl="torch")
            eq_ms, torch_ms = _times_ms([_fwd_bwd(eqs, x), _fwd_bwd(kernel, x)], repeats)
            per_repeat = sorted(a / b for a, b in zip(eq_ms, torch_ms))
            rows.append({"threads": torch.get_num_threads(), "cell": cell, "baseline": type(kernel.kernel).__name__,
                         "depth": depth, "time_steps": time_steps, "batch": batch, "input": input_size,
                         "hidden": hidden_size, "repeats": repeats, "equations_ms": statistics.median(eq_ms),
                         "torch_ms": statistics.median(torch_ms), "times_ms": {"equations": eq_ms, "torch": torch_ms},
                         "ratio": statistics.median(eq_ms) / statistics.median(torch_ms),
                         "ratio_min": per_repeat[0], "ratio_max": per_repeat[-1]})
    return rows


def format_table(rows: list[dict]) -> str:
    cols = [("threads", "threads", "d"), ("cell", "cell", "s"), ("depth", "depth", "d"), ("baseline", "torch", "s"),
            ("equations_ms", "equations ms", ".1f"), ("torch_ms", "torch ms", ".1f"), ("ratio", "ratio", ".2f")]
    cells = [[format(r[k], f) for k, _, f in cols] + [f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}"] for r in rows]
    heads = [h for _, h, _ in cols] + ["per repeat"]
    widths = [max(len(h), *(len(c[j]) for c in cells)) for j, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths)), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="archbench speed", description=__doc__.splitlines()[0])
    parser.add_argument("--time-steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cells", nargs="+", default=list(BASELINES), choices=list(BASELINES))
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to time (default: torch's current setting)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write every timing as JSON")
    args = parser.parse_args(argv)
    if args.threads is not None and any(n < 1 for n in args.threads):
        parser.error(f"--threads must be positive integers, got {args.threads}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    before, load_before = torch.get_num_threads(), os.getloadavg()
    rows: list[dict] = []
    try:
        for n in args.threads or [before]:
            torch.set_num_threads(n)
            rows += run_speed(args.time_steps, args.batch, args.input, args.hidden, args.depths, args.repeats,
                              cells=args.cells)
    finally:
        torch.set_num_threads(before)
    load_after = os.getloadavg()
    print(f"forward+backward, T={args.time_steps} batch={args.batch} input={args.input} hidden={args.hidden}, "
          f"median of {args.repeats} interleaved repeats; ratio = equations / torch's kernel (> 1: the kernel is faster)")
    print(format_table(rows))
    print(f"load average before/after: {load_before[0]:.1f}/{load_after[0]:.1f} on {os.cpu_count()} CPUs")
    if args.json is not None:
        record = {"torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
                  "load_avg_before": load_before[0], "load_avg_after": load_after[0], "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
