"""The DDPM's model_args checked at construction (one-line ValueErrors naming the argument and what it must be;
the scheduler checks its own names), and the settings recorded beside its numbers, in words."""

from __future__ import annotations

from typing import Any

from lightning_modules.likelihood.diffusion_bound import STRATA, BoundTimesteps
from lightning_modules.likelihood.diffusion_scheduler import NoiseScheduler
from lightning_modules.likelihood.evaluation import EVAL_SEED, check_int


def check_settings(args: dict[str, Any]) -> None:
    """One-line ValueErrors for bad model_args (the scheduler checks its own names)."""
    shape = args["image_shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)):
        raise ValueError(f"image_shape must be [channels, height, width] of positive integers, got {shape!r}")
    mults = args["channel_mults"]
    if not isinstance(mults, (list, tuple)) or not mults:
        raise ValueError(f"channel_mults must be a non-empty list of positive integers, got {mults!r}")
    for m in mults:
        check_int("channel_mults entries", m, 1)
    factor = 2 ** (len(mults) - 1)
    if shape[1] % factor or shape[2] % factor:
        raise ValueError(f"image_shape height and width must be divisible by {factor} for {len(mults)} "
                         f"channel_mults (pad with the datamodule's pad_to), got {list(shape)}")
    for name, minimum in (("timesteps", 2), ("base_channels", 1), ("num_res_blocks", 1), ("warmup_steps", 0),
                          ("decoder_head", 0),
                          ("decoder_batch", 1), ("pixel_levels", 2), ("bpd_images", 0), ("sample_count", 0), ("fid_samples", 1)):
        check_int(name, args[name], minimum)
    for name in ("bpd_timesteps", "sample_steps", "fid_sample_steps"):
        if args[name] is not None:
            check_int(name, args[name], 1)
    if args["bpd_strata"] not in STRATA:
        raise ValueError(f"bpd_strata must be one of {list(STRATA)}, got {args['bpd_strata']!r}")
    if not 0 < args["beta_start"] <= args["beta_end"] < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={args['beta_start']}, "
                         f"beta_end={args['beta_end']}")
    for name in ("dropout", "ema_decay"):
        if not 0 <= args[name] < 1:
            raise ValueError(f"{name} must be in [0, 1), got {args[name]}")
    if not 0 <= args["small_t_fraction"] <= 1:
        raise ValueError(f"small_t_fraction must be in [0, 1], got {args['small_t_fraction']}")
    if args["small_t_fraction"] and args["reverse_variance"] == "learned":
        raise ValueError("small_t_fraction needs uniform training t's with reverse_variance 'learned' (L_vlb's "
                         "estimate assumes them): set small_t_fraction 0 or choose another reverse_variance")
    if not args["lr"] > 0 or not args["vlb_weight"] >= 0:
        raise ValueError(f"need lr > 0 and vlb_weight >= 0, got lr={args['lr']}, vlb_weight={args['vlb_weight']}")


def recorded_settings(hp: Any, scheduler: NoiseScheduler, bound: BoundTimesteps, has_head: bool, averaged: bool,
                      bpd_images: int) -> dict[str, Any]:
    """What the DDPM's numbers depend on (its ``metric_settings`` without the FID's)."""
    training_t = ("one t ~ U{1..T}" if not hp.small_t_fraction else
                  f"one t per image, U{{1..T}} or, for a share {hp.small_t_fraction:g}, log-uniform on {{1..T}}")
    return {
        "loss": f"epsilon MSE per pixel (L_simple, Ho et al. 2020 eq. 14), {training_t} and one noise per image",
        "loss_unit": "mean squared error of the noise prediction, per pixel",
        "bpd": "variational bound L_T + sum L_{t-1} + L_0 (eq. 5), discretised Gaussian L_0, bits per dimension",
        "decoder": decoder_words(hp, scheduler, has_head),
        "bpd_images": bpd_images,
        "bpd_terms": bound.describe(),
        "bpd_network_calls_per_image": 1 + bound.network_calls(),
        "pixel_levels": hp.pixel_levels,
        "schedule": hp.schedule,
        "reverse_variance": hp.reverse_variance,
        "timesteps": hp.timesteps,
        "ema_decay": hp.ema_decay,
        "weights": "EMA" if averaged else "trained",
        "sample_steps": len(scheduler.sampling_timesteps(hp.sample_steps)) - 1,
        "sampler": (f"ancestral over evenly spaced t's, each jump drawn from the posterior at the clipped x̂_0 with "
                    f"the {hp.reverse_variance} variance of the jump; the last jump returns the clipped x̂_0"
                    + (", or the decoder head's mean when it starts at t = 1" if has_head else "")),
        "eval_seed": EVAL_SEED,
    }


def decoder_words(hp: Any, scheduler: NoiseScheduler, has_head: bool) -> str:
    """L_0's mean in words, and whether the sampler of the grid and of the FID reaches the decoder head."""
    if not has_head:
        return "Ho et al.'s: the discretised Gaussian at x̂_0 (eq. 13)"
    visits = {name: 1 in scheduler.sampling_timesteps(steps)
              for name, steps in (("grid", hp.sample_steps), ("FID", hp.fid_sample_steps))}
    reach = ", ".join(f"the {name}'s sampler {'does' if hit else 'does not (its last jump starts above t = 1)'}"
                      for name, hit in visits.items())
    return (f"the discretised Gaussian at x̂_0 refined by a decoder head ({hp.decoder_head} hidden channels, trained "
            f"on L_0 alone, on the x̂_0 of the network evaluation uses; its own weights are not averaged); the "
            f"bound's L_0 uses it, and a sampler only when it steps from t = 1: {reach}")
