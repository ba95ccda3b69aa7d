"""DCGAN's two players (Radford et al. 2015, https://arxiv.org/abs/1511.06434) for small grey images.

G projects z and upsamples twice with transposed convolutions; D mirrors it with strided convolutions.
The GAN (gan.py) trains them; CycleGAN shares ``check_image_shape``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

D_NORMS = ("batch", "spectral")


def check_image_shape(image_shape: Sequence[int], multiple: int = 4) -> tuple[int, int, int]:
    """[C, H, W] with H and W multiples of ``multiple`` and >= 8: two stride-2 stages halve them twice."""
    if (len(image_shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) for v in image_shape)
            or image_shape[0] < 1 or min(image_shape[1:]) < 8 or any(v % multiple for v in image_shape[1:])):
        raise ValueError(f"image_shape must be [channels, height, width] with height and width >= 8 and multiples "
                         f"of {multiple}, got {image_shape!r}")
    c, h, w = image_shape
    return c, h, w


# --- the players ----------------------------------------------------------------------------------
def _refine(channels: int, extra: int, act: nn.Module, norm: str = "batch") -> list[nn.Module]:
    """``extra`` size-preserving 3x3 conv + normalisation + activation layers: depth at one resolution."""
    layers: list[nn.Module] = []
    for _ in range(extra):
        layers += [*_conv_norm(nn.Conv2d(channels, channels, 3, padding=1, bias=norm != "batch"), channels, norm), act]
    return layers


def _conv_norm(layer: nn.Module, channels: int, norm: str) -> list[nn.Module]:
    """A layer followed by BatchNorm ("batch"), or the layer under spectral normalisation ("spectral").

    Spectral norm (Miyato et al. 2018, https://arxiv.org/abs/1802.05957) divides each weight by its largest
    singular value, so D is 1-Lipschitz per layer: its logits cannot sharpen faster than G can follow, which
    keeps G's gradients informative. It replaces BatchNorm in D, which couples the real and fake batches.
    """
    if norm == "spectral":
        return [nn.utils.parametrizations.spectral_norm(layer)]
    return [layer, nn.BatchNorm2d(channels)]


class Generator(nn.Module):
    """z [batch, latent] -> images [batch, C, H, W] in [0, 1]: project and reshape, then two 2x up-convolutions.

    ``extra_convs`` adds that many 3x3 convolutions at each of the two lower resolutions: more capacity per
    pixel without changing the DCGAN shape (0 is the plain DCGAN).
    """

    def __init__(self, latent_dim: int, image_shape: Sequence[int], base_channels: int, extra_convs: int = 0) -> None:
        super().__init__()
        c, h, w = check_image_shape(image_shape)
        self.start = (2 * base_channels, h // 4, w // 4)  # e.g. [128, 7, 7] for 28x28, [128, 2, 2] for 8x8
        # DCGAN: BatchNorm + ReLU everywhere but the output; no bias before a BatchNorm (its shift replaces it).
        self.project = nn.Linear(latent_dim, math.prod(self.start), bias=False)
        self.body = nn.Sequential(
            # BatchNorm2d after the reshape (per channel over space, as DCGAN's first up-convolution has it)
            # also trains on a last batch of one image, where a BatchNorm1d over features would fail.
            nn.BatchNorm2d(2 * base_channels),
            nn.ReLU(inplace=True),
            *_refine(2 * base_channels, extra_convs, nn.ReLU(inplace=True)),  # H / 4
            nn.ConvTranspose2d(2 * base_channels, base_channels, 4, stride=2, padding=1, bias=False),  # 2x
            nn.BatchNorm2d(base_channels),
            nn.ReLU(inplace=True),
            *_refine(base_channels, extra_convs, nn.ReLU(inplace=True)),  # H / 2
            nn.ConvTranspose2d(base_channels, c, 4, stride=2, padding=1),  # 2x
        )

    def forward(self, z: Tensor) -> Tensor:
        h = self.project(z).view(-1, *self.start)  # [batch, 2 * base, H / 4, W / 4]
        # DCGAN's tanh output, rescaled to the data's [0, 1]: (tanh(a / 2) + 1) / 2 = sigmoid(a).
        return torch.sigmoid(self.body(h))  # [batch, C, H, W]


class Discriminator(nn.Module):
    """Images [batch, C, H, W] in [0, 1] -> one logit each (D(x) = sigmoid(logit)): strided convs, LeakyReLU.

    ``extra_convs`` mirrors the generator's: that many 3x3 convolutions after each strided one. ``norm`` is
    DCGAN's "batch" (BatchNorm after each hidden convolution) or "spectral" (every layer spectrally normalised).
    """

    def __init__(self, image_shape: Sequence[int], base_channels: int, extra_convs: int = 0,
                 norm: str = "batch") -> None:
        super().__init__()
        c, h, w = check_image_shape(image_shape)
        if norm not in D_NORMS:
            raise ValueError(f"d_norm must be one of {D_NORMS}, got {norm!r}")
        spectral = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda layer: layer)
        self.net = nn.Sequential(
            # H / 2; DCGAN: no BatchNorm on D's input layer
            spectral(nn.Conv2d(c, base_channels, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2, inplace=True),
            *_refine(base_channels, extra_convs, nn.LeakyReLU(0.2, inplace=True), norm),
            *_conv_norm(nn.Conv2d(base_channels, 2 * base_channels, 4, stride=2, padding=1, bias=norm != "batch"),
                        2 * base_channels, norm),  # H / 4
            nn.LeakyReLU(0.2, inplace=True),
            *_refine(2 * base_channels, extra_convs, nn.LeakyReLU(0.2, inplace=True), norm),
            nn.Flatten(),
            spectral(nn.Linear(2 * base_channels * (h // 4) * (w // 4), 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(2 * x - 1).squeeze(1)  # [batch]; inputs centred to [-1, 1] as in DCGAN
