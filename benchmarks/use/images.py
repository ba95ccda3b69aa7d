"""Image grids from the suite's generators, written as PNG files a user can open.

The grid is the images tiled as the report's figures tile them (lightning_modules.figures.tile: a square, one
pixel of white between images), written pixel for pixel with Pillow, each image pixel ``scale`` x ``scale``:
16 images of 28x28 at scale 2 make a (4 * 29 + 1) * 2 = 234 pixel square.

A class-conditional generator is any model whose ``generate`` takes a ``label`` (the cgan):
``generate(n: int, seed: int, label: int | None = None) -> images [n, C, H, W] in [0, 1]``, with the number of
classes in ``hparams.num_classes``. ``--label K`` draws every image of the grid from class K.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from lightning_modules.contracts import is_conditional


def draw(model: Any, count: int, seed: int, label: int | None, name: str) -> Any:
    """``count`` images [count, C, H, W] in [0, 1], of class ``label`` when given (conditional models only)."""
    from benchmarks.run.model_logging import generate_images

    if count < 1:
        raise ArchbenchError(f"--count {count}: give at least one image")
    if label is None:
        return generate_images(model, count, seed)
    check_conditional(model, name)
    classes = int(model.hparams.num_classes)
    if not 0 <= label < classes:
        raise ArchbenchError(f"--label {label}: {name} has classes 0..{classes - 1}")
    return generate_images(model, count, seed, label)


def check_conditional(model: Any, name: str) -> None:
    """One line for --label given to a generator that takes no class."""
    if not is_conditional(model):
        raise ArchbenchError(f"{name} is not class-conditional: drop --label (a conditional generator, e.g. the "
                             f"cgan, takes generate(n, seed, label=K))")


def grid_size(count: int, height: int, width: int, scale: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that ``count`` images of height x width make."""
    ncol = math.ceil(math.sqrt(count))
    rows = math.ceil(count / ncol)
    return (ncol * (width + 1) + 1) * scale, (rows * (height + 1) + 1) * scale


def write_samples(model: Any, count: int, seed: int, label: int | None, out: Path, scale: int, name: str) -> Path:
    import numpy as np
    from PIL import Image

    from lightning_modules.figures import tile

    if scale < 1:
        raise ArchbenchError(f"--scale {scale}: give a whole number >= 1")
    if out.suffix.lower() != ".png":
        raise ArchbenchError(f"--out {out}: the grid is written as PNG; name a .png file")
    images = draw(model, count, seed, label, name)  # [count, C, H, W]
    array = tile(images, math.ceil(math.sqrt(count)))  # [rows, cols] grey or [rows, cols, 3]
    pixels = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(out)
    return out
