"""Paired conditional GAN (pix2pix, Isola et al. 2017, https://arxiv.org/abs/1611.07004): edges -> item.

The seed's objective ``min_G E||x - G(z, x')||_1 + λ max_D (adversarial term)`` is implemented as is:
G minimises ``L1 + lam * adv`` and D minimises the seed's R (gan.py) on (input, image) pairs, which is
the paper's D objective "divided by 2". G's adversarial term is the non-saturating ``-½ log D(x', G(x'))``.
The noise z enters as dropout in G's decoder (paper §3.1), active in training only, so the eval metrics
are deterministic.

Relation to the paper's λ_L1 = 100: the paper weighs ``-log D + 100 L1`` on images in [-1, 1]. Our
images are in [0, 1], which halves every L1, and our adversarial term carries the seed's ½, so the
paper's objective is 200 * (L1 + 0.01 * adv) here: **lam = 0.01 is the paper's setting** (the default).
lam = 0 is plain L1 regression: D is never evaluated or stepped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image import StructuralSimilarityIndexMeasure

from lightning_modules.metrics.fid import DomainFID, MonitorsFID, floor_images, load_feature_extractor
from lightning_modules.adversarial.losses import adam_pair, check_adam_settings, discriminator_objective, generator_loss
from lightning_modules.figures import columns_grid


def _down(cin: int, cout: int, first: bool) -> nn.Sequential:
    # pix2pix encoder block C_k: (LeakyReLU) -> 4x4 stride-2 conv -> BatchNorm; the first block has neither extra.
    if first:
        return nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1))
    return nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout))


def _up(cin: int, cout: int, dropout: float) -> nn.Sequential:
    # Decoder block CD_k: ReLU -> 4x4 stride-2 transposed conv -> BatchNorm (-> Dropout: the noise z).
    layers: list[nn.Module] = [nn.ReLU(), nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
                               nn.BatchNorm2d(cout)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Encoder-decoder with skip connections between mirrored levels: [batch, C_in, H, W] -> [batch, C_out, H, W] in [0, 1].

    Any H, W: the input is zero-padded to a multiple of 2**depth (28 -> 32 at depth 3; the background is
    0 in both edges and images) and the output cropped back. Channels double per level up to 8 * base.
    """

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 32, depth: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.depth = depth
        widths = [base_channels * 2 ** min(k, 3) for k in range(depth)]  # e.g. [32, 64, 128]
        self.downs = nn.ModuleList(
            _down(in_channels if k == 0 else widths[k - 1], widths[k], first=k == 0) for k in range(depth))
        # ups[k] maps level k + 1 back to level k's size; the innermost three take dropout, as in the paper.
        self.ups = nn.ModuleList(
            _up(widths[k + 1] if k + 1 == depth - 1 else 2 * widths[k + 1], widths[k], dropout if k >= depth - 4 else 0.0)
            for k in range(depth - 1))
        self.out = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * widths[0] if depth > 1 else widths[0], out_channels, 4,
                                                               stride=2, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = 2 ** self.depth
        ph, pw = (-h) % m, (-w) % m
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))  # [batch, C_in, H', W'], multiples of m
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)  # level k: [batch, widths[k], H' / 2**(k+1), W' / 2**(k+1)]
        x = skips.pop()  # the innermost level
        for up in reversed(self.ups):
            x = torch.cat([up(x), skips.pop()], dim=1)  # [batch, 2 * widths[k], ...]
        y = torch.sigmoid(self.out(x))  # [batch, C_out, H', W']; tanh rescaled to [0, 1]
        return y[..., ph // 2: ph // 2 + h, pw // 2: pw // 2 + w]  # [batch, C_out, H, W]


class PatchDiscriminator(nn.Module):
    """PatchGAN: one logit per overlapping patch (about 22 px across) instead of one per image.

    Judging local patches is enough when L1 already fixes the low frequencies (paper §3.2).
    Input [batch, in_channels, H, W] in [0, 1] -> logits [batch, 1, H / 4, W / 4].
    """

    def __init__(self, in_channels: int, base_channels: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),  # H / 2
            nn.LeakyReLU(0.2),
            nn.Conv2d(base_channels, 2 * base_channels, 4, stride=2, padding=1, bias=False),  # H / 4
            nn.BatchNorm2d(2 * base_channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * base_channels, 4 * base_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(4 * base_channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(4 * base_channels, 1, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(2 * x - 1)  # [batch, 1, H / 4, W / 4]


# --- the system -----------------------------------------------------------------------------------
class Pix2Pix(MonitorsFID, pl.LightningModule):
    """Edges -> item with a U-Net G and a PatchGAN D that sees (edges, image) stacked as channels.

    Batches are ``(edges, images, labels)``. Metrics: ``train/g_loss`` (L1 + lam * adversarial term, what
    G minimises), ``train/d_loss`` (lam > 0), ``train/l1``; ``val/l1``, ``val/ssim``, ``test/l1``,
    ``test/ssim`` and, with ``fid_checkpoint``, ``val/fid`` (the checkpoint monitor) and ``test/fid`` of
    G(edges) vs the images of that split, with ``test/fid_floor`` beside it. Without it, val/l1 is the monitor.
    """

    fallback_monitor = "val/l1"
    alternates_networks = True  # the D step leaves G without gradients and the G step D (validate.py, DDP)

    def __init__(
        self,
        image_shape: list[int],
        num_classes: int = 10,
        base_channels: int = 32,
        depth: int = 3,
        dropout: float = 0.5,
        lam: float = 0.01,
        lr: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        fid_checkpoint: str | None = None,
        sample_grid: int = 16,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1 or min(image_shape[1:]) < 8:
            raise ValueError(f"image_shape must be [channels, height, width] with height and width >= 8, got {image_shape!r}")
        for name, value, low in (("base_channels", base_channels, 1), ("depth", depth, 1), ("sample_grid", sample_grid, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        check_adam_settings(lr, betas, lam=lam)  # lam = 0: L1 only
        self.save_hyperparameters()
        self.automatic_optimization = False
        c = image_shape[0]
        self.generator = UNet(c, c, base_channels, depth, dropout)
        self.discriminator = PatchDiscriminator(2 * c, base_channels)
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.test_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self._frozen: dict[str, Any] = {}  # the FID, kept out of the module tree and the checkpoints
        self._sample_batch: tuple[Tensor, Tensor] | None = None

    def forward(self, edges: Tensor) -> Tensor:
        return self.generator(edges)  # [batch, C, H, W]

    def discriminate(self, edges: Tensor, images: Tensor) -> Tensor:
        return self.discriminator(torch.cat([edges, images], dim=1))  # conditioned on the input: [batch, 1, h, w]

    # ---- training ------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        edges, target = batch[0], batch[1]  # [batch, C, H, W] each
        opt_g, opt_d = self.optimizers()
        lam = self.hparams.lam
        fake = self.generator(edges)
        n = len(edges)

        if lam > 0:  # D: descend the seed's R on real vs generated pairs
            self.toggle_optimizer(opt_d)
            d_loss = discriminator_objective(self.discriminate(edges, target), self.discriminate(edges, fake.detach()))
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()
            self.untoggle_optimizer(opt_d)
            self.log("train/d_loss", d_loss.detach(), on_step=False, on_epoch=True, batch_size=n)

        self.toggle_optimizer(opt_g)
        l1 = F.l1_loss(fake, target)
        loss = (l1 + lam * generator_loss(self.discriminate(edges, fake), "non_saturating")) if lam > 0 else l1
        opt_g.zero_grad()
        self.manual_backward(loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.log("train/g_loss", loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/l1", l1.detach(), on_step=False, on_epoch=True, batch_size=n)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return adam_pair(self.generator.parameters(), self.discriminator.parameters(), self.hparams.lr,
                         self.hparams.betas)

    # ---- evaluation ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.hparams.fid_checkpoint and "fid" not in self._frozen:
            extractor, digest = load_feature_extractor(self.hparams.fid_checkpoint)
            self._frozen["fid"] = DomainFID(extractor, digest, reference_split="test")
            self._frozen["val_fid"] = DomainFID(extractor, digest, reference_split="val")

    def on_validation_epoch_start(self) -> None:
        if "val_fid" in self._frozen:
            self._frozen["val_fid"].reset()

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        edges, target = batch[0], batch[1]
        output = self.generator(edges)  # eval mode: dropout off
        if batch_idx == 0 and self.hparams.sample_grid:  # the ordered val loader: the same examples every epoch
            k = self.hparams.sample_grid
            self._sample_batch = (edges[:k].detach().cpu(), target[:k].detach().cpu())
        self.log("val/l1", F.l1_loss(output, target), on_epoch=True, prog_bar=True, batch_size=len(edges), sync_dist=True)
        self.val_ssim(output, target)  # a torchmetrics object syncs its own state: sync_dist leaves it alone
        self.log("val/ssim", self.val_ssim, on_epoch=True, batch_size=len(edges), sync_dist=True)
        if "val_fid" in self._frozen and not self.trainer.sanity_checking:
            fid = self._frozen["val_fid"].to(self.device)
            fid.update_real(target)
            fid.update_fake(output)

    def on_validation_epoch_end(self) -> None:
        if "val_fid" in self._frozen and not self.trainer.sanity_checking:
            self.log("val/fid", self._frozen["val_fid"].compute(), sync_dist=True)

    def on_test_epoch_start(self) -> None:
        if "fid" in self._frozen:
            self._frozen["fid"].reset()

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        edges, target = batch[0], batch[1]
        output = self.generator(edges)
        self.log("test/l1", F.l1_loss(output, target), on_epoch=True, batch_size=len(edges), sync_dist=True)
        self.test_ssim(output, target)
        self.log("test/ssim", self.test_ssim, on_epoch=True, batch_size=len(edges), sync_dist=True)
        if "fid" in self._frozen:
            fid = self._frozen["fid"].to(self.device)
            fid.update_real(target)
            fid.update_fake(output)

    def on_test_epoch_end(self) -> None:
        if "fid" in self._frozen:
            fid = self._frozen["fid"]
            self.log("test/fid", fid.compute(), sync_dist=True)
            real = floor_images(self.trainer, int(fid.metric.fake_features_num_samples))
            if real is not None:  # the floor: as many real train items as outputs, against the same test items
                self.log("test/fid_floor", fid.floor(real), sync_dist=True)

    def metric_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "l1": "mean |G(edges) - image| per pixel, images in [0, 1], G in eval mode (dropout off)",
            "g_loss": "l1 + lam * non-saturating -1/2 log D(edges, G(edges)), on training batches",
            "ssim": "torchmetrics SSIM, gaussian kernel 11 sigma 1.5, data_range 1, mean over images",
            "lam": self.hparams.lam,
        }
        if "fid" in self._frozen:
            settings |= {f"fid_{k}": v for k, v in self._frozen["fid"].settings().items()}
            settings["fid_samples"] = "G(edges) of every test image vs the test images"
        return settings

    # ---- sampling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def make_samples(self) -> dict[str, Any]:
        if self._sample_batch is None:
            return {}
        edges, target = self._sample_batch
        was_training = self.generator.training
        self.generator.eval()
        output = self.generator(edges.to(self.device)).cpu()
        self.generator.train(was_training)
        return {"samples.png": columns_grid([edges, output, target], ["edges", "output", "target"])}
