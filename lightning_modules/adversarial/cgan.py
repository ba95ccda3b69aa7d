"""The notes' P(X | Y = y) as a class-conditional GAN: "different noise would generate different images of 3".

G(z, y) takes the noise with a one-hot class (Mirza & Osindero 2014, https://arxiv.org/abs/1411.1784); D is the
GAN's DCGAN discriminator with a projection head (Miyato & Koyama 2018, https://arxiv.org/abs/1802.05637):
logit(x, y) = ψ(φ(x)) + <embed(y), φ(x)>, which scores "is this a real image of class y", not only "is this
real". The game is the seed's R with the same G losses, optimizers, weight average and R1 as ``gan.GAN``.

Beside FID (fakes of every class in equal numbers against the whole test split), the model reports how often
the frozen domain classifier recognises the asked-for class: ``test/cond_acc`` (chance is 1 / classes).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.adversarial.dcgan_nets import Discriminator, Generator
from lightning_modules.adversarial.gan import GAN, discriminator_objective, generator_loss
from lightning_modules.figures import image_grid

COND_ACC_PER_CLASS = 500  # fakes per class for the conditional accuracy


# --- the players ------------------------------------------------------------------------------------
class ConditionalGenerator(nn.Module):
    """(z [batch, latent], y [batch]) -> images [batch, C, H, W]: the DCGAN generator fed [z, one_hot(y)]."""

    def __init__(self, latent_dim: int, num_classes: int, image_shape: list[int], base_channels: int,
                 extra_convs: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = Generator(latent_dim + num_classes, image_shape, base_channels, extra_convs)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        return self.net(torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], dim=1))


class ProjectionDiscriminator(nn.Module):
    """(x [batch, C, H, W], y [batch]) -> logits [batch]: the DCGAN discriminator's features φ(x), its linear
    head ψ, plus the projection <embed(y), φ(x)>."""

    def __init__(self, image_shape: list[int], num_classes: int, base_channels: int, extra_convs: int,
                 norm: str) -> None:
        super().__init__()
        net = Discriminator(image_shape, base_channels, extra_convs, norm).net
        self.features, self.head = net[:-1], net[-1]  # [..., Flatten] and Linear(features, 1)
        self.embed = nn.Embedding(num_classes, self.head.in_features)
        nn.init.zeros_(self.embed.weight)  # starts as the unconditional D; the class term is learned

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        phi = self.features(2 * x - 1)  # [batch, features]; inputs centred to [-1, 1] as in DCGAN
        return self.head(phi).squeeze(1) + (self.embed(y) * phi).sum(1)  # [batch]


# --- the system -------------------------------------------------------------------------------------
class ConditionalGAN(GAN):
    """GAN with labels: trains on (image, class) pairs, samples any class. Same hyperparameters as ``GAN``."""

    def __init__(
        self,
        image_shape: list[int],
        num_classes: int = 10,
        latent_dim: int = 64,
        base_channels: int = 64,
        lr: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        g_loss: str = "non_saturating",
        fid_checkpoint: str | None = None,
        fid_samples: int = 2000,
        sample_grid: int = 80,
        noise_seed: int = 0,
        extra_convs: int = 0,
        ema_decay: float = 0.0,
        lr_d: float | None = None,
        d_norm: str = "batch",
        lr_decay_from: int | None = None,
        r1_gamma: float = 0.0,
        fid_repeats: int = 25,
        lr_decay_after: float | None = None,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        super().__init__(image_shape, num_classes, latent_dim, base_channels, lr, betas, g_loss, fid_checkpoint,
                         fid_samples, sample_grid, noise_seed, extra_convs, ema_decay, lr_d, d_norm, lr_decay_from,
                         r1_gamma, fid_repeats, lr_decay_after)
        self.save_hyperparameters()  # this class's own arguments (the same names as GAN's)
        hp = self.hparams
        self.generator = ConditionalGenerator(hp.latent_dim, num_classes, image_shape, hp.base_channels, hp.extra_convs)
        self.discriminator = ProjectionDiscriminator(image_shape, num_classes, hp.base_channels, hp.extra_convs,
                                                     hp.d_norm)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if hp.ema_decay > 0 else None
        # The grid: one row per class, the same noise in every row.
        per_row = max(1, hp.sample_grid // num_classes) if hp.sample_grid else 0
        self.register_buffer("fixed_y", torch.arange(num_classes).repeat_interleave(per_row))  # [classes * per_row]
        self.fixed_z = self.fixed_z[:per_row].repeat(num_classes, 1)  # [classes * per_row, latent]
        self._cond_acc: float | None = None

    def forward(self, z: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        return self.generator(z, y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, y = batch  # [batch, C, H, W], [batch]
        opt_g, opt_d = self.optimizers()
        z = torch.randn(len(real), self.hparams.latent_dim, device=self.device)  # [batch, latent]
        fake = self.generator(z, y)  # fakes of the batch's classes: the data's class balance

        self.toggle_optimizer(opt_d)
        gamma = self.hparams.r1_gamma
        if gamma > 0:  # R1 on D's slope at the reals, as in GAN (losses.r1_penalty with the labels bound)
            x = real.detach().requires_grad_(True)
            d_real = self.discriminator(x, y)
            (grad,) = torch.autograd.grad(d_real.sum(), x, create_graph=True)
            r1 = grad.pow(2).flatten(1).sum(1).mean()
            self.log("train/r1", r1.detach(), on_step=False, on_epoch=True, batch_size=len(real))
        else:
            d_real, r1 = self.discriminator(real, y), None
        d_loss = discriminator_objective(d_real, self.discriminator(fake.detach(), y))
        opt_d.zero_grad()
        self.manual_backward(d_loss if r1 is None else d_loss + 0.5 * gamma * r1)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        self.toggle_optimizer(opt_g)
        d_fake = self.discriminator(fake, y)  # [batch]
        g_loss = generator_loss(d_fake, self.hparams.g_loss)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self._update_ema()

        n = len(real)
        self.log("train/d_loss", d_loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/g_loss", g_loss.detach(), on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log("train/d_fake", torch.sigmoid(d_fake.detach()).mean(), on_step=False, on_epoch=True, batch_size=n)

    # ---- sampling --------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int, seed: int, chunk: int = 500, label: int | None = None) -> Tensor:
        """n images [n, C, H, W] of class ``label``, or of every class in turn (equal numbers) without one."""
        if label is not None and not 0 <= label < self.hparams.num_classes:
            raise ValueError(f"label must be a class in 0..{self.hparams.num_classes - 1}, got {label}")
        gen = torch.Generator().manual_seed(seed)
        ys = torch.full((n,), label) if label is not None else torch.arange(n) % self.hparams.num_classes
        out = []
        with self._eval_sampler() as sampler:
            for i in range(0, n, chunk):
                z = torch.randn(min(chunk, n - i), self.hparams.latent_dim, generator=gen)
                out.append(sampler(z.to(self.device), ys[i:i + len(z)].to(self.device)))
        return torch.cat(out)  # [n, C, H, W]

    @torch.no_grad()
    def sample_images(self) -> Tensor:
        with self._eval_sampler() as sampler:
            return sampler(self.fixed_z, self.fixed_y)

    def make_samples(self) -> dict[str, Any]:
        if not self.hparams.sample_grid:
            return {}
        title = f"G(z, y), a row per class, epoch {self.current_epoch}"
        return {"samples.png": image_grid(self.sample_images(), ncol=len(self.fixed_y) // self.hparams.num_classes,
                                          title=title)}

    # ---- evaluation ------------------------------------------------------------------------------------
    def _eval_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> None:
        real, y = batch
        gen = torch.Generator().manual_seed(self.hparams.noise_seed + 1000 + batch_idx)
        z = torch.randn(len(real), self.hparams.latent_dim, generator=gen).to(self.device)
        loss = discriminator_objective(self.discriminator(real, y), self.discriminator(self.generator(z, y), y))
        self.log(f"{stage}/d_loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(real), sync_dist=True)
        fid = self._fid(stage)
        if fid is not None:
            fid.update_real(real)

    @torch.no_grad()
    def conditional_accuracy(self, per_class: int = COND_ACC_PER_CLASS, seed: int = 0) -> float:
        """How often the frozen domain classifier calls a fake of class y class y, over ``per_class`` fakes each."""
        extractor = self._frozen["extractor"].to(self.device)
        hits = 0
        for label in range(self.hparams.num_classes):
            fakes = self.generate(per_class, seed=seed + label, label=label)
            hits += int((extractor.logits(fakes).argmax(1) == label).sum())
        return hits / (per_class * self.hparams.num_classes)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if "extractor" in self._frozen and not self.trainer.sanity_checking:
            self.log("val/cond_acc", self.conditional_accuracy(100, seed=self.hparams.noise_seed + 2000), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if "extractor" in self._frozen:
            self._cond_acc = self.conditional_accuracy(seed=self.hparams.noise_seed + 3000)
            self.log("test/cond_acc", self._cond_acc, sync_dist=True)

    def metric_settings(self) -> dict[str, Any]:
        settings = super().metric_settings() | {
            "conditioning": "G(z, one_hot(y)); D with a projection head (Miyato & Koyama 2018)",
            "fid_fakes": "every class in turn, equal numbers, against the whole test split"}
        if self.hparams.fid_checkpoint:
            settings["cond_acc"] = (f"share of {COND_ACC_PER_CLASS} fakes per class that the FID's domain classifier "
                                    f"assigns to the asked-for class (chance 1/{self.hparams.num_classes})")
        return settings
