"""The seed's GAN objective against hand computations, and a tiny DCGAN on 8x8 digits with manual optimisation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor

from datamodules.images import DigitsDataModule
from datamodules.sources import sha256_file
from lightning_modules.adversarial.gan import GAN, discriminator_objective, generator_loss, linear_decay_factor, r1_penalty

TINY = {"latent_dim": 8, "base_channels": 8}


# Shared with the other adversarial tests: see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


def logit(p: list[float]) -> Tensor:
    t = torch.tensor(p, dtype=torch.float64)
    return torch.log(t / (1 - t))  # D = sigmoid(logit)


# --- the objective ----------------------------------------------------------------------------------
def test_objective_matches_a_hand_computation() -> None:
    d_real, d_fake = [0.8, 0.6], [0.3, 0.1]  # D(x) and D(G(z)) for a batch of two
    by_hand = ((-0.5 * math.log(0.8) - 0.5 * math.log(1 - 0.3)) + (-0.5 * math.log(0.6) - 0.5 * math.log(1 - 0.1))) / 2
    assert float(discriminator_objective(logit(d_real), logit(d_fake))) == pytest.approx(by_hand, abs=1e-12)
    assert by_hand == pytest.approx(0.29900, abs=1e-5)
    # G's two losses on the same D outputs.
    minimax = (0.5 * math.log(1 - 0.3) + 0.5 * math.log(1 - 0.1)) / 2
    non_saturating = (-0.5 * math.log(0.3) - 0.5 * math.log(0.1)) / 2
    assert float(generator_loss(logit(d_fake), "minimax")) == pytest.approx(minimax, abs=1e-12)
    assert float(generator_loss(logit(d_fake), "non_saturating")) == pytest.approx(non_saturating, abs=1e-12)
    with pytest.raises(ValueError, match="g_loss"):
        generator_loss(logit(d_fake), "wasserstein")


def test_at_the_optimum_d_is_one_half_and_r_is_log_2() -> None:
    half = torch.zeros(5)  # logit 0: D = 1/2 everywhere
    assert float(discriminator_objective(half, torch.zeros(7))) == pytest.approx(math.log(2), abs=1e-7)
    # Any other constant D on equal real and fake distributions does worse: R >= log 2.
    for p in (0.1, 0.4, 0.7):
        same = logit([p] * 4)
        assert float(discriminator_objective(same, same)) > math.log(2)


def test_extreme_logits_stay_finite() -> None:
    big = torch.tensor([-200.0, 200.0])  # sigmoid saturates to exactly 0 and 1 in float32
    assert math.isfinite(float(discriminator_objective(big, big)))
    assert math.isfinite(float(generator_loss(big, "non_saturating")))


def test_non_saturating_gradient_survives_where_minimax_vanishes() -> None:
    # D confidently rejects the fakes: D(G(z)) = 1e-4. Both losses push the logit up (negative gradient),
    # but minimax's push is -½ D(G(z)) ~ 5e-5 while the non-saturating one is -½ (1 - D(G(z))) ~ 0.5.
    grads = {}
    for kind in ("minimax", "non_saturating"):
        fake = logit([1e-4]).requires_grad_(True)
        generator_loss(fake, kind).backward()
        grads[kind] = float(fake.grad[0])
    assert grads["minimax"] == pytest.approx(-0.5 * 1e-4, rel=1e-6)
    assert grads["non_saturating"] == pytest.approx(-0.5 * (1 - 1e-4), rel=1e-6)
    assert abs(grads["non_saturating"]) > 1000 * abs(grads["minimax"])
    # Near D(G(z)) = 1 the roles swap: the fixed point is the same, only the early gradients differ.
    grads = {}
    for kind in ("minimax", "non_saturating"):
        fake = logit([1 - 1e-4]).requires_grad_(True)
        generator_loss(fake, kind).backward()
        grads[kind] = float(fake.grad[0])
    assert abs(grads["minimax"]) > 1000 * abs(grads["non_saturating"])


# --- the system -------------------------------------------------------------------------------------
def _train_tiny(seed: int, fid_checkpoint: Path | None, ema_decay: float = 0.0,
                **options: Any) -> tuple[GAN, pl.Trainer, DigitsDataModule, dict[str, Tensor]]:
    pl.seed_everything(seed, verbose=False)
    dm = DigitsDataModule(batch_size=32)
    model = GAN(**dm.model_args(), **TINY, fid_checkpoint=str(fid_checkpoint) if fid_checkpoint else None,
                fid_samples=64, sample_grid=16, ema_decay=ema_decay, **options)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, limit_test_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         deterministic=True)
    trainer.fit(model, datamodule=dm)
    return model, trainer, dm, before


def test_tiny_gan_steps_both_players_and_reports_fid(classifier_ckpt: Path) -> None:
    model, trainer, dm, before = _train_tiny(0, classifier_ckpt)
    after = model.state_dict()
    for player in ("generator.", "discriminator."):
        weights = [k for k in before if k.startswith(player) and k.endswith("weight")]
        assert weights and all(not torch.equal(before[k], after[k]) for k in weights), player
    assert all(p.requires_grad for p in model.parameters())  # untoggle_optimizer restored them
    metrics = trainer.callback_metrics
    assert {"train/d_loss", "train/g_loss", "val/d_loss", "val/fid"} <= metrics.keys()
    assert all(math.isfinite(float(metrics[k])) for k in ("train/d_loss", "train/g_loss", "val/d_loss", "val/fid"))
    assert model.monitor == "val/fid" and model.monitor_mode == "min"

    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/d_loss", "test/fid", "test/is", "test/fid_floor"} <= tested.keys()
    assert tested["test/fid"] >= 0 and 1 <= tested["test/is"] <= 10
    assert 0 <= tested["test/fid_floor"] < tested["test/fid"]  # real train images beat an undertrained G
    settings = model.metric_settings()
    assert settings["fid_extractor_sha256"] == sha256_file(classifier_ckpt)
    assert settings["fid_samples"] == 64 and settings["fid_n_fake"] == 64
    assert settings["fid_reference_split"] == "test" and settings["fid_n_real"] == 64  # 2 test batches of 32
    # The extractor stays outside the checkpoint.
    assert not any(k.startswith(("_frozen", "classifier")) for k in model.state_dict())

    samples = model.make_samples()
    assert list(samples) == ["samples.png"] and hasattr(samples["samples.png"], "savefig")


def test_test_fid_and_floor_are_means_over_draws_and_disjoint_slices(classifier_ckpt: Path) -> None:
    from lightning_modules.metrics.fid import fid_floor, load_feature_extractor

    model, trainer, dm, _ = _train_tiny(0, classifier_ckpt, fid_repeats=3)
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    # The oracle: FIDs computed one set at a time, against the 64 test images the 2 test batches hold.
    extractor, _ = load_feature_extractor(classifier_ckpt)
    reference, train = dm.images("test")[:64], dm.images("train")
    fids = [fid_floor(extractor, reference, model.generate(64, seed=seed)) for seed in (1, 2, 3)]
    floors = [fid_floor(extractor, reference, train[i * 64:(i + 1) * 64]) for i in range(3)]
    assert len(set(fids)) == 3 and len(set(floors)) == 3  # three different draws and three different slices
    assert tested["test/fid"] == pytest.approx(sum(fids) / 3, rel=1e-4)
    assert tested["test/fid_std"] == pytest.approx(torch.tensor(fids).std().item(), rel=1e-3)
    assert tested["test/fid_floor"] == pytest.approx(sum(floors) / 3, rel=1e-4)
    assert tested["test/fid_floor_std"] == pytest.approx(torch.tensor(floors).std().item(), rel=1e-3)
    assert tested["test/fid_ratio"] == pytest.approx(sum(fids) / sum(floors), rel=1e-4)
    settings = model.metric_settings()
    assert settings["fid_repeats"] == 3 and settings["fid_noise_seeds"] == [1, 2, 3]
    assert settings["fid_floor_train_slices"] == [[0, 64], [64, 128], [128, 192]]
    # One draw keeps the single-set protocol: no spread to report.
    single, trainer1, dm1, _ = _train_tiny(0, classifier_ckpt, fid_repeats=1)
    one = trainer1.test(single, datamodule=dm1, verbose=False)[0]
    assert "test/fid_std" not in one and one["test/fid"] == pytest.approx(fids[0], rel=1e-4)
    assert one["test/fid_floor"] == pytest.approx(floors[0], rel=1e-4)
    with pytest.raises(ValueError, match="fid_repeats must be an integer >= 1"):
        GAN(image_shape=[1, 8, 8], fid_repeats=0)


def test_same_seed_gives_identical_samples_and_metrics() -> None:
    first, trainer1, _, _ = _train_tiny(3, None)
    second, trainer2, _, _ = _train_tiny(3, None)
    assert torch.equal(first.sample_images(), second.sample_images())
    assert float(trainer1.callback_metrics["val/d_loss"]) == float(trainer2.callback_metrics["val/d_loss"])
    assert first.monitor == "val/d_loss"
    other, _, _, _ = _train_tiny(4, None)
    assert not torch.equal(first.sample_images(), other.sample_images())


def test_fixed_noise_depends_only_on_noise_seed() -> None:
    torch.manual_seed(0)
    a = GAN(image_shape=[1, 8, 8], **TINY, noise_seed=5, sample_grid=9)
    torch.manual_seed(1)  # another global RNG state: other weights, the same grid noise
    b = GAN(image_shape=[1, 8, 8], **TINY, noise_seed=5, sample_grid=9)
    c = GAN(image_shape=[1, 8, 8], **TINY, noise_seed=6, sample_grid=9)
    assert torch.equal(a.fixed_z, b.fixed_z) and not torch.equal(a.fixed_z, c.fixed_z)
    assert "fixed_z" in a.state_dict()
    images = a.sample_images()
    assert images.shape == (9, 1, 8, 8) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert torch.equal(images, a.sample_images())  # eval mode: no BatchNorm update between calls
    assert a.generate(10, seed=1).shape == (10, 1, 8, 8) and torch.equal(a.generate(10, seed=1), a.generate(10, seed=1))


def test_gan_sizes_and_bad_values() -> None:
    for shape in ([1, 8, 8], [1, 28, 28], [1, 32, 32], [3, 16, 12]):
        for extra in (0, 2):
            model = GAN(image_shape=shape, **TINY, extra_convs=extra).eval()
            images = model(torch.randn(2, 8))  # [2, C, H, W]
            assert list(images.shape[1:]) == shape and model.discriminator(images).shape == (2,)
    plain, deeper = GAN(image_shape=[1, 8, 8], **TINY), GAN(image_shape=[1, 8, 8], **TINY, extra_convs=1)
    # Each extra 3x3 conv (no bias) + BatchNorm at 2*base and at base channels, in G and in D.
    per_stage = sum(9 * c * c + 2 * c for c in (16, 8))
    assert sum(p.numel() for p in deeper.parameters()) - sum(p.numel() for p in plain.parameters()) == 2 * per_stage
    for bad, match in (({"image_shape": [1, 10, 10]}, "image_shape"), ({"g_loss": "wgan"}, "g_loss"),
                       ({"lr": 0.0}, "lr"), ({"betas": [0.5]}, "betas"), ({"latent_dim": 0}, "latent_dim"),
                       ({"ema_decay": 1.0}, "ema_decay"), ({"extra_convs": -1}, "extra_convs"),
                       ({"d_norm": "layer"}, "d_norm"), ({"lr_d": 0.0}, "lr_d"), ({"lr_decay_from": -1}, "lr_decay_from"),
                       ({"lr_decay_from": 1.5}, "lr_decay_from"), ({"r1_gamma": -0.1}, "r1_gamma"),
                       ({"r1_gamma": "big"}, "r1_gamma"), ({"r1_gamma": float("inf")}, "r1_gamma")):
        with pytest.raises(ValueError, match=match):
            GAN(**({"image_shape": [1, 8, 8]} | bad))


def test_spectral_discriminator_has_unit_spectral_norms_and_no_batchnorm() -> None:
    torch.manual_seed(0)
    model = GAN(image_shape=[1, 28, 28], **TINY, extra_convs=1, d_norm="spectral")
    d = model.discriminator
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    for _ in range(30):  # each training-mode forward runs one power iteration per layer
        d(torch.rand(4, 1, 28, 28))
    d.eval()
    layers = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 5  # two strided convs, one extra conv after each, the output layer
    for layer in layers:
        weight = layer.weight.detach().reshape(len(layer.weight), -1)  # the normalised weight [out, in * k * k]
        assert float(torch.linalg.matrix_norm(weight, ord=2)) == pytest.approx(1.0, abs=1e-3)
        raw = layer.parametrizations.weight.original.detach().reshape(len(weight), -1)
        assert float(torch.linalg.matrix_norm(raw, ord=2)) != pytest.approx(1.0, abs=1e-2)  # the raw one is not
    # The default is DCGAN's BatchNorm D, unchanged.
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in GAN(image_shape=[1, 28, 28], **TINY).discriminator.modules())


def test_two_time_scales_and_spectral_d_train_reproducibly() -> None:
    first, trainer, _, before = _train_tiny(3, None, d_norm="spectral", lr_d=4e-4, lr=1e-4)
    second, _, _, _ = _train_tiny(3, None, d_norm="spectral", lr_d=4e-4, lr=1e-4)
    opt_g, opt_d = trainer.optimizers
    assert opt_g.param_groups[0]["lr"] == 1e-4 and opt_d.param_groups[0]["lr"] == 4e-4
    moved = [k for k in before if k.startswith("discriminator.") and k.endswith("original")]
    assert moved and all(not torch.equal(before[k], first.state_dict()[k]) for k in moved)
    assert torch.equal(first.sample_images(), second.sample_images())
    plain = _train_tiny(3, None)[1].optimizers
    assert plain[0].param_groups[0]["lr"] == plain[1].param_groups[0]["lr"] == 2e-4  # lr_d defaults to lr


def test_learning_rates_hold_then_fall_linearly_to_zero_at_max_epochs() -> None:
    assert [linear_decay_factor(e, 2, 6) for e in range(7)] == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]

    seen: list[tuple[float, float]] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
            if args[-1] == 0:  # batch_idx: the rates the epoch's first step uses
                seen.append(tuple(opt.param_groups[0]["lr"] for opt in trainer.optimizers))

    pl.seed_everything(0, verbose=False)
    model = GAN(image_shape=[1, 8, 8], **TINY, sample_grid=0, lr=1e-4, lr_d=3e-4, lr_decay_from=1)
    trainer = pl.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False, callbacks=[Record()],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=16))
    # Epoch 0 and the first decaying epoch at full rate, then (3 - 2) / (3 - 1) = one half; D keeps its ratio.
    assert seen == [pytest.approx((1e-4, 3e-4)), pytest.approx((1e-4, 3e-4)), pytest.approx((5e-5, 1.5e-4))]
    # As a fraction of the budget: 1/3 of max_epochs 3 starts the same decay at epoch 1, whatever the budget.
    seen.clear()
    pl.seed_everything(0, verbose=False)
    model = GAN(image_shape=[1, 8, 8], **TINY, sample_grid=0, lr=1e-4, lr_d=3e-4, lr_decay_after=0.34)
    trainer = pl.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False, callbacks=[Record()],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=16))
    assert seen == [pytest.approx((1e-4, 3e-4)), pytest.approx((1e-4, 3e-4)), pytest.approx((5e-5, 1.5e-4))]
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match="lr_decay_after"):
            GAN(image_shape=[1, 8, 8], **TINY, lr_decay_after=bad)
    with pytest.raises(ValueError, match="lr_decay_after"):
        GAN(image_shape=[1, 8, 8], **TINY, lr_decay_after=0.5, lr_decay_from=2)
    late = GAN(image_shape=[1, 8, 8], **TINY, sample_grid=0, lr_decay_from=3)
    with pytest.raises(ValueError, match="lr_decay_from \\(3\\) needs a trainer max_epochs above it"):
        pl.Trainer(max_epochs=3, limit_train_batches=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False).fit(late, datamodule=DigitsDataModule(batch_size=16))


def test_weight_average_follows_its_update_rule_and_draws_the_samples() -> None:
    torch.manual_seed(0)
    model = GAN(image_shape=[1, 8, 8], **TINY, ema_decay=0.9, sample_grid=4)
    assert model.sampler is model.generator_ema and not any(p.requires_grad for p in model.generator_ema.parameters())
    assert "generator_ema.project.weight" in model.state_dict()  # checkpoints keep the average
    before = {k: v.clone() for k, v in model.generator_ema.state_dict().items()}
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
        model.generator.body[0].running_mean.fill_(3.0)
    model._update_ema()  # global_step 0: warm-up decay min(0.9, 1/10) = 0.1, so avg += 0.9 * (live - avg)
    for name, avg in model.generator_ema.named_parameters():
        live = dict(model.generator.named_parameters())[name]
        assert torch.allclose(avg, before[name] + 0.9 * (live - before[name]), atol=1e-6), name
    assert torch.equal(model.generator_ema.body[0].running_mean, torch.full((16,), 3.0))
    # Samples come from the average: they differ from the live G's on the same noise.
    model.generator.eval()
    assert torch.equal(model.sample_images(), model.generator_ema.eval()(model.fixed_z))
    assert not torch.equal(model.sample_images(), model.generator(model.fixed_z))
    plain = GAN(image_shape=[1, 8, 8], **TINY)
    assert plain.generator_ema is None and plain.sampler is plain.generator  # no average: G samples itself


def test_weight_average_trains_reproducibly_beside_the_game() -> None:
    first, trainer, _, before = _train_tiny(5, None, ema_decay=0.99)
    second, _, _, _ = _train_tiny(5, None, ema_decay=0.99)
    ema = {k: v for k, v in first.state_dict().items() if k.startswith("generator_ema.") and k.endswith("weight")}
    assert ema and all(not torch.equal(before[k], v) for k, v in ema.items())  # it moved with G
    assert all(p.requires_grad for p in first.generator.parameters())  # toggling left the players trainable
    assert not any(p.requires_grad for p in first.generator_ema.parameters())  # and the average frozen
    assert torch.equal(first.sample_images(), second.sample_images())
    assert first.metric_settings()["samples_from"] == "EMA of G's weights"


# --- R1 -----------------------------------------------------------------------------------------------
def test_r1_matches_closed_forms_and_stays_differentiable() -> None:
    torch.manual_seed(0)
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    # A linear D, logit = w . x + b: the input gradient is w for every image, so R1 = ||w||².
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1)).double()
    logits, r1 = r1_penalty(linear, x)
    w = linear[1].weight.detach()
    assert torch.allclose(logits, linear(x)) and logits.shape == (5, 1)
    assert float(r1) == pytest.approx(float(w.pow(2).sum()), rel=1e-12)
    # create_graph: D's step sees d(γ/2 R1)/dw = γ w.
    (0.5 * 0.3 * r1).backward()
    assert torch.allclose(linear[1].weight.grad, 0.3 * w, atol=1e-12)
    assert x.grad is None  # the penalty differentiates a detached copy, not the caller's batch

    # A quadratic D, logit = sum x²: the gradient is 2x, so R1 = mean 4 ||x||².
    class Quadratic(torch.nn.Module):
        def forward(self, images: Tensor) -> Tensor:
            return images.pow(2).flatten(1).sum(1)

    _, r1 = r1_penalty(Quadratic(), x)
    assert float(r1) == pytest.approx(float(4 * x.pow(2).flatten(1).sum(1).mean()), rel=1e-12)


def test_r1_changes_the_game_and_trains_reproducibly() -> None:
    plain, _, _, before = _train_tiny(7, None)
    first, trainer, _, _ = _train_tiny(7, None, r1_gamma=1.0)
    second, _, _, _ = _train_tiny(7, None, r1_gamma=1.0)
    assert float(trainer.callback_metrics["train/r1"]) > 0
    d_weights = [k for k in before if k.startswith("discriminator.") and k.endswith("weight")]
    # Step 1's D update already differs, and every later step of both players follows from it.
    assert any(not torch.allclose(plain.state_dict()[k], first.state_dict()[k]) for k in d_weights)
    assert all(torch.equal(first.state_dict()[k], second.state_dict()[k]) for k in first.state_dict())
    assert all(p.requires_grad for p in first.parameters())
