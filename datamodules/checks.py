"""Argument checks shared by every datamodule: one message per kind of mistake.

Each raises ``ValueError("<name> must be ..., got <value>")``: one line that names the argument, which
benchmarks/ turns into the experiment's one-line error. bool is an int subclass, so every numeric check
refuses True/False explicitly: ``batch_size: true`` in a params file is a bug, not 1.
"""

from __future__ import annotations


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int) -> None:
    if not _is_int(value) or value < minimum:  # type: ignore[operator]
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_optional_int(name: str, value: object, minimum: int) -> None:
    """None means "not set" (no limit, no padding...); anything else must pass ``check_int``."""
    if value is not None:
        check_int(name, value, minimum)


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def check_number(name: str, value: object, minimum: float) -> None:
    if not _is_number(value) or value < minimum:  # type: ignore[operator]
        raise ValueError(f"{name} must be a number >= {minimum}, got {value!r}")


def check_fraction(name: str, value: object, upper_open: bool) -> None:
    """A probability-like number in [0, 1], or [0, 1) when ``upper_open``."""
    ok = _is_number(value) and 0 <= value and (value < 1 if upper_open else value <= 1)  # type: ignore[operator]
    if not ok:
        raise ValueError(f"{name} must be in [0, 1{')' if upper_open else ']'}, got {value!r}")


def check_open_unit(name: str, value: object) -> None:
    """A threshold strictly between 0 and 1."""
    if not _is_number(value) or not 0 < value < 1:  # type: ignore[operator]
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")


def check_label(name: str, value: object, num_classes: int) -> None:
    if not _is_int(value) or not 0 <= value < num_classes:  # type: ignore[operator]
        raise ValueError(f"{name} must be a label in 0..{num_classes - 1}, got {value!r}")


def check_classes(classes: object, num_classes: int) -> None:
    """A non-empty list of distinct class labels in 0..num_classes-1."""
    ok = isinstance(classes, (list, tuple)) and classes and len(set(classes)) == len(classes)
    if not ok or not all(_is_int(c) and 0 <= c < num_classes for c in classes):  # type: ignore[union-attr]
        raise ValueError(f"classes must be a non-empty list of distinct labels 0..{num_classes - 1}, got {classes!r}")
