"""CycleGAN (Zhu et al. 2017, https://arxiv.org/abs/1703.10593): unpaired translation between two domains.

Two generators (G_AB: A -> B, G_BA: B -> A) and two PatchGAN discriminators (D_B judges B images, D_A
judges A images). The seed: cycle loss ``||G_BA(G_AB(a)) - a||_1 + ||G_AB(G_BA(b)) - b||_1`` plus λ
times the adversarial terms; we weigh the cycle by ``lam_cycle`` instead (the paper's form, λ = 10),
which is the seed's with λ = 1 / lam_cycle. Our images are in [0, 1], half the paper's [-1, 1] range,
so an L1 here is half the paper's: lam_cycle = 20 matches the paper's balance exactly.

Adversarial terms: "lsgan" (the paper's least squares: D minimises ½(D(b) - 1)² + ½D(G(a))², G minimises
(D(G(a)) - 1)²) or "bce" (the seed's R for D, the non-saturating -½ log D(G(a)) for G). The paper's
50-image history buffer for D is left out: at these sizes D sees a fresh batch of fakes every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from datamodules.sources import sha256_file
from lightning_modules.metrics.classifier import DomainClassifier
from lightning_modules.metrics.fid import DomainFID, MonitorsFID, floor_images, load_feature_extractor
from lightning_modules.adversarial.dcgan_nets import check_image_shape
from lightning_modules.adversarial.losses import adam_pair, check_adam_settings, discriminator_objective, generator_loss
from lightning_modules.figures import columns_grid
from lightning_modules.adversarial.pix2pix import PatchDiscriminator

ADV_LOSSES = ("lsgan", "bce")


# --- losses ---------------------------------------------------------------------------------------
def d_adversarial(real_logits: Tensor, fake_logits: Tensor, kind: str) -> Tensor:
    """What a discriminator minimises on (real, translated) patch logits."""
    if kind == "lsgan":
        return 0.5 * (real_logits - 1).square().mean() + 0.5 * fake_logits.square().mean()
    return discriminator_objective(real_logits, fake_logits)


def g_adversarial(fake_logits: Tensor, kind: str) -> Tensor:
    """What a generator minimises to make its translations pass as real."""
    if kind == "lsgan":
        return (fake_logits - 1).square().mean()
    return generator_loss(fake_logits, "non_saturating")


def cycle_l1(a: Tensor, rec_a: Tensor, b: Tensor, rec_b: Tensor) -> Tensor:
    """The seed's cycle loss: mean |G_BA(G_AB(a)) - a| + mean |G_AB(G_BA(b)) - b| (per pixel, each way)."""
    return (rec_a - a).abs().mean() + (rec_b - b).abs().mean()


# --- the generator --------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)  # [batch, channels, h, w]


class ResnetGenerator(nn.Module):
    """Johnson et al.'s transformer net as CycleGAN uses it, shrunk: c7s1-k, d2k, d4k, n x R4k, u2k, uk, c7s1-C.

    [batch, C, H, W] in [0, 1] -> same shape in [0, 1]; H and W must be multiples of 4 (28 -> 14 -> 7).
    Instance norm, as in the paper: each image is normalised on its own, so the style of one item does
    not leak into another through batch statistics.
    """

    def __init__(self, channels: int, base_channels: int = 32, n_res_blocks: int = 3) -> None:
        super().__init__()
        b = base_channels
        self.net = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(channels, b, 7), nn.InstanceNorm2d(b), nn.ReLU(inplace=True),
            nn.Conv2d(b, 2 * b, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * b), nn.ReLU(inplace=True),  # H / 2
            nn.Conv2d(2 * b, 4 * b, 3, stride=2, padding=1), nn.InstanceNorm2d(4 * b), nn.ReLU(inplace=True),  # H / 4
            *[ResidualBlock(4 * b) for _ in range(n_res_blocks)],
            nn.ConvTranspose2d(4 * b, 2 * b, 3, stride=2, padding=1, output_padding=1),  # H / 2
            nn.InstanceNorm2d(2 * b), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * b, b, 3, stride=2, padding=1, output_padding=1),  # H
            nn.InstanceNorm2d(b), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(3), nn.Conv2d(b, channels, 7),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.net(2 * x - 1))  # [batch, C, H, W]; the paper's tanh rescaled to [0, 1]


# --- the system -----------------------------------------------------------------------------------
class CycleGAN(MonitorsFID, pl.LightningModule):
    """Batches ``(a_images, b_images)``, unpaired. One optimizer for both generators, one for both discriminators.

    Metrics: ``train/g_loss`` (what both generators minimise), ``train/d_loss`` (both discriminators),
    ``train/cycle_l1``, ``val/cycle_l1``, ``test/cycle_l1``; with ``fid_checkpoint``, ``val/fid`` (the
    mean of both directions on val, the checkpoint monitor; else val/cycle_l1 is), ``test/fid_ab`` (G_AB(test A)
    vs test B) and ``test/fid_ba``, each with its ``_floor``; with ``classifier_checkpoint``,
    ``test/success_ab`` (the fraction of G_AB(test A) the frozen classifier labels ``domain_b``) and
    ``test/success_ba``. ``domain_a``/``domain_b`` must match the datamodule's.
    """

    fallback_monitor = "val/cycle_l1"
    alternates_networks = True  # both generators, then both discriminators: each step leaves a pair idle (DDP)

    def __init__(
        self,
        image_shape: list[int],
        num_classes: int = 10,
        base_channels: int = 32,
        n_res_blocks: int = 3,
        adv_loss: str = "lsgan",
        lam_cycle: float = 10.0,
        lam_identity: float = 0.0,
        lr: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        domain_a: int = 7,
        domain_b: int = 9,
        fid_checkpoint: str | None = None,
        classifier_checkpoint: str | None = None,
        sample_grid: int = 8,
    ) -> None:
        super().__init__()
        check_image_shape(image_shape)
        if adv_loss not in ADV_LOSSES:
            raise ValueError(f"adv_loss must be one of {ADV_LOSSES}, got {adv_loss!r}")
        for name, value, low in (("base_channels", base_channels, 1), ("n_res_blocks", n_res_blocks, 0),
                                 ("sample_grid", sample_grid, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value in (("domain_a", domain_a), ("domain_b", domain_b)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < num_classes:
                raise ValueError(f"{name} must be a class label in 0..{num_classes - 1}, got {value!r}")
        if domain_a == domain_b:
            raise ValueError(f"domain_a and domain_b must differ, both are {domain_a}")
        check_adam_settings(lr, betas, lam_cycle=lam_cycle, lam_identity=lam_identity)
        self.save_hyperparameters()
        self.automatic_optimization = False
        c = image_shape[0]
        self.g_ab = ResnetGenerator(c, base_channels, n_res_blocks)
        self.g_ba = ResnetGenerator(c, base_channels, n_res_blocks)
        self.d_a = PatchDiscriminator(c, base_channels)
        self.d_b = PatchDiscriminator(c, base_channels)
        self._frozen: dict[str, Any] = {}  # FIDs and the classifier: outside the module tree and the checkpoints
        self._sample_batch: tuple[Tensor, Tensor] | None = None

    def translate(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        """Both directions and both round trips, each [batch, C, H, W]."""
        fake_b, fake_a = self.g_ab(a), self.g_ba(b)
        return {"fake_b": fake_b, "fake_a": fake_a, "rec_a": self.g_ba(fake_b), "rec_b": self.g_ab(fake_a)}

    # ---- training ------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        a, b = batch  # [batch, C, H, W] each, unpaired
        opt_g, opt_d = self.optimizers()
        kind = self.hparams.adv_loss
        out = self.translate(a, b)

        self.toggle_optimizer(opt_d)
        d_loss = (d_adversarial(self.d_b(b), self.d_b(out["fake_b"].detach()), kind)
                  + d_adversarial(self.d_a(a), self.d_a(out["fake_a"].detach()), kind))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        adv = g_adversarial(self.d_b(out["fake_b"]), kind) + g_adversarial(self.d_a(out["fake_a"]), kind)
        cycle = cycle_l1(a, out["rec_a"], b, out["rec_b"])
        g_loss = adv + self.hparams.lam_cycle * cycle
        if self.hparams.lam_identity > 0:  # paper §5.2: G_AB(b) ≈ b keeps what needs no change
            g_loss = g_loss + self.hparams.lam_identity * ((self.g_ab(b) - b).abs().mean() + (self.g_ba(a) - a).abs().mean())
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        n = len(a)
        self.log("train/g_loss", g_loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/cycle_l1", cycle.detach(), on_step=False, on_epoch=True, batch_size=n)
        self.log("train/d_loss", d_loss.detach(), on_step=False, on_epoch=True, batch_size=n)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        gens = [*self.g_ab.parameters(), *self.g_ba.parameters()]
        discs = [*self.d_a.parameters(), *self.d_b.parameters()]
        return adam_pair(gens, discs, self.hparams.lr, self.hparams.betas)

    # ---- evaluation ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.hparams.fid_checkpoint and "fid_ab" not in self._frozen:
            extractor, digest = load_feature_extractor(self.hparams.fid_checkpoint)
            self._frozen["fid_ab"] = DomainFID(extractor, digest, reference_split="test, domain_b")
            self._frozen["fid_ba"] = DomainFID(extractor, digest, reference_split="test, domain_a")
            self._frozen["val_fid_ab"] = DomainFID(extractor, digest, reference_split="val, domain_b")
            self._frozen["val_fid_ba"] = DomainFID(extractor, digest, reference_split="val, domain_a")
        if self.hparams.classifier_checkpoint and "classifier" not in self._frozen:
            path = Path(self.hparams.classifier_checkpoint)
            if not path.is_file():
                raise FileNotFoundError(f"classifier checkpoint not found: {path} (train the 'classifier' model first)")
            classifier = DomainClassifier.load_from_checkpoint(path, map_location="cpu")
            if list(classifier.hparams.image_shape) != list(self.hparams.image_shape):
                raise ValueError(f"classifier_checkpoint was trained on images {list(classifier.hparams.image_shape)}, "
                                 f"this model makes {list(self.hparams.image_shape)}")
            self._frozen["classifier"] = classifier.eval().requires_grad_(False)
            self._frozen["classifier_sha256"] = sha256_file(path)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        a, b = batch
        if batch_idx == 0 and self.hparams.sample_grid:  # val pairs A[i] with B[i] in order: the same every epoch
            k = self.hparams.sample_grid
            self._sample_batch = (a[:k].detach().cpu(), b[:k].detach().cpu())
        out = self.translate(a, b)
        self.log("val/cycle_l1", cycle_l1(a, out["rec_a"], b, out["rec_b"]), on_epoch=True, prog_bar=True,
                 batch_size=len(a), sync_dist=True)
        if "val_fid_ab" in self._frozen and not self.trainer.sanity_checking:
            self._update_fids("val_", a, b, out)

    def _update_fids(self, prefix: str, a: Tensor, b: Tensor, out: dict[str, Tensor]) -> None:
        """Real target-domain images and the translations into that domain, for ``<prefix>fid_ab``/``_ba``."""
        for key, real, fake in (("fid_ab", b, out["fake_b"]), ("fid_ba", a, out["fake_a"])):
            fid = self._frozen[prefix + key].to(self.device)
            fid.update_real(real)
            fid.update_fake(fake)

    def on_validation_epoch_start(self) -> None:
        for key in ("val_fid_ab", "val_fid_ba"):
            if key in self._frozen:
                self._frozen[key].reset()

    def on_validation_epoch_end(self) -> None:
        if "val_fid_ab" in self._frozen and not self.trainer.sanity_checking:
            fid = (self._frozen["val_fid_ab"].compute() + self._frozen["val_fid_ba"].compute()) / 2
            self.log("val/fid", fid, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        for key in ("fid_ab", "fid_ba"):
            if key in self._frozen:
                self._frozen[key].reset()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        a, b = batch
        n = len(a)
        out = self.translate(a, b)
        cycle = cycle_l1(a, out["rec_a"], b, out["rec_b"])
        self.log("test/cycle_l1", cycle, on_epoch=True, batch_size=n, sync_dist=True)
        if "fid_ab" in self._frozen:
            self._update_fids("", a, b, out)
        if "classifier" in self._frozen:
            classifier = self._frozen["classifier"].to(self.device)
            # Mean of per-batch rates weighted by batch size = the fraction over the whole test split.
            hit_b = (classifier(out["fake_b"]).argmax(-1) == self.hparams.domain_b).float().mean()
            hit_a = (classifier(out["fake_a"]).argmax(-1) == self.hparams.domain_a).float().mean()
            self.log("test/success_ab", hit_b, on_epoch=True, batch_size=n, sync_dist=True)
            self.log("test/success_ba", hit_a, on_epoch=True, batch_size=n, sync_dist=True)

    def on_test_epoch_end(self) -> None:
        targets = {"fid_ab": self.hparams.domain_b, "fid_ba": self.hparams.domain_a}
        for key, label in targets.items():
            if key in self._frozen:
                fid = self._frozen[key]
                self.log(f"test/{key}", fid.compute(), sync_dist=True)
                # The floor per direction: real train images of the target domain, as many as the translations.
                real = floor_images(self.trainer, int(fid.metric.fake_features_num_samples), label)
                if real is not None:
                    self.log(f"test/{key}_floor", fid.floor(real), sync_dist=True)

    def metric_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "cycle_l1": "mean|G_BA(G_AB(a)) - a| + mean|G_AB(G_BA(b)) - b|, per pixel, images in [0, 1]",
            "domains": {"a": self.hparams.domain_a, "b": self.hparams.domain_b},
            "adv_loss": self.hparams.adv_loss,
            "g_loss": "adversarial terms of both generators + lam_cycle * cycle_l1 (+ lam_identity * identity L1)",
            "d_loss": "both discriminators' adversarial terms, summed",
        }
        for key in ("fid_ab", "fid_ba"):
            if key in self._frozen:
                settings[key] = self._frozen[key].settings()
        if "classifier" in self._frozen:
            settings["success"] = {"classifier_sha256": self._frozen["classifier_sha256"],
                                   "rule": "argmax of the frozen classifier == the target domain's label, test split"}
        return settings

    # ---- sampling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def make_samples(self) -> dict[str, Any]:
        if self._sample_batch is None:
            return {}
        a, b = (x.to(self.device) for x in self._sample_batch)
        was_training = self.training
        self.eval()
        out = {k: v.cpu() for k, v in self.translate(a, b).items()}
        self.train(was_training)
        return {"samples_ab.png": columns_grid([a.cpu(), out["fake_b"], out["rec_a"]], ["a", "G_AB(a)", "G_BA(G_AB(a))"]),
                "samples_ba.png": columns_grid([b.cpu(), out["fake_a"], out["rec_b"]], ["b", "G_BA(b)", "G_AB(G_BA(b))"])}
