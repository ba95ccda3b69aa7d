"""The class names `archbench sample --label` accepts beside the class numbers, per dataset, in the dataset's own
label order. A dataset without an entry takes numbers only (the digits' names are their numbers)."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.core.errors import ArchbenchError

# Fashion-MNIST's labels 0..9, as its README names them.
FASHION_MNIST = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")
CLASS_NAMES: dict[str, tuple[str, ...]] = {"fashion_mnist": FASHION_MNIST}


def _key(text: str) -> str:
    """What a name is matched on: letters and digits, lower case ("Ankle boot", "ankle-boot", "ANKLE_BOOT" agree)."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def listing(names: Sequence[str] | None, classes: int) -> str:
    """ "0 T-shirt/top, 1 Trouser, ..." when the names are known, else "0..9"."""
    if not names:
        return f"0..{classes - 1}"
    return ", ".join(f"{k} {n}" for k, n in enumerate(names))


def resolve_label(text: str, names: Sequence[str] | None, classes: int, name: str) -> int:
    """The class number ``text`` asks for: a number in 0..classes-1, or one of ``names`` (or one part of a name
    with a slash: "T-shirt", "top"). Anything else is one line listing the classes."""
    text = text.strip()
    try:
        number: int | None = int(text)
    except ValueError:
        number = None
    if number is None and names:
        wanted = _key(text)
        hits = {k for k, n in enumerate(names) if wanted and wanted in {_key(n), *(_key(p) for p in n.split("/"))}}
        number = hits.pop() if len(hits) == 1 else None
    if number is None or not 0 <= number < classes:
        raise ArchbenchError(f"--label {text!r}: {name} draws the classes {listing(names, classes)}; "
                             f"give one of those numbers" + (" or names" if names else ""))
    return number
