"""The notes' four ways to train an autoencoder, their failure measures against direct computations, and the
likelihood models' sample FID against the same numbers computed by hand with the frozen classifier."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from datamodules.images import DigitsDataModule
from lightning_modules.likelihood.bounds import normal_log_prob
from lightning_modules.likelihood.hvae import HierarchicalVAE
from lightning_modules.likelihood.sample_fid import FID_SEED
from lightning_modules.likelihood.vae import VAE
from lightning_modules.likelihood.vae_schemes import active_units, entropy, mutual_information
from lightning_modules.metrics.fid import DomainFID, load_feature_extractor

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
TINY = {"variant": "standard", "latent_dim": 3, "hidden_dim": 16, "nll_k": [1, 5], "sample_count": 0}


def _trainer(**kwargs: object) -> pl.Trainer:
    return pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, deterministic=True, **kwargs)


# --- the failure measures -------------------------------------------------------------------------------
def test_mutual_information_matches_a_double_loop_and_its_limits() -> None:
    torch.manual_seed(0)
    mean, log_var = torch.randn(7, 2), torch.randn(7, 2) * 0.3
    got = mutual_information(mean, log_var, torch.Generator().manual_seed(5), chunk=3)
    z = mean + torch.exp(0.5 * log_var) * torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
    by_hand = 0.0
    for i in range(7):
        log_q = [float(normal_log_prob(z[i], mean[j], log_var[j]).sum()) for j in range(7)]
        by_hand += log_q[i] - (math.log(sum(math.exp(v) for v in log_q)) - math.log(7))
    assert got == pytest.approx(by_hand / 7, abs=1e-4)
    # One q for every x: nothing about x is in z. Far-apart points with tiny spread: all of log N.
    same = mutual_information(torch.zeros(5, 2), torch.zeros(5, 2), torch.Generator().manual_seed(0))
    assert same == pytest.approx(0.0, abs=1e-6)
    apart = mutual_information(torch.arange(5.0).repeat(2, 1).T * 100, torch.full((5, 2), -10.0),
                               torch.Generator().manual_seed(0))
    assert apart == pytest.approx(math.log(5), abs=1e-6)


def test_active_units_and_entropy_by_direct_count() -> None:
    mean = torch.tensor([[0.0, 1.0, 5.0], [0.0, 1.05, -5.0], [0.0, 0.95, 0.0]])
    assert active_units(mean) == 1  # only the last column varies by more than 0.01
    log_var = torch.tensor([[0.0, -1.0]])
    expected = sum(0.5 * (1 + math.log(2 * math.pi) + v) for v in (0.0, -1.0))
    assert float(entropy(log_var)[0]) == pytest.approx(expected)


# --- the four schemes -------------------------------------------------------------------------------
def _grads(objective: str) -> tuple[VAE, torch.Tensor]:
    torch.manual_seed(0)
    model = VAE([1, 8, 8], objective=objective, **TINY)
    x = (torch.rand(4, 1, 8, 8) > 0.5).float()
    loss = model.training_step((x, torch.zeros(4)), 0)
    loss.backward()
    return model, loss


def test_each_scheme_trains_what_the_notes_say() -> None:
    model, _ = _grads("decoder_only")  # Idea 1: z ~ p(z) whatever x is, so the encoder gets nothing
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
    model, _ = _grads("fixed_encoder")  # Idea 2: a frozen random encoder, a learned prior
    assert all(not p.requires_grad and p.grad is None for p in model.encoder.parameters())
    assert model.prior_mean.grad is not None and model.prior_log_var.grad is not None
    for objective in ("elbo", "no_entropy"):  # Ideas 3 and 4 train both networks
        model, _ = _grads(objective)
        assert all(p.grad is not None for p in [*model.encoder.parameters(), *model.decoder.parameters()])


def test_the_no_entropy_loss_is_the_elbo_plus_the_encoders_entropy() -> None:
    torch.manual_seed(1)
    model = VAE([1, 8, 8], objective="no_entropy", **TINY)
    x = (torch.rand(6, 1, 8, 8) > 0.5).float()
    torch.manual_seed(2)
    loss = model.training_step((x, torch.zeros(6)), 0)
    torch.manual_seed(2)
    recon, kl = model.elbo_terms(x)
    _, log_var = model.encoder(x.flatten(1))
    # E_q[-log p(x|z)] + E_q[-log p(z)] = recon + KL + H(q): the cross-entropy with the prior, no entropy bonus.
    assert float(loss) == pytest.approx(float((recon + kl + entropy(log_var)).mean()), rel=1e-5)


def test_idea_one_has_no_encoder_its_q_is_the_prior() -> None:
    model = VAE([1, 8, 8], objective="decoder_only", **TINY)
    x = (torch.rand(5, 1, 8, 8) > 0.5).float()
    mean, log_var = model.posterior(x.flatten(1))
    assert torch.equal(mean, torch.zeros(5, 3)) and torch.equal(log_var, torch.zeros(5, 3))
    _, kl = model.elbo_terms(x)
    assert torch.allclose(kl, torch.zeros(5))


def test_bad_objective_is_one_line() -> None:
    with pytest.raises(ValueError, match="objective must be one of"):
        VAE([1, 8, 8], objective="idea5")
    with pytest.raises(ValueError, match="variant 'standard'"):
        VAE([1, 8, 8], variant="seed", objective="no_entropy")


def test_tiny_runs_log_the_failure_measures_and_the_sample_fid(classifier_ckpt: Path) -> None:
    dm = DigitsDataModule(batch_size=64, binarize=True)
    tested = {}
    for objective in ("decoder_only", "elbo"):
        pl.seed_everything(0, verbose=False)
        model = VAE(**dm.model_args(), objective=objective, **TINY, fid_checkpoint=str(classifier_ckpt),
                    fid_samples=40, fid_repeats=3, mi_images=50)
        trainer = _trainer(limit_train_batches=3, limit_val_batches=1, limit_test_batches=2)
        trainer.fit(model, datamodule=dm)
        tested[objective] = trainer.test(model, datamodule=dm, verbose=False)[0]
        assert {"test/mi", "test/active_units", "test/enc_log_var", "test/fid", "test/fid_floor",
                "test/fid_ratio", "test/fid_std"} <= tested[objective].keys()
    assert tested["decoder_only"]["test/mi"] == pytest.approx(0.0, abs=1e-6)
    assert tested["decoder_only"]["test/active_units"] == 0
    assert 0 < tested["elbo"]["test/mi"] <= math.log(50) + 1e-6
    settings = model.metric_settings()
    assert settings["mi_images"] == 50 and settings["fid_samples"] == 40 and settings["fid_repeats"] == 3

    # The FID again, by hand: the same draws against the same 2 test batches, the floor on train slices.
    extractor, digest = load_feature_extractor(classifier_ckpt)
    fid = DomainFID(extractor, digest, "test")
    for i, (x, _) in enumerate(dm.test_dataloader()):
        if i == 2:
            break
        fid.update_real(x)
    model.eval()
    fids = []
    for i in range(3):
        gen = torch.Generator().manual_seed(FID_SEED + i)  # one generator per draw: the z, then the pixels
        fids.append(fid.versus(torch.bernoulli(model.sample(40, gen), generator=gen)))
    train = dm.images("train")
    floors = [fid.floor(train[i * 40:(i + 1) * 40]) for i in range(3)]
    assert tested["elbo"]["test/fid"] == pytest.approx(statistics.fmean(fids), rel=1e-4)
    assert tested["elbo"]["test/fid_floor"] == pytest.approx(statistics.fmean(floors), rel=1e-4)
    assert tested["elbo"]["test/fid_ratio"] == pytest.approx(statistics.fmean(fids) / statistics.fmean(floors),
                                                             rel=1e-4)


def test_hvae_draws_binary_images_and_reports_fid(classifier_ckpt: Path) -> None:
    dm = DigitsDataModule(batch_size=64, binarize=True)
    pl.seed_everything(0, verbose=False)
    model = HierarchicalVAE(**dm.model_args(), latent_dims=[4, 3, 2], hidden_dim=16, nll_k=[1, 5], sample_count=0,
                            fid_checkpoint=str(classifier_ckpt), fid_samples=30, fid_repeats=2)
    images = model.draw_images(10, torch.Generator().manual_seed(0))
    assert images.shape == (10, 1, 8, 8) and set(images.unique().tolist()) <= {0.0, 1.0}
    trainer = _trainer(limit_train_batches=2, limit_val_batches=1, limit_test_batches=1)
    trainer.fit(model, datamodule=dm)
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert {"test/kl_1", "test/kl_2", "test/kl_3", "test/fid", "test/fid_floor", "test/fid_ratio"} <= tested.keys()
    assert tested["test/fid_floor"] < tested["test/fid"]
