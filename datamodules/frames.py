"""Synthetic "videos" of Fashion-MNIST items for synchronous many-to-many labelling (one label per frame).

The seed's example of a synchronous many-to-many net is frame-by-frame video classification. A video
here is ``length`` frames made of runs: each run shows one item (one Fashion-MNIST image of a random
class, never the class of the run before) for ``min_run..max_run`` frames. Every frame is jittered by a
random shift of up to ``max_shift`` pixels and Gaussian noise of std ``noise``; with probability
``corrupt_p`` a frame is also mostly occluded (a 22x22 square of uniform noise, 62% of the frame), so
that frame alone is ambiguous and only its neighbours in time tell what it shows. The label of a frame
is its item's class.

Batches are ``(frames, labels)``: frames float32 [batch, length, 1, 28, 28] in [0, 1], labels int64
[batch, length].
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datamodules.checks import check_bool, check_fraction, check_int, check_number
from datamodules.fashion_files import load_fashion_mnist
from datamodules.images import SPLIT_SEED, train_val_split
from datamodules.loaders import SplitLoaders, resolve_workers

Split = tuple[torch.Tensor, torch.Tensor]  # (uint8 [N, 28, 28], int64 [N])
SPLITS = ("train", "val", "test")
NUM_CLASSES = 10
SIDE = 28
OCCLUDE = 22  # side of the noise square over a corrupted frame


class VideoDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Video i is rendered on access from a generator seeded ``base_seed + i``: the same video every
    epoch and in every worker, without holding ~50 MB of frames in memory."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, count: int, base_seed: int, length: int,
                 min_run: int, max_run: int, noise: float, max_shift: int, corrupt_p: float) -> None:
        self.images = images  # uint8 [N, 28, 28], the item pool
        self.count, self.base_seed, self.length = count, base_seed, length
        self.min_run, self.max_run, self.noise, self.max_shift, self.corrupt_p = min_run, max_run, noise, max_shift, corrupt_p
        self.by_class = [torch.nonzero(labels == c).flatten() for c in range(NUM_CLASSES)]
        self.classes = [c for c, idx in enumerate(self.by_class) if len(idx)]
        if len(self.classes) < 2:
            raise ValueError(f"the image pool needs at least 2 classes to alternate between, got {self.classes}")

    def __len__(self) -> int:
        return self.count

    def _runs(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame pool indices and labels [length] each: runs of one item, each of a new class."""
        items: list[int] = []
        labels: list[int] = []
        prev = -1
        while len(labels) < self.length:
            run = int(torch.randint(self.min_run, self.max_run + 1, (), generator=gen))
            choices = [c for c in self.classes if c != prev]
            c = choices[int(torch.randint(len(choices), (), generator=gen))]
            pool = self.by_class[c]
            items += [int(pool[torch.randint(len(pool), (), generator=gen)])] * run
            labels += [c] * run
            prev = c
        return torch.tensor(items[: self.length]), torch.tensor(labels[: self.length])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.count:
            raise IndexError(i)
        gen = torch.Generator().manual_seed(self.base_seed + i)
        items, labels = self._runs(gen)
        T, s = self.length, self.max_shift
        # Shift by cropping a zero-padded frame (no wrap-around as torch.roll would give).
        padded = F.pad(self.images[items].float() / 255, (s, s, s, s))  # [T, 28 + 2s, 28 + 2s]
        offsets = torch.randint(0, 2 * s + 1, (T, 2), generator=gen).tolist()
        frames = torch.stack([padded[t, dy : dy + SIDE, dx : dx + SIDE] for t, (dy, dx) in enumerate(offsets)])
        frames = frames + self.noise * torch.randn(frames.shape, generator=gen)  # [T, 28, 28]
        corrupt = torch.rand(T, generator=gen) < self.corrupt_p  # [T]
        corners = torch.randint(0, SIDE - OCCLUDE + 1, (T, 2), generator=gen).tolist()
        fill = torch.rand(T, OCCLUDE, OCCLUDE, generator=gen)  # drawn for every frame: a fixed RNG stream
        for t in torch.nonzero(corrupt).flatten().tolist():
            y0, x0 = corners[t]
            frames[t, y0 : y0 + OCCLUDE, x0 : x0 + OCCLUDE] = fill[t]
        return frames.clamp_(0, 1).unsqueeze(1), labels  # [T, 1, 28, 28], [T]


class FrameVideoDataModule(SplitLoaders, pl.LightningDataModule):
    """Fashion-MNIST frame videos. Items of train videos come from the official train images minus a
    validation slice of ``val_images`` (images.py's ``train_val_split``: with val_images = val_size, the
    very images of the fashion_mnist datasets' val split), val videos from that slice, test videos from
    the official test images. Video i of split k (train 0, val 1, test 2) is drawn from generator seed
    ``(data_seed * 3 + k) * 10**7 + i``.
    """

    MODEL_ARGS = ("num_classes", "frame_shape")

    def __init__(self, batch_size: int = 32, length: int = 24, min_run: int = 3, max_run: int = 8,
                 noise: float = 0.3, max_shift: int = 3, corrupt_p: float = 0.25, train_videos: int = 2000,
                 val_videos: int = 300, test_videos: int = 500, val_images: int = 5000, data_seed: int = 0,
                 data_dir: str | None = None, download: bool = True, num_workers: int | None = None) -> None:
        super().__init__()
        for name, value, low in (("batch_size", batch_size, 1), ("length", length, 1), ("min_run", min_run, 1),
                                 ("max_run", max_run, min_run if isinstance(min_run, int) else 1),
                                 ("max_shift", max_shift, 0), ("train_videos", train_videos, 1),
                                 ("val_videos", val_videos, 1), ("test_videos", test_videos, 1),
                                 ("val_images", val_images, 1), ("data_seed", data_seed, 0)):
            check_int(name, value, low)
        if max_shift >= SIDE // 2:
            raise ValueError(f"max_shift must be < {SIDE // 2}, got {max_shift}")
        check_number("noise", noise, 0)
        check_fraction("corrupt_p", corrupt_p, upper_open=False)
        check_bool("download", download)
        self.save_hyperparameters()
        self.batch_size, self.data_dir, self.download = batch_size, data_dir, download
        self.num_workers = resolve_workers(num_workers)
        self.val_images, self.data_seed = val_images, data_seed
        self.counts = {"train": train_videos, "val": val_videos, "test": test_videos}
        self.render = {"length": length, "min_run": min_run, "max_run": max_run, "noise": float(noise),
                       "max_shift": max_shift, "corrupt_p": float(corrupt_p)}
        self._source: dict[str, Split] | None = None
        self._datasets: dict[str, VideoDataset] = {}

    @classmethod
    def from_images(cls, images: dict[str, Split], **kwargs: Any) -> FrameVideoDataModule:
        """A datamodule over given {"train": ..., "test": ...} images in load_fashion_mnist's format
        (e.g. a small fake set in tests) instead of the real files."""
        dm = cls(**kwargs)
        dm._source = {k: (images[k][0], images[k][1]) for k in ("train", "test")}
        return dm

    def _images(self) -> dict[str, Split]:
        if self._source is None:
            self._source = load_fashion_mnist(self.data_dir, download=self.download)
        return self._source

    def prepare_data(self) -> None:
        self._images()  # download on one process, fail early with the one-line DataNotFoundError

    def _pools(self) -> dict[str, Split]:
        src = self._images()
        n = len(src["train"][1])
        if self.val_images >= n:
            raise ValueError(f"val_images must be < {n} (the train images), got {self.val_images}")
        train, val = train_val_split(src["train"], self.val_images)
        return {"train": train, "val": val, "test": src["test"]}

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        for k, (split, (images, labels)) in enumerate(self._pools().items()):
            self._datasets[split] = VideoDataset(images, labels, self.counts[split], (self.data_seed * 3 + k) * 10**7,
                                                 **self.render)

    def model_args(self) -> dict[str, Any]:
        return {"num_classes": NUM_CLASSES, "frame_shape": [1, SIDE, SIDE]}

    def _dataset(self, split: str) -> VideoDataset:
        self.setup()
        return self._datasets[split]

    # --- provenance -------------------------------------------------------------------------------
    @functools.cached_property
    def _data_digest(self) -> str:
        digest = hashlib.sha256()
        for split in ("train", "test"):
            for t in self._images()[split]:
                digest.update(t.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _settings(self) -> dict[str, Any]:
        return {**self.render, "counts": self.counts, "val_images": self.val_images, "data_seed": self.data_seed,
                "occlude": OCCLUDE, "val_split_seed": SPLIT_SEED}

    def content_hash(self) -> str:
        """sha256 over the source images and every setting that shapes the videos."""
        settings = {"class": type(self).__name__, "data": self._data_digest, **self._settings()}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        self.setup()
        return {
            "name": "fashion_video",
            "source": "Fashion-MNIST via datamodules.images.load_fashion_mnist",
            **self._settings(),
            "splits": {k: {"videos": len(ds), "frames": len(ds) * ds.length, "item_pool": len(ds.images)}
                       for k, ds in self._datasets.items()},
            "split_rule": f"item pools: official train permuted (seed {SPLIT_SEED}), last {self.val_images} "
            "for val videos, the rest for train videos; official test for test videos; video i of split k "
            f"rendered from generator seed ({self.data_seed}*3+k)*10**7+i",
        }
