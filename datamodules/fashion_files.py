"""Fashion-MNIST's four idx files: where to find them, which copies to trust, and how to decode them.

Zalando's Fashion-MNIST: 28x28 grey images, 10 classes, 60000 train / 10000 test. A copy counts from a
data dir, Debian's ``dataset-fashion-mnist`` package, or Zalando's download, checked against the hashes below.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

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
Split = tuple[torch.Tensor, torch.Tensor]


class FashionData(NamedTuple):
    splits: dict[str, Split]  # "train"/"test" -> (uint8 [N, 28, 28], int64 [N])
    paths: dict[str, str]  # file name -> the path it was read from
    digests: dict[str, str]  # file name -> sha256 of the *decompressed* idx bytes (same for both copies)


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
