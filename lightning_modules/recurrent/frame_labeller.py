"""Frame-by-frame video classification: the seed's synchronous many-to-many example.

A small CNN encodes every frame on its own (one set of weights shared over time); the suite's
recurrent cells then read the frame features in order and emit a label at every frame, so a frame
that is occluded or noisy can borrow evidence from the frames before it. ``recurrent=False`` removes
the recurrent net and keeps the SAME CNN with a linear head per frame: the no-context baseline that
the data (datamodules/frames.py) is built to beat. ``bidirectional=True`` adds a second StackedRNN
over the reversed video, so labels use future frames too (offline labelling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.classification import ClassificationModule
from lightning_modules.recurrent.stack import StackedRNN


class FrameEncoder(nn.Module):
    """Two conv stages (conv-BN-ReLU, 2x max-pool), pooled to 4x4, projected to ``feature_dim``."""

    POOLED = 4

    def __init__(self, in_channels: int, channels: int, feature_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),  # BN's shift replaces the bias
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(channels, 2 * channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 14 -> 7
            nn.AdaptiveAvgPool2d(self.POOLED),  # any frame size -> 4x4
        )
        self.project = nn.Linear(2 * channels * self.POOLED**2, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        # x [N, C, H, W] -> [N, feature_dim]
        return F.relu(self.project(self.body(x).flatten(1)))


class FrameLabellerNet(nn.Module):
    def __init__(self, frame_shape: list[int], num_classes: int, cell: str, recurrent: bool, bidirectional: bool,
                 channels: int, feature_dim: int, hidden_size: int, num_layers: int, dropout: float,
                 forget_bias: float, impl: str = "auto") -> None:
        super().__init__()
        self.encoder = FrameEncoder(frame_shape[0], channels, feature_dim)
        self.drop = nn.Dropout(dropout)
        self.rnn = self.back_rnn = None
        out_size = feature_dim
        if recurrent:
            def stack() -> StackedRNN:
                return StackedRNN(cell, feature_dim, hidden_size, num_layers, dropout=dropout, forget_bias=forget_bias,
                                  impl=impl)

            self.rnn = stack()
            self.back_rnn = stack() if bidirectional else None
            out_size = hidden_size * (2 if bidirectional else 1)
        self.head = nn.Linear(out_size, num_classes)

    def forward(self, frames: Tensor) -> Tensor:
        # frames [batch, T, C, H, W]; every video of a batch has the same length, so no padding.
        batch, steps = frames.shape[:2]
        h = self.encoder(frames.flatten(0, 1)).view(batch, steps, -1)  # [batch, T, feature_dim]
        if self.rnn is not None:
            h = self.drop(h)
            out, _ = self.rnn(h)  # [batch, T, hidden]; frame t sees frames 0..t
            if self.back_rnn is not None:
                back, _ = self.back_rnn(h.flip(1))  # frame t sees frames t..T-1
                out = torch.cat([out, back.flip(1)], dim=-1)  # [batch, T, 2 * hidden]
            h = out
        return self.head(self.drop(h))  # logits [batch, T, num_classes]


class FrameLabeller(ClassificationModule):
    """Per-frame cross-entropy; reports per-frame accuracy over all frames of all videos."""

    def __init__(
        self,
        num_classes: int,
        frame_shape: list[int],
        cell: str = "lstm",
        recurrent: bool = True,
        bidirectional: bool = False,
        channels: int = 16,
        feature_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.2,
        lr: float = 2e-3,
        forget_bias: float = 1.0,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if len(frame_shape) != 3 or min(frame_shape) < 1 or min(frame_shape[1:]) < 4:
            raise ValueError(f"frame_shape must be [channels, height, width] with height and width >= 4, got {frame_shape!r}")
        for name, value, low in (("num_classes", num_classes, 2), ("channels", channels, 1),
                                 ("feature_dim", feature_dim, 1), ("hidden_size", hidden_size, 1),
                                 ("num_layers", num_layers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, flag in (("recurrent", recurrent), ("bidirectional", bidirectional)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be true or false, got {flag!r}")
        if bidirectional and not recurrent:
            raise ValueError("bidirectional=True needs recurrent=True (the baseline has no temporal context)")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.save_hyperparameters()
        self.net = FrameLabellerNet(list(frame_shape), num_classes, cell, recurrent, bidirectional, channels,
                                    feature_dim, hidden_size, num_layers, dropout, forget_bias, impl)
        self.init_accuracy(num_classes)

    def forward(self, frames: Tensor) -> Tensor:
        return self.net(frames)

    def logits_and_targets(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Every frame is one example: [batch * T, num_classes] and [batch * T] from [batch, T, C, H, W], [batch, T]."""
        frames, labels = batch
        return self(frames).flatten(0, 1), labels.flatten()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def metric_settings(self) -> dict[str, str]:
        context = ("none (per-frame baseline)" if not self.hparams.recurrent
                   else "past and future frames" if self.hparams.bidirectional else "past frames only")
        return {"acc": "per-frame top-1 over all frames, test split", "temporal_context": context,
                "loss_unit": "nats per frame (cross-entropy)"}
