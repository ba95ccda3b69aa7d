"""The GAN of the seed (Goodfellow et al. 2014, https://arxiv.org/abs/1406.2661), DCGAN-shaped.

The value function is the seed's ``R = mean_x[-½ log D(x) - ½ log(1 - D(G(z)))]``: D minimises R (so R
is half D's binary cross-entropy), G maximises it. At the optimum P_gen = P_data, D = ½ everywhere and
R = log 2 (the Jensen-Shannon argument). G maximising R directly ("minimax") gets no gradient while D
easily rejects its samples, so the usual "non_saturating" G minimises -½ log D(G(z)) instead (same
fixed point, strong gradients early). D is a strided CNN and G its reverse with transposed convolutions
(DCGAN, Radford et al. 2015, https://arxiv.org/abs/1511.06434). Training follows Lightning's GAN
template: manual optimisation, one optimizer per player, ``toggle_optimizer`` around each step.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

# generator_loss and the rest are re-exported: pix2pix, CycleGAN and the tests import them from here too.
from lightning_modules.adversarial.losses import (G_LOSSES, adam_pair, check_adam_settings,  # noqa: F401
                                                  discriminator_objective, generator_loss, linear_decay_factor,
                                                  r1_penalty)
from lightning_modules.adversarial.dcgan_nets import D_NORMS, Discriminator, Generator, check_image_shape
from lightning_modules.metrics.fid import (DomainFID, FeatureExtractor, MonitorsFID, floor_image_sets, inception_score,
                                   load_feature_extractor)
from lightning_modules.figures import image_grid

FID_NOISE_OFFSET = 1  # FID/IS noise is seeded noise_seed + 1: the same z every epoch, apart from the grid's
VAL_NOISE_OFFSET = 1000  # val batch i uses noise_seed + 1000 + i, so validating never moves the training RNG


# --- the system -----------------------------------------------------------------------------------
class GAN(MonitorsFID, pl.LightningModule):
    """Unconditional GAN; ``num_classes`` comes with the image data and is unused (labels are ignored).

    Metrics: ``train/d_loss`` = R (D's objective), ``train/g_loss``; ``val/d_loss`` = R on val reals vs
    fresh fakes (the checkpoint monitor without an FID, a weak one: it ranks D, not G); with
    ``fid_checkpoint`` (a DomainClassifier checkpoint) also ``val/fid`` (``fid_samples`` fakes vs the val
    split, and the checkpoint monitor),
    and on the test split ``test/fid``, ``test/is`` and ``test/fid_floor`` (real train images), each a mean
    over ``fid_repeats`` draws with its ``_std``, and ``test/fid_ratio``. The fakes use fixed seeded noise.
    """

    fallback_monitor = "val/d_loss"
    alternates_networks = True  # each step leaves one side without gradients: plain DDP refuses (validate.py)

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
        sample_grid: int = 64,
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
        super().__init__()
        check_image_shape(image_shape)
        if g_loss not in G_LOSSES:
            raise ValueError(f"g_loss must be one of {G_LOSSES}, got {g_loss!r}")
        for name, value, low in (("latent_dim", latent_dim, 1), ("base_channels", base_channels, 1),
                                 ("fid_samples", fid_samples, 2), ("sample_grid", sample_grid, 0),
                                 ("noise_seed", noise_seed, 0), ("extra_convs", extra_convs, 0),
                                 ("fid_repeats", fid_repeats, 1),
                                 *((("lr_decay_from", lr_decay_from, 0),) if lr_decay_from is not None else ())):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        check_adam_settings(lr, betas)
        if lr_d is not None and (isinstance(lr_d, bool) or not lr_d > 0):
            raise ValueError(f"lr_d must be positive, or null for D to use lr, got {lr_d!r}")
        if d_norm not in D_NORMS:
            raise ValueError(f"d_norm must be one of {D_NORMS}, got {d_norm!r}")
        if isinstance(r1_gamma, bool) or not isinstance(r1_gamma, (int, float)) or not 0 <= r1_gamma < math.inf:
            raise ValueError(f"r1_gamma must be a number >= 0 (0 turns the penalty off), got {r1_gamma!r}")
        if lr_decay_after is not None and (isinstance(lr_decay_after, bool) or not 0 <= lr_decay_after < 1
                                           or lr_decay_from is not None):
            raise ValueError(f"lr_decay_after must be a fraction of max_epochs in [0, 1) (0.5: decay over the second "
                             f"half), and not given with lr_decay_from; got {lr_decay_after!r}")
        if isinstance(ema_decay, bool) or not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0 turns the weight average off), got {ema_decay!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = Generator(latent_dim, image_shape, base_channels, extra_convs)
        self.discriminator = Discriminator(image_shape, base_channels, extra_convs, d_norm)
        # An exponential moving average of G's weights (Karras et al. 2018; Yazici et al. 2019,
        # https://arxiv.org/abs/1806.04498) samples better than the last iterate, which orbits the
        # equilibrium. It never trains: only sampling, grids and FID use it. The game itself is unchanged.
        self.generator_ema: Generator | None = None
        if ema_decay > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        # The grid's noise is fixed once, from its own generator: the same seed shows the same z every epoch.
        fixed = torch.randn(sample_grid, latent_dim, generator=torch.Generator().manual_seed(noise_seed))
        self.register_buffer("fixed_z", fixed)  # [sample_grid, latent]
        # A plain dict, so the frozen extractor never joins this module's parameters or checkpoints.
        self._frozen: dict[str, Any] = {}
        self._fid_settings: dict[str, Any] = {}

    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z)  # [batch, C, H, W]

    # ---- training ------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # Annealing both players' steps shrinks the orbit the iterates trace around the equilibrium. The
        # factor is a function of the epoch alone, so a resumed run lands on the same schedule.
        start, end = self.hparams.lr_decay_from, self.trainer.max_epochs
        if self.hparams.lr_decay_after is not None and end is not None:
            start = int(self.hparams.lr_decay_after * end)  # the schedule follows the budget
        if start is None:
            return
        if end is None or end <= start:
            raise ValueError(f"lr_decay_from ({start}) needs a trainer max_epochs above it, got {end}; "
                             f"set trainer.max_epochs or lower lr_decay_from")
        factor = linear_decay_factor(self.current_epoch, start, end)
        opt_g, opt_d = self.trainer.optimizers
        for opt, base in ((opt_g, self.hparams.lr), (opt_d, self._lr_d())):
            for group in opt.param_groups:
                group["lr"] = base * factor
        self.log("train/lr_factor", factor, on_step=False, on_epoch=True)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real = batch[0]  # [batch, C, H, W]; labels unused
        opt_g, opt_d = self.optimizers()
        z = torch.randn(len(real), self.hparams.latent_dim, device=self.device)  # [batch, latent]
        fake = self.generator(z)  # one forward serves both steps; its graph reaches G

        # D: one descent step on R (Goodfellow et al. Algorithm 1 with k = 1); detach keeps G out of it.
        self.toggle_optimizer(opt_d)
        gamma = self.hparams.r1_gamma
        if gamma > 0:
            d_real, r1 = r1_penalty(self.discriminator, real)
            self.log("train/r1", r1.detach(), on_step=False, on_epoch=True, batch_size=len(real))
        else:
            d_real, r1 = self.discriminator(real), None
        d_loss = discriminator_objective(d_real, self.discriminator(fake.detach()))
        # D descends R + γ/2 R1; d_loss (logged as train/d_loss) stays the seed's R alone.
        opt_d.zero_grad()
        self.manual_backward(d_loss if r1 is None else d_loss + 0.5 * gamma * r1)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        # G: against the updated D; toggling froze D's parameters, so only G's receive gradients.
        self.toggle_optimizer(opt_g)
        d_fake = self.discriminator(fake)  # [batch]
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

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.generator_ema is None:
            return
        # Warm-up: the effective decay min(decay, (1 + n) / (10 + n)) lets early steps forget the random init.
        n = self.global_step
        decay = min(self.hparams.ema_decay, (1 + n) / (10 + n))
        for avg, live in zip(self.generator_ema.parameters(), self.generator.parameters()):
            avg.lerp_(live, 1 - decay)
        for avg, live in zip(self.generator_ema.buffers(), self.generator.buffers()):
            avg.copy_(live)  # BatchNorm's running statistics: the live ones (they already average over steps)

    @property
    def sampler(self) -> Generator:
        """The network that draws samples: the weight average when there is one, else G itself."""
        return self.generator if self.generator_ema is None else self.generator_ema

    @contextmanager
    def _eval_sampler(self) -> Iterator[Generator]:
        """The sampler in eval mode (BatchNorm's running statistics, no update), its mode restored after."""
        sampler = self.sampler
        was_training = sampler.training
        sampler.eval()
        try:
            yield sampler
        finally:
            sampler.train(was_training)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        # lr_d != lr is the two time-scale update rule (Heusel et al. 2017, https://arxiv.org/abs/1706.08500):
        # a faster D tracks the current G more closely, so G follows a better-estimated gradient.
        return adam_pair(self.generator.parameters(), self.discriminator.parameters(), self.hparams.lr,
                         self.hparams.betas, self._lr_d())

    def _lr_d(self) -> float:
        return self.hparams.lr if self.hparams.lr_d is None else self.hparams.lr_d

    # ---- sampling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int, seed: int, chunk: int = 500) -> Tensor:
        """n images [n, C, H, W] from noise drawn with its own seeded generator, G in eval mode."""
        gen = torch.Generator().manual_seed(seed)
        with self._eval_sampler() as sampler:
            zs = (torch.randn(min(chunk, n - i), self.hparams.latent_dim, generator=gen) for i in range(0, n, chunk))
            return torch.cat([sampler(z.to(self.device)) for z in zs])  # [n, C, H, W]

    @torch.no_grad()
    def sample_images(self) -> Tensor:
        """G(fixed_z) [sample_grid, C, H, W] in eval mode: comparable across epochs and runs with one seed."""
        with self._eval_sampler() as sampler:
            return sampler(self.fixed_z)

    def make_samples(self) -> dict[str, Any]:
        if not self.hparams.sample_grid:
            return {}
        return {"samples.png": image_grid(self.sample_images(), title=f"G(fixed z), epoch {self.current_epoch}")}

    # ---- evaluation ----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # Load the extractor when a run starts, so a wrong path fails at once with one line, not after an epoch.
        if self.hparams.fid_checkpoint and "fid" not in self._frozen:
            extractor, digest = load_feature_extractor(self.hparams.fid_checkpoint)
            self._frozen["extractor"] = extractor
            self._frozen["fid"] = DomainFID(extractor, digest, reference_split="val")

    def _fid(self, split: str) -> DomainFID | None:
        fid = self._frozen.get("fid")
        if fid is None or self.trainer.sanity_checking:
            return None
        fid.reference_split = split
        return fid.to(self.device)

    def _eval_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> None:
        real = batch[0]  # [batch, C, H, W]
        gen = torch.Generator().manual_seed(self.hparams.noise_seed + VAL_NOISE_OFFSET + batch_idx)
        z = torch.randn(len(real), self.hparams.latent_dim, generator=gen).to(self.device)
        loss = discriminator_objective(self.discriminator(real), self.discriminator(self.generator(z)))
        self.log(f"{stage}/d_loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(real), sync_dist=True)
        fid = self._fid(stage)
        if fid is not None:
            fid.update_real(real)

    def _fid_of_fakes(self, stage: str) -> None:
        """Scores ``fid_samples`` fakes of the fixed FID noise against the stage's reals: logs ``<stage>/fid``."""
        fid = self._fid(stage)
        if fid is None:
            return
        fid.update_fake(self.generate(self.hparams.fid_samples, seed=self.hparams.noise_seed + FID_NOISE_OFFSET))
        self.log(f"{stage}/fid", fid.compute(), sync_dist=True)
        self._fid_settings = {f"fid_{k}": v for k, v in fid.settings().items()}

    def on_validation_epoch_start(self) -> None:
        if "fid" in self._frozen:
            self._frozen["fid"].reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._fid_of_fakes("val")

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        # One draw of fakes and one real subset move a small-N FID by several percent each (FID at 2000
        # samples is biased and noisy), so the test numbers are means over ``fid_repeats`` noise draws and
        # as many disjoint train subsets, with their spread; the ratio is of the two means.
        fid = self._fid("test")
        if fid is None:
            return
        n = self.hparams.fid_samples
        first = self.hparams.noise_seed + FID_NOISE_OFFSET  # the first draw is val's: the same z as every epoch
        seeds = [first + i for i in range(self.hparams.fid_repeats)]
        extractor: FeatureExtractor = self._frozen["extractor"].to(self.device)
        fids, scores = [], []
        for seed in seeds:
            fakes = self.generate(n, seed=seed)  # [n, C, H, W] in [0, 1]
            fids.append(fid.versus(fakes))
            scores.append(inception_score(extractor.logits(fakes)))
        self._log_mean_and_spread("test/fid", fids)
        self.log("test/is", statistics.fmean(scores), sync_dist=True)
        # The floor: as many real train images as fakes, against the same test reference (none without a split).
        floors = [fid.floor(real) for real in floor_image_sets(self.trainer, n, len(seeds)) or []]
        if floors:
            self._log_mean_and_spread("test/fid_floor", floors)
            self.log("test/fid_ratio", statistics.fmean(fids) / statistics.fmean(floors), sync_dist=True)
        self._fid_settings = {"fid_n_real": int(fid.metric.real_features_num_samples), "fid_n_fake": n,
                              "fid_noise_seeds": seeds,
                              "fid_floor_train_slices": [[i * n, (i + 1) * n] for i in range(len(floors))]}

    def _log_mean_and_spread(self, name: str, values: list[float]) -> None:
        self.log(name, statistics.fmean(values), sync_dist=True)
        if len(values) > 1:  # statistics.stdev raises on NaN: a diverged G's NaN FIDs have a NaN spread
            spread = statistics.stdev(values) if all(map(math.isfinite, values)) else math.nan
            self.log(f"{name}_std", spread, sync_dist=True)

    def metric_settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"d_loss": "R = mean[-1/2 log D(x) - 1/2 log(1 - D(G(z)))] in nats, D's objective",
                                    "g_loss": self.hparams.g_loss,
                                    "samples_from": "EMA of G's weights" if self.generator_ema is not None else "G"}
        if self.hparams.fid_checkpoint:
            extractor: FeatureExtractor | None = self._frozen.get("extractor")
            settings |= {"fid_extractor_sha256": self._frozen["fid"].extractor_hash if extractor is not None else None,
                         "fid_samples": self.hparams.fid_samples, "fid_reference_split": "test",
                         "fid_repeats": self.hparams.fid_repeats,
                         "fid": "mean over fid_repeats noise draws of fid_samples fakes (std beside it); the floor "
                                "likewise over as many disjoint train slices; fid_ratio = mean FID / mean floor",
                         "is": "exp(E KL(p(y|x) || p(y))) per draw, extractor's classifier, 1 split; mean over draws"}
            settings |= self._fid_settings
        return settings
