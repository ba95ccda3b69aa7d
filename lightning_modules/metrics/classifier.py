"""The domain classifier: a small CNN over [1, H, W] images, and the feature extractor behind the suite's FID.

Inception-v3 features suit 299x299 colour photos, not 28x28 grey clothes; a classifier trained on the
domain itself gives features that see what matters there (the practice of the original MNIST-GAN
evaluations). ``features`` is its penultimate layer; fid.py loads a trained checkpoint of this model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.classification import ClassificationModule


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # No conv bias: BatchNorm's shift makes it redundant.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvFeatures(nn.Module):
    """Two conv stages, one 2x pool, then adaptive pooling to 4x4: the same weights shapes for 8x8 to 32x32."""

    POOLED = 4

    def __init__(self, in_channels: int, channels: int, feature_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_block(in_channels, channels),
            conv_block(channels, channels),
            nn.MaxPool2d(2),  # 8 -> 4, 28 -> 14, 32 -> 16
            conv_block(channels, 2 * channels),
            conv_block(2 * channels, 2 * channels),
            # Averages to a fixed 4x4 grid whatever the input size, so one head fits every dataset.
            nn.AdaptiveAvgPool2d(self.POOLED),
        )
        self.project = nn.Linear(2 * channels * self.POOLED**2, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        # x [batch, C, H, W]
        h = self.body(x).flatten(1)  # [batch, 2 * channels * 16]
        return F.relu(self.project(h))  # [batch, feature_dim]


class DomainClassifier(ClassificationModule):
    """Image -> class logits; cross-entropy, AdamW; reports top-1 accuracy on val and test."""

    def __init__(
        self,
        image_shape: list[int],
        num_classes: int,
        channels: int = 32,
        feature_dim: int = 128,
        lr: float = 1e-3,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1 or min(image_shape[1:]) < 8:
            raise ValueError(f"image_shape must be [channels, height, width], sides >= 8, got {image_shape!r}")
        sizes = (("num_classes", num_classes, 2), ("channels", channels, 1), ("feature_dim", feature_dim, 1))
        for name, value, low in sizes:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.save_hyperparameters()
        self.net = ConvFeatures(image_shape[0], channels, feature_dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)
        self.init_accuracy(num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations [batch, feature_dim] of images [batch, C, H, W]: what FID compares."""
        return self.net(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.drop(self.net(x)))  # logits [batch, num_classes]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)

    def metric_settings(self) -> dict[str, str]:
        return {"acc": "top-1, test split", "loss_unit": "nats per image (cross-entropy)"}
