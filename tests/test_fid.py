"""FID and the Inception-style score against closed forms, and the domain classifier that supplies their features."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn

from datamodules.images import DigitsDataModule
from lightning_modules import MODELS
from lightning_modules.metrics.classifier import DomainClassifier
from lightning_modules.metrics.fid import DomainFID, fid_floor, inception_score, load_feature_extractor


class Identity(nn.Module):
    """Features = inputs [N, d]: the FID then is the Fréchet distance of the samples themselves."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: Tensor) -> Tensor:
        return x


def _gaussian(n: int, d: int, mean: float, std: float, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return mean + std * torch.randn(n, d, generator=gen, dtype=torch.float64)  # [n, d]


# --- FID ------------------------------------------------------------------------------------------
def test_identical_feature_sets_give_zero() -> None:
    x = torch.rand(2000, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fid = DomainFID(Identity(16), "abc", "test")
    for batch in x.split(300):  # batching must not matter
        fid.update_real(batch)
    fid.update_fake(x)
    assert abs(fid.compute()) < 1e-3
    assert fid.settings() == {"extractor_sha256": "abc", "n_real": 2000, "n_fake": 2000, "reference_split": "test"}
    fid.reset()
    assert fid.settings()["n_real"] == 0


@pytest.mark.parametrize(("m1", "m2", "s1", "s2"), [(0.0, 1.0, 1.0, 2.0), (0.5, 0.5, 1.0, 0.5), (0.0, 2.0, 1.0, 1.0)])
def test_isotropic_gaussians_match_the_closed_form(m1: float, m2: float, s1: float, s2: float) -> None:
    # N(m1 1, s1^2 I) vs N(m2 1, s2^2 I): FID = ||m1 - m2||^2 + d (s1 - s2)^2.
    n, d = 20000, 8
    expected = d * (m1 - m2) ** 2 + d * (s1 - s2) ** 2
    fid = DomainFID(Identity(d), "", "synthetic")
    fid.update_real(_gaussian(n, d, m1, s1, seed=1))
    fid.update_fake(_gaussian(n, d, m2, s2, seed=2))
    assert fid.compute() == pytest.approx(expected, rel=0.03)


def test_fid_floor_of_two_samples_of_one_distribution_is_small() -> None:
    d = 8
    floor = fid_floor(Identity(d), _gaussian(5000, d, 0.0, 1.0, seed=3), _gaussian(5000, d, 0.0, 1.0, seed=4))
    shifted = fid_floor(Identity(d), _gaussian(5000, d, 0.0, 1.0, seed=3), _gaussian(5000, d, 0.5, 1.0, seed=4))
    assert 0 <= floor < 0.05 < shifted


def test_floor_uses_the_reference_features_and_leaves_the_fakes_alone() -> None:
    d = 8
    reference, fakes, other = (_gaussian(3000, d, m, 1.0, seed=s) for m, s in ((0.0, 5), (1.0, 6), (0.0, 7)))
    fid = DomainFID(Identity(d), "", "test")
    for batch in reference.split(700):
        fid.update_real(batch)
    fid.update_fake(fakes)
    before = fid.compute()
    floor = fid.floor(other, batch_size=400)
    assert floor == pytest.approx(fid_floor(Identity(d), reference, other), abs=1e-6)
    assert floor < 0.05 < before  # the floor is the real-vs-real value, far below a shifted fake set
    assert fid.compute() == pytest.approx(before, abs=1e-9)
    assert fid.settings()["n_fake"] == 3000


def test_floor_sets_are_disjoint_slices_and_shrink_to_what_the_split_holds() -> None:
    from types import SimpleNamespace

    from lightning_modules.metrics.fid import floor_image_sets, floor_images

    images = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1)  # image i holds the value i
    labels = torch.tensor([0, 1] * 5)
    dm = SimpleNamespace(images=lambda split: images, labels=lambda split: labels)
    trainer = SimpleNamespace(datamodule=dm)
    sets = floor_image_sets(trainer, 3, 2)
    assert [s.flatten().tolist() for s in sets] == [[0, 1, 2], [3, 4, 5]]
    assert len(floor_image_sets(trainer, 3, 9)) == 3  # only three disjoint sets of 3 fit in 10
    assert len(floor_image_sets(trainer, 20, 4)) == 1  # a split smaller than n still gives its one set
    assert [s.flatten().tolist() for s in floor_image_sets(trainer, 2, 2, label=1)] == [[1, 3], [5, 7]]
    assert torch.equal(floor_images(trainer, 3), sets[0])
    assert floor_image_sets(SimpleNamespace(datamodule=None), 3, 2) is None


# --- Inception score ------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 5, 10])
def test_confident_uniform_predictions_score_k(k: int) -> None:
    logits = 50.0 * nn.functional.one_hot(torch.arange(100 * k) % k, 10).double()  # [100k, 10]
    assert inception_score(logits) == pytest.approx(k, rel=1e-6)
    assert inception_score(logits, splits=4) == pytest.approx(k, rel=1e-3)


def test_identical_predictions_score_one() -> None:
    logits = torch.randn(1, 10).expand(500, 10)  # [500, 10], the same softmax for every sample
    assert inception_score(logits) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="splits"):
        inception_score(logits, splits=0)


# --- the classifier and the extractor built from it -----------------------------------------------
def test_classifier_learns_digits_and_its_checkpoint_is_an_extractor(tmp_path: Path, one_thread: None) -> None:
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=64)
    model = MODELS["classifier"](**dm.model_args())
    assert isinstance(model, DomainClassifier)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert float(trainer.callback_metrics["val/acc"]) > 0.8
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/loss", "test/acc"} <= tested.keys() and model.metric_settings()["acc"] == "top-1, test split"
    model.eval()
    images = dm.images("test")  # [359, 1, 8, 8]
    assert model.features(images).shape == (359, 128)

    ckpt = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(ckpt)
    extractor, digest = load_feature_extractor(ckpt)
    assert len(digest) == 64 and extractor.num_features == 128
    extractor.train()  # must stay frozen in eval mode
    assert not extractor.training and not extractor.classifier.training
    assert torch.allclose(extractor(images), model.features(images), atol=1e-5)
    assert not any(p.requires_grad for p in extractor.parameters())
    # Real digits against real digits sit near the floor; against noise, far above it.
    floor = fid_floor(extractor, dm.images("train"), images)
    noise = fid_floor(extractor, images, torch.rand(359, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert 0 <= floor < noise
    probs = extractor.logits(images)
    assert inception_score(probs) > 5  # a good classifier on real, balanced digits is confident and spread
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        extractor(images * 2 - 1)
    with pytest.raises(ValueError, match="trained on images"):
        extractor(torch.rand(2, 1, 28, 28))


def test_classifier_handles_every_image_size() -> None:
    for side in (8, 28, 32):
        model = DomainClassifier(image_shape=[1, side, side], num_classes=10, channels=4, feature_dim=16).eval()
        x = torch.rand(3, 1, side, side)  # [batch, 1, side, side]
        assert model(x).shape == (3, 10) and model.features(x).shape == (3, 16)
    with pytest.raises(ValueError, match="image_shape"):
        DomainClassifier(image_shape=[1, 4, 4], num_classes=10)
    assert math.isfinite(float(model(x).sum()))
