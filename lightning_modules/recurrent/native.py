"""The LSTM step's elementwise math in C (lstm_step.c): built once per machine, called through ctypes.

Why: after its matmul, an LSTM time step is ~10 elementwise torch ops (sigmoids, the state update,
tanh(s_t), the output), each a pass over [batch, hidden] or [batch, 4*hidden] plus a dispatch; at
T=100, batch 64, hidden 256 they took 200-250 us a step at two threads, about as long as the step's
matmul. lstm_step.c does them in one pass per row: on one thread ~66 us forward and ~19 us backward a
step with its data in cache, ~90 and ~60 us read from the sequence's buffers (AMD EPYC, AVX2). With it
(and kernels.py's oneDNN matmuls), the LSTM's and the peephole LSTM's forward+backward took 0.75-0.96x
of nn.LSTM's at one thread and at depth 1 with two threads, but 0.93-1.19x at depth 3 with two threads
(a tie by the sign test); with the torch-ops step they had taken 0.86-1.38x.
Threads: built with OpenMP, the kernel spreads a step's rows over torch's own thread team, as many as
``torch.get_num_threads()`` (lstm_step.c says how, and why the numbers stay bit for bit those of one
thread): ~52 us forward and ~35 us backward a step at two threads, read from the buffers. Interleaved
with the one-thread kernel at depth 3 and two threads (three pairs of runs), forward+backward went from
0.99x to 0.94x of nn.LSTM for the LSTM (median of paired repeats), the forward from 0.95x to 0.90x. A
compiler without OpenMP builds the one-thread kernel. As with torch's own ops, a process forked after
threaded steps should not run threaded steps itself (GNU OpenMP is not fork-safe): DataLoader workers
run none, and DDP's default start method spawns.
Why plain C and ctypes rather than a torch C++ extension: no torch headers, so it builds in about a
second with the system's C compiler (no ninja, no minute-long compile in a fresh clone or CI).

It runs where it can: x86-64 with AVX2 and FMA (torch's CPU capability AVX2 or AVX512), a C
compiler (``$CC`` or ``cc``), and CPU float32 tensors. Anywhere else (or with ``ARCHBENCH_NATIVE=0``)
the fused Functions run the same step as torch ops, which agree to float32 rounding (~1e-7; the
kernel's exp is a polynomial, torch's sigmoid is Sleef's). ``describe()`` says which path runs and
why; run provenance records it, since the two paths' numbers differ in the last bits.
The built library is cached under ``$ARCHBENCH_NATIVE_DIR`` (default ``~/.cache/archbench``), named
by the hash of its source and flags; concurrent builds each write a private file and rename it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from lightning_modules.recurrent.kernels import (
    grad_at_last_step,
    grad_from_above_and_next,
    onednn_linear,
    onednn_linear_ok,
    onednn_pack,
)

__all__ = ["describe", "lstm_backward", "lstm_forward", "step_kernels"]

SOURCE = Path(__file__).with_name("lstm_step.c")
# -ffp-contract=off: the arithmetic is exactly as written (no mul+add fused behind our back), so the
# same source gives the same numbers whatever the compiler's default.
FLAGS = ("-O3", "-mavx2", "-mfma", "-ffp-contract=off", "-shared", "-fPIC")
# Tried first: a step spread over torch's own OpenMP threads (lstm_step.c says how); a compiler without
# OpenMP still builds the one-thread kernel.
OPENMP = "-fopenmp"
_P, _L = ctypes.c_void_p, ctypes.c_long
_F32 = 4  # bytes per float32 element


class NativeUnavailable(RuntimeError):
    """Why the C step kernels cannot run here."""


def _cache_dir() -> Path:
    env = os.environ.get("ARCHBENCH_NATIVE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "archbench"
    try:
        base.mkdir(parents=True, exist_ok=True)
        return base
    except OSError:  # read-only home: a private temp dir still lets the build happen
        tmp = Path(tempfile.gettempdir()) / f"archbench-native-{os.getuid()}"
        tmp.mkdir(exist_ok=True)
        return tmp


def _load() -> ctypes.CDLL:
    if os.environ.get("ARCHBENCH_NATIVE", "1") == "0":
        raise NativeUnavailable("turned off by ARCHBENCH_NATIVE=0")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise NativeUnavailable(f"the kernel is written for x86-64, this CPU is {platform.machine()}")
    cap = torch.backends.cpu.get_cpu_capability()
    if cap not in ("AVX2", "AVX512"):
        raise NativeUnavailable(f"it needs AVX2 and FMA, torch reports CPU capability {cap}")
    cc_name = os.environ.get("CC") or "cc"
    cc = shutil.which(cc_name)
    if cc is None:
        raise NativeUnavailable(f"no C compiler {cc_name!r} on PATH (install gcc or set CC)")
    # The threaded build where the compiler has OpenMP, else the one-thread one; each is cached under its
    # own name, so a failed threaded build in one process never replaces another's good one.
    source = SOURCE.read_bytes()
    threaded, alone = _lib_path(source, cc, (*FLAGS, OPENMP)), _lib_path(source, cc, FLAGS)
    if not threaded.exists() and not alone.exists():
        try:
            _build(cc, threaded, (OPENMP,))
        except NativeUnavailable:  # e.g. clang without libomp
            _build(cc, alone, ())
    lib_path, extra = (threaded, (OPENMP,)) if threaded.exists() else (alone, ())
    try:
        lib = ctypes.CDLL(str(lib_path))
    except OSError:  # a damaged cached file (a full disk, a copy gone wrong): build it again, once
        lib_path.unlink(missing_ok=True)
        _build(cc, lib_path, extra)
        lib = ctypes.CDLL(str(lib_path))
    lib.lstm_step_forward.argtypes = [_P, _P, _P, _P, _P, _P, _P, _P, _L, _L, _L]
    lib.lstm_step_backward.argtypes = [_P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _L, _L, _L]
    lib.lstm_step_forward.restype = lib.lstm_step_backward.restype = None
    for name in ("lstm_step_openmp", "lstm_step_last_team"):
        getattr(lib, name).argtypes, getattr(lib, name).restype = [], ctypes.c_int
    return lib


def _lib_path(source: bytes, cc: str, flags: tuple[str, ...]) -> Path:
    """Where the library built from ``source`` by ``cc`` with ``flags`` is cached."""
    key = hashlib.sha256(source + " ".join((cc, *flags)).encode()).hexdigest()[:16]
    return _cache_dir() / f"lstm_step-{key}.so"


def _build(cc: str, lib_path: Path, extra: tuple[str, ...]) -> None:
    tmp = lib_path.with_name(f"{lib_path.name}.{os.getpid()}.tmp")
    done = subprocess.run([cc, *FLAGS, *extra, "-o", str(tmp), str(SOURCE)], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        first = (done.stderr.strip().splitlines() or ["no message"])[0]
        raise NativeUnavailable(f"building {SOURCE.name} with {cc} failed: {first}")
    os.replace(tmp, lib_path)  # atomic: a concurrent loader sees no file or the whole one


@functools.cache
def _state() -> tuple[ctypes.CDLL | None, str]:
    try:
        lib = _load()
        threads = "torch's threads" if lib.lstm_step_openmp() else "one thread"
        return lib, f"C step kernel (lstm_step.c, AVX2/FMA, {torch.backends.cpu.get_cpu_capability()} CPU, {threads})"
    except (NativeUnavailable, OSError, subprocess.SubprocessError) as exc:
        return None, f"torch ops ({exc})"


def step_kernels(*tensors: Tensor | None) -> ctypes.CDLL | None:
    """The loaded C kernels if they can run on these tensors (all CPU float32), else None."""
    lib = _state()[0]
    if lib is None or any(t is not None and (t.device.type != "cpu" or t.dtype != torch.float32) for t in tensors):
        return None
    return lib


def describe() -> str:
    """Which path the LSTM steps take on CPU float32 here, and why (for logs and run provenance)."""
    return _state()[1]


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def lstm_forward(lib: ctypes.CDLL, acts: Tensor, wt: Tensor, ss: Tensor, cs: Tensor, ys: Tensor,
                 peephole: Tensor | None) -> None:
    """LSTMSequence's time loop: acts [T, batch, 4h] in: the scaled U x_t + b, out: i, f, g, o; ss/ys
    [T+1, batch, h] with s_0/y_0 set, cs [T, batch, h]; wt [h, 4h] the scaled W^T. All contiguous."""
    steps, batch, h4 = acts.shape
    h = h4 // 4
    a_t, ys_t = acts.unbind(0), ys.unbind(0)
    peep = None if peephole is None else peephole.contiguous()
    a0, s0, c0, y0, pp = acts.data_ptr(), ss.data_ptr(), cs.data_ptr(), ys.data_ptr(), _ptr(peep)
    n4, n = batch * h4 * _F32, batch * h * _F32  # bytes per step
    # The step's [batch, h] x [h, 4h] matmul: oneDNN with W packed once per sequence where it runs
    # (kernels.py: ~15% faster than MKL's addmm_ at two threads, the same at one), the kernel adding
    # U x_t + b to it; else addmm_ in place.
    packed = onednn_pack(wt.t().contiguous(), batch) if onednn_linear_ok(wt) else None
    threads = torch.get_num_threads()  # the kernel's team: torch's setting, whatever this thread's OpenMP one
    for t in range(steps):
        if packed is not None:
            rec = onednn_linear(ys_t[t], packed)  # [batch, 4h]: W y_{t-1}
            lib.lstm_step_forward(a0 + t * n4, rec.data_ptr(), a0 + t * n4, s0 + t * n, s0 + (t + 1) * n,
                                  c0 + t * n, y0 + (t + 1) * n, pp, batch, h, threads)
        else:
            a_t[t].addmm_(ys_t[t], wt)  # [batch, 4h] pre-activations: U x_t + b + W y_{t-1}
            lib.lstm_step_forward(a0 + t * n4, None, a0 + t * n4, s0 + t * n, s0 + (t + 1) * n, c0 + t * n,
                                  y0 + (t + 1) * n, pp, batch, h, threads)


def lstm_backward(lib: ctypes.CDLL, acts: Tensor, ss: Tensor, cs: Tensor, d_ys: Tensor | None,
                  d_y_last: Tensor | None, ds: Tensor, d_pre: Tensor, w: Tensor, peephole: Tensor | None,
                  d_peep: Tensor | None) -> None:
    """BPTT over LSTMSequence's saved tensors: fills d_pre [T, batch, 4h]; ds [batch, h] (contiguous,
    owned) enters as the grad wrt s_T and leaves as the one wrt s_0; d_peep [3, h] accumulates."""
    steps, batch, h4 = acts.shape
    h = h4 // 4
    peep = None if peephole is None else peephole.contiguous()
    dp_t = d_pre.unbind(0)
    # The grad from above copied once into one block if it is not one (a loss summed over the outputs hands
    # an expanded tensor): the kernel reads each step's rows, and a copy per step cost ~5 ms a sequence.
    d_ys_t = [None] * steps if d_ys is None else d_ys.contiguous().unbind(0)
    a0, s0, c0, dp0, ds0 = acts.data_ptr(), ss.data_ptr(), cs.data_ptr(), d_pre.data_ptr(), ds.data_ptr()
    pp, dpk = _ptr(peep), _ptr(d_peep)
    n4, n = batch * h4 * _F32, batch * h * _F32
    packed = onednn_pack(w.t().contiguous(), batch) if onednn_linear_ok(w) else None
    threads = torch.get_num_threads()
    for t in range(steps - 1, -1, -1):
        d_out = None  # the grad from above, when the kernel adds it
        if t == steps - 1:
            dy = grad_at_last_step(d_y_last, d_ys_t[t], ds)
        elif packed is not None:  # d_pre_{t+1} W through oneDNN, as in lstm_forward
            dy = onednn_linear(dp_t[t + 1], packed)
            d_out = d_ys_t[t]
        else:
            dy = grad_from_above_and_next(d_ys_t[t], dp_t[t + 1], w)  # dy_t = d_out_t + d_pre_{t+1} W
        dy = dy.contiguous()
        lib.lstm_step_backward(a0 + t * n4, s0 + t * n, s0 + (t + 1) * n, c0 + t * n, dy.data_ptr(), _ptr(d_out),
                               ds0, dp0 + t * n4, pp, dpk, batch, h, threads)
