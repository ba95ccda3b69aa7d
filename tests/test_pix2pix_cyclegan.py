"""pix2pix and CycleGAN on 8x8 digits: shapes, which networks step, the cycle loss, and the test metrics."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from datamodules.image_pairs import sobel_edges
from datamodules.images import DigitsDataModule
from datamodules.sources import sha256_file
from lightning_modules.adversarial.cyclegan import CycleGAN, cycle_l1, d_adversarial, g_adversarial
from lightning_modules.adversarial.pix2pix import Pix2Pix, UNet

A, B = 7, 9  # digit classes standing in for sneaker and ankle boot


# Shared with the other adversarial tests: see tests/conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer() -> pl.Trainer:
    return pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, limit_test_batches=2, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def _snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(module: nn.Module, before: dict[str, Tensor]) -> bool:
    return all(not torch.equal(p, before[k]) for k, p in module.named_parameters() if k.endswith("weight"))


def _unchanged(module: nn.Module, before: dict[str, Tensor]) -> bool:
    return all(torch.equal(p, before[k]) for k, p in module.named_parameters())


class _WithSplits(pl.LightningDataModule):
    """A test loader plus the whole-split accessors a model's FID floor reads (``images``/``labels``)."""

    def __init__(self, dm: DigitsDataModule, test: DataLoader) -> None:
        super().__init__()
        self.images, self.labels, self._test = dm.images, dm.labels, test

    def test_dataloader(self) -> DataLoader:
        return self._test


# --- pix2pix ------------------------------------------------------------------------------------------
def _paired_loaders(dm: DigitsDataModule) -> tuple[DataLoader, DataLoader]:
    """(edges, images, labels) batches like PairedEdgesDataModule's, built from digits."""
    def loader(split: str, shuffle: bool) -> DataLoader:
        images = dm.images(split)  # [N, 1, 8, 8] in [0, 1]
        data = TensorDataset(sobel_edges(images, 0.2).float(), images, dm.labels(split))
        return DataLoader(data, batch_size=32, shuffle=shuffle, generator=torch.Generator().manual_seed(0))
    return loader("train", True), loader("test", False)


@pytest.mark.parametrize("shape", [[1, 8, 8], [1, 28, 28], [1, 32, 32], [3, 12, 20]])
def test_unet_output_shape_equals_input_shape(shape: list[int]) -> None:
    net = UNet(shape[0], shape[0], base_channels=4, depth=3, dropout=0.5).eval()
    x = torch.rand(2, *shape)  # [2, C, H, W]
    y = net(x)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    # The skips really connect: changing only the input's corner pixel changes the output there.
    x2 = x.clone()
    x2[..., 0, 0] += 1
    assert not torch.equal(net(x2)[..., 0, 0], y[..., 0, 0])


def test_pix2pix_with_lam_zero_never_updates_d() -> None:
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule()
    train, test = _paired_loaders(dm)
    model = Pix2Pix(**dm.model_args(), base_channels=4, lam=0.0, sample_grid=4)
    g0, d0 = _snapshot(model.generator), _snapshot(model.discriminator)
    d_buffers = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    trainer = _trainer()
    trainer.fit(model, train, test)
    assert _changed(model.generator, g0)
    assert _unchanged(model.discriminator, d0)
    # D was not even evaluated: its BatchNorm statistics and its Adam state are untouched.
    assert all(torch.equal(v, d_buffers[k]) for k, v in model.discriminator.state_dict().items())
    assert not trainer.optimizers[1].state
    assert "train/d_loss" not in trainer.callback_metrics
    assert model.monitor == "val/l1" and "val/l1" in trainer.callback_metrics  # no FID: the val L1 is kept best


def test_pix2pix_adversarial_run_and_test_metrics(classifier_ckpt: Path) -> None:
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule()
    train, test = _paired_loaders(dm)
    model = Pix2Pix(**dm.model_args(), base_channels=4, lam=1.0, fid_checkpoint=str(classifier_ckpt), sample_grid=4)
    g0, d0 = _snapshot(model.generator), _snapshot(model.discriminator)
    trainer = _trainer()
    trainer.fit(model, train, test)
    assert _changed(model.generator, g0) and _changed(model.discriminator, d0)
    assert {"train/g_loss", "train/l1", "train/d_loss", "val/l1", "val/ssim", "val/fid"} <= trainer.callback_metrics.keys()
    assert model.monitor == "val/fid" and float(trainer.callback_metrics["val/fid"]) > 0

    tested = trainer.test(model, datamodule=_WithSplits(dm, test), verbose=False)[0]
    assert {"test/l1", "test/ssim", "test/fid", "test/fid_floor"} <= tested.keys()
    assert 0 <= tested["test/fid_floor"] < tested["test/fid"]
    assert 0 <= tested["test/l1"] <= 1 and -1 <= tested["test/ssim"] <= 1 and tested["test/fid"] >= 0
    settings = model.metric_settings()
    assert settings["fid_extractor_sha256"] == sha256_file(classifier_ckpt) and settings["fid_n_fake"] == 64
    samples = model.make_samples()
    assert list(samples) == ["samples.png"] and hasattr(samples["samples.png"], "savefig")


def test_pix2pix_bad_values() -> None:
    for bad, match in (({"lam": -1.0}, "lam"), ({"dropout": 1.0}, "dropout"), ({"depth": 0}, "depth")):
        with pytest.raises(ValueError, match=match):
            Pix2Pix(**({"image_shape": [1, 8, 8]} | bad))


# --- CycleGAN -----------------------------------------------------------------------------------------
def _unpaired_loaders(dm: DigitsDataModule) -> tuple[DataLoader, DataLoader]:
    """(a_images, b_images) batches like UnpairedDomainsDataModule's: class A and class B digits, zipped."""
    def loader(split: str, shuffle: bool) -> DataLoader:
        images, labels = dm.images(split), dm.labels(split)
        a, b = images[labels == A], images[labels == B]  # [Na, 1, 8, 8], [Nb, 1, 8, 8]
        n = min(len(a), len(b))
        return DataLoader(TensorDataset(a[:n], b[:n]), batch_size=16, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(0))
    return loader("train", True), loader("test", False)


def _tiny_cyclegan(**kwargs: object) -> CycleGAN:
    args = {"image_shape": [1, 8, 8], "base_channels": 4, "n_res_blocks": 1, "domain_a": A, "domain_b": B, "sample_grid": 4}
    return CycleGAN(**(args | kwargs))


def test_cycle_loss_is_zero_for_identity_generators(monkeypatch: pytest.MonkeyPatch) -> None:
    pl.seed_everything(0, verbose=False)
    model = _tiny_cyclegan()
    a, b = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    out = model.translate(a, b)
    assert float(cycle_l1(a, out["rec_a"], b, out["rec_b"])) > 0
    monkeypatch.setattr(model, "g_ab", nn.Identity())
    monkeypatch.setattr(model, "g_ba", nn.Identity())
    out = model.translate(a, b)
    assert float(cycle_l1(a, out["rec_a"], b, out["rec_b"])) == 0.0
    _, test = _unpaired_loaders(DigitsDataModule())
    validated = pl.Trainer(limit_val_batches=2, logger=False, enable_progress_bar=False,
                           enable_model_summary=False).validate(model, test, verbose=False)[0]
    assert validated["val/cycle_l1"] == 0.0 and model.monitor == "val/cycle_l1"  # no FID: cycle L1 is the monitor


def test_adversarial_terms_hit_their_targets() -> None:
    ones, zeros = torch.ones(3, 1, 2, 2), torch.zeros(3, 1, 2, 2)
    assert float(d_adversarial(ones, zeros, "lsgan")) == 0.0 and float(g_adversarial(ones, "lsgan")) == 0.0
    assert float(g_adversarial(zeros, "lsgan")) == 1.0 and float(d_adversarial(zeros, ones, "lsgan")) == 1.0
    assert float(d_adversarial(zeros, zeros, "bce")) == pytest.approx(math.log(2))  # the seed's R at D = 1/2


@pytest.mark.parametrize("adv_loss", ["lsgan", "bce"])
def test_tiny_cyclegan_steps_all_four_networks(adv_loss: str, classifier_ckpt: Path) -> None:
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule()
    train, test = _unpaired_loaders(dm)
    model = _tiny_cyclegan(adv_loss=adv_loss, lam_identity=0.5, fid_checkpoint=str(classifier_ckpt),
                           classifier_checkpoint=str(classifier_ckpt))
    nets = {name: getattr(model, name) for name in ("g_ab", "g_ba", "d_a", "d_b")}
    before = {name: _snapshot(net) for name, net in nets.items()}
    trainer = _trainer()
    trainer.fit(model, train, test)
    assert all(_changed(net, before[name]) for name, net in nets.items())
    assert all(p.requires_grad for p in model.parameters())
    assert {"train/g_loss", "train/cycle_l1", "train/d_loss", "val/cycle_l1", "val/fid"} <= trainer.callback_metrics.keys()
    assert model.monitor == "val/fid" and float(trainer.callback_metrics["val/fid"]) > 0

    tested = trainer.test(model, datamodule=_WithSplits(dm, test), verbose=False)[0]
    assert {"test/cycle_l1", "test/fid_ab", "test/fid_ba", "test/success_ab", "test/success_ba"} <= tested.keys()
    assert all(0 <= tested[f"test/success_{d}"] <= 1 for d in ("ab", "ba"))
    assert tested["test/fid_ab"] >= 0 and tested["test/cycle_l1"] > 0
    assert all(0 <= tested[f"test/fid_{d}_floor"] < tested[f"test/fid_{d}"] for d in ("ab", "ba"))
    settings = model.metric_settings()
    assert settings["success"]["classifier_sha256"] == sha256_file(classifier_ckpt)
    assert settings["fid_ab"]["reference_split"] == "test, domain_b" and settings["fid_ab"]["n_real"] == 32
    assert not any("classifier" in k for k in model.state_dict())  # the judge stays out of the checkpoint
    assert set(model.make_samples()) == {"samples_ab.png", "samples_ba.png"}


def test_cyclegan_bad_values(tmp_path: Path) -> None:
    for bad, match in (({"adv_loss": "wgan"}, "adv_loss"), ({"domain_b": A}, "must differ"),
                       ({"lam_cycle": -1.0}, "lam_cycle"), ({"domain_a": 10}, "domain_a")):
        with pytest.raises(ValueError, match=match):
            _tiny_cyclegan(**bad)
    model = _tiny_cyclegan(classifier_checkpoint=str(tmp_path / "missing.ckpt"))
    with pytest.raises(FileNotFoundError, match="classifier checkpoint not found"):
        model.setup("fit")
