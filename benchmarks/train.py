"""Training one experiment: every seed through Lightning, tracked in MLflow, written for DVC.

Per seed, a state folder (outside DVC's outputs, which DVC deletes before a stage runs) keeps the last
checkpoint and the MLflow run id, so a killed run resumes where it stopped, in the same MLflow run.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.build import build_datamodule, build_model, check_experiment, trainer_args
from benchmarks.errors import ArchbenchError
from benchmarks.params import Experiment
from benchmarks.tracking import (
    artifact_location,
    flatten,
    git_commit,
    package_versions,
    set_status,
    tracking_uri,
)


@dataclass
class RunOptions:
    """How to run, as opposed to what: paths, tracking and hooks (tuning adds callbacks and a parent run)."""

    project_dir: Path = Path(".")
    data_dir: str | None = "data"
    results_dir: Path | None = Path("results")
    state_dir: Path = Path(".archbench")
    mlflow_experiment: str = "archbench"
    resume: bool = True
    # Another run's checkpoint to go on from when this run has none of its own: e.g. a finished run under a
    # longer budget. Weights, optimiser states, epoch and elapsed time come from it; the MLflow run is new.
    continue_from: Path | None = None
    extra_callbacks: list[Any] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    trainer_overrides: dict[str, Any] = field(default_factory=dict)
    progress_bar: bool = True


def seed_state_dir(exp: Experiment, seed: int, opts: RunOptions) -> Path:
    return opts.state_dir / "runs" / exp.name / f"seed{seed}-{exp.config_hash()}"


def _make_logger(exp: Experiment, seed: int, opts: RunOptions, run_id: str | None) -> Any:
    from benchmarks.resumable_logger import ResumableMLFlowLogger

    tags = {"experiment": exp.name, "seed": str(seed), "model": exp.model, "data": exp.data, "profile": exp.profile}
    return ResumableMLFlowLogger(
        experiment_name=opts.mlflow_experiment,
        run_name=f"{exp.name}/seed{seed}",
        tracking_uri=tracking_uri(opts.project_dir),
        artifact_location=artifact_location(opts.project_dir),
        tags=tags | opts.tags,
        run_id=run_id,
    )


def _continued_checkpoint(exp: Experiment, seed: int, opts: RunOptions) -> Path:
    """The best checkpoint of the same seed of the experiment ``exp`` continues, which must have been run."""
    results = opts.results_dir if opts.results_dir is not None else opts.project_dir / "results"
    ckpt = seed_results_dir(results / str(exp.continues), seed) / "best.ckpt"
    if not ckpt.is_file():
        raise ArchbenchError(f"experiment '{exp.name}' continues '{exp.continues}', but {ckpt} does not exist; "
                             f"run `archbench train {exp.continues} --seed {seed}` first")
    return ckpt


def run_seed(exp: Experiment, seed: int, opts: RunOptions) -> dict[str, Any]:
    """Train, validate and test one seed; returns {'metrics', 'timing', 'settings', 'run_id'}."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

    from benchmarks.callbacks import CurveWriter, SampleLogger

    check_experiment(exp)
    state = seed_state_dir(exp, seed, opts)
    if not opts.resume or (state / "done.json").exists():
        shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True, exist_ok=True)
    last = state / "ckpt" / "last.ckpt"
    resume_from = str(last) if opts.resume and last.is_file() else None
    if resume_from is None and opts.continue_from is None and exp.continues:
        opts = replace(opts, continue_from=_continued_checkpoint(exp, seed, opts))
    if resume_from is None and opts.continue_from is not None:
        if not Path(opts.continue_from).is_file():
            raise ArchbenchError(f"--continue-from {opts.continue_from}: no such checkpoint; pass a run's "
                                 f"ckpt/last.ckpt (under {opts.state_dir / 'runs'}) or drop the option")
        resume_from = str(opts.continue_from)
        opts = replace(opts, tags=opts.tags | {"continued_from": resume_from})
    run_id_file = state / "run_id"
    old_run_id = run_id_file.read_text().strip() if resume_from and run_id_file.is_file() else None

    # Seed before anything random is built: weights, dataloader shuffling, workers, sampling noise.
    pl.seed_everything(seed, workers=True, verbose=False)
    dm = build_datamodule(exp, opts.data_dir)
    model = build_model(exp, dm, opts.model_overrides)

    logger = _make_logger(exp, seed, opts, old_run_id)
    run_id = logger.run_id
    run_id_file.write_text(run_id)
    data_hash = dm.content_hash()
    # Trainable parameters, so models of "comparable size" can be checked rather than assumed.
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    extra = {f"exp.{k}": v for k, v in flatten(exp.as_dict()).items()}
    logger.log_hyperparams(
        extra | {"seed": seed, "data_hash": data_hash, "git_commit": git_commit(opts.project_dir), "config_hash": exp.config_hash(),
                 "parameters": n_params}
        | package_versions()
    )
    # A model may choose what "best" means (a GAN keeps the best validation FID); the default is val/loss.
    monitor, mode = getattr(model, "monitor", "val/loss"), getattr(model, "monitor_mode", "min")
    checkpoint = ModelCheckpoint(
        dirpath=state / "ckpt", filename="best", monitor=monitor, mode=mode, auto_insert_metric_name=False
    )
    # last.ckpt every epoch, whatever the monitor did: Lightning 2.6's save_last only writes it on epochs
    # that improved the best, so a killed run would resume from the best epoch and lose the ones after.
    # Listed after ``checkpoint`` so the file carries the best score of the same epoch.
    latest = ModelCheckpoint(dirpath=state / "ckpt", filename="last", enable_version_counter=False)
    callbacks = [checkpoint, latest, CurveWriter(state / "curve.csv"), SampleLogger(state / "samples"), *opts.extra_callbacks]
    if opts.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    trainer = pl.Trainer(
        **trainer_args(exp, opts.trainer_overrides),
        logger=logger,
        callbacks=callbacks,
        default_root_dir=state,
        enable_progress_bar=opts.progress_bar,
        enable_model_summary=False,
    )
    try:
        started = time.perf_counter()
        trainer.fit(model, datamodule=dm, ckpt_path=resume_from)
        fit_s = time.perf_counter() - started
        tested = trainer.test(model, datamodule=dm, ckpt_path="best" if checkpoint.best_model_path else None, verbose=False)
    except BaseException as exc:
        set_status(run_id, "KILLED" if type(exc).__name__ == "TrialPruned" else "FAILED", tracking_uri(opts.project_dir))
        raise
    metrics = {k: float(v) for k, v in tested[0].items()}
    if checkpoint.best_model_score is not None:
        metrics[f"{monitor}_best"] = float(checkpoint.best_model_score)
    result = {
        "experiment": exp.name,
        "seed": seed,
        "run_id": run_id,
        "metrics": metrics,
        "timing": {"fit_s": round(fit_s, 2), "epochs": trainer.current_epoch, "device": str(model.device)},
        "settings": {"data_hash": data_hash, "data": dm.describe(), "config_hash": exp.config_hash(), "parameters": n_params}
        | getattr(model, "metric_settings", lambda: {})(),
    }
    client = logger.experiment
    for path in (checkpoint.best_model_path, latest.best_model_path):
        if path:
            client.log_artifact(run_id, path, "checkpoints")
    client.log_dict(run_id, result, "metrics.json")
    (state / "done.json").write_text(json.dumps(result, indent=2))
    if opts.results_dir is not None:
        _write_seed_results(opts.results_dir / exp.name, seed, state, checkpoint.best_model_path, result)
    return result


def seed_results_dir(out: Path, seed: int) -> Path:
    """results/<exp>/seeds/seed_N/: one seed's metrics, samples and best checkpoint."""
    return out / "seeds" / f"seed_{seed}"


def _write_seed_results(out: Path, seed: int, state: Path, best_ckpt: str, result: dict[str, Any]) -> None:
    """results/<exp>/seeds/seed_N/ (metrics, samples, best checkpoint) and results/<exp>/curves/seed_N.csv.

    Curves sit apart from the seed folders because DVC tracks them as plots and the rest as outputs.
    """
    seed_dir = seed_results_dir(out, seed)
    seed_dir.mkdir(parents=True, exist_ok=True)
    (seed_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    if (state / "curve.csv").is_file():
        (out / "curves").mkdir(parents=True, exist_ok=True)
        shutil.copy(state / "curve.csv", out / "curves" / f"seed_{seed}.csv")
    if (state / "samples").is_dir():
        shutil.copytree(state / "samples", seed_dir / "samples", dirs_exist_ok=True)
    if best_ckpt:
        shutil.copy(best_ckpt, seed_dir / "best.ckpt")


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample std over seeds for every metric (std is 0 for a single seed)."""
    keys = sorted({k for r in results for k in r["metrics"]})
    summary: dict[str, Any] = {}
    for key in keys:
        values = [r["metrics"][key] for r in results if key in r["metrics"] and math.isfinite(r["metrics"][key])]
        if values:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[key] = {"mean": statistics.fmean(values), "std": std, "n": len(values)}
    return summary


def run_experiment(exp: Experiment, opts: RunOptions, seeds: list[int] | None = None) -> dict[str, Any]:
    """All seeds of one experiment, then results/<exp>/metrics.json with the per-seed and summary numbers."""
    check_experiment(exp)
    chosen = list(seeds) if seeds else list(exp.seeds)
    results = [run_seed(exp, seed, opts) for seed in chosen]
    summary = {
        "experiment": exp.name,
        "model": exp.model,
        "data": exp.data,
        "profile": exp.profile,
        "seeds": chosen,
        "summary": aggregate(results),
        "per_seed": {str(r["seed"]): r["metrics"] for r in results},
        "settings": results[0]["settings"],
        "wall_time_s": round(sum(r["timing"]["fit_s"] for r in results), 2),
    }
    if opts.results_dir is not None:
        out = opts.results_dir / exp.name
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary
