"""The metric vocabulary as the report uses it: benchmarks.core.metric_keys when present, else a fallback with
the same three functions (lookup, direction, label), so the report never guesses a direction silently."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class MetricKey:
    key: str
    unit: str
    direction: str  # "min" | "max" | "none"
    description: str


# Base names (the part after "train/", "val/" or "test/") the suite logs; the vocabulary module supersedes it.
_FALLBACK: tuple[tuple[str, str, str, str], ...] = (
    ("loss", "", "min", "the training objective; its unit is the model's loss_unit setting"),
    ("bpc", "bits/char", "min", "cross-entropy in bits per character"),
    ("bpd", "bits/dim", "min", "negative log-likelihood in bits per dimension"),
    ("bleu", "BLEU", "max", "corpus BLEU (sacreBLEU)"),
    ("acc", "fraction", "max", "accuracy"),
    ("fid", "FID", "min", "Frechet distance in the domain classifier's feature space"),
    ("fid_floor", "FID", "none", "FID of real training images: the floor a generator can reach"),
    ("fid_ratio", "", "min", "FID over its floor"),
    ("is", "", "max", "inception score in the domain classifier"),
    ("nll_nats", "nats", "min", "negative log-likelihood"),
    (r"nll_k\d+", "nats", "min", "importance-weighted negative log-likelihood"),
    ("elbo", "nats", "none", "evidence lower bound"),
    ("l1", "", "min", "mean absolute error"),
    ("grad_norm_first", "", "none", "gradient norm at the first step"),
)


def _module() -> ModuleType | None:
    """benchmarks.core.metric_keys, imported on first use; None while the vocabulary module does not exist."""
    try:
        return importlib.import_module("benchmarks.core.metric_keys")
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks.core.metric_keys":
            raise  # the module exists but one of its own imports failed: that is a bug to see
        return None


def _base(key: str) -> str:
    name = key.split("/", 1)[-1]
    for suffix in ("_best", "_std"):
        name = name.removesuffix(suffix)
    return name


def lookup(key: str) -> Any:
    mod = _module()
    if mod is not None:
        return mod.lookup(key)
    base = _base(key)
    for name, unit, direction_, description in _FALLBACK:
        if re.fullmatch(name, base):
            return MetricKey(key, unit, "none" if key.endswith("_std") else direction_, description)
    return None


def direction(key: str) -> str:
    """'min', 'max' or 'none' (unknown keys: 'none', so nothing is ranked on a guess)."""
    mod = _module()
    if mod is not None:
        return str(mod.direction(key))
    found = lookup(key)
    return found.direction if found is not None else "none"


def label(key: str) -> str:
    """The axis label with its unit, e.g. 'val/loss (nats)'."""
    mod = _module()
    if mod is not None:
        return str(mod.label(key))
    found = lookup(key)
    return f"{key} ({found.unit})" if found is not None and found.unit else key


def label_with(key: str, settings: list[dict[str, Any]]) -> str:
    """label(key), plus the models' own loss unit for a loss key (its unit is each model's ``loss_unit``
    setting), when every model shown agrees on it."""
    text = label(key)
    units = {s.get("loss_unit") for s in settings if isinstance(s, dict) and s.get("loss_unit")}
    if text == key and "loss" in key.split("/", 1)[-1] and len(units) == 1:
        return f"{key} ({units.pop()})"
    return text
