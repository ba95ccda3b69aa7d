"""Building blocks of the fused recurrent Functions (lightning_modules/recurrent/fused.py): matmuls in
the right dtype and layout, and why the loops' elementwise ops take the form they do.

Matmul backend, float32 on CPU: oneDNN for the input projection ``U x_t + b`` (its bias fused), its
input grad ``d_pre U`` and, in native.py's loops, each step's ``W y_{t-1}`` and ``d_pre_t W`` (weights
packed once per sequence); MKL (ATen's ``mm``) for the weight grads ``x^T d_pre``, for which oneDNN
would need transposed copies of [T*batch, ...] operands. No public flag sends an exact float32 matmul
to oneDNN on x86 (ATen's ``use_mkldnn_matmul`` takes float32 only in the bf16/tf32
``fp32_precision`` modes, which change the numbers; ``Tensor.to_mkldnn()`` costs a copy of each
operand and result), so this calls ``torch.ops.mkldnn._linear_pointwise`` with a weight from
``torch.ops.mkldnn._reorder_linear_weight``: private ops, guarded (MKL where they are missing). The
shapes at T=100, batch 64, hidden 256 (AMD EPYC, interleaved medians, ms, MKL / oneDNN):
[6400, 257|256] x [.., 1024] 35.1 / 26.2 at two threads, 72.7 / 54.2 at one; [6400, 1024] x [1024, 256]
36.9 / 28.4 and 55.9 / 50.9; a step's [64, 256] x [256, 1024] 0.342 / 0.290 and 0.548 / 0.553. An
earlier measurement on a busier host had MKL ahead, which is why the comparison is quoted here.
Elsewhere (float64, CUDA, autocast) everything goes through ATen, with the bias as a column of ones
on the input (no broadcast copy; ``db`` falls out of the ``dU`` matmul).

Mixed precision: under ``torch.autocast`` (Lightning's ``bf16-mixed``) the matmuls run in the
autocast dtype (oneDNN's bf16 kernels, through ATen) and their results are added into float32
buffers; every elementwise op, state and stored activation stays float32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["addmm_acc_", "grad_at_last_step", "grad_from_above_and_next", "matmul_dtype", "mm_as",
           "onednn_linear", "onednn_linear_ok", "onednn_pack", "project_input",
           "project_input_grads", "recurrent_weight_grad", "two_sigmoid_minus_one"]

# oneDNN's linear with a prepacked weight; torch.ops.mkldnn is its only exact-float32 route (module docstring).
_ONEDNN = hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")

# tanh in the loops is always 2 sigmoid(2x) - 1, with the factor 2 folded into the weights once per
# sequence (scaling by 2 is exact in floating point); it differs from torch.tanh only in rounding (~2e-7
# in float32). Why not torch.tanh: it goes through MKL's vector math, whose speed depends on the CPU
# and the thread count. On an AMD EPYC (AVX2, one thread) a [64, 256] tanh took 57-70 us against 32 us
# for sigmoid-and-add, the sigmoid 18-24 us; and ATen splits that vector math across threads from 2048
# elements on, so at two threads even a [64, 256] tanh is a parallel region.
# Scalars are passed as tensors/alphas: a Python scalar operand costs a tensor conversion per call.
#
# Gates that are ready together take one elementwise op over their [batch, n, hidden] view. ATen runs
# such an op on several threads from 32768 elements on, as torch's own LSTM spreads its gate math; at
# two threads (T=100, batch 64, hidden 256, AMD EPYC) that made the LSTM's forward+backward 5-20% faster
# than one op per gate kept single-threaded, the peephole LSTM's no slower, idle or with a busy process
# beside it.


def matmul_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype the matmuls run in: autocast's for x's device if it is on and weights are float32."""
    dev = x.device.type
    if weight.dtype == torch.float32 and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return weight.dtype


def two_sigmoid_minus_one(z: Tensor, neg_one: Tensor, out: Tensor) -> Tensor:
    """``out = 2 sigmoid(z) - 1`` (= tanh(z / 2)); ``out`` may be ``z``."""
    return torch.add(neg_one, torch.sigmoid(z, out=out), alpha=2.0, out=out)


def mm_as(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """``a @ b`` in b's dtype (the matmul dtype), returned as ``dtype``; the casts are no-ops in full precision."""
    return torch.mm(a.to(b.dtype), b).to(dtype)


def addmm_acc_(acc: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``acc += a @ b`` in place; b is in the matmul dtype, acc keeps its own (float32 under autocast)."""
    return acc.addmm_(a, b) if b.dtype == acc.dtype else acc.add_(mm_as(a, b, acc.dtype))


def onednn_linear_ok(*tensors: Tensor) -> bool:
    """True where the whole-sequence matmuls go through oneDNN: CPU float32 with torch's oneDNN ops."""
    return (_ONEDNN and torch.backends.mkldnn.is_available()
            and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors))


def onednn_pack(w: Tensor, rows: int) -> Tensor:
    """A [N, K] weight packed by oneDNN for ``onednn_linear`` on [rows, K] inputs (float32, CPU)."""
    return torch.ops.mkldnn._reorder_linear_weight(w, rows)


def onednn_linear(a: Tensor, packed: Tensor, bias: Tensor | None = None) -> Tensor:
    """``a w^T (+ bias)``: a [M, K], ``packed`` from ``onednn_pack(w, M)``; a fresh [M, N] (float32, CPU)."""
    return torch.ops.mkldnn._linear_pointwise(a, packed, bias, "none", [], "")


def project_input(x: Tensor, w_ih: Tensor, bias: Tensor | None, scale: Tensor,
                  md: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(U x_t + b) * scale`` for all steps in one matmul.

    x [T, batch, input] -> (a fresh [T, batch, n_gates*hidden] in w_ih's dtype, the matmul's left
    operand [T*batch, input(+1)] in ``md``, kept for backward). ``scale`` ([n_gates*hidden]; powers
    of 2, so exact) is folded into the small U and b. In float32 on CPU oneDNN adds the bias;
    elsewhere it rides as a column of ones on x (one matmul, and ``db`` falls out of ``dU``'s).
    """
    w = w_ih * scale.unsqueeze(1)  # [G, input]
    flat = x.reshape(-1, x.shape[-1])  # [T*batch, input]
    if md == torch.float32 and onednn_linear_ok(flat, w):
        out = onednn_linear(flat, onednn_pack(w, flat.shape[0]), None if bias is None else bias * scale)
        return out.view(*x.shape[:-1], -1), flat
    if bias is not None:
        w = torch.cat([w, (bias * scale).unsqueeze(1)], 1)  # [G, input+1]
        flat = torch.cat([flat, flat.new_ones(flat.shape[0], 1)], 1)  # [T*batch, input+1]
    flat = flat.to(md)
    out = mm_as(flat, w.t().to(md), w_ih.dtype)  # [T*batch, G]
    return out.view(*x.shape[:-1], -1), flat


def project_input_grads(ctx: Any, d_pre: Tensor, flat: Tensor, w_ih: Tensor) -> tuple[Tensor | None, ...]:
    """Grads of x, U, b (inputs 0, 1, 2) from d_pre [T, batch, G] and the forward's [T*batch, input(+1)] operand."""
    md = flat.dtype
    n_in = w_ih.shape[1]
    ones_column = flat.shape[1] == n_in + 1  # else the bias was added by oneDNN (float32 CPU)
    d = d_pre.flatten(0, 1).to(md)  # [T*batch, G]
    d_x = None
    if ctx.needs_input_grad[0]:
        d_x = (mm_as(d, w_ih.to(md), ctx.x_dtype) if ones_column or not onednn_linear_ok(d, w_ih)
               else onednn_linear(d, onednn_pack(w_ih.t().contiguous(), d.shape[0]))).view(ctx.x_shape)
    d_w_ih = d_b = None
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        d_wb = torch.mm(flat.t(), d).t().to(w_ih.dtype)  # [G, input(+1)]: x^T d is the faster layout
        d_w_ih = d_wb[:, :n_in] if ctx.needs_input_grad[1] else None
        if ctx.needs_input_grad[2]:
            d_b = d_wb[:, n_in] if ones_column else d.sum(0).to(w_ih.dtype)  # the ones column, or sum_rows d
    return d_x, d_w_ih, d_b


def grad_at_last_step(d_y_last: Tensor | None, d_out: Tensor | None, like: Tensor) -> Tensor:
    """Grad reaching the last step's output: through the returned final output plus from above (None: no use)."""
    dy = torch.zeros_like(like) if d_y_last is None else d_y_last
    return dy if d_out is None else dy + d_out


def grad_from_above_and_next(d_out: Tensor | None, d_pre_next: Tensor, w_hh: Tensor) -> Tensor:
    """Grad reaching a step's output: from above (``d_out``, None if nothing used it) plus ``d_pre_{t+1} W``."""
    if d_out is not None and w_hh.dtype == d_pre_next.dtype:
        return torch.addmm(d_out, d_pre_next, w_hh)
    dy = mm_as(d_pre_next, w_hh, d_pre_next.dtype)
    return dy if d_out is None else dy.add_(d_out)


def recurrent_weight_grad(d_pre: Tensor, outputs: Tensor, dtype: torch.dtype) -> Tensor:
    """``sum_t d_pre_t^T y_{t-1}`` in one matmul; ``outputs`` [T+1, batch, hidden] holds y_0 .. y_T."""
    md = d_pre.dtype
    return torch.mm(outputs[:-1].flatten(0, 1).t().to(md), d_pre.flatten(0, 1)).t().to(dtype)
