"""The path of one number: Lightning -> MLflow -> results/, reproducibly, with failures and resumption."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.params import experiment_from_params, load_params
from benchmarks.run.train import run_experiment, run_seed, seed_state_dir
from tests.conftest import mlflow_client, mlflow_runs, run_options


def test_same_seed_same_metrics(project: Path) -> None:
    """Reproducibility: the same experiment, seed and code give identical metrics on the CPU."""
    exp = experiment_from_params(load_params(), "words_lstm")
    first = run_seed(exp, 0, run_options(project, resume=False))
    second = run_seed(exp, 0, run_options(project, resume=False))
    assert first["metrics"] == second["metrics"]
    assert first["run_id"] != second["run_id"]
    other = run_seed(exp, 1, run_options(project, resume=False))
    assert other["metrics"] != first["metrics"]


@pytest.mark.slow
def test_mlflow_run_holds_params_metrics_samples_and_checkpoints(project: Path) -> None:
    exp = experiment_from_params(load_params(), "hello_elman")
    summary = run_experiment(exp, run_options(project))
    runs = mlflow_runs(project)
    assert len(runs) == len(exp.seeds) == 2
    client = mlflow_client(project)
    for run in runs:
        assert run.info.status == "FINISHED"
        params = run.data.params
        for key in ("seed", "data_hash", "git_commit", "code_hash", "version.torch", "version.lightning", "exp.model",
                    "hidden_size", "lr"):
            assert key in params, key
        # Each value once: the model's arguments come from its hyperparameters, not again under exp.model_args.
        assert not any(k.startswith("exp.model_args.") for k in params)
        assert not any("\n" in v for v in params.values())
        assert run.data.tags["stopped_by"] == "max_epochs"
        assert "mlflow.source.git.commit" in run.data.tags
        assert {"train/loss", "val/loss", "test/loss", "test/bpc"} <= set(run.data.metrics)
        history = client.get_metric_history(run.info.run_id, "val/loss")
        assert len(history) == exp.trainer["max_epochs"]  # one point per epoch
        samples = [a.path for a in client.list_artifacts(run.info.run_id, "samples")]
        assert any(p.endswith(".txt") for p in samples)
        ckpts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "checkpoints")}
        assert {"best.ckpt", "last.ckpt"} <= ckpts
    out = project / "results" / "hello_elman"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_seeds"] == 2 and metrics["test/loss"]["n"] == 2
    # metrics.json holds numbers only, for `dvc metrics show`.
    assert all(isinstance(v, (int, float)) for entry in metrics.values()
               for v in (entry.values() if isinstance(entry, dict) else [entry]))
    stored = json.loads((out / "summary.json").read_text())
    assert stored["summary"] == json.loads(json.dumps(summary["summary"]))
    assert stored["stopped_by"] == {"0": "max_epochs", "1": "max_epochs"} and stored["truncated"] is False
    per_seed = [stored["per_seed"][s]["test/loss"] for s in ("0", "1")]
    assert metrics["test/loss"]["mean"] == pytest.approx(sum(per_seed) / 2)
    from scipy import stats

    ci = stats.t.interval(0.95, 1, loc=0, scale=stats.sem(per_seed))[1]
    assert metrics["test/loss"]["ci95"] == pytest.approx(ci)
    assert (out / "curves" / "seed_1.csv").is_file()
    prov = json.loads((out / "seeds" / "seed_0" / "provenance.json").read_text())
    assert prov["run_id"] in {r.info.run_id for r in runs} and prov["machine"]["threads"] >= 1
    assert 0 < prov["cpu_s"] and prov["fit_s"] > 0  # every seed records its compute
    text = (out / "seeds" / "seed_0" / "samples" / "samples.txt").read_text()
    assert text.strip() and set(text) <= set("\nehlo")


@pytest.mark.slow
def test_seeds_run_as_separate_jobs_merge_to_the_same_summary(project: Path) -> None:
    """Seeds 0 and 1 as two jobs, then `collect`, give the metrics of one job running both."""
    from benchmarks.cli import main

    exp = experiment_from_params(load_params(), "hello_lstm")
    together = run_experiment(exp, run_options(project, results_dir=project / "together"))
    for seed in exp.seeds:
        one = run_experiment(exp, run_options(project), seeds=[seed])
        # A single seed's job publishes that seed and says which are missing, never a one-seed "summary" of all.
        assert one["seeds"] == sorted(exp.seeds[: exp.seeds.index(seed) + 1])
    (project / "results" / "hello_lstm" / "metrics.json").unlink()
    assert main(["collect", "hello_lstm"]) == 0
    merged = json.loads((project / "results" / "hello_lstm" / "metrics.json").read_text())
    assert merged == json.loads((project / "together" / "hello_lstm" / "metrics.json").read_text())
    assert together["missing_seeds"] == []


@pytest.mark.slow
def test_a_stale_seed_is_not_merged(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = experiment_from_params(load_params(), "hello_lstm")
    run_experiment(exp, run_options(project), seeds=[0])
    changed = replace(exp, model_args=exp.model_args | {"hidden_size": 8})
    summary = run_experiment(changed, run_options(project), seeds=[1])
    assert summary["seeds"] == [1] and summary["missing_seeds"] == [0]
    assert "made by another config" in capsys.readouterr().out


def test_a_diverging_run_fails_and_publishes_nothing(project: Path) -> None:
    from benchmarks.core.errors import DivergedError

    exp = experiment_from_params(load_params(), "words_lstm")
    exploding = replace(exp, model_args=exp.model_args | {"lr": 1.0e6})
    with pytest.raises(DivergedError, match="diverged"):
        run_seed(exploding, 0, run_options(project))
    (run,) = mlflow_runs(project)
    assert run.info.status == "FAILED"
    assert not (project / "results" / "words_lstm").exists()
    # Nothing resumable is left behind: the next run starts from scratch.
    assert not (seed_state_dir(exploding, 0, run_options(project)) / "ckpt").exists()


@pytest.mark.slow
def test_a_poisoned_resume_never_publishes(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run on garbage data fails; the next run on the real data starts over and gets the real numbers."""
    exp = experiment_from_params(load_params(), "words_lstm")
    clean = run_seed(exp, 0, run_options(project, results_dir=project / "clean"))
    garbage = project / "garbage" / "words"
    garbage.mkdir(parents=True)
    # Valid words, but only those the split rule sends to train: the val and test splits are empty.
    from datamodules.text import _bucket

    words = [w for w in (f"{a}{b}{c}" for a in "abcdefghij" for b in "klmnopqrst" for c in "aeiou") if _bucket(w) % 100 < 80]
    (garbage / "american-english").write_text("\n".join(words) + "\n")
    monkeypatch.setenv("ARCHBENCH_DATA_DIR", str(project / "garbage"))
    with pytest.raises(ArchbenchError):
        run_seed(exp, 0, run_options(project, data_dir=str(project / "garbage")))
    assert not (project / "results" / "words_lstm" / "seeds" / "seed_0" / "result.json").exists()
    monkeypatch.delenv("ARCHBENCH_DATA_DIR")
    from tests.conftest import SHARED_DATA

    if SHARED_DATA.is_dir():
        monkeypatch.setenv("ARCHBENCH_DATA_DIR", str(SHARED_DATA))
    again = run_seed(exp, 0, run_options(project))
    assert again["metrics"] == clean["metrics"]
    assert {r.info.status for r in mlflow_runs(project)} == {"FINISHED", "FAILED"}


class Boom(RuntimeError):
    pass


@pytest.mark.slow
def test_a_run_that_raises_ends_failed(project: Path) -> None:
    import lightning.pytorch as pl

    class Explode(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            raise Boom("injected")

    exp = experiment_from_params(load_params(), "hello_elman")
    with pytest.raises(Boom):
        run_seed(exp, 0, run_options(project, extra_callbacks=[Explode()]))
    (run,) = mlflow_runs(project)
    assert run.info.status == "FAILED"
    # A failure is not a kill: nothing is left for a later run to resume.
    assert not (seed_state_dir(exp, 0, run_options(project)) / "ckpt" / "last.ckpt").exists()


@pytest.mark.slow
def test_a_killed_run_under_changed_code_starts_over_and_says_why(project: Path, monkeypatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import benchmarks.core.provenance

    exp = experiment_from_params(load_params(), "hello_lstm")
    with pytest.raises(SystemExit):
        run_seed(exp, 0, run_options(project, extra_callbacks=[_kill_after_first_epoch()]))
    monkeypatch.setattr(benchmarks.core.provenance, "code_hash", lambda *exp: "0" * 12)
    again = run_seed(exp, 0, run_options(project))
    said = capsys.readouterr().out
    assert "starting over" in said and "the code changed" in said
    runs = {r.info.run_id: r.info.status for r in mlflow_runs(project)}
    # The killed run is closed, the new one finished: nothing is left RUNNING.
    assert sorted(runs.values()) == ["FINISHED", "KILLED"] and runs[again["run_id"]] == "FINISHED"
    assert again["epochs"] == exp.trainer["max_epochs"]


def _kill_after_first_epoch() -> object:
    """A callback that saves last.ckpt after epoch 0 and then stops the process as Ctrl-C does (Lightning turns
    KeyboardInterrupt into SystemExit): a killed run, which keeps its checkpoint, unlike a failed one."""
    import lightning.pytorch as pl

    class KillAfterFirstEpoch(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.current_epoch == 0:
                trainer.save_checkpoint(trainer.checkpoint_callback.dirpath + "/last.ckpt")
                raise SystemExit(1)

    return KillAfterFirstEpoch()


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint_in_the_same_mlflow_run(project: Path) -> None:
    exp = experiment_from_params(load_params(), "hello_lstm")
    with pytest.raises(SystemExit):
        run_seed(exp, 0, run_options(project, extra_callbacks=[_kill_after_first_epoch()]))
    (killed,) = mlflow_runs(project)
    assert killed.info.status == "KILLED"
    state = seed_state_dir(exp, 0, run_options(project))
    assert (state / "ckpt" / "last.ckpt").is_file()
    resumed = run_seed(exp, 0, run_options(project))
    runs = mlflow_runs(project)
    assert len(runs) == 1 and runs[0].info.run_id == resumed["run_id"] and runs[0].info.status == "FINISHED"
    assert resumed["timing"]["epochs"] == exp.trainer["max_epochs"]
    fresh = run_seed(exp, 0, run_options(project, resume=False))
    assert fresh["metrics"]["test/loss"] == pytest.approx(resumed["metrics"]["test/loss"], rel=1e-5)


@pytest.mark.slow
def test_a_run_resumes_under_a_new_commit_and_records_what_changed(project: Path, monkeypatch) -> None:
    import benchmarks.core.provenance

    exp = experiment_from_params(load_params(), "hello_lstm")
    with pytest.raises(SystemExit):
        run_seed(exp, 0, run_options(project, extra_callbacks=[_kill_after_first_epoch()]))
    (killed,) = mlflow_runs(project)
    first = killed.data.params
    # The code moved on before the resume: a new commit, and a model argument whose value differs.
    monkeypatch.setattr(benchmarks.core.provenance, "git_commit", lambda project_dir: "0" * 40)
    lr = float(first["lr"]) / 2
    resumed = run_seed(exp, 0, run_options(project, model_overrides={"lr": lr}))
    (run,) = mlflow_runs(project)  # still one run: the same one, finished
    assert run.info.run_id == killed.info.run_id == resumed["run_id"] and run.info.status == "FINISHED"
    assert run.data.params["git_commit"] == first["git_commit"] and run.data.params["lr"] == first["lr"]
    tags = run.data.tags
    assert tags["changed_on_resume.git_commit"] == f"{first['git_commit']} -> {'0' * 40}"
    assert tags["changed_on_resume.lr"] == f"{first['lr']} -> {lr}"
    assert not any(k.startswith("changed_on_resume.") for k in set(tags) - {"changed_on_resume.git_commit",
                                                                             "changed_on_resume.lr"})


@pytest.mark.slow
def test_last_checkpoint_is_the_latest_epoch_even_when_it_is_not_the_best(project: Path, monkeypatch) -> None:
    import lightning.pytorch as pl
    import torch

    from lightning_modules.recurrent.char_lm import CharLM

    # "max" on a falling val/loss: epoch 0 stays the best, every later epoch is worse by the monitor.
    monkeypatch.setattr(CharLM, "monitor_mode", "max", raising=False)

    class KillAfterSecondEpoch(pl.Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.current_epoch == 2:  # epoch 1 is validated and checkpointed
                raise SystemExit(1)

    hello = experiment_from_params(load_params(), "hello_lstm")
    exp = replace(hello, trainer=hello.trainer | {"max_epochs": 3})
    with pytest.raises(SystemExit):
        run_seed(exp, 0, run_options(project, extra_callbacks=[KillAfterSecondEpoch()]))
    ckpt = seed_state_dir(exp, 0, run_options(project)) / "ckpt"
    assert torch.load(ckpt / "best.ckpt", weights_only=False)["epoch"] == 0
    assert torch.load(ckpt / "last.ckpt", weights_only=False)["epoch"] == 1  # a resume loses no finished epoch


@pytest.mark.slow
def test_a_finished_run_goes_on_from_its_checkpoint_under_a_longer_budget(project: Path) -> None:
    hello = experiment_from_params(load_params(), "hello_lstm")
    longer = replace(hello, trainer=hello.trainer | {"max_epochs": 3})
    shorter = replace(hello, trainer=hello.trainer | {"max_epochs": 2})
    first = run_seed(shorter, 0, run_options(project))
    ckpt = seed_state_dir(shorter, 0, run_options(project)) / "ckpt" / "last.ckpt"
    continued = run_seed(longer, 0, run_options(project, continue_from=ckpt))
    assert first["timing"]["epochs"] == 2 and continued["timing"]["epochs"] == 3
    run = mlflow_client(project).get_run(continued["run_id"])
    assert continued["run_id"] != first["run_id"] and run.data.tags["continued_from"] == str(ckpt)
    # Going on from epoch 2 lands where three epochs in one go land.
    straight = run_seed(longer, 0, run_options(project, resume=False))
    assert straight["metrics"]["test/loss"] == pytest.approx(continued["metrics"]["test/loss"], rel=1e-5)
    assert straight["metrics"]["test/loss"] != pytest.approx(first["metrics"]["test/loss"], rel=1e-5)
    with pytest.raises(ArchbenchError, match="--continue-from .*missing.ckpt: no such checkpoint"):
        run_seed(longer, 0, run_options(project, resume=False, continue_from=project / "missing.ckpt"))


@pytest.mark.slow
def test_an_experiment_that_continues_another_starts_from_its_best_checkpoint(project: Path) -> None:
    hello = experiment_from_params(load_params(), "hello_lstm")
    first = replace(hello, seeds=(0,), trainer=hello.trainer | {"max_epochs": 2})
    second = replace(first, name="hello_lstm_more", continues="hello_lstm", trainer=hello.trainer | {"max_epochs": 3})
    with pytest.raises(ArchbenchError, match="continues 'hello_lstm', but .*seed_0/best.ckpt does not exist; "
                                             "run `archbench train hello_lstm --seed 0` first"):
        run_seed(second, 0, run_options(project))
    run_seed(first, 0, run_options(project))
    continued = run_seed(second, 0, run_options(project))
    ckpt = project / "results" / "hello_lstm" / "seeds" / "seed_0" / "best.ckpt"
    assert continued["timing"]["epochs"] == 3
    assert mlflow_client(project).get_run(continued["run_id"]).data.tags["continued_from"] == str(ckpt)
    assert second.config_hash() != replace(second, continues=None).config_hash()
    assert "continues" not in hello.as_dict()  # experiments without it keep their hash


def test_continues_must_name_another_experiment() -> None:
    params = load_params()
    for bad in ("no_such_experiment", 3, "hello_lstm"):
        broken = params | {"experiments": params["experiments"] | {"hello_lstm": params["experiments"]["hello_lstm"]
                                                                  | {"continues": bad}}}
        with pytest.raises(ArchbenchError, match="'continues' must name another experiment"):
            experiment_from_params(broken, "hello_lstm")


def test_the_cpu_clock_sums_the_legs_of_a_resumed_seed(tmp_path: Path) -> None:
    import time

    from benchmarks.run.compute import CpuClock

    first = CpuClock(tmp_path, resumed=False, started=time.process_time() - 5.0)
    first.on_train_epoch_end(type("T", (), {"is_global_zero": True})(), None)  # type: ignore[arg-type]
    saved = json.loads((tmp_path / "cpu.json").read_text())["cpu_s"]
    assert saved >= 5.0
    again = CpuClock(tmp_path, resumed=True, started=time.process_time() - 2.0)
    assert again.total() >= saved + 2.0  # the killed leg's seconds carried over
    fresh = CpuClock(tmp_path, resumed=False, started=time.process_time())
    assert fresh.total() < 1.0  # starting over starts from zero
