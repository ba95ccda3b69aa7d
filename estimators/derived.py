"""Derived distributions: new random variables as functions of simple ones.

Two tools from the course notes:
- inverse-transform sampling: if z ~ U[0,1] and F is a CDF, x = F^{-1}(z) has CDF F (Devroye 1986, "Non-Uniform
  Random Variate Generation", thm. II.2.1);
- change of variables: for a monotone map x = f(z), p_x(x) = p_z(f^{-1}(x)) |d f^{-1}/dx| (Bishop, PRML, eq. 1.27).

The seed example is x = -log z with z ~ U[0,1], which is Exp(1): p(x) = e^{-x} for x >= 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "change_of_variables_log_density",
    "exp1_from_uniform",
    "inverse_transform_sample",
    "log_standard_normal",
    "log_uniform01",
]


def _uniform_open0(n: int, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """n draws from U(0, 1]. torch.rand is [0, 1); 1 - u has the same law and never hits 0, so log and most
    inverse CDFs stay finite."""
    return 1.0 - torch.rand(n, generator=generator, dtype=dtype, device=generator.device)  # [n]


def inverse_transform_sample(icdf: Callable[[Tensor], Tensor], n: int, generator: torch.Generator,
                             dtype: torch.dtype = torch.float64) -> Tensor:
    """x = icdf(z), z ~ U[0,1]: n samples from the distribution whose inverse CDF is ``icdf``.

    The uniforms come from ``generator`` on its own device, so the seed fixes the samples. z is drawn in (0, 1],
    so an icdf with a pole at 0 (e.g. -log z) stays finite; one with a pole at 1 (e.g. logit) may give +inf with
    probability 2^-53 per draw in float64.
    """
    z = _uniform_open0(n, generator, dtype)  # [n]
    return icdf(z)  # [n]


def exp1_from_uniform(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> Tensor:
    """The seed's example: x = -log z, z ~ U[0,1], so x ~ Exp(1) with p(x) = e^{-x} for x >= 0.

    P(x <= t) = P(z >= e^{-t}) = 1 - e^{-t}, the Exp(1) CDF. The course notes have a sign slip here (e^{+x} is not
    even normalisable on x >= 0); the code uses the correct form, with the minus sign in both the map and the
    density. -log z is also the Exp(1) icdf -log(1 - u) applied to u = 1 - z, which has the same law as z.
    """
    return inverse_transform_sample(lambda z: -torch.log(z), n, generator, dtype)  # [n]


def log_uniform01(z: Tensor) -> Tensor:
    """log density of U[0,1]: 0 inside, -inf outside."""
    inside = (z >= 0) & (z <= 1)
    return torch.where(inside, torch.zeros_like(z), torch.full_like(z, -math.inf))


def log_standard_normal(z: Tensor) -> Tensor:
    """log density of N(0, 1)."""
    return -0.5 * (z * z + math.log(2.0 * math.pi))


def change_of_variables_log_density(f_inv: Callable[[Tensor], Tensor], log_p_z: Callable[[Tensor], Tensor],
                                    x: Tensor) -> Tensor:
    """log p_x(x) = log p_z(f^{-1}(x)) + log |d f^{-1}/dx| for a monotone 1-D map x = f(z).

    The derivative comes from torch.autograd, so any differentiable elementwise ``f_inv`` works without a
    hand-written Jacobian. Because f_inv acts elementwise, the gradient of sum_i f_inv(x)_i w.r.t. x_i is exactly
    d f_inv/dx at x_i: one backward pass gives all n derivatives. If x requires grad the result stays
    differentiable (create_graph), e.g. to fit a flow by maximum likelihood; otherwise it is detached.

    x [n] -> [n].
    """
    with torch.enable_grad():  # also works when the caller is under torch.no_grad()
        xg = x if x.requires_grad else x.detach().requires_grad_(True)  # [n]
        z = f_inv(xg)  # [n]
        (dz_dx,) = torch.autograd.grad(z.sum(), xg, create_graph=x.requires_grad)  # [n]
        out = log_p_z(z) + torch.log(torch.abs(dz_dx))  # [n]
    return out if x.requires_grad else out.detach()
