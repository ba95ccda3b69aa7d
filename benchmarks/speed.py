"""Wall-clock speed of our recurrent cells vs torch's fused nn.RNN / nn.LSTM.

Times forward (grad enabled, as in training) and forward+backward separately for both
of StackedRNN's paths (``fused``: whole-sequence Functions with hand-written BPTT, the
default; ``ref``: per-step autograd), median over repeats after a warm-up, everything in
one process and interleaved per repeat so the ratios are comparable.
``python -m benchmarks.speed --help``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from lightning_modules.recurrent import StackedRNN

# Baseline for each of our cells; the peephole LSTM has no torch counterpart, so plain LSTM is the bar.
BASELINES: dict[str, str] = {"elman": "rnn", "lstm": "lstm", "peephole": "lstm"}


def _torch_rnn(kind: str, input_size: int, hidden_size: int, num_layers: int) -> nn.Module:
    if kind == "rnn":
        return nn.RNN(input_size, hidden_size, num_layers=num_layers, nonlinearity="tanh", batch_first=True)
    return nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)


def _fwd_fns(model: Callable[[torch.Tensor], object], params: Sequence[nn.Parameter],
             x: torch.Tensor) -> tuple[Callable[[], None], Callable[[], None]]:
    """(forward, forward+backward) closures for a model whose first output is [batch, time, hidden]."""

    def fwd() -> None:
        model(x)  # graph is built (grad enabled, as in training) and then dropped

    def fwd_bwd() -> None:
        for p in params:
            p.grad = None
        model(x)[0].sum().backward()

    return fwd, fwd_bwd


def _median_ms(fns: Sequence[Callable[[], None]], repeats: int, warmup: int = 1) -> list[float]:
    """Median ms of each fn. Calls are interleaved per repeat so that load from other processes
    on a shared machine hits every contender alike instead of skewing one ratio."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [1000.0 * statistics.median(ts) for ts in times]


def run_speed(time_steps: int = 100, batch: int = 64, input_size: int = 64, hidden_size: int = 256,
              depths: Sequence[int] = (1, 3), repeats: int = 5, compile: bool = False,
              cells: Sequence[str] = ("elman", "lstm", "peephole")) -> list[dict]:
    """One row per (cell, depth) with fused/ref/torch ms and ratios to torch.

    ``compiled_*`` keys only with ``compile`` (torch.compile of the per-step reference path;
    the fused Functions are opaque to the compiler)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.manual_seed(0)
    x = torch.randn(batch, time_steps, input_size)  # [batch, time, input]
    rows: list[dict] = []
    for cell in cells:
        for depth in depths:
            fused = StackedRNN(cell, input_size, hidden_size, num_layers=depth)
            ours = StackedRNN(cell, input_size, hidden_size, num_layers=depth, fused=False)
            ours.load_state_dict(fused.state_dict())
            ref = _torch_rnn(BASELINES[cell], input_size, hidden_size, depth)
            fu = _fwd_fns(fused, list(fused.parameters()), x)
            own = _fwd_fns(ours, list(ours.parameters()), x)
            base = _fwd_fns(ref, list(ref.parameters()), x)
            fu_f, own_f, ref_f, fu_fb, own_fb, ref_fb = _median_ms([fu[0], own[0], base[0], fu[1], own[1], base[1]],
                                                                   repeats)
            row = {
                "cell": cell, "baseline": f"nn.{BASELINES[cell].upper()}", "depth": depth,
                "time_steps": time_steps, "batch": batch, "input": input_size, "hidden": hidden_size,
                "fused_fwd_ms": fu_f, "ref_fwd_ms": own_f, "torch_fwd_ms": ref_f,
                "fused_fwd_ratio": fu_f / ref_f, "ref_fwd_ratio": own_f / ref_f,
                "fused_fwd_bwd_ms": fu_fb, "ref_fwd_bwd_ms": own_fb, "torch_fwd_bwd_ms": ref_fb,
                "fused_fwd_bwd_ratio": fu_fb / ref_fb, "ref_fwd_bwd_ratio": own_fb / ref_fb,
            }
            if compile:
                compiled = torch.compile(ours)
                t0 = time.perf_counter()
                compiled(x)[0].sum().backward()  # compiles both the forward and backward graphs
                row["compile_s"] = time.perf_counter() - t0
                c_f, c_fb = _median_ms(_fwd_fns(compiled, list(ours.parameters()), x), repeats)
                row.update(compiled_fwd_ms=c_f, compiled_fwd_ratio=c_f / ref_f,
                           compiled_fwd_bwd_ms=c_fb, compiled_fwd_bwd_ratio=c_fb / ref_fb)
            rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    cols = [("cell", "cell", "s"), ("baseline", "torch", "s"), ("depth", "depth", "d"),
            ("fused_fwd_ms", "fused fwd", ".1f"), ("ref_fwd_ms", "ref fwd", ".1f"),
            ("torch_fwd_ms", "torch fwd", ".1f"),
            ("fused_fwd_ratio", "fused/t", ".2f"), ("ref_fwd_ratio", "ref/t", ".2f"),
            ("fused_fwd_bwd_ms", "fused f+b", ".1f"), ("ref_fwd_bwd_ms", "ref f+b", ".1f"),
            ("torch_fwd_bwd_ms", "torch f+b", ".1f"),
            ("fused_fwd_bwd_ratio", "fused/t", ".2f"), ("ref_fwd_bwd_ratio", "ref/t", ".2f")]
    if rows and "compile_s" in rows[0]:
        cols += [("compile_s", "compile s", ".1f"), ("compiled_fwd_ms", "comp fwd ms", ".1f"),
                 ("compiled_fwd_ratio", "ratio", ".2f"), ("compiled_fwd_bwd_ms", "comp f+b ms", ".1f"),
                 ("compiled_fwd_bwd_ratio", "ratio", ".2f")]
    cells = [[format(r[k], f) for k, _, f in cols] for r in rows]
    widths = [max(len(h), *(len(c[j]) for c in cells)) for j, (_, h, _) in enumerate(cols)]
    lines = ["  ".join(h.rjust(w) for (_, h, _), w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--time-steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cells", nargs="+", default=["elman", "lstm", "peephole"], choices=sorted(BASELINES))
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd reference path")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to time, one table each (default: torch's current setting)")
    args = parser.parse_args(argv)
    if args.threads is not None and any(n < 1 for n in args.threads):
        parser.error(f"--threads must be positive integers, got {args.threads}")
    for n in args.threads or [torch.get_num_threads()]:
        # Thread count changes the ratio: torch's per-step gate ops are big enough for ATen to split
        # across threads, ours are kept below that size (see lightning_modules/recurrent_fused.py).
        torch.set_num_threads(n)
        rows = run_speed(args.time_steps, args.batch, args.input, args.hidden, args.depths, args.repeats,
                         compile=args.compile, cells=args.cells)
        print(f"T={args.time_steps} batch={args.batch} input={args.input} hidden={args.hidden} "
              f"threads={torch.get_num_threads()} repeats={args.repeats} "
              "(median ms; fused/t, ref/t = that path's time / torch's)")
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
