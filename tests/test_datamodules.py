"""What every datamodule shares: the seeded loader, the worker default, the argument checks, one Fashion val slice."""

from __future__ import annotations

import inspect

import pytest
import torch
from lightning.pytorch import seed_everything
from torch.utils.data import TensorDataset

from datamodules import DATAMODULES, loaders
from datamodules.fashion_files import FASHION_SYSTEM_DIR
from datamodules.frames import FrameVideoDataModule
from datamodules.images import FashionMNISTDataModule, train_val_split
from datamodules.loaders import default_workers, resolve_workers, seeded_loader
from datamodules.sampling import EpochShuffleSampler, epoch_seed
from datamodules.text import HelloDataModule
from datamodules.translation import BucketBatchSampler

pytestmark = pytest.mark.usefixtures("one_thread")


def _numbers(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n))


# --- the seeded loader ----------------------------------------------------------------------------
def test_train_order_is_the_epoch_shuffle_of_the_torch_seed() -> None:
    seed_everything(3, verbose=False)
    loader = seeded_loader(_numbers(10), 4, train=True, num_workers=0)
    for epoch in (0, 1):
        loader.batch_sampler.sampler.set_epoch(epoch)  # what Lightning does before each epoch
        expected = torch.randperm(10, generator=torch.Generator().manual_seed(epoch_seed(3, epoch)))
        got = torch.cat([batch for (batch,) in loader])  # [10]
        assert torch.equal(got, expected)
    assert epoch_seed(3, 0) == 300_009 and epoch_seed(3, 1) == 300_010  # seeds < 2**32 pass unchanged
    val = seeded_loader(_numbers(10), 4, train=False, num_workers=0)
    assert torch.equal(torch.cat([b for (b,) in val]), torch.arange(10))  # val and test keep file order


def test_loaders_never_touch_the_global_rng() -> None:
    seed_everything(0, verbose=False)
    list(seeded_loader(_numbers(10), 4, train=True, num_workers=0))
    after = torch.rand(3)
    seed_everything(0, verbose=False)
    assert torch.equal(torch.rand(3), after)


def test_an_unseeded_64_bit_seed_does_not_overflow() -> None:
    torch.manual_seed(2**64 - 1)  # the largest seed a fresh process can draw
    try:
        assert loaders.loader_seed() == (2**64 - 1) % (2**63 - 1)
        loader = seeded_loader(_numbers(10), 4, train=True, num_workers=0)
        assert sorted(torch.cat([b for (b,) in loader]).tolist()) == list(range(10))
        buckets = BucketBatchSampler(EpochShuffleSampler(10, loaders.loader_seed()), 4, lengths=list(range(10)), chunk=8)
        buckets.sampler.set_epoch(7)
        assert sorted(i for batch in buckets for i in batch) == list(range(10))
    finally:
        seed_everything(0, verbose=False)


def test_bucket_batches_split_an_epoch_between_ddp_ranks() -> None:
    # What Lightning does under DDP: the batch sampler is rebuilt around a DistributedSampler per rank.
    from torch.utils.data.distributed import DistributedSampler

    lengths = [(7 * i) % 11 for i in range(23)]
    data = _numbers(23)
    ranks = [BucketBatchSampler(DistributedSampler(data, num_replicas=2, rank=r, seed=3), 4, lengths=lengths,
                                chunk=8) for r in (0, 1)]
    for epoch in (0, 1):
        for sampler in ranks:
            sampler.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        shares = [list(s) for s in ranks]
        assert [len(b) for b in shares[0]] and len(shares[0]) == len(shares[1]) == len(ranks[0])
        seen = [i for share in shares for batch in share for i in batch]
        assert set(seen) == set(range(23)) and len(seen) == 24  # one index twice: the sampler pads 23 to 2 x 12
    dropped = BucketBatchSampler(EpochShuffleSampler(10, 0), 4, drop_last=True, lengths=list(range(10)), chunk=8)
    assert len(list(dropped)) == len(dropped) == 2 and all(len(b) == 4 for b in dropped)


def test_worker_processes_keep_the_order() -> None:
    firsts = []
    for workers in (0, 1):
        seed_everything(5, verbose=False)
        dm = HelloDataModule(batch_size=8, repeats=2, num_workers=workers)
        firsts.append(next(iter(dm.train_dataloader())))  # (x, y): [8, time] each
    assert all(torch.equal(a, b) for a, b in zip(*firsts))


# --- workers and pinned memory --------------------------------------------------------------------
@pytest.mark.parametrize(("cuda", "cpus", "expected"), [(False, 16, 0), (True, 16, 4), (True, 3, 2), (True, 1, 0)])
def test_default_workers(monkeypatch: pytest.MonkeyPatch, cuda: bool, cpus: int, expected: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(loaders.os, "cpu_count", lambda: cpus)
    assert default_workers() == expected
    assert resolve_workers(None) == expected and resolve_workers(2) == 2 and resolve_workers(0) == 0
    loader = seeded_loader(_numbers(4), 2, train=False, num_workers=0)
    assert loader.pin_memory is cuda  # pinned host memory only where there is a GPU to copy to


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_every_datamodule_defaults_to_the_resolved_worker_count(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cls = DATAMODULES[name]
    assert inspect.signature(cls).parameters["num_workers"].default is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cls().num_workers == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(loaders.os, "cpu_count", lambda: 8)
    assert cls().num_workers == 4 and cls(num_workers=0).num_workers == 0


# --- argument checks ------------------------------------------------------------------------------
BAD = [("batch_size", 0, "an integer >= 1"), ("batch_size", True, "an integer >= 1"),
       ("batch_size", 2.0, "an integer >= 1"), ("num_workers", -1, "an integer >= 0"),
       ("num_workers", False, "an integer >= 0")]


@pytest.mark.parametrize("name", sorted(DATAMODULES))
@pytest.mark.parametrize(("arg", "value", "rule"), BAD)
def test_every_datamodule_checks_its_loader_arguments(name: str, arg: str, value: object, rule: str) -> None:
    with pytest.raises(ValueError) as err:
        DATAMODULES[name](**{arg: value})
    assert str(err.value) == f"{arg} must be {rule}, got {value!r}"


DOWNLOADING = sorted(n for n, c in DATAMODULES.items() if "download" in inspect.signature(c).parameters)


@pytest.mark.parametrize("name", DOWNLOADING)
def test_download_must_be_a_flag(name: str) -> None:
    with pytest.raises(ValueError, match=r"^download must be true or false, got 'no'$"):
        DATAMODULES[name](download="no")


# --- one Fashion-MNIST validation slice -----------------------------------------------------------
def _fake(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), generator=gen, dtype=torch.uint8), torch.arange(n) % 10


def test_train_val_split_is_the_fixed_permutation() -> None:
    images, labels = _fake(100, 0)
    (train_x, train_y), (val_x, val_y) = train_val_split((images, labels), 30)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(val_x, images[perm[70:]]) and torch.equal(train_y, labels[perm[:70]])
    assert len(train_x) == 70 and len(val_y) == 30


def test_video_items_come_from_the_image_val_slice() -> None:
    fake = {"train": _fake(200, 1), "test": _fake(50, 2)}
    dm = FrameVideoDataModule.from_images(fake, batch_size=4, length=6, train_videos=4, val_videos=4,
                                          test_videos=4, val_images=40)
    _, (val_images, _) = train_val_split(fake["train"], 40)
    (train_images, _), _ = train_val_split(fake["train"], 40)
    assert torch.equal(dm.val_dataloader().dataset.images, val_images)
    assert torch.equal(dm.train_dataloader().dataset.images, train_images)


@pytest.mark.skipif(not (FASHION_SYSTEM_DIR / "t10k-labels-idx1-ubyte.gz").is_file(), reason="no Fashion-MNIST")
def test_videos_and_images_share_the_real_val_slice() -> None:
    images = FashionMNISTDataModule(val_size=500).images("val")  # float32 [500, 1, 28, 28]
    video = FrameVideoDataModule(val_images=500, train_videos=1, val_videos=1, test_videos=1)
    pool = video.val_dataloader().dataset.images  # uint8 [500, 28, 28]
    assert torch.equal((images.squeeze(1) * 255).round().to(torch.uint8), pool)
