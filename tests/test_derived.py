"""Derived distributions: inverse-transform samplers pass KS tests; change of variables gives exact densities."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from estimators.derived import (
    change_of_variables_log_density,
    exp1_from_uniform,
    inverse_transform_sample,
    log_standard_normal,
    log_uniform01,
)


def test_exp1_from_uniform_is_exponential() -> None:
    x = exp1_from_uniform(5000, torch.Generator().manual_seed(0))
    assert x.shape == (5000,) and x.dtype == torch.float64
    assert bool((x >= 0).all()) and bool(torch.isfinite(x).all())
    assert stats.kstest(x.numpy(), "expon").pvalue > 0.01


def test_exp1_is_reproducible() -> None:
    a = exp1_from_uniform(100, torch.Generator().manual_seed(3))
    b = exp1_from_uniform(100, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_inverse_transform_logistic() -> None:
    x = inverse_transform_sample(lambda z: torch.log(z / (1 - z)), 5000, torch.Generator().manual_seed(1))
    assert stats.kstest(x.numpy(), "logistic").pvalue > 0.01


def test_change_of_variables_exp1_exact() -> None:
    x = torch.linspace(0.0, 10.0, 101, dtype=torch.float64)
    # x = -log z, so z = f^{-1}(x) = exp(-x) and |dz/dx| = exp(-x): log p(x) = 0 + (-x).
    logp = change_of_variables_log_density(lambda t: torch.exp(-t), log_uniform01, x)
    torch.testing.assert_close(logp, -x, rtol=0, atol=1e-12)


def test_change_of_variables_lognormal() -> None:
    x = torch.linspace(0.05, 8.0, 200, dtype=torch.float64)
    logp = change_of_variables_log_density(torch.log, log_standard_normal, x)
    np.testing.assert_allclose(logp.numpy(), stats.lognorm.logpdf(x.numpy(), s=1), rtol=0, atol=1e-6)
    assert not logp.requires_grad


def test_change_of_variables_under_no_grad_and_differentiable() -> None:
    x = torch.linspace(0.5, 3.0, 5, dtype=torch.float64)
    with torch.no_grad():
        a = change_of_variables_log_density(torch.log, log_standard_normal, x)
    xg = x.clone().requires_grad_(True)
    b = change_of_variables_log_density(torch.log, log_standard_normal, xg)
    torch.testing.assert_close(a, b.detach())
    # d/dx log lognormal(x) = -(log x + 1) / x
    (grad,) = torch.autograd.grad(b.sum(), xg)
    torch.testing.assert_close(grad, -(torch.log(x) + 1) / x)
