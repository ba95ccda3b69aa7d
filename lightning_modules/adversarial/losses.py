"""What GAN, pix2pix and CycleGAN share: the seed's value function, its G losses and the two Adam optimizers.

The seed's ``R = mean_x[-½ log D(x) - ½ log(1 - D(G(z)))]`` (Goodfellow et al. 2014,
https://arxiv.org/abs/1406.2661) is what D minimises; G either maximises R ("minimax") or minimises the
usual non-saturating -½ log D(G(z)). All work on D's logits: log D = logsigmoid(l), log(1 - D) = logsigmoid(-l).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

G_LOSSES = ("minimax", "non_saturating")


# --- the seed's objective, on D's logits (log D = logsigmoid(l), log(1 - D) = logsigmoid(-l)) ------
def discriminator_objective(d_real_logits: Tensor, d_fake_logits: Tensor) -> Tensor:
    """R = mean[-½ log D(x)] + mean[-½ log(1 - D(G(z)))], in nats; D minimises it. Any logit shapes."""
    return -0.5 * F.logsigmoid(d_real_logits).mean() - 0.5 * F.logsigmoid(-d_fake_logits).mean()


def generator_loss(d_fake_logits: Tensor, kind: str) -> Tensor:
    """What G minimises: "minimax" = -R's fake half (½ log(1 - D(G(z)))), "non_saturating" = -½ log D(G(z))."""
    if kind == "minimax":
        return 0.5 * F.logsigmoid(-d_fake_logits).mean()
    if kind == "non_saturating":
        return -0.5 * F.logsigmoid(d_fake_logits).mean()
    raise ValueError(f"g_loss must be one of {G_LOSSES}, got {kind!r}")


def r1_penalty(discriminator: nn.Module, real: Tensor) -> tuple[Tensor, Tensor]:
    """D's logits on ``real`` [batch] and R1 = mean_x ||d logit / d x||² (Mescheder et al. 2018), kept differentiable.

    R1 penalises D's slope on the data only. At the equilibrium (P_gen = P_data, D flat) it is zero, so the
    game's fixed point is unchanged; near it, it damps the rotation the plain game orbits with instead of
    converging (https://arxiv.org/abs/1801.04406, Section 4). ``create_graph`` lets D's step descend through
    the gradient itself. With BatchNorm in D the gradient of the summed logits also carries the coupling
    BatchNorm makes between a batch's images; D is applied to the reals once, as without the penalty.
    """
    real = real.detach().requires_grad_(True)
    logits = discriminator(real)  # [batch]
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)  # [batch, C, H, W]
    return logits, grad.pow(2).flatten(1).sum(1).mean()


def check_adam_settings(lr: float, betas: Sequence[float], **loss_weights: float) -> None:
    """One-line ValueErrors for the loss weights (each >= 0; 0 drops its term), lr (> 0) and Adam's two betas."""
    for name, value in loss_weights.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0 (0 drops its term), got {value}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")


def adam_pair(generator_params: Iterable[nn.Parameter], discriminator_params: Iterable[nn.Parameter], lr: float,
              betas: Sequence[float], lr_d: float | None = None) -> list[torch.optim.Optimizer]:
    """[G's Adam, D's Adam], the order the manual-optimization steps unpack; D uses ``lr_d`` when given."""
    betas = tuple(betas)
    return [torch.optim.Adam(generator_params, lr=lr, betas=betas),
            torch.optim.Adam(discriminator_params, lr=lr if lr_d is None else lr_d, betas=betas)]


def linear_decay_factor(epoch: int, decay_from: int, max_epochs: int) -> float:
    """1 before ``decay_from``, then falling linearly to 0 at ``max_epochs`` (pix2pix/CycleGAN's schedule)."""
    if epoch < decay_from:
        return 1.0
    return max(0.0, (max_epochs - epoch) / (max_epochs - decay_from))
