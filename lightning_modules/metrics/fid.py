"""The suite's trusted sample-quality numbers: FID and the Inception-style score, in a domain classifier's space.

One implementation serves GAN, pix2pix, CycleGAN and DDPM, so their numbers are comparable. The
features come from a trained DomainClassifier checkpoint (classifier.py), not Inception-v3, so these
FIDs are comparable only with FIDs from the same checkpoint: every value carries its sha256, its
sample counts and its reference split. The Fréchet distance itself is torchmetrics'
FrechetInceptionDistance (https://arxiv.org/abs/1706.08500) with our extractor plugged in; report it
beside ``fid_floor``, the FID between two real sets, below which no model can be told apart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from datamodules.sources import sha256_file
from lightning_modules.metrics.classifier import DomainClassifier


class FeatureExtractor(nn.Module):
    """A frozen DomainClassifier seen as images [N, C, H, W] float in [0, 1] -> features [N, feature_dim]."""

    def __init__(self, classifier: DomainClassifier) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        # torchmetrics reads num_features; without it, it probes with a 3x299x299 Inception-sized image.
        self.num_features = int(classifier.hparams.feature_dim)
        self.image_shape = tuple(classifier.hparams.image_shape)
        self.train(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        # Always eval: BatchNorm statistics and dropout must not change the features (e.g. when a parent
        # LightningModule switches to train mode).
        return super().train(False)

    def _check(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"the feature extractor was trained on images {list(self.image_shape)}, got {list(x.shape[1:])}"
            )
        if not x.is_floating_point() or float(x.min()) < -1e-3 or float(x.max()) > 1 + 1e-3:
            raise ValueError("the feature extractor expects float images in [0, 1] (map tanh outputs with (x + 1) / 2)")

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.classifier.features(x)  # [N, feature_dim]

    @torch.no_grad()
    def logits(self, x: Tensor) -> Tensor:
        """Class logits [N, num_classes], for ``inception_score``."""
        self._check(x)
        return self.classifier(x)


def load_feature_extractor(checkpoint: str | Path) -> tuple[FeatureExtractor, str]:
    """A frozen extractor from a DomainClassifier checkpoint, and the checkpoint file's sha256."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"feature-extractor checkpoint not found: {path} (train the 'classifier' model first)")
    classifier = DomainClassifier.load_from_checkpoint(path, map_location="cpu")
    return FeatureExtractor(classifier), sha256_file(path)


class MonitorsFID:
    """Mixin for image models: the suite's checkpoint callback (benchmarks/run/train.py reads ``monitor`` and
    ``monitor_mode``) keeps the best val/fid when the model has an FID extractor, else the best
    ``fallback_monitor`` (each model names its own; both must be keys where lower is better).

    Sample quality, not the training loss, is what an adversarial model is judged by (for pix2pix, the
    adversarial term's point is sharpness, which L1 does not reward).
    """

    monitor_mode = "min"
    fallback_monitor = "val/loss"

    @property
    def monitor(self) -> str:
        return "val/fid" if self.hparams.fid_checkpoint else self.fallback_monitor  # type: ignore[attr-defined]


class DomainFID:
    """FID between real and generated images in an extractor's feature space.

    Features are accumulated as float64 sums by torchmetrics, so any number of batches gives the same
    value as one big batch. ``extractor`` may be any nn.Module mapping a batch to [N, d]; it needs an
    int ``num_features`` attribute (d).
    """

    def __init__(self, extractor: nn.Module, extractor_hash: str, reference_split: str) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance  # lazy: heavy import

        if not isinstance(getattr(extractor, "num_features", None), int):
            raise ValueError("the FID extractor needs an int num_features attribute (its feature dimension)")
        # normalize=True declares float inputs in [0, 1]; with a custom extractor torchmetrics passes
        # the batch through unchanged (it only rescales to uint8 for its own Inception).
        self.metric = FrechetInceptionDistance(feature=extractor, normalize=True, reset_real_features=True)
        self.extractor_hash = extractor_hash
        self.reference_split = reference_split

    def to(self, device: torch.device | str) -> DomainFID:
        self.metric = self.metric.to(device)
        return self

    @torch.no_grad()
    def update_real(self, x: Tensor) -> None:
        self.metric.update(x, real=True)

    @torch.no_grad()
    def update_fake(self, x: Tensor) -> None:
        self.metric.update(x, real=False)

    def compute(self) -> float:
        return _fid_or_nan(self.metric)

    def reset(self) -> None:
        """Forget both the real and the generated features."""
        self.metric.reset()

    @torch.no_grad()
    def versus(self, images: Tensor, batch_size: int = 512) -> float:
        """FID between this metric's real reference and another set [N, C, H, W], leaving the metric as it is.

        Many sets (several noise draws, several real subsets) can so be scored against one reference pass.
        """
        from torchmetrics.image.fid import FrechetInceptionDistance

        source = self.metric
        # Under DDP the reference is every rank's real features (sync_context; a no-op on one process), and
        # the probe must not sum them over ranks again: each rank scores the same set, so it computes alone.
        probe = FrechetInceptionDistance(feature=source.inception, normalize=True, reset_real_features=True,
                                         sync_on_compute=False)
        probe = probe.to(source.device)
        with source.sync_context():
            for name in ("real_features_sum", "real_features_cov_sum", "real_features_num_samples"):
                setattr(probe, name, getattr(source, name).clone())
        for batch in images.split(batch_size):
            probe.update(batch.to(source.device), real=False)
        return _fid_or_nan(probe)

    def floor(self, other_real: Tensor, batch_size: int = 512) -> float:
        """FID between this metric's real reference and another real set, e.g. as many train images as fakes.

        The floor a perfect generator would get with these sample counts (FID is biased upwards at small
        N), computed against the very reference features the model's FID used; the fake side is untouched.
        """
        return self.versus(other_real, batch_size)

    def settings(self) -> dict[str, Any]:
        return {
            "extractor_sha256": self.extractor_hash,
            "n_real": int(self.metric.real_features_num_samples),
            "n_fake": int(self.metric.fake_features_num_samples),
            "reference_split": self.reference_split,
        }


def _fid_or_nan(metric: Any) -> float:
    """The metric's FID, or NaN with a warning when its feature sums are not finite.

    A diverged model's NaN images give NaN features, and the matrix square root of a NaN covariance
    does not raise but crashes the process inside LAPACK; a NaN number instead lets the run go on to
    report the divergence.
    """
    states = (metric.real_features_sum, metric.real_features_cov_sum, metric.fake_features_sum,
              metric.fake_features_cov_sum)
    if not all(bool(torch.isfinite(s).all()) for s in states):
        rank_zero_warn("FID of non-finite features (NaN or inf images, e.g. from a diverged model): NaN")
        return math.nan
    return float(metric.compute())


def inception_score(logits: Tensor, splits: int = 1) -> float:
    """exp(E_x KL(p(y|x) || p(y))) from classifier logits [N, num_classes], averaged over ``splits`` chunks.

    Ranges from 1 (every sample gets the same prediction) to num_classes (confident and evenly spread).
    Computed in log space so that zero probabilities cannot turn into 0 * inf.
    """
    if logits.dim() != 2 or not 1 <= splits <= len(logits):
        raise ValueError(f"need logits [N, classes] and 1 <= splits <= N, got {list(logits.shape)}, splits={splits}")
    scores = []
    for chunk in logits.double().chunk(splits):
        log_p = chunk.log_softmax(-1)  # [n, classes] log p(y|x)
        log_marginal = log_p.logsumexp(0) - math.log(len(chunk))  # [classes] log p(y)
        kl = (log_p.exp() * (log_p - log_marginal)).sum(-1)  # [n]
        scores.append(float(kl.mean().exp()))
    return sum(scores) / len(scores)


def fid_floor(extractor: nn.Module, real_a: Tensor, real_b: Tensor, batch_size: int = 512) -> float:
    """FID between two real sets (e.g. train vs test images): the value a perfect generator would get."""
    fid = DomainFID(extractor, extractor_hash="", reference_split="")
    for batch in real_a.split(batch_size):
        fid.update_real(batch)
    for batch in real_b.split(batch_size):
        fid.update_fake(batch)
    return fid.compute()


def floor_image_sets(trainer: Any, n: int, count: int, label: int | None = None) -> list[Tensor] | None:
    """Up to ``count`` disjoint sets of ``n`` training images (of class ``label`` if given), the first set
    being the first ``n`` images, for ``DomainFID.floor``; None when the datamodule cannot hand out whole
    splits. Fewer sets come back when the split is too small for ``count`` (always at least one)."""
    dm = getattr(trainer, "datamodule", None)
    if dm is None or not hasattr(dm, "images"):
        return None
    images = dm.images("train")  # [N, C, H, W] in [0, 1]
    if label is not None:
        images = images[dm.labels("train") == label]
    sets = max(1, min(count, len(images) // max(n, 1)))
    return [images[i * n:(i + 1) * n] for i in range(sets)]


def floor_images(trainer: Any, n: int, label: int | None = None) -> Tensor | None:
    """The first ``n`` training images (of class ``label`` if given) of the trainer's datamodule, for
    ``DomainFID.floor``; None when the datamodule cannot hand out whole splits."""
    sets = floor_image_sets(trainer, n, 1, label)
    return None if sets is None else sets[0]
