"""Recurrent cells (Elman, LSTM, peephole LSTM) written from their equations: the specification.

Each cell is one time step in plain tensor ops, with the notes' names: input x_t, state s_t, LSTM output
y_t, input weights U (``weight_ih``), recurrent weights W (``weight_hh``), bias b. The parameters are laid
out as torch's recurrent modules lay out one layer (gates stacked in torch's order i, f, g, o; b kept as
torch's two vectors, ``b = bias_ih + bias_hh``), so that a cell whose equations are exactly torch's
declares that module as its ``kernel`` and its weights copy over by name. StackedRNN (stack.py) then
trains it with torch's kernel (oneDNN on the CPU, cuDNN on the GPU) unless asked for the equations; a
cell torch lacks (the peephole LSTM, a variant) declares no kernel and trains from these equations. An
oracle test holds each kernel and its cell equal (tests/test_recurrent.py).

To add a cell: subclass RecurrentCell with its ``n_gates``, ``n_state``, ``init_state``, ``step`` and
(only if torch computes exactly its equations, with the same parameter names and shapes) its ``kernel``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# A cell's state: one tensor (Elman, as torch's RNN hx) or a pair (y, s) (LSTMs, as torch's LSTM (h, c)).
State = Tensor | tuple[Tensor, Tensor]

__all__ = ["CELLS", "ElmanCell", "LSTMCell", "PeepholeLSTMCell", "RecurrentCell", "State", "TorchKernel",
           "check_positive_int", "detach_state"]


def check_positive_int(name: str, value: object) -> None:
    # bool is an int subclass; True as a size is almost certainly a bug.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class TorchKernel:
    """torch's module that computes exactly a cell's equations (e.g. nn.LSTM), and its fixed options.

    Declaring one promises that the cell's parameters are the module's per-layer ones under the same names
    (``weight_ih`` is the module's ``weight_ih_l{k}``, and so on) and that its state is the module's hx
    for one layer (a tensor, or a pair as nn.LSTM's (h, c))."""

    module: type[nn.RNNBase]
    options: dict[str, Any] = field(default_factory=dict)  # e.g. {"nonlinearity": "tanh"} for nn.RNN


class RecurrentCell(nn.Module):
    """One layer's parameters and its step; subclasses set the ClassVars and write ``init_state`` and ``step``."""

    n_gates: ClassVar[int]  # gates stacked in weight_ih / weight_hh / the biases
    n_state: ClassVar[int]  # tensors in the state: 1 (a tensor) or 2 (a pair)
    forget_gate: ClassVar[int | None] = None  # the forget gate's place among the gates, if there is one
    kernel: ClassVar[TorchKernel | None] = None  # torch's module for exactly these equations, or None

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, forget_bias: float = 0.0) -> None:
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        if not bias and forget_bias != 0.0 and self.forget_gate is not None:
            raise ValueError(f"forget_bias requires bias=True, got forget_bias={forget_bias} with bias=False")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.forget_bias = float(forget_bias)  # no meaning (ignored) for a cell without a forget gate
        gh = self.n_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gh, input_size))  # U, all gates: [n_gates*hidden, input]
        self.weight_hh = nn.Parameter(torch.empty(gh, hidden_size))  # W, all gates: [n_gates*hidden, hidden]
        self.bias_ih = nn.Parameter(torch.empty(gh)) if bias else None  # [n_gates*hidden]
        self.bias_hh = nn.Parameter(torch.empty(gh)) if bias else None  # [n_gates*hidden]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch's scheme for nn.RNN / nn.LSTM, so both paths start from the same distribution.
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)
        self.shift_forget_bias_(self.bias_ih, self.forget_bias)

    @classmethod
    def shift_forget_bias_(cls, bias: Tensor | None, value: float) -> None:
        """Add ``value`` to the forget gate's slice of ``bias`` (this cell's or its kernel's); a no-op without one."""
        if cls.forget_gate is None or bias is None or value == 0.0:
            return
        h = bias.shape[0] // cls.n_gates
        with torch.no_grad():
            bias[cls.forget_gate * h:(cls.forget_gate + 1) * h].add_(value)

    @property
    def bias(self) -> Tensor | None:
        """The notes' b: torch keeps it as two vectors, the equations read their sum."""
        return None if self.bias_ih is None else self.bias_ih + self.bias_hh

    def project_input(self, x: Tensor) -> Tensor:
        """``U x + b`` for any leading shape: [..., input] -> [..., n_gates*hidden]; the part of every gate
        that does not depend on the recurrence, so a sequence takes it in one matmul."""
        return F.linear(x, self.weight_ih, self.bias)

    def init_state(self, batch: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> State:
        """The fixed s_0 (zeros): a tensor or a pair of [batch, hidden]."""
        zeros = [torch.zeros(batch, self.hidden_size, device=device, dtype=dtype) for _ in range(self.n_state)]
        return zeros[0] if self.n_state == 1 else tuple(zeros)

    def step(self, xw_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One step from the projected input ``U x_t + b`` [batch, n_gates*hidden]: (output [batch, hidden], state)."""
        raise NotImplementedError

    def forward(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One time step from raw input x_t [batch, input]; returns (output [batch, hidden], new state)."""
        if state is None:
            state = self.init_state(x_t.shape[0], x_t.device, x_t.dtype)
        return self.step(self.project_input(x_t), state)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


class ElmanCell(RecurrentCell):
    """``s_t = tanh(U x_t + W s_{t-1} + b)``; the output is the state itself. torch's nn.RNN (tanh) exactly."""

    n_gates = 1
    n_state = 1
    kernel = TorchKernel(nn.RNN, {"nonlinearity": "tanh"})

    def step(self, xw_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        s_prev = state  # [batch, hidden]
        s = torch.tanh(xw_t + s_prev @ self.weight_hh.t())  # [batch, hidden]
        return s, s


class LSTMCell(RecurrentCell):
    """The notes' LSTM, gates stacked i, f, g, o; torch's nn.LSTM exactly.

    ``f_t = σ(U^f x_t + W^f y_{t-1} + b^f)``, likewise i_t and o_t; ``g = tanh(U^g x_t + W^g y_{t-1} + b^g)``;
    ``s_t = s_{t-1} ⊙ f_t + g ⊙ i_t``; ``y_t = tanh(s_t) ⊙ o_t``. ``forget_bias`` is added to b^f at init.
    """

    n_gates = 4
    n_state = 2
    forget_gate = 1
    kernel = TorchKernel(nn.LSTM)

    def step(self, xw_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        y_prev, s_prev = state  # each [batch, hidden]
        # U x_t + b (given) + W y_{t-1}, every gate in one matmul: [batch, 4*hidden]
        pre_i, pre_f, pre_g, pre_o = torch.addmm(xw_t, y_prev, self.weight_hh.t()).chunk(4, dim=1)
        f = torch.sigmoid(pre_f)
        i = torch.sigmoid(pre_i)
        o = torch.sigmoid(pre_o)
        g = torch.tanh(pre_g)
        s = s_prev * f + g * i
        y = torch.tanh(s) * o
        return y, (y, s)


class PeepholeLSTMCell(LSTMCell):
    """LSTM with diagonal peepholes (Gers & Schmidhuber): each gate also sees the cell state in its field.

    ``f_t = σ(U^f x_t + W^f y_{t-1} + p^f ⊙ s_{t-1} + b^f)`` and likewise i_t (both see s_{t-1});
    g and s_t as in the LSTM; ``o_t = σ(U^o x_t + W^o y_{t-1} + p^o ⊙ s_t + b^o)`` sees the new s_t.
    ``peephole`` [3, hidden] holds p^i, p^f, p^o. torch has no kernel for it.
    ``peephole_scale``: init range ±scale; None means 1/sqrt(hidden) (non-zero so the peepholes matter from
    the start), 0.0 gives a plain LSTM at init.
    """

    kernel = None

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
        y_prev, s_prev = state  # each [batch, hidden]
        p_i, p_f, p_o = self.peephole.unbind(0)  # each [hidden], broadcast over the batch
        pre_i, pre_f, pre_g, pre_o = torch.addmm(xw_t, y_prev, self.weight_hh.t()).chunk(4, dim=1)
        # addcmul(a, p, s) is a + p * s in one op: this cell trains from these lines, ~10% faster so.
        f = torch.sigmoid(torch.addcmul(pre_f, p_f, s_prev))  # sees s_{t-1}
        i = torch.sigmoid(torch.addcmul(pre_i, p_i, s_prev))  # sees s_{t-1}
        g = torch.tanh(pre_g)
        s = s_prev * f + g * i
        o = torch.sigmoid(torch.addcmul(pre_o, p_o, s))  # sees the new s_t
        y = torch.tanh(s) * o
        return y, (y, s)


CELLS: dict[str, type[RecurrentCell]] = {"elman": ElmanCell, "lstm": LSTMCell, "peephole": PeepholeLSTMCell}


def detach_state(state: Any) -> Any:
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
