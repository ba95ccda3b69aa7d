"""Wall-clock speed of our recurrent cells vs torch's fused nn.RNN / nn.LSTM.

Times forward (grad enabled, as in training) and forward+backward separately for both
of StackedRNN's paths (``fused``: whole-sequence Functions with hand-written BPTT, the
default; ``ref``: per-step autograd), median over repeats after a warm-up, everything in
one process and interleaved per repeat so the ratios are comparable: on a shared machine
absolute timings drift by ~30% between runs, ratios measured side by side much less.
One detailed table per thread count, then a summary of the fused path's ratios
(ours / torch; below 1.0 is faster than torch), then a verdict per cell from the repeats themselves: a
two-sided sign test on which of the two was faster in each interleaved repeat (with the default 7 repeats
only 7 of 7 either way rejects a tie at p < 0.05). ``--json PATH`` writes every row and timing.
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
from torch import nn

from lightning_modules.recurrent import native
from lightning_modules.recurrent.cells import StackedRNN

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


def _times_ms(fns: Sequence[Callable[[], None]], repeats: int, warmup: int = 1) -> list[list[float]]:
    """Every repeat's ms of each fn. Calls are interleaved per repeat so that load from other processes
    on a shared machine hits every contender alike instead of skewing one ratio."""
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
              depths: Sequence[int] = (1, 3), repeats: int = 7, compile: bool = False,
              cells: Sequence[str] = ("lstm", "peephole", "elman"), ref: bool = True) -> list[dict]:
    """One row per (cell, depth) at torch's current thread count: fused/ref/torch median ms and ratios to torch.

    ``ref=False`` skips the (slow) per-step autograd path. ``compiled_*`` keys only with ``compile``
    (torch.compile of the per-step reference path; the fused Functions are opaque to the compiler)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    torch.manual_seed(0)
    x = torch.randn(batch, time_steps, input_size)  # [batch, time, input]
    paths = ("fused", "ref") if ref else ("fused",)
    rows: list[dict] = []
    for cell in cells:
        for depth in depths:
            fused = StackedRNN(cell, input_size, hidden_size, num_layers=depth)
            ours = StackedRNN(cell, input_size, hidden_size, num_layers=depth, fused=False)
            ours.load_state_dict(fused.state_dict())
            base = _torch_rnn(BASELINES[cell], input_size, hidden_size, depth)
            contenders = {"fused": fused, "ref": ours}
            fns = {p: _fwd_fns(contenders[p], list(contenders[p].parameters()), x) for p in paths}
            fns["torch"] = _fwd_fns(base, list(base.parameters()), x)
            names = [(p, kind) for kind in ("fwd", "fwd_bwd") for p in (*paths, "torch")]
            times = _times_ms([fns[p][kind == "fwd_bwd"] for p, kind in names], repeats)
            row: dict = {"threads": torch.get_num_threads(), "cell": cell, "baseline": f"nn.{BASELINES[cell].upper()}",
                         "depth": depth, "time_steps": time_steps, "batch": batch, "input": input_size,
                         "hidden": hidden_size, "repeats": repeats,
                         "times_ms": {f"{p}_{kind}": ts for (p, kind), ts in zip(names, times)}}
            for (p, kind), ts in zip(names, times):
                row[f"{p}_{kind}_ms"] = statistics.median(ts)
            for p in paths:
                for kind in ("fwd", "fwd_bwd"):
                    row[f"{p}_{kind}_ratio"] = row[f"{p}_{kind}_ms"] / row[f"torch_{kind}_ms"]
                    row.update(_sign_test(row["times_ms"][f"{p}_{kind}"], row["times_ms"][f"torch_{kind}"],
                                          f"{p}_{kind}"))
            if compile:
                compiled = torch.compile(ours)
                t0 = time.perf_counter()
                compiled(x)[0].sum().backward()  # compiles both the forward and backward graphs
                row["compile_s"] = time.perf_counter() - t0
                c_f, c_fb = (statistics.median(ts) for ts in
                             _times_ms(_fwd_fns(compiled, list(ours.parameters()), x), repeats))
                row.update(compiled_fwd_ms=c_f, compiled_fwd_ratio=c_f / row["torch_fwd_ms"],
                           compiled_fwd_bwd_ms=c_fb, compiled_fwd_bwd_ratio=c_fb / row["torch_fwd_bwd_ms"])
            rows.append(row)
    return rows


def _sign_test(ours: Sequence[float], theirs: Sequence[float], prefix: str) -> dict:
    """Repeats where ours was faster than torch in the same (interleaved) repeat, and the two-sided sign
    test's p for "neither is faster": a ratio near 1.0 on a noisy machine reads as a tie, not as a verdict."""
    from scipy.stats import binomtest

    wins = sum(a < b for a, b in zip(ours, theirs))
    n = sum(a != b for a, b in zip(ours, theirs))
    return {f"{prefix}_faster": wins, f"{prefix}_pairs": n,
            f"{prefix}_sign_p": binomtest(wins, n).pvalue if n else 1.0}


def verdict(row: dict, kind: str = "fwd_bwd", alpha: float = 0.05) -> str:
    """The fused path against torch: "faster" / "slower" where the sign test rejects a tie at ``alpha``, else "tie"."""
    if row[f"fused_{kind}_sign_p"] >= alpha:
        return "tie"
    return "faster" if 2 * row[f"fused_{kind}_faster"] > row[f"fused_{kind}_pairs"] else "slower"


def _render(cols: list[tuple[str, str]], cells: list[list[str]]) -> str:
    widths = [max(len(h), *(len(c[j]) for c in cells)) for j, (h, _) in enumerate(cols)]
    lines = ["  ".join(h.rjust(w) for (h, _), w in zip(cols, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    """Detailed table: median ms of each path and its ratio to torch (t), forward and forward+backward."""
    paths = [p for p in ("fused", "ref") if rows and f"{p}_fwd_ms" in rows[0]]
    cols = [("cell", "cell", "s"), ("baseline", "torch", "s"), ("depth", "depth", "d")]
    for kind, label in (("fwd", "fwd"), ("fwd_bwd", "f+b")):
        cols += [(f"{p}_{kind}_ms", f"{p} {label}", ".1f") for p in paths]
        cols += [(f"torch_{kind}_ms", f"torch {label}", ".1f")]
        cols += [(f"{p}_{kind}_ratio", f"{p}/t", ".2f") for p in paths]
    if rows and "compile_s" in rows[0]:
        cols += [("compile_s", "compile s", ".1f"), ("compiled_fwd_ms", "comp fwd ms", ".1f"),
                 ("compiled_fwd_ratio", "ratio", ".2f"), ("compiled_fwd_bwd_ms", "comp f+b ms", ".1f"),
                 ("compiled_fwd_bwd_ratio", "ratio", ".2f")]
    return _render([(h, f) for _, h, f in cols], [[format(r[k], f) for k, _, f in cols] for r in rows])


def _per_cell_lines(rows: list[dict], width: int, fmt: Callable[[dict], list[str]]) -> tuple[list[str], list[list[str]]]:
    """The cells in order, and one line per (threads, depth): threads, depth, then ``fmt(row)`` per cell
    (``width`` dashes where a cell was not timed)."""
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    by = {(r["threads"], r["depth"], r["cell"]): r for r in rows}
    lines = []
    for n, d in dict.fromkeys((r["threads"], r["depth"]) for r in rows):
        line = [str(n), str(d)]
        for c in cells:
            r = by.get((n, d, c))
            line += ["-"] * width if r is None else fmt(r)
        lines.append(line)
    return cells, lines


def format_summary(rows: list[dict]) -> str:
    """The fused path's ratios, one line per (threads, depth), a column per cell vs its torch baseline."""
    cells, lines = _per_cell_lines(rows, 2, lambda r: [f"{r['fused_fwd_ratio']:.2f}", f"{r['fused_fwd_bwd_ratio']:.2f}"])
    base = {r["cell"]: r["baseline"].removeprefix("nn.") for r in rows}
    cols = [("threads", ""), ("depth", "")]
    for c in cells:
        cols += [(f"{c}/{base[c]} fwd", ""), (f"{c}/{base[c]} f+b", "")]
    return _render(cols, lines)


def format_verdicts(rows: list[dict]) -> str:
    """Forward+backward, repeat by repeat: in how many repeats ours beat torch, the sign test's p and its verdict."""
    cells, lines = _per_cell_lines(rows, 1, lambda r: [f"{r['fused_fwd_bwd_faster']}/{r['fused_fwd_bwd_pairs']} "
                                                       f"p={r['fused_fwd_bwd_sign_p']:.2f} {verdict(r)}"])
    return _render([("threads", ""), ("depth", "")] + [(c, "") for c in cells], lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="archbench speed", description=__doc__.splitlines()[0])
    parser.add_argument("--time-steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cells", nargs="+", default=["lstm", "peephole", "elman"], choices=sorted(BASELINES))
    parser.add_argument("--no-ref", action="store_true", help="skip the per-step autograd path (faster)")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd reference path")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to time, one table each (default: torch's current setting)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write all rows as JSON")
    args = parser.parse_args(argv)
    if args.threads is not None and any(n < 1 for n in args.threads):
        parser.error(f"--threads must be positive integers, got {args.threads}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    before, load_before = torch.get_num_threads(), os.getloadavg()
    rows: list[dict] = []
    print(f"LSTM step elementwise math: {native.describe()}")
    try:
        for n in args.threads or [before]:
            torch.set_num_threads(n)
            part = run_speed(args.time_steps, args.batch, args.input, args.hidden, args.depths, args.repeats,
                             compile=args.compile, cells=args.cells, ref=not args.no_ref)
            print(f"T={args.time_steps} batch={args.batch} input={args.input} hidden={args.hidden} threads={n} "
                  f"repeats={args.repeats} (median ms; <path>/t = that path's time / torch's)")
            print(format_table(part) + "\n")
            rows += part
    finally:
        torch.set_num_threads(before)
    load_after = os.getloadavg()
    print("fused path / torch (median of interleaved repeats; < 1.00 is faster than torch)")
    print(format_summary(rows))
    print("\nforward+backward, repeat by repeat: repeats where the fused path beat torch, two-sided sign test p,"
          " verdict at p < 0.05 (tie: the repeats do not tell them apart)")
    print(format_verdicts(rows))
    print(f"load average before/after: {load_before[0]:.1f}/{load_after[0]:.1f} on {os.cpu_count()} CPUs")
    if args.json is not None:
        record = {"torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
                  "lstm_step": native.describe(),
                  "load_avg_before": load_before[0], "load_avg_after": load_after[0], "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
