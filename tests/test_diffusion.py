"""The DDPM module: the discretised decoder, the bound against hand sums (exact at stride 1, unbiased when
strided), the EMA of the weights, learned variances, sampling, and a tiny run on digits. The schedule's closed
forms are in test_diffusion_scheduler.py."""

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


def _digits_like(n: int, seed: int) -> torch.Tensor:
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 16).round() / 16  # 17 levels


def test_bound_at_stride_1_is_the_sum_of_every_term_written_from_the_paper() -> None:
    """vlb_terms with every t against L_T + Σ_t L_{t-1} + L_0 summed here from eqs. 4, 7, 11 and 13, with the
    same noise draws (one for t = 1, then t = 2..T in order) and the same network."""
    T, levels = 12, 17
    torch.manual_seed(0)
    model = _tiny(timesteps=T, pixel_levels=levels, reverse_variance="beta_tilde").eval()
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.05)
    x = _digits_like(5, 1)
    prior, middle, decoder = model.vlb_terms(x, torch.Generator().manual_seed(2))
    x0, gen = (2 * x - 1).double(), torch.Generator().manual_seed(2)
    betas = torch.cat([torch.zeros(1), torch.linspace(1e-4, 0.02, T)]).double()  # index t = 0..T
    ab = torch.cumprod(1 - betas, 0)
    tilde = (1 - ab[:-1]) / (1 - ab[1:]) * betas[1:]  # β̃_t at index t - 1, t = 1..T

    def mu_theta(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        xt = ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * torch.randn(x.shape, generator=gen).double()
        eps = model.net(xt.float(), torch.full((5,), t)).double()
        return xt, (xt - betas[t] / (1 - ab[t]).sqrt() * eps) / (1 - betas[t]).sqrt()  # eq. 11

    _, mean = mu_theta(1)
    want_decoder = -discretized_gaussian_log_prob(x0, mean, 0.5 * torch.log(tilde[1]), levels).flatten(1).sum(1)
    want_middle = torch.zeros(5, dtype=torch.float64)
    for t in range(2, T + 1):
        xt, mean = mu_theta(t)
        q_mean = ab[t - 1].sqrt() * betas[t] / (1 - ab[t]) * x0 + (1 - betas[t]).sqrt() * (1 - ab[t - 1]) / (1 - ab[t]) * xt
        # KL between two Gaussians of equal variance β̃_t: the squared mean gap over 2 β̃_t (eq. 8)
        want_middle += ((q_mean - mean) ** 2 / (2 * tilde[t - 1])).flatten(1).sum(1)
    want_prior = 0.5 * (ab[T] * x0 ** 2 - ab[T] - torch.log(1 - ab[T])).flatten(1).sum(1)
    for got, want in ((prior, want_prior), (middle, want_middle), (decoder, want_decoder)):
        assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-4)
    assert model.metric_settings()["bpd_terms"] == "all t"


def test_the_strided_bound_is_an_unbiased_estimate_of_the_full_sum() -> None:
    """One image replicated: the mean of the strided estimate over many draws of (offset, noise) agrees with the
    mean of the full sum over draws of the noise, within four standard errors."""
    torch.manual_seed(0)
    model = _tiny(timesteps=20, pixel_levels=17).eval()
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.2)
    x = _digits_like(1, 3).expand(1024, -1, -1, -1)
    full = model.vlb_terms(x, torch.Generator().manual_seed(4))[1]  # [1024]
    model.hparams.bpd_timesteps = 5
    assert model.bound_timesteps().stride == 4 and "every 4th t" in model.metric_settings()["bpd_terms"]
    strided = model.vlb_terms(x, torch.Generator().manual_seed(5))[1]
    se = math.sqrt(full.var().item() / len(full) + strided.var().item() / len(strided))
    assert abs(strided.mean().item() - full.mean().item()) < 4 * se
    assert strided.std().item() > full.std().item()  # it is an estimate: the offsets add spread
    # A long schedule destroys the signal: L_T is ~0.
    big = _tiny(timesteps=1000, bpd_timesteps=4)
    assert big.vlb_terms(x[:4])[0].max().item() / 64 < 1e-3


def test_geometric_bound_estimate_is_unbiased_and_exact_with_every_t() -> None:
    torch.manual_seed(0)
    model = _tiny(timesteps=20, pixel_levels=17, bpd_strata="geometric").eval()
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.2)
    x = _digits_like(1, 3).expand(1024, -1, -1, -1)
    full = model.vlb_terms(x, torch.Generator().manual_seed(4))[1]  # bpd_timesteps None: every t, weight 1
    assert model.metric_settings()["bpd_terms"] == "all t"
    model.hparams.bpd_strata = "systematic"  # the same draws through the systematic path's every t: the same sum
    assert torch.equal(model.vlb_terms(x, torch.Generator().manual_seed(4))[1], full)
    model.hparams.bpd_strata = "geometric"
    model.hparams.bpd_timesteps = 8
    strided = model.vlb_terms(x, torch.Generator().manual_seed(5))[1]
    se = math.sqrt(full.var().item() / len(full) + strided.var().item() / len(strided))
    assert abs(strided.mean().item() - full.mean().item()) < 4 * se
    settings = model.metric_settings()
    assert "geometrically" in settings["bpd_terms"] and settings["bpd_network_calls_per_image"] == 1 + 8


def test_the_decoder_head_learns_l0_alone_and_moves_a_black_mean_below_minus_one() -> None:
    torch.manual_seed(0)
    model = _tiny(timesteps=10, pixel_levels=256, decoder_head=8)
    x = torch.zeros(8, 1, 8, 8)  # all black
    torch.manual_seed(1)
    loss = model.decoder_loss(x)
    torch.manual_seed(1)
    x0, t = 2 * x - 1, torch.ones(8, dtype=torch.long)
    x1 = model.scheduler.add_noise(x0, torch.randn_like(x0), t)
    x0_hat = model.scheduler.predict_x0(x1, model.net(x1, t), t)  # an untrained head: the decoder's mean is x̂_0
    log_var = model.scheduler.log_variance(t)
    assert loss.item() == pytest.approx(model.scheduler.decoder_nll(x0, x0_hat, log_var, 256).mean().item() / 64)
    loss.backward()
    assert all(p.grad is None for p in model.net.parameters())  # L_0 trains the head only
    assert model.head.body[-1].weight.grad.abs().max() > 0
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        model.decoder_loss(x).backward()
        opt.step()
    with torch.no_grad():
        mean = model.decoder_mean(x1, x0_hat)
        assert (mean < -1).float().mean() > 0.9  # the outer bin reaches to -inf: below -1 it takes all the mass
        assert model.decoder_loss(x).item() < 0.5 * loss.item()
        # The bound's L_0 and the sampler's last step both use the head's mean.
        prior, middle, decoder = model.vlb_terms(x[:2], torch.Generator().manual_seed(0))
        assert (decoder / 64 < 0.5 * loss.item()).all()
        with_head = [model.sample(2, steps, torch.Generator().manual_seed(0)) for steps in (None, 5)]
        head, model.head = model.head, None
        plain = [model.sample(2, steps, torch.Generator().manual_seed(0)) for steps in (None, 5)]
        model.head = head
    assert not torch.equal(with_head[0], plain[0])  # the last step from t = 1 returns the head's mean
    assert torch.equal(with_head[1], plain[1])  # a strided sampler's last jump (2 -> 0) is not the head's to take


def test_training_timesteps_mix_uniform_and_log_uniform_draws() -> None:
    torch.manual_seed(0)
    T, n = 100, 200000
    for fraction in (0.0, 0.5, 1.0):
        t = _tiny(timesteps=T, small_t_fraction=fraction).training_timesteps(n, "cpu")
        assert t.min() >= 1 and t.max() <= T
        counts = torch.bincount(t, minlength=T + 1)[1:].double() / n  # [T], P(t) for t = 1..T
        ts = torch.arange(1, T + 1, dtype=torch.float64)
        expected = (1 - fraction) / T + fraction * torch.log((ts + 1) / ts) / math.log(T + 1)
        assert torch.allclose(counts, expected, atol=5 * math.sqrt(expected.max().item() / n))


def test_ema_follows_the_recursion_and_is_what_evaluation_uses() -> None:
    torch.manual_seed(0)
    model = _tiny(timesteps=10, pixel_levels=17, ema_decay=0.9, warmup_steps=4)
    opt = model.configure_optimizers()["optimizer"]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.net.parameters()}
    start = [p.detach().clone() for p in model.net.parameters()]
    assert all(torch.equal(a, p) for a, p in zip(model.ema.parameters(), start))
    expected = [p.clone() for p in start]
    x = _digits_like(8, 0)
    for n in range(1, 6):
        opt.zero_grad()
        model.losses(x, model.net)["loss"].backward()
        opt.step()
        model.on_train_batch_end(None, None, 0)
        d = min(0.9, (1 + n) / (10 + n))  # the warmed-up decay
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, model.net.parameters())]
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(model.ema.parameters(), expected))
    assert not torch.equal(model.ema.out[-1].weight, model.net.out[-1].weight)  # an average, not a copy
    assert model.eval_net() is model.ema and not any(p.requires_grad for p in model.ema.parameters())
    checkpoint = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(checkpoint)
    again = _tiny(timesteps=10, pixel_levels=17, ema_decay=0.9)
    again.load_state_dict(checkpoint["state_dict"])
    again.on_load_checkpoint(checkpoint)
    assert again._ema_updates == 5 and all(torch.equal(a, b) for a, b in zip(again.ema.parameters(), model.ema.parameters()))
    plain = _tiny()
    assert plain.ema is None and plain.eval_net() is plain.net


def test_learned_variances_train_v_through_l_vlb_only() -> None:
    """L_hybrid: L_vlb's gradient reaches the variance output v and not ε (Nichol & Dhariwal section 3.1)."""
    torch.manual_seed(0)
    model = _tiny(timesteps=10, pixel_levels=17, reverse_variance="learned")
    conv = model.net.out[-1]
    assert conv.out_channels == 2
    torch.nn.init.normal_(conv.weight, std=0.05)
    losses = model.losses(_digits_like(8, 0), model.net, torch.Generator().manual_seed(1))
    assert set(losses) == {"loss", "simple", "vlb"} and torch.isfinite(losses["vlb"])
    losses["vlb"].backward()
    assert conv.weight.grad[0].abs().max() == 0 and conv.weight.grad[1].abs().max() > 0  # [ε, v] output channels
    prior, middle, decoder = model.eval().vlb_terms(_digits_like(4, 2), torch.Generator().manual_seed(3))
    assert torch.isfinite(prior + middle + decoder).all() and (middle > 0).all()


class Oracle(torch.nn.Module):
    """The exact ε for data that are one image x0: ε = (x_t - sqrt(ᾱ_t) x0) / sqrt(1 - ᾱ_t), so x̂_0 = x0."""

    def __init__(self, model: DDPM, x0: torch.Tensor) -> None:
        super().__init__()
        self.alpha_bar, self.x0 = model.scheduler.alpha_bar, x0

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
                 fid_samples=40, fid_sample_steps=5, schedule="cosine", reverse_variance="learned", ema_decay=0.99,
                 warmup_steps=3, num_res_blocks=2, attention=True, decoder_head=4, decoder_batch=8)
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=2, limit_test_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert math.isfinite(float(trainer.callback_metrics["val/loss"]))
    first = trainer.test(model, datamodule=dm, verbose=False)[0]
    keys = {"test/loss", "test/bpd", "test/bpd_prior", "test/bpd_diffusion", "test/bpd_decoder", "test/fid", "test/fid_floor"}
    assert keys <= first.keys()
    assert 0 < first["test/bpd"] and math.isfinite(first["test/bpd"]) and first["test/fid"] >= 0
    settings = model.metric_settings()
    assert settings["bpd_images"] == 24 and settings["fid_n_fake"] == 40 and settings["fid_sample_steps"] == 5
    assert settings["weights"] == "EMA" and settings["schedule"] == "cosine" and settings["sample_steps"] == 5
    assert len(settings["fid_extractor_sha256"]) == 64 and settings["fid_reference_split"] == "test"
    again = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert again == first  # fixed evaluation noise: the same model gives the same numbers
    assert set(model.make_samples()) == {"samples.png"}


def test_the_ddpm_code_hash_does_not_cover_the_vaes() -> None:
    """An edit to the VAEs must not stale a DDPM result: neither is in the DDPM's import closure."""
    from benchmarks.core.params import experiment_from_params, load_params
    from benchmarks.core.provenance import code_files
    from tests.conftest import ROOT

    names = {p.name for p in code_files(experiment_from_params(load_params(ROOT / "params.yaml"), "fashion_ddpm"))}
    assert {"diffusion.py", "diffusion_scheduler.py", "diffusion_unet.py"} <= names
    assert not names & {"vae.py", "hvae.py"}


def test_the_head_and_the_network_are_clipped_apart_and_small_t_refuses_learned_variances() -> None:
    """One joint norm would let the head's large L_0 gradient shrink the ε-network's step; each is clipped alone."""
    model = _tiny(timesteps=10, pixel_levels=17, decoder_head=4)
    for p in model.net.parameters():
        p.grad = torch.full_like(p, 1e-4)
    for p in model.head.parameters():
        p.grad = torch.full_like(p, 10.0)
    before = [p.grad.clone() for p in model.net.parameters()]
    model.configure_gradient_clipping(torch.optim.SGD(model.parameters(), lr=0.1), 1.0, "norm")
    assert all(torch.equal(p.grad, g) for p, g in zip(model.net.parameters(), before))  # under 1: untouched
    head_norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.head.parameters()]))
    assert head_norm.item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="small_t_fraction needs uniform training t's"):
        _tiny(timesteps=10, small_t_fraction=0.5, reverse_variance="learned")
