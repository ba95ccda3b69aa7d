"""The noise schedule against Ho et al. 2020's closed forms (eqs. 4, 6, 7, 11, 13), Monte Carlo draws of the chain,
and Nichol & Dhariwal 2021's cosine schedule and variance interpolation."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.likelihood.bounds import discretized_gaussian_log_prob
from lightning_modules.likelihood.diffusion_scheduler import (
    NoiseScheduler,
    geometric_strata,
    strided_timesteps,
    stratified_timesteps,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _paper_schedule(T: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """β_t and ᾱ_t = Π_{s<=t} (1 - β_s) for t = 1..T, written out independently of the scheduler (index t - 1)."""
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    return betas, torch.cumprod(1 - betas, 0)


def test_add_noise_has_the_moments_of_eq_4_and_of_the_chain() -> None:
    sched = NoiseScheduler(1000)
    _, alpha_bar = _paper_schedule()
    x0 = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    n = 40000
    for t in (1, 250, 1000):
        noise = torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(t))
        xt = sched.add_noise(x0.expand(n, -1, -1, -1), noise, torch.full((n,), t))  # [n, 1, 4, 4]
        ab = alpha_bar[t - 1].item()
        assert torch.allclose(xt.mean(0), math.sqrt(ab) * x0[0], atol=4 * math.sqrt((1 - ab) / n))
        assert torch.allclose(xt.var(0), torch.full_like(x0[0], 1 - ab), rtol=0.05)
    # The same law as t single steps x_t = sqrt(1 - β_t) x_{t-1} + sqrt(β_t) z (eq. 2), run here for t = 30.
    gen = torch.Generator().manual_seed(1)
    x = x0.expand(n, -1, -1, -1).double()
    for beta in sched.betas[1:31]:
        x = (1 - beta).sqrt() * x + beta.sqrt() * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    ab = sched.alpha_bar[30].item()
    assert torch.allclose(x.mean(0).float(), math.sqrt(ab) * x0[0], atol=4 * math.sqrt((1 - ab) / n))
    assert torch.allclose(x.var(0).float(), torch.full_like(x0[0], 1 - ab), rtol=0.05)


def test_posterior_matches_eqs_6_7_and_bayes_rule() -> None:
    sched = NoiseScheduler(1000)
    betas, alpha_bar = _paper_schedule()
    gen = torch.Generator().manual_seed(0)
    x0, xt = torch.rand(3, 1, 4, 4, generator=gen) * 2 - 1, torch.randn(3, 1, 4, 4, generator=gen)
    for t in (2, 10, 500, 1000):
        mean, var = sched.posterior(x0, xt, torch.full((3,), t))
        b, ab, ab_prev = betas[t - 1], alpha_bar[t - 1], alpha_bar[t - 2]
        # eq. 7: μ̃ = sqrt(ᾱ_{t-1}) β_t / (1 - ᾱ_t) x_0 + sqrt(α_t) (1 - ᾱ_{t-1}) / (1 - ᾱ_t) x_t
        paper_mean = ab_prev.sqrt() * b / (1 - ab) * x0 + (1 - b).sqrt() * (1 - ab_prev) / (1 - ab) * xt
        assert torch.allclose(mean, paper_mean.float(), atol=1e-5)
        assert var.flatten()[0].item() == pytest.approx(((1 - ab_prev) / (1 - ab) * b).item(), rel=1e-5)
        # Bayes: the precision of x_{t-1} given x_t and x_0 is 1 / (1 - ᾱ_{t-1}) + α_t / β_t
        assert var.flatten()[0].item() == pytest.approx(1 / (1 / (1 - ab_prev) + (1 - b) / b).item(), rel=1e-5)


@pytest.mark.parametrize(("t", "s"), [(40, 39), (40, 25)])
def test_posterior_is_the_conditional_law_of_monte_carlo_draws(t: int, s: int) -> None:
    """Draw x_s ~ q(x_s | x_0) and then x_t ~ q(x_t | x_s); regress x_s on x_t: slope, intercept and residual
    variance must be the posterior's coefficient of x_t, its x_0 term and its variance (a strided jump too)."""
    sched = NoiseScheduler(100, beta_end=0.05)
    n, x0 = 400000, 0.6
    gen = torch.Generator().manual_seed(t + s)
    ab_s, ab_t = sched.alpha_bar[s], sched.alpha_bar[t]
    xs = ab_s.sqrt() * x0 + (1 - ab_s).sqrt() * torch.randn(n, generator=gen, dtype=torch.float64)
    a = ab_t / ab_s  # the jump's own ᾱ
    xt = a.sqrt() * xs + (1 - a).sqrt() * torch.randn(n, generator=gen, dtype=torch.float64)
    slope = torch.cov(torch.stack([xs, xt]))[0, 1] / xt.var()
    intercept = xs.mean() - slope * xt.mean()
    resid = (xs - intercept - slope * xt).var()
    tt, ss = torch.tensor([t]), torch.tensor([s])
    zero, one = torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.ones(1, 1, 1, 1, dtype=torch.float64)
    c_t = (sched.posterior(zero, one, tt, ss)[0] - sched.posterior(zero, zero, tt, ss)[0]).item()
    at_zero, var = sched.posterior(x0 * one, zero, tt, ss)
    assert slope.item() == pytest.approx(c_t, abs=5e-3)
    assert intercept.item() == pytest.approx(at_zero.item(), abs=5e-3)
    assert resid.item() == pytest.approx(var.item(), rel=0.02)


def test_the_mean_through_x0_hat_is_eq_11() -> None:
    sched = NoiseScheduler(1000)
    betas, alpha_bar = _paper_schedule()
    gen = torch.Generator().manual_seed(0)
    xt, eps = torch.randn(2, 1, 4, 4, generator=gen), torch.randn(2, 1, 4, 4, generator=gen)
    for t in (2, 300, 1000):
        tt = torch.full((2,), t)
        mean, _ = sched.posterior(sched.predict_x0(xt, eps, tt), xt, tt)
        b, ab = betas[t - 1].item(), alpha_bar[t - 1].item()
        eq11 = (xt - b / math.sqrt(1 - ab) * eps) / math.sqrt(1 - b)
        assert torch.allclose(mean, eq11, atol=1e-4)


@pytest.mark.parametrize("reverse_variance", ["beta", "beta_tilde"])
def test_step_is_algorithm_2_and_the_strided_step_with_stride_1_is_the_full_step(reverse_variance: str) -> None:
    sched = NoiseScheduler(1000, reverse_variance=reverse_variance)
    betas, alpha_bar = _paper_schedule()
    gen = torch.Generator().manual_seed(0)
    xt, eps = torch.randn(2, 1, 4, 4, generator=gen), torch.randn(2, 1, 4, 4, generator=gen)
    for t in (2, 300, 1000):
        b, ab, ab_prev = betas[t - 1].item(), alpha_bar[t - 1].item(), alpha_bar[t - 2].item()
        sigma2 = b if reverse_variance == "beta" else (1 - ab_prev) / (1 - ab) * b
        z = torch.randn(xt.shape, generator=torch.Generator().manual_seed(t))
        paper = (xt - b / math.sqrt(1 - ab) * eps) / math.sqrt(1 - b) + math.sqrt(sigma2) * z  # algorithm 2, line 4
        ours = sched.step(eps, t, t - 1, xt, torch.Generator().manual_seed(t), clip=False)
        assert torch.allclose(ours, paper, atol=1e-5)
    # A sampler asked for T steps visits every t: the respaced sampler with stride 1 is algorithm 2.
    assert sched.sampling_timesteps(1000) == sched.sampling_timesteps(None) == list(range(1000, -1, -1))
    assert sched.sampling_timesteps(4) == [1000, 750, 500, 250, 0]
    # The last step returns x̂_0 without noise.
    x0_hat = sched.predict_x0(xt, eps, torch.ones(2, dtype=torch.long)).clamp(-1, 1)
    assert torch.equal(sched.step(eps, 1, 0, xt, torch.Generator().manual_seed(0)), x0_hat)


def test_reverse_variances_and_their_interpolation() -> None:
    betas, alpha_bar = _paper_schedule()
    t = torch.tensor([1, 2, 500])
    tilde = [(1 - alpha_bar[0]) / (1 - alpha_bar[1]) * betas[1]]  # t = 1 borrows β̃_2 (the authors' clipping)
    tilde += [(1 - alpha_bar[i - 2]) / (1 - alpha_bar[i - 1]) * betas[i - 1] for i in (2, 500)]
    beta = [tilde[0], betas[1], betas[499]]
    for name, expected in (("beta", beta), ("beta_tilde", tilde)):
        got = NoiseScheduler(1000, reverse_variance=name).log_variance(t).flatten().exp()
        assert torch.allclose(got, torch.stack(expected), rtol=1e-9)
    learned = NoiseScheduler(1000, reverse_variance="learned")
    v = torch.tensor([0.0, 1.0, 0.5]).view(3, 1, 1, 1)
    got = learned.log_variance(t, None, v).flatten()
    want = [torch.log(tilde[0]), torch.log(betas[1]), 0.5 * (torch.log(betas[499]) + torch.log(tilde[2]))]
    assert torch.allclose(got, torch.stack(want), rtol=1e-9)
    # t = 1 interpolates between β̃_2 and β_1 (Nichol & Dhariwal's clipped log variance).
    top = learned.log_variance(torch.tensor([1]), None, torch.ones(1, 1, 1, 1)).exp().item()
    assert top == pytest.approx(betas[0].item(), rel=1e-9)
    with pytest.raises(ValueError, match="needs the network's variance"):
        learned.log_variance(t)


def test_cosine_schedule_is_nichol_and_dhariwals() -> None:
    T, s = 1000, 0.008
    sched = NoiseScheduler(T, schedule="cosine")
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in (0, 1, 100, 500)]
    for i, t in enumerate((1, 100, 500), start=1):
        assert sched.alpha_bar[t].item() == pytest.approx(f[i] / f[0], rel=1e-9)  # ᾱ_t = f(t) / f(0), eq. 17
    assert sched.betas[1:].max().item() <= 0.999 and (sched.betas[1:] > 0).all()
    with pytest.raises(ValueError, match="schedule must be one of"):
        NoiseScheduler(10, schedule="quadratic")


def test_prior_term_and_decoder_are_the_closed_forms() -> None:
    sched = NoiseScheduler(50)
    x0 = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    ab = sched.alpha_bar[50]
    # KL(N(sqrt(ᾱ) x0, 1 - ᾱ) || N(0, 1)) = ½ (ᾱ x0² + (1 - ᾱ) - 1 - log(1 - ᾱ)) per pixel
    expected = 0.5 * (ab * x0.double() ** 2 - ab - torch.log(1 - ab)).sum()
    assert sched.prior_kl(x0).item() == pytest.approx(expected.item(), rel=1e-5)
    mean, log_var = x0 + 0.01, torch.log(torch.tensor(1e-4)).view(1, 1, 1, 1)
    direct = -discretized_gaussian_log_prob(x0, mean, 0.5 * log_var, 256).sum()
    assert sched.decoder_nll(x0, mean, log_var, 256).item() == pytest.approx(direct.item(), rel=1e-6)
    # L_{t-1} is zero when p(x_{t-1} | x_t) is the posterior itself.
    t, xt = torch.tensor([7]), torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    q_mean, q_var = sched.posterior(x0, xt, t)
    assert sched.kl(x0, xt, t, q_mean, torch.log(q_var)).abs().item() < 1e-6


@pytest.mark.parametrize(("T", "stride"), [(10, 1), (10, 3), (50, 7)])
def test_the_strided_estimate_is_exactly_unbiased_over_its_offsets(T: int, stride: int) -> None:
    """Each image draws one offset; averaging the weighted sum over every offset gives the full sum exactly."""
    terms = torch.rand(T + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(T))  # any L_{t-1}
    full = terms[2:].sum()
    n = stride * 200  # enough images that every offset appears
    pairs = strided_timesteps(T, stride, n, torch.Generator().manual_seed(0), "cpu")
    estimate = sum(w.double() * terms[t] for t, w in pairs)  # [n]
    offsets = pairs[0][0] - 2  # [n]
    by_offset = torch.stack([estimate[offsets == o].mean() for o in range(stride)])  # every offset's value
    assert len(pairs) == math.ceil((T - 1) / stride)
    assert by_offset.mean().item() == pytest.approx(full.item(), rel=1e-12)
    if stride == 1:
        assert torch.allclose(estimate, full.expand(n))  # stride 1: every image gets the exact sum


@pytest.mark.parametrize(("T", "k"), [(1000, 100), (1000, 50), (30, 10), (30, 29)])
def test_geometric_strata_cover_every_t_once_and_their_estimate_is_unbiased(T: int, k: int) -> None:
    strata = geometric_strata(T, k)
    covered = [lo + i for lo, width in strata for i in range(width)]
    assert covered == list(range(2, T + 1))  # every t in exactly one stratum, in order
    assert k <= len(strata) <= k + 2 and strata[0] == (2, 1)
    widths = [w for _, w in strata]
    assert max(widths) == widths[-1] and widths[0] == 1  # narrow at small t, widest at large t
    terms = torch.rand(T + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    pairs = stratified_timesteps(strata, 4, torch.Generator().manual_seed(0), "cpu")
    assert all(((lo <= t) & (t < lo + w)).all() and (wt == w).all() for (lo, w), (t, wt) in zip(strata, pairs))
    # The expectation over each stratum's uniform t: width x the stratum's mean term = the stratum's sum.
    expectation = sum(w * terms[lo: lo + w].mean() for lo, w in strata)
    assert expectation.item() == pytest.approx(terms[2:].sum().item(), rel=1e-12)


@pytest.mark.parametrize(("T", "k", "words"), [
    (1000, 100, "stratified estimate: 100 strata of t with geometrically growing widths (t = 2 to 25 each alone), one "
                "uniform t per stratum, weight its width"),
    (20, 3, "stratified estimate: 3 strata of t with geometrically growing widths, one uniform t per stratum, weight "
            "its width"),
    (30, 1, "stratified estimate: 1 stratum of t with geometrically growing widths, one uniform t per stratum, "
            "weight its width"),
    (30, 29, "all t"),
])
def test_the_geometric_estimate_is_described_as_it_is_drawn(T: int, k: int, words: str) -> None:
    """The words stored beside every bits/dim name the strata as they are: how many, and which small t's are taken
    alone (the leading run of one-t strata; none when the first stratum is wider)."""
    from lightning_modules.likelihood.diffusion_bound import BoundTimesteps

    bound = BoundTimesteps(T, k, "geometric")
    strata = bound.geometric()
    assert bound.describe() == words and bound.network_calls() == len(strata)
    if k < T - 1 and strata[0][1] == 1:
        alone = next(i for i, (_, width) in enumerate(strata) if width > 1)
        assert f"t = 2 to {strata[alone - 1][0]} each alone" in words
