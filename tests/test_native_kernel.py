"""The LSTM step's C kernel (lstm_step.c via native.py): same numbers as the torch-ops loop and nn.LSTM in
float32, NaN kept, ragged hidden sizes, a build cached once and shared by concurrent processes, and a
fallback with a reason where it cannot build."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from lightning_modules.recurrent import native
from lightning_modules.recurrent.cells import StackedRNN
from tests.conftest import copy_from_torch

ROOT = Path(__file__).resolve().parents[1]
# Where the kernel should build (x86-64 with AVX2/FMA and a C compiler), a failure to build fails the tests
# below instead of skipping them: CI has gcc, so a skip there would hide a broken kernel.
CAN_BUILD = (os.uname().machine == "x86_64" and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
             and shutil.which(os.environ.get("CC") or "cc") is not None)
needs_kernel = pytest.mark.skipif(not CAN_BUILD, reason="no x86-64 AVX2 CPU with a C compiler here")


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty build cache and a forgotten kernel, restored after the test."""
    monkeypatch.setenv("ARCHBENCH_NATIVE_DIR", str(tmp_path))
    native._state.cache_clear()
    yield tmp_path
    monkeypatch.undo()
    native._state.cache_clear()


def _fwd_bwd(model: nn.Module, x: Tensor, state: list | None) -> list[Tensor]:
    """Outputs, final states and the grads of x, the initial state and every parameter (float32)."""
    x = x.clone().requires_grad_(True)
    st = None if state is None else [tuple(t.clone().requires_grad_(True) for t in s) for s in state]
    y, fin = model(x, st)
    flat_fin = [t for s in fin for t in s]
    g = torch.Generator().manual_seed(3)
    loss = (y * torch.randn(y.shape, generator=g)).sum()
    loss = loss + sum((t.sin() * (k + 1)).sum() for k, t in enumerate(flat_fin))
    leaves = [x] + ([t for s in st for t in s] if st is not None else []) + list(model.parameters())
    return [y.detach(), *(t.detach() for t in flat_fin), *torch.autograd.grad(loss, leaves)]


def _without_kernel(monkeypatch: pytest.MonkeyPatch, fn):  # noqa: ANN001, ANN202
    with monkeypatch.context() as m:
        m.setattr(native, "step_kernels", lambda *tensors: None)
        return fn()


@needs_kernel
@pytest.mark.parametrize("hidden", [13, 32])  # 13: every row ends in a masked tail of 5 lanes
@pytest.mark.parametrize("cell", ["lstm", "peephole"])
def test_kernel_matches_torch_ops_loop(cell: str, hidden: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert native.step_kernels(torch.zeros(1)) is not None, native.describe()
    torch.manual_seed(0)
    model = StackedRNN(cell, 6, hidden, num_layers=2)
    if cell == "peephole":
        with torch.no_grad():
            for layer in model.layers:
                layer.peephole.normal_(0.0, 0.5)  # non-zero, so their grads and effects are exercised
    x = torch.randn(4, 23, 6)
    state = [(torch.randn(4, hidden), torch.randn(4, hidden)) for _ in range(2)]
    ours = _fwd_bwd(model, x, state)
    ops = _without_kernel(monkeypatch, lambda: _fwd_bwd(model, x, state))
    assert len(ours) == len(ops)
    for a, b in zip(ours, ops):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
    assert not torch.equal(ours[0], ops[0])  # really two code paths (they round differently)
    torch.testing.assert_close(_fwd_bwd(model, x, state)[0], ours[0], atol=0, rtol=0)  # and repeatable


@needs_kernel
def test_float32_path_matches_nn_lstm() -> None:
    """Float32 CPU, the default path (C kernel, oneDNN matmuls, fused bias) vs a float64 nn.LSTM with copied
    weights, outputs and every grad: as close as torch's own float32 LSTM gets to that oracle."""
    torch.manual_seed(1)
    ref = nn.LSTM(8, 40, num_layers=2, batch_first=True)
    ours = StackedRNN("lstm", 8, 40, num_layers=2)
    copy_from_torch(ours, ref)
    x = torch.randn(5, 50, 8)
    w = torch.randn(5, 50, 40)

    def outs_and_grads(model: nn.Module, dtype: torch.dtype) -> list[Tensor]:
        xx = x.to(dtype).requires_grad_(True)
        y = model(xx)[0]
        grads = torch.autograd.grad((y * w.to(dtype)).sum(), [xx] + [p for p in model.parameters()])
        return [t.detach().double() for t in (y, *grads)]

    got, f32 = outs_and_grads(ours, torch.float32), outs_and_grads(ref, torch.float32)
    oracle = outs_and_grads(ref.double(), torch.float64)
    # nn.LSTM's parameters per layer: w_ih, w_hh, b_ih, b_hh; ours: w_ih, w_hh, b (its grad is either bias's)
    pick = [0, 1] + [k for layer in range(2) for k in (2 + 4 * layer, 3 + 4 * layer, 4 + 4 * layer)]
    for name, a, b32, b64 in zip(["y", "x", "w_ih0", "w_hh0", "b0", "w_ih1", "w_hh1", "b1"], got,
                                 [f32[k] for k in pick], [oracle[k] for k in pick], strict=True):
        scale = float(b64.abs().max())
        err, err_torch = float((a - b64).abs().max()) / scale, float((b32 - b64).abs().max()) / scale
        assert err < 1e-5 and err < 10 * max(err_torch, 1e-7), (name, err, err_torch)


@needs_kernel
@pytest.mark.parametrize("cell", ["lstm", "peephole"])
def test_kernel_keeps_nan_and_saturates(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN in one sequence poisons that sequence from its step on and no other (a NaN guard must see it);
    huge pre-activations saturate the gates to 0/1 as torch's sigmoid does."""
    torch.manual_seed(2)
    model = StackedRNN(cell, 3, 16)
    x = torch.randn(3, 9, 3)
    x[1, 4, 0] = float("nan")
    y = model(x)[0].detach()
    assert y[1, 4:].isnan().all() and not y[1, :4].isnan().any()
    assert not y[[0, 2]].isnan().any()
    big = torch.randn(3, 9, 3) * 1e4
    torch.testing.assert_close(model(big)[0], _without_kernel(monkeypatch, lambda: model(big)[0]), atol=1e-5,
                               rtol=1e-5)


@needs_kernel
@pytest.mark.slow  # two fresh interpreters importing torch: ~12 s on 2 cores
def test_build_is_cached_and_shared_by_concurrent_processes(fresh_state: Path) -> None:
    code = ("from lightning_modules.recurrent import native; import torch; "
            "print(native.describe()); assert native.step_kernels(torch.zeros(1)) is not None")
    env = {**os.environ, "ARCHBENCH_NATIVE_DIR": str(fresh_state)}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert out.startswith("C step kernel"), out
    assert [p.suffix for p in fresh_state.iterdir()] == [".so"]  # one library, no half-written leftovers
    assert native.describe().startswith("C step kernel")  # this process loads the cached one


NO_CC = "no C compiler '/nonexistent/cc' on PATH (install gcc or set CC)"


@pytest.mark.parametrize("env, reason", [({"ARCHBENCH_NATIVE": "0"}, "turned off by ARCHBENCH_NATIVE=0"),
                                         ({"CC": "/nonexistent/cc"}, NO_CC)])
def test_unavailable_falls_back_to_torch_ops_and_says_why(env: dict, reason: str, fresh_state: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert native.step_kernels(torch.zeros(1)) is None
    assert native.describe() == f"torch ops ({reason})"
    torch.manual_seed(0)
    y, _ = StackedRNN("lstm", 3, 8)(torch.randn(2, 5, 3))
    assert y.shape == (2, 5, 8) and y.isfinite().all()
    assert not list(fresh_state.iterdir())  # nothing was built


@needs_kernel
def test_a_failed_build_is_reported_not_raised(fresh_state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = fresh_state / "broken.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(native, "SOURCE", bad)
    assert native.step_kernels(torch.zeros(1)) is None
    assert native.describe().startswith("torch ops (building broken.c with ")
    assert [p.name for p in fresh_state.iterdir()] == ["broken.c"]  # no partial library left behind


@needs_kernel
@pytest.mark.slow  # a fresh interpreter importing torch (this one has the library mapped already)
def test_a_damaged_cached_library_is_rebuilt(fresh_state: Path) -> None:
    assert native.describe().startswith("C step kernel")
    (lib,) = fresh_state.iterdir()
    lib.unlink()  # a new file: overwriting the one this process has mapped would crash it
    lib.write_bytes(b"\x7fELF truncated")  # as a full disk or a broken copy would leave it
    code = "from lightning_modules.recurrent import native; print(native.describe())"
    env = {**os.environ, "ARCHBENCH_NATIVE_DIR": str(fresh_state)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("C step kernel"), done.stdout
    assert [p.name for p in fresh_state.iterdir()] == [lib.name] and lib.stat().st_size > 1000


def test_only_cpu_float32_uses_the_kernel() -> None:
    assert native.step_kernels(torch.zeros(1, dtype=torch.float64)) is None
    assert native.step_kernels(torch.zeros(1), torch.zeros(1, dtype=torch.bfloat16)) is None


def _kernel_outputs(lib: ctypes.CDLL, batch: int, hidden: int, threads: int) -> list[Tensor]:
    """One forward and one backward step of the kernel (peepholes on, both grads from above) on fixed inputs."""
    g = torch.Generator().manual_seed(batch * hidden)
    pre, rec = torch.randn(batch, 4 * hidden, generator=g), torch.randn(batch, 4 * hidden, generator=g)
    s_prev, peep = torch.randn(batch, hidden, generator=g), torch.randn(3, hidden, generator=g)
    dy, dy2, ds = (torch.randn(batch, hidden, generator=g) for _ in range(3))
    d_peep = torch.randn(3, hidden, generator=g)
    act, s, c, y, d_pre = (torch.empty(batch, k * hidden) for k in (4, 1, 1, 1, 4))
    lib.lstm_step_forward(pre.data_ptr(), rec.data_ptr(), act.data_ptr(), s_prev.data_ptr(), s.data_ptr(),
                          c.data_ptr(), y.data_ptr(), peep.data_ptr(), batch, hidden, threads)
    lib.lstm_step_backward(act.data_ptr(), s_prev.data_ptr(), s.data_ptr(), c.data_ptr(), dy.data_ptr(),
                           dy2.data_ptr(), ds.data_ptr(), d_pre.data_ptr(), peep.data_ptr(), d_peep.data_ptr(),
                           batch, hidden, threads)
    return [act, s, c, y, ds, d_pre, d_peep]


def _is_gcc() -> bool:
    done = subprocess.run([os.environ.get("CC") or "cc", "--version"], capture_output=True, text=True)
    return "gcc" in done.stdout.lower() or "free software foundation" in done.stdout.lower()


@needs_kernel
@pytest.mark.parametrize("batch, hidden", [(64, 256), (96, 131)])  # over the size that splits; 131: ragged rows
def test_a_step_spread_over_threads_gives_the_numbers_of_one(batch: int, hidden: int) -> None:
    lib = native.step_kernels(torch.zeros(1))
    assert lib is not None, native.describe()
    if not lib.lstm_step_openmp():
        assert not _is_gcc(), "gcc has OpenMP: the kernel should have been built threaded"
        pytest.skip(f"built without OpenMP: {native.describe()}")
    assert "torch's threads" in native.describe()
    one = _kernel_outputs(lib, batch, hidden, threads=1)
    assert lib.lstm_step_last_team() == 1
    two = _kernel_outputs(lib, batch, hidden, threads=2)
    assert lib.lstm_step_last_team() == 2  # the step really ran on two threads
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)  # bit for bit, the peephole grads (a sum over the rows) too
    _kernel_outputs(lib, 4, 8, threads=2)
    assert lib.lstm_step_last_team() == 1  # a small step runs inline


@needs_kernel
def test_the_layers_take_torchs_thread_count_whatever_the_threads_openmp_setting() -> None:
    """torch.set_num_threads(1) in one thread leaves another thread's OpenMP setting at the default; the
    kernel follows torch's count, passed in, so a one-thread job stays on one thread."""
    import threading

    model = StackedRNN("peephole", 8, 256, num_layers=1)
    x = torch.randn(64, 3, 8)
    lib = native.step_kernels(torch.zeros(1))
    teams: list[int] = []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        worker = threading.Thread(target=lambda: (model(x)[0].sum().backward(), teams.append(lib.lstm_step_last_team())))
        worker.start()
        worker.join()
    finally:
        torch.set_num_threads(before)
    assert teams == [1]


@needs_kernel
def test_a_compiler_without_openmp_still_builds_the_one_thread_kernel(fresh_state: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "OPENMP", "-fno-such-openmp-flag")  # the compiler refuses it, as one without OpenMP
    lib = native.step_kernels(torch.zeros(1))
    assert lib is not None and lib.lstm_step_openmp() == 0
    assert native.describe().endswith("one thread)"), native.describe()
    one = _kernel_outputs(lib, 64, 256, threads=2)
    assert lib.lstm_step_last_team() == 1 and one[5].isfinite().all()
    assert len(list(fresh_state.glob("*.so"))) == 1  # cached under its own name, beside no threaded one
