"""Image data for the generative families (GAN, pix2pix, CycleGAN, VAEs, diffusion) and the domain classifier.

Fashion-MNIST (Zalando: 28x28 grey, 10 classes, 60000 train / 10000 test) is the real benchmark;
scikit-learn's 8x8 digits ship inside scikit-learn and are the tiny default that needs no files.
Batches are ``(images, labels)``: images float32 [batch, 1, H, W] in [0, 1], labels int64 [batch]
holding the original class ids (a ``classes`` filter never renumbers them, so num_classes stays 10).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datamodules.checks import check_bool, check_classes, check_int, check_optional_int
# FASHION_SYSTEM_DIR, load_fashion_mnist and read_idx are imported from here by callers and tests.
from datamodules.fashion_files import (  # noqa: F401
    FASHION_PACKAGE,
    FASHION_SYSTEM_DIR,
    FASHION_URL,
    FashionData,
    fashion_mnist,
    load_fashion_mnist,
    read_idx,
)
from datamodules.loaders import SplitLoaders, resolve_workers

SPLIT_SEED = 1234  # the fixed permutation behind every train/val split: never tied to the run's seed
BINARIZE_THRESHOLD = 0.5
Split = tuple[torch.Tensor, torch.Tensor]


@functools.lru_cache(maxsize=1)
def load_digits_images() -> Split:
    """scikit-learn's 8x8 digits: float32 [1797, 8, 8] in [0, 1] (the raw 0..16 counts / 16), int64 [1797]."""
    from sklearn.datasets import load_digits  # lazy: sklearn costs a second to import

    digits = load_digits()
    return torch.from_numpy(digits.images).float() / 16, torch.from_numpy(digits.target).long()


def _permutation(n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))


def train_val_split(train: Split, val_size: int) -> tuple[Split, Split]:
    """Fashion-MNIST's one validation slice: the last ``val_size`` of the official train set permuted by
    ``SPLIT_SEED``; the rest train. Every Fashion-MNIST datamodule (images, pairs, videos) cuts it here."""
    images, labels = train  # [N, ...], [N]
    perm = _permutation(len(labels))
    n_train = len(labels) - val_size
    head, tail = perm[:n_train], perm[n_train:]
    return (images[head], labels[head]), (images[tail], labels[tail])


# --- datasets and modules -------------------------------------------------------------------------
class ImageDataset(Dataset[Split]):
    """Images kept as uint8 (a quarter of float32's memory) and scaled to [0, 1] floats per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, scale: float) -> None:
        self.images = images  # uint8 [N, 1, H, W]
        self.labels = labels  # int64 [N]
        self.scale = scale

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Split:
        return self.images[i].float() / self.scale, self.labels[i]  # [1, H, W], []


class ImageDataModule(SplitLoaders, pl.LightningDataModule):
    """Shared splitting, filtering and loaders; subclasses say where the raw splits come from.

    Order of operations per split: fixed split -> ``classes`` filter -> ``limit`` (first N) -> binarize
    -> zero-pad. Filtering after splitting keeps every filtered split a subset of the unfiltered one.
    ``binarize`` is a fixed threshold (pixel > 0.5 -> 1, else 0), not the stochastic binarization of
    some Bernoulli-VAE papers: the data stay deterministic, so NLLs compare only with fixed-binarized numbers.
    """

    NAME = ""
    SIZE = 0  # native height = width
    POOL = 0  # images the train/val split draws from: val_size must leave some for train
    NUM_CLASSES = 10
    MODEL_ARGS = ("image_shape", "num_classes")

    def __init__(self, batch_size: int, val_size: int, binarize: bool, classes: list[int] | None,
                 limit: int | None, data_dir: str | None, num_workers: int | None, pad_to: int | None) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_int("val_size", val_size, 1)
        if val_size >= self.POOL:
            raise ValueError(f"val_size must be < {self.POOL} to leave training images, got {val_size}")
        check_bool("binarize", binarize)
        if classes is not None:
            check_classes(classes, self.NUM_CLASSES)
            classes = list(classes)
        check_optional_int("limit", limit, 1)
        check_optional_int("pad_to", pad_to, self.SIZE)
        self.batch_size, self.val_size, self.binarize, self.classes = batch_size, val_size, binarize, classes
        self.limit, self.data_dir, self.pad_to = limit, data_dir, pad_to
        self.num_workers = resolve_workers(num_workers)
        self._splits: dict[str, Split] = {}  # name -> (uint8 [N, 1, H, W], int64 [N])
        self._datasets: dict[str, Dataset[Any]] = {}

    # --- what subclasses provide ------------------------------------------------------------------
    def _raw_splits(self) -> tuple[dict[str, Split], float]:
        """{"train"|"val"|"test": (uint8 [N, H, W], int64 [N])} and the value that maps to 1.0."""
        raise NotImplementedError

    def _raw_digest(self) -> str:
        raise NotImplementedError

    def _source(self) -> dict[str, Any]:
        raise NotImplementedError

    def _split_rule(self) -> str:
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        return {"val_size": self.val_size, "binarize": self.binarize, "classes": self.classes,
                "limit": self.limit, "pad_to": self.pad_to, "split_seed": SPLIT_SEED}

    def _make_dataset(self, name: str, images: torch.Tensor, labels: torch.Tensor) -> Dataset[Any]:
        return ImageDataset(images, labels, self._scale)

    # --- splits -----------------------------------------------------------------------------------
    @property
    def image_shape(self) -> list[int]:
        side = self.pad_to or self.SIZE
        return [1, side, side]

    def model_args(self) -> dict[str, Any]:
        return {"image_shape": self.image_shape, "num_classes": self.NUM_CLASSES}

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        raw, scale = self._raw_splits()
        self._scale = 1.0 if self.binarize else scale
        for name, (images, labels) in raw.items():
            if self.classes is not None:
                keep = torch.isin(labels, torch.tensor(self.classes))
                images, labels = images[keep], labels[keep]
            if self.limit is not None:
                images, labels = images[: self.limit], labels[: self.limit]
            images = images.unsqueeze(1)  # [N, 1, H, W]
            if self.binarize:
                # x / scale > t  <=>  x > floor(scale * t) for integer x: no float copy of 55000 images.
                images = (images > math.floor(scale * BINARIZE_THRESHOLD)).to(torch.uint8)
            if self.pad_to is not None:
                before = (self.pad_to - self.SIZE) // 2
                after = self.pad_to - self.SIZE - before
                images = F.pad(images, (before, after, before, after))  # [N, 1, pad_to, pad_to], zeros
            self._splits[name] = (images, labels)
            self._datasets[name] = self._make_dataset(name, images, labels)

    def images(self, split: str) -> torch.Tensor:
        """A whole split as float32 [N, 1, H, W] in [0, 1], e.g. the real set of an FID."""
        self.setup()
        return self._splits[split][0].float() / self._scale

    def labels(self, split: str) -> torch.Tensor:
        self.setup()
        return self._splits[split][1]

    # --- loaders ----------------------------------------------------------------------------------
    def _dataset(self, split: str) -> Dataset[Any]:
        self.setup()
        return self._datasets[split]

    # --- provenance -------------------------------------------------------------------------------
    def content_hash(self) -> str:
        """sha256 over the decoded source data and the split settings: equal hashes mean equal splits."""
        settings = {"class": type(self).__name__, "data": self._raw_digest(), **self._settings()}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        self.setup()
        return {
            "name": self.NAME,
            "source": self._source(),
            "splits": {name: len(ds) for name, ds in self._datasets.items()},  # type: ignore[arg-type]
            "split_rule": self._split_rule(),
            "binarize": f"pixel > {BINARIZE_THRESHOLD} -> 1 (fixed threshold)" if self.binarize else False,
            "classes": self.classes,
            "limit": self.limit,
            "image_shape": self.image_shape,
            "pad_to": self.pad_to,
        }


class _FashionBase(ImageDataModule):
    """Fashion-MNIST splits: val = a fixed-permutation slice of the official train set, test = official test."""

    NAME = "fashion_mnist"
    SIZE = 28
    POOL = 60000
    download = True

    def _data(self) -> FashionData:
        return fashion_mnist(self.data_dir, self.download)

    def prepare_data(self) -> None:
        self._data()  # download on one process and fail early with the one-line DataNotFoundError

    def _raw_splits(self) -> tuple[dict[str, Split], float]:
        data = self._data()
        train, val = train_val_split(data.splits["train"], self.val_size)
        return {"train": train, "val": val, "test": data.splits["test"]}, 255.0

    def _raw_digest(self) -> str:
        return json.dumps(self._data().digests, sort_keys=True)

    def _source(self) -> dict[str, Any]:
        return {"paths": self._data().paths, "url": FASHION_URL, "package": FASHION_PACKAGE}

    def _split_rule(self) -> str:
        return (f"official train permuted by torch.randperm(60000, Generator seeded {SPLIT_SEED}): first "
                f"{60000 - self.val_size} train, last {self.val_size} val; test = official test set")


class FashionMNISTDataModule(_FashionBase):
    """Zalando's Fashion-MNIST, 28x28 (pad_to=32 for U-Nets)."""

    def __init__(self, batch_size: int = 128, val_size: int = 5000, binarize: bool = False,
                 classes: list[int] | None = None, limit: int | None = None, data_dir: str | None = None,
                 num_workers: int | None = None, pad_to: int | None = None, download: bool = True) -> None:
        super().__init__(batch_size, val_size, binarize, classes, limit, data_dir, num_workers, pad_to)
        check_bool("download", download)
        self.download = download
        self.save_hyperparameters()


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 8x8 digits (1797 images): the embedded tiny default, no files needed."""

    NAME = "digits"
    SIZE = 8
    TEST_FRACTION = 0.2
    POOL = 1797 - int(1797 * TEST_FRACTION)

    def __init__(self, batch_size: int = 128, val_size: int = 200, binarize: bool = False,
                 classes: list[int] | None = None, limit: int | None = None, data_dir: str | None = None,
                 num_workers: int | None = None, pad_to: int | None = None) -> None:
        super().__init__(batch_size, val_size, binarize, classes, limit, data_dir, num_workers, pad_to)
        self.save_hyperparameters()

    def _raw_splits(self) -> tuple[dict[str, Split], float]:
        images, labels = load_digits_images()
        counts = (images * 16).round().to(torch.uint8)  # [1797, 8, 8], the original 0..16 values
        n = len(labels)
        n_test = int(n * self.TEST_FRACTION)
        perm = _permutation(n)
        bounds = {"train": (0, n - n_test - self.val_size), "val": (n - n_test - self.val_size, n - n_test),
                  "test": (n - n_test, n)}
        return {k: (counts[perm[lo:hi]], labels[perm[lo:hi]]) for k, (lo, hi) in bounds.items()}, 16.0

    def _raw_digest(self) -> str:
        images, labels = load_digits_images()
        return hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()

    def _source(self) -> dict[str, Any]:
        return {"paths": {"digits": "sklearn.datasets.load_digits"}}

    def _split_rule(self) -> str:
        return (f"torch.randperm(1797, Generator seeded {SPLIT_SEED}): last {int(1797 * self.TEST_FRACTION)} test, "
                f"the {self.val_size} before them val, the rest train")
