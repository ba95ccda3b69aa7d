"""StackedRNN and the cell API around the oracles of test_recurrent.py: which path a cell runs, what a cell
declares, forget bias, learned s_0, dropout, states, lengths, one-line errors and determinism."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import Tensor, nn

from lightning_modules import MODELS
from lightning_modules.recurrent.cells import (
    CELLS,
    ElmanCell,
    LSTMCell,
    PeepholeLSTMCell,
    RecurrentCell,
    State,
    detach_state,
)
from lightning_modules.recurrent.stack import ElmanNet, StackedRNN, resolve_impl

B, T, IN, H = 3, 7, 5, 4
IMPLS = ["equations", "torch"]


def test_each_cell_declares_its_path() -> None:
    assert ElmanCell.kernel.module is nn.RNN and ElmanCell.kernel.options == {"nonlinearity": "tanh"}
    assert LSTMCell.kernel.module is nn.LSTM and PeepholeLSTMCell.kernel is None
    assert [resolve_impl(c, "auto") for c in ("elman", "lstm", "peephole")] == ["torch", "torch", "equations"]
    assert all(resolve_impl(c, "equations") == "equations" for c in CELLS)
    assert isinstance(StackedRNN("lstm", IN, H).kernel, nn.LSTM)
    assert StackedRNN("lstm", IN, H, impl="equations").kernel is None


def test_a_new_cell_without_a_kernel_runs_its_equations(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-state cell that is not Elman and declares no kernel runs its own step (never routed elsewhere), and
    asking for torch's kernel is one line."""

    class MinimalGated(RecurrentCell):  # s_t = z ⊙ s_{t-1} + (1 - z) ⊙ tanh(U^h x_t + W^h s_{t-1} + b^h)
        n_gates: ClassVar[int] = 2
        n_state: ClassVar[int] = 1

        def step(self, xw_t: Tensor, state: State) -> tuple[Tensor, State]:
            pre_z, pre_h = torch.addmm(xw_t, state, self.weight_hh.t()).chunk(2, dim=1)
            z = torch.sigmoid(pre_z)
            s = z * state + (1 - z) * torch.tanh(pre_h)
            return s, s

    monkeypatch.setitem(CELLS, "minimal", MinimalGated)
    rnn = StackedRNN("minimal", IN, H, 2)
    assert rnn.impl == "equations"
    x = torch.randn(B, T, IN)
    y, final = rnn(x)
    cell0, cell1 = rnn.layers
    s0 = s1 = torch.zeros(B, H)
    for t in range(T):
        y0, s0 = cell0(x[:, t], s0)
        y1, s1 = cell1(y0, s1)
    torch.testing.assert_close(y[:, -1], y1)
    torch.testing.assert_close(final[1], s1)
    with pytest.raises(ValueError, match="no torch kernel"):
        StackedRNN("minimal", IN, H, impl="torch")


@pytest.mark.parametrize(("cell", "impl"), [("lstm", "equations"), ("lstm", "torch"), ("peephole", "equations")])
def test_forget_bias_shifts_only_the_forget_slice(cell: str, impl: str) -> None:
    torch.manual_seed(0)
    base = StackedRNN(cell, IN, H, 2, impl=impl)
    torch.manual_seed(0)
    shifted = StackedRNN(cell, IN, H, 2, forget_bias=1.0, impl=impl)
    expected = torch.zeros(4 * H)
    expected[H:2 * H] = 1.0  # gate order i, f, g, o
    for k in range(2):
        a, b = base.layer_parameters(k), shifted.layer_parameters(k)
        torch.testing.assert_close(b["bias_ih"] - a["bias_ih"], expected)
        torch.testing.assert_close(b["bias_hh"], a["bias_hh"])
        torch.testing.assert_close(b["weight_ih"], a["weight_ih"])
    with pytest.raises(ValueError, match="forget_bias requires bias"):
        LSTMCell(IN, H, bias=False, forget_bias=1.0)
    ElmanCell(IN, H, bias=False, forget_bias=1.0)  # no forget gate: accepted and ignored, as the models pass it


def test_cell_forward_equals_step_and_shapes() -> None:
    torch.manual_seed(0)
    for name, cls in CELLS.items():
        cell = cls(IN, H)
        x = torch.randn(B, IN)
        y, state = cell(x)
        y2, _ = cell.step(x @ cell.weight_ih.T + cell.bias_ih + cell.bias_hh, cell.init_state(B))
        torch.testing.assert_close(y, y2, msg=name)
        assert y.shape == (B, H)
        assert cell.weight_ih.shape == (cell.n_gates * H, IN) and cell.weight_hh.shape == (cell.n_gates * H, H)
        assert (state.shape if cell.n_state == 1 else tuple(s.shape for s in state)) == \
            ((B, H) if cell.n_state == 1 else ((B, H), (B, H)))


def test_peephole_zero_equals_lstm() -> None:
    torch.manual_seed(0)
    peep = StackedRNN("peephole", IN, H, num_layers=2)
    lstm = StackedRNN("lstm", IN, H, num_layers=2)
    with torch.no_grad():
        for k in range(2):
            peep.layer_parameters(k)["peephole"].zero_()
            for name, p in lstm.layer_parameters(k).items():
                p.copy_(peep.layer_parameters(k)[name])
    x = torch.randn(B, T, IN)
    torch.testing.assert_close(peep(x)[0], lstm(x)[0], atol=1e-6, rtol=1e-5)
    assert PeepholeLSTMCell(IN, H, peephole_scale=0.0).peephole.abs().sum() == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_learn_s0_receives_grad(impl: str) -> None:
    for cell in ("elman", "lstm"):
        rnn = StackedRNN(cell, IN, H, num_layers=2, learn_s0=True, impl=impl)
        assert len(list(rnn.s0)) == 2 * CELLS[cell].n_state
        y, _ = rnn(torch.randn(B, T, IN))
        y.sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rnn.s0)
    rnn = StackedRNN("lstm", IN, H)  # default s_0: fixed zeros, not a parameter
    assert all(not t.requires_grad and not t.any() for st in rnn.initial_state(2) for t in st)


@pytest.mark.parametrize("impl", IMPLS)
def test_dropout_between_layers_in_training_only(impl: str) -> None:
    torch.manual_seed(0)
    rnn = StackedRNN("lstm", IN, H, num_layers=2, dropout=0.5, impl=impl)
    x = torch.randn(B, T, IN)
    rnn.eval()
    torch.testing.assert_close(rnn(x)[0], rnn(x)[0])
    rnn.train()
    assert not torch.allclose(rnn(x)[0], rnn(x)[0])
    one = StackedRNN("lstm", IN, H, num_layers=1, dropout=0.5, impl=impl)  # one layer: nothing between layers
    torch.testing.assert_close(one(x)[0], one(x)[0])


@pytest.mark.parametrize("impl", IMPLS)
def test_state_in_and_out_and_detach(impl: str) -> None:
    rnn = StackedRNN("lstm", IN, H, num_layers=2, impl=impl)
    y, state = rnn(torch.randn(B, T, IN))
    assert y.shape == (B, T, H) and len(state) == 2 and all(t.shape == (B, H) for st in state for t in st)
    assert state[0][0].requires_grad
    det = detach_state(state)
    assert isinstance(det, list) and isinstance(det[0], tuple)
    assert all(not t.requires_grad and t.grad_fn is None for st in det for t in st)
    y, _ = rnn(torch.randn(B, T, IN), det)  # continues from the detached state (truncated BPTT)
    y.sum().backward()
    step, _ = rnn(torch.randn(B, 1, IN), det)  # one step (the decoders' use)
    assert step.shape == (B, 1, H)


@pytest.mark.parametrize(("cell", "impl"), [(c, i) for c in ("elman", "lstm") for i in IMPLS] + [("peephole", "equations")])
def test_padding_never_reaches_real_steps(cell: str, impl: str) -> None:
    """Bidirectional over right-padded rows: junk after a row's length changes neither its real outputs nor its
    final state, and its outputs past the length are zero."""
    torch.manual_seed(0)
    rnn = StackedRNN(cell, IN, H, 2, bidirectional=True, impl=impl)
    x = torch.randn(2, T, IN)
    lengths = torch.tensor([4, T])
    junk = x.clone()
    junk[0, 4:] = 9.0
    (y, fin), (y_junk, fin_junk) = rnn(x, lengths=lengths), rnn(junk, lengths=lengths)
    torch.testing.assert_close(y, y_junk)
    for a, b in zip(fin, fin_junk):
        torch.testing.assert_close(a, b)
    assert not y[0, 4:].any()
    alone, _ = rnn(x[:1, :4])
    torch.testing.assert_close(y[:1, :4], alone, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_deterministic_algorithms_mode(impl: str) -> None:
    """Nothing raises under torch.use_deterministic_algorithms(True); two runs agree bit for bit."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for cell in ("elman", "lstm", "peephole"):
            results = []
            for _ in range(2):
                torch.manual_seed(0)
                model = StackedRNN(cell, IN, H, 2, dropout=0.25, learn_s0=True,
                                   impl="equations" if cell == "peephole" else impl)
                x = torch.randn(B, T, IN, requires_grad=True)
                y, _ = model(x)
                results.append([y, *torch.autograd.grad(y.square().sum(), [x, *model.parameters()])])
            assert all(torch.equal(a, b) for a, b in zip(*results, strict=True)), cell
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


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
        (lambda: StackedRNN("lstm", IN, H, impl="cudnn"), r"impl must be one of \['auto', 'torch', 'equations'\]"),
        (lambda: StackedRNN("peephole", IN, H, impl="torch"), "cell 'peephole' has no torch kernel"),
        (lambda: ElmanNet(IN, H, 2, output_fn="relu"), "output_fn"),
        (lambda: ElmanNet(IN, H, 0), "output_size"),
        (lambda: PeepholeLSTMCell(IN, H, peephole_scale=-1.0), "peephole_scale"),
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


@pytest.mark.parametrize("model", ["char_lm", "seq2seq", "tagger", "frame_labeller", "sequence_classifier"])
def test_every_recurrent_model_takes_impl_and_refuses_a_bad_one(model: str) -> None:
    import inspect

    assert inspect.signature(MODELS[model]).parameters["impl"].default == "auto"
    required = {"char_lm": {"vocab": "ab"}, "seq2seq": {"src_vocab_size": 9, "tgt_vocab_size": 9,
                                                          "tgt_itos": ["<pad>", "<unk>", "<bos>", "<eos>"] + list("abcde")},
                "tagger": {"vocab_size": 9, "num_tags": 2, "tag_names": ["A", "B"]},
                "frame_labeller": {"num_classes": 2, "frame_shape": [1, 8, 8]},
                "sequence_classifier": {"input_size": 3, "num_classes": 2}}[model]
    with pytest.raises(ValueError, match="impl must be one of"):
        MODELS[model](**required, impl="fast")
    eq = MODELS[model](**required, impl="equations")
    assert {m.impl for m in eq.modules() if isinstance(m, StackedRNN)} == {"equations"}
