"""What the suite needs from a model, as Protocols: benchmarks/run/train.py reads these, the contract test checks them.

- ``monitor``/``monitor_mode``: the validation key the checkpoint callback keeps the best epoch of, and
  ``"min"`` or ``"max"``; the mode must agree with the key's direction in ``benchmarks.core.metric_keys``.
- ``metric_settings()``: what every logged number depends on (units, sample counts, extractor hashes,
  tokenizers...), stored beside the numbers; ``{}`` when nothing applies.
- ``make_samples()`` (optional, ``MakesSamples``): ``{file name: text or matplotlib Figure}`` after each
  validation epoch. It only builds them: the suite's callback writes and uploads them, on rank 0.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SuiteModel(Protocol):
    monitor: str
    monitor_mode: str

    def metric_settings(self) -> dict[str, Any]: ...


@runtime_checkable
class MakesSamples(Protocol):
    def make_samples(self) -> dict[str, Any]: ...
