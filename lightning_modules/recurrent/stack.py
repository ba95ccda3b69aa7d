"""StackedRNN: cells stacked in depth (optionally bidirectional), run by torch's kernel or from the equations.

``impl`` picks how a stack runs:
- ``"auto"`` (the default): torch's own module where the cell declares one (``cell.kernel``: nn.LSTM for the
  LSTM, nn.RNN for the Elman cell; oneDNN on the CPU, cuDNN on the GPU), the cell's equations otherwise
  (the peephole LSTM);
- ``"torch"``: the kernel, and an error for a cell that has none;
- ``"equations"``: the cells of cells.py, step by step with autograd, for any cell (to study or change one).
Both hold the same parameters under the same per-layer names (``layer_parameters``), and the oracle tests
hold them equal. The equations path hoists ``U x_t + b`` out of the time loop (one matmul per layer) and
takes the steps from ``xw.unbind(1)``: indexing ``xw[:, t]`` would make each step's backward write a
full-size gradient.

Variable lengths (``lengths``): the kernel runs a packed sequence; the equations path freezes a row's state
after its last token and reverses the backward direction within each row's length. Either way a row's final
state is taken at its own last token and outputs past a row's length are zero.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_modules.recurrent.cells import CELLS, RecurrentCell, State, check_positive_int

IMPLS = ("auto", "torch", "equations")

__all__ = ["IMPLS", "ElmanNet", "StackedRNN", "resolve_impl", "reverse_padded"]


def resolve_impl(cell: str, impl: str) -> str:
    """"torch" or "equations": what ``impl`` means for ``cell``; a bad pair is one line naming the fix."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {list(IMPLS)}, got {impl!r}")
    if impl == "torch" and CELLS[cell].kernel is None:
        raise ValueError(f"impl 'torch': cell {cell!r} has no torch kernel (torch lacks its equations); "
                         "use impl 'auto' or 'equations'")
    return "torch" if impl != "equations" and CELLS[cell].kernel is not None else "equations"


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence of x [batch, T, ...] over its first ``lengths[b]`` steps; padding stays put.

    ``[a, b, c, pad, pad]`` with length 3 becomes ``[c, b, a, pad, pad]``. The map is its own inverse.
    """
    batch, steps = x.shape[:2]
    t = torch.arange(steps, device=x.device).expand(batch, steps)  # [batch, T]
    lengths = lengths.to(x.device).unsqueeze(1)  # [batch, 1]
    index = torch.where(t < lengths, lengths - 1 - t, t)  # [batch, T]
    index = index.view(batch, steps, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def _reverse(x: Tensor, lengths: Tensor | None) -> Tensor:
    return x.flip(1) if lengths is None else reverse_padded(x, lengths)


def _where(keep: Tensor, new: Any, old: Any) -> Any:
    """``new`` where ``keep`` [batch, 1] else ``old``, over a state's tensors."""
    if isinstance(new, Tensor):
        return torch.where(keep, new, old)
    return tuple(_where(keep, n, o) for n, o in zip(new, old))


def run_cell(cell: RecurrentCell, x: Tensor, state: State, valid: Tensor | None = None) -> tuple[Tensor, State]:
    """The equations over a sequence: x [batch, T, input] -> (outputs [batch, T, hidden], final state).

    ``valid`` [batch, T] (True up to each row's length, a prefix) freezes a row's state after its last token.
    """
    head = x.shape[1] if valid is None else int(valid.sum(1).min())  # steps where every row is real
    xw = cell.project_input(x)  # [batch, T, n_gates*hidden]: U x_t + b for all steps in one matmul
    ys: list[Tensor] = []
    for t, xw_t in enumerate(xw.unbind(1)):  # xw_t [batch, n_gates*hidden]
        y, new = cell.step(xw_t, state)
        state = new if t < head else _where(valid[:, t, None], new, state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


class StackedRNN(nn.Module):
    """``num_layers`` layers of one cell; batch-first sequences in, top-layer outputs out (as torch's modules).

    With ``bidirectional`` each layer has a forward and a backward direction, and layer k+1 reads both
    (concatenated), as nn.LSTM(bidirectional=True). States are lists with one entry per layer and direction
    (layer-major, as torch's h_n): a tensor or a pair (y, s) of [batch, hidden] each.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 forget_bias: float = 0.0, learn_s0: bool = False, bias: bool = True, bidirectional: bool = False,
                 impl: str = "auto") -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_layers", num_layers)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not isinstance(bidirectional, bool):
            raise ValueError(f"bidirectional must be true or false, got {bidirectional!r}")
        self.impl = resolve_impl(cell, impl)
        cls = CELLS[cell]
        self.cell_type, self.cell_cls = cell, cls
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout = float(dropout)
        self.directions = 2 if bidirectional else 1
        self.output_size = self.directions * hidden_size
        self.learn_s0 = learn_s0
        sizes = [input_size] + [self.output_size] * (num_layers - 1)  # each layer's input
        if self.impl == "torch":
            # Between-layer dropout is the module's own; with one layer there is none (and torch warns on it).
            self.kernel = cls.kernel.module(input_size, hidden_size, num_layers, bias=bias, batch_first=True,
                                            dropout=self.dropout if num_layers > 1 else 0.0,
                                            bidirectional=bidirectional, **cls.kernel.options)
            self.layers = None
            if bias:
                for k in range(num_layers):
                    for d in range(self.directions):
                        cls.shift_forget_bias_(self.layer_parameters(k, d)["bias_ih"], forget_bias)
        else:
            self.kernel = None
            self.layers = nn.ModuleList(cls(sizes[k], hidden_size, bias=bias, forget_bias=forget_bias)
                                        for k in range(num_layers) for _ in range(self.directions))
        self.drop = nn.Dropout(self.dropout)
        # One [hidden] vector per state tensor per layer and direction, flattened in the states' order.
        n = num_layers * self.directions * cls.n_state
        self.s0 = nn.ParameterList(nn.Parameter(torch.zeros(hidden_size)) for _ in range(n)) if learn_s0 else None

    def layer_parameters(self, layer: int, direction: int = 0) -> dict[str, nn.Parameter]:
        """One layer's parameters by the cell's names (weight_ih, weight_hh, bias_ih, bias_hh, ...), either impl."""
        if self.kernel is None:
            return dict(self.layers[layer * self.directions + direction].named_parameters())
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        return {name.removesuffix(suffix): p for name, p in self.kernel.named_parameters() if name.endswith(suffix)}

    def initial_state(self, batch: int) -> list[State]:
        """One state per layer and direction: zeros, or the learned s_0 expanded over the batch (grads reach s_0)."""
        ref = next(self.parameters())
        n_state, count = self.cell_cls.n_state, self.num_layers * self.directions
        if self.s0 is None:
            vecs = [ref.new_zeros(self.hidden_size)] * (count * n_state)
        else:
            vecs = list(self.s0)
        ts = [v.expand(batch, self.hidden_size) for v in vecs]  # each [batch, hidden]
        return [ts[j] if n_state == 1 else tuple(ts[j * n_state:(j + 1) * n_state]) for j in range(count)]

    def forward(self, x: Tensor, state: list[State] | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor, list[State]]:
        """x [batch, time, input] -> (top-layer outputs [batch, time, directions*hidden], final states).

        ``lengths`` [batch]: rows are real up to their length and padding after it (a right-padded batch).
        """
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be [batch, time, {self.input_size}], got {list(x.shape)}")
        batch, steps, _ = x.shape
        count = self.num_layers * self.directions
        if state is not None and len(state) != count:
            raise ValueError(f"state must have one entry per layer and direction ({count}), got {len(state)}")
        if steps == 0:
            return x.new_zeros(batch, 0, self.output_size), list(state or self.initial_state(batch))
        if lengths is not None and bool((lengths >= steps).all()):
            lengths = None  # no row is padded: the plain run
        if self.kernel is not None:
            return self._run_kernel(x, state, lengths)
        return self._run_equations(x, state if state is not None else self.initial_state(batch), lengths)

    def _run_kernel(self, x: Tensor, state: list[State] | None, lengths: Tensor | None) -> tuple[Tensor, list[State]]:
        if state is None and self.s0 is not None:
            state = self.initial_state(x.shape[0])
        n_state = self.cell_cls.n_state
        hx = None
        if state is not None:  # torch's hx: [layers*directions, batch, hidden], or a pair of those
            hx = torch.stack(state) if n_state == 1 else tuple(torch.stack(part) for part in zip(*state))
        if lengths is None:
            out, hn = self.kernel(x, hx)  # [batch, T, directions*hidden]
        else:
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, hn = self.kernel(packed, hx)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        final = list(hn.unbind(0)) if n_state == 1 else list(zip(*(h.unbind(0) for h in hn)))
        return out, final

    def _run_equations(self, x: Tensor, state: list[State], lengths: Tensor | None) -> tuple[Tensor, list[State]]:
        valid = None  # [batch, T]: True at each row's real steps
        if lengths is not None:
            valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
        inp, final = x, []  # inp [batch, T, in]
        for k in range(self.num_layers):
            if k > 0 and self.dropout > 0.0:
                inp = self.drop(inp)  # between layers only; nn.Dropout is a no-op in eval mode
            outs = []
            for d in range(self.directions):
                j = k * self.directions + d
                if d == 0:
                    y, st = run_cell(self.layers[j], inp, state[j], valid)
                else:  # the backward direction: each row reversed within its length, padding kept last
                    y, st = run_cell(self.layers[j], _reverse(inp, lengths), state[j], valid)
                    y = _reverse(y, lengths)
                outs.append(y)  # [batch, T, hidden]
                final.append(st)
            inp = outs[0] if self.directions == 1 else torch.cat(outs, dim=-1)
        if valid is not None:
            inp = inp * valid[..., None]  # zero past each row's length, as the kernel's packed run
        return inp, final


_OUTPUT_FNS = ("identity", "sigmoid", "softmax", "step")


class ElmanNet(nn.Module):
    """Elman's full network: recurrent state s_t, read out as ``y_t = f(V s_t)``.

    ``step`` is a hard threshold at 0.5 on the sigmoid, applied only in eval mode;
    in training it is the sigmoid so that gradients exist.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, output_fn: str = "identity",
                 num_layers: int = 1, impl: str = "auto") -> None:
        super().__init__()
        check_positive_int("output_size", output_size)
        if output_fn not in _OUTPUT_FNS:
            raise ValueError(f"output_fn must be one of {list(_OUTPUT_FNS)}, got {output_fn!r}")
        self.output_fn = output_fn
        self.rnn = StackedRNN("elman", input_size, hidden_size, num_layers=num_layers, impl=impl)
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
