"""Whole-sequence autograd Functions for the recurrent cells: same equations, hand-written BPTT.

Why: with per-step autograd, every time step records ~10 graph nodes and its backward
runs one small ``dW_hh`` matmul per step plus an accumulation of a [n_gates*hidden, hidden]
gradient, all through the autograd engine. Here the forward runs the time loop without a
graph, storing only the gate activations and states; the backward runs BPTT by hand
(per step: the elementwise gate derivatives and ``dy_{t-1} = dgates_t W_hh``) and forms
``dW_hh = sum_t dgates_t^T y_{t-1}`` after the loop as ONE matmul over all [time*batch] rows.
The input projection ``U x_t + b`` is one matmul over the whole sequence inside the Function
(so its output buffer is reused in place for the gates), and its gradients are one matmul each
plus one sum for the bias.

Everything is time-major ([time, batch, ...]) so each step's slice is contiguous; the
top layer's output is handed back as a [batch, time, hidden] view (as nn.LSTM(batch_first=True)).
Equations are exactly those of lightning_modules/recurrent.py (gate order i, f, g, o;
peepholes: i and f see s_{t-1}, o sees s_t). Double backward is not supported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["ElmanSequence", "LSTMSequence", "run_fused"]


# Why no torch.tanh in the loops: on CPU it goes through MKL's vector math, which splits even a
# [64, 256] tensor across threads; on a shared 2-core machine each call then waits for a
# descheduled thread (measured 15 ms vs 0.1 ms per call). We use tanh(x) = 2 sigmoid(2x) - 1
# instead, with the factor 2 folded into the pre-activations once per sequence (scaling by 2
# is exact in floating point). Same function; the result differs from torch.tanh only in
# rounding (~1 ulp of 1 near 0, i.e. ~1e-7 absolute in float32). Scalars are passed as
# tensors/alphas because a Python scalar operand costs an extra tensor conversion per call.
#
# Per-step elementwise ops work on one or two gate slices ([batch, hidden] or [batch, 2*hidden]),
# not on all four at once: ATen runs an op on more than 32768 elements on several threads, and
# at these sizes (64 x 256) the rendezvous costs more than it saves; under load from other
# processes it costs milliseconds per call. So each step has one parallel region, the matmul.


def _two_sigmoid_minus_one(z: Tensor, neg_one: Tensor, out: Tensor) -> Tensor:
    """``out = 2 sigmoid(z) - 1`` (= tanh(z / 2)); ``out`` may be ``z``."""
    return torch.add(neg_one, torch.sigmoid(z, out=out), alpha=2.0, out=out)


def _project(x: Tensor, w_ih: Tensor, bias: Tensor | None, scale: Tensor) -> Tensor:
    """``(x U^T + b) * scale`` for x [T, batch, input] -> a fresh contiguous [T, batch, n_gates*hidden].

    ``scale`` ([1] or per gate row; powers of 2, so exact) is folded into U and b, which are small.
    """
    w_ih = w_ih * scale.unsqueeze(1)
    bias = None if bias is None else bias * scale
    flat = x.reshape(-1, x.shape[-1])  # [T*batch, input]
    out = flat @ w_ih.t() if bias is None else torch.addmm(bias, flat, w_ih.t())
    return out.view(*x.shape[:-1], -1)


def _project_grads(ctx: Any, d_pre: Tensor, x: Tensor, w_ih: Tensor) -> tuple[Tensor | None, ...]:
    """Grads of x, U, b (inputs 0, 1, 2 of the Function) from d_pre [T, batch, n_gates*hidden]."""
    flat = d_pre.flatten(0, 1)  # [T*batch, n_gates*hidden]
    d_x = (flat @ w_ih).view_as(x) if ctx.needs_input_grad[0] else None
    d_w_ih = flat.t() @ x.flatten(0, 1) if ctx.needs_input_grad[1] else None
    d_b = flat.sum(0) if ctx.needs_input_grad[2] else None
    return d_x, d_w_ih, d_b


def _from_above_and_next(d_out: Tensor | None, d_pre_next: Tensor, w_hh: Tensor) -> Tensor:
    """Grad reaching a step's output: from above (``d_out``, None if nothing used it) plus ``d_pre_{t+1} W``."""
    return torch.mm(d_pre_next, w_hh) if d_out is None else torch.addmm(d_out, d_pre_next, w_hh)


def _recurrent_weight_grad(d_pre: Tensor, first: Tensor, outputs: Tensor) -> Tensor:
    """``sum_t d_pre_t^T y_{t-1}`` with y_{-1} = ``first``: one matmul over all later steps, one for step 0."""
    d_w = d_pre[0].t() @ first  # [n_gates*hidden, hidden]
    if d_pre.shape[0] > 1:
        d_w.addmm_(d_pre[1:].flatten(0, 1).t(), outputs[:-1].flatten(0, 1))
    return d_w


class ElmanSequence(torch.autograd.Function):
    """``s_t = tanh(U x_t + b + W s_{t-1})`` over a whole sequence; returns (s_1..s_T, s_T)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w_ih: Tensor, bias: Tensor | None, w_hh: Tensor,
                s0: Tensor) -> tuple[Tensor, Tensor]:
        # x [T, batch, input], w_ih [hidden, input], bias [hidden] or None, w_hh [hidden, hidden],
        # s0 [batch, hidden]
        two = x.new_full((1,), 2.0)
        ys = _project(x, w_ih, bias, two)  # [T, batch, hidden]: 2 (U x_t + b), becomes s_t in place
        wt2 = torch.add(w_hh, w_hh).t().contiguous()  # 2 W^T, [in, out] row-major (faster gemm than a .t() view)
        neg_one = x.new_full((1,), -1.0)
        s = s0
        for z in ys.unbind(0):
            s = _two_sigmoid_minus_one(z.addmm_(s, wt2), neg_one, out=z)  # tanh(U x_t + b + W s_{t-1})
        ctx.save_for_backward(x, w_ih, w_hh, s0, ys)
        return ys, ys[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_ys: Tensor | None, d_last: Tensor | None) -> tuple[Tensor | None, ...]:
        x, w_ih, w_hh, s0, ys = ctx.saved_tensors
        steps = ys.shape[0]
        d_pre = torch.empty_like(ys)  # [T, batch, hidden]: grad wrt the pre-activation
        d_pre_t, ys_t = d_pre.unbind(0), ys.unbind(0)
        d_ys_t = [None] * steps if d_ys is None else d_ys.unbind(0)
        ds = torch.zeros_like(s0) if d_last is None else d_last  # [batch, hidden]
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                ds = _from_above_and_next(d_ys_t[t], d_pre_t[t + 1], w_hh)
            elif d_ys_t[t] is not None:
                ds = ds + d_ys_t[t]
            torch.addcmul(ds, ds, ys_t[t].square(), value=-1.0, out=d_pre_t[t])  # tanh' = 1 - s^2
        d_w_hh = _recurrent_weight_grad(d_pre, s0, ys) if ctx.needs_input_grad[3] else None
        d_s0 = d_pre[0] @ w_hh if ctx.needs_input_grad[4] else None
        return (*_project_grads(ctx, d_pre, x, w_ih), d_w_hh, d_s0)


class LSTMSequence(torch.autograd.Function):
    """LSTM (optionally peephole) over a whole sequence; returns (y_1..y_T, y_T, s_T)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w_ih: Tensor, bias: Tensor | None, w_hh: Tensor, y0: Tensor, s0: Tensor,
                peephole: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        # x [T, batch, input], w_ih [4*hidden, input], bias [4*hidden] or None, w_hh [4*hidden, hidden],
        # y0/s0 [batch, hidden], peephole None or [3, hidden] (p^i, p^f, p^o).
        steps, batch, _ = x.shape
        h = w_hh.shape[1]
        scale = x.new_ones(4 * h)
        scale[2 * h:3 * h] = 2.0  # the g slot is computed as 2 sigmoid(2 g_pre) - 1
        # [T, batch, 4*hidden]: starts as the (scaled) U x_t + b, each step adds y_{t-1} W^T in
        # place, then it holds i, f, g, o after their nonlinearity (what backward needs).
        acts = _project(x, w_ih, bias, scale)
        wt = torch.mul(w_hh, scale.unsqueeze(1)).t().contiguous()  # [hidden, 4*hidden] row-major
        neg_one = x.new_full((1,), -1.0)
        ss = x.new_empty(steps + 1, batch, h)  # [T+1, batch, hidden]: s_0 .. s_T
        cs = x.new_empty(steps, batch, h)  # [T, batch, hidden]: tanh(s_t), needed by backward
        ys = x.new_empty(steps, batch, h)  # [T, batch, hidden]
        ss[0] = s0
        # Per-step views made once in C++ (cheaper than slicing in the loop).
        a_t, ss_t, cs_t, ys_t = acts.unbind(0), ss.unbind(0), cs.unbind(0), ys.unbind(0)
        i_t, f_t, g_t, o_t = (v.unbind(0) for v in acts.unflatten(2, (4, h)).unbind(2))
        y = y0
        for t in range(steps):
            a = a_t[t].addmm_(y, wt)  # [batch, 4*hidden] pre-activations
            i, f, g, o, s_prev, s, c = i_t[t], f_t[t], g_t[t], o_t[t], ss_t[t], ss_t[t + 1], cs_t[t]
            i_f = a[:, :2 * h]
            if peephole is not None:
                i_f.view(batch, 2, h).addcmul_(s_prev.unsqueeze(1), peephole[:2])  # i, f see s_{t-1}
            i_f.sigmoid_()
            _two_sigmoid_minus_one(g, neg_one, out=g)  # g = tanh(g_pre)
            torch.mul(s_prev, f, out=s).addcmul_(i, g)
            if peephole is not None:
                o.addcmul_(s, peephole[2])  # o sees the new s_t
            o.sigmoid_()
            _two_sigmoid_minus_one(torch.add(s, s, out=c), neg_one, out=c)  # c = tanh(s_t)
            y = torch.mul(c, o, out=ys_t[t])
        ctx.save_for_backward(x, w_ih, w_hh, y0, peephole, acts, ss, cs, ys)
        return ys, ys[-1].clone(), ss[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_ys: Tensor | None, d_y_last: Tensor | None,
                 d_s_last: Tensor | None) -> tuple[Tensor | None, ...]:
        x, w_ih, w_hh, y0, peephole, acts, ss, cs, ys = ctx.saved_tensors
        steps, batch, h4 = acts.shape
        h = h4 // 4
        d_pre = torch.empty_like(acts)  # [T, batch, 4*hidden]: grads wrt the gate pre-activations
        ds = torch.zeros_like(y0) if d_s_last is None else d_s_last.clone()  # [batch, hidden], grad wrt s_t
        k = torch.empty_like(ds)  # scratch [batch, hidden]
        a_t, dp_t, ss_t, cs_t, ys_t = acts.unbind(0), d_pre.unbind(0), ss.unbind(0), cs.unbind(0), ys.unbind(0)
        i_t, f_t, g_t, o_t = (v.unbind(0) for v in acts.unflatten(2, (4, h)).unbind(2))
        di_t, df_t, dg_t, do_t = (v.unbind(0) for v in d_pre.unflatten(2, (4, h)).unbind(2))
        d_ys_t = [None] * steps if d_ys is None else d_ys.unbind(0)
        for t in range(steps - 1, -1, -1):
            a, dp, c, y = a_t[t], dp_t[t], cs_t[t], ys_t[t]
            i, f, g, o = i_t[t], f_t[t], g_t[t], o_t[t]
            dp_i, dp_f, dp_g, dp_o = di_t[t], df_t[t], dg_t[t], do_t[t]
            if t < steps - 1:
                dy = _from_above_and_next(d_ys_t[t], dp_t[t + 1], w_hh)
            else:
                dy = torch.zeros_like(ds) if d_y_last is None else d_y_last
                if d_ys_t[t] is not None:
                    dy = dy + d_ys_t[t]
            # sigmoid' = a - a^2 for i and f (one call)
            torch.addcmul(a[:, :2 * h], a[:, :2 * h], a[:, :2 * h], value=-1.0, out=dp[:, :2 * h])
            # y = c o gives ds += dy (o (1 - c^2) [+ c o' p_o]); with y stored, c o' = y - o y and
            # o (1 - c^2) = o - y c are one op each.
            torch.addcmul(y, o, y, value=-1.0, out=dp_o)
            torch.addcmul(o, y, c, value=-1.0, out=k)
            if peephole is not None:
                k.addcmul_(dp_o, peephole[2])  # o_pre also sees s_t
            ds.addcmul_(dy, k)  # ds is now the whole grad wrt s_t
            dp_o.mul_(dy)
            # s_t = f s_{t-1} + i g: each slot gets ds times its local derivative.
            dp_i.mul_(g)
            dp_f.mul_(ss_t[t])
            dp[:, :2 * h].view(batch, 2, h).mul_(ds.unsqueeze(1))
            torch.addcmul(i, i, g.square(), value=-1.0, out=dp_g).mul_(ds)  # i tanh'(g) ds
            ds.mul_(f)  # now the grad wrt s_{t-1}
            if peephole is not None:
                ds.addcmul_(dp_i, peephole[0]).addcmul_(dp_f, peephole[1])
        d_w_hh = _recurrent_weight_grad(d_pre, y0, ys) if ctx.needs_input_grad[3] else None
        d_y0 = d_pre[0] @ w_hh if ctx.needs_input_grad[4] else None
        d_s0 = ds if ctx.needs_input_grad[5] else None
        d_peep = None
        if peephole is not None and ctx.needs_input_grad[6]:
            # p^i, p^f multiply s_{t-1}, p^o multiplies s_t: sums over time and batch.
            d_if = d_pre[..., :2 * h].unflatten(-1, (2, h)) * ss[:-1].unsqueeze(2)  # [T, batch, 2, hidden]
            d_peep = torch.cat([d_if.sum((0, 1)), (d_pre[..., 3 * h:] * ss[1:]).sum((0, 1)).unsqueeze(0)])
        return (*_project_grads(ctx, d_pre, x, w_ih), d_w_hh, d_y0, d_s0, d_peep)


def run_fused(layers: nn.ModuleList, x: Tensor, state: list, drop: nn.Module,
              dropout: float) -> tuple[Tensor, list]:
    """StackedRNN's forward through the fused Functions: x [batch, time, input], one state per layer."""
    inp = x.transpose(0, 1).contiguous()  # [time, batch, input]
    final: list = []
    for k, (layer, st) in enumerate(zip(layers, state)):
        if k > 0 and dropout > 0.0:
            inp = drop(inp)  # between layers only, as in the reference path
        if layer.n_state == 1:
            inp, s = ElmanSequence.apply(inp, layer.weight_ih, layer.bias, layer.weight_hh, st)
            final.append(s)
        else:
            inp, y, s = LSTMSequence.apply(inp, layer.weight_ih, layer.bias, layer.weight_hh, st[0], st[1],
                                           getattr(layer, "peephole", None))
            final.append((y, s))
    return inp.transpose(0, 1), final  # [batch, time, hidden]
