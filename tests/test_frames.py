"""Frame videos: rendering rules, determinism, the per-frame baseline's independence, and a tiny run."""

from __future__ import annotations

import json
from collections.abc import Iterator

import lightning.pytorch as pl
import pytest
import torch

from datamodules.frames import FrameVideoDataModule
from datamodules.sources import ENV_VAR, DataNotFoundError
from lightning_modules.recurrent.frame_labeller import FrameLabeller

TRAINER = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV_VAR, raising=False)
    # Small convs and a time loop: intra-op threads only add synchronisation on a busy 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fake_images(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [10 * per_class, 28, 28]: class c is a bright 8x8 block at one of 10 places, plus speckle."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(per_class)
    images = (torch.rand(len(labels), 28, 28, generator=gen) * 60).to(torch.uint8)
    for i, c in enumerate(labels.tolist()):
        r, col = 2 + 12 * (c // 5), 2 + 5 * (c % 5)
        images[i, r : r + 8, col : col + 6] = 255
    return images, labels


def _dm(**kw: object) -> FrameVideoDataModule:
    fake = {"train": fake_images(20, 0), "test": fake_images(5, 1)}
    args = dict(batch_size=8, length=12, train_videos=32, val_videos=8, test_videos=16, val_images=50)
    return FrameVideoDataModule.from_images(fake, **(args | kw))


def test_videos_have_runs_of_new_classes_and_are_deterministic() -> None:
    dm = _dm()
    dm.setup()
    frames, labels = next(iter(dm.val_dataloader()))
    assert frames.shape == (8, 12, 1, 28, 28) and labels.shape == (8, 12) and frames.dtype == torch.float32
    assert frames.min() >= 0 and frames.max() <= 1 and labels.dtype == torch.long
    for row in labels.tolist():
        runs = [1]
        for a, b in zip(row, row[1:]):
            runs = runs + [1] if a != b else runs[:-1] + [runs[-1] + 1]
        assert all(3 <= r <= 8 for r in runs[:-1]) and runs[-1] <= 8  # the last run may be cut short
    again = _dm()
    f2, l2 = next(iter(again.val_dataloader()))
    assert torch.equal(f2, frames) and torch.equal(l2, labels) and again.content_hash() == dm.content_hash()
    assert _dm(data_seed=1).content_hash() != dm.content_hash()
    assert not torch.equal(next(iter(_dm(data_seed=1).val_dataloader()))[0], frames)
    info = dm.describe()
    assert json.dumps(info) and info["splits"]["train"] == {"videos": 32, "frames": 384, "item_pool": 150}


def _video(**kw: object) -> tuple[torch.Tensor, torch.Tensor]:
    dm = _dm(**kw)
    dm.setup()
    return dm._datasets["train"][0]  # [T, 1, 28, 28], [T]


def test_jitter_and_corruption_act_on_the_same_recipe() -> None:
    frames, labels = _video(noise=0.0, corrupt_p=0.0, max_shift=0)
    assert labels[0] == labels[1] and torch.equal(frames[0], frames[1])  # a run repeats one image exactly
    occluded, same = _video(noise=0.0, corrupt_p=1.0, max_shift=0)
    assert torch.equal(same, labels)  # the RNG stream is fixed: corruption does not change the runs
    changed = (occluded != frames).flatten(1).float().mean(1)  # [T] fraction of pixels replaced
    assert changed.min() > 0.4  # every frame mostly covered by the 22x22 noise square (62%)
    noisy, _ = _video(noise=0.3, corrupt_p=0.0, max_shift=3)
    assert not torch.equal(noisy[0], noisy[1])


def _labeller(**kw: object) -> FrameLabeller:
    torch.manual_seed(0)
    args = dict(num_classes=10, frame_shape=[1, 28, 28], hidden_size=8, feature_dim=8, channels=4)
    return FrameLabeller(**(args | kw)).eval()  # eval: BatchNorm must use running stats, not mix frames


def test_model_shapes_and_temporal_context() -> None:
    torch.manual_seed(0)
    frames = torch.rand(2, 10, 1, 28, 28)  # [batch, T, C, H, W]
    first, last = frames.clone(), frames.clone()
    first[:, 0] = torch.rand(2, 1, 28, 28)  # another frame 0
    last[:, 9] = torch.rand(2, 1, 28, 28)  # another frame 9

    base = _labeller(recurrent=False)
    out = base(frames)
    assert out.shape == (2, 10, 10)
    # The baseline labels frame t from frame t alone.
    torch.testing.assert_close(base(first)[:, 1:], out[:, 1:])
    torch.testing.assert_close(base(last)[:, :9], out[:, :9])

    rnn = _labeller(recurrent=True)
    out = rnn(frames)
    assert out.shape == (2, 10, 10)
    assert not torch.allclose(rnn(first)[:, 5], out[:, 5])  # frame 5 uses the past ...
    torch.testing.assert_close(rnn(last)[:, :9], out[:, :9])  # ... and, causal, not the future

    bi = _labeller(bidirectional=True)
    assert not torch.allclose(bi(last)[:, 0], bi(frames)[:, 0])  # the backward pass sees the future


def test_bad_values_name_the_argument() -> None:
    with pytest.raises(ValueError, match="corrupt_p"):
        FrameVideoDataModule(corrupt_p=1.5)
    with pytest.raises(ValueError, match="max_run"):
        FrameVideoDataModule(min_run=5, max_run=4)
    with pytest.raises(ValueError, match="bidirectional"):
        FrameLabeller(10, [1, 28, 28], recurrent=False, bidirectional=True)
    with pytest.raises(ValueError, match="gru"):
        FrameLabeller(10, [1, 28, 28], cell="gru")
    with pytest.raises(ValueError, match="val_images"):
        _dm(val_images=200).setup()


def test_tiny_training_run_learns_the_fake_classes() -> None:
    pl.seed_everything(0)
    dm = _dm(train_videos=96, length=8, batch_size=16, noise=0.1)
    model = FrameLabeller(**dm.model_args(), hidden_size=32, feature_dim=32, channels=8, lr=1e-2, dropout=0.0)
    trainer = pl.Trainer(max_epochs=4, limit_val_batches=0, **TRAINER)
    before = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    trainer.fit(model, datamodule=dm)
    after = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    assert after > max(0.5, before + 0.3), (before, after)  # measured: 0.73


def test_real_fashion_mnist_videos() -> None:
    from datamodules.images import load_fashion_mnist

    try:
        load_fashion_mnist(download=False)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    dm = FrameVideoDataModule(download=False, train_videos=4, val_videos=2, test_videos=2, batch_size=2)
    dm.prepare_data()
    assert dm.describe()["splits"]["train"]["item_pool"] == 55000 and dm.model_args()["frame_shape"] == [1, 28, 28]
    frames, labels = next(iter(dm.test_dataloader()))
    assert frames.shape == (2, 24, 1, 28, 28) and labels.max() < 10
