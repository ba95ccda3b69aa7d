"""Sample quality of the likelihood models, on the same footing as the GAN's: FID, its floor and their ratio.

The protocol is the GAN's (``adversarial/gan.py``): ``fid_samples`` generated images per draw, against the whole
test split in the frozen domain classifier's feature space, averaged over ``fid_repeats`` seeded draws; the
floor is as many real training images (disjoint slices, one per draw) against the same reference; the ratio is
mean FID / mean floor. Each model draws images the way its data look: a Bernoulli decoder draws binary images
(the data are binarized, so real and generated are both binary), a continuous decoder shows its means.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

FID_SEED = 1  # draw i uses the generator seeded FID_SEED + i: the same images for every checkpoint of a model

# n, generator -> images [n, C, H, W] in [0, 1]
DrawImages = Callable[[int, torch.Generator], Tensor]


def bernoulli_draw(probs: Tensor, generator: torch.Generator) -> Tensor:
    """Binary images drawn pixel by pixel from ``probs`` [n, C, H, W] (on the CPU, where the generator lives);
    a diverged model's NaN probabilities stay NaN instead of stopping the draw (its FID is then NaN)."""
    cpu = probs.detach().cpu()
    bad = ~torch.isfinite(cpu)
    draws = torch.bernoulli(cpu.nan_to_num(0.0).clamp(0, 1), generator=generator)
    return draws.masked_fill(bad, math.nan).to(probs.device)


def check_fid_settings(fid_samples: int, fid_repeats: int) -> None:
    for name, value, low in (("fid_samples", fid_samples, 2), ("fid_repeats", fid_repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


class SampleFID:
    """Mixin for a ``LatentVariableModel``: builds the test reference during the test pass and logs
    ``test/fid`` (mean over draws, with ``_std``), ``test/fid_floor`` (likewise) and ``test/fid_ratio``.

    The model's hparams hold ``fid_checkpoint`` (a DomainClassifier checkpoint, or None for no FID),
    ``fid_samples`` and ``fid_repeats``; it defines ``draw_images``.
    """

    hparams: Any
    trainer: Any
    device: torch.device

    def init_fid(self) -> None:
        self._fid_state: dict[str, Any] = {}
        self._fid_settings: dict[str, Any] = {}

    def draw_images(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()  # type: ignore[misc]
        self.init_fid()
        if self.hparams.fid_checkpoint:
            from lightning_modules.metrics.fid import DomainFID, load_feature_extractor  # lazy: torchmetrics' FID

            extractor, digest = load_feature_extractor(self.hparams.fid_checkpoint)
            self._fid_state["fid"] = DomainFID(extractor.to(self.device), digest, reference_split="test").to(self.device)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        super().test_step(batch, batch_idx)  # type: ignore[misc]
        fid = self._fid_state.get("fid")
        if fid is not None:
            fid.update_real(batch[0])

    @torch.no_grad()
    def on_test_epoch_end(self) -> None:
        fid = self._fid_state.pop("fid", None)
        if fid is None:
            return
        from lightning_modules.metrics.fid import floor_image_sets

        n, repeats = self.hparams.fid_samples, self.hparams.fid_repeats
        was_training = self.training  # type: ignore[attr-defined]
        self.eval()  # type: ignore[attr-defined]
        seeds = [FID_SEED + i for i in range(repeats)]
        fids = [fid.versus(self.draw_images(n, torch.Generator().manual_seed(s))) for s in seeds]
        self.train(was_training)  # type: ignore[attr-defined]
        self._log_mean_and_spread("test/fid", fids)
        floors = [fid.floor(real) for real in floor_image_sets(self.trainer, n, repeats) or []]
        if floors:
            self._log_mean_and_spread("test/fid_floor", floors)
            self.log("test/fid_ratio", statistics.fmean(fids) / statistics.fmean(floors), sync_dist=True)
        self._fid_settings = {"fid_extractor_sha256": fid.extractor_hash, "fid_samples": n, "fid_repeats": repeats,
                              "fid_n_real": int(fid.metric.real_features_num_samples), "fid_reference_split": "test",
                              "fid_draw_seeds": seeds, "fid_floor_train_slices": [[i * n, (i + 1) * n]
                                                                                  for i in range(len(floors))]}

    def _log_mean_and_spread(self, name: str, values: list[float]) -> None:
        self.log(name, statistics.fmean(values), sync_dist=True)  # type: ignore[attr-defined]
        if len(values) > 1:
            spread = statistics.stdev(values) if all(map(math.isfinite, values)) else math.nan
            self.log(f"{name}_std", spread, sync_dist=True)  # type: ignore[attr-defined]

    def fid_settings(self, fakes: str) -> dict[str, Any]:
        """What the FID numbers mean, and (after a test pass) the sample counts, seeds and extractor hash."""
        if not self.hparams.fid_checkpoint:
            return {}
        return {"fid": "mean over fid_repeats draws of fid_samples generated images against the test split in the "
                       "domain classifier's feature space (std beside it); the floor likewise over as many disjoint "
                       "train slices; fid_ratio = mean FID / mean floor", "fid_fakes": fakes} | self._fid_settings
