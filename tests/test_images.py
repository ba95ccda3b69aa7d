"""Image datamodules: Fashion-MNIST splits, filters, the pix2pix and CycleGAN pairings, and the digits default."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import seed_everything

from datamodules import DATAMODULES
from datamodules.image_pairs import PairedEdgesDataModule, UnpairedDomainsDataModule, sobel_edges
from datamodules.images import (
    FASHION_SYSTEM_DIR,
    DigitsDataModule,
    FashionMNISTDataModule,
    load_fashion_mnist,
    read_idx,
)
from datamodules.sources import ENV_VAR, DataNotFoundError

needs_fashion = pytest.mark.skipif(not (FASHION_SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
                                   reason="dataset-fashion-mnist not installed")


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def _rows(images: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in images}


# --- Fashion-MNIST --------------------------------------------------------------------------------
@needs_fashion
def test_fashion_files_decode_to_the_official_shapes() -> None:
    data = load_fashion_mnist(download=False)
    images, labels = data["train"]
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and labels.dtype == torch.int64
    assert data["test"][0].shape == (10000, 28, 28)
    assert labels.bincount().tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert int(labels[0]) == 9  # the first training item is an ankle boot
    assert load_fashion_mnist(download=False) is data  # decoded once per process


@needs_fashion
def test_fashion_splits_sizes_determinism_and_disjointness() -> None:
    seed_everything(0, verbose=False)
    dm = FashionMNISTDataModule(batch_size=64)
    assert DATAMODULES["fashion_mnist"] is FashionMNISTDataModule
    dm.setup("fit")
    assert dm.describe()["splits"] == {"train": 55000, "val": 5000, "test": 10000}
    assert dm.model_args() == {"image_shape": [1, 28, 28], "num_classes": 10}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    again = FashionMNISTDataModule()
    assert torch.equal(again.images("val"), dm.images("val")) and again.content_hash() == dm.content_hash()
    # The official train set is cut in two: no image index is in both, and together they are all of it.
    train, val = dm.images("train"), dm.images("val")
    assert len(_rows(val[:500]) & _rows(train)) <= 5  # Fashion-MNIST has a few exact duplicates at most
    both = torch.cat([dm.labels("train"), dm.labels("val")])
    assert both.bincount().tolist() == load_fashion_mnist()["train"][1].bincount().tolist()
    assert FashionMNISTDataModule(val_size=100).content_hash() != dm.content_hash()
    assert json.dumps(dm.describe())


@needs_fashion
def test_fashion_classes_limit_binarize_and_pad() -> None:
    dm = FashionMNISTDataModule(classes=[0, 3], limit=300, binarize=True, pad_to=32)
    dm.setup()
    for split in ("train", "val", "test"):
        labels, images = dm.labels(split), dm.images(split)
        assert set(labels.tolist()) == {0, 3} and len(labels) == 300
        assert images.shape == (300, 1, 32, 32) and set(images.unique().tolist()) <= {0.0, 1.0}
        assert images[..., :2, :].abs().sum() == 0 and images[..., :, -2:].abs().sum() == 0  # zero padding
    # Filtering keeps a subset of the unfiltered split: the first train image of class 0 or 3 is the same.
    full = FashionMNISTDataModule(binarize=True, pad_to=32)
    first = int(torch.isin(full.labels("train"), torch.tensor([0, 3])).nonzero()[0])
    assert torch.equal(full.images("train")[first], dm.images("train")[0])


@needs_fashion
def test_paired_edges_are_deterministic_and_binary() -> None:
    dm = PairedEdgesDataModule(limit=64, batch_size=16)
    edges, images, labels = next(iter(dm.val_dataloader()))
    assert edges.shape == images.shape == (16, 1, 28, 28) and labels.shape == (16,)
    assert set(edges.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(PairedEdgesDataModule(limit=64).edges("val"), dm.edges("val"))
    assert torch.equal(sobel_edges(images, 0.2).float(), edges)
    # Edges lie where the item is: none in a blank image, some on every real item.
    assert sobel_edges(torch.zeros(1, 1, 28, 28), 0.2).sum() == 0 and (edges.sum(dim=(1, 2, 3)) > 0).all()


@needs_fashion
def test_unpaired_domains_hold_only_their_class() -> None:
    seed_everything(0, verbose=False)
    dm = UnpairedDomainsDataModule(limit=400, batch_size=32)
    dm.setup()
    full = FashionMNISTDataModule(classes=[7, 9], limit=400)  # the same split, filter and limit, as one set
    train_images, train_labels = full.images("train"), full.labels("train")
    sneakers, boots = _rows(train_images[train_labels == 7]), _rows(train_images[train_labels == 9])
    a, b = next(iter(dm.train_dataloader()))
    assert a.shape == b.shape == (32, 1, 28, 28)
    assert _rows(a) <= sneakers and _rows(b) <= boots
    loader = dm.train_dataloader()
    assert len(loader.dataset) == min(len(sneakers), len(boots))
    loader.sampler.set_epoch(1)
    a1, _ = next(iter(loader))
    assert not torch.equal(a1, a)  # a new epoch, a new unpaired order
    assert set(dm.describe()["splits"]["val"]) == {"a", "b", "pairs_per_epoch"}


# --- errors ---------------------------------------------------------------------------------------
def test_missing_fashion_raises_one_line_with_every_fix(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_fashion_mnist(data_dir=str(tmp_path), download=False, system_dir=tmp_path / "absent")
    message = str(info.value)
    assert "\n" not in message
    url = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz"
    for part in ("dataset-fashion-mnist", ENV_VAR, "data_dir", url):
        assert part in message


def test_corrupt_idx_file_is_one_line_value_error(tmp_path: Path) -> None:
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 8))  # an images magic in a labels file
    with pytest.raises(ValueError, match="magic") as info:
        read_idx(bad, 1)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="gzip"):
        read_idx(bad, 1)


@pytest.mark.parametrize("args", [{"val_size": 0}, {"val_size": 1438}, {"classes": [10]}, {"classes": [1, 1]},
                                  {"binarize": "yes"}, {"pad_to": 4}, {"batch_size": True}])
def test_bad_arguments_name_the_argument(args: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(args))):
        DigitsDataModule(**args)


# --- digits ---------------------------------------------------------------------------------------
def test_digits_need_no_files(tmp_path: Path) -> None:
    seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=32, data_dir=str(tmp_path))
    assert DATAMODULES["digits"] is DigitsDataModule
    dm.setup()
    sizes = dm.describe()["splits"]
    assert sizes == {"train": 1797 - 359 - 200, "val": 200, "test": 359}
    assert dm.model_args() == {"image_shape": [1, 8, 8], "num_classes": 10}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    everything = torch.cat([dm.images(s) for s in ("train", "val", "test")])
    assert len(_rows(everything)) >= 1797 - 10  # the three splits are one permutation, cut three ways
    assert torch.equal(DigitsDataModule().images("test"), dm.images("test"))
    assert DigitsDataModule(binarize=True).images("val").unique().tolist() == [0.0, 1.0]
    assert DigitsDataModule(pad_to=16).images("val").shape == (200, 1, 16, 16)
