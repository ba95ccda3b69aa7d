"""DDPM (Ho, Jain & Abbeel 2020, https://arxiv.org/abs/2006.11239): a hierarchical VAE whose encoders only add noise.

The system is three parts, as in diffusers: the noise schedule (diffusion_scheduler.py: q(x_t | x_0), the
posterior, one reverse step, the bound's terms), the ε-network (diffusion_unet.py) and this module, which reads
as the paper's algorithms: ``training_step`` is algorithm 1 (the simple ε-MSE of eq. 14), ``sample`` is
algorithm 2, and ``vlb_terms`` is the bound of eq. 5 (L_T + Σ L_{t-1} + L_0) in nats, reported in bits per dim.
Which t's estimate the bound's middle sum is diffusion_bound.py's; the model_args checks are diffusion_settings.py.

Options beyond the paper, each a model_arg: the cosine schedule and learned reverse variances trained with
L_hybrid = L_simple + λ L_vlb (Nichol & Dhariwal 2021, https://arxiv.org/abs/2102.09672), an exponential moving
average of the weights that val, test and sampling use (Ho et al. appendix B: decay 0.9999), a linear
learning-rate warm-up, a decoder head that refines L_0's mean (trained on L_0 alone), a share of training t's drawn
log-uniformly (``small_t_fraction``), and the bound's sum estimated over geometric strata of t (``bpd_strata``).

Pixels [0, 1] are mapped to [-1, 1]. The U-Net halves the resolution len(channel_mults) - 1 times, so 28x28
Fashion-MNIST runs natively (28 -> 14 -> 7) and the bound counts exactly the 784 real pixels; with the
datamodule's pad_to=32 the 240 always-black padding pixels would enter the bits per dim too.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.likelihood.bounds import bits_per_dim, randint, randn
from lightning_modules.likelihood.diffusion_bound import BoundTimesteps
from lightning_modules.likelihood.diffusion_scheduler import NoiseScheduler
from lightning_modules.likelihood.diffusion_settings import check_settings, recorded_settings
from lightning_modules.likelihood.diffusion_unet import DecoderHead, UNet
from lightning_modules.likelihood.evaluation import EVAL_SEED, SeededEvaluation, grid_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SAMPLE_BATCH = 256  # images generated at once for the FID


class DDPM(SeededEvaluation):
    """A U-Net ε_θ over a fixed noising chain; val/loss is L_simple on seeded t and noise (of the EMA weights)."""

    def __init__(
        self,
        image_shape: list[int],
        num_classes: int = 10,  # from the datamodule; an unconditional model ignores it
        timesteps: int = 1000,
        schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention: bool = False,
        dropout: float = 0.0,
        lr: float = 2e-4,
        warmup_steps: int = 0,
        ema_decay: float = 0.0,  # 0 = no EMA: val, test and samples use the trained weights
        reverse_variance: str = "beta",
        vlb_weight: float = 0.001,  # λ of L_hybrid; used only with reverse_variance "learned"
        small_t_fraction: float = 0.0,  # share of training t's drawn log-uniformly on {1..T}; the rest uniform
        decoder_head: int = 0,  # hidden channels of the decoder's refinement of its mean (0 = Ho et al.'s decoder)
        decoder_batch: int = 16,  # images per step on which L_0 trains the decoder head
        pixel_levels: int = 256,
        bpd_images: int = 256,
        bpd_timesteps: int | None = None,  # network calls for Σ L_{t-1} per image (None = every t: exact)
        bpd_strata: str = "systematic",  # how those t's are drawn (diffusion_bound.BoundTimesteps)
        sample_count: int = 16,
        sample_steps: int | None = 100,  # the grid only: 100 strided steps, not T (None = all T)
        fid_checkpoint: str | None = None,
        fid_samples: int = 1000,
        fid_sample_steps: int | None = None,
    ) -> None:
        super().__init__()
        check_settings(locals())
        channel_mults = list(channel_mults)  # a list: hparams stay JSON-like
        self.save_hyperparameters()
        self.scheduler = NoiseScheduler(timesteps, schedule, beta_start, beta_end, reverse_variance)
        self.learned_var = reverse_variance == "learned"
        channels = image_shape[0]
        self.net = UNet(channels, base_channels, channel_mults, dropout, num_res_blocks, attention,
                        out_ch=2 * channels if self.learned_var else channels)
        self.head = DecoderHead(channels, decoder_head) if decoder_head else None
        # The weights' moving average: a frozen copy that never sees a gradient, checkpointed with the model.
        self.ema = copy.deepcopy(self.net).requires_grad_(False) if ema_decay > 0 else None
        self._ema_updates = 0
        self._bpd_seen = 0
        self._fid: Any = None
        self._fid_settings: dict[str, Any] = {}

    # ---- the network's reading of x_t -----------------------------------------------------------
    def eval_net(self) -> torch.nn.Module:
        """The weights that val, test and sampling use: the EMA if there is one."""
        return self.ema if self.ema is not None else self.net

    def predict(self, net: torch.nn.Module, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
        """ε_θ(x_t, t) [batch, C, H, W] and, for learned variances, v in [0, 1] of the same shape."""
        out = net(xt, t)
        if not self.learned_var:
            return out, None
        eps, v_raw = out.chunk(2, dim=1)
        return eps, (v_raw + 1) / 2  # the network's raw output is centred on 0: v = 1/2 at initialisation

    def p_mean_log_var(self, x0_hat: Tensor, xt: Tensor, t: Tensor, v: Tensor | None) -> tuple[Tensor, Tensor]:
        """Mean and log variance of p(x_{t-1} | x_t): the posterior mean at x̂_0 (eq. 11's μ_θ) and σ_t²."""
        mean, _ = self.scheduler.posterior(x0_hat, xt, t)
        return mean, self.scheduler.log_variance(t, None, v)

    # ---- algorithm 1: training --------------------------------------------------------------------
    def training_timesteps(self, n: int, device: torch.device | str) -> Tensor:
        """t [n] for training: U{1..T}, except a ``small_t_fraction`` share drawn log-uniformly, P(t) =
        log((t + 1) / t) / log(T + 1), so that about 40% of those fall in t <= 20.

        The bound's terms are largest at small t (the ε-weight of L_{t-1} is about 1 / (2 (t - 1)) there, fifty
        times its value at large t, and the ε-MSE is largest there too), but uniform t gives t <= 20 only 2% of the
        updates. The loss stays the unweighted ε-MSE, so this reweights L_simple towards small t (as L_simple
        itself reweights the bound's terms); with learned variances it would bias L_vlb's estimate, whose x T assumes
        uniform t, so diffusion_settings refuses that combination.
        """
        T = self.hparams.timesteps
        t = torch.randint(1, T + 1, (n,), device=device)
        if self.hparams.small_t_fraction > 0:
            log_uniform = torch.exp(torch.rand(n, device=device, dtype=torch.float64) * math.log(T + 1)).floor()
            pick = torch.rand(n, device=device) < self.hparams.small_t_fraction
            t = torch.where(pick, log_uniform.long().clamp(1, T), t)
        return t

    def losses(self, x: Tensor, net: torch.nn.Module, generator: torch.Generator | None = None,
               t: Tensor | None = None) -> dict[str, Tensor]:
        """L_simple (eq. 14): ||ε - ε_θ(x_t, t)||² per pixel with t ~ U{1..T} (or the given t), for images x
        [batch, C, H, W] in [0, 1]; with learned variances also L_vlb (nats per pixel), whose gradient reaches only
        v (Nichol & Dhariwal section 3.1: the mean is left to L_simple), and ``loss`` = L_simple + λ L_vlb."""
        x0 = 2 * x - 1
        if t is None:
            t = randint(1, self.hparams.timesteps + 1, (len(x),), generator, x.device)
        noise = randn(x0.shape, generator, x.device, x0.dtype)
        xt = self.scheduler.add_noise(x0, noise, t)
        eps, v = self.predict(net, xt, t)
        simple = F.mse_loss(eps, noise)
        if v is None:
            return {"loss": simple, "simple": simple}
        x0_hat = self.scheduler.predict_x0(xt, eps.detach(), t)
        mean, log_var = self.p_mean_log_var(x0_hat, xt, t, v)
        first = t == 1
        kl = self.scheduler.kl(x0, xt, t.clamp(min=2), mean, log_var)  # [batch]; t = 1 rows replaced below
        nll = self.scheduler.decoder_nll(x0, mean, log_var, self.hparams.pixel_levels)
        vlb = torch.where(first, nll, kl).mean() / x0[0].numel() * self.hparams.timesteps  # E_t ... x T terms
        return {"loss": simple + self.hparams.vlb_weight * vlb, "simple": simple, "vlb": vlb}

    def decoder_mean(self, x1: Tensor, x0_hat: Tensor) -> Tensor:
        """The mean of p(x_0 | x_1): x̂_0 itself (eq. 11 at t = 1), refined by the decoder head if there is one."""
        return x0_hat if self.head is None else self.head(x1, x0_hat)

    def decoder_loss(self, x: Tensor) -> Tensor:
        """L_0 in nats per pixel at t = 1, for training the decoder head (the ε-network's x̂_0 is detached).

        L_simple's optimum is x̂_0 = E[x_0 | x_1], which never leaves [-1, 1], so a black pixel (half of
        Fashion-MNIST's) keeps its mean at -1 and pays -log Φ(bin half-width / σ_1) ≈ 0.5 bits in L_0 however
        sure the network is. Trained on L_0, the head moves the mean of a pixel it knows is black below -1, and
        the outer bin, which reaches to -inf, takes nearly all the mass. It learns on the weights the test uses.
        """
        x0 = 2 * x - 1
        t = torch.ones(len(x), dtype=torch.long, device=x.device)
        x1 = self.scheduler.add_noise(x0, torch.randn_like(x0), t)
        with torch.no_grad():
            eps, v = self.predict(self.eval_net(), x1, t)
            x0_hat = self.scheduler.predict_x0(x1, eps, t)
        log_var = self.scheduler.log_variance(t, None, v)
        nll = self.scheduler.decoder_nll(x0, self.decoder_mean(x1, x0_hat), log_var, self.hparams.pixel_levels)
        return nll.mean() / x0[0].numel()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, _ = batch  # [batch, C, H, W] in [0, 1]
        losses = self.losses(x, self.net, t=self.training_timesteps(len(x), x.device))
        loss = losses["loss"]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        if self.head is None:
            return loss
        # L_0 (nats per pixel) trains only the head; logged under its own key, so train/loss keeps one unit.
        decoder = self.decoder_loss(x[: self.hparams.decoder_batch])
        self.log("train/decoder_nll", decoder, on_step=False, on_epoch=True, batch_size=self.hparams.decoder_batch)
        return loss + decoder

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """The ε-network and the decoder head are clipped apart: they fit different losses (L_simple, L_0), and one
        joint norm would let the head's gradient shrink the ε-network's steps. Without a head, Lightning's own."""
        if self.head is None or gradient_clip_val is None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        clip = (torch.nn.utils.clip_grad_value_ if gradient_clip_algorithm == "value"
                else torch.nn.utils.clip_grad_norm_)
        for module in (self.net, self.head):
            clip(module.parameters(), gradient_clip_val)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """θ_ema <- d θ_ema + (1 - d) θ after every optimiser step, d warmed up as min(decay, (1 + n) / (10 + n))
        (TensorFlow's ExponentialMovingAverage with num_updates), so a short run's average is not stuck at init."""
        if self.ema is None:
            return
        self._ema_updates += 1
        n = self._ema_updates
        decay = min(self.hparams.ema_decay, (1 + n) / (10 + n))
        with torch.no_grad():
            for avg, p in zip(self.ema.parameters(), self.net.parameters()):
                avg.lerp_(p, 1 - decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ema_updates"] = self._ema_updates  # the warm-up of the decay resumes where it was

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._ema_updates = int(checkpoint.get("ema_updates", 0))

    def configure_optimizers(self) -> Any:
        params = list(self.net.parameters()) + (list(self.head.parameters()) if self.head is not None else [])
        opt = torch.optim.Adam(params, lr=self.hparams.lr)  # the EMA copy is not optimised
        if not self.hparams.warmup_steps:
            return opt
        warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / self.hparams.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": warm, "interval": "step"}}

    # ---- algorithm 2: sampling ------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """x_T ~ N(0, I), then x_t -> x_s along T = τ_K > ... > τ_0 = 0 (all T for steps=None: algorithm 2;
        fewer: the respaced jumps of Nichol & Dhariwal); images [n, C, H, W] in [0, 1]."""
        net = self.eval_net()
        x = randn((n, *self.hparams.image_shape), generator, self.device)
        taus = self.scheduler.sampling_timesteps(steps)
        for t, s in zip(taus[:-1], taus[1:]):
            tt = torch.full((n,), t, dtype=torch.long, device=self.device)
            eps, v = self.predict(net, x, tt)
            if t == 1 and self.head is not None:  # the decoder's mean, as in L_0 (the head knows only t = 1)
                x = self.decoder_mean(x, self.scheduler.predict_x0(x, eps, tt)).clamp(-1, 1)
            else:
                x = self.scheduler.step(eps, t, s, x, generator, v)
        return (x + 1) / 2

    # ---- the variational bound ------------------------------------------------------------------
    @torch.no_grad()
    def vlb_terms(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """L_T, Σ_{t=2}^T L_{t-1} and L_0 in nats per image [batch] each, for images x in [0, 1].

        The middle sum is exact (every t) or an unbiased stratified estimate (``bound_timesteps``); L_T has
        a closed form and L_0 is always evaluated. One x_t draw per term and image, as in the paper.
        """
        net, x0 = self.eval_net(), 2 * x - 1  # [batch, C, H, W] in [-1, 1]

        def model_at(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            xt = self.scheduler.add_noise(x0, randn(x0.shape, generator, x.device, x0.dtype), t)
            eps, v = self.predict(net, xt, t)
            return (xt, *self.p_mean_log_var(self.scheduler.predict_x0(xt, eps, t), xt, t, v))

        prior = self.scheduler.prior_kl(x0)
        x1, mean, log_var = model_at(torch.ones(len(x), dtype=torch.long, device=x.device))
        decoder = self.scheduler.decoder_nll(x0, self.decoder_mean(x1, mean), log_var, self.hparams.pixel_levels)
        middle = torch.zeros(len(x), device=x.device, dtype=x0.dtype)
        for t, weight in self.bound_timesteps().pairs(len(x), generator, x.device):
            xt, mean, log_var = model_at(t)
            middle += weight * self.scheduler.kl(x0, xt, t, mean, log_var)
        return prior, middle, decoder

    def bound_timesteps(self) -> BoundTimesteps:
        """Which t's enter Σ L_{t-1} and with what weight (the exact sum, or an unbiased stratified estimate)."""
        hp = self.hparams
        return BoundTimesteps(hp.timesteps, hp.bpd_timesteps, hp.bpd_strata)

    # ---- Lightning: validation and test ---------------------------------------------------------
    def _check_levels(self, x: Tensor) -> None:
        scaled = x * (self.hparams.pixel_levels - 1)
        if float((scaled - scaled.round()).abs().max()) > 1e-3:
            raise ValueError(f"pixel_levels={self.hparams.pixel_levels} does not match the data's pixel values "
                             "(Fashion-MNIST: 256, digits: 17, binarized: 2)")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        loss = self.losses(x, self.eval_net(), self._eval_gen)["simple"]
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(x), sync_dist=True)

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._bpd_seen = 0
        self._fid = None
        if self.hparams.fid_checkpoint:
            from lightning_modules.metrics.fid import DomainFID, load_feature_extractor  # lazy: torchmetrics' FID

            extractor, digest = load_feature_extractor(self.hparams.fid_checkpoint)
            self._fid = DomainFID(extractor.to(self.device), digest, reference_split="test").to(self.device)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        loss = self.losses(x, self.eval_net(), self._eval_gen)["simple"]
        self.log("test/loss", loss, on_epoch=True, batch_size=len(x), sync_dist=True)
        x_bpd = x[: max(0, self.hparams.bpd_images - self._bpd_seen)]  # the first bpd_images test images
        if len(x_bpd):
            self._check_levels(x_bpd)
            dims = x_bpd[0].numel()
            prior, middle, decoder = self.vlb_terms(x_bpd, self._eval_gen)
            for name, nats in (("bpd", prior + middle + decoder), ("bpd_prior", prior), ("bpd_diffusion", middle),
                               ("bpd_decoder", decoder)):
                self.log(f"test/{name}", bits_per_dim(nats.mean(), dims), on_epoch=True, batch_size=len(x_bpd),
                         sync_dist=True)
            self._bpd_seen += len(x_bpd)
        if self._fid is not None:
            self._fid.update_real(x)

    def on_test_epoch_end(self) -> None:
        if self._fid is None:
            return
        gen = torch.Generator().manual_seed(EVAL_SEED + 1)
        for start in range(0, self.hparams.fid_samples, SAMPLE_BATCH):
            n = min(SAMPLE_BATCH, self.hparams.fid_samples - start)
            self._fid.update_fake(self.sample(n, self.hparams.fid_sample_steps, gen))
        self.log("test/fid", self._fid.compute(), sync_dist=True)
        from lightning_modules.metrics.fid import floor_images

        real = floor_images(self.trainer, self.hparams.fid_samples)
        if real is not None:  # the floor: as many real train images as samples, against the same test reference
            self.log("test/fid_floor", self._fid.floor(real), sync_dist=True)
        steps = len(self.scheduler.sampling_timesteps(self.hparams.fid_sample_steps)) - 1
        self._fid_settings = {f"fid_{k}": v for k, v in self._fid.settings().items()} | {"fid_sample_steps": steps}
        self._fid = None

    def metric_settings(self) -> dict[str, Any]:
        return recorded_settings(self.hparams, self.scheduler, self.bound_timesteps(), self.head is not None,
                                 self.ema is not None, self._bpd_seen or self.hparams.bpd_images) | self._fid_settings

    @torch.no_grad()
    def make_samples(self) -> dict[str, Figure]:
        if not self.hparams.sample_count:
            return {}
        was_training = self.training
        self.eval()
        gen = torch.Generator().manual_seed(EVAL_SEED)  # the same x_T every epoch
        images = self.sample(self.hparams.sample_count, self.hparams.sample_steps, gen)
        self.train(was_training)
        return {"samples.png": grid_figure(images, nrow=min(8, self.hparams.sample_count))}
