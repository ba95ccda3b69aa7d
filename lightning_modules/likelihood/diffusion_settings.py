"""The DDPM's model_args checked at construction: one-line ValueErrors naming the argument and what it must be
(the scheduler checks its own names)."""

from __future__ import annotations

from typing import Any

from lightning_modules.likelihood.diffusion_bound import STRATA
from lightning_modules.likelihood.evaluation import check_int


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
    if not args["lr"] > 0 or not args["vlb_weight"] >= 0:
        raise ValueError(f"need lr > 0 and vlb_weight >= 0, got lr={args['lr']}, vlb_weight={args['vlb_weight']}")
