"""Shared fixtures: a throwaway project directory with a tiny params.yaml, so tests train for a few
batches on the CPU and never touch the real mlflow.db, optuna.db or results/."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import signal
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "datasets"
T = TypeVar("T")

# Tiny overrides of the real experiments: same names, same models and data, a few batches each.
TINY = {
    "experiments": {
        "hello_elman": {"trainer": {"max_epochs": 2}, "seeds": [0, 1]},
        "hello_lstm": {"trainer": {"max_epochs": 2}, "seeds": [0, 1]},
        "words_elman": {"data_args": {"limit": 256, "batch_size": 64}, "model_args": {"hidden_size": 16},
                        "trainer": {"max_epochs": 2}, "seeds": [0]},
        "words_lstm": {"data_args": {"limit": 256, "batch_size": 64}, "model_args": {"hidden_size": 16},
                       "trainer": {"max_epochs": 2}, "seeds": [0]},
        "digits_classifier": {"trainer": {"max_epochs": 1}, "seeds": [0]},
    },
    "claims": {
        "long_lag": {"data_args": {"train_size": 64, "val_size": 32, "test_size": 32, "batch_size": 32},
                     "model_args": {"hidden_size": 8}, "trainer": {"max_epochs": 1}, "seeds": [0, 1],
                     "sweep": {"values": [3, 6]}},
        "depth": {"data_args": {"limit": 256, "batch_size": 64}, "model_args": {"hidden_size": 8}, "seeds": [0, 1]},
    },
    "density": {"default": {"datasets": ["toy_ring", "digits"], "dims": [2, 4], "n_train": 300, "n_test": 200, "cv_folds": 3}},
    "studies": {
        "lstm_depth": {"n_trials": 4, "trainer": {"max_epochs": 2, "limit_train_batches": 3, "limit_val_batches": 2}},
    },
}


@functools.cache
def _tiny_params() -> dict[str, Any]:
    from benchmarks.core.params import deep_merge, load_params

    return deep_merge(load_params(ROOT / "params.yaml"), TINY)


def tiny_params() -> dict[str, Any]:
    """The real params.yaml with TINY merged in; a fresh copy each call (tests edit it)."""
    return copy.deepcopy(_tiny_params())


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp working directory holding a tiny params.yaml; tracking stores are created inside it."""
    write_params(tmp_path / "params.yaml", tiny_params())
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE", "ARCHBENCH_PARAMS"):
        monkeypatch.delenv(var, raising=False)
    found = [str(d) for d in USER_DATA_DIRS if d.is_dir()]
    if found:
        monkeypatch.setenv("ARCHBENCH_DATA_DIR", os.pathsep.join(found))
    return tmp_path


def _user_data_dirs() -> tuple[Path, ...]:
    """Where data-backed tests find the real datasets, in order: the folders of ARCHBENCH_DATA_DIR as the user
    set it (the product searches them first too), then shared/datasets beside the repository."""
    env = os.environ.get("ARCHBENCH_DATA_DIR", "")
    return tuple(dict.fromkeys([Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()] + [SHARED_DATA]))


# Read once, when the tests are collected: tests delete or replace ARCHBENCH_DATA_DIR while they run.
USER_DATA_DIRS = _user_data_dirs()


def real_data_dir(probe: str) -> Path:
    """The first of ``USER_DATA_DIRS`` holding ``probe`` (e.g. "multi30k/train.de.gz"); else the test is skipped
    with a reason naming every place it looked."""
    for folder in USER_DATA_DIRS:
        if (folder / probe).exists():
            return folder
    pytest.skip(f"no {probe} under {' or '.join(map(str, USER_DATA_DIRS))} (set ARCHBENCH_DATA_DIR to a folder "
                f"holding it)")


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Path]:
    """A getter of an empty MLflow SQLite store migrated once per session, made on first use (a session
    that runs no training never imports MLflow for it)."""

    @functools.cache
    def get() -> Path:
        from mlflow.tracking import MlflowClient

        db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments(max_results=1)
        return db

    return get


@pytest.fixture(autouse=True)
def fresh_mlflow_stores_from_a_template(migrated_mlflow_db: Callable[[], Path],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs create their SQLite store by copying a migrated empty one.

    Why: MLflow 3 builds a fresh store by running its schema migrations (68 of them), 2-4 s here, and most
    tests start from an empty project. The copy is what the migrations would leave (same MLflow, same
    session), is made only where the suite itself would create the store (so tests that check that
    bad input creates none still can fail), and the real ``ensure_tracking_store`` then opens it.
    Subprocess runs (the CLI tests, the concurrent-creation tests) still migrate for real."""
    from benchmarks.run import tracking

    real = tracking.ensure_tracking_store

    def ensure(uri: str) -> None:
        if uri.startswith("sqlite:///") and not uri.endswith(":memory:"):
            db = Path(uri.removeprefix("sqlite:///"))
            with tracking.sqlite_creation_lock(uri):
                if not db.exists():
                    shutil.copyfile(migrated_mlflow_db(), db)
        real(uri)

    monkeypatch.setattr(tracking, "ensure_tracking_store", ensure)


def write_params(path: Path, params: dict[str, Any]) -> None:
    # libyaml's emitter where PyYAML has it (5x faster; most tests write a params file)
    path.write_text(yaml.dump(params, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False))


def run_options(project_dir: Path, **overrides: Any) -> Any:
    from benchmarks.run.train import RunOptions

    base = dict(project_dir=project_dir, results_dir=project_dir / "results", state_dir=project_dir / ".archbench",
                progress_bar=False)
    return RunOptions(**(base | overrides))


def kill_if_still(pid: int, held: Callable[[], T | None]) -> T | None:
    """SIGKILL process ``pid`` if it still holds what ``held`` finds (a RUNNING trial, a lease), read while it
    is frozen, and return that; else let it go on and return None. Reading first and killing after would
    leave a gap in which the work may finish, and the test would take a finished task for a killed one."""
    os.kill(pid, signal.SIGSTOP)
    found = held()
    os.kill(pid, signal.SIGCONT if found is None else signal.SIGKILL)
    return found


def env_for_subprocess() -> dict[str, str]:
    """The current environment with the venv's bin first, so `archbench` and `dvc` resolve to this install."""
    import sys

    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def copy_from_torch(ours: Any, ref: torch.nn.RNNBase) -> None:
    """Load a torch.nn.RNN/LSTM/...'s weights into a StackedRNN of the same shape, either impl: every parameter
    of layer k (direction d) by its name (weight_ih -> weight_ih_l{k}[_reverse]); a name torch lacks fails."""
    with torch.no_grad():
        for k in range(ours.num_layers):
            for d in range(ours.directions):
                for name, p in ours.layer_parameters(k, d).items():
                    p.copy_(getattr(ref, f"{name}_l{k}" + ("_reverse" if d else "")))


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Tiny convolutions on the 2 shared cores: a second intra-op thread spins and waits, 5x slower than one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def classifier_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DomainClassifier trained one epoch on 8x8 digits: the frozen judge and FID/IS extractor of the GAN tests.

    Session-scoped, so the GAN, pix2pix and CycleGAN tests share one training."""
    import lightning.pytorch as pl

    from datamodules.images import DigitsDataModule
    from lightning_modules.metrics.classifier import DomainClassifier

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=64)
    model = DomainClassifier(**dm.model_args(), channels=8, feature_dim=32)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    path = tmp_path_factory.mktemp("classifier") / "clf.ckpt"
    trainer.save_checkpoint(path)
    torch.set_num_threads(before)
    return path


def mlflow_client(project_dir: Path) -> Any:
    """The MLflow client of a test project's embedded store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project_dir / 'mlflow.db'}")


def mlflow_runs(project_dir: Path, experiment: str = "archbench") -> list[Any]:
    """Every run of the suite's MLflow experiment in a test project (none before the first run)."""
    client = mlflow_client(project_dir)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.fixture
def data_now_is_d0(monkeypatch: pytest.MonkeyPatch) -> None:
    """Merging and publishing compare each seed's data hash with the data as it is now (one build of the
    datamodule); the seeds of tests/published_seeds.py are written by hand, so the data now is the hash they were
    written with. Modules that write such seeds use it with ``pytestmark``."""
    import benchmarks.run.results as results
    from tests.published_seeds import DATA

    monkeypatch.setattr(results, "data_hash", lambda exp, data_dir: DATA)
