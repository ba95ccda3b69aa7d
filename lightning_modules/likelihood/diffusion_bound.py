"""Which t's enter the DDPM's bound Σ_{t=2}^T L_{t-1}, and with what weight: the exact sum (every t: one network
call per t and image, T - 1 in all) or an unbiased stratified estimate with ``calls`` network calls per image."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_modules.likelihood.diffusion_scheduler import geometric_strata, strided_timesteps, stratified_timesteps

STRATA = ("systematic", "geometric")


@dataclass(frozen=True)
class BoundTimesteps:
    timesteps: int  # T
    calls: int | None  # network calls per image for the sum; None = every t (the exact sum)
    strata: str = "systematic"

    @property
    def stride(self) -> int:
        """Every stride-th t of {2..T} enters the systematic estimate; 1 = all of them (exact)."""
        return 1 if self.calls is None else max(1, math.ceil((self.timesteps - 1) / self.calls))

    def geometric(self) -> list[tuple[int, int]]:
        """The geometric strata as (first t, width)."""
        return geometric_strata(self.timesteps, self.timesteps if self.calls is None else self.calls)

    def pairs(self, n: int, generator: torch.Generator | None, device: torch.device | str) -> list[tuple[Tensor, Tensor]]:
        """(t [n], weight [n]) pairs whose Σ weight L_{t-1} estimates Σ_{t=2}^T L_{t-1} without bias.

        ``systematic``: every stride-th t from a random offset per image, weight stride. ``geometric``: strata whose
        widths grow geometrically from single t's at small t, one uniform t per stratum, weight its width; its
        variance is far lower, because the terms change fastest (like 1/t) exactly where its strata are narrow.
        """
        if self.strata == "geometric":
            return stratified_timesteps(self.geometric(), n, generator, device)
        return strided_timesteps(self.timesteps, self.stride, n, generator, device)

    def network_calls(self) -> int:
        """Network calls per image for the sum (L_0's one call comes on top)."""
        if self.strata == "geometric":
            return len(self.geometric())
        return math.ceil((self.timesteps - 1) / self.stride)

    def describe(self) -> str:
        """The estimate in words, recorded beside every bits/dim."""
        if self.strata == "geometric":
            strata = self.geometric()
            if len(strata) == self.timesteps - 1:
                return "all t"
            alone = 0  # the leading run of strata holding one t each (the smallest t's, taken exactly)
            for lo, width in strata:
                if width != 1:
                    break
                alone = lo
            single = f" (t = 2 to {alone} each alone)" if alone > 2 else " (t = 2 alone)" if alone == 2 else ""
            count = f"{len(strata)} stratum" if len(strata) == 1 else f"{len(strata)} strata"
            return (f"stratified estimate: {count} of t with geometrically growing widths{single}, one uniform t per "
                    f"stratum, weight its width")
        if self.stride == 1:
            return "all t"
        return f"stratified estimate: every {self.stride}th t from a random offset, weight {self.stride}"
