"""What the suite needs from a datamodule, as a Protocol: benchmarks/ builds models and provenance from it.

- ``MODEL_ARGS``: the model arguments the data decides (vocabulary, image shape...); an experiment may not
  set them, and ``model_args()`` returns exactly these keys.
- ``content_hash()``: sha256 over the data as served and the settings that shape it: equal hashes, equal data.
- ``describe()``: a JSON-able record of the source, the splits and the split rule.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SuiteDataModule(Protocol):
    MODEL_ARGS: tuple[str, ...]

    def model_args(self) -> dict[str, Any]: ...

    def content_hash(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...
