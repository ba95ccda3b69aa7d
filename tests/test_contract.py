"""The contract every registered model and dataset meets, with no per-model test code: each has an
experiment in params.yaml, every experiment validates, every model and datamodule has the attributes the
suite reads (lightning_modules/contracts.py, datamodules/contracts.py), and a tiny version of each
model's first experiment trains, validates and tests for a couple of batches on data that is always
here, logging only keys of the one metric vocabulary (benchmarks/core/metric_keys.py)."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from benchmarks.core import metric_keys
from benchmarks.run.build import accepted_args, build_model, check_experiment
from benchmarks.core.params import Experiment, experiment_from_params, experiment_names, load_params
from datamodules import DATAMODULES
from datamodules.contracts import SuiteDataModule
from datamodules.frames import FrameVideoDataModule
from datamodules.image_pairs import PairedEdgesDataModule, UnpairedDomainsDataModule
from datamodules.images import DigitsDataModule
from datamodules.translation import Multi30kDataModule
from datamodules.conllu import UDPOSDataModule
from lightning_modules import MODELS
from lightning_modules.contracts import MakesSamples, SuiteModel
from tests.conftest import ROOT

PARAMS = load_params(ROOT / "params.yaml")
ALL = [experiment_from_params(PARAMS, n) for n in experiment_names(PARAMS)]
# Cheaper settings for the contract run only; the experiments' own values stay in params.yaml.
TINY_MODEL_ARGS: dict[str, dict[str, Any]] = {
    "vae": {"nll_k": [1, 5], "sample_count": 4, "hidden_dim": 32, "fid_samples": 16, "fid_repeats": 2},
    "hvae": {"nll_k": [1, 5], "sample_count": 4, "hidden_dim": 32, "fid_samples": 16, "fid_repeats": 2},
    "ddpm": {"bpd_images": 4, "bpd_timesteps": 4, "sample_steps": 4, "sample_count": 4, "base_channels": 8,
             "fid_samples": 8, "fid_sample_steps": 2, "pixel_levels": 17},  # digits have 17 grey levels
    "seq2seq": {"beam_size": 2, "max_decode_len": 6, "embed_dim": 16, "hidden_size": 16, "sample_count": 2},
    "gan": {"fid_samples": 16, "fid_repeats": 2, "sample_grid": 4, "base_channels": 8, "latent_dim": 8,
            "lr_decay_from": None},
    "cgan": {"fid_samples": 16, "fid_repeats": 2, "sample_grid": 10, "base_channels": 8, "latent_dim": 8,
             "lr_decay_from": None},
    "pix2pix": {"sample_grid": 4, "base_channels": 8},
    "cyclegan": {"sample_grid": 2, "base_channels": 4, "n_res_blocks": 1},
    "tagger": {"embed_dim": 16, "hidden_size": 16},
    "frame_labeller": {"channels": 4, "feature_dim": 16, "hidden_size": 16},
    "sequence_classifier": {"hidden_size": 8},
}
TINY_TRAINER = dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
                    num_sanity_val_steps=0, deterministic=True, logger=False, enable_progress_bar=False,
                    enable_model_summary=False)
ALWAYS_HERE = {"hello": {}, "digits": {}, "long_lag": {"train_size": 64, "val_size": 32, "test_size": 32, "lag": 10}}


# --- tiny stand-ins for the datasets that live in files ---------------------------------------------
class _DigitsSource:
    """The sklearn 8x8 digits in place of Fashion-MNIST's files: same datamodule code, data always here."""

    SIZE, POOL, TEST_FRACTION = DigitsDataModule.SIZE, DigitsDataModule.POOL, DigitsDataModule.TEST_FRACTION
    _raw_splits = DigitsDataModule._raw_splits
    _raw_digest = DigitsDataModule._raw_digest
    _source = DigitsDataModule._source
    _split_rule = DigitsDataModule._split_rule

    def prepare_data(self) -> None:
        return None  # nothing to download


class DigitEdges(_DigitsSource, PairedEdgesDataModule):
    pass


class DigitDomains(_DigitsSource, UnpairedDomainsDataModule):
    pass


PAIRS = [("ein hund läuft .", "a dog runs ."), ("eine frau singt .", "a woman sings ."),
         ("zwei männer essen .", "two men eat ."), ("ein kind spielt im park .", "a child plays in the park ."),
         ("eine katze schläft .", "a cat sleeps ."), ("ein mann liest ein buch .", "a man reads a book .")]


class TinyMulti30k(Multi30kDataModule):
    """Six toy German-English pairs in every split instead of the Multi30k files."""

    def prepare_data(self) -> None:
        return None

    def _read(self, name: str) -> list[str]:
        side = 0 if name.endswith(".de.gz") else 1
        return [pair[side] for pair in PAIRS]

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(PAIRS).encode()).hexdigest()


def _tagged_sentences() -> list[tuple[list[str], list[str]]]:
    return [("the dog runs .".split(), ["DET", "NOUN", "VERB", "PUNCT"]),
            ("a cat sleeps here".split(), ["DET", "NOUN", "VERB", "ADV"]),
            ("dogs run .".split(), ["NOUN", "VERB", "PUNCT"])] * 2


def _fake_frames(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [10 * per_class, 28, 28] noise images with labels 0..9, in load_fashion_mnist's format."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(per_class)
    return (torch.rand(len(labels), 28, 28, generator=gen) * 255).to(torch.uint8), labels


def tiny_datamodule(exp: Experiment) -> Any:
    """The experiment's own datamodule when its data is built in, else the same class over tiny data."""
    if exp.data in ALWAYS_HERE:
        return DATAMODULES[exp.data](**(dict(exp.data_args) | ALWAYS_HERE[exp.data]))
    if exp.data in ("words", "tinyshakespeare"):
        return DATAMODULES["hello"](batch_size=16, repeats=8)
    if exp.data == "fashion_mnist":
        return DigitsDataModule(batch_size=32, binarize=bool(exp.data_args.get("binarize", False)))
    if exp.data == "fashion_edges":
        return DigitEdges(batch_size=16, val_size=200)
    if exp.data == "fashion_sneaker_boot":
        return DigitDomains(batch_size=16, val_size=200)
    if exp.data == "multi30k":
        return TinyMulti30k(batch_size=4, min_freq=1)
    if exp.data == "ud_ewt":
        sents = _tagged_sentences()
        return UDPOSDataModule.from_sentences({"train": sents, "val": sents, "test": sents}, batch_size=4, min_freq=1)
    if exp.data == "fashion_video":
        images = {"train": _fake_frames(20, 0), "test": _fake_frames(5, 1)}
        return FrameVideoDataModule.from_images(images, batch_size=2, length=6, train_videos=4, val_videos=2,
                                                test_videos=2, val_images=50)
    raise AssertionError(f"add a tiny always-present stand-in for dataset '{exp.data}' to tiny_datamodule")


def _first_using(model: str) -> Experiment:
    return next(e for e in ALL if e.model == model)


# --- registry and params ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_has_an_experiment(name: str) -> None:
    assert any(e.model == name for e in ALL), f"add an experiment using '{name}' to params.yaml"


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_every_dataset_is_used(name: str) -> None:
    assert any(e.data == name for e in ALL), f"add an experiment using dataset '{name}' to params.yaml"


@pytest.mark.parametrize("cls", [*MODELS.values(), *DATAMODULES.values()], ids=lambda c: c.__name__)
def test_no_constructor_argument_shadows_the_run_seed(cls: type) -> None:
    # Lightning logs every hparam to the run's MLflow params, where "seed" already holds the run's seed;
    # a second "seed" (e.g. the seed of a synthetic dataset) makes MLflow refuse the run for seed != 0.
    assert "seed" not in accepted_args(cls), f"rename {cls.__name__}'s 'seed' argument (e.g. data_seed)"


@pytest.mark.parametrize("exp", ALL, ids=lambda e: e.name)
def test_every_experiment_validates(exp: Experiment) -> None:
    check_experiment(exp)


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_every_registered_datamodule_meets_the_protocol(name: str) -> None:
    cls = DATAMODULES[name]
    dm = cls(**({"download": False} if "download" in accepted_args(cls) else {}))  # builds without its data
    assert isinstance(dm, SuiteDataModule), f"{cls.__name__} lacks model_args, content_hash, describe or MODEL_ARGS"
    assert isinstance(dm.MODEL_ARGS, tuple) and all(isinstance(a, str) for a in dm.MODEL_ARGS)


# --- the metric vocabulary --------------------------------------------------------------------------
def test_the_metric_table_is_one_vocabulary() -> None:
    keys = [row.key for row in metric_keys.METRIC_KEYS]
    assert len(keys) == len(set(keys)), "a key listed twice"
    for row in metric_keys.METRIC_KEYS:
        assert row.key.split("/")[0] in ("train", "val", "test") and row.direction in metric_keys.DIRECTIONS, row
        assert row.description, row
    lookup = metric_keys.lookup
    assert lookup("test/nll_k500").key == "test/nll_k{k}" and lookup("val/kl_2").key == "val/kl_{i}"
    assert lookup("test/nll_kx") is None and lookup("test/nll_k5_extra") is None and lookup("val/nope") is None
    assert lookup("val/fid_best").key == "val/fid" and lookup("val/loss_best").key == "val/loss"
    assert lookup("test/fid_std").direction == "none"  # an exact row wins over the _std rule
    assert metric_keys.direction("val/bleu_best") == "max" and metric_keys.direction("made/up") == "none"
    assert metric_keys.direction("test/bpd_prior") == "none" and metric_keys.direction("test/acc") == "max"
    assert metric_keys.label("val/bpc") == "val/bpc (bits/char)" and metric_keys.label("val/loss") == "val/loss"
    assert metric_keys.label("test/nll_k50") == "test/nll_k50 (nats)" and metric_keys.label("x/y") == "x/y"


def _self_logs(path: Path) -> list[ast.Call]:
    calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]
    return [c for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr in ("log", "log_dict")
            and isinstance(c.func.value, ast.Name) and c.func.value.id == "self"]


def test_every_key_in_the_source_is_in_the_table() -> None:
    # The tiny runs see only the keys their options log (no R1 penalty, no lr decay...): this reads the
    # rest off the source. A literal key must be a row; an f-string must match at least one row.
    examples = [re.sub(r"\{\w+\}", "1", row.key) for row in metric_keys.METRIC_KEYS]
    missing = []
    for path in sorted((ROOT / "lightning_modules").rglob("*.py")):
        for call in _self_logs(path):
            arg = call.args[0]
            if isinstance(arg, ast.Constant):
                ok = metric_keys.lookup(arg.value) is not None
            else:
                parts = arg.values if isinstance(arg, ast.JoinedStr) else [arg]
                regex = "".join(re.escape(p.value) if isinstance(p, ast.Constant) else ".+" for p in parts)
                ok = any(re.fullmatch(regex, example) for example in examples)
            if not ok:
                missing.append(f"{path.name}:{call.lineno} {ast.unparse(arg)}")
    assert not missing, f"logged keys missing from benchmarks/core/metric_keys.py: {missing}"


def test_every_val_and_test_log_is_reduced_over_devices() -> None:
    # Under DDP Lightning reduces an epoch metric over ranks only with sync_dist=True; without it each
    # rank keeps its shard's mean and rank 0's is what gets written. (torchmetrics objects sync
    # themselves and ignore the flag, so the rule can be uniform.)
    missing = []
    for path in sorted((ROOT / "lightning_modules").rglob("*.py")):
        for call in _self_logs(path):
            key = ast.unparse(call.args[0]) if call.args else "?"
            sync = [k.value for k in call.keywords if k.arg == "sync_dist"]
            train = key.lstrip("f").strip("'\"").startswith("train/")
            if not train and not (sync and isinstance(sync[0], ast.Constant) and sync[0].value is True):
                missing.append(f"{path.name}:{call.lineno} {key}")
    assert not missing, f"self.log of a val/test metric without sync_dist=True: {missing}"


# --- a tiny run of every model ----------------------------------------------------------------------
def _tiny_run(model: pl.LightningModule, dm: Any, tmp: Path) -> set[str]:
    """fit + test for a couple of batches, checkpointing on the model's monitor; every key it logged."""
    checkpoint = ModelCheckpoint(dirpath=tmp, monitor=model.monitor, mode=model.monitor_mode)
    trainer = pl.Trainer(**TINY_TRAINER, callbacks=[checkpoint], default_root_dir=tmp)
    trainer.fit(model, datamodule=dm)  # the checkpoint raises here if the monitor was never logged
    keys = set(trainer.callback_metrics) | set(trainer.logged_metrics)
    tested = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert any(k.startswith("test/") for k in tested), "test metrics were logged"
    return keys | set(trainer.callback_metrics) | set(trainer.logged_metrics) | set(tested)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tiny_run_per_model(name: str, classifier_ckpt: Path, tmp_path: Path, one_thread: None) -> None:
    exp = _first_using(name)
    # Frozen judges (FID extractor, domain classifier) are another experiment's output: a tiny one on digits.
    model_args = {k: (str(classifier_ckpt) if k.endswith("_checkpoint") and v else v) for k, v in exp.model_args.items()}
    exp = dataclasses.replace(exp, model_args=model_args | TINY_MODEL_ARGS.get(name, {}))
    pl.seed_everything(0, verbose=False)
    dm = tiny_datamodule(exp)
    dm.prepare_data()
    dm.setup("fit")
    model = build_model(exp, dm)

    assert isinstance(dm, SuiteDataModule) and set(dm.model_args()) == set(dm.MODEL_ARGS)
    assert len(dm.content_hash()) == 64 and json.dumps(dm.describe())
    assert isinstance(model, SuiteModel), f"{type(model).__name__} lacks monitor, monitor_mode or metric_settings"
    keys = _tiny_run(model, dm, tmp_path)

    unknown = sorted(k for k in keys if k not in ("epoch", "step") and metric_keys.lookup(k) is None)
    assert not unknown, f"{name} logs keys missing from benchmarks/core/metric_keys.py: {unknown}"
    # The same model without its frozen judges checkpoints on its fallback key: it must be logged too.
    twin = MODELS[name](**(dm.model_args() | {k: None if k.endswith("_checkpoint") else v
                                             for k, v in exp.model_args.items()}))
    for monitored in (model, twin):
        assert monitored.monitor in keys, f"{name} monitors {monitored.monitor!r}, which it never logs"
        assert metric_keys.direction(monitored.monitor) == monitored.monitor_mode, monitored.monitor
    assert json.dumps(model.metric_settings())
    # Seeded eval noise comes from CPU generators, so eval numbers agree across devices.
    generators = [v for v in vars(model).values() if isinstance(v, torch.Generator)]
    assert all(g.device.type == "cpu" for g in generators), f"{name} keeps an eval generator off the CPU"
    if "loss" in {k.split("/")[-1] for k in keys}:
        assert "loss_unit" in model.metric_settings(), "a model logging a loss says its unit"

    if isinstance(model, MakesSamples):
        assert all(isinstance(k, str) for k in model.make_samples())

    # A diverged model evaluates to NaN numbers and samples nothing (or NaN images), but never raises or
    # crashes (NaN features once segfaulted the FID): the suite's divergence check then reports the run.
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(math.nan)
    trainer = pl.Trainer(**TINY_TRAINER, enable_checkpointing=False, default_root_dir=tmp_path)
    validated = trainer.validate(model, datamodule=dm, verbose=False)[0]
    trainer.test(model, datamodule=dm, verbose=False)
    assert not math.isfinite(validated[twin.monitor]), "a NaN model's monitored value is not finite"
    if isinstance(model, MakesSamples):
        samples = model.make_samples()
        assert not any(isinstance(v, str) for v in samples.values()), "text sampled from a NaN model"


class _RankMetrics(pl.Callback):
    """Writes each DDP rank's test metrics to rank<N>.json."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(metrics))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning leaves the gloo group alive when a spawned rank exits; a rank that exits while its peer's
        # gloo threads still hold the pair aborts (about one run in three). Both ranks meet, then close it.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["seq2seq", "gan"])
def test_every_rank_logs_the_same_numbers_under_ddp(name: str, classifier_ckpt: Path, tmp_path: Path) -> None:
    # Two CPU processes (gloo): the corpus BLEU gathers every rank's sentences, the GAN's test FIDs score
    # one synced reference, and sync_dist reduces the rest, so both ranks must hold identical numbers.
    pl.seed_everything(0, verbose=False)
    if name == "seq2seq":
        dm: Any = TinyMulti30k(batch_size=2, min_freq=1)
        dm.setup()
        model: pl.LightningModule = MODELS[name](**dm.model_args(), embed_dim=8, hidden_size=8, num_layers=1,
                                                 beam_size=2, max_decode_len=6)
    else:
        dm = DigitsDataModule(batch_size=16)
        model = MODELS[name](**dm.model_args(), **TINY_MODEL_ARGS[name] | {"fid_checkpoint": str(classifier_ckpt)})
    # A GAN's D step leaves G's parameters without gradients (and the reverse), which plain DDP refuses.
    trainer = pl.Trainer(**(TINY_TRAINER | {"limit_val_batches": 2, "limit_test_batches": 2}), accelerator="cpu",
                         devices=2, strategy="ddp_spawn_find_unused_parameters_true", enable_checkpointing=False,
                         callbacks=[_RankMetrics(tmp_path)])
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    tested = {k for k in ranks[0] if k.startswith("test/")}
    assert tested >= ({"test/bleu", "test/loss"} if name == "seq2seq" else {"test/fid", "test/fid_floor", "test/is"})
    assert {k: ranks[0][k] for k in tested} == {k: ranks[1][k] for k in tested}
    if name == "seq2seq":  # the oracle: one process scoring the whole test split with the trained weights
        from lightning_modules.recurrent.decoding import PAD, corpus_bleu

        model.eval()
        nll, tokens, hyps, refs = 0.0, 0, [], []
        with torch.no_grad():
            for src, src_len, tgt in dm.test_dataloader():
                logits = model.net(src, src_len, tgt[:, :-1])
                nll += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten(),
                                                               ignore_index=PAD, reduction="sum"))
                tokens += int((tgt[:, 1:] != PAD).sum())
                hyps += model.translate(src, src_len)
                refs += [model.detok(row) for row in tgt.tolist()]
        assert len(hyps) == len(PAIRS)  # 2 ranks x 2 batches of 2 cover the 6 test pairs
        assert ranks[0]["test/loss"] == pytest.approx(nll / tokens, rel=1e-5)
        assert ranks[0]["test/bleu"] == pytest.approx(corpus_bleu(hyps, refs), rel=1e-5)


def test_no_file_in_lightning_modules_is_longer_than_350_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "lightning_modules").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 350}
    assert not long, f"split these files: {long}"
