"""DDPM's ε-predictor: a small U-Net over images and the timestep (Ho et al. 2020, appendix B, shrunk).

``num_res_blocks`` ResBlocks per resolution on the way down and up, one skip per resolution by concatenation,
a sinusoidal time embedding added inside every block, GroupNorm throughout, and optionally single-head
self-attention at the lowest resolution and in the middle (where the paper puts it at 16x16). diffusion.py
holds the system, diffusion_scheduler.py the noise schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# --- the ε-predictor ------------------------------------------------------------------------------
def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of t [batch] -> [batch, dim] (Vaswani et al. 2017; DDPM appendix B)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    angles = t.float()[:, None] * freqs[None]  # [batch, half]
    return F.pad(torch.cat([angles.sin(), angles.cos()], dim=1), (0, dim % 2))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added in between, and a residual path."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(_norm(in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.temb = nn.Sequential(nn.SiLU(), nn.Linear(temb_dim, out_ch))
        self.conv2 = nn.Sequential(_norm(out_ch), nn.SiLU(), nn.Dropout(dropout),
                                   nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(x) + self.temb(temb)[:, :, None, None]  # [batch, out_ch, H, W]
        return self.skip(x) + self.conv2(h)


class SelfAttention(nn.Module):
    """Single-head self-attention over the H x W positions with a residual path (DDPM appendix B)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm, self.qkv, self.proj = _norm(ch), nn.Conv2d(ch, 3 * ch, 1), nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # [batch, H W, ch] each
        a = F.scaled_dot_product_attention(q, k, v)  # [batch, H W, ch]
        return x + self.proj(a.transpose(1, 2).reshape(b, c, h, w))


class Level(nn.Module):
    """The ResBlocks of one resolution (and attention after each, if asked)."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, blocks: int, attention: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(in_ch if i == 0 else out_ch, out_ch, temb_dim, dropout)
                                    for i in range(blocks))
        self.attn = nn.ModuleList(SelfAttention(out_ch) if attention else nn.Identity() for _ in range(blocks))

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        for block, attn in zip(self.blocks, self.attn):
            x = attn(block(x, temb))
        return x


class UNet(nn.Module):
    """A small U-Net: ``blocks`` ResBlocks per resolution down and up, skips by concatenation, attention optional.

    ``out_ch`` is the input's channels for ε alone, twice that for ε and the variance output v (learned variances).
    """

    def __init__(self, in_ch: int, base: int, mults: Sequence[int], dropout: float, blocks: int = 1,
                 attention: bool = False, out_ch: int | None = None) -> None:
        super().__init__()
        self.base = base
        temb_dim = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.inc = nn.Conv2d(in_ch, base, 3, padding=1)
        chans = [base * m for m in mults]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        c = base
        last = len(chans) - 1
        for i, ch in enumerate(chans):
            self.down.append(Level(c, ch, temb_dim, dropout, blocks, attention and i == last))
            c = ch
            if i < len(chans) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(c, c, temb_dim, dropout)
        self.mid_attn = SelfAttention(c) if attention else nn.Identity()
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(chans))):
            self.up.append(Level(c + chans[i], chans[i], temb_dim, dropout, blocks, attention and i == last))
            c = chans[i]
            if i > 0:
                self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                   nn.Conv2d(c, c, 3, padding=1)))
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, out_ch or in_ch, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # start by predicting ε = 0: the bound starts finite and tame
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        # x [batch, C, H, W], t [batch] in 1..T
        temb = self.time_mlp(timestep_embedding(t, self.base))  # [batch, 4 base]
        h, skips = self.inc(x), []
        for i, block in enumerate(self.down):
            h = block(h, temb)
            skips.append(h)  # [batch, chans[i], H / 2^i, W / 2^i]
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid_attn(self.mid(h, temb))
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.out(h)  # ε prediction [batch, C, H, W] (and v: [batch, 2 C, H, W])
