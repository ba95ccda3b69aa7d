"""The evaluation plumbing of the image likelihood models, written once.

- ``SeededEvaluation`` (the VAE, the hierarchical VAE and DDPM): the checkpoint monitor, Adam on every
  parameter, and the val/test noise drawn from a CPU generator reset to ``EVAL_SEED`` at the start of
  every val and test epoch, so epochs compare on the same noise and every device gives the same numbers
  (``bounds.randn`` draws where the generator lives and moves the draws).
- ``LatentVariableModel`` (the two VAEs): the -ELBO logging, the importance-weighted test NLL of the
  first ``nll_images`` test images, the settings that describe it, and the sample/reconstruction figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_modules.likelihood.bounds import LogWeightFn, check_ks, importance_weighted_nll

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EVAL_SEED = 0


def check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_nll_settings(nll_k: Sequence[int], nll_images: int | None, nll_chunk: int, lr: float) -> list[int]:
    """Validates the test bound's and the optimiser's settings (one-line ValueError); returns nll_k as a list."""
    check_int("nll_chunk", nll_chunk, 1)
    if nll_images is not None:
        check_int("nll_images", nll_images, 1)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    return check_ks("nll_k", nll_k)


def grid_figure(images: Tensor, nrow: int) -> Figure:
    """Images [N, 1, H, W] in [0, 1] tiled into rows of ``nrow``, one grey Axes (no pyplot state)."""
    from matplotlib.figure import Figure  # lazy: matplotlib costs a noticeable import

    n, _, h, w = images.shape
    rows = math.ceil(n / nrow)
    canvas = torch.ones(rows * (h + 1) + 1, nrow * (w + 1) + 1)  # 1-pixel white gutters
    for i, img in enumerate(images.detach().float().cpu().clamp(0, 1)):
        r, c = divmod(i, nrow)
        canvas[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = img[0]
    fig = Figure(figsize=(nrow * 0.6 + 0.2, rows * 0.6 + 0.2))
    ax = fig.add_subplot()
    ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    return fig


class SeededEvaluation(pl.LightningModule):
    """Lowest val/loss is the best checkpoint; val and test draw their noise from ``self._eval_gen``."""

    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(self) -> None:
        super().__init__()
        self._eval_gen: torch.Generator | None = None

    def on_validation_epoch_start(self) -> None:
        self._eval_gen = torch.Generator().manual_seed(EVAL_SEED)

    def on_test_epoch_start(self) -> None:
        self._eval_gen = torch.Generator().manual_seed(EVAL_SEED)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class LatentVariableModel(SeededEvaluation):
    """A latent-variable model scored by its -ELBO (val and test) and its importance-weighted NLL (test).

    Subclasses give ``_eval_step`` (which logs through ``_log_neg_elbo``), ``log_weight_fn``, ``sample``
    and ``reconstruct``; their hparams hold ``nll_k``, ``nll_images``, ``nll_chunk`` and ``sample_count``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._val_images: Tensor | None = None  # a few fixed val images for the reconstruction figure
        self._nll_seen = 0

    # ---- what a model provides ------------------------------------------------------------------
    def _eval_step(self, x: Tensor, stage: str) -> None:
        raise NotImplementedError

    def log_weight_fn(self, x: Tensor) -> LogWeightFn:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images [n, C, H, W] in [0, 1] from the prior (decoder means, not noisy draws)."""
        raise NotImplementedError

    def reconstruct(self, x: Tensor) -> Tensor:
        """Images [batch, C, H, W] -> their reconstructions at the encoder means, same shape."""
        raise NotImplementedError

    def extra_figures(self) -> dict[str, Figure]:
        return {}

    # ---- evaluation -----------------------------------------------------------------------------
    def _log_neg_elbo(self, stage: str, recon: Tensor, kls: dict[str, Tensor]) -> Tensor:
        """Logs -ELBO = recon + Σ KLs (the loss), the ELBO, recon and each named KL; returns -ELBO [batch]."""
        n = len(recon)
        neg_elbo = recon + torch.stack(list(kls.values())).sum(0)  # [batch]
        self.log(f"{stage}/loss", neg_elbo.mean(), on_epoch=True, prog_bar=stage == "val", batch_size=n, sync_dist=True)
        self.log(f"{stage}/elbo", -neg_elbo.mean(), on_epoch=True, batch_size=n, sync_dist=True)
        self.log(f"{stage}/recon", recon.mean(), on_epoch=True, batch_size=n, sync_dist=True)
        for name, kl in kls.items():
            self.log(f"{stage}/{name}", kl.mean(), on_epoch=True, batch_size=n, sync_dist=True)
        return neg_elbo

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        if batch_idx == 0:
            self._val_images = x[:8].detach()
        self._eval_step(x, "val")

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._nll_seen = 0

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        self._eval_step(x, "test")
        limit = self.hparams.nll_images
        x = x if limit is None else x[: max(0, limit - self._nll_seen)]  # the first nll_images test images
        if len(x):
            nlls = importance_weighted_nll(self.log_weight_fn(x), self.hparams.nll_k, self.hparams.nll_chunk,
                                           self._eval_gen)
            for k, nll in nlls.items():
                self.log(f"test/nll_k{k}", nll.mean(), on_epoch=True, batch_size=len(x), sync_dist=True)
            self._nll_seen += len(x)

    def nll_settings(self, proposal: str) -> dict[str, Any]:
        """The metric settings of the test bound, with ``proposal`` naming the q it draws from."""
        return {
            "nll": f"importance-weighted bound, Burda et al. 2016, nested draws; {proposal} proposal",
            "nll_k": list(self.hparams.nll_k),
            "nll_images": self._nll_seen or self.hparams.nll_images,
            "eval_seed": EVAL_SEED,
        }

    # ---- figures --------------------------------------------------------------------------------
    @torch.no_grad()
    def make_samples(self) -> dict[str, Figure]:
        was_training = self.training
        self.eval()
        gen = torch.Generator().manual_seed(EVAL_SEED)  # the same z every epoch
        figures: dict[str, Figure] = {}
        if self.hparams.sample_count:
            figures["samples.png"] = grid_figure(self.sample(self.hparams.sample_count, gen), nrow=8)
        if self._val_images is not None:
            x = self._val_images
            recon = self.reconstruct(x)
            figures["reconstructions.png"] = grid_figure(torch.cat([x, recon]), nrow=len(x))  # inputs above recons
        figures |= self.extra_figures()
        self.train(was_training)
        return figures
