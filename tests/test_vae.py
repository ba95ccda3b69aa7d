"""The Gaussian VAE (seed and standard), the hierarchical VAE and the shared likelihood arithmetic.

Checks: the seed loss against a hand computation, the closed forms against torch.distributions, the
importance-weighted bound against an exact marginal and its ordering in k, and tiny runs on 8x8 digits.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, distributions, nn

from datamodules.images import DigitsDataModule
from lightning_modules.likelihood.hvae import HierarchicalVAE
from lightning_modules.likelihood.bounds import (bernoulli_log_prob, importance_weighted_nll, iw_nll, normal_kl,
                                          normal_log_prob)
from lightning_modules.likelihood.vae import VAE


# Tiny MLPs on the 2 shared cores: a second intra-op thread only waits (see test_fid.py).
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _trainer(epochs: int, **kwargs: object) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, **kwargs)


# --- the seed loss --------------------------------------------------------------------------------
def _linear(weight: list[list[float]], bias: list[float]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
    return layer


def test_seed_loss_equals_a_hand_computation() -> None:
    model = VAE(image_shape=[1, 2, 2], variant="seed", latent_dim=2, hidden_dim=3)
    # g(x) = (x_0, x_2); f(z) = (z_0, z_1, z_0 + z_1, 0.25)
    model.encoder.net = _linear([[1, 0, 0, 0], [0, 0, 1, 0]], [0, 0])
    model.decoder = _linear([[1, 0], [0, 1], [1, 1], [0, 0]], [0, 0, 0, 0.25])
    x = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 2, 2)
    noise = torch.tensor([[0.5, -1.0]])
    # g = (0, 1); z = g + N = (0.5, 0); f = (0.5, 0, 0.5, 0.25); x - f = (-0.5, 0.5, 0.5, 0)
    # loss = ½ (0² + 1²) + ½ (0.25 + 0.25 + 0.25 + 0) = 0.5 + 0.375
    assert model.seed_loss(x, noise).item() == pytest.approx(0.875, abs=1e-6)

    # The exact -ELBO is the seed loss plus ½ D log 2π, with the same noise drawn from a generator.
    torch.manual_seed(0)
    x = torch.rand(5, 1, 2, 2)
    seed_noise = torch.randn(5, 2, generator=torch.Generator().manual_seed(7))
    recon, kl = model.elbo_terms(x, torch.Generator().manual_seed(7))
    expected = model.seed_loss(x, seed_noise) + 0.5 * 4 * math.log(2 * math.pi)
    assert torch.allclose(recon + kl, expected, atol=1e-5)
    # And training minimises the seed's equation itself, with N from the global RNG.
    torch.manual_seed(3)
    loss = model.training_step((x, torch.zeros(5)), 0)
    torch.manual_seed(3)
    assert loss.item() == pytest.approx(model.seed_loss(x, torch.randn(5, 2)).mean().item(), abs=1e-6)


# --- closed forms ---------------------------------------------------------------------------------
def test_closed_forms_match_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(0)
    mq, mp = torch.randn(50, 6, generator=gen), torch.randn(50, 6, generator=gen)
    lq, lp = torch.randn(50, 6, generator=gen), torch.randn(50, 6, generator=gen)
    q, p = distributions.Normal(mq, (0.5 * lq).exp()), distributions.Normal(mp, (0.5 * lp).exp())
    assert torch.allclose(normal_kl(mq, lq, mp, lp), distributions.kl_divergence(q, p), atol=1e-5)
    standard = distributions.Normal(torch.zeros(6), torch.ones(6))
    assert torch.allclose(normal_kl(mq, lq), distributions.kl_divergence(q, standard), atol=1e-5)
    assert torch.allclose(normal_kl(mq, 0.0), 0.5 * mq**2, atol=1e-6)  # the seed's unit variances: only ½ g² is left
    x = torch.randn(50, 6, generator=gen)
    assert torch.allclose(normal_log_prob(x, mq, lq), q.log_prob(x), atol=1e-5)
    logits, bits = torch.randn(50, 6, generator=gen) * 5, (torch.rand(50, 6, generator=gen) > 0.5).float()
    bernoulli = distributions.Bernoulli(logits=logits)
    assert torch.allclose(bernoulli_log_prob(bits, logits), bernoulli.log_prob(bits), atol=1e-5)


# --- the importance-weighted bound ----------------------------------------------------------------
def test_iw_bound_is_exact_with_the_true_posterior_and_converges_with_the_prior() -> None:
    # p(z) = N(0, 1), p(x|z) = N(z, 1): p(x) = N(0, 2), p(z|x) = N(x/2, 1/2).
    x = torch.tensor([-1.5, 0.0, 2.0])  # [batch]
    exact = -distributions.Normal(0.0, math.sqrt(2.0)).log_prob(x)

    def weights(mean: Tensor, log_var: Tensor):  # noqa: ANN202 -- a LogWeightFn for the proposal N(mean, var)
        def draw(n: int, generator: torch.Generator | None) -> Tensor:
            z = mean + (0.5 * log_var).exp() * torch.randn(n, len(x), generator=generator)  # [n, batch]
            return normal_log_prob(z, torch.zeros(())) + normal_log_prob(x, z) - normal_log_prob(z, mean, log_var)
        return draw

    posterior = importance_weighted_nll(weights(x / 2, torch.full_like(x, math.log(0.5))), [1, 7, 50], chunk=16)
    for nll in posterior.values():
        assert torch.allclose(nll, exact, atol=1e-5)
    prior = importance_weighted_nll(weights(torch.zeros(3), torch.zeros(3)), [1, 5000], chunk=1000,
                                    generator=torch.Generator().manual_seed(0))
    assert torch.allclose(prior[5000], exact, atol=0.05)
    assert iw_nll(torch.full((4, 2), -3.0)).tolist() == pytest.approx([3.0, 3.0])  # equal weights: -log w


def _bounds(model: pl.LightningModule, x: Tensor) -> tuple[float, float, float, float]:
    model.eval()
    with torch.no_grad():
        recon, kl = model.elbo_terms(x, torch.Generator().manual_seed(1))
        neg_elbo = recon + (torch.stack(kl).sum(0) if isinstance(kl, list) else kl)
        nll = importance_weighted_nll(model.log_weight_fn(x), [1, 50, 500], generator=torch.Generator().manual_seed(0))
    return neg_elbo.mean().item(), nll[1].mean().item(), nll[50].mean().item(), nll[500].mean().item()


@pytest.mark.parametrize("trained", [False, True])
def test_iw_bound_falls_with_k(trained: bool) -> None:
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=64, binarize=True)
    model = VAE(**dm.model_args(), variant="standard", latent_dim=4, hidden_dim=32, lr=3e-3)
    if trained:
        _trainer(4).fit(model, datamodule=dm)
    x = dm.images("test")  # [359, 1, 8, 8]: enough images that the means order reliably
    neg_elbo, k1, k50, k500 = _bounds(model, x)
    tol = 1e-3
    assert k500 <= k50 + tol and k50 <= k1 + tol and k50 <= neg_elbo + tol
    assert abs(k1 - neg_elbo) < 0.05 * neg_elbo  # k = 1 is the -ELBO with a sampled KL


# --- tiny runs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["seed", "standard"])
def test_vae_trains_tests_and_draws_on_digits(variant: str) -> None:
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=64, binarize=variant == "standard")
    model = VAE(**dm.model_args(), variant=variant, latent_dim=3, hidden_dim=16, nll_k=[1, 10], nll_images=100,
                traversal_dims=2, sample_count=8)
    trainer = _trainer(1, limit_train_batches=3, limit_val_batches=2)
    trainer.fit(model, datamodule=dm)
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    keys = {"test/loss", "test/elbo", "test/nll_k1", "test/nll_k10"}
    keys |= {"test/seed_loss"} if variant == "seed" else set()
    assert keys <= tested.keys() and all(math.isfinite(tested[k]) for k in keys)
    assert tested["test/elbo"] == pytest.approx(-tested["test/loss"])
    assert model.metric_settings()["nll_k"] == [1, 10] and model.metric_settings()["nll_images"] == 100
    figures = model.make_samples()
    assert set(figures) == {"samples.png", "reconstructions.png", "traversal.png"}


def test_bad_values_get_one_line() -> None:
    with pytest.raises(ValueError, match="variant"):
        VAE(image_shape=[1, 8, 8], variant="gaussian")
    with pytest.raises(ValueError, match="nll_k"):
        VAE(image_shape=[1, 8, 8], nll_k=[0, 5])
    with pytest.raises(ValueError, match="latent_dims"):
        HierarchicalVAE(image_shape=[1, 8, 8], latent_dims=[16])
    model = VAE(image_shape=[1, 8, 8], variant="standard", hidden_dim=4)
    with pytest.raises(ValueError, match="binarize"):
        model.training_step((torch.rand(2, 1, 8, 8), torch.zeros(2)), 0)


def test_hvae_elbo_is_finite_and_falls_on_digits() -> None:
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=64, binarize=True)
    model = HierarchicalVAE(**dm.model_args(), latent_dims=[8, 4], hidden_dim=32, kl_warmup_epochs=4,
                            nll_k=[1, 20], nll_images=64, sample_count=8)
    trainer = _trainer(3)
    before = trainer.validate(model, datamodule=dm, verbose=False)[0]
    trainer.fit(model, datamodule=dm)
    assert 0 < float(trainer.callback_metrics["train/kl_weight"]) < 1  # still warming up in epoch 3 of 4
    after = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert math.isfinite(before["val/loss"]) and after["val/loss"] < before["val/loss"] - 5
    assert {"val/kl_1", "val/kl_2", "val/recon"} <= after.keys()
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert tested["test/nll_k20"] <= tested["test/nll_k1"] + 1e-3
    assert set(model.make_samples()) == {"samples.png", "reconstructions.png"}
    neg_elbo, k1, k50, k500 = _bounds(model, dm.images("test"))
    assert k500 <= k50 + 1e-3 <= neg_elbo + 2e-3
