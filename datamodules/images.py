"""Image data for the generative families (GAN, pix2pix, CycleGAN, VAEs, diffusion) and the domain classifier.

Fashion-MNIST (Zalando: 28x28 grey, 10 classes, 60000 train / 10000 test) is the real benchmark;
scikit-learn's 8x8 digits ship inside scikit-learn and are the tiny default that needs no files.
Batches are ``(images, labels)``: images float32 [batch, 1, H, W] in [0, 1], labels int64 [batch]
holding the original class ids (a ``classes`` filter never renumbers them, so num_classes stays 10).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.sampling import EpochShuffleSampler
from datamodules.sources import ChecksumError, RemoteFile, data_dirs, locate, sha256_file

FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_PACKAGE = "dataset-fashion-mnist"
# name -> (sha256 of Zalando's download, sha256 of Debian's dataset-fashion-mnist 0.0~git20200523 copy).
# Debian recompressed the files: same idx content (same uncompressed sizes), other gzip bytes (sizes and
# md5s differ from torchvision's), so a local copy is trusted if it is either one; downloads must be Zalando's.
FASHION_FILES: dict[str, tuple[str, str]] = {
    "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                   "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
    "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                                   "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
    "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                                  "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
    "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                                  "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
}
_FASHION_SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                   "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_IDX_MAGIC = {1: 0x801, 3: 0x803}  # labels [N]; images [N, rows, cols]; both unsigned bytes
SPLIT_SEED = 1234  # the fixed permutation behind every train/val split: never tied to the run's seed
BINARIZE_THRESHOLD = 0.5
Split = tuple[torch.Tensor, torch.Tensor]


class FashionData(NamedTuple):
    splits: dict[str, Split]  # "train"/"test" -> (uint8 [N, 28, 28], int64 [N])
    paths: dict[str, str]  # file name -> the path it was read from
    digests: dict[str, str]  # file name -> sha256 of the *decompressed* idx bytes (same for both copies)


# --- Fashion-MNIST files --------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _known_copy(path: Path, size: int, mtime_ns: int) -> None:
    # Keyed on size and mtime so a replaced file is hashed again, an unchanged one only once per process.
    upstream, debian = FASHION_FILES[path.name]
    actual = sha256_file(path)
    if actual not in (upstream, debian):
        raise ChecksumError(f"checksum mismatch for {path}: expected sha256 {upstream} (Zalando) or {debian} "
                            f"(Debian), got {actual} (corrupt or different version; delete or replace it)")


def _locate_fashion(name: str, data_dir: str | None, system_dir: Path | None, download: bool) -> Path:
    """Data dirs, then the system package, then Zalando's download: ``locate``'s order, with two trusted hashes."""
    remote = RemoteFile(relpath=f"fashion-mnist/{name}", url=FASHION_URL + name, sha256=FASHION_FILES[name][0],
                        package=FASHION_PACKAGE)
    system = [system_dir / name] if system_dir is not None else []
    for path in [d / remote.relpath for d in data_dirs(data_dir)] + system:
        if path.is_file():
            stat = path.stat()
            _known_copy(path.resolve(), stat.st_size, stat.st_mtime_ns)
            return path
    # Nothing local: locate downloads (verifying Zalando's hash) or raises its one-line DataNotFoundError.
    return locate(remote, data_dir, system_paths=system, download=download)


def read_idx(path: Path, ndim: int) -> tuple[np.ndarray, str]:
    """Decode a gzipped idx file of unsigned bytes; returns the array and the sha256 of the decoded bytes."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError; truncation is EOFError
        raise ValueError(f"{path}: not a valid gzip file ({' '.join(str(err).split())})") from None
    header = 4 + 4 * ndim
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != _IDX_MAGIC[ndim]:
        raise ValueError(f"{path}: not an idx file of {ndim}-d unsigned bytes (bad magic number)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + int(np.prod(dims)):
        raise ValueError(f"{path}: idx header says {dims} but holds {len(raw) - header} bytes")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()  # copy: frombuffer is read-only
    return array, hashlib.sha256(raw).hexdigest()


@functools.lru_cache(maxsize=2)
def _decode_fashion(paths: tuple[Path, ...]) -> FashionData:
    # Keyed on the resolved paths: several datamodules and tests share one decode (~1 s) per process.
    # Callers must not modify the returned tensors in place.
    by_name = {p.name: p for p in paths}
    splits, digests = {}, {}
    for split, (images_name, labels_name) in _FASHION_SPLITS.items():
        images, digests[images_name] = read_idx(by_name[images_name], 3)
        labels, digests[labels_name] = read_idx(by_name[labels_name], 1)
        if len(images) != len(labels):
            raise ValueError(f"{by_name[labels_name]}: {len(labels)} labels for {len(images)} images")
        splits[split] = (torch.from_numpy(images), torch.from_numpy(labels).long())
    return FashionData(splits, {p.name: str(p) for p in paths}, digests)


def fashion_mnist(data_dir: str | None = None, download: bool = True,
                  system_dir: Path | None = FASHION_SYSTEM_DIR) -> FashionData:
    paths = tuple(_locate_fashion(name, data_dir, system_dir, download).resolve() for name in FASHION_FILES)
    return _decode_fashion(paths)


def load_fashion_mnist(data_dir: str | None = None, download: bool = True,
                       system_dir: Path | None = FASHION_SYSTEM_DIR) -> dict[str, Split]:
    """{"train": (uint8 [60000, 28, 28], int64 [60000]), "test": (uint8 [10000, 28, 28], int64 [10000])}."""
    return fashion_mnist(data_dir, download, system_dir).splits


@functools.lru_cache(maxsize=1)
def load_digits_images() -> Split:
    """scikit-learn's 8x8 digits: float32 [1797, 8, 8] in [0, 1] (the raw 0..16 counts / 16), int64 [1797]."""
    from sklearn.datasets import load_digits  # lazy: sklearn costs a second to import

    digits = load_digits()
    return torch.from_numpy(digits.images).float() / 16, torch.from_numpy(digits.target).long()


def _permutation(n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))


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


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_classes(classes: object, num_classes: int) -> None:
    ok = isinstance(classes, (list, tuple)) and classes and len(set(classes)) == len(classes)
    if not ok or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < num_classes for c in classes):
        raise ValueError(f"classes must be a non-empty list of distinct labels 0..{num_classes - 1}, got {classes!r}")


class ImageDataModule(pl.LightningDataModule):
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
                 limit: int | None, data_dir: str | None, num_workers: int, pad_to: int | None) -> None:
        super().__init__()
        _check_int("batch_size", batch_size, 1)
        _check_int("num_workers", num_workers, 0)
        _check_int("val_size", val_size, 1)
        if val_size >= self.POOL:
            raise ValueError(f"val_size must be < {self.POOL} to leave training images, got {val_size}")
        if not isinstance(binarize, bool):
            raise ValueError(f"binarize must be true or false, got {binarize!r}")
        if classes is not None:
            _check_classes(classes, self.NUM_CLASSES)
            classes = list(classes)
        if limit is not None:
            _check_int("limit", limit, 1)
        if pad_to is not None:
            _check_int("pad_to", pad_to, self.SIZE)
        self.batch_size, self.val_size, self.binarize, self.classes = batch_size, val_size, binarize, classes
        self.limit, self.data_dir, self.num_workers, self.pad_to = limit, data_dir, num_workers, pad_to
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
    def _sampler(self, name: str, seed: int) -> Sampler[Any] | None:
        dataset = self._datasets[name]
        return EpochShuffleSampler(len(dataset), seed) if name == "train" else None

    def _loader(self, name: str) -> DataLoader[Any]:
        self.setup()
        # Seeded from torch's seed at creation, so seed_everything(s) fixes the order (see text.py).
        seed = torch.initial_seed()
        workers = self.num_workers > 0
        return DataLoader(
            self._datasets[name],
            batch_size=self.batch_size,
            sampler=self._sampler(name, seed),
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(seed),
            worker_init_fn=pl_worker_init_function if workers else None,
            persistent_workers=workers,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader("test")

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
        images, labels = data.splits["train"]
        perm = _permutation(len(labels))
        n_train = len(labels) - self.val_size
        train, val = perm[:n_train], perm[n_train:]
        splits = {"train": (images[train], labels[train]), "val": (images[val], labels[val])}
        return splits | {"test": data.splits["test"]}, 255.0

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
                 num_workers: int = 0, pad_to: int | None = None, download: bool = True) -> None:
        super().__init__(batch_size, val_size, binarize, classes, limit, data_dir, num_workers, pad_to)
        self.download = bool(download)
        self.save_hyperparameters()


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 8x8 digits (1797 images): the embedded tiny default, no files needed."""

    NAME = "digits"
    SIZE = 8
    TEST_FRACTION = 0.2
    POOL = 1797 - int(1797 * TEST_FRACTION)

    def __init__(self, batch_size: int = 128, val_size: int = 200, binarize: bool = False,
                 classes: list[int] | None = None, limit: int | None = None, data_dir: str | None = None,
                 num_workers: int = 0, pad_to: int | None = None) -> None:
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
