"""Likelihood arithmetic shared by the VAE, the hierarchical VAE and DDPM.

- elementwise log densities and the closed-form Gaussian KL (callers sum over the dims they own);
- the importance-weighted bound (Burda, Grosse & Salakhutdinov 2016, https://arxiv.org/abs/1509.00519)
  against a callable that draws log weights ``log p(x, z_i) - log q(z_i | x)``: a model needs only to
  say how to draw them, and every model gets the same estimator;
- the discretised Gaussian decoder of DDPM (Ho et al. 2020, https://arxiv.org/abs/2006.11239, eq. 13)
  and the conversion of nats per image to bits per dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)

# n -> log importance weights [n, batch] for one fixed batch of inputs: log p(x, z_i) - log q(z_i | x)
# with z_i ~ q(z | x) drawn independently. The generator makes the draws reproducible.
LogWeightFn = Callable[[int, torch.Generator | None], Tensor]


# --- seeded evaluation noise -----------------------------------------------------------------------
def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype | None = None) -> Tensor:
    """N(0, 1) draws on ``device``. With a generator they are drawn where it lives (the CPU for the
    models' eval generators) and then moved, so a seeded evaluation gives the same numbers on every
    device; without one they come from the device's own RNG (training noise)."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def randint(low: int, high: int, shape: Sequence[int], generator: torch.Generator | None,
            device: torch.device | str) -> Tensor:
    """Integers in [low, high) on ``device``, drawn like ``randn``: where the generator lives, if given."""
    if generator is None:
        return torch.randint(low, high, tuple(shape), device=device)
    return torch.randint(low, high, tuple(shape), generator=generator, device=generator.device).to(device)


# --- elementwise densities ------------------------------------------------------------------------
def normal_log_prob(x: Tensor, mean: Tensor, log_var: Tensor | float = 0.0) -> Tensor:
    """log N(x; mean, exp(log_var)) per element (no sum)."""
    log_var = torch.as_tensor(log_var, dtype=x.dtype, device=x.device)
    return -0.5 * (LOG_2PI + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def normal_kl(mean_q: Tensor, log_var_q: Tensor | float, mean_p: Tensor | float = 0.0,
              log_var_p: Tensor | float = 0.0) -> Tensor:
    """KL(N(mean_q, var_q) || N(mean_p, var_p)) per element, in closed form (no sum).

    ½ [log var_p - log var_q + (var_q + (mean_q - mean_p)²) / var_p - 1]. With both variances 1 the
    constants cancel and only ½ (mean_q - mean_p)² is left: the seed VAE's ½||g(x)||².
    """
    log_var_q = torch.as_tensor(log_var_q, dtype=mean_q.dtype, device=mean_q.device)
    log_var_p = torch.as_tensor(log_var_p, dtype=mean_q.dtype, device=mean_q.device)
    return 0.5 * (log_var_p - log_var_q + (log_var_q.exp() + (mean_q - mean_p) ** 2) * torch.exp(-log_var_p) - 1.0)


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(x; sigmoid(logits)) per element, computed from logits for stability (no sum)."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor | float, levels: int = 256) -> Tensor:
    """log P(x) per element for pixels quantised to ``levels`` values scaled to [-1, 1] (Ho et al. 2020, eq. 13).

    The probability is the Gaussian's mass on x's bin, width 2 / (levels - 1); the two outer bins
    reach to -inf and +inf so the masses sum to one. Uses log_ndtr in the tails where 1 - cdf rounds to 0.
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    half = 1.0 / (levels - 1)
    inv_std = torch.exp(-torch.as_tensor(log_std, dtype=x.dtype, device=x.device))
    upper = (x - mean + half) * inv_std
    lower = (x - mean - half) * inv_std
    log_left = torch.special.log_ndtr(upper)  # the bin (-inf, x + half]
    log_right = torch.special.log_ndtr(-lower)  # the bin [x - half, +inf)
    log_mid = torch.log((torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp_min(1e-12))
    return torch.where(x < -1 + half, log_left, torch.where(x > 1 - half, log_right, log_mid))


def bits_per_dim(nats_per_image: Tensor | float, dims: int) -> Tensor | float:
    """nats per image -> bits per dimension: divide by the dimension count and ln 2."""
    return nats_per_image / (dims * math.log(2.0))


# --- the importance-weighted bound ----------------------------------------------------------------
def importance_log_weights(log_weight_fn: LogWeightFn, k: int, chunk: int = 50,
                           generator: torch.Generator | None = None) -> Tensor:
    """k log weights per input [k, batch], drawn ``chunk`` samples at a time so memory stays bounded."""
    if k < 1 or chunk < 1:
        raise ValueError(f"k and chunk must be >= 1, got k={k}, chunk={chunk}")
    parts = [log_weight_fn(min(chunk, k - done), generator) for done in range(0, k, chunk)]
    return torch.cat(parts, dim=0)  # [k, batch]


def iw_nll(log_w: Tensor) -> Tensor:
    """-log (1/k) Σ_i w_i from log weights [k, batch] -> [batch], with logsumexp (weights overflow exp)."""
    return -(torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0]))


def importance_weighted_nll(log_weight_fn: LogWeightFn, ks: Sequence[int], chunk: int = 50,
                            generator: torch.Generator | None = None) -> dict[int, Tensor]:
    """The importance-weighted bound -log (1/k) Σ p(x, z_i) / q(z_i | x) per input, for every k in ``ks``.

    The samples are nested: the k-sample bound uses the first k of max(ks) draws, so all ks cost one
    max(ks) pass, and their differences are not blurred by independent noise. Each is still an unbiased
    estimate of its own bound, which falls with k towards -log p(x) (Burda et al. 2016, theorem 1).
    k = 1 is the single-sample -ELBO (with the KL sampled, not in closed form).
    """
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty list of integers >= 1, got {list(ks)}")
    log_w = importance_log_weights(log_weight_fn, max(ks), chunk, generator)  # [max k, batch]
    return {k: iw_nll(log_w[:k]) for k in ks}


def check_ks(name: str, ks: Sequence[int]) -> list[int]:
    """Validates a list of importance-sample counts from params (one-line ValueError) and returns it as a list."""
    if (not isinstance(ks, (list, tuple)) or not ks
            or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks)):
        raise ValueError(f"{name} must be a non-empty list of integers >= 1, got {ks!r}")
    return list(ks)
