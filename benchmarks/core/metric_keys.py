"""The suite's one metric vocabulary: every key a model logs, with its unit and which way is better.

The checkpoint callback, the pruner, MLflow, DVC metrics and the report all read the same keys, so a
key means one thing in every model: ``val/loss`` is always the model's training objective on the
validation split, and a second player or a side number gets a key of its own (``train/d_loss``,
``val/l1``). ``tests/test_contract.py`` trains every registered model for a couple of batches and fails
on any logged key this table does not know, and on a checkpoint mode that disagrees with ``direction``.

A key may be a pattern with ``{name}`` placeholders standing for an integer (``test/nll_k{k}``).
``lookup`` also maps ``<key>_best`` (the best epoch of a monitored key) and ``<key>_std`` (a spread
logged beside a mean) to their base key when no row names them exactly. Directions: "min" or "max" for
a number that ranks models, "none" for diagnostics (gradient norms, mean D(x), bound terms, floors).

``loss`` keys have no fixed unit: each model's objective has its own (nats per character for the char
LM, nats per image for the VAEs, an epsilon MSE for DDPM), recorded as ``loss_unit`` in its metric
settings beside the number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["DIRECTIONS", "METRIC_KEYS", "MetricKey", "direction", "label", "lookup"]

DIRECTIONS = ("min", "max", "none")
SUFFIXES = ("_best", "_std")  # derived keys that take their base key's meaning
_PLACEHOLDER = re.compile(r"\{\w+\}")


@dataclass(frozen=True)
class MetricKey:
    key: str  # e.g. "test/bleu", or a pattern "test/nll_k{k}"
    unit: str  # "nats/char", "bits/char", "BLEU", "fraction", "FID", "nats", "bits/dim", "", ...
    direction: str  # "min" | "max" | "none"
    description: str


def _stages(stages: str, name: str, unit: str, direction: str, description: str) -> tuple[MetricKey, ...]:
    """One row per stage prefix ("train", "val", "test") for a number logged the same way in each."""
    return tuple(MetricKey(f"{stage}/{name}", unit, direction, description) for stage in stages.split())


METRIC_KEYS: tuple[MetricKey, ...] = (
    # --- every model ------------------------------------------------------------------------------
    *_stages("train val test", "loss", "", "min",
             "the model's training objective, epoch mean (val/test: without training-only terms such as label "
             "smoothing or KL warm-up); unit: the model's loss_unit setting"),
    # --- char LM ----------------------------------------------------------------------------------
    *_stages("val test", "bpc", "bits/char", "min", "next-character cross-entropy in bits: loss / ln 2"),
    MetricKey("test/loss_valtest", "nats/char", "min",
              "next-character cross-entropy over the val and test text together (one text, as nanoGPT's validation "
              "split is): the figure to set beside nanoGPT's validation loss"),
    # --- classifiers and taggers ------------------------------------------------------------------
    *_stages("val test", "acc", "fraction", "max", "top-1 accuracy over all labelled items (micro)"),
    MetricKey("test/grad_norm_first", "", "none", "mean ||d loss_i / d x_0||: the error signal reaching the first step"),
    MetricKey("test/grad_norm_last", "", "none", "mean ||d loss_i / d x_T||: the error signal at the last step"),
    # --- translation ------------------------------------------------------------------------------
    *_stages("val test", "ppl", "", "min", "perplexity per target token: exp(loss)"),
    *_stages("val test", "bleu", "BLEU", "max", "sacrebleu corpus BLEU (greedy at val, beam search at test)"),
    MetricKey("test/bleu_greedy", "BLEU", "max", "sacrebleu corpus BLEU of greedy decoding on test: the figure to set "
              "beside greedy anchors"),
    # --- adversarial models -----------------------------------------------------------------------
    *_stages("train val test", "d_loss", "", "min",
             "what the discriminator(s) minimise: the seed's R = mean[-1/2 log D(x) - 1/2 log(1 - D(G(z)))] in "
             "nats (GAN, pix2pix), the sum of both discriminators' terms (CycleGAN, lsgan or bce)"),
    MetricKey("train/g_loss", "", "min", "what the generator(s) minimise, adversarial term plus L1/cycle terms"),
    MetricKey("train/d_fake", "fraction", "none", "mean D(G(z)) on the training fakes: 1/2 at the equilibrium"),
    MetricKey("train/r1", "", "none", "R1 penalty mean ||d logit / d x||^2 on the reals"),
    MetricKey("train/lr_factor", "", "none", "the learning-rate decay factor of the epoch"),
    *_stages("train val test", "l1", "L1/pixel", "min", "mean |G(edges) - image| per pixel, images in [0, 1]"),
    *_stages("val test", "ssim", "SSIM", "max", "structural similarity of G(edges) to the image"),
    *_stages("train val test", "cycle_l1", "L1/pixel", "min",
             "mean |G_BA(G_AB(a)) - a| + mean |G_AB(G_BA(b)) - b|, per pixel"),
    MetricKey("test/success_ab", "fraction", "max", "share of G_AB(test A) the frozen classifier labels domain B"),
    MetricKey("test/success_ba", "fraction", "max", "share of G_BA(test B) the frozen classifier labels domain A"),
    # --- sample quality (FID in a domain classifier's feature space, see lightning_modules/metrics/fid.py) ---
    *_stages("val test", "fid", "FID", "min", "Frechet distance of generated to real images (GAN test: mean of draws)"),
    MetricKey("test/fid_std", "FID", "none", "standard deviation of test/fid over the noise draws"),
    MetricKey("test/fid_floor", "FID", "none", "FID of real train images vs the same reference: the floor"),
    MetricKey("test/fid_floor_std", "FID", "none", "standard deviation of test/fid_floor over train slices"),
    MetricKey("test/fid_ratio", "", "min", "mean test/fid / mean test/fid_floor: 1 = as close as real images"),
    MetricKey("test/is", "", "max", "Inception-style score exp(E KL(p(y|x) || p(y))) in the classifier's space"),
    *_stages("val test", "cond_acc", "fraction", "max",
             "class-conditional generators: share of fakes of class y the frozen domain classifier calls y"),
    MetricKey("test/fid_ab", "FID", "min", "FID of G_AB(test A) vs test B"),
    MetricKey("test/fid_ba", "FID", "min", "FID of G_BA(test B) vs test A"),
    MetricKey("test/fid_ab_floor", "FID", "none", "FID of real train B images vs test B: test/fid_ab's floor"),
    MetricKey("test/fid_ba_floor", "FID", "none", "FID of real train A images vs test A: test/fid_ba's floor"),
    # --- likelihood models ------------------------------------------------------------------------
    *_stages("val test", "elbo", "nats", "max", "evidence lower bound per image, one z draw"),
    *_stages("val test", "recon", "nats", "min", "-log p(x|z) per image, one z draw"),
    *_stages("val test", "kl", "nats", "none", "KL(q(z|x) || p(z)) per image"),
    *_stages("val test", "kl_{i}", "nats", "none", "KL of stochastic stage i per image: near 0 = collapsed"),
    MetricKey("train/kl_weight", "", "none", "beta of the KL warm-up"),
    *_stages("train val test", "seed_loss", "nats", "min", "the seed VAE's 1/2||g(x)||^2 + 1/2||x - f(g(x)+N)||^2"),
    MetricKey("test/nll_k{k}", "nats", "min", "importance-weighted bound on -log p(x) per image with k samples"),
    MetricKey("test/mi", "nats", "none", "I(x; z) under q, x uniform over the first mi_images test images (<= log N)"),
    MetricKey("test/active_units", "", "none", "latent dims whose posterior mean varies with x (Cov > 0.01)"),
    MetricKey("test/enc_log_var", "", "none", "the encoder's mean log sigma^2 (0 = the prior's; -20 = its floor)"),
    MetricKey("test/bpd", "bits/dim", "min", "DDPM variational bound L_T + sum L_{t-1} + L_0 in bits per dimension"),
    MetricKey("test/bpd_prior", "bits/dim", "none", "L_T, the prior term of test/bpd"),
    MetricKey("test/bpd_diffusion", "bits/dim", "none", "sum of L_{t-1} for t >= 2, the denoising terms of test/bpd"),
    MetricKey("test/bpd_decoder", "bits/dim", "none", "L_0, the discretised decoder term of test/bpd"),
    MetricKey("train/decoder_nll", "nats/dim", "min", "L_0 per pixel on training images, what the DDPM's decoder head "
              "fits (the epsilon-network's x_0 estimate held fixed)"),
)


@lru_cache(maxsize=1)
def _index() -> tuple[dict[str, MetricKey], tuple[tuple[re.Pattern[str], MetricKey], ...]]:
    exact: dict[str, MetricKey] = {}
    patterns: list[tuple[re.Pattern[str], MetricKey]] = []
    for row in METRIC_KEYS:
        if _PLACEHOLDER.search(row.key):
            parts = _PLACEHOLDER.split(row.key)
            patterns.append((re.compile(r"\d+".join(re.escape(p) for p in parts)), row))
        else:
            exact[row.key] = row
    return exact, tuple(patterns)


def lookup(key: str) -> MetricKey | None:
    """The row of ``key``: an exact row, else a pattern's, else (for ``<base>_best``/``_std``) the base's."""
    exact, patterns = _index()
    if key in exact:
        return exact[key]
    for regex, row in patterns:
        if regex.fullmatch(key):
            return row
    for suffix in SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return lookup(key[: -len(suffix)])
    return None


def direction(key: str) -> str:
    """"min" or "max" when lower or higher is better, "none" for diagnostics and unknown keys."""
    row = lookup(key)
    return row.direction if row is not None else "none"


def label(key: str) -> str:
    """An axis label: the key with its unit, e.g. "val/bpc (bits/char)"; the bare key when it has none."""
    row = lookup(key)
    return f"{key} ({row.unit})" if row is not None and row.unit else key
