"""The notes' four ways to train an autoencoder, and the measures of how each fails.

The notes build the VAE in four steps, each fixing what the last got wrong (the same encoder and decoder
networks in all four; vae.py's ``objective``):

- Idea 1, "decoder_only": train only the decoder, on z drawn from the fixed prior whatever x is. Predicted
  failure: x and z are disconnected (the decoder learns the mean image; I(x; z) = 0).
- Idea 2, "fixed_encoder": fix the encoder (its random init) and train the prior and the decoder. Predicted
  failure: the decoder cannot invert an encoder that was never asked to keep what matters (high distortion).
- Idea 3, "no_entropy": train encoder and decoder jointly on E_q[-log p(x|z) - log p(z)], without the encoder's
  entropy -E_q[log q(z|x)]. Predicted failure: the encoder degenerates: nothing pays for its spread, so
  σ(x) collapses and q(z|x) becomes a point (the encoder's mean log σ² falls to its floor).
- Idea 4, "elbo": the ELBO, E_q[log p(x|z)] - KL(q(z|x) || p(z)).

Each is judged on the same test NLL (the importance-weighted bound) and on the failure measures, computed on
the first ``mi_images`` test images:
- ``test/mi``: I(x; z) under q with x uniform over those N images, E_i[log q(z_i|x_i) - log (1/N Σ_j q(z_i|x_j))]
  with one z_i ~ q(z|x_i) each (Hoffman & Johnson 2016's aggregate posterior); between 0 and log N nats;
- ``test/active_units``: latent dimensions whose posterior mean varies with x, Cov_x(E_q[z_u]) > 0.01
  (Burda et al. 2016);
- ``test/enc_log_var``: the encoder's mean log σ² (0 for the prior; the floor -20 when it has collapsed).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lightning_modules.likelihood.bounds import LOG_2PI, normal_log_prob, randn

OBJECTIVES = {
    "elbo": "Idea 4: the ELBO, E_q[log p(x|z)] - KL(q(z|x) || p(z))",
    "decoder_only": "Idea 1: only the decoder trains, on z ~ p(z) independent of x (no encoder: q = p(z))",
    "fixed_encoder": "Idea 2: the encoder fixed at its random init; the decoder and a Gaussian prior p(z) train",
    "no_entropy": "Idea 3: encoder and decoder on E_q[-log p(x|z) - log p(z)], without the encoder's entropy",
}
ACTIVE_THRESHOLD = 0.01
DIAGNOSTICS_SEED = 2  # the z_i of the MI estimate: the same draws for every checkpoint


def entropy(log_var: Tensor) -> Tensor:
    """H(N(μ, diag σ²)) per row [batch] from log σ² [batch, latent]: ½ Σ (1 + log 2π + log σ²)."""
    return 0.5 * (1 + LOG_2PI + log_var).sum(-1)


def mutual_information(mean: Tensor, log_var: Tensor, generator: torch.Generator, chunk: int = 256) -> float:
    """I(x; z) in nats under q(z|x_i) = N(mean_i, exp(log_var_i)) with x uniform over the N rows [N, latent]."""
    n = len(mean)
    z = mean + torch.exp(0.5 * log_var) * randn(mean.shape, generator, mean.device, mean.dtype)  # [N, latent]
    total = 0.0
    for start in range(0, n, chunk):
        zc = z[start:start + chunk]  # [c, latent]
        log_q = normal_log_prob(zc[:, None, :], mean[None], log_var[None]).sum(-1)  # [c, N]: log q(z_i | x_j)
        own = log_q[torch.arange(len(zc)), torch.arange(start, start + len(zc))]  # log q(z_i | x_i)
        total += float((own - (torch.logsumexp(log_q, dim=1) - math.log(n))).sum())
    return total / n


def active_units(mean: Tensor, threshold: float = ACTIVE_THRESHOLD) -> int:
    """How many latent dimensions' posterior means vary over the rows [N, latent] by more than ``threshold``."""
    return int((mean.var(dim=0) > threshold).sum())


class LatentDiagnostics:
    """Mixin: collects the posterior (mean, log σ²) of the first ``mi_images`` test images while a model's
    test pass computes its ELBO, then logs ``test/mi``, ``test/active_units`` and ``test/enc_log_var``."""

    def init_diagnostics(self) -> None:
        self.collecting_diagnostics = False
        self._posteriors: list[tuple[Tensor, Tensor]] = []
        self._diag_limit = 0
        self._diag_seen = 0

    def start_diagnostics(self, limit: int) -> None:
        self.collecting_diagnostics, self._posteriors, self._diag_limit = True, [], limit

    def collect(self, mean: Tensor, log_var: Tensor) -> None:
        keep = max(0, self._diag_limit - sum(len(m) for m, _ in self._posteriors))
        if keep:
            self._posteriors.append((mean[:keep].detach(), log_var[:keep].detach()))

    def log_diagnostics(self) -> None:
        self.collecting_diagnostics = False
        if not self._posteriors:
            return
        mean = torch.cat([m for m, _ in self._posteriors])  # [N, latent]
        log_var = torch.cat([v for _, v in self._posteriors])
        self._diag_seen = len(mean)
        gen = torch.Generator().manual_seed(DIAGNOSTICS_SEED)
        for key, value in (("test/mi", mutual_information(mean, log_var, gen)),
                           ("test/active_units", float(active_units(mean))),
                           ("test/enc_log_var", float(log_var.mean()))):
            self.log(key, value, sync_dist=True)  # type: ignore[attr-defined]
        self._posteriors = []

    def diagnostics_settings(self) -> dict[str, Any]:
        return {"mi": "I(x; z) under q, x uniform over the first mi_images test images (at most log N nats), one z "
                      "draw each", "mi_images": self._diag_seen or self.hparams.mi_images,  # type: ignore[attr-defined]
                "active_units": f"latent dims with Cov_x(E_q[z_u]) > {ACTIVE_THRESHOLD} (Burda et al. 2016)"}
