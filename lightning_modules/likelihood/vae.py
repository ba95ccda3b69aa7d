"""Gaussian VAE (Kingma & Welling 2014, https://arxiv.org/abs/1312.6114): the seed's fixed-variance form and
the usual one.

- ``variant="seed"`` is the course notes' model verbatim: prior N(0, I), encoder N(g(x), I), decoder
  N(f(z), I), trained on ``½E||g(x)||² + ½E||x - f(g(x) + N)||²`` with N ~ N(0, I). f has an identity
  output (any real mean), so the loss is exactly that quadratic; images are clamped to [0, 1] for display only.
- ``variant="standard"``: a learned diagonal encoder variance (reparameterisation z = μ + σ ε) and a
  Bernoulli decoder on logits, for binarized images (the datamodule's ``binarize=True``).

``objective`` (standard variant) trains the same networks by the notes' four ideas for an autoencoder
(vae_schemes.py): "decoder_only" (Idea 1), "fixed_encoder" (Idea 2), "no_entropy" (Idea 3), "elbo" (Idea 4).

Every number is per image in nats. ``val/loss`` is -ELBO with the KL in closed form and one z per image;
``test/nll_k{k}`` is the importance-weighted bound of bounds.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lightning_modules.likelihood.bounds import LogWeightFn, bernoulli_log_prob, normal_kl, normal_log_prob, randn
from lightning_modules.likelihood.evaluation import LatentVariableModel, check_int, check_nll_settings, grid_figure
from lightning_modules.likelihood.sample_fid import SampleFID, bernoulli_draw, check_fid_settings
from lightning_modules.likelihood.vae_schemes import OBJECTIVES, LatentDiagnostics, entropy

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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


def check_binary(x: Tensor, model: str) -> None:
    if bool(((x != 0) & (x != 1)).any()):
        raise ValueError(f"{model} has a Bernoulli decoder: set the datamodule's binarize: true")


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
            # A floor of σ ~ 5e-5: an encoder trained without its entropy (Idea 3) drives σ to 0, and the
            # bound's log q(z|x) must stay finite to show how far that degenerates.
            return mean, log_var.clamp(min=-20.0)
        return h, torch.zeros_like(h)


class VAE(SampleFID, LatentDiagnostics, LatentVariableModel):
    """q(z|x) = N(g(x), diag σ²(x)) or the seed's N(g(x), I); p(z) = N(0, I); the decoder f(z) per ``variant``."""

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
        objective: str = "elbo",
        fid_checkpoint: str | None = None,
        fid_samples: int = 2000,
        fid_repeats: int = 25,
        mi_images: int = 2000,
    ) -> None:
        super().__init__()
        dims = check_image_shape(image_shape)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
        if objective not in OBJECTIVES or (objective != "elbo" and variant != "standard"):
            raise ValueError(f"objective must be one of {list(OBJECTIVES)} (all but elbo need variant 'standard'), "
                             f"got {objective!r} with variant {variant!r}")
        check_fid_settings(fid_samples, fid_repeats)
        check_int("mi_images", mi_images, 2)
        for name, value in (("latent_dim", latent_dim), ("hidden_dim", hidden_dim)):
            check_int(name, value, 1)
        check_int("traversal_dims", traversal_dims, 0)
        check_int("sample_count", sample_count, 0)
        nll_k = check_nll_settings(nll_k, nll_images, nll_chunk, lr)
        self.save_hyperparameters()
        self.dims = dims
        self.encoder = GaussianEncoder(dims, hidden_dim, latent_dim, learn_var=variant == "standard")
        self.decoder = mlp([latent_dim, hidden_dim, hidden_dim, dims])  # f(z): Gaussian means or Bernoulli logits
        if objective == "fixed_encoder":  # Idea 2: the encoder stays at its random init; p(z) is learned instead
            self.encoder.requires_grad_(False)
            self.prior_mean = nn.Parameter(torch.zeros(latent_dim))
            self.prior_log_var = nn.Parameter(torch.zeros(latent_dim))
        self.init_fid()
        self.init_diagnostics()

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

    def prior(self) -> tuple[Tensor, Tensor]:
        """Mean and log variance [latent] of p(z): N(0, I), or the learned Gaussian of Idea 2."""
        if self.hparams.objective == "fixed_encoder":
            return self.prior_mean, self.prior_log_var
        zero = torch.zeros(self.hparams.latent_dim, device=self.device)
        return zero, zero

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log variance [batch, latent] of the scheme's q(z|x) for flat x [batch, D]. Idea 1 has no
        encoder: its z is drawn from the prior whatever x is, so its q is p(z)."""
        if self.hparams.objective == "decoder_only":
            mean, log_var = self.prior()
            return mean.expand(len(x), -1), log_var.expand(len(x), -1)
        return self.encoder(x)

    def elbo_terms(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """-log p(x|z) with one reparameterised z ~ q(z|x), and KL(q(z|x) || p(z)) in closed form: [batch] each."""
        x = x.flatten(1)  # [batch, D]
        mean, log_var = self.posterior(x)  # [batch, latent]
        eps = randn(mean.shape, generator, mean.device, mean.dtype)
        z = mean + torch.exp(0.5 * log_var) * eps
        if self.collecting_diagnostics:
            self.collect(mean, log_var)
        return -self.log_likelihood(x, self.decoder(z)), normal_kl(mean, log_var, *self.prior()).sum(-1)

    def log_weight_fn(self, x: Tensor) -> LogWeightFn:
        """log p(x, z_i) - log q(z_i|x) for n draws z_i ~ q(z|x): the interface bounds.py estimates with."""
        x = x.flatten(1)  # [batch, D]
        mean, log_var = self.posterior(x)  # [batch, latent], encoded once for every chunk of draws
        prior_mean, prior_log_var = self.prior()

        def draw(n: int, generator: torch.Generator | None) -> Tensor:
            eps = randn((n, *mean.shape), generator, mean.device, mean.dtype)
            z = mean + torch.exp(0.5 * log_var) * eps  # [n, batch, latent]
            log_q = normal_log_prob(z, mean, log_var).sum(-1)  # [n, batch]
            log_prior = normal_log_prob(z, prior_mean, prior_log_var).sum(-1)
            return self.log_likelihood(x, self.decoder(z)) + log_prior - log_q  # [n, batch]

        return draw

    def decode_mean(self, z: Tensor) -> Tensor:
        """E[x|z] as images [batch, C, H, W] for display."""
        out = self.decoder(z)
        mean = out.clamp(0, 1) if self.hparams.variant == "seed" else torch.sigmoid(out)
        return mean.view(-1, *self.hparams.image_shape)

    def _prior_draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        mean, log_var = self.prior()
        return mean + torch.exp(0.5 * log_var) * randn((n, self.hparams.latent_dim), generator, self.device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decoder means [n, C, H, W] at z ~ p(z)."""
        return self.decode_mean(self._prior_draw(n, generator))

    def draw_images(self, n: int, generator: torch.Generator) -> Tensor:
        """Images as the data look, for the FID: Bernoulli draws (binary) or, for the seed's continuous decoder,
        its means (a draw from N(f(z), I) is mostly noise)."""
        means = self.sample(n, generator)  # [n, C, H, W]
        if self.hparams.variant == "seed":
            return means
        return bernoulli_draw(means, generator)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode_mean(self.posterior(x.flatten(1))[0])  # z = the posterior mean

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
            neg_elbo = (recon + kl).mean()
            loss = neg_elbo
            if self.hparams.objective == "no_entropy":  # Idea 3: E_q[-log p(x|z) - log p(z)], no + log q(z|x)
                loss = neg_elbo + entropy(self.encoder(x.flatten(1))[1]).mean()
        self.log("train/loss", neg_elbo, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        return loss

    def _eval_step(self, x: Tensor, stage: str) -> None:
        if stage == "test" and self.hparams.variant == "standard":
            check_binary(x, "variant 'standard'")
        recon, kl = self.elbo_terms(x, self._eval_gen)
        neg_elbo = self._log_neg_elbo(stage, recon, {"kl": kl})  # [batch]
        if self.hparams.variant == "seed":
            self.log(f"{stage}/seed_loss", neg_elbo.mean() - 0.5 * self.dims * math.log(2 * math.pi),
                     on_epoch=True, batch_size=len(x), sync_dist=True)

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.start_diagnostics(self.hparams.mi_images)

    def on_test_epoch_end(self) -> None:
        self.log_diagnostics()
        super().on_test_epoch_end()

    def metric_settings(self) -> dict[str, Any]:
        seed = self.hparams.variant == "seed"
        fakes = "decoder means at z ~ p(z) (continuous)" if seed else "Bernoulli draws at z ~ p(z) (binary, as the data)"
        return {
            "loss_unit": "nats per image",
            "loss": "-ELBO, KL in closed form, one z per image" + (" (seed_loss = loss - ½ D log 2π)" if seed else ""),
            "decoder": "N(f(z), I) density on [0, 1] pixels (continuous)" if seed else "Bernoulli on binarized pixels",
            "objective": OBJECTIVES[self.hparams.objective],
        } | self.nll_settings("q(z|x)" if self.hparams.objective != "decoder_only" else "p(z) (no encoder)") \
            | self.diagnostics_settings() | self.fid_settings(fakes)

    # ---- figures --------------------------------------------------------------------------------
    def extra_figures(self) -> dict[str, Figure]:
        """The latent traversal: row d moves z_d over prior quantiles, the other dims at the prior mean."""
        latent = self.hparams.latent_dim
        rows = min(self.hparams.traversal_dims, latent)
        if not rows:
            return {}
        values = torch.linspace(-2.5, 2.5, 9, device=self.device)  # prior quantiles ~0.6% .. 99.4%
        z = torch.zeros(rows, len(values), latent, device=self.device)
        z[torch.arange(rows), :, torch.arange(rows)] = values
        return {"traversal.png": grid_figure(self.decode_mean(z.view(-1, latent)), nrow=len(values))}
