"""DDPM's noise schedule (Ho, Jain & Abbeel 2020, https://arxiv.org/abs/2006.11239): the forward process, the
posterior, one reverse step, and the terms of the variational bound, with no network in sight.

Shaped like diffusers' schedulers: ``add_noise`` draws x_t from q(x_t | x_0) (eq. 4), ``step`` takes one reverse
jump x_t -> x_s given the network's ε (eqs. 6-7 and 11 when s = t - 1; the respaced jump of Nichol & Dhariwal
2021, https://arxiv.org/abs/2102.09672, when s < t - 1). ``prior_kl``, ``kl`` and ``decoder_nll`` are L_T,
L_{t-1} and L_0 of eq. 5 with the discretised Gaussian decoder of eq. 13.

Index t runs 0..T with β_0 = 0 and ᾱ_0 = 1, so that t means the paper's t. Every schedule tensor is float64:
1 - ᾱ_t and 1 - ᾱ_t / ᾱ_s cancel catastrophically in float32 at small t (relative error ~1e-3 at t = 2), exactly
where the bound's terms are most sensitive; coefficients are cast to the images' dtype only once formed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_modules.likelihood.bounds import discretized_gaussian_log_prob, normal_kl, randint, randn

SCHEDULES = ("linear", "cosine")
REVERSE_VARIANCES = ("beta", "beta_tilde", "learned")


def make_betas(timesteps: int, schedule: str, beta_start: float, beta_end: float) -> Tensor:
    """β_1..β_T [T], float64: Ho et al.'s linear schedule, or Nichol & Dhariwal's cosine ᾱ (their eq. 17, s = 0.008,
    β clipped at 0.999) which destroys the signal more slowly near t = 0 and t = T."""
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    s = 0.008
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2  # [T + 1], ᾱ(t) up to the factor f(0)
    return (1 - f[1:] / f[:-1]).clamp(max=0.999)


def _col(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)  # [batch] -> [batch, 1, 1, 1], broadcast over images


class NoiseScheduler(nn.Module):
    """β_t, ᾱ_t and the Gaussians built from them; an nn.Module only so that its float64 buffers follow .to(device).

    ``reverse_variance`` is σ_t² of p(x_{t-1} | x_t): β_t or β̃_t (Ho et al. section 3.2), or ``learned``: the
    network's extra output v in [0, 1] interpolates log σ² = v log β_t + (1 - v) log β̃_t (Nichol & Dhariwal eq. 15).
    At t = 1 the fixed choices use β̃_2 as in the authors' code, because β̃_1 = 0 would make L_0 degenerate.
    The buffers are rebuilt from the arguments, so they are not checkpointed.
    """

    def __init__(self, timesteps: int = 1000, schedule: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02, reverse_variance: str = "beta_tilde") -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        if reverse_variance not in REVERSE_VARIANCES:
            raise ValueError(f"reverse_variance must be one of {list(REVERSE_VARIANCES)}, got {reverse_variance!r}")
        self.timesteps, self.schedule, self.reverse_variance = timesteps, schedule, reverse_variance
        betas = torch.cat([torch.zeros(1, dtype=torch.float64), make_betas(timesteps, schedule, beta_start, beta_end)])
        alpha_bar = torch.cumprod(1 - betas, dim=0)  # [T + 1]
        for name, value in (("betas", betas), ("alpha_bar", alpha_bar)):
            self.register_buffer(name, value, persistent=False)

    # ---- the forward process --------------------------------------------------------------------
    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε ~ q(x_t | x_0) (eq. 4); x0, noise [batch, C, H, W], t [batch]."""
        ab = _col(self.alpha_bar[t])
        return ab.sqrt().to(x0.dtype) * x0 + (1 - ab).sqrt().to(x0.dtype) * noise

    def predict_x0(self, xt: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t), eq. 4 solved for x_0."""
        ab = _col(self.alpha_bar[t])
        return (xt - (1 - ab).sqrt().to(xt.dtype) * eps) / ab.sqrt().to(xt.dtype)

    def posterior(self, x0: Tensor, xt: Tensor, t: Tensor, s: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean [batch, C, H, W] and variance [batch, 1, 1, 1] of q(x_s | x_t, x_0), s < t (default t - 1: eqs. 6-7).

        A jump s -> t is one step with β = 1 - ᾱ_t / ᾱ_s, so the same formulas serve the strided sampler.
        """
        s = t - 1 if s is None else s
        ab_t, ab_s = _col(self.alpha_bar[t]), _col(self.alpha_bar[s])
        beta_ts = 1 - ab_t / ab_s
        c0 = (ab_s.sqrt() * beta_ts / (1 - ab_t)).to(x0.dtype)
        ct = ((ab_t / ab_s).sqrt() * (1 - ab_s) / (1 - ab_t)).to(x0.dtype)
        return c0 * x0 + ct * xt, ((1 - ab_s) / (1 - ab_t) * beta_ts).to(x0.dtype)

    # ---- the reverse process --------------------------------------------------------------------
    def log_variance(self, t: Tensor, s: Tensor | None = None, v: Tensor | None = None) -> Tensor:
        """log σ² of p(x_s | x_t) [batch, 1, 1, 1] (or [batch, C, H, W] for a learned v), in float64.

        For a jump s -> t the fixed choices are its own β = 1 - ᾱ_t / ᾱ_s and β̃ = (1 - ᾱ_s) / (1 - ᾱ_t) β.
        """
        s = t - 1 if s is None else s
        ab_t, ab_s = _col(self.alpha_bar[t]), _col(self.alpha_bar[s])
        beta = 1 - ab_t / ab_s
        # β̃ of the jump; at s = 0 (t = 1 when not strided) it is 0, so the decoder borrows β̃ of the jump 1 -> 2.
        ab_2, ab_1 = self.alpha_bar[2], self.alpha_bar[1]
        tilde_12 = (1 - ab_1) / (1 - ab_2) * (1 - ab_2 / ab_1)
        first = _col(s == 0)
        beta_tilde = torch.where(first, tilde_12, (1 - ab_s) / (1 - ab_t) * beta)
        if self.reverse_variance == "learned":
            if v is None:
                raise ValueError("reverse_variance 'learned' needs the network's variance output v")
            # At s = 0 the interpolation runs between β̃_2 and β_1 ... β_t: the upper end is the jump's β.
            return v.double() * torch.log(beta) + (1 - v.double()) * torch.log(beta_tilde)
        return torch.log(torch.where(first, tilde_12, beta) if self.reverse_variance == "beta" else beta_tilde)

    def step(self, eps: Tensor, t: int, s: int, xt: Tensor, generator: torch.Generator | None = None,
             v: Tensor | None = None, clip: bool = True) -> Tensor:
        """One reverse jump x_t -> x_s ~ p(x_s | x_t) = N(μ̃(x̂_0, x_t), σ²), for images xt [batch, C, H, W].

        s = t - 1 without clipping is Ho et al.'s algorithm 2 line 4 (eq. 11's mean); ``clip`` bounds x̂_0 to
        [-1, 1] as the authors' code does. At s = 0 the result is x̂_0 itself, with no noise (the decoder's mean).
        """
        n = len(xt)
        tt = torch.full((n,), t, dtype=torch.long, device=xt.device)
        x0_hat = self.predict_x0(xt, eps, tt)
        if clip:
            x0_hat = x0_hat.clamp(-1, 1)
        if s == 0:
            return x0_hat
        ss = torch.full_like(tt, s)
        mean, _ = self.posterior(x0_hat, xt, tt, ss)
        std = (0.5 * self.log_variance(tt, ss, v)).exp().to(xt.dtype)
        return mean + std * randn(xt.shape, generator, xt.device, xt.dtype)

    def sampling_timesteps(self, steps: int | None) -> list[int]:
        """T = τ_K > ... > τ_1 > τ_0 = 0, evenly spaced: all T steps for None (or steps >= T)."""
        T = self.timesteps
        steps = min(steps or T, T)
        return sorted({round(T * i / steps) for i in range(steps + 1)}, reverse=True)

    # ---- the bound, in nats per image [batch] ---------------------------------------------------
    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)), in closed form."""
        ab_T = self.alpha_bar[self.timesteps]
        return normal_kl(ab_T.sqrt().to(x0.dtype) * x0, torch.log(1 - ab_T).to(x0.dtype)).flatten(1).sum(1)

    def kl(self, x0: Tensor, xt: Tensor, t: Tensor, model_mean: Tensor, model_log_var: Tensor) -> Tensor:
        """L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t >= 2 (eq. 5's middle terms)."""
        q_mean, q_var = self.posterior(x0, xt, t)
        return normal_kl(q_mean, torch.log(q_var), model_mean, model_log_var.to(x0.dtype)).flatten(1).sum(1)

    def decoder_nll(self, x0: Tensor, model_mean: Tensor, model_log_var: Tensor, levels: int) -> Tensor:
        """L_0 = -log p(x_0 | x_1) with the discretised Gaussian decoder (eq. 13) on ``levels`` pixel values."""
        log_std = (0.5 * model_log_var).to(x0.dtype)
        return -discretized_gaussian_log_prob(x0, model_mean, log_std, levels).flatten(1).sum(1)


def strided_timesteps(timesteps: int, stride: int, n: int, generator: torch.Generator | None,
                      device: torch.device | str) -> list[tuple[Tensor, Tensor]]:
    """The t's of {2..T} that estimate Σ_t L_{t-1} for n images, as (t [n], weight [n]) pairs.

    stride 1: every t, weight 1 (the exact sum). stride s > 1: t = 2 + o + j s from a random offset o ~ U{0..s-1}
    per image, weight s (0 past T): every t is drawn with probability exactly 1/s, so the weighted sum is an
    unbiased estimate (systematic sampling; the terms change smoothly in t, which keeps its variance low).
    """
    ones = torch.ones(n, dtype=torch.long, device=device)
    offset = randint(0, stride, (n,), generator, device) if stride > 1 else 0 * ones
    pairs = []
    for j in range(math.ceil((timesteps - 1) / stride)):
        t = 2 + offset + j * stride  # [n]
        pairs.append((t.clamp(max=timesteps), stride * (t <= timesteps).to(torch.float32)))
    return pairs
