"""Whole-sequence autograd Functions for the recurrent cells: same equations, hand-written BPTT.

Why: with per-step autograd, every time step records ~10 graph nodes and its backward
runs one small ``dW_hh`` matmul per step plus an accumulation of a [n_gates*hidden, hidden]
gradient, all through the autograd engine. Here the forward runs the time loop without a
graph, storing only the gate activations and states; the backward runs BPTT by hand
(per step: the elementwise gate derivatives and ``dy_{t-1} = dgates_t W_hh``) and forms
``dW_hh = sum_t dgates_t^T y_{t-1}`` after the loop as ONE matmul over all [time*batch] rows.
The input projection ``U x_t + b`` is one matmul over the whole sequence (its output buffer
is then reused in place for the gates), and ``dU``, ``db`` come from one matmul too.

Everything is time-major ([time, batch, ...]) so each step's slice is contiguous; the
top layer's output is handed back as a [batch, time, hidden] view (as nn.LSTM(batch_first=True)).
Equations are exactly those of lightning_modules/recurrent.py (gate order i, f, g, o;
peepholes: i and f see s_{t-1}, o sees s_t). Double backward is not supported.

Matrix multiplies go through ATen's default CPU BLAS (MKL). We timed oneDNN for the same
shapes through every route torch offers (``F.linear`` on ``Tensor.to_mkldnn()`` tensors, the
public one; ``torch.ops.mkldnn._linear_pointwise`` with a prepacked weight, the fused-add
variant included) and it was slower here, at one and two threads: per step [64,256]x[256,1024]
MKL 125-135 GFLOP/s vs oneDNN 84-105 (one thread), and likewise for the big projection and
weight-gradient shapes. No public flag routes an exact float32 ``addmm`` to oneDNN on x86 (only
the bf16/tf32 ``fp32_precision`` modes do, which change the numbers). What did pay: the bias as
a column of ones on the input (no broadcast copy before the matmul, and ``db`` from the ``dU``
matmul) and weight gradients computed as ``x^T dgates`` (MKL is faster with this layout).

Mixed precision: under ``torch.autocast`` (e.g. Lightning's ``bf16-mixed``) the matmuls run in
the autocast dtype (oneDNN's bf16 kernels), their results are added into float32 buffers and
every elementwise op, state and stored activation stays float32. ``run_fused`` picks that dtype
and runs the Functions with autocast off, so no op is recast behind our back (an in-place op
on a recast tensor is what used to fail). Works for any device type, unlike a fixed
``custom_fwd(device_type=...)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["ElmanSequence", "LSTMSequence", "matmul_dtype", "run_fused"]


# Why no torch.tanh in the loops: on CPU it goes through MKL's vector math, which splits even a
# [64, 256] tensor across threads; on a shared 2-core machine each call then waits for a
# descheduled thread (measured 15 ms vs 0.1 ms per call). We use tanh(x) = 2 sigmoid(2x) - 1
# instead, with the factor 2 folded into the weights once per sequence (scaling by 2 is exact
# in floating point). Same function; the result differs from torch.tanh only in rounding
# (~1e-7 absolute in float32). Scalars are passed as tensors/alphas because a Python scalar
# operand costs an extra tensor conversion per call.
#
# Per-step elementwise ops work on one or two gate slices ([batch, hidden] or [batch, 2*hidden]),
# not on all four at once: ATen splits an op on 32768 elements or more across threads, and at
# these sizes the rendezvous costs more than it saves; under load from other processes it costs
# milliseconds per call.


def matmul_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype the matmuls run in: autocast's for x's device if it is on and weights are float32."""
    dev = x.device.type
    if weight.dtype == torch.float32 and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return weight.dtype


def _two_sigmoid_minus_one(z: Tensor, neg_one: Tensor, out: Tensor) -> Tensor:
    """``out = 2 sigmoid(z) - 1`` (= tanh(z / 2)); ``out`` may be ``z``."""
    return torch.add(neg_one, torch.sigmoid(z, out=out), alpha=2.0, out=out)


def _mm(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """``a @ b`` in b's dtype (the matmul dtype), returned as ``dtype``; the casts are no-ops in full precision."""
    return torch.mm(a.to(b.dtype), b).to(dtype)


def _addmm_(acc: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``acc += a @ b`` in place; b is in the matmul dtype, acc keeps its own (float32 under autocast)."""
    return acc.addmm_(a, b) if b.dtype == acc.dtype else acc.add_(_mm(a, b, acc.dtype))


def _project(x: Tensor, w_ih: Tensor, bias: Tensor | None, scale: Tensor,
             md: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(U x_t + b) * scale`` for all steps in one matmul.

    x [T, batch, input] -> (a fresh [T, batch, n_gates*hidden] in w_ih's dtype, the matmul's left
    operand [T*batch, input(+1)] in ``md``, kept for backward). The bias rides as a column of ones
    on x. ``scale`` ([n_gates*hidden]; powers of 2, so exact) is folded into the small U and b.
    """
    w = w_ih * scale.unsqueeze(1)  # [G, input]
    flat = x.reshape(-1, x.shape[-1])  # [T*batch, input]
    if bias is not None:
        w = torch.cat([w, (bias * scale).unsqueeze(1)], 1)  # [G, input+1]
        flat = torch.cat([flat, flat.new_ones(flat.shape[0], 1)], 1)  # [T*batch, input+1]
    flat = flat.to(md)
    out = _mm(flat, w.t().to(md), w_ih.dtype)  # [T*batch, G]
    return out.view(*x.shape[:-1], -1), flat


def _project_grads(ctx: Any, d_pre: Tensor, flat: Tensor, w_ih: Tensor) -> tuple[Tensor | None, ...]:
    """Grads of x, U, b (inputs 0, 1, 2) from d_pre [T, batch, G] and the forward's [T*batch, input(+1)] operand."""
    md = flat.dtype
    d = d_pre.flatten(0, 1).to(md)  # [T*batch, G]
    d_x = _mm(d, w_ih.to(md), ctx.x_dtype).view(ctx.x_shape) if ctx.needs_input_grad[0] else None
    d_w_ih = d_b = None
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        d_wb = torch.mm(flat.t(), d).t().to(w_ih.dtype)  # [G, input(+1)]: x^T d is the faster layout
        n_in = w_ih.shape[1]
        d_w_ih = d_wb[:, :n_in] if ctx.needs_input_grad[1] else None
        d_b = d_wb[:, n_in] if ctx.needs_input_grad[2] else None  # the ones column
    return d_x, d_w_ih, d_b


def _from_above_and_next(d_out: Tensor | None, d_pre_next: Tensor, w_hh: Tensor) -> Tensor:
    """Grad reaching a step's output: from above (``d_out``, None if nothing used it) plus ``d_pre_{t+1} W``."""
    if d_out is not None and w_hh.dtype == d_pre_next.dtype:
        return torch.addmm(d_out, d_pre_next, w_hh)
    dy = _mm(d_pre_next, w_hh, d_pre_next.dtype)
    return dy if d_out is None else dy.add_(d_out)


def _recurrent_weight_grad(d_pre: Tensor, outputs: Tensor, dtype: torch.dtype) -> Tensor:
    """``sum_t d_pre_t^T y_{t-1}`` in one matmul; ``outputs`` [T+1, batch, hidden] holds y_0 .. y_T."""
    md = d_pre.dtype
    return torch.mm(outputs[:-1].flatten(0, 1).t().to(md), d_pre.flatten(0, 1)).t().to(dtype)


class ElmanSequence(torch.autograd.Function):
    """``s_t = tanh(U x_t + b + W s_{t-1})`` over a whole sequence; returns (s_1..s_T, s_T)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w_ih: Tensor, bias: Tensor | None, w_hh: Tensor, s0: Tensor,
                md: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        # x [T, batch, input], w_ih [hidden, input], bias [hidden] or None, w_hh [hidden, hidden],
        # s0 [batch, hidden]; md: the matmul dtype (None: the weights')
        md = md or w_hh.dtype
        two = w_hh.new_full((1,), 2.0)
        pre, flat = _project(x, w_ih, bias, two, md)  # [T, batch, hidden]: 2 (U x_t + b)
        ss = w_hh.new_empty(x.shape[0] + 1, *s0.shape)  # [T+1, batch, hidden]: s_0 .. s_T
        ss[0] = s0
        wt2 = torch.add(w_hh, w_hh).t().contiguous().to(md)  # 2 W^T, [in, out] row-major
        neg_one = w_hh.new_full((1,), -1.0)
        s = ss[0]
        for z, s_next in zip(pre.unbind(0), ss[1:].unbind(0)):
            s = _two_sigmoid_minus_one(_addmm_(z, s, wt2), neg_one, out=s_next)  # tanh(U x_t + b + W s_{t-1})
        ctx.save_for_backward(flat, w_ih, w_hh, ss)
        ctx.x_dtype, ctx.x_shape, ctx.device_type = x.dtype, x.shape, x.device.type
        return ss[1:], ss[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_ys: Tensor | None, d_last: Tensor | None) -> tuple[Tensor | None, ...]:
        flat, w_ih, w_hh, ss = ctx.saved_tensors
        with torch.autocast(ctx.device_type, enabled=False):
            steps = ss.shape[0] - 1
            w_md = w_hh.to(flat.dtype)
            d_pre = torch.empty_like(ss[1:])  # [T, batch, hidden]: grad wrt the pre-activation
            d_pre_t, ys_t = d_pre.unbind(0), ss[1:].unbind(0)
            d_ys_t = [None] * steps if d_ys is None else d_ys.unbind(0)
            ds = torch.zeros_like(ss[0]) if d_last is None else d_last  # [batch, hidden]
            for t in range(steps - 1, -1, -1):
                if t < steps - 1:
                    ds = _from_above_and_next(d_ys_t[t], d_pre_t[t + 1], w_md)
                elif d_ys_t[t] is not None:
                    ds = ds + d_ys_t[t]
                torch.addcmul(ds, ds, ys_t[t].square(), value=-1.0, out=d_pre_t[t])  # tanh' = 1 - s^2
            d_pre_md = d_pre.to(flat.dtype)
            d_w_hh = _recurrent_weight_grad(d_pre_md, ss, w_hh.dtype) if ctx.needs_input_grad[3] else None
            d_s0 = _mm(d_pre[0], w_md, ss.dtype) if ctx.needs_input_grad[4] else None
            return (*_project_grads(ctx, d_pre_md, flat, w_ih), d_w_hh, d_s0, None)


class LSTMSequence(torch.autograd.Function):
    """LSTM (optionally peephole) over a whole sequence; returns (y_1..y_T, y_T, s_T)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w_ih: Tensor, bias: Tensor | None, w_hh: Tensor, y0: Tensor, s0: Tensor,
                peephole: Tensor | None, md: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]:
        # x [T, batch, input], w_ih [4*hidden, input], bias [4*hidden] or None, w_hh [4*hidden, hidden],
        # y0/s0 [batch, hidden], peephole None or [3, hidden] (p^i, p^f, p^o); md: the matmul dtype.
        steps, batch, _ = x.shape
        h = w_hh.shape[1]
        md = md or w_hh.dtype
        scale = w_hh.new_ones(4 * h)
        scale[2 * h:3 * h] = 2.0  # the g slot is computed as 2 sigmoid(2 g_pre) - 1
        # [T, batch, 4*hidden]: starts as the (scaled) U x_t + b, each step adds y_{t-1} W^T in
        # place, then it holds i, f, g, o after their nonlinearity (what backward needs).
        acts, flat = _project(x, w_ih, bias, scale, md)
        wt = torch.mul(w_hh, scale.unsqueeze(1)).t().contiguous().to(md)  # [hidden, 4*hidden] row-major
        neg_one = w_hh.new_full((1,), -1.0)
        ss = w_hh.new_empty(steps + 1, batch, h)  # [T+1, batch, hidden]: s_0 .. s_T
        cs = w_hh.new_empty(steps, batch, h)  # [T, batch, hidden]: tanh(s_t), needed by backward
        ys = w_hh.new_empty(steps + 1, batch, h)  # [T+1, batch, hidden]: y_0 .. y_T (y_0 for dW_hh)
        ss[0], ys[0] = s0, y0
        # Per-step views made once in C++ (cheaper than slicing in the loop).
        a_t, ss_t, cs_t, ys_t = acts.unbind(0), ss.unbind(0), cs.unbind(0), ys.unbind(0)
        i_t, f_t, g_t, o_t = (v.unbind(0) for v in acts.unflatten(2, (4, h)).unbind(2))
        for t in range(steps):
            a = _addmm_(a_t[t], ys_t[t], wt)  # [batch, 4*hidden] pre-activations: U x_t + b + W y_{t-1}
            i, f, g, o, s_prev, s, c = i_t[t], f_t[t], g_t[t], o_t[t], ss_t[t], ss_t[t + 1], cs_t[t]
            i_f = a[:, :2 * h]
            if peephole is not None:
                i_f.view(batch, 2, h).addcmul_(s_prev.unsqueeze(1), peephole[:2])  # i, f see s_{t-1}
            i_f.sigmoid_()
            _two_sigmoid_minus_one(g, neg_one, out=g)  # g = tanh(g_pre)
            torch.mul(s_prev, f, out=s).addcmul_(i, g)  # s_t = s_{t-1} * f + g * i
            if peephole is not None:
                o.addcmul_(s, peephole[2])  # o sees the new s_t
            o.sigmoid_()
            _two_sigmoid_minus_one(torch.add(s, s, out=c), neg_one, out=c)  # c = tanh(s_t)
            torch.mul(c, o, out=ys_t[t + 1])  # y_t = tanh(s_t) * o
        ctx.save_for_backward(flat, w_ih, w_hh, peephole, acts, ss, cs, ys)
        ctx.x_dtype, ctx.x_shape, ctx.device_type = x.dtype, x.shape, x.device.type
        return ys[1:], ys[-1].clone(), ss[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_ys: Tensor | None, d_y_last: Tensor | None,
                 d_s_last: Tensor | None) -> tuple[Tensor | None, ...]:
        with torch.autocast(ctx.device_type, enabled=False):
            return _lstm_backward(ctx, d_ys, d_y_last, d_s_last)


def _lstm_backward(ctx: Any, d_ys: Tensor | None, d_y_last: Tensor | None,
                   d_s_last: Tensor | None) -> tuple[Tensor | None, ...]:
    """BPTT for LSTMSequence: per step the gate derivatives and ``dy_{t-1} = d_pre_t W``, then the weight grads."""
    flat, w_ih, w_hh, peephole, acts, ss, cs, ys = ctx.saved_tensors
    steps, batch, h4 = acts.shape
    h = h4 // 4
    w_md = w_hh.to(flat.dtype)
    d_pre = torch.empty_like(acts)  # [T, batch, 4*hidden]: grads wrt the gate pre-activations
    ds = torch.zeros_like(ss[0]) if d_s_last is None else d_s_last.clone()  # [batch, hidden], grad wrt s_t
    k = torch.empty_like(ds)  # scratch [batch, hidden]
    a_t, dp_t, ss_t, cs_t, ys_t = acts.unbind(0), d_pre.unbind(0), ss.unbind(0), cs.unbind(0), ys[1:].unbind(0)
    i_t, f_t, g_t, o_t = (v.unbind(0) for v in acts.unflatten(2, (4, h)).unbind(2))
    di_t, df_t, dg_t, do_t = (v.unbind(0) for v in d_pre.unflatten(2, (4, h)).unbind(2))
    d_ys_t = [None] * steps if d_ys is None else d_ys.unbind(0)
    for t in range(steps - 1, -1, -1):
        a, dp, c, y = a_t[t], dp_t[t], cs_t[t], ys_t[t]
        i, f, g, o = i_t[t], f_t[t], g_t[t], o_t[t]
        dp_i, dp_f, dp_g, dp_o = di_t[t], df_t[t], dg_t[t], do_t[t]
        if t < steps - 1:
            dy = _from_above_and_next(d_ys_t[t], dp_t[t + 1], w_md)
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
    d_pre_md = d_pre.to(flat.dtype)
    d_w_hh = _recurrent_weight_grad(d_pre_md, ys, w_hh.dtype) if ctx.needs_input_grad[3] else None
    d_y0 = _mm(d_pre[0], w_md, ys.dtype) if ctx.needs_input_grad[4] else None
    d_s0 = ds if ctx.needs_input_grad[5] else None
    d_peep = None
    if peephole is not None and ctx.needs_input_grad[6]:
        # p^i, p^f multiply s_{t-1}, p^o multiplies s_t: sums over time and batch.
        d_if = d_pre[..., :2 * h].unflatten(-1, (2, h)) * ss[:-1].unsqueeze(2)  # [T, batch, 2, hidden]
        d_peep = torch.cat([d_if.sum((0, 1)), (d_pre[..., 3 * h:] * ss[1:]).sum((0, 1)).unsqueeze(0)])
    return (*_project_grads(ctx, d_pre_md, flat, w_ih), d_w_hh, d_y0, d_s0, d_peep, None)


def run_fused(layers: nn.ModuleList, x: Tensor, state: list, drop: nn.Module,
              dropout: float) -> tuple[Tensor, list]:
    """StackedRNN's forward through the fused Functions: x [batch, time, input], one state per layer."""
    md = matmul_dtype(x, layers[0].weight_hh)
    inp = x.transpose(0, 1).contiguous()  # [time, batch, input]
    final: list = []
    for k, (layer, st) in enumerate(zip(layers, state)):
        if k > 0 and dropout > 0.0:
            inp = drop(inp)  # between layers only, as in the reference path
        # Autocast off inside: the Functions cast the matmul operands to md themselves.
        with torch.autocast(x.device.type, enabled=False):
            if layer.n_state == 1:
                inp, s = ElmanSequence.apply(inp, layer.weight_ih, layer.bias, layer.weight_hh, st, md)
                final.append(s)
            else:
                inp, y, s = LSTMSequence.apply(inp, layer.weight_ih, layer.bias, layer.weight_hh, st[0], st[1],
                                               getattr(layer, "peephole", None), md)
                final.append((y, s))
    return inp.transpose(0, 1), final  # [batch, time, hidden]
