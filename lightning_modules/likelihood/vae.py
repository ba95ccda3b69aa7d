"""Gaussian VAE (Kingma & Welling 2014, https://arxiv.org/abs/1312.6114): the seed's fixed-variance form and
the usual one.

- ``variant="seed"`` is the course notes' model verbatim: prior N(0, I), encoder N(g(x), I), decoder
  N(f(z), I), trained on ``½E||g(x)||² + ½E||x - f(g(x) + N)||²`` with N ~ N(0, I). f has an identity
  output (any real mean), so the loss is exactly that quadratic; images are clamped to [0, 1] for display only.
- ``variant="standard"``: a learned diagonal encoder variance (reparameterisation z = μ + σ ε) and a
  Bernoulli decoder on logits, for binarized images (the datamodule's ``binarize=True``).

Every number is per image in nats. ``val/loss`` is -ELBO with the KL in closed form and one z per image;
``test/nll_k{k}`` is the importance-weighted bound of likelihood.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lightning_modules.likelihood.bounds import (LogWeightFn, bernoulli_log_prob, check_ks, importance_weighted_nll,
                                          normal_kl, normal_log_prob, randn)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# val/test draws come from a CPU generator reset to this each epoch: epochs compare on the same noise, and
# every device on the same numbers (likelihood.randn draws on the CPU and moves them).
EVAL_SEED = 0
VARIANTS = ("seed", "standard")


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


def check_image_shape(image_shape: Sequence[int]) -> int:
    """Validates [C, H, W] and returns the pixel count D."""
    if (not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in image_shape)):
        raise ValueError(f"image_shape must be [channels, height, width] of positive integers, got {image_shape!r}")
    return math.prod(image_shape)


def check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_binary(x: Tensor, model: str) -> None:
    if bool(((x != 0) & (x != 1)).any()):
        raise ValueError(f"{model} has a Bernoulli decoder: set the datamodule's binarize: true")


def _grid_figure(images: Tensor, nrow: int) -> Figure:
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


class GaussianEncoder(nn.Module):
    """x [batch, D] -> mean, log variance [batch, latent] of q(z|x).

    Without a learned variance the log variance is 0: the seed's N(g(x), I).
    """

    def __init__(self, in_dim: int, hidden_dim: int, latent_dim: int, learn_var: bool) -> None:
        super().__init__()
        self.learn_var = learn_var
        self.net = mlp([in_dim, hidden_dim, hidden_dim, latent_dim * (2 if learn_var else 1)])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(x)
        if self.learn_var:
            mean, log_var = h.chunk(2, dim=-1)
            return mean, log_var
        return h, torch.zeros_like(h)


class VAE(pl.LightningModule):
    monitor = "val/loss"  # the checkpoint keeps the epoch of the lowest validation objective
    monitor_mode = "min"

    def __init__(
        self,
        image_shape: list[int],
        num_classes: int = 10,  # from the datamodule; an unconditional model ignores it
        variant: str = "seed",
        latent_dim: int = 16,
        hidden_dim: int = 400,
        lr: float = 1e-3,
        nll_k: Sequence[int] = (1, 50, 500),
        nll_images: int | None = None,
        nll_chunk: int = 50,
        traversal_dims: int = 8,
        sample_count: int = 64,
    ) -> None:
        super().__init__()
        dims = check_image_shape(image_shape)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        for name, value in (("latent_dim", latent_dim), ("hidden_dim", hidden_dim), ("nll_chunk", nll_chunk)):
            check_int(name, value, 1)
        check_int("traversal_dims", traversal_dims, 0)
        check_int("sample_count", sample_count, 0)
        if nll_images is not None:
            check_int("nll_images", nll_images, 1)
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        nll_k = check_ks("nll_k", nll_k)
        self.save_hyperparameters()
        self.dims = dims
        self.encoder = GaussianEncoder(dims, hidden_dim, latent_dim, learn_var=variant == "standard")
        self.decoder = mlp([latent_dim, hidden_dim, hidden_dim, dims])  # f(z): Gaussian means or Bernoulli logits
        self._eval_gen: torch.Generator | None = None
        self._val_images: Tensor | None = None  # a few fixed val images for the reconstruction figure
        self._nll_seen = 0

    # ---- the model ------------------------------------------------------------------------------
    def log_likelihood(self, x: Tensor, out: Tensor) -> Tensor:
        """log p(x|z) [...] from the decoder output [..., D] and flat images x [batch, D]."""
        if self.hparams.variant == "seed":
            return normal_log_prob(x, out, 0.0).sum(-1)  # N(f(z), I), includes -½ D log 2π
        return bernoulli_log_prob(x, out).sum(-1)

    def seed_loss(self, x: Tensor, noise: Tensor) -> Tensor:
        """The seed's loss per image [batch], literally: ½||g(x)||² + ½||x - f(g(x) + N)||².

        The exact -ELBO of the seed model is this plus ½ D log 2π, the Gaussian decoder's normaliser.
        Its KL(N(g, I) || N(0, I)) = ½(tr I + ||g||² - d - log det I) = ½||g||²: the constants cancel
        there, so that normaliser is the whole difference. It does not change the gradient.
        """
        x = x.flatten(1)  # [batch, D]
        g, _ = self.encoder(x)  # [batch, latent]
        return 0.5 * g.pow(2).sum(-1) + 0.5 * (x - self.decoder(g + noise)).pow(2).sum(-1)

    def elbo_terms(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """-log p(x|z) with one reparameterised z ~ q(z|x), and KL(q(z|x) || N(0, I)) in closed form: [batch] each."""
        x = x.flatten(1)  # [batch, D]
        mean, log_var = self.encoder(x)  # [batch, latent]
        eps = randn(mean.shape, generator, mean.device, mean.dtype)
        z = mean + torch.exp(0.5 * log_var) * eps
        return -self.log_likelihood(x, self.decoder(z)), normal_kl(mean, log_var).sum(-1)

    def log_weight_fn(self, x: Tensor) -> LogWeightFn:
        """log p(x, z_i) - log q(z_i|x) for n draws z_i ~ q(z|x): the interface likelihood.py estimates with."""
        x = x.flatten(1)  # [batch, D]
        mean, log_var = self.encoder(x)  # [batch, latent], encoded once for every chunk of draws

        def draw(n: int, generator: torch.Generator | None) -> Tensor:
            eps = randn((n, *mean.shape), generator, mean.device, mean.dtype)
            z = mean + torch.exp(0.5 * log_var) * eps  # [n, batch, latent]
            log_q = normal_log_prob(z, mean, log_var).sum(-1)  # [n, batch]
            log_prior = normal_log_prob(z, torch.zeros_like(z)).sum(-1)
            return self.log_likelihood(x, self.decoder(z)) + log_prior - log_q  # [n, batch]

        return draw

    def decode_mean(self, z: Tensor) -> Tensor:
        """E[x|z] as images [batch, C, H, W] for display."""
        out = self.decoder(z)
        mean = out.clamp(0, 1) if self.hparams.variant == "seed" else torch.sigmoid(out)
        return mean.view(-1, *self.hparams.image_shape)

    # ---- training -------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, _ = batch  # [batch, C, H, W]
        n = len(x)
        if self.hparams.variant == "seed":
            noise = torch.randn(n, self.hparams.latent_dim, device=x.device, dtype=x.dtype)
            loss = self.seed_loss(x, noise).mean()  # what is minimised: the seed's equation
            self.log("train/seed_loss", loss, on_step=False, on_epoch=True, batch_size=n)
            neg_elbo = loss + 0.5 * self.dims * math.log(2 * math.pi)  # train/loss stays -ELBO, like val/loss
        else:
            check_binary(x, "variant 'standard'")
            recon, kl = self.elbo_terms(x)
            loss = neg_elbo = (recon + kl).mean()
        self.log("train/loss", neg_elbo, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def _eval_step(self, x: Tensor, stage: str) -> None:
        n = len(x)
        recon, kl = self.elbo_terms(x, self._eval_gen)
        neg_elbo = recon + kl  # [batch]
        self.log(f"{stage}/loss", neg_elbo.mean(), on_epoch=True, prog_bar=stage == "val", batch_size=n, sync_dist=True)
        self.log(f"{stage}/elbo", -neg_elbo.mean(), on_epoch=True, batch_size=n, sync_dist=True)
        self.log(f"{stage}/recon", recon.mean(), on_epoch=True, batch_size=n, sync_dist=True)
        self.log(f"{stage}/kl", kl.mean(), on_epoch=True, batch_size=n, sync_dist=True)
        if self.hparams.variant == "seed":
            self.log(f"{stage}/seed_loss", neg_elbo.mean() - 0.5 * self.dims * math.log(2 * math.pi),
                     on_epoch=True, batch_size=n, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._eval_gen = torch.Generator().manual_seed(EVAL_SEED)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        if batch_idx == 0:
            self._val_images = x[:8].detach()
        self._eval_step(x, "val")

    def on_test_epoch_start(self) -> None:
        self._eval_gen = torch.Generator().manual_seed(EVAL_SEED)
        self._nll_seen = 0

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        if self.hparams.variant == "standard":
            check_binary(x, "variant 'standard'")
        self._eval_step(x, "test")
        limit = self.hparams.nll_images
        x = x if limit is None else x[: max(0, limit - self._nll_seen)]  # the first nll_images test images
        if len(x):
            nlls = importance_weighted_nll(self.log_weight_fn(x), self.hparams.nll_k, self.hparams.nll_chunk,
                                           self._eval_gen)
            for k, nll in nlls.items():
                self.log(f"test/nll_k{k}", nll.mean(), on_epoch=True, batch_size=len(x), sync_dist=True)
            self._nll_seen += len(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def metric_settings(self) -> dict[str, Any]:
        seed = self.hparams.variant == "seed"
        return {
            "loss_unit": "nats per image",
            "loss": "-ELBO, KL in closed form, one z per image" + (" (seed_loss = loss - ½ D log 2π)" if seed else ""),
            "decoder": "N(f(z), I) density on [0, 1] pixels (continuous)" if seed else "Bernoulli on binarized pixels",
            "nll": "importance-weighted bound, Burda et al. 2016, nested draws; q(z|x) proposal",
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
        latent = self.hparams.latent_dim
        figures: dict[str, Figure] = {}
        if self.hparams.sample_count:
            z = randn((self.hparams.sample_count, latent), gen, self.device)
            figures["samples.png"] = _grid_figure(self.decode_mean(z), nrow=8)  # decoder means, not noisy draws
        if self._val_images is not None:
            x = self._val_images
            recon = self.decode_mean(self.encoder(x.flatten(1))[0])  # z = the encoder mean
            figures["reconstructions.png"] = _grid_figure(torch.cat([x, recon]), nrow=len(x))  # inputs above recons
        rows = min(self.hparams.traversal_dims, latent)
        if rows:
            values = torch.linspace(-2.5, 2.5, 9, device=self.device)  # prior quantiles ~0.6% .. 99.4%
            z = torch.zeros(rows, len(values), latent, device=self.device)
            z[torch.arange(rows), :, torch.arange(rows)] = values  # row d moves dim d, the rest at the prior mean
            figures["traversal.png"] = _grid_figure(self.decode_mean(z.view(-1, latent)), nrow=len(values))
        self.train(was_training)
        return figures
