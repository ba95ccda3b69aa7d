"""The edges of the FID and Inception-score code that tests/test_fid.py's closed forms do not reach: the
Inception-style score against a numpy computation, split by split; the extractor's input checks at their exact
tolerances; NaN for non-finite features; the settings every FID carries; and the floor's batching."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import Tensor, nn

from lightning_modules.metrics.classifier import DomainClassifier
from lightning_modules.metrics.fid import (DomainFID, FeatureExtractor, MonitorsFID, fid_floor, inception_score,
                                           load_feature_extractor)


class Identity(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: Tensor) -> Tensor:
        return x


def _numpy_is(logits: np.ndarray) -> float:
    """exp(mean KL(p(y|x) || p(y))) written out with numpy."""
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    py = p.mean(0)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(py)), axis=1))))


def test_inception_score_is_the_mean_of_its_splits_scores() -> None:
    logits = torch.randn(12, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    assert inception_score(logits) == pytest.approx(_numpy_is(logits.numpy()), rel=1e-10)
    halves = [_numpy_is(logits[:6].numpy()), _numpy_is(logits[6:].numpy())]
    assert inception_score(logits, splits=2) == pytest.approx(sum(halves) / 2, rel=1e-10)
    assert inception_score(logits.float(), splits=12) == pytest.approx(1.0)  # one sample per split: p(y) = p(y|x)
    for bad, splits in ((logits, 13), (logits[0], 1), (logits[None], 1)):
        with pytest.raises(ValueError) as err:
            inception_score(bad, splits)
        assert str(err.value) == (f"need logits [N, classes] and 1 <= splits <= N, got {list(bad.shape)}, "
                                  f"splits={splits}")


def test_fid_of_non_finite_features_is_nan_with_a_warning() -> None:
    fid = DomainFID(Identity(3), "h", "test")
    fid.update_real(torch.rand(20, 3, dtype=torch.float64))
    fake = torch.rand(20, 3, dtype=torch.float64)
    fake[4, 1] = float("nan")
    fid.update_fake(fake)
    message = "FID of non-finite features (NaN or inf images, e.g. from a diverged model): NaN"
    with pytest.warns(UserWarning, match=f"^{re.escape(message)}$"):
        assert math.isnan(fid.compute())
    real = torch.rand(20, 3, dtype=torch.float64)
    real[0, 0] = float("inf")
    assert math.isnan(fid_floor(Identity(3), real, torch.rand(20, 3, dtype=torch.float64)))


def test_fid_against_scipys_matrix_square_root_and_its_settings() -> None:
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(300, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(200, 4, generator=gen, dtype=torch.float64) @ torch.diag(torch.tensor([1.0, 2.0, 0.5, 1.0],
                                                                                          dtype=torch.float64)) + 0.3
    mu1, mu2, s1, s2 = a.mean(0).numpy(), b.mean(0).numpy(), np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(),
                                                                                                  rowvar=False)
    expected = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))
    assert fid_floor(Identity(4), a, b, batch_size=7) == pytest.approx(expected, rel=1e-6)
    fid = DomainFID(Identity(4), "sha", "val").to("cpu")
    fid.update_real(a)
    fid.update_fake(b)
    assert fid.compute() == pytest.approx(expected, rel=1e-6)
    assert fid.floor(b, batch_size=9) == pytest.approx(expected, rel=1e-6)  # b as the other real set
    assert fid.settings() == {"extractor_sha256": "sha", "n_real": 300, "n_fake": 200, "reference_split": "val"}
    fid.reset()
    assert fid.settings() == {"extractor_sha256": "sha", "n_real": 0, "n_fake": 0, "reference_split": "val"}


def test_an_extractor_without_an_int_feature_count_is_refused() -> None:
    class NoCount(nn.Module):
        num_features = 4.0

    with pytest.raises(ValueError) as err:
        DomainFID(NoCount(), "", "")
    assert str(err.value) == "the FID extractor needs an int num_features attribute (its feature dimension)"


def test_the_extractor_checks_shape_type_and_range_at_its_tolerances(tmp_path: Path) -> None:
    torch.manual_seed(0)
    classifier = DomainClassifier(image_shape=[1, 8, 8], num_classes=10, channels=4, feature_dim=16)
    extractor = FeatureExtractor(classifier)
    assert extractor.num_features == 16 and extractor.image_shape == (1, 8, 8) and not extractor.training
    x = torch.rand(3, 1, 8, 8)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = -0.0009, 1.0009  # within the 1e-3 slack for rounding
    assert torch.equal(extractor(x), classifier.eval().features(x))
    range_error = "the feature extractor expects float images in [0, 1] (map tanh outputs with (x + 1) / 2)"
    for low, high in ((-0.0011, 0.5), (0.5, 1.0011)):
        y = torch.full((2, 1, 8, 8), 0.5)
        y[0, 0, 0, 0], y[1, 0, 0, 0] = low, high
        with pytest.raises(ValueError) as err:
            extractor(y)
        assert str(err.value) == range_error
    exact = torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64)
    exact[0, 0, 0, 0], exact[1, 0, 0, 0] = -1e-3, 1 + 1e-3  # exactly at the slack: still accepted
    extractor._check(exact)
    with pytest.raises(ValueError) as err:
        extractor(torch.ones(2, 1, 8, 8, dtype=torch.uint8))
    assert str(err.value) == range_error
    with pytest.raises(ValueError) as err:
        extractor(torch.rand(2, 3, 8, 8))
    assert str(err.value) == "the feature extractor was trained on images [1, 8, 8], got [3, 8, 8]"


def test_a_missing_extractor_checkpoint_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_feature_extractor(tmp_path / "none.ckpt")
    assert str(err.value) == (f"feature-extractor checkpoint not found: {tmp_path / 'none.ckpt'} "
                              f"(train the 'classifier' model first)")


def test_image_models_keep_the_lowest_fid_when_they_have_an_extractor() -> None:
    assert MonitorsFID.monitor_mode == "min" and MonitorsFID.fallback_monitor == "val/loss"


def test_floor_images_come_from_the_train_split_of_the_asked_class() -> None:
    from types import SimpleNamespace

    from lightning_modules.metrics.fid import floor_image_sets, floor_images

    images = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1)  # image i holds the value i
    labels = {"train": torch.tensor([0, 1] * 5), "test": torch.zeros(10, dtype=torch.long)}
    dm = SimpleNamespace(images=lambda split: images if split == "train" else -images, labels=lambda split: labels[split])
    trainer = SimpleNamespace(datamodule=dm)
    assert floor_images(trainer, 2, label=1).flatten().tolist() == [1, 3]
    assert [s.flatten().tolist() for s in floor_image_sets(trainer, 1, 10)] == [[float(i)] for i in range(10)]
    assert floor_images(SimpleNamespace(), 3) is None and floor_images(SimpleNamespace(datamodule=None), 3) is None
    assert floor_image_sets(SimpleNamespace(datamodule=SimpleNamespace()), 3, 2) is None  # no whole splits to give


def test_the_fid_moves_its_feature_sums_to_the_asked_device() -> None:
    fid = DomainFID(Identity(3), "", "")
    assert fid.to("meta") is fid and fid.metric.real_features_sum.device.type == "meta"
