"""DDPM against Ho et al. 2020's formulas: forward noising, the posterior, the discretised decoder, the bound,
sampling, and a tiny run on digits."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from scipy.stats import norm

from datamodules.images import DigitsDataModule
from lightning_modules.metrics.classifier import DomainClassifier
from lightning_modules.likelihood.diffusion import DDPM
from lightning_modules.likelihood.bounds import discretized_gaussian_log_prob


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _tiny(**kwargs: object) -> DDPM:
    args = dict(image_shape=[1, 8, 8], base_channels=4, channel_mults=[1, 2], sample_count=4)
    return DDPM(**(args | kwargs))


def _paper_schedule(T: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """β_t and ᾱ_t = Π_{s<=t} (1 - β_s) for t = 1..T, written out independently of the module (index t - 1)."""
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    return betas, torch.cumprod(1 - betas, 0)


def test_forward_noising_has_the_closed_form_moments() -> None:
    model = _tiny()
    betas, alpha_bar = _paper_schedule()
    x0 = torch.linspace(-1, 1, 64).view(1, 1, 8, 8)
    for t in (1, 250, 1000):
        n = 20000
        noise = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(t))
        xt = model.q_sample(x0.expand(n, -1, -1, -1), torch.full((n,), t), noise)  # [n, 1, 8, 8]
        ab = alpha_bar[t - 1].item()
        assert torch.allclose(xt.mean(0), math.sqrt(ab) * x0[0], atol=4 * math.sqrt((1 - ab) / n))
        assert torch.allclose(xt.var(0), torch.full_like(x0[0], 1 - ab), rtol=0.05)


def test_posterior_matches_the_paper_and_bayes_rule() -> None:
    model = _tiny()
    betas, alpha_bar = _paper_schedule()
    gen = torch.Generator().manual_seed(0)
    x0, xt = torch.rand(3, 1, 8, 8, generator=gen) * 2 - 1, torch.randn(3, 1, 8, 8, generator=gen)
    for t in (2, 10, 500, 1000):
        mean, var = model.q_posterior(x0, xt, torch.full((3,), t))
        b, ab, ab_prev = betas[t - 1], alpha_bar[t - 1], alpha_bar[t - 2]
        # eq. 7: μ̃ = sqrt(ᾱ_{t-1}) β_t / (1 - ᾱ_t) x_0 + sqrt(α_t) (1 - ᾱ_{t-1}) / (1 - ᾱ_t) x_t
        paper_mean = ab_prev.sqrt() * b / (1 - ab) * x0 + (1 - b).sqrt() * (1 - ab_prev) / (1 - ab) * xt
        paper_var = (1 - ab_prev) / (1 - ab) * b
        assert torch.allclose(mean, paper_mean.float(), atol=1e-5)
        assert var.flatten()[0].item() == pytest.approx(paper_var.item(), rel=1e-4)
        # Bayes: precision of x_{t-1} = 1 / (1 - ᾱ_{t-1}) + α_t / β_t
        assert var.flatten()[0].item() == pytest.approx(1 / (1 / (1 - ab_prev) + (1 - b) / b).item(), rel=1e-4)
    # The model mean via x̂_0 is eq. 11: (x_t - β_t / sqrt(1 - ᾱ_t) ε_θ) / sqrt(α_t).
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.1)  # a non-zero ε_θ
    t = torch.full((3,), 300)
    with torch.no_grad():
        mean, _ = model.q_posterior(model.predict_x0(xt, t), xt, t)
        b, ab = betas[299].item(), alpha_bar[299].item()
        eq11 = (xt - b / math.sqrt(1 - ab) * model.net(xt, t)) / math.sqrt(1 - b)
    assert torch.allclose(mean, eq11, atol=1e-4)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretised_decoder_sums_to_one_and_matches_the_cdf(levels: int) -> None:
    values = torch.linspace(-1, 1, levels).view(-1, 1)  # every pixel value [levels, 1]
    means, log_std = torch.tensor([[-0.95, 0.0, 0.3, 1.0]]), torch.log(torch.tensor([0.01, 0.2, 0.5, 2.0]))
    probs = discretized_gaussian_log_prob(values, means, log_std, levels).exp()  # [levels, 4]
    assert torch.allclose(probs.sum(0), torch.ones(4), atol=1e-5)
    half = 1 / (levels - 1)
    for i in (0, levels // 2, levels - 1):  # the outer bins reach to -inf and +inf
        v = values[i, 0].item()
        upper = norm.cdf((v + half - 0.3) / 0.5) if i < levels - 1 else 1.0
        lower = norm.cdf((v - half - 0.3) / 0.5) if i > 0 else 0.0
        assert probs[i, 2].item() == pytest.approx(upper - lower, rel=1e-4)


def test_bound_of_a_tiny_model_is_finite_and_positive() -> None:
    torch.manual_seed(0)
    model = _tiny(timesteps=40, pixel_levels=17).eval()
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.05)
    x = (torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 16).round() / 16
    prior, middle, decoder = model.vlb_terms(x, torch.Generator().manual_seed(2))
    total = (prior + middle + decoder) / (64 * math.log(2))  # bits per dim [batch]
    assert torch.isfinite(total).all() and (total > 0).all() and (prior >= 0).all() and (middle >= 0).all()
    # The strided estimate agrees with the full sum in expectation; with bpd_timesteps = T - 1 it is the full sum.
    model.hparams.bpd_timesteps = 39
    assert model.bpd_stride() == 1
    model.hparams.bpd_timesteps = 8
    strided = torch.stack([model.vlb_terms(x, torch.Generator().manual_seed(s))[1] for s in range(4)]).mean()
    assert strided.item() == pytest.approx(middle.mean().item(), rel=0.1)
    assert "stratified" in model.metric_settings()["bpd_terms"]
    # A long schedule destroys the signal: L_T is ~0.
    big = _tiny(timesteps=1000, bpd_timesteps=4)
    assert big.vlb_terms(x[:4])[0].max().item() / 64 < 1e-3


class Oracle(torch.nn.Module):
    """The exact ε for data that are one image x0: ε = (x_t - sqrt(ᾱ_t) x0) / sqrt(1 - ᾱ_t), so x̂_0 = x0."""

    def __init__(self, model: DDPM, x0: torch.Tensor) -> None:
        super().__init__()
        self.alpha_bar, self.x0 = model.alpha_bar, x0

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar[t].view(-1, 1, 1, 1)
        return ((xt.double() - ab.sqrt() * self.x0) / (1 - ab).sqrt()).float()


@pytest.mark.parametrize("reverse_variance", ["beta", "beta_tilde"])
def test_bound_of_the_exact_denoiser_matches_a_hand_sum(reverse_variance: str) -> None:
    T, levels, h = 50, 256, 1 / 255  # 8-bit bins are narrow enough that L_0 is far from 0
    model = _tiny(timesteps=T, pixel_levels=levels, reverse_variance=reverse_variance)
    x = torch.cat([torch.arange(0, 252, 4), torch.tensor([255])]).float().view(1, 1, 8, 8) / 255  # both edges too
    x0 = 2 * x - 1
    model.net = Oracle(model, x0.double())
    prior, middle, decoder = (v.item() for v in model.vlb_terms(x, torch.Generator().manual_seed(0)))
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)
    bt = (1 - ab[:-1]) / (1 - ab[1:]) * betas[1:]  # β̃_t for t = 2..T
    # The means agree exactly, so each L_{t-1} is the KL between variances: D/2 (log σ²/β̃ + β̃/σ² - 1).
    sigma2 = betas[1:] if reverse_variance == "beta" else bt
    assert middle == pytest.approx(32 * (torch.log(sigma2 / bt) + bt / sigma2 - 1).sum().item(), rel=1e-3, abs=1e-3)
    # L_0: a Gaussian at x0 with variance β̃_2 on bins of half-width h; the outer bins are one-sided.
    z = h / bt[0].sqrt().item()
    edge = (x0.abs() == 1).sum().item()
    expected = -(64 - edge) * math.log(2 * norm.cdf(z) - 1) - edge * math.log(norm.cdf(z))
    assert decoder == pytest.approx(expected, rel=1e-4)
    expected_prior = 0.5 * (ab[-1] * x0.double() ** 2 - ab[-1] - torch.log(1 - ab[-1])).sum().item()
    assert prior == pytest.approx(expected_prior, rel=1e-4)


def test_sampling_shape_range_and_reproducibility() -> None:
    model = _tiny(timesteps=20).eval()
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.1)
    full = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert full.shape == (5, 1, 8, 8) and 0 <= full.min() and full.max() <= 1
    strided = model.sample(5, steps=4, generator=torch.Generator().manual_seed(0))
    assert strided.shape == (5, 1, 8, 8)
    assert torch.equal(strided, model.sample(5, steps=4, generator=torch.Generator().manual_seed(0)))


def test_bad_values_get_one_line() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        DDPM(image_shape=[1, 30, 30])
    with pytest.raises(ValueError, match="beta_start"):
        DDPM(image_shape=[1, 8, 8], beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="pixel_levels=256"):
        _tiny()._check_levels(torch.full((1, 1, 8, 8), 0.3))


def _classifier_checkpoint(path: Path, dm: DigitsDataModule) -> Path:
    classifier = DomainClassifier(**dm.model_args(), channels=4, feature_dim=8)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    trainer.fit(classifier, datamodule=dm)
    trainer.save_checkpoint(path)
    return path


def test_tiny_run_on_digits_with_a_plain_trainer(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=32)
    ckpt = _classifier_checkpoint(tmp_path / "classifier.ckpt", dm)
    model = DDPM(**dm.model_args(), timesteps=30, base_channels=4, channel_mults=[1, 2, 2], pixel_levels=17,
                 bpd_images=24, bpd_timesteps=10, sample_count=4, sample_steps=5, fid_checkpoint=str(ckpt),
                 fid_samples=40, fid_sample_steps=5)
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=2, limit_test_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert math.isfinite(float(trainer.callback_metrics["val/loss"]))
    first = trainer.test(model, datamodule=dm, verbose=False)[0]
    keys = {"test/loss", "test/bpd", "test/bpd_prior", "test/bpd_diffusion", "test/bpd_decoder", "test/fid", "test/fid_floor"}
    assert keys <= first.keys()
    assert 0 < first["test/bpd"] < 50 and first["test/fid"] >= 0
    settings = model.metric_settings()
    assert settings["bpd_images"] == 24 and settings["fid_n_fake"] == 40 and settings["fid_sample_steps"] == 5
    assert len(settings["fid_extractor_sha256"]) == 64 and settings["fid_reference_split"] == "test"
    again = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert again == first  # fixed evaluation noise: the same model gives the same numbers
    assert set(model.make_samples()) == {"samples.png"}
