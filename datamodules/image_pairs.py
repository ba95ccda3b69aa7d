"""Two-domain Fashion-MNIST data: paired (edges -> item) for pix2pix, unpaired (sneaker <-> ankle boot) for CycleGAN.

Both reuse Fashion-MNIST's fixed splits (datamodules/images.py), so their val and test images never
appear in any train split of the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from datamodules.checks import check_bool, check_label, check_open_unit
from datamodules.images import _FashionBase
from datamodules.loaders import SamplerFactory
from datamodules.sampling import EpochShuffleSampler

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_CHUNK = 4096  # images per conv call: bounds the float32 temporaries to tens of MB


def sobel_edges(images: torch.Tensor, threshold: float) -> torch.Tensor:
    """Binary edge maps: Sobel gradient magnitude, divided by each image's maximum, > ``threshold``.

    A fixed convolution on the CPU, so the same images always give the same edges. Per-image
    normalisation makes the threshold mean the same for faint and bold items. A blank image has no edges.
    """
    kernels = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1)  # [2, 1, 3, 3]: d/dx, d/dy
    out = []
    for chunk in images.split(_CHUNK):  # [n, 1, H, W]
        grad = F.conv2d(chunk.float(), kernels, padding=1)  # [n, 2, H, W]
        magnitude = grad.square().sum(1, keepdim=True).sqrt()  # [n, 1, H, W]
        peak = magnitude.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)  # [n, 1, 1, 1]
        out.append((magnitude / peak > threshold).to(torch.uint8))
    return torch.cat(out) if out else images.to(torch.uint8)


class PairedEdgesDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    def __init__(self, edges: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, scale: float) -> None:
        self.edges = edges  # uint8 {0, 1} [N, 1, H, W]
        self.images = images  # uint8 [N, 1, H, W]
        self.labels = labels  # int64 [N]
        self.scale = scale

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.edges[i].float(), self.images[i].float() / self.scale, self.labels[i]


class PairedEdgesDataModule(_FashionBase):
    """pix2pix's paired task, edges -> item: batches ``(edges, images, labels)``, edges float {0, 1}.

    Edges are computed in ``setup`` from the images as served (after binarize and pad_to).
    """

    NAME = "fashion_edges"

    def __init__(self, batch_size: int = 128, val_size: int = 5000, binarize: bool = False,
                 classes: list[int] | None = None, limit: int | None = None, data_dir: str | None = None,
                 num_workers: int | None = None, pad_to: int | None = None, download: bool = True,
                 edge_threshold: float = 0.2) -> None:
        super().__init__(batch_size, val_size, binarize, classes, limit, data_dir, num_workers, pad_to)
        check_open_unit("edge_threshold", edge_threshold)
        check_bool("download", download)
        self.download = download
        self.edge_threshold = float(edge_threshold)
        self.save_hyperparameters()

    def _make_dataset(self, name: str, images: torch.Tensor, labels: torch.Tensor) -> Dataset[Any]:
        edges = sobel_edges(images.float() / self._scale, self.edge_threshold)  # [N, 1, H, W] {0, 1}
        return PairedEdgesDataset(edges, images, labels, self._scale)

    def edges(self, split: str) -> torch.Tensor:
        """A whole split's edge maps, float32 [N, 1, H, W] in {0, 1}."""
        self.setup()
        dataset = self._datasets[split]
        assert isinstance(dataset, PairedEdgesDataset)
        return dataset.edges.float()

    def _settings(self) -> dict[str, Any]:
        return super()._settings() | {"edge_threshold": self.edge_threshold, "edges": "sobel/per-image max"}

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"edges": f"Sobel magnitude / per-image max > {self.edge_threshold}"}


class UnpairedDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Item (i, j) is (A[i], B[j]): the two domains are indexed independently, so nothing pairs them."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, scale: float) -> None:
        self.a = a  # uint8 [Na, 1, H, W]
        self.b = b  # uint8 [Nb, 1, H, W]
        self.scale = scale

    def __len__(self) -> int:
        return min(len(self.a), len(self.b))

    def __getitem__(self, index: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, j = index
        return self.a[i].float() / self.scale, self.b[j].float() / self.scale


class PairSampler(Sampler[tuple[int, int]]):
    """Zips two index samplers, stopping at the shorter; forwards ``set_epoch`` so resumes reproduce both."""

    def __init__(self, a: Sampler[int] | range, b: Sampler[int] | range) -> None:
        self.a, self.b = a, b

    def set_epoch(self, epoch: int) -> None:
        for sampler in (self.a, self.b):
            if isinstance(sampler, EpochShuffleSampler):
                sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return min(len(self.a), len(self.b))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(iter(self.a), iter(self.b))


class UnpairedDomainsDataModule(_FashionBase):
    """CycleGAN's unpaired task: batches ``(a_images, b_images)`` of two Fashion-MNIST classes.

    Default sneaker (7) <-> ankle boot (9). Train shuffles A with seed s and B with seed s + 1, so the
    pairing changes every epoch and carries no information; val/test pair A[i] with B[i] in order.
    An epoch has min(len A, len B) pairs. ``limit`` caps each split before it is cut into the domains.
    """

    NAME = "fashion_sneaker_boot"

    # The model must know which class each domain is (translation success is judged by the classifier).
    MODEL_ARGS = ("image_shape", "num_classes", "domain_a", "domain_b")

    def model_args(self) -> dict[str, Any]:
        return super().model_args() | {"domain_a": self.domain_a, "domain_b": self.domain_b}

    def __init__(self, batch_size: int = 128, val_size: int = 5000, binarize: bool = False,
                 limit: int | None = None, data_dir: str | None = None, num_workers: int | None = None,
                 pad_to: int | None = None, download: bool = True, domain_a: int = 7, domain_b: int = 9) -> None:
        check_label("domain_a", domain_a, self.NUM_CLASSES)
        check_label("domain_b", domain_b, self.NUM_CLASSES)
        if domain_a == domain_b:
            raise ValueError(f"domain_a and domain_b must differ, both are {domain_a}")
        super().__init__(batch_size, val_size, binarize, [domain_a, domain_b], limit, data_dir, num_workers, pad_to)
        check_bool("download", download)
        self.download = download
        self.domain_a, self.domain_b = domain_a, domain_b
        self.save_hyperparameters()

    def _make_dataset(self, name: str, images: torch.Tensor, labels: torch.Tensor) -> Dataset[Any]:
        return UnpairedDataset(images[labels == self.domain_a], images[labels == self.domain_b], self._scale)

    def domain_images(self, split: str, domain: str) -> torch.Tensor:
        """One domain ("a" or "b") of a split, float32 [N, 1, H, W] in [0, 1], e.g. an FID's real set."""
        self.setup()
        dataset = self._datasets[split]
        assert isinstance(dataset, UnpairedDataset)
        return (dataset.a if domain == "a" else dataset.b).float() / self._scale

    def _sampler(self, split: str) -> SamplerFactory:
        dataset = self._dataset(split)
        assert isinstance(dataset, UnpairedDataset)
        na, nb = len(dataset.a), len(dataset.b)
        if split == "train":
            return lambda seed: PairSampler(EpochShuffleSampler(na, seed), EpochShuffleSampler(nb, seed + 1))
        return lambda seed: PairSampler(range(na), range(nb))

    def _settings(self) -> dict[str, Any]:
        return super()._settings() | {"domain_a": self.domain_a, "domain_b": self.domain_b}

    def describe(self) -> dict[str, Any]:
        self.setup()
        sizes = {name: {"a": len(ds.a), "b": len(ds.b), "pairs_per_epoch": len(ds)}  # type: ignore[attr-defined]
                 for name, ds in self._datasets.items()}
        return super().describe() | {"splits": sizes,
                                     "domains": {"a": self.domain_a, "b": self.domain_b}}
