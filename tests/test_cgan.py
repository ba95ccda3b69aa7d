"""The class-conditional GAN: the projection discriminator, sampling a chosen class, and the conditional accuracy
against a direct count with the same frozen classifier."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from datamodules.images import DigitsDataModule
from lightning_modules.adversarial.cgan import ConditionalGAN, ProjectionDiscriminator
from lightning_modules.adversarial.dcgan_nets import Discriminator, Generator
from lightning_modules.metrics.fid import load_feature_extractor

TINY = {"base_channels": 8, "latent_dim": 8, "fid_samples": 40, "fid_repeats": 2, "sample_grid": 20}


def _trained(classifier_ckpt: Path, seed: int = 0) -> tuple[ConditionalGAN, pl.Trainer, DigitsDataModule]:
    pl.seed_everything(seed, verbose=False)
    dm = DigitsDataModule(batch_size=32)
    model = ConditionalGAN(**dm.model_args(), **TINY, fid_checkpoint=str(classifier_ckpt))
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, limit_test_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         deterministic=True, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    return model, trainer, dm


def test_projection_d_starts_as_the_unconditional_d_and_the_class_term_is_the_dot_product() -> None:
    torch.manual_seed(0)
    d = ProjectionDiscriminator([1, 8, 8], num_classes=10, base_channels=4, extra_convs=0, norm="batch").eval()
    plain = Discriminator([1, 8, 8], 4).eval()
    plain.net.load_state_dict({k: v for k, v in d.state_dict().items() if not k.startswith("embed")}, strict=False)
    plain.net[:-1].load_state_dict(d.features.state_dict())
    plain.net[-1].load_state_dict(d.head.state_dict())
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    assert torch.allclose(d(x, y), plain(x))  # a zero embedding: no class term yet
    with torch.no_grad():
        d.embed.weight.normal_()
    phi = d.features(2 * x - 1)  # [6, features]
    expected = plain(x) + torch.einsum("bf,bf->b", d.embed.weight[y], phi)
    assert torch.allclose(d(x, y), expected, atol=1e-6)


def test_generator_sees_the_class_as_one_hot_beside_the_noise() -> None:
    model = ConditionalGAN([1, 8, 8], 10, **TINY)
    z, y = torch.randn(4, 8), torch.tensor([0, 3, 3, 9])
    net: Generator = model.generator.net
    expected = net(torch.cat([z, F.one_hot(y, 10).float()], 1))
    assert torch.allclose(model.generator(z, y), expected)
    assert net.project.in_features == 8 + 10


def test_generate_a_chosen_class_or_every_class_in_turn() -> None:
    model = ConditionalGAN([1, 8, 8], 10, **TINY)
    seen: list[torch.Tensor] = []
    original = model.generator.forward
    model.generator.forward = lambda z, y: (seen.append(y.clone()), original(z, y))[1]  # type: ignore[method-assign]
    images = model.generate(25, seed=1, chunk=10)
    assert images.shape == (25, 1, 8, 8) and float(images.min()) >= 0 and float(images.max()) <= 1
    assert torch.equal(torch.cat(seen), torch.arange(25) % 10)
    seen.clear()
    model.generate(7, seed=1, label=3)
    assert torch.equal(torch.cat(seen), torch.full((7,), 3))
    assert torch.equal(model.generate(5, seed=2, label=3), model.generate(5, seed=2, label=3))  # seeded
    with pytest.raises(ValueError, match="label must be a class"):
        model.generate(2, seed=0, label=10)
    with pytest.raises(ValueError, match="num_classes"):
        ConditionalGAN([1, 8, 8], 1, **TINY)


def test_conditional_accuracy_matches_a_direct_count(classifier_ckpt: Path) -> None:
    model, trainer, dm = _trained(classifier_ckpt)
    extractor, _ = load_feature_extractor(classifier_ckpt)
    hits = sum(int((extractor.logits(model.generate(30, seed=7 + c, label=c)).argmax(1) == c).sum())
               for c in range(10))
    assert model.conditional_accuracy(per_class=30, seed=7) == pytest.approx(hits / 300)
    assert 0 <= float(trainer.callback_metrics["val/cond_acc"]) <= 1  # every validation epoch logs it

    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/fid", "test/fid_floor", "test/fid_ratio", "test/cond_acc"} <= tested.keys()
    assert 0 <= tested["test/cond_acc"] <= 1 and math.isfinite(tested["test/fid"])
    settings = model.metric_settings()
    assert "cond_acc" in settings and settings["fid_n_fake"] == 40


def test_same_seed_same_samples_and_the_grid_has_a_row_per_class(classifier_ckpt: Path) -> None:
    a, _, _ = _trained(classifier_ckpt, seed=3)
    b, _, _ = _trained(classifier_ckpt, seed=3)
    assert torch.equal(a.sample_images(), b.sample_images())
    assert torch.equal(a.fixed_y, torch.arange(10).repeat_interleave(2))
    assert torch.equal(a.fixed_z[:2], a.fixed_z[2:4])  # the same noise in every row
