"""Recurrent cells vs torch's own nn.RNN / nn.LSTM (copied weights) and vs the peephole equations."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lightning_modules.recurrent.cells import (
    CELLS,
    ElmanCell,
    ElmanNet,
    LSTMCell,
    PeepholeLSTMCell,
    StackedRNN,
    detach_state,
)
from tests.conftest import copy_from_torch

TOL = dict(atol=1e-5, rtol=1e-5)
B, T, IN, H = 3, 7, 5, 4


def _inputs(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, IN, dtype=torch.float64, generator=g, requires_grad=True)
    w_out = torch.randn(B, T, H, dtype=torch.float64, generator=g)  # random linear functional
    return x, w_out


def _grad_pairs(ours: StackedRNN, ref: nn.RNNBase) -> list[tuple[str, Tensor, Tensor]]:
    pairs = []
    for k, layer in enumerate(ours.layers):
        pairs.append((f"weight_ih_l{k}", layer.weight_ih.grad, getattr(ref, f"weight_ih_l{k}").grad))
        pairs.append((f"weight_hh_l{k}", layer.weight_hh.grad, getattr(ref, f"weight_hh_l{k}").grad))
        # Our single bias is the sum of torch's two, so its grad equals either one's.
        pairs.append((f"bias_l{k}", layer.bias.grad, getattr(ref, f"bias_ih_l{k}").grad))
        pairs.append((f"bias_hh_l{k}", layer.bias.grad, getattr(ref, f"bias_hh_l{k}").grad))
    return pairs


@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_matches_torch(cell: str, num_layers: int) -> None:
    torch.manual_seed(num_layers)
    if cell == "elman":
        ref = nn.RNN(IN, H, num_layers=num_layers, nonlinearity="tanh", batch_first=True)
    else:
        ref = nn.LSTM(IN, H, num_layers=num_layers, batch_first=True)
    ref = ref.double()
    ours = StackedRNN(cell, IN, H, num_layers=num_layers).double()
    copy_from_torch(ours, ref)

    x, w_out = _inputs()
    x_ref = x.detach().clone().requires_grad_(True)
    y, state = ours(x)
    y_ref, state_ref = ref(x_ref)
    torch.testing.assert_close(y, y_ref, **TOL)
    for k in range(num_layers):
        if cell == "elman":
            torch.testing.assert_close(state[k], state_ref[k], **TOL)
        else:
            torch.testing.assert_close(state[k][0], state_ref[0][k], **TOL)  # y_T (h_n)
            torch.testing.assert_close(state[k][1], state_ref[1][k], **TOL)  # s_T (c_n)

    (y * w_out).sum().backward()
    (y_ref * w_out).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, **TOL)
    for name, g, g_ref in _grad_pairs(ours, ref):
        assert g is not None, name
        torch.testing.assert_close(g, g_ref, **TOL, msg=name)


def _peephole_reference(x: Tensor, U: Tensor, W: Tensor, b: Tensor, P: Tensor) -> Tensor:
    """Direct transcription of the Gers & Schmidhuber equations, one gate at a time."""
    h = W.shape[1]
    Ui, Uf, Ug, Uo = U.split(h)
    Wi, Wf, Wg, Wo = W.split(h)
    bi, bf, bg, bo = b.split(h)
    pi, pf, po = P
    y = x.new_zeros(x.shape[0], h)
    s = x.new_zeros(x.shape[0], h)
    outs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        f = torch.sigmoid(xt @ Uf.T + y @ Wf.T + pf * s + bf)
        i = torch.sigmoid(xt @ Ui.T + y @ Wi.T + pi * s + bi)
        g = torch.tanh(xt @ Ug.T + y @ Wg.T + bg)
        s = s * f + g * i
        o = torch.sigmoid(xt @ Uo.T + y @ Wo.T + po * s + bo)
        y = torch.tanh(s) * o
        outs.append(y)
    return torch.stack(outs, 1)


def test_peephole_matches_equations() -> None:
    torch.manual_seed(0)
    ours = StackedRNN("peephole", IN, H).double()
    cell = ours.layers[0]
    assert cell.peephole.abs().sum() > 0  # non-trivial peepholes so the test means something
    own_params = (cell.weight_ih, cell.weight_hh, cell.bias, cell.peephole)
    params = [p.detach().clone().requires_grad_(True) for p in own_params]
    x, w_out = _inputs(1)
    x_ref = x.detach().clone().requires_grad_(True)

    y, _ = ours(x)
    y_ref = _peephole_reference(x_ref, *params)
    torch.testing.assert_close(y, y_ref, **TOL)
    (y * w_out).sum().backward()
    (y_ref * w_out).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, **TOL)
    for p, p_ref in zip(own_params, params):
        torch.testing.assert_close(p.grad, p_ref.grad, **TOL)


def test_peephole_zero_equals_lstm() -> None:
    torch.manual_seed(0)
    peep = StackedRNN("peephole", IN, H, num_layers=2).double()
    lstm = StackedRNN("lstm", IN, H, num_layers=2).double()
    with torch.no_grad():
        for lp, ll in zip(peep.layers, lstm.layers):
            lp.peephole.zero_()
            for name in ("weight_ih", "weight_hh", "bias"):
                getattr(ll, name).copy_(getattr(lp, name))
    x, _ = _inputs(2)
    torch.testing.assert_close(peep(x)[0], lstm(x)[0], **TOL)
    assert PeepholeLSTMCell(IN, H, peephole_scale=0.0).peephole.abs().sum() == 0


def test_cell_forward_equals_step() -> None:
    torch.manual_seed(0)
    for name, cls in CELLS.items():
        cell = cls(IN, H)
        x = torch.randn(B, IN)
        y, state = cell(x)
        y2, _ = cell.step(x @ cell.weight_ih.T + cell.bias, cell.init_state(B, x.device, x.dtype))
        torch.testing.assert_close(y, y2, msg=name)
        assert y.shape == (B, H)
        assert cell.n_gates == (1 if name == "elman" else 4)
        assert cell.weight_ih.shape == (cell.n_gates * H, IN)
        assert cell.weight_hh.shape == (cell.n_gates * H, H)


@pytest.mark.parametrize("cls", [LSTMCell, PeepholeLSTMCell])
def test_forget_bias_sets_only_forget_slice(cls: type) -> None:
    torch.manual_seed(0)
    base = cls(IN, H).bias.detach().clone()
    torch.manual_seed(0)
    shifted = cls(IN, H, forget_bias=1.0).bias.detach()
    diff = shifted - base
    expected = torch.zeros(4 * H)
    expected[H:2 * H] = 1.0  # gate order i, f, g, o
    torch.testing.assert_close(diff, expected)


def test_learn_s0_receives_grad() -> None:
    for cell in ("elman", "lstm"):
        rnn = StackedRNN(cell, IN, H, num_layers=2, learn_s0=True)
        n_state = 1 if cell == "elman" else 2
        assert len(list(rnn.s0)) == 2 * n_state
        y, _ = rnn(torch.randn(B, T, IN))
        y.sum().backward()
        for p in rnn.s0:
            assert p.grad is not None and p.grad.abs().sum() > 0
    # Default s_0 is fixed zeros, not a parameter.
    rnn = StackedRNN("lstm", IN, H)
    assert all(not torch.is_tensor(t) or not t.requires_grad for st in rnn.initial_state(2) for t in st)


def test_dropout_train_vs_eval() -> None:
    torch.manual_seed(0)
    rnn = StackedRNN("lstm", IN, H, num_layers=2, dropout=0.5)
    x = torch.randn(B, T, IN)
    rnn.eval()
    torch.testing.assert_close(rnn(x)[0], rnn(x)[0])
    rnn.train()
    assert not torch.allclose(rnn(x)[0], rnn(x)[0])


def test_detach_state_cuts_graph() -> None:
    rnn = StackedRNN("lstm", IN, H, num_layers=2)
    _, state = rnn(torch.randn(B, T, IN))
    assert state[0][0].requires_grad
    det = detach_state(state)
    assert isinstance(det, list) and isinstance(det[0], tuple)
    assert all(not t.requires_grad and t.grad_fn is None for st in det for t in st)
    y, _ = rnn(torch.randn(B, T, IN), det)  # continues from the detached state (truncated BPTT)
    y.sum().backward()


def test_elman_net_outputs() -> None:
    torch.manual_seed(0)
    x = torch.randn(B, T, IN)
    net = ElmanNet(IN, H, 6, output_fn="softmax", num_layers=2)
    out = net(x)
    assert out.shape == (B, T, 6)
    torch.testing.assert_close(out.sum(-1), torch.ones(B, T))

    net = ElmanNet(IN, H, 6, output_fn="step").eval()
    assert set(net(x).unique().tolist()) <= {0.0, 1.0}
    net.train()
    out = net(x)
    out.sum().backward()  # sigmoid in training so gradients exist
    assert net.readout.weight.grad.abs().sum() > 0
    assert ((out > 0) & (out < 1)).all()


@pytest.mark.parametrize(
    ("make", "word"),
    [
        (lambda: ElmanCell(IN, -3), "hidden_size must be a positive integer, got -3"),
        (lambda: LSTMCell(0, H), "input_size"),
        (lambda: StackedRNN("gru", IN, H), "cell"),
        (lambda: StackedRNN("lstm", IN, H, num_layers=0), "num_layers"),
        (lambda: StackedRNN("lstm", IN, H, dropout=1.0), "dropout"),
        (lambda: StackedRNN("lstm", IN, H, dropout=-0.1), "dropout"),
        (lambda: ElmanNet(IN, H, 2, output_fn="relu"), "output_fn"),
        (lambda: ElmanNet(IN, H, 0), "output_size"),
    ],
)
def test_bad_args(make, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        make()


def test_bad_input_shape() -> None:
    rnn = StackedRNN("elman", IN, H, num_layers=2)
    with pytest.raises(ValueError, match="x must be"):
        rnn(torch.randn(B, T, IN + 1))
    with pytest.raises(ValueError, match="state"):
        rnn(torch.randn(B, T, IN), rnn.initial_state(B)[:1])
