"""What the suite needs from a model, as Protocols: benchmarks/run/ reads these, the contract test checks them.

- ``monitor``/``monitor_mode``: the validation key the checkpoint callback keeps the best epoch of, and
  ``"min"`` or ``"max"``; the mode must agree with the key's direction in ``benchmarks.core.metric_keys``.
- ``metric_settings()``: what every logged number depends on (units, sample counts, extractor hashes,
  tokenizers...), stored beside the numbers; ``{}`` when nothing applies.
- ``alternates_networks`` (``AlternatingModel``): True for a model that updates its networks in turn (a GAN's D step, then its G
  step), so each step leaves one network without gradients, which plain DDP refuses.
- ``fallback_monitor``: the key an image model keeps the best epoch of when it has no FID extractor (its
  ``monitor`` is then this key).
- ``make_samples()`` (optional, ``MakesSamples``): ``{file name: text or matplotlib Figure}`` after each
  validation epoch. It only builds them: the suite's callback writes and uploads them, on rank 0.
- ``generate(n, seed)`` (optional, ``GeneratesImages``): a generator drawn from a seed (the GANs), ``n`` images in
  [0, 1]; a class-conditional one (``is_conditional``) also takes ``label=K``.

``SuiteModelDefaults`` holds the default of every attribute; a model inherits it and overrides what differs.
Until every model does, ``declared`` reads an attribute as the model declares it, else that default: the one
place where a default is supplied (no ``getattr(model, name, default)`` in the suite).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SuiteModel(Protocol):
    """What every model has."""

    monitor: str
    monitor_mode: str

    def metric_settings(self) -> dict[str, Any]: ...


@runtime_checkable
class AlternatingModel(Protocol):
    """What an adversarial model adds (GAN, pix2pix, CycleGAN); the others get SuiteModelDefaults' values."""

    alternates_networks: bool
    fallback_monitor: str


@runtime_checkable
class MakesSamples(Protocol):
    def make_samples(self) -> dict[str, Any]: ...


@runtime_checkable
class GeneratesImages(Protocol):
    def generate(self, n: int, seed: int) -> Any: ...


def is_conditional(model: Any) -> bool:
    """A class-conditional generator (an instance or its class): its ``generate`` takes ``label``."""
    return isinstance(model, GeneratesImages) and "label" in inspect.signature(model.generate).parameters


class SuiteModelDefaults:
    """The defaults of ``SuiteModel``'s attributes, for a model to inherit (``class CharLM(SuiteModelDefaults,
    pl.LightningModule)``)."""

    monitor: str = "val/loss"
    monitor_mode: str = "min"
    alternates_networks: bool = False
    fallback_monitor: str = "val/loss"

    def metric_settings(self) -> dict[str, Any]:
        return {}


DECLARED = ("monitor", "monitor_mode", "alternates_networks", "fallback_monitor")


def declared(model: Any, name: str) -> Any:
    """``SuiteModel`` attribute ``name`` of a model (an instance or its class): its own, else the default of
    ``SuiteModelDefaults``. Only declared attributes can be read: a typo is an error, not a silent default."""
    if name not in DECLARED:
        raise AttributeError(f"{name!r} is not an attribute of the SuiteModel contract ({', '.join(DECLARED)})")
    owner = model if isinstance(model, type) else type(model)
    for klass in owner.__mro__:
        if name in vars(klass):
            value = vars(klass)[name]
            if isinstance(value, property):  # e.g. an image model's monitor, which depends on its arguments
                return value.fget(model) if not isinstance(model, type) else vars(SuiteModelDefaults)[name]
            return value
    return vars(SuiteModelDefaults)[name]


def model_settings(model: SuiteModel) -> dict[str, Any]:
    """What the model's numbers depend on (``metric_settings()``), a copy the caller may extend."""
    return dict(model.metric_settings())


def missing_defaults(model_cls: type) -> list[str]:
    """The declared attributes a model class leaves to ``declared``'s defaults (inheriting
    SuiteModelDefaults gives it all of them)."""
    return [name for name in DECLARED if not any(name in vars(k) for k in model_cls.__mro__)]
