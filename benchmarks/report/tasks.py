"""The leaderboard's tasks: which rows are compared with each other, on which metrics, against which baseline.

A task is a kind of problem on one dataset (one data form): a char LM on tinyshakespeare, UPOS tagging on
EWT, the likelihood of binarized Fashion-MNIST images, the sample quality of Fashion-MNIST generators. A
dataset may host several tasks (Fashion-MNIST: a classifier, likelihood models of two data forms and
generators), and one experiment may sit in several (the DDPM: 8-bit likelihood and sample quality). A
task's table shows only its own metrics, so a table never ranks a classifier by FID or puts an MSE
beside a likelihood; its trivial baseline is the one ``archbench baselines`` computes for that task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Task:
    kind: str
    title: str
    columns: tuple[str, ...]  # metric keys (regular expressions), in the order shown; the first found ranks
    baseline: str | None = None  # the trivial baseline's kind (benchmarks/report/baselines.py), if any
    recipe: tuple[str, ...] = ()  # config leaves every row shows, e.g. the forget bias of a long-lag LSTM


LOSS_BEST = "val/loss_best"
ENCODER = ("test/mi", "test/active_units", "test/enc_log_var")  # what an autoencoder's encoder kept (diagnostics)
LATENT = ("model_args.variant", "model_args.objective", "model_args.latent_dim", "model_args.latent_dims")
TASKS: dict[str, Task] = {t.kind: t for t in (
    Task("char_lm", "Character-level language model",
         ("test/loss", "test/bpc", "test/loss_valtest", LOSS_BEST), "char_unigram",
         ("model_args.cell", "model_args.num_layers", "model_args.hidden_size")),
    Task("image_classification", "Image classification", ("test/acc", "test/loss", LOSS_BEST), "majority_class"),
    Task("frame_labels", "Frame-by-frame labels", ("test/acc", "test/loss", LOSS_BEST), "majority_class",
         ("model_args.recurrent", "model_args.cell")),
    Task("sequence_classification", "Long-lag memory (class of the first symbol)",
         ("test/acc", "test/loss", "test/grad_norm_first", "test/grad_norm_last", LOSS_BEST), "majority_class",
         ("model_args.cell", "model_args.forget_bias", "data_args.lag", "model_args.hidden_size")),
    Task("upos", "UPOS tagging", ("test/acc", "test/loss", LOSS_BEST), "frequent_tag"),
    Task("translation", "Translation", ("test/bleu", "test/bleu_greedy", "test/ppl", "test/loss", LOSS_BEST), None,
         ("model_args.attention",)),
    Task("likelihood_binarized", "Likelihood of binarized images",
         (r"test/nll_k500", r"test/nll_k\d+", "test/elbo", "test/recon", "test/kl", r"test/kl_\d+", "test/loss",
          LOSS_BEST, *ENCODER), "bernoulli_pixels", LATENT),
    Task("likelihood_continuous", "Likelihood of continuous pixels (Gaussian decoder)",
         (r"test/nll_k500", r"test/nll_k\d+", "test/elbo", "test/recon", "test/kl", "test/seed_loss", "test/loss",
          LOSS_BEST, *ENCODER), None, LATENT),
    Task("likelihood_8bit", "Likelihood of 8-bit images",
         ("test/bpd", "test/bpd_prior", "test/bpd_diffusion", "test/bpd_decoder"), "categorical_pixels"),
    Task("sample_quality", "Sample quality of image generators (FID in the domain classifier's features)",
         ("test/fid_ratio", "test/fid", "test/fid_floor", "test/is"), "fid_floor", ("model_args.g_loss",)),
    Task("conditional_generation", "Class-conditional generation (the class the domain classifier sees)",
         ("test/cond_acc", "test/fid_ratio", "test/fid", "test/is")),
    Task("paired_translation", "Paired image translation (edges to images)",
         ("test/fid", "test/fid_floor", "test/l1", "test/ssim"), "fid_floor", ("model_args.lam",)),
    Task("unpaired_translation", "Unpaired image translation",
         ("test/fid_ab", "test/fid_ba", "test/fid_ab_floor", "test/fid_ba_floor", "test/success_ab", "test/success_ba",
          "test/cycle_l1"), None, ("model_args.lam_cycle",)),
)}
BY_MODEL = {"char_lm": "char_lm", "classifier": "image_classification", "frame_labeller": "frame_labels",
            "sequence_classifier": "sequence_classification", "tagger": "upos", "seq2seq": "translation",
            "ddpm": "likelihood_8bit", "pix2pix": "paired_translation", "cyclegan": "unpaired_translation",
            "cgan": "conditional_generation"}
LIKELIHOOD_MODELS = ("vae", "hvae")
TRANSLATORS = ("pix2pix", "cyclegan")  # their FIDs judge translations, not free samples


def binarized(settings: dict[str, Any] | None, config: dict[str, Any] | None) -> bool:
    """Whether the run saw binarized images: its recorded data settings, else its config's data_args."""
    data = (settings or {}).get("data")
    if isinstance(data, dict) and "binarize" in data:
        return bool(data["binarize"])
    return bool(((config or {}).get("data_args") or {}).get("binarize"))


def task_kinds(model: str | None, binarize: bool, metrics: set[str]) -> list[str]:
    """The kinds of task one experiment belongs to (a model the table does not know gets a kind of its own)."""
    kinds = []
    if model in LIKELIHOOD_MODELS:
        kinds.append("likelihood_binarized" if binarize else "likelihood_continuous")
    elif model in BY_MODEL:
        kinds.append(BY_MODEL[model])
    if "test/fid" in metrics and model not in TRANSLATORS:
        kinds.append("sample_quality")
    return kinds or [f"model:{model}"]


def task_of(kind: str) -> Task:
    """The task of a kind; an unknown model's kind shows every test metric and best validation value."""
    if kind in TASKS:
        return TASKS[kind]
    return Task(kind, f"{kind.removeprefix('model:')}", (r"test/.*", r".*_best"))


def task_id(kind: str, data: str) -> str:
    """The id of a task's table (an HTML id and a file-name part)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{kind}-{data}")


def columns_for(task: Task, keys: set[str]) -> list[str]:
    """The task's metric keys among ``keys``, in the task's order (each pattern's matches sorted)."""
    out: list[str] = []
    for pattern in task.columns:
        for key in sorted(k for k in keys if re.fullmatch(pattern, k) and not k.endswith("_std")):
            if key not in out:
                out.append(key)
    return out
