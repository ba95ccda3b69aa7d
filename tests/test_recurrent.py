"""Oracles for every path the recurrent layers train on (float64; outputs, final states and the gradients of
the input, the initial state and every parameter):
- the equations (cells.py, impl="equations") against torch's nn.LSTM / nn.RNN with copied weights;
- torch's kernel as StackedRNN runs it (impl="torch", the default for these cells) against a separate
  nn.LSTM / nn.RNN, so the weight layout, forget bias, states and packing are checked, not assumed;
- the peephole LSTM (equations only) against its equations written out below, one sequence at a time.
Depth 1 to 3, bidirectional, variable lengths, given initial states, learned s_0 and truncated BPTT.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.recurrent.cells import CELLS, RecurrentCell, TorchKernel, detach_state
from lightning_modules.recurrent.stack import StackedRNN
from tests.conftest import copy_from_torch

TOL = {"atol": 1e-10, "rtol": 1e-9}  # float64: the paths differ only in the order of additions
B, T, IN, H = 3, 7, 5, 4
LENGTHS = torch.tensor([7, 3, 5])  # unsorted, so packing has to reorder the rows
IMPLS = ["equations", "torch"]
# (num_layers, bidirectional, lengths)
SHAPES = [(1, False, None), (3, False, None), (2, False, LENGTHS), (1, True, None), (3, True, LENGTHS)]


def _torch_rnn(cell: str, num_layers: int, bidirectional: bool = False, bias: bool = True) -> nn.RNNBase:
    """The oracle, named here rather than taken from the cell's declaration."""
    kw = {"num_layers": num_layers, "bias": bias, "batch_first": True, "bidirectional": bidirectional}
    rnn = nn.RNN(IN, H, nonlinearity="tanh", **kw) if cell == "elman" else nn.LSTM(IN, H, **kw)
    return rnn.double()


def _pair(cell: str, impl: str, num_layers: int, bidirectional: bool = False, **kw) -> tuple[StackedRNN, nn.RNNBase]:
    torch.manual_seed(num_layers)
    ref = _torch_rnn(cell, num_layers, bidirectional, kw.get("bias", True))
    ours = StackedRNN(cell, IN, H, num_layers, bidirectional=bidirectional, impl=impl, **kw).double()
    assert ours.impl == impl
    copy_from_torch(ours, ref)
    return ours, ref


def _random_hx(n_state: int, count: int, seed: int = 5) -> list[Tensor]:
    """torch's initial state: h0 (and c0), each [layers*directions, B, H]."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(count, B, H, dtype=torch.float64, generator=g) for _ in range(n_state)]


def _as_list(hx: list[Tensor]) -> list:
    """torch's (h, c) [layers*directions, B, H] as StackedRNN's list of per-layer states (views: grads flow back)."""
    return list(hx[0].unbind(0)) if len(hx) == 1 else list(zip(hx[0].unbind(0), hx[1].unbind(0)))


def _flat(state: list) -> list[Tensor]:
    return [t for st in state for t in (st if isinstance(st, tuple) else (st,))]


def _loss(y: Tensor, final: list[Tensor], seed: int = 0) -> Tensor:
    """A random linear functional of the outputs plus a non-linear one of the final states: every grad is non-trivial."""
    g = torch.Generator().manual_seed(seed)
    return (y * torch.randn(y.shape, dtype=y.dtype, generator=g)).sum() + sum(
        (s.sin() * (k + 1)).sum() for k, s in enumerate(final))


def _torch_run(ref: nn.RNNBase, x: Tensor, hx: list[Tensor] | None, lengths: Tensor | None) -> tuple[Tensor, list[Tensor]]:
    """nn.LSTM / nn.RNN on a batch (packed where rows are padded): outputs and [h_n] or [h_n, c_n]."""
    h = None if hx is None else (hx[0] if len(hx) == 1 else tuple(hx))
    if lengths is None:
        y, hn = ref(x, h)
    else:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        y, hn = ref(packed, h)
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
    return y, [hn] if isinstance(hn, Tensor) else list(hn)


def _flat_torch(hn: list[Tensor]) -> list[Tensor]:
    """torch's final states in the order of _flat(ours): layer by layer (and direction), h then c."""
    return [h[j] for j in range(hn[0].shape[0]) for h in hn]


def _ref_params(ours: StackedRNN, ref: nn.RNNBase) -> list[Tensor]:
    """torch's parameters in the order of ours.parameters()."""
    return [getattr(ref, f"{name}_l{k}" + ("_reverse" if d else ""))
            for k in range(ours.num_layers) for d in range(ours.directions)
            for name in ours.layer_parameters(k, d)]


def _assert_all_close(ours: list[Tensor], theirs: list[Tensor], names: list[str]) -> None:
    assert len(ours) == len(theirs) == len(names)
    for name, a, b in zip(names, ours, theirs):
        assert a is not None and b is not None, name
        torch.testing.assert_close(a, b, **TOL, msg=name)


def _compare(ours: StackedRNN, ref: nn.RNNBase, lengths: Tensor | None, given_state: bool) -> None:
    x = torch.randn(B, T, IN, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x1, x2 = (x.clone().requires_grad_(True) for _ in range(2))
    count = ours.num_layers * ours.directions
    hx1 = hx2 = None
    if given_state:
        hx1 = [h.requires_grad_(True) for h in _random_hx(ours.cell_cls.n_state, count)]
        hx2 = [h.requires_grad_(True) for h in _random_hx(ours.cell_cls.n_state, count)]
    y, final = ours(x1, None if hx1 is None else _as_list(hx1), lengths=lengths)
    y_ref, hn = _torch_run(ref, x2, hx2, lengths)
    final_ref = _flat_torch(hn)
    _assert_all_close([y, *_flat(final)], [y_ref, *final_ref], ["outputs"] + [f"final {k}" for k in range(len(final_ref))])
    ours_leaves = [x1, *(hx1 or [])] + list(ours.parameters())
    ref_leaves = [x2, *(hx2 or [])] + _ref_params(ours, ref)
    names = ["x", *(["h0", "c0"][:len(hx1 or [])])] + [n for n, _ in ours.named_parameters()]
    grads = torch.autograd.grad(_loss(y, _flat(final)), ours_leaves)
    grads_ref = torch.autograd.grad(_loss(y_ref, final_ref), ref_leaves)
    _assert_all_close(list(grads), list(grads_ref), names)


@pytest.mark.parametrize(("num_layers", "bidirectional", "lengths"), SHAPES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_matches_torch(cell: str, impl: str, num_layers: int, bidirectional: bool, lengths: Tensor | None) -> None:
    ours, ref = _pair(cell, impl, num_layers, bidirectional)
    _compare(ours, ref, lengths, given_state=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_matches_torch_zero_state_and_no_bias(cell: str, impl: str) -> None:
    for bias in (True, False):
        ours, ref = _pair(cell, impl, 2, bias=bias)
        _compare(ours, ref, None, given_state=False)


class GRUCell(RecurrentCell):
    """torch's GRU from its documented equations (gates r, z, n), as a user would add a cell that has a kernel."""

    n_gates = 3
    n_state = 1
    kernel = TorchKernel(nn.GRU)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)  # b_hn stays inside r ⊙ (W_hn h + b_hn)

    def step(self, xw_t: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        xr, xz, xn = xw_t.chunk(3, dim=1)
        hr, hz, hn = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        return h, h


@pytest.mark.parametrize("impl", IMPLS)
def test_a_new_cell_declaring_its_kernel_runs_either_path(impl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GRU (one state tensor, but not Elman) declared with nn.GRU: both paths equal nn.GRU, nothing guessed."""
    monkeypatch.setitem(CELLS, "gru", GRUCell)
    torch.manual_seed(0)
    ref = nn.GRU(IN, H, num_layers=2, bidirectional=True, batch_first=True).double()
    ours = StackedRNN("gru", IN, H, 2, bidirectional=True, impl=impl).double()
    assert isinstance(ours.kernel, nn.GRU) if impl == "torch" else isinstance(ours.layers[0], GRUCell)
    copy_from_torch(ours, ref)
    _compare(ours, ref, LENGTHS, given_state=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_truncated_bptt_matches_torch(cell: str, impl: str) -> None:
    """Three chunks, the state carried across each cut but detached (char_lm's chunk_losses): after every chunk's
    backward the accumulated grads, and at the end the final state, equal torch's run the same way."""
    ours, ref = _pair(cell, impl, 3)
    x = torch.randn(B, 14, IN, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    names = [n for n, _ in ours.named_parameters()]
    state, hn = None, None
    for j, xc in enumerate(x.split(5, dim=1)):
        y, state = ours(xc, state)
        y_ref, hn = _torch_run(ref, xc, hn, None)
        _loss(y, _flat(state), seed=j).backward()
        _loss(y_ref, _flat_torch(hn), seed=j).backward()
        _assert_all_close([p.grad for p in ours.parameters()], [p.grad for p in _ref_params(ours, ref)], names)
        state, hn = detach_state(state), [h.detach() for h in hn]
    _assert_all_close(_flat(state), _flat_torch(hn), ["final"] * len(_flat(state)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_learned_s0_matches_torch_given_that_state(cell: str, impl: str) -> None:
    """learn_s0: torch started from the same vectors expanded over the batch; s_0's grad is their batch sum."""
    ours, ref = _pair(cell, impl, 2, bidirectional=True, learn_s0=True)
    with torch.no_grad():
        for p in ours.s0:
            p.normal_()
    n_state, count = (1 if cell == "elman" else 2), 4  # 2 layers x 2 directions
    # s0 per state tensor (h, c) as torch's [layers*directions, H]; ours holds them layer-direction major.
    s0 = [torch.stack([p.detach() for p in list(ours.s0)[i::n_state]]).requires_grad_(True) for i in range(n_state)]
    x = torch.randn(B, T, IN, dtype=torch.float64)
    y, final = ours(x)
    y_ref, hn = _torch_run(ref, x, [s.unsqueeze(1).expand(-1, B, -1) for s in s0], None)
    _assert_all_close([y, *_flat(final)], [y_ref, *_flat_torch(hn)], ["outputs"] + ["final"] * count * n_state)
    grads = torch.autograd.grad(_loss(y, _flat(final)), list(ours.s0))
    grads_ref = torch.autograd.grad(_loss(y_ref, _flat_torch(hn)), s0)
    by_order = [grads_ref[i][j] for j in range(count) for i in range(n_state)]
    _assert_all_close(list(grads), by_order, [f"s0.{j}" for j in range(len(grads))])


@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_float32_equations_close_to_the_kernel(cell: str) -> None:
    """In float32 the kernel is oneDNN's (CPU): the equations agree with it to float32 rounding."""
    torch.manual_seed(0)
    kernel = StackedRNN(cell, IN, 16, 2, bidirectional=True)
    eqs = StackedRNN(cell, IN, 16, 2, bidirectional=True, impl="equations")
    with torch.no_grad():  # the same names per layer, in modules of a different layout
        for k in range(2):
            for d in range(2):
                for name, p in eqs.layer_parameters(k, d).items():
                    p.copy_(kernel.layer_parameters(k, d)[name])
    x = torch.randn(B, T, IN)
    y, y_eq = kernel(x, lengths=LENGTHS)[0], eqs(x, lengths=LENGTHS)[0]
    torch.testing.assert_close(y, y_eq, atol=1e-5, rtol=1e-5)
    g = torch.autograd.grad(y.square().sum(), list(kernel.parameters()))
    g_eq = torch.autograd.grad(y_eq.square().sum(), list(eqs.parameters()))
    for a, b in zip(g, g_eq, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def _peephole_layer(x: Tensor, p: dict[str, Tensor], y: Tensor, s: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The Gers & Schmidhuber peephole LSTM written out one gate at a time, for one sequence x [t, input]
    from the state (y, s) [hidden] each: f and i see s_{t-1}, o sees the new s_t."""
    Ui, Uf, Ug, Uo = p["weight_ih"].split(H)
    Wi, Wf, Wg, Wo = p["weight_hh"].split(H)
    bi, bf, bg, bo = (p["bias_ih"] + p["bias_hh"]).split(H)
    pi, pf, po = p["peephole"]
    ys = []
    for x_t in x:
        f = torch.sigmoid(Uf @ x_t + Wf @ y + pf * s + bf)
        i = torch.sigmoid(Ui @ x_t + Wi @ y + pi * s + bi)
        g = torch.tanh(Ug @ x_t + Wg @ y + bg)
        s = s * f + g * i
        o = torch.sigmoid(Uo @ x_t + Wo @ y + po * s + bo)
        y = torch.tanh(s) * o
        ys.append(y)
    return torch.stack(ys), (y, s)


def _peephole_reference(rnn: StackedRNN, x: Tensor, state: list, n: int) -> tuple[Tensor, list]:
    """One row of a peephole stack, its first n steps only (no padding, no masks): x [T, input], state per layer
    and direction a pair of [hidden]. Layer k+1 reads both directions of layer k; the backward one reads it reversed."""
    inp, final = x[:n], []
    for k in range(rnn.num_layers):
        outs = []
        for d in range(rnn.directions):
            j = k * rnn.directions + d
            seq = inp if d == 0 else inp.flip(0)
            ys, st = _peephole_layer(seq, rnn.layer_parameters(k, d), *state[j])
            outs.append(ys if d == 0 else ys.flip(0))
            final.append(st)
        inp = torch.cat(outs, dim=-1)
    return inp, final


@pytest.mark.parametrize(("num_layers", "bidirectional", "lengths"), SHAPES)
def test_peephole_matches_its_equations(num_layers: int, bidirectional: bool, lengths: Tensor | None) -> None:
    torch.manual_seed(0)
    rnn = StackedRNN("peephole", IN, H, num_layers, bidirectional=bidirectional, forget_bias=1.0).double()
    assert rnn.impl == "equations" and all(p.abs().sum() > 0 for p in (lay.peephole for lay in rnn.layers))
    count = num_layers * rnn.directions
    x = torch.randn(B, T, IN, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x1, x2 = (x.clone().requires_grad_(True) for _ in range(2))
    hx1, hx2 = ([h.requires_grad_(True) for h in _random_hx(2, count)] for _ in range(2))
    y, final = rnn(x1, _as_list(hx1), lengths=lengths)
    params = list(rnn.parameters())
    grads = torch.autograd.grad(_loss(y, _flat(final)), [x1, *hx1, *params])

    lens = [T] * B if lengths is None else lengths.tolist()
    rows = [_peephole_reference(rnn, x2[b], [(hx2[0][j, b], hx2[1][j, b]) for j in range(count)], lens[b])
            for b in range(B)]
    y_ref = torch.stack([torch.cat([ys, ys.new_zeros(T - n, ys.shape[1])]) for (ys, _), n in zip(rows, lens)])
    final_ref = [torch.stack([rows[b][1][j][i] for b in range(B)]) for j in range(count) for i in range(2)]
    _assert_all_close([y, *_flat(final)], [y_ref, *final_ref], ["outputs"] + ["final"] * len(final_ref))
    grads_ref = torch.autograd.grad(_loss(y_ref, final_ref), [x2, *hx2, *params])
    names = ["x", "y0", "s0"] + [n for n, _ in rnn.named_parameters()]
    _assert_all_close(list(grads), list(grads_ref), names)


def test_peephole_truncated_bptt_matches_its_equations() -> None:
    """Two chunks, the state detached at the cut: the grads of the second chunk reach only its own steps."""
    torch.manual_seed(0)
    rnn = StackedRNN("peephole", IN, H, 2).double()
    x = torch.randn(B, 10, IN, dtype=torch.float64)
    _, st = rnn(x[:, :4])
    y2, _ = rnn(x[:, 4:], detach_state(st))
    grads = torch.autograd.grad(_loss(y2, []), list(rnn.parameters()))
    zero = [(torch.zeros(H, dtype=torch.float64),) * 2] * 2
    rows = []
    for b in range(B):
        _, mid = _peephole_reference(rnn, x[b], zero, 4)
        rows.append(_peephole_reference(rnn, x[b, 4:], [(y.detach(), s.detach()) for y, s in mid], 6)[0])
    torch.testing.assert_close(y2, torch.stack(rows), **TOL)
    for name, a, b in zip([n for n, _ in rnn.named_parameters()], grads,
                          torch.autograd.grad(_loss(torch.stack(rows), []), list(rnn.parameters())), strict=True):
        torch.testing.assert_close(a, b, **TOL, msg=name)
