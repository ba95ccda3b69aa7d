"""Hierarchical VAE: several stochastic stages x -> z1 -> z2 -> ... -> z1 -> x, with the ELBO over all of them.

The two-stochastic-layer model of Burda et al. 2016 (IWAE, https://arxiv.org/abs/1509.00519, section 5),
for any number of stages L = len(latent_dims):
- generative, top-down: p(z_L) = N(0, I), p(z_i | z_{i+1}) = N(μ_i(z_{i+1}), σ_i²(z_{i+1})), p(x | z_1) Bernoulli;
- inference, bottom-up: q(z_1 | x), q(z_{i+1} | z_i), diagonal Gaussians.
So log p(x, z) - log q(z | x)
  = log p(x|z_1) + Σ_{i<L} [log p(z_i|z_{i+1}) - log q(z_i|·)] + log p(z_L) - log q(z_L|z_{L-1}),
and -ELBO = E[-log p(x|z_1)] + Σ_i kl_i, where kl_i = E[log q(z_i|·) - log p(z_i|z_{i+1})] is sampled for the
lower stages and in closed form for the top one. The same log weights give the importance-weighted NLL.

KL warm-up (``kl_warmup_epochs``): the training objective scales the KL terms by β rising linearly from 0
to 1 over that many epochs (Bowman et al. 2016; Sønderby et al. 2016, the ladder VAE), which keeps the upper
stages from collapsing to the prior before the decoder uses them. ``train/loss`` always logs the true -ELBO
(β = 1); 0 turns warm-up off, so the objective is the ELBO from the first step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_modules.likelihood.bounds import LogWeightFn, bernoulli_log_prob, normal_kl, normal_log_prob, randn
from lightning_modules.likelihood.evaluation import LatentVariableModel, check_int, check_nll_settings
from lightning_modules.likelihood.sample_fid import SampleFID, bernoulli_draw, check_fid_settings
from lightning_modules.likelihood.vae import check_binary, check_image_shape, mlp


class GaussianLayer(nn.Module):
    """h [..., in] -> mean, log variance [..., out] of a diagonal Gaussian, through a two-hidden-layer MLP."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = mlp([in_dim, hidden_dim, hidden_dim, 2 * out_dim])

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = self.net(h).chunk(2, dim=-1)
        return mean, log_var


def _sample(mean: Tensor, log_var: Tensor, generator: torch.Generator | None) -> Tensor:
    eps = randn(mean.shape, generator, mean.device, mean.dtype)  # a CPU generator's draws, moved: see evaluation.py
    return mean + torch.exp(0.5 * log_var) * eps  # reparameterised


class HierarchicalVAE(SampleFID, LatentVariableModel):
    """L diagonal-Gaussian stages between a Bernoulli decoder and an N(0, I) top prior (see the module text)."""

    def __init__(
        self,
        image_shape: list[int],
        num_classes: int = 10,  # from the datamodule; an unconditional model ignores it
        latent_dims: Sequence[int] = (32, 16),
        hidden_dim: int = 400,
        lr: float = 1e-3,
        kl_warmup_epochs: int = 0,
        nll_k: Sequence[int] = (1, 50, 500),
        nll_images: int | None = None,
        nll_chunk: int = 50,
        sample_count: int = 64,
        fid_checkpoint: str | None = None,
        fid_samples: int = 2000,
        fid_repeats: int = 25,
    ) -> None:
        super().__init__()
        dims = check_image_shape(image_shape)
        check_fid_settings(fid_samples, fid_repeats)
        if (not isinstance(latent_dims, (list, tuple)) or len(latent_dims) < 2
                or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in latent_dims)):
            raise ValueError(f"latent_dims must list at least 2 positive integers (one per stage), got {latent_dims!r}")
        check_int("hidden_dim", hidden_dim, 1)
        check_int("kl_warmup_epochs", kl_warmup_epochs, 0)
        check_int("sample_count", sample_count, 0)
        nll_k = check_nll_settings(nll_k, nll_images, nll_chunk, lr)
        latent_dims = list(latent_dims)  # lists: hparams stay JSON-like
        self.save_hyperparameters()
        self.dims = dims
        sizes = [dims, *latent_dims]
        # q(z_i | z_{i-1}) bottom-up, z_0 = x; p(z_i | z_{i+1}) top-down for i < L.
        self.encoders = nn.ModuleList(GaussianLayer(a, hidden_dim, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.priors = nn.ModuleList(GaussianLayer(b, hidden_dim, a) for a, b in zip(latent_dims[:-1], latent_dims[1:]))
        self.decoder = mlp([latent_dims[0], hidden_dim, hidden_dim, dims])  # p(x|z_1) logits
        self.init_fid()

    # ---- the model ------------------------------------------------------------------------------
    def _infer(self, x: Tensor, generator: torch.Generator | None
               ) -> tuple[list[Tensor], list[Tensor], tuple[Tensor, Tensor]]:
        """Bottom-up: z_i ~ q(z_i | z_{i-1}) with z_0 = x [..., D].

        Returns the zs, log q(z_i|·) [...] and the top q's (mean, log var).
        """
        h, zs, log_qs = x, [], []
        for enc in self.encoders:
            mean, log_var = enc(h)
            h = _sample(mean, log_var, generator)
            zs.append(h)
            log_qs.append(normal_log_prob(h, mean, log_var).sum(-1))
        return zs, log_qs, (mean, log_var)

    def _log_p_stages(self, zs: list[Tensor]) -> list[Tensor]:
        """log p(z_i | z_{i+1}) [...] for i < L (top-down), then log p(z_L) under N(0, I)."""
        logs = []
        for i, prior in enumerate(self.priors):
            mean, log_var = prior(zs[i + 1])
            logs.append(normal_log_prob(zs[i], mean, log_var).sum(-1))
        logs.append(normal_log_prob(zs[-1], torch.zeros_like(zs[-1])).sum(-1))
        return logs

    def elbo_terms(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, list[Tensor]]:
        """-log p(x|z_1) [batch] and the per-stage KLs [batch] each (lower ones sampled, the top in closed form)."""
        x = x.flatten(1)  # [batch, D]
        zs, log_qs, (top_mean, top_log_var) = self._infer(x, generator)
        log_ps = self._log_p_stages(zs)
        kls = [log_q - log_p for log_q, log_p in zip(log_qs[:-1], log_ps[:-1])]
        kls.append(normal_kl(top_mean, top_log_var).sum(-1))  # KL(q(z_L|z_{L-1}) || N(0, I)) given z_{L-1}
        recon = -bernoulli_log_prob(x, self.decoder(zs[0])).sum(-1)
        return recon, kls

    def log_weight_fn(self, x: Tensor) -> LogWeightFn:
        """log p(x, z_1..L) - log q(z_1..L | x) for n draws of the whole chain: bounds.py's interface."""
        x = x.flatten(1)  # [batch, D]

        def draw(n: int, generator: torch.Generator | None) -> Tensor:
            xs = x.expand(n, *x.shape)  # [n, batch, D]
            zs, log_qs, _ = self._infer(xs, generator)
            log_lik = bernoulli_log_prob(xs, self.decoder(zs[0])).sum(-1)  # [n, batch]
            return log_lik + sum(self._log_p_stages(zs)) - sum(log_qs)

        return draw

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral: z_L ~ N(0, I), z_i ~ p(z_i | z_{i+1}), then the decoder's means [n, C, H, W]."""
        z = randn((n, self.hparams.latent_dims[-1]), generator, self.device)
        for prior in reversed(self.priors):
            z = _sample(*prior(z), generator)
        return torch.sigmoid(self.decoder(z)).view(n, *self.hparams.image_shape)

    def draw_images(self, n: int, generator: torch.Generator) -> Tensor:
        """Binary images [n, C, H, W] as the data are: Bernoulli draws of the decoder at an ancestral z."""
        return bernoulli_draw(self.sample(n, generator), generator)

    def reconstruct(self, x: Tensor) -> Tensor:
        z1 = self.encoders[0](x.flatten(1))[0]  # the mean of q(z_1|x)
        return torch.sigmoid(self.decoder(z1)).view_as(x)

    # ---- training -------------------------------------------------------------------------------
    def kl_weight(self, batch_idx: int) -> float:
        """β of the KL warm-up: linear from 0 to 1 over kl_warmup_epochs, by fractional epoch."""
        epochs = self.hparams.kl_warmup_epochs
        if not epochs:
            return 1.0
        batches = max(1, int(self.trainer.num_training_batches))
        return min(1.0, (self.current_epoch + batch_idx / batches) / epochs)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, _ = batch  # [batch, C, H, W]
        check_binary(x, "HierarchicalVAE")
        recon, kls = self.elbo_terms(x)
        kl = torch.stack(kls).sum(0)  # [batch]
        beta = self.kl_weight(batch_idx)
        self.log("train/loss", (recon + kl).mean(), on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        self.log("train/kl_weight", beta, on_step=False, on_epoch=True, batch_size=len(x))
        return (recon + beta * kl).mean()

    def _eval_step(self, x: Tensor, stage: str) -> None:
        check_binary(x, "HierarchicalVAE")
        recon, kls = self.elbo_terms(x, self._eval_gen)
        # nats per stage: a stage near 0 has collapsed to its prior
        self._log_neg_elbo(stage, recon, {f"kl_{i}": kl for i, kl in enumerate(kls, start=1)})

    def metric_settings(self) -> dict[str, Any]:
        return {
            "loss_unit": "nats per image",
            "loss": "-ELBO over all stages, one chain draw per image; top KL in closed form, lower KLs sampled",
            "decoder": "Bernoulli on binarized pixels",
            "latent_dims": list(self.hparams.latent_dims),
            "kl_warmup_epochs": self.hparams.kl_warmup_epochs,
        } | self.nll_settings("q(z_1..L|x)") | self.fid_settings("Bernoulli draws at an ancestral z (binary, as the data)")
