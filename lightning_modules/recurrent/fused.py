"""Whole-sequence autograd Functions for the recurrent cells: same equations, hand-written BPTT.

Why: with per-step autograd, every time step records ~10 graph nodes and its backward
runs one small ``dW_hh`` matmul per step plus an accumulation of a [n_gates*hidden, hidden]
gradient, all through the autograd engine. Here the forward runs the time loop without a
graph, storing only the gate activations and states; the backward runs BPTT by hand
(per step: ``dy_{t-1} = dgates_t W_hh`` and four elementwise ops, the rest of the local
derivatives formed for chunks of steps at once) and forms ``dW_hh = sum_t dgates_t^T y_{t-1}``
after the loop as ONE matmul over all [time*batch] rows. The input projection ``U x_t + b`` is
one matmul over the whole sequence (its output buffer is then reused in place for the gates),
and ``dU``, ``db`` come from one matmul too. Matmul backend, layouts and mixed precision:
lightning_modules/recurrent/kernels.py.

Everything is time-major ([time, batch, ...]) so each step's slice is contiguous; the
top layer's output is handed back as a [batch, time, hidden] view (as nn.LSTM(batch_first=True)).
Equations are exactly those of lightning_modules/recurrent/cells.py (gate order i, f, g, o;
peepholes: i and f see s_{t-1}, o sees s_t). Double backward is not supported.

Under ``torch.autocast`` ``run_fused`` picks the matmul dtype and runs the Functions with
autocast off, so that no op is recast behind their back (a bf16 ``addmm`` feeding an in-place op
on a float32 buffer is what used to fail); it works for any device type, unlike a
``custom_fwd(device_type=...)`` fixed to one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lightning_modules.recurrent import native
from lightning_modules.recurrent.kernels import (
    addmm_acc_,
    grad_at_last_step,
    grad_from_above_and_next,
    matmul_dtype,
    mm_as,
    project_input,
    project_input_grads,
    recurrent_weight_grad,
    two_sigmoid_minus_one,
)

__all__ = ["ElmanSequence", "LSTMSequence", "run_fused"]


class ElmanSequence(torch.autograd.Function):
    """``s_t = tanh(U x_t + b + W s_{t-1})`` over a whole sequence; returns (s_1..s_T, s_T)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w_ih: Tensor, bias: Tensor | None, w_hh: Tensor, s0: Tensor,
                md: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        # x [T, batch, input], w_ih [hidden, input], bias [hidden] or None, w_hh [hidden, hidden],
        # s0 [batch, hidden]; md: the matmul dtype (None: the weights')
        md = md or w_hh.dtype
        scale = w_hh.new_full((1,), 2.0)  # tanh(z) as 2 sigmoid(2 z) - 1 (kernels.py says why)
        pre, flat = project_input(x, w_ih, bias, scale, md)  # [T, batch, hidden]: scale (U x_t + b)
        ss = w_hh.new_empty(x.shape[0] + 1, *s0.shape)  # [T+1, batch, hidden]: s_0 .. s_T
        ss[0] = s0
        wt = torch.mul(w_hh, scale).t().contiguous().to(md)  # scale W^T, [in, out] row-major
        neg_one = w_hh.new_full((1,), -1.0)
        s = ss[0]
        for z, s_next in zip(pre.unbind(0), ss[1:].unbind(0)):
            z = addmm_acc_(z, s, wt)  # U x_t + b + W s_{t-1}
            s = two_sigmoid_minus_one(z, neg_one, out=s_next)
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
                    ds = grad_from_above_and_next(d_ys_t[t], d_pre_t[t + 1], w_md)
                elif d_ys_t[t] is not None:
                    ds = ds + d_ys_t[t]
                torch.addcmul(ds, ds, ys_t[t].square(), value=-1.0, out=d_pre_t[t])  # tanh' = 1 - s^2
            d_pre_md = d_pre.to(flat.dtype)
            d_w_hh = recurrent_weight_grad(d_pre_md, ss, w_hh.dtype) if ctx.needs_input_grad[3] else None
            d_s0 = mm_as(d_pre[0], w_md, ss.dtype) if ctx.needs_input_grad[4] else None
            return (*project_input_grads(ctx, d_pre_md, flat, w_ih), d_w_hh, d_s0, None)


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
        scale[2 * h:3 * h] = 2.0  # the g slot is computed as 2 sigmoid(2 g_pre) - 1 (= tanh(g_pre))
        # [T, batch, 4*hidden]: starts as the (scaled) U x_t + b, each step adds y_{t-1} W^T in
        # place, then it holds i, f, g, o after their nonlinearity (what backward needs).
        acts, flat = project_input(x, w_ih, bias, scale, md)
        wt = torch.mul(w_hh, scale.unsqueeze(1)).t().contiguous().to(md)  # [hidden, 4*hidden] row-major
        ss = w_hh.new_empty(steps + 1, batch, h)  # [T+1, batch, hidden]: s_0 .. s_T
        cs = w_hh.new_empty(steps, batch, h)  # [T, batch, hidden]: tanh(s_t), needed by backward
        ys = w_hh.new_empty(steps + 1, batch, h)  # [T+1, batch, hidden]: y_0 .. y_T (y_0 for dW_hh)
        ss[0], ys[0] = s0, y0
        lib = native.step_kernels(acts, wt, peephole)
        if lib is not None:  # the same step in one C pass (native.py says why)
            native.lstm_forward(lib, acts, wt, ss, cs, ys, peephole)
        else:
            _lstm_forward_ops(acts, wt, ss, cs, ys, peephole)
        ctx.save_for_backward(flat, w_ih, w_hh, peephole, acts, ss, cs, ys)
        ctx.x_dtype, ctx.x_shape, ctx.device_type = x.dtype, x.shape, x.device.type
        return ys[1:], ys[-1].clone(), ss[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_ys: Tensor | None, d_y_last: Tensor | None,
                 d_s_last: Tensor | None) -> tuple[Tensor | None, ...]:
        with torch.autocast(ctx.device_type, enabled=False):
            return _lstm_backward(ctx, d_ys, d_y_last, d_s_last)


def _lstm_forward_ops(acts: Tensor, wt: Tensor, ss: Tensor, cs: Tensor, ys: Tensor, peephole: Tensor | None) -> None:
    """LSTMSequence's time loop as torch ops (any device and dtype); buffers as in native.lstm_forward."""
    h = ss.shape[-1]
    neg_one = ss.new_full((1,), -1.0)
    # Per-step views made once (cheaper than slicing in the loop).
    a_t, ss_t, cs_t, ys_t = acts.unbind(0), ss.unbind(0), cs.unbind(0), ys.unbind(0)
    i_t, f_t, g_t, o_t = (v.unbind(0) for v in acts.unflatten(2, (4, h)).unbind(2))
    acts4_t = acts.unflatten(2, (4, h)).unbind(0)  # [batch, 4, hidden] per step
    # One sigmoid for the gates that are ready together: i, f, g (g's 2 sigmoid - 1 is fixed up
    # after), and o too without peepholes (with them o waits for s_t).
    sig_t = [a4[:, :3 if peephole is not None else 4] for a4 in acts4_t]
    # With peepholes i and f see s_{t-1}: their [batch, 2, hidden] views, s_{t-1} as [batch, 1, hidden]
    # views and the [2, hidden] weights.
    if_t, s_prev_t, p_if = (([a4[:, :2] for a4 in acts4_t], ss.unsqueeze(2).unbind(0), peephole[:2])
                            if peephole is not None else ([], (), None))
    for t in range(len(a_t)):
        addmm_acc_(a_t[t], ys_t[t], wt)  # [batch, 4*hidden] pre-activations: U x_t + b + W y_{t-1}
        i, f, g, o, s_prev, s, c = i_t[t], f_t[t], g_t[t], o_t[t], ss_t[t], ss_t[t + 1], cs_t[t]
        if p_if is not None:
            if_t[t].addcmul_(s_prev_t[t], p_if)  # i, f see s_{t-1}
        sig_t[t].sigmoid_()
        torch.add(neg_one, g, alpha=2.0, out=g)  # g = 2 sigmoid(2 g_pre) - 1 = tanh(g_pre)
        torch.mul(s_prev, f, out=s).addcmul_(i, g)  # s_t = s_{t-1} * f + g * i
        if peephole is not None:
            o.addcmul_(s, peephole[2])  # o sees the new s_t
            o.sigmoid_()
        two_sigmoid_minus_one(torch.add(s, s, out=c), neg_one, out=c)  # c = tanh(s_t)
        torch.mul(c, o, out=ys_t[t + 1])  # y_t = tanh(s_t) * o


# Backward takes the steps in chunks of this many: the factors that do not depend on the recurrence
# are formed for a whole chunk at once (a few ops on [chunk, batch, hidden] instead of ~10 per step).
CHUNK = 8


def _local_factors(acts: Tensor, ss: Tensor, cs: Tensor, ys: Tensor, peephole: Tensor | None, d_pre: Tensor,
                   k: Tensor, carry: Tensor) -> None:
    """For a chunk of steps ([C, ...] slices), everything BPTT needs that does not depend on later steps.

    With ds_t the grad wrt s_t and dy_t the one wrt y_t, the LSTM's local derivatives give
        ds_t = ds_{t+1} F_{t+1} + dy_t K_t,   d_pre_t = [ds_t L_i, ds_t L_f, ds_t L_g, dy_t L_o],
    and this fills d_pre with L = [sigma'(i) g, sigma'(f) s_{t-1}, i (1 - g^2), tanh(s_t) sigma'(o)],
    k with K = o (1 - tanh^2 s_t) (+ L_o p_o) and, with peepholes, carry with F = f + L_i p_i + L_f p_f
    (without them F is just f, read from acts). acts [C, batch, 4h], ss [C+1, batch, h] (s_{t-1}, s_t),
    cs/ys [C, batch, h] (tanh s_t, y_t).
    """
    i, f, g, o = acts.unflatten(-1, (4, -1)).unbind(-2)  # each [C, batch, hidden], post-nonlinearity
    l_i, l_f, l_g, l_o = d_pre.unflatten(-1, (4, -1)).unbind(-2)
    ig = i * g
    torch.addcmul(ig, ig, i, value=-1.0, out=l_i)  # i (1 - i) g
    torch.addcmul(i, ig, g, value=-1.0, out=l_g)  # i (1 - g^2)
    torch.mul(f, ss[:-1], out=l_f)
    l_f.addcmul_(l_f, f, value=-1.0)  # f (1 - f) s_{t-1}
    torch.addcmul(ys, ys, o, value=-1.0, out=l_o)  # tanh(s_t) o (1 - o) = y - y o
    torch.addcmul(o, ys, cs, value=-1.0, out=k)  # o (1 - tanh^2 s_t) = o - y tanh(s_t)
    if peephole is not None:
        k.addcmul_(l_o, peephole[2])  # o_pre also sees s_t
        torch.addcmul(f, l_i, peephole[0], out=carry).addcmul_(l_f, peephole[1])  # i, f_pre see s_{t-1}


def _peephole_grad_(acc: Tensor, d_pre: Tensor, ss: Tensor) -> None:
    """``acc`` [3, hidden] += the grads of p^i, p^f (they multiply s_{t-1}) and p^o (it multiplies s_t)
    over a chunk of finished steps, summed over time and batch: d_pre [C, batch, 4h], ss [C+1, batch, h]."""
    h = acc.shape[1]
    acc[:2] += (d_pre[..., :2 * h].unflatten(-1, (2, h)) * ss[:-1].unsqueeze(2)).sum((0, 1))
    acc[2] += (d_pre[..., 3 * h:] * ss[1:]).sum((0, 1))


def _lstm_backward(ctx: Any, d_ys: Tensor | None, d_y_last: Tensor | None,
                   d_s_last: Tensor | None) -> tuple[Tensor | None, ...]:
    """BPTT for LSTMSequence: per step ``dy_{t-1} = d_pre_t W`` and the local derivatives, then the weight grads."""
    flat, w_ih, w_hh, peephole, acts, ss, cs, ys = ctx.saved_tensors
    h = acts.shape[2] // 4
    w_md = w_hh.to(flat.dtype)
    d_pre = torch.empty_like(acts)  # [T, batch, 4*hidden]: grads wrt the gate pre-activations
    ds = torch.zeros_like(ss[0]) if d_s_last is None else torch.empty_like(ss[0]).copy_(d_s_last)  # [batch, hidden]
    d_peep = ss.new_zeros(3, h) if peephole is not None and ctx.needs_input_grad[6] else None
    lib = native.step_kernels(acts, w_md, peephole)
    if lib is not None:  # the same step in one C pass (native.py says why)
        native.lstm_backward(lib, acts, ss, cs, d_ys, d_y_last, ds, d_pre, w_md, peephole, d_peep)
    else:
        _lstm_bptt_ops(acts, ss, cs, ys, d_ys, d_y_last, ds, d_pre, w_md, peephole, d_peep)
    d_pre_md = d_pre.to(flat.dtype)
    d_w_hh = recurrent_weight_grad(d_pre_md, ys, w_hh.dtype) if ctx.needs_input_grad[3] else None
    d_y0 = mm_as(d_pre[0], w_md, ys.dtype) if ctx.needs_input_grad[4] else None
    d_s0 = ds if ctx.needs_input_grad[5] else None
    return (*project_input_grads(ctx, d_pre_md, flat, w_ih), d_w_hh, d_y0, d_s0, d_peep, None)


def _lstm_bptt_ops(acts: Tensor, ss: Tensor, cs: Tensor, ys: Tensor, d_ys: Tensor | None, d_y_last: Tensor | None,
                   ds: Tensor, d_pre: Tensor, w_md: Tensor, peephole: Tensor | None, d_peep: Tensor | None) -> None:
    """The BPTT loop as torch ops (any device and dtype); arguments as in native.lstm_backward."""
    steps, batch, h4 = acts.shape
    h = h4 // 4
    k = ss.new_empty(min(CHUNK, steps), batch, h)  # [chunk, batch, hidden]: K of the current chunk
    carry = torch.empty_like(k) if peephole is not None else None  # F of the current chunk (peepholes)
    dp_t, dp_o_t = d_pre.unbind(0), d_pre[..., 3 * h:].unbind(0)
    dp_ifg_t = [v[:, :3] for v in d_pre.unflatten(2, (4, h)).unbind(0)]  # [batch, 3, hidden]: i, f, g
    ds_b = ds.unsqueeze(1)  # [batch, 1, hidden] view; ds is updated in place throughout
    d_ys_t = [None] * steps if d_ys is None else d_ys.unbind(0)
    for t in range(steps - 1, -1, -1):
        t0 = t - t % CHUNK
        if t == steps - 1 or t % CHUNK == CHUNK - 1:  # entering a new chunk [t0, t]
            # Peephole grads are summed chunk by chunk while the chunk's d_pre is still in cache.
            if d_peep is not None and t < steps - 1:  # the chunk after it is finished
                _peephole_grad_(d_peep, d_pre[t + 1:t + 1 + CHUNK], ss[t + 1:t + 2 + CHUNK])
            n = t + 1 - t0
            _local_factors(acts[t0:t + 1], ss[t0:t + 2], cs[t0:t + 1], ys[t0 + 1:t + 2], peephole,
                           d_pre[t0:t + 1], k[:n], None if carry is None else carry[:n])
            k_t = k[:n].unbind(0)
            f_t = acts[t0:t + 1, :, h:2 * h].unbind(0) if carry is None else carry[:n].unbind(0)
        if t < steps - 1:
            dy = grad_from_above_and_next(d_ys_t[t], dp_t[t + 1], w_md)  # dy_t = d_out_t + d_pre_{t+1} W
        else:
            dy = grad_at_last_step(d_y_last, d_ys_t[t], ds)
        ds.addcmul_(dy, k_t[t - t0])  # ds_t = ds_{t+1} F_{t+1} + dy_t K_t
        dp_ifg_t[t].mul_(ds_b)  # i, f, g slots: ds_t L
        dp_o_t[t].mul_(dy)
        ds.mul_(f_t[t - t0])  # ds_{t+1} F_{t+1} for the step before
    if d_peep is not None:
        _peephole_grad_(d_peep, d_pre[:CHUNK], ss[:CHUNK + 1])  # the first chunk


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
