"""Recurrent cells (Elman, LSTM, peephole LSTM) written from their equations.

Only plain tensor ops are used (no nn.RNN / nn.LSTM) so the benchmark measures
the architectures themselves; torch's modules serve as test oracles only.

Speed notes (2-core CPU): the input projection ``U x_t + b`` does not depend on
the recurrence, so it is hoisted out of the time loop as one big matmul per
layer. The loop then iterates over ``xw.unbind(1)`` (indexing ``xw[:, t]`` makes
autograd write a full-size gradient tensor every step) and does a single fused
``addmm`` for all gates per step. That per-step autograd loop is StackedRNN's
readable reference (``fused=False``); the default runs the same equations as
whole-sequence Functions with hand-written BPTT (recurrent/fused.py), which also
handle ``torch.autocast`` (bf16 matmuls, float32 state). ``archbench speed``
times both against torch.nn.LSTM / nn.RNN.
"""

from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.recurrent.fused import run_fused

# Elman state is a single tensor s; LSTM state is the pair (y, s).
State = Union[Tensor, tuple[Tensor, Tensor]]

__all__ = [
    "CELLS",
    "ElmanCell",
    "ElmanNet",
    "LSTMCell",
    "PeepholeLSTMCell",
    "StackedRNN",
    "detach_state",
]


def _check_positive_int(name: str, value: object) -> None:
    # bool is an int subclass; True as a size is almost certainly a bug.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _RecurrentCell(nn.Module):
    """Shared parameters and helpers; subclasses define ``n_gates``, ``init_state`` and ``step``."""

    n_gates: int = 1
    n_state: int = 1  # number of tensors in the state (1 for Elman, 2 for LSTMs)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, forget_bias: float = 0.0) -> None:
        super().__init__()
        _check_positive_int("input_size", input_size)
        _check_positive_int("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.forget_bias = float(forget_bias)
        gh = self.n_gates * hidden_size
        # Stacked U's and W's so one matmul serves all gates.
        self.weight_ih = nn.Parameter(torch.empty(gh, input_size))  # [n_gates*hidden, input]
        self.weight_hh = nn.Parameter(torch.empty(gh, hidden_size))  # [n_gates*hidden, hidden]
        self.bias: nn.Parameter | None = nn.Parameter(torch.empty(gh)) if bias else None  # [n_gates*hidden]

    def reset_parameters(self) -> None:
        # Same scheme as torch.nn.RNN/LSTM, so learning curves are comparable to the oracles.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)

    def project_input(self, x: Tensor) -> Tensor:
        """``U x + b`` for any leading shape: [..., input] -> [..., n_gates*hidden]."""
        return F.linear(x, self.weight_ih, self.bias)

    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        raise NotImplementedError

    def step(self, xw_t: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    def forward(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One time step from raw input x_t [batch, input]; returns (y_t [batch, hidden], new state)."""
        if state is None:
            state = self.init_state(x_t.shape[0], x_t.device, x_t.dtype)
        return self.step(self.project_input(x_t), state)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias is not None}"


class ElmanCell(_RecurrentCell):
    """``s_t = tanh(U x_t + W s_{t-1} + b)``; the output is the state itself."""

    n_gates = 1
    n_state = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, forget_bias: float = 0.0) -> None:
        # forget_bias is accepted for a uniform constructor but has no meaning here (no forget gate).
        super().__init__(input_size, hidden_size, bias, forget_bias)
        self.reset_parameters()

    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> Tensor:
        return torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)  # [batch, hidden]

    def step(self, xw_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        # addmm fuses "+ U x_t + b" into the recurrent matmul.
        s = torch.tanh(torch.addmm(xw_t, state, self.weight_hh.t()))  # [batch, hidden]
        return s, s


class LSTMCell(_RecurrentCell):
    """LSTM without peepholes; stacked gate order i, f, g, o (as torch.nn.LSTM)."""

    n_gates = 4
    n_state = 2

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, forget_bias: float = 0.0) -> None:
        super().__init__(input_size, hidden_size, bias, forget_bias)
        if not bias and self.forget_bias != 0.0:
            raise ValueError(f"forget_bias requires bias=True, got forget_bias={forget_bias} with bias=False")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.bias is not None and self.forget_bias != 0.0:
            h = self.hidden_size
            with torch.no_grad():
                self.bias[h:2 * h].add_(self.forget_bias)  # forget slice (order i, f, g, o)

    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        y = torch.zeros(batch, self.hidden_size, device=device, dtype=dtype)  # [batch, hidden]
        return y, torch.zeros_like(y)

    def step(self, xw_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        y, s = state
        gates = torch.addmm(xw_t, y, self.weight_hh.t())  # [batch, 4*hidden]
        i, f, g, o = gates.chunk(4, dim=1)  # each [batch, hidden]
        s = s * torch.sigmoid(f) + torch.tanh(g) * torch.sigmoid(i)
        y = torch.tanh(s) * torch.sigmoid(o)
        return y, (y, s)


class PeepholeLSTMCell(LSTMCell):
    """LSTM with diagonal peephole connections (Gers & Schmidhuber).

    ``peephole`` [3, hidden] holds p^i, p^f, p^o (rows in that order). The input
    and forget gates look at s_{t-1}; the output gate looks at the new s_t.
    ``peephole_scale``: init range ±scale; None means 1/sqrt(hidden) (non-zero so
    the peepholes actually matter from the start), 0.0 gives a plain LSTM at init.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, forget_bias: float = 0.0,
                 *, peephole_scale: float | None = None) -> None:
        if peephole_scale is not None and not peephole_scale >= 0.0:
            raise ValueError(f"peephole_scale must be >= 0 or None, got {peephole_scale!r}")
        super().__init__(input_size, hidden_size, bias, forget_bias)
        self.peephole_scale = peephole_scale
        self.peephole = nn.Parameter(torch.empty(3, hidden_size))  # [3, hidden]: p^i, p^f, p^o
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "peephole"):  # not yet created while the base constructor runs
            scale = 1.0 / math.sqrt(self.hidden_size) if self.peephole_scale is None else self.peephole_scale
            nn.init.uniform_(self.peephole, -scale, scale)

    def step(self, xw_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        y, s = state
        p_i, p_f, p_o = self.peephole.unbind(0)  # each [hidden], broadcast over batch
        gates = torch.addmm(xw_t, y, self.weight_hh.t())  # [batch, 4*hidden]
        i, f, g, o = gates.chunk(4, dim=1)
        i = torch.sigmoid(torch.addcmul(i, p_i, s))  # sees s_{t-1}
        f = torch.sigmoid(torch.addcmul(f, p_f, s))
        s = s * f + torch.tanh(g) * i
        o = torch.sigmoid(torch.addcmul(o, p_o, s))  # sees the new s_t
        y = torch.tanh(s) * o
        return y, (y, s)


CELLS: dict[str, type[nn.Module]] = {"elman": ElmanCell, "lstm": LSTMCell, "peephole": PeepholeLSTMCell}


def detach_state(state: list) -> list:
    """Detach every tensor in a (nested) state, keeping its structure; cuts the graph for truncated BPTT."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, tuple):
        return tuple(detach_state(s) for s in state)
    if isinstance(state, list):
        return [detach_state(s) for s in state]
    if state is None:
        return None
    raise TypeError(f"state must be a tensor or a nested list/tuple of tensors, got {type(state).__name__}")


class StackedRNN(nn.Module):
    """``num_layers`` cells stacked in depth; batch-first sequences in, top-layer outputs out."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 forget_bias: float = 0.0, learn_s0: bool = False, bias: bool = True, fused: bool = True) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        _check_positive_int("input_size", input_size)
        _check_positive_int("hidden_size", hidden_size)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an integer >= 1, got {num_layers!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.cell_type = cell
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = float(dropout)
        self.learn_s0 = learn_s0
        # fused: whole-sequence Functions with hand-written BPTT (recurrent/fused.py); False keeps the
        # per-step autograd path below, the readable reference the fused path is tested against.
        self.fused = fused
        cls = CELLS[cell]
        self.layers = nn.ModuleList(
            cls(input_size if k == 0 else hidden_size, hidden_size, bias=bias, forget_bias=forget_bias)
            for k in range(num_layers)
        )
        self.drop = nn.Dropout(self.dropout)
        # One [hidden] vector per state tensor per layer, flattened layer-major.
        self.s0 = (
            nn.ParameterList(nn.Parameter(torch.zeros(hidden_size))
                             for layer in self.layers for _ in range(layer.n_state))
            if learn_s0 else None
        )

    def initial_state(self, batch: int) -> list[State]:
        """One state per layer: zeros, or the learned s_0 expanded over the batch (grads flow to s_0)."""
        ref = self.layers[0].weight_hh
        if self.s0 is None:
            return [layer.init_state(batch, ref.device, ref.dtype) for layer in self.layers]
        states: list[State] = []
        it = iter(self.s0)
        for layer in self.layers:
            ts = [next(it).expand(batch, self.hidden_size) for _ in range(layer.n_state)]  # each [batch, hidden]
            states.append(ts[0] if len(ts) == 1 else tuple(ts))
        return states

    def forward(self, x: Tensor, state: list[State] | None = None) -> tuple[Tensor, list[State]]:
        """x [batch, time, input] -> (top-layer outputs [batch, time, hidden], final state per layer)."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be [batch, time, {self.input_size}], got {list(x.shape)}")
        batch, steps, _ = x.shape
        if state is None:
            state = self.initial_state(batch)
        elif len(state) != self.num_layers:
            raise ValueError(f"state must have one entry per layer ({self.num_layers}), got {len(state)}")
        if steps == 0:
            return x.new_zeros(batch, 0, self.hidden_size), list(state)
        if self.fused:
            return run_fused(self.layers, x, state, self.drop, self.dropout)

        inp = x  # [batch, time, in]
        final: list[State] = []
        for k, (layer, st) in enumerate(zip(self.layers, state)):
            if k > 0 and self.dropout > 0.0:
                inp = self.drop(inp)  # between layers only; nn.Dropout is a no-op in eval mode
            xw = layer.project_input(inp)  # [batch, time, n_gates*hidden], one matmul for all steps
            step = layer.step
            ys: list[Tensor] = []
            for xw_t in xw.unbind(1):  # xw_t [batch, n_gates*hidden]
                y, st = step(xw_t, st)
                ys.append(y)
            inp = torch.stack(ys, dim=1)  # [batch, time, hidden]
            final.append(st)
        return inp, final


_OUTPUT_FNS = ("identity", "sigmoid", "softmax", "step")


class ElmanNet(nn.Module):
    """Elman's full network: recurrent state s_t, read out as ``y_t = f(V s_t)``.

    ``step`` is a hard threshold at 0.5 on the sigmoid, applied only in eval mode;
    in training it is the sigmoid so that gradients exist.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, output_fn: str = "identity",
                 num_layers: int = 1) -> None:
        super().__init__()
        _check_positive_int("output_size", output_size)
        if output_fn not in _OUTPUT_FNS:
            raise ValueError(f"output_fn must be one of {list(_OUTPUT_FNS)}, got {output_fn!r}")
        self.output_fn = output_fn
        self.rnn = StackedRNN("elman", input_size, hidden_size, num_layers=num_layers)
        # No bias: the seed's equation is y_t = f(V s_t).
        self.readout = nn.Linear(hidden_size, output_size, bias=False)  # V

    def forward(self, x: Tensor) -> Tensor:
        s, _ = self.rnn(x)  # [batch, time, hidden]
        z = self.readout(s)  # [batch, time, output]
        if self.output_fn == "identity":
            return z
        if self.output_fn == "softmax":
            return torch.softmax(z, dim=-1)
        if self.output_fn == "step" and not self.training:
            return (z > 0).to(z.dtype)  # sigmoid(z) > 0.5  <=>  z > 0
        return torch.sigmoid(z)
