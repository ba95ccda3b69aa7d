"""The trivial baselines of image likelihood: every pixel independent of every other.

- ``IndependentCategorical``: one categorical over the ``levels`` pixel values per pixel position (8-bit images:
  256), the baseline of a DDPM's bits/dim. Add-α (Laplace, α = 1 by default) smoothing: p_d(k) = (n_dk + α) /
  (N + α K) for N training images and K levels, so a value never seen at a position in training still has
  non-zero probability (without it one unseen test value makes the NLL infinite).
- ``IndependentBernoulli``: one Bernoulli per pixel for binarized images, the baseline of the VAEs' nats:
  p_d = (n_d + α) / (N + 2 α), the same smoothing with K = 2.

Both are fitted by counting on the training split and score held-out images in nats per image (the sum of
-log p over pixels) and bits per dimension (nats / (D ln 2)). What they miss is exactly what a model of images
must learn: how pixels depend on each other.

``python -m estimators.pixel_baselines [--data-dir DIR]`` prints both for Fashion-MNIST's official test set with the
DDPM's and the VAEs' preprocessing (the datamodule's train split, 8-bit or binarized at 0.5, unpadded 28x28).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["IndependentBernoulli", "IndependentCategorical", "baseline_scores"]


def _levels_of(images: Tensor, levels: int) -> Tensor:
    """Images [N, ...] as integer levels 0..levels-1 [N, D]; floats in [0, 1] are scaled by levels - 1."""
    flat = images.flatten(1)
    if flat.is_floating_point():
        scaled = flat * (levels - 1)
        if float((scaled - scaled.round()).abs().max()) > 1e-3:
            raise ValueError(f"images are not on a grid of {levels} levels in [0, 1]")
        flat = scaled.round()
    flat = flat.long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= levels):
        raise ValueError(f"pixel values must be in 0..{levels - 1}, got {int(flat.min())}..{int(flat.max())}")
    return flat  # [N, D]


class IndependentCategorical:
    """p(x) = Π_d p_d(x_d), each p_d a smoothed categorical over ``levels`` values counted on the training images."""

    def __init__(self, levels: int = 256, alpha: float = 1.0) -> None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive (add-alpha smoothing), got {alpha!r}")
        self.levels, self.alpha = levels, float(alpha)
        self.log_probs: Tensor | None = None  # [D, levels], float64

    def fit(self, images: Tensor) -> IndependentCategorical:
        """Counts n_dk over the training images [N, ...] (integer levels, or floats in [0, 1])."""
        x = _levels_of(images, self.levels)  # [N, D]
        n, d = x.shape
        if n == 0:
            raise ValueError("cannot fit on zero images")
        counts = torch.zeros(d, self.levels, dtype=torch.float64)
        counts.scatter_add_(1, x.T.contiguous(), torch.ones(d, n, dtype=torch.float64))  # [D, levels]
        self.log_probs = torch.log((counts + self.alpha) / (n + self.alpha * self.levels))
        return self

    def nll(self, images: Tensor) -> Tensor:
        """-log p(x) in nats per image [N], float64."""
        if self.log_probs is None:
            raise ValueError("call fit before nll")
        x = _levels_of(images, self.levels)  # [N, D]
        if x.shape[1] != self.log_probs.shape[0]:
            raise ValueError(f"fitted on {self.log_probs.shape[0]} pixels, got images of {x.shape[1]}")
        return -self.log_probs.gather(1, x.T.contiguous()).sum(0)  # gather [D, N] -> sum over pixels


class IndependentBernoulli(IndependentCategorical):
    """The categorical with two levels: p_d = P(x_d = 1) = (n_d + α) / (N + 2 α), for binarized images."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__(levels=2, alpha=alpha)


def baseline_scores(model: IndependentCategorical, test: Tensor) -> dict[str, Any]:
    """Mean test NLL in nats per image and bits per dimension, with its settings (counts and smoothing)."""
    nll = model.nll(test)  # [N]
    dims = test[0].numel()
    return {
        "nll_nats": float(nll.mean()),
        "nll_nats_sem": float(nll.std() / math.sqrt(len(nll))) if len(nll) > 1 else 0.0,
        "bpd": float(nll.mean()) / (dims * math.log(2)),
        "test_images": len(nll),
        "dims": dims,
        "levels": model.levels,
        "smoothing": f"add-{model.alpha:g} (Laplace)",
    }


def fashion_mnist_baselines(data_dir: str | None = None) -> dict[str, dict[str, Any]]:
    """Both baselines on Fashion-MNIST: fitted on the datamodule's train split, scored on the official test set."""
    from datamodules.images import FashionMNISTDataModule  # lazy: only the command needs the data

    scores = {}
    for name, binarize, model in (("categorical_8bit", False, IndependentCategorical(256)),
                                  ("bernoulli_binarized", True, IndependentBernoulli())):
        dm = FashionMNISTDataModule(binarize=binarize, data_dir=data_dir)
        model.fit(dm.images("train"))
        scores[name] = baseline_scores(model, dm.images("test")) | {"train_images": len(dm.images("train")),
                                                                     "binarize": binarize}
    return scores


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    print(json.dumps(fashion_mnist_baselines(parser.parse_args().data_dir), indent=2))
