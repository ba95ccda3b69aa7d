"""Sample figures for the image models' ``make_samples``: a batch as one grid, or pairs / triplets side by side.

The images are tiled into one array and drawn with a single ``imshow``: one axes per image would cost
seconds per epoch at 64 images. Figures are built with ``matplotlib.figure.Figure`` directly, not
pyplot, so no GUI backend is touched and nothing stays registered after the suite closes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def tile(images: Tensor, ncol: int, pad: int = 1, pad_value: float = 1.0, group: int = 0) -> np.ndarray:
    """Images [N, C, H, W] in [0, 1] -> one array [rows * (H + pad) + pad, ncol * (W + pad) + pad + gaps(, 3)].

    Grey (C = 1) gives a 2-d array, colour (C = 3) an RGB one; empty cells are filled with ``pad_value``.
    ``group`` > 0 adds a gap of W / 2 after every ``group`` columns (to set pairs or triplets apart).
    """
    if images.dim() != 4 or images.size(1) not in (1, 3):
        raise ValueError(f"images must be [N, 1 or 3, H, W], got {list(images.shape)}")
    n, c, h, w = images.shape
    ncol = max(1, min(ncol, n))
    rows = math.ceil(n / ncol)
    gap = w // 2 if group > 0 else 0
    gaps = (ncol - 1) // group if group > 0 else 0
    x = images.detach().float().cpu().clamp(0, 1)
    canvas = torch.full((c, rows * (h + pad) + pad, ncol * (w + pad) + pad + gaps * gap), pad_value)
    for i in range(n):
        r, k = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + k * (w + pad) + (k // group if group > 0 else 0) * gap
        canvas[:, top:top + h, left:left + w] = x[i]
    array = canvas.numpy()
    return array[0] if c == 1 else array.transpose(1, 2, 0)


def _figure(array: np.ndarray, title: str | None, inches_per_pixel: float) -> object:
    from matplotlib.figure import Figure  # lazy: matplotlib costs a second to import

    height, width = array.shape[:2]
    fig = Figure(figsize=(max(2.0, width * inches_per_pixel), max(2.0, height * inches_per_pixel) + (0.4 if title else 0)))
    ax = fig.add_subplot()
    # vmin/vmax pin the grey scale, so an all-dark sample is shown dark rather than stretched.
    ax.imshow(array, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def image_grid(images: Tensor, ncol: int | None = None, title: str | None = None,
               inches_per_pixel: float = 0.04) -> object:
    """A matplotlib Figure of images [N, C, H, W] in [0, 1], tiled ``ncol`` across (default: a square)."""
    ncol = ncol or math.ceil(math.sqrt(len(images)))
    return _figure(tile(images, ncol), title, inches_per_pixel)


def columns_grid(columns: Sequence[Tensor], names: Sequence[str], groups: int | None = None,
                 inches_per_pixel: float = 0.05) -> object:
    """Side-by-side examples: ``columns[k][i]`` is part k of example i (e.g. edges | output | target).

    Each example is one row of ``len(columns)`` images; the rows are laid out in ``groups`` blocks across
    the page (default: a near-square picture), so 16 triplets make 8 rows of 2 triplets, not a 16 x 3 strip.
    """
    if not columns or len(columns) != len(names):
        raise ValueError(f"need one name per column, got {len(columns)} columns and {len(names)} names")
    n = len(columns[0])
    if any(len(col) != n or col.shape[1:] != columns[0].shape[1:] for col in columns):
        raise ValueError(f"every column must hold the same number of same-shaped images, got {[list(c.shape) for c in columns]}")
    k = len(columns)
    groups = groups or max(1, round(math.sqrt(n / k)))
    interleaved = torch.stack([col.detach().float().cpu() for col in columns], dim=1).flatten(0, 1)  # [n * k, C, H, W]
    title = "columns: " + " | ".join(names)
    return _figure(tile(interleaved, ncol=k * groups, group=k), title, inches_per_pixel)
