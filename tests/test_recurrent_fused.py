"""The fused whole-sequence path of StackedRNN vs its per-step autograd path and vs torch's nn.RNN / nn.LSTM."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import Tensor, nn

import lightning_modules.recurrent.fused as rf
import lightning_modules.recurrent.kernels as rk
from lightning_modules.recurrent.cells import StackedRNN, detach_state
from lightning_modules.recurrent.fused import ElmanSequence, LSTMSequence
from tests.conftest import copy_from_torch

TOL64 = dict(atol=1e-8, rtol=1e-8)
B, T, IN, H = 3, 7, 5, 4
CELLS = ["elman", "lstm", "peephole"]


def _pair(cell: str, num_layers: int, **kw) -> tuple[StackedRNN, StackedRNN]:
    """(fused, reference) with identical float64 parameters; learned s_0 made non-zero so its grads mean something."""
    torch.manual_seed(num_layers)
    fused = StackedRNN(cell, IN, H, num_layers=num_layers, **kw).double()
    if fused.s0 is not None:
        with torch.no_grad():
            for p in fused.s0:
                p.normal_()
    ref = StackedRNN(cell, IN, H, num_layers=num_layers, fused=False, **kw).double()
    ref.load_state_dict(fused.state_dict())
    assert fused.fused and not ref.fused
    return fused, ref


def _flat(state: list) -> list[Tensor]:
    return [t for st in state for t in (st if isinstance(st, tuple) else (st,))]


def _loss(y: Tensor, state: list, seed: int = 0) -> Tensor:
    """A random linear functional of the outputs plus a non-linear one of the final states (all grads non-trivial)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(y.shape, dtype=y.dtype, generator=g)
    return (y * w).sum() + sum((s.sin() * (k + 1)).sum() for k, s in enumerate(_flat(state)))


def _run(model: StackedRNN, x: Tensor, state: list | None = None) -> tuple[Tensor, list, list[Tensor]]:
    """Outputs, final state, and grads of [x, *initial state tensors, *parameters]."""
    x = x.detach().clone().requires_grad_(True)
    leaves = [x]
    if state is not None:
        state = [tuple(t.detach().clone().requires_grad_(True) for t in st) if isinstance(st, tuple)
                 else st.detach().clone().requires_grad_(True) for st in state]
        leaves += _flat(state)
    params = list(model.parameters())
    y, final = model(x, state)
    grads = torch.autograd.grad(_loss(y, final), leaves + params)
    return y, final, list(grads)


def _random_state(model: StackedRNN, seed: int = 5) -> list:
    g = torch.Generator().manual_seed(seed)
    n_state = model.layers[0].n_state
    states = [tuple(torch.randn(B, H, dtype=torch.float64, generator=g) for _ in range(n_state))
              for _ in range(model.num_layers)]
    return [st[0] if n_state == 1 else st for st in states]


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("learn_s0", [False, True])
def test_fused_matches_reference_path(cell: str, num_layers: int, learn_s0: bool) -> None:
    fused, ref = _pair(cell, num_layers, learn_s0=learn_s0, forget_bias=1.0 if cell != "elman" else 0.0)
    x = torch.randn(B, T, IN, dtype=torch.float64)
    y, fin, grads = _run(fused, x)
    y_r, fin_r, grads_r = _run(ref, x)
    torch.testing.assert_close(y, y_r, **TOL64)
    for a, b in zip(_flat(fin), _flat(fin_r), strict=True):
        torch.testing.assert_close(a, b, **TOL64)
    names = ["x"] + [n for n, _ in fused.named_parameters()]
    for name, g, g_r in zip(names, grads, grads_r, strict=True):
        torch.testing.assert_close(g, g_r, **TOL64, msg=name)


def _assert_same_as_reference(fused: object, ref: object, x: torch.Tensor) -> None:
    """Outputs, final states and every gradient (inputs, weights, an explicit initial state) equal the
    per-step reference path's."""
    state = _random_state(fused)
    y, fin, grads = _run(fused, x, state)
    y_r, fin_r, grads_r = _run(ref, x, state)
    torch.testing.assert_close(y, y_r, **TOL64)
    for a, b in zip(_flat(fin) + grads, _flat(fin_r) + grads_r, strict=True):
        torch.testing.assert_close(a, b, **TOL64)


@pytest.mark.parametrize("cell", CELLS)
def test_fused_given_state_and_edge_lengths(cell: str) -> None:
    """Explicit initial states requiring grad; T=1 (no later steps for the big dW matmul) and bias=False."""
    for steps, bias in ((1, True), (T, False)):
        fused, ref = _pair(cell, 2, bias=bias)
        _assert_same_as_reference(fused, ref, torch.randn(B, steps, IN, dtype=torch.float64))


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_fused_matches_torch(cell: str, num_layers: int) -> None:
    torch.manual_seed(num_layers)
    if cell == "elman":
        ref = nn.RNN(IN, H, num_layers=num_layers, nonlinearity="tanh", batch_first=True).double()
    else:
        ref = nn.LSTM(IN, H, num_layers=num_layers, batch_first=True).double()
    ours = StackedRNN(cell, IN, H, num_layers=num_layers).double()
    copy_from_torch(ours, ref)
    x = torch.randn(B, T, IN, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    h0 = torch.randn(num_layers, B, H, dtype=torch.float64, generator=g, requires_grad=True)
    c0 = torch.randn(num_layers, B, H, dtype=torch.float64, generator=g, requires_grad=True)

    if cell == "elman":
        y, fin = ours(x, list(h0.unbind(0)))
        y_ref, hn = ref(x_ref, h0)
        fin_ref = list(hn.unbind(0))
    else:
        y, fin = ours(x, list(zip(h0.unbind(0), c0.unbind(0))))
        y_ref, (hn, cn) = ref(x_ref, (h0, c0))
        fin_ref = [(a, b) for a, b in zip(hn.unbind(0), cn.unbind(0))]
    torch.testing.assert_close(y, y_ref, **TOL64)
    for a, b in zip(_flat(fin), _flat(fin_ref), strict=True):
        torch.testing.assert_close(a, b, **TOL64)

    leaves = [x, h0] + ([c0] if cell != "elman" else [])
    ours_grads = torch.autograd.grad(_loss(y, fin), leaves + list(ours.parameters()))
    leaves_ref = [x_ref, h0] + ([c0] if cell != "elman" else [])
    ref_grads = torch.autograd.grad(_loss(y_ref, fin_ref), leaves_ref + list(ref.parameters()))
    n = len(leaves)
    for a, b in zip(ours_grads[:n], ref_grads[:n], strict=True):
        torch.testing.assert_close(a, b, **TOL64)
    ref_named = dict(zip([name for name, _ in ref.named_parameters()], ref_grads[n:]))
    for k, (d_w_ih, d_w_hh, d_b) in enumerate(zip(*[iter(ours_grads[n:])] * 3)):
        torch.testing.assert_close(d_w_ih, ref_named[f"weight_ih_l{k}"], **TOL64)
        torch.testing.assert_close(d_w_hh, ref_named[f"weight_hh_l{k}"], **TOL64)
        # Our single bias is the sum of torch's two, so its grad equals either one's.
        torch.testing.assert_close(d_b, ref_named[f"bias_ih_l{k}"], **TOL64)
        torch.testing.assert_close(d_b, ref_named[f"bias_hh_l{k}"], **TOL64)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck(cell: str) -> None:
    torch.manual_seed(0)
    b, t, i, h = 2, 3, 3, 2
    g = 1 if cell == "elman" else 4

    def p(*shape: int) -> Tensor:
        return (0.5 * torch.randn(*shape, dtype=torch.float64)).requires_grad_(True)

    x, w_ih, bias, w_hh = p(t, b, i), p(g * h, i), p(g * h), p(g * h, h)
    if cell == "elman":
        assert torch.autograd.gradcheck(ElmanSequence.apply, (x, w_ih, bias, w_hh, p(b, h)))
    else:
        peep = p(3, h) if cell == "peephole" else None
        assert torch.autograd.gradcheck(LSTMSequence.apply, (x, w_ih, bias, w_hh, p(b, h), p(b, h), peep))


@pytest.mark.parametrize("cell", CELLS)
def test_tbptt_carried_state_with_grad(cell: str) -> None:
    """Two chunks with the state carried WITH its graph equal one run over the whole sequence, grads included;
    with detach_state the second chunk's loss sends nothing into the first chunk."""
    fused, ref = _pair(cell, 2, learn_s0=True)
    x = torch.randn(B, 2 * T, IN, dtype=torch.float64)

    def chunked(model: StackedRNN, detach: bool) -> list[Tensor]:
        model.zero_grad()
        xx = x.clone().requires_grad_(True)
        y1, st = model(xx[:, :T])
        y2, st = model(xx[:, T:], detach_state(st) if detach else st)
        _loss(torch.cat([y1, y2], 1), st).backward()
        return [xx.grad] + [q.grad.clone() for q in model.parameters()]

    whole = _run(fused, x)[2]
    carried = chunked(fused, detach=False)
    for a, b in zip(whole, carried, strict=True):
        torch.testing.assert_close(a, b, **TOL64)
    for a, b in zip(chunked(fused, detach=True), chunked(ref, detach=True), strict=True):
        torch.testing.assert_close(a, b, **TOL64)


def test_float32_close_to_reference() -> None:
    """tanh is computed as 2 sigmoid(2x) - 1 in the fused path: float32 results differ only by rounding."""
    for cell in CELLS:
        torch.manual_seed(0)
        fused = StackedRNN(cell, IN, H, num_layers=2)
        ref = StackedRNN(cell, IN, H, num_layers=2, fused=False)
        ref.load_state_dict(fused.state_dict())
        x = torch.randn(B, T, IN)
        torch.testing.assert_close(fused(x)[0], ref(x)[0], atol=1e-6, rtol=1e-5)


def test_dropout_and_double_backward() -> None:
    torch.manual_seed(0)
    fused, ref = _pair("lstm", 2, dropout=0.5)
    x = torch.randn(B, T, IN, dtype=torch.float64, requires_grad=True)
    fused.eval()
    ref.eval()
    torch.testing.assert_close(fused(x)[0], ref(x)[0], **TOL64)  # dropout is off in eval
    fused.train()
    assert not torch.allclose(fused(x)[0], fused(x)[0])
    (gx,) = torch.autograd.grad(fused(x)[0].sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|does not require grad"):
        gx.sum().backward()


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("cell", ["lstm", "peephole"])
def test_backward_chunks_match_reference(cell: str, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The LSTM backward forms its local factors (and peephole grads) chunk by chunk: with chunks of 1 and of 3
    (T=7: a partial chunk first), values and grads still equal the per-step reference path."""
    monkeypatch.setattr(rf, "CHUNK", chunk)
    fused, ref = _pair(cell, 2)
    _assert_same_as_reference(fused, ref, torch.randn(B, T, IN, dtype=torch.float64))


@pytest.mark.parametrize("cell", CELLS)
def test_two_threads_match_reference(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """At two threads the matmuls and, at batch 64 and hidden 256 (past ATen's 32768-element grain), the
    LSTM's grouped gate ops run split across threads: same values and grads as the reference path."""
    monkeypatch.setattr(sys.modules[__name__], "B", 64)  # read by _pair and _random_state
    monkeypatch.setattr(sys.modules[__name__], "H", 256)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fused, ref = _pair(cell, 2)
        x = torch.randn(B, T, IN, dtype=torch.float64)
        state = _random_state(fused)
        y, fin, grads = _run(fused, x, state)
        y_r, fin_r, grads_r = _run(ref, x, state)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(y, y_r, **TOL64)
    for a, b in zip(_flat(fin) + grads, _flat(fin_r) + grads_r, strict=True):
        torch.testing.assert_close(a, b, **TOL64)


def test_matmul_dtype_follows_autocast() -> None:
    x32, w32 = torch.zeros(2, 2), torch.zeros(2, 2)
    assert rk.matmul_dtype(x32, w32) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert rk.matmul_dtype(x32, w32) == torch.bfloat16
        assert rk.matmul_dtype(x32.double(), w32.double()) == torch.float64  # autocast leaves float64 alone


@pytest.mark.parametrize("cell", CELLS)
def test_bf16_autocast_forward_backward(cell: str) -> None:
    """Under CPU bf16 autocast (Lightning's bf16-mixed) the fused path runs its matmuls in bf16 and the
    rest in float32: close to the float32 run within bf16 precision, float32 outputs and grads, all finite."""
    torch.manual_seed(0)
    model = StackedRNN(cell, 8, 16, num_layers=2)
    x = torch.randn(4, 9, 8, requires_grad=True)
    params = list(model.parameters())

    def run() -> tuple[Tensor, list[Tensor]]:
        y, fin = model(x)
        loss = (y * torch.linspace(-1, 1, y.shape[-1])).sum() + sum(s.sum() for s in _flat(fin))
        return y, list(torch.autograd.grad(loss, [x] + params))

    y32, g32 = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16, g16 = run()
    assert y16.dtype == torch.float32 and not torch.equal(y16, y32)  # the matmuls really ran in bf16
    torch.testing.assert_close(y16, y32, atol=2e-2, rtol=0.0)  # bf16 keeps ~3 significant digits
    for name, a, b in zip(["x"] + [n for n, _ in model.named_parameters()], g16, g32, strict=True):
        assert a.dtype == b.dtype and torch.isfinite(a).all(), name
        assert (a - b).norm() <= 2e-2 * b.norm(), name


@pytest.mark.parametrize("fused", [True, False])
def test_deterministic_algorithms_mode(fused: bool) -> None:
    """Nothing in either path raises under torch.use_deterministic_algorithms(True); two runs agree bit for bit."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for cell in CELLS:
            results = []
            for _ in range(2):
                torch.manual_seed(0)
                model = StackedRNN(cell, IN, H, num_layers=2, dropout=0.25, learn_s0=True, fused=fused)
                x = torch.randn(B, T, IN, requires_grad=True)
                y, fin = model(x)
                grads = torch.autograd.grad(_loss(y, fin), [x] + list(model.parameters()))
                results.append([y, *grads])
            for a, b in zip(*results, strict=True):
                assert torch.equal(a, b), cell
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
