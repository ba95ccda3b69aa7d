"""DDPM (Ho, Jain & Abbeel 2020, https://arxiv.org/abs/2006.11239): a hierarchical VAE whose encoders only add noise.

The encoder chain is fixed: q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I) with a linear β schedule, so
q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I) in closed form (eq. 4). The decoder p(x_{t-1} | x_t) is a
Gaussian whose mean comes from a U-Net's noise prediction ε_θ(x_t, t) (eq. 11) and whose variance is fixed.
Training minimises the simple ε-MSE (eq. 14). The variational bound (eq. 5) is evaluated on the test set in
bits per dimension: L_T + Σ_{t≥2} L_{t-1} + L_0, with L_0 the discretised Gaussian decoder (eq. 13).

Pixels [0, 1] are mapped to [-1, 1]. The U-Net halves the resolution len(channel_mults) - 1 times, so
28x28 Fashion-MNIST runs natively (28 -> 14 -> 7) and the bound counts exactly the 784 real pixels;
with the datamodule's pad_to=32 the 240 always-black padding pixels would enter the bits per dim too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.likelihood.diffusion_unet import UNet
from lightning_modules.likelihood.bounds import bits_per_dim, discretized_gaussian_log_prob, normal_kl, randint, randn
from lightning_modules.likelihood.evaluation import EVAL_SEED, SeededEvaluation, check_int, grid_figure
from lightning_modules.likelihood.vae import check_image_shape

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SAMPLE_BATCH = 256  # images generated at once for the FID
REVERSE_VARIANCES = ("beta", "beta_tilde")


# --- the system -----------------------------------------------------------------------------------
class DDPM(SeededEvaluation):
    """A U-Net ε_θ over the fixed linear-β noising chain; val/loss is L_simple on seeded t and noise."""

    def __init__(
        self,
        image_shape: list[int],
        num_classes: int = 10,  # from the datamodule; an unconditional model ignores it
        timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        dropout: float = 0.0,
        lr: float = 2e-4,
        pixel_levels: int = 256,
        reverse_variance: str = "beta",
        bpd_images: int = 256,
        bpd_timesteps: int | None = None,
        sample_count: int = 16,
        sample_steps: int | None = 100,  # the grid only: 100 strided steps, not T (None = all T, ~2 CPU-min a grid)
        fid_checkpoint: str | None = None,
        fid_samples: int = 1000,
        fid_sample_steps: int | None = None,
    ) -> None:
        super().__init__()
        check_image_shape(image_shape)
        if not isinstance(channel_mults, (list, tuple)) or not channel_mults:
            raise ValueError(f"channel_mults must be a non-empty list of positive integers, got {channel_mults!r}")
        for m in channel_mults:
            check_int("channel_mults entries", m, 1)
        factor = 2 ** (len(channel_mults) - 1)
        if image_shape[1] % factor or image_shape[2] % factor:
            raise ValueError(f"image_shape height and width must be divisible by {factor} for {len(channel_mults)} "
                             f"channel_mults (pad with the datamodule's pad_to), got {list(image_shape)}")
        for name, value, minimum in (("timesteps", timesteps, 2), ("base_channels", base_channels, 1),
                                     ("pixel_levels", pixel_levels, 2), ("bpd_images", bpd_images, 0),
                                     ("sample_count", sample_count, 0), ("fid_samples", fid_samples, 1)):
            check_int(name, value, minimum)
        for name, value in (("bpd_timesteps", bpd_timesteps), ("sample_steps", sample_steps),
                            ("fid_sample_steps", fid_sample_steps)):
            if value is not None:
                check_int(name, value, 1)
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
        if reverse_variance not in REVERSE_VARIANCES:
            raise ValueError(f"reverse_variance must be one of {list(REVERSE_VARIANCES)}, got {reverse_variance!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        channel_mults = list(channel_mults)  # a list: hparams stay JSON-like
        self.save_hyperparameters()
        self.net = UNet(image_shape[0], base_channels, channel_mults, dropout)
        # Index t = 0..T with β_0 = 0 and ᾱ_0 = 1, so that t means the paper's t. Float64 for the products.
        betas = torch.cat([torch.zeros(1, dtype=torch.float64),
                           torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)])
        alpha_bar = torch.cumprod(1 - betas, dim=0)  # [T + 1]
        beta_tilde = betas.clone()
        beta_tilde[1:] = (1 - alpha_bar[:-1]) / (1 - alpha_bar[1:]) * betas[1:]  # eq. 7; β̃_1 = 0
        # σ_t² of p(x_{t-1}|x_t): β_t or β̃_t (section 3.2); at t = 1 both use β̃_2 as in the authors' code,
        # because β̃_1 = 0 would make the discretised decoder L_0 degenerate.
        rev_var = (betas if reverse_variance == "beta" else beta_tilde).clone()
        rev_var[1] = beta_tilde[2]
        # Float64 buffers: 1 - ᾱ_t and 1 - ᾱ_t / ᾱ_s cancel catastrophically in float32 at small t (relative
        # error ~1e-3 at t = 2), exactly where the bound's terms are most sensitive. Coefficients are cast
        # to the images' dtype only after they are formed. Rebuilt from hparams, so not checkpointed.
        for name, value in (("betas", betas), ("alpha_bar", alpha_bar), ("rev_var", rev_var)):
            self.register_buffer(name, value, persistent=False)
        self._bpd_seen = 0
        self._fid: Any = None
        self._fid_settings: dict[str, Any] = {}

    # ---- the forward (encoder) chain ------------------------------------------------------------
    def _ab(self, t: Tensor) -> Tensor:
        return self.alpha_bar[t].view(-1, 1, 1, 1)  # [batch, 1, 1, 1], float64

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I) (eq. 4), by reparameterisation."""
        ab = self._ab(t)
        return ab.sqrt().to(x0.dtype) * x0 + (1 - ab).sqrt().to(x0.dtype) * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor, s: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_s | x_t, x_0) for s < t; s = t - 1 gives eqs. 6-7, other s the strided sampler."""
        s = t - 1 if s is None else s
        ab_t, ab_s = self._ab(t), self._ab(s)
        beta_ts = 1 - ab_t / ab_s  # the β of one jump s -> t
        c0 = (ab_s.sqrt() * beta_ts / (1 - ab_t)).to(x0.dtype)
        ct = ((ab_t / ab_s).sqrt() * (1 - ab_s) / (1 - ab_t)).to(x0.dtype)
        return c0 * x0 + ct * xt, ((1 - ab_s) / (1 - ab_t) * beta_ts).to(x0.dtype)

    def predict_x0(self, xt: Tensor, t: Tensor) -> Tensor:
        """x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε_θ(x_t, t)) / sqrt(ᾱ_t); the posterior mean at x̂_0 is eq. 11's μ_θ."""
        ab = self._ab(t)
        return (xt - (1 - ab).sqrt().to(xt.dtype) * self.net(xt, t)) / ab.sqrt().to(xt.dtype)

    # ---- losses and the bound -------------------------------------------------------------------
    def eps_loss(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """L_simple (eq. 14): ||ε - ε_θ(x_t, t)||² per pixel, t ~ U{1..T}, for images x [batch, C, H, W] in [0, 1]."""
        x0 = 2 * x - 1
        t = randint(1, self.hparams.timesteps + 1, (len(x),), generator, x.device)
        noise = randn(x0.shape, generator, x.device, x0.dtype)
        return F.mse_loss(self.net(self.q_sample(x0, t, noise), t), noise)

    def bpd_stride(self) -> int:
        """Every stride-th t of {2..T} enters the estimate of Σ L_{t-1}; 1 = all of them (the exact bound)."""
        k = self.hparams.bpd_timesteps
        return 1 if k is None else max(1, math.ceil((self.hparams.timesteps - 1) / k))

    @torch.no_grad()
    def vlb_terms(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """L_T, Σ_{t=2}^T L_{t-1} and L_0 in nats per image [batch] each, for images x in [0, 1].

        With a stride s > 1 the middle sum is estimated from t = 2 + o + j s, a random offset o ~ U{0..s-1}
        per image, each term weighted by s: every t is drawn with probability 1/s, so the estimate is
        unbiased (systematic sampling; the terms change smoothly in t, which keeps its variance low).
        L_T has a closed form and L_0 is always evaluated. One x_t draw per term and image, as in the paper.
        """
        T, n = self.hparams.timesteps, len(x)
        x0 = 2 * x - 1  # [batch, C, H, W] in [-1, 1]
        dev = x.device
        ab_T = self.alpha_bar[T]
        # L_T = KL(q(x_T|x_0) || N(0, I)), in closed form
        prior = normal_kl(ab_T.sqrt().to(x0.dtype) * x0, torch.log(1 - ab_T).to(x0.dtype)).flatten(1).sum(1)

        def draw(t: Tensor) -> tuple[Tensor, Tensor]:
            xt = self.q_sample(x0, t, randn(x0.shape, generator, dev, x0.dtype))
            mean, _ = self.q_posterior(self.predict_x0(xt, t), xt, t)  # μ_θ(x_t, t)
            return xt, mean

        ones = torch.ones(n, dtype=torch.long, device=dev)
        _, mean = draw(ones)
        log_std = (0.5 * torch.log(self.rev_var[1])).to(x0.dtype)
        decoder = -discretized_gaussian_log_prob(x0, mean, log_std, self.hparams.pixel_levels).flatten(1).sum(1)  # L_0

        stride = self.bpd_stride()
        offset = randint(0, stride, (n,), generator, dev) if stride > 1 else 0 * ones
        middle = torch.zeros(n, device=dev)
        for j in range(math.ceil((T - 1) / stride)):
            t = 2 + offset + j * stride  # [batch]
            valid = t <= T
            t = t.clamp(max=T)
            xt, mean = draw(t)
            q_mean, q_var = self.q_posterior(x0, xt, t)
            p_log_var = torch.log(self.rev_var[t]).view(-1, 1, 1, 1).to(x0.dtype)
            kl = normal_kl(q_mean, torch.log(q_var), mean, p_log_var).flatten(1).sum(1)  # L_{t-1}
            middle += stride * valid * kl
        return prior, middle, decoder

    # ---- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sampling x_T -> x_0, images [n, C, H, W] in [0, 1].

        steps < T visits an evenly spaced subsequence T = τ_K > ... > τ_1 > 0 and draws each jump from
        q(x_s | x_t, x̂_0) (the respacing of Nichol & Dhariwal 2021); steps = T is Ho et al.'s algorithm 2 with
        the authors' code's clipping of x̂_0 to [-1, 1]; the last step returns the mean, without noise.
        """
        T = self.hparams.timesteps
        steps = min(steps or T, T)
        taus = sorted({round(T * i / steps) for i in range(steps + 1)}, reverse=True)  # T, ..., 0
        x = randn((n, *self.hparams.image_shape), generator, self.device)
        for t_val, s_val in zip(taus[:-1], taus[1:]):
            t = torch.full((n,), t_val, dtype=torch.long, device=self.device)
            x0_hat = self.predict_x0(x, t).clamp(-1, 1)
            if s_val == 0:
                x = x0_hat
                break
            s = torch.full_like(t, s_val)
            mean, post_var = self.q_posterior(x0_hat, x, t, s)
            var = (1 - self._ab(t) / self._ab(s)).to(x.dtype) if self.hparams.reverse_variance == "beta" else post_var
            x = mean + var.sqrt() * randn(x.shape, generator, self.device)
        return (x + 1) / 2

    # ---- Lightning ------------------------------------------------------------------------------
    def _check_levels(self, x: Tensor) -> None:
        scaled = x * (self.hparams.pixel_levels - 1)
        if float((scaled - scaled.round()).abs().max()) > 1e-3:
            raise ValueError(f"pixel_levels={self.hparams.pixel_levels} does not match the data's pixel values "
                             "(Fashion-MNIST: 256, digits: 17, binarized: 2)")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, _ = batch  # [batch, C, H, W] in [0, 1]
        loss = self.eps_loss(x)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        self.log("val/loss", self.eps_loss(x, self._eval_gen), on_epoch=True, prog_bar=True, batch_size=len(x),
                 sync_dist=True)

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
        self.log("test/loss", self.eps_loss(x, self._eval_gen), on_epoch=True, batch_size=len(x), sync_dist=True)
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
        steps = min(self.hparams.fid_sample_steps or self.hparams.timesteps, self.hparams.timesteps)
        self._fid_settings = {f"fid_{k}": v for k, v in self._fid.settings().items()} | {"fid_sample_steps": steps}
        self._fid = None

    def metric_settings(self) -> dict[str, Any]:
        stride, T = self.bpd_stride(), self.hparams.timesteps
        settings: dict[str, Any] = {
            "loss": "epsilon MSE per pixel (L_simple, Ho et al. 2020 eq. 14), one t ~ U{1..T} and one noise per image",
            "loss_unit": "mean squared error of the noise prediction, per pixel",
            "bpd": "variational bound L_T + sum L_{t-1} + L_0 (eq. 5), discretised Gaussian L_0, bits per dimension",
            "bpd_images": self._bpd_seen or self.hparams.bpd_images,
            "bpd_terms": ("all t" if stride == 1
                          else f"stratified estimate: every {stride}th t from a random offset, weight {stride}"),
            "bpd_network_calls_per_image": 1 + math.ceil((T - 1) / stride),
            "pixel_levels": self.hparams.pixel_levels,
            "reverse_variance": self.hparams.reverse_variance,
            "timesteps": T,
            "eval_seed": EVAL_SEED,
        }
        return settings | self._fid_settings

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
