"""Training one experiment: every seed through Lightning, tracked in MLflow, written for DVC.

Order matters here. Everything that can reject the input (names, values, budget, Trainer arguments, data,
model arguments, folders) runs before the first file or MLflow run is written. Per seed, a state folder
(outside DVC's outputs, which DVC deletes before a stage runs; see run_state.py) keeps the last checkpoint
and the MLflow run id, so a killed run resumes where it stopped, in the same MLflow run.

Under DDP every process runs this function (Lightning's launcher re-runs the command); only global rank 0
writes files or talks to MLflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.run.build import check_experiment, trainer_args
from benchmarks.run.model_logging import log_seed_model
from benchmarks.core.params import Experiment
from benchmarks.run.results import load_seed_results, merge_seeds, seed_results_dir, write_seed_results
from benchmarks.run.run_state import Fingerprint, check_checkpoint, discard_checkpoints, resume_point, write_fingerprint

__all__ = ["RunOptions", "run_seed", "run_experiment", "seed_state_dir", "load_seed_results", "merge_seeds",
           "seed_results_dir", "validate_run"]


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
    threads: int | None = 1  # torch intra-op threads; one per job when jobs share a small machine
    datamodule: Any = None  # a built datamodule to reuse (a study builds it once for all its trials)
    skip_test: bool = False  # a study's trials are judged on validation; their test pass would be unused
    monitor: str | None = None  # checkpoint on this metric instead of the model's own
    on_run_created: Callable[[str], None] | None = None  # told the MLflow run id as soon as it exists
    divergence_ratio: float = 100.0  # a training loss this many times its first value means divergence


EXPERIMENT_NOTE = ("archbench: one run per experiment and seed (tags experiment, seed, model, data, profile, "
                   "stopped_by), Optuna studies as parent runs with a nested run per trial. Metric keys: train/*, "
                   "val/*, test/*; losses in nats. Compare runs of one experiment with the search box, e.g. "
                   "tags.experiment = 'words_lstm'.")


def seed_state_dir(exp: Experiment, seed: int, opts: RunOptions) -> Path:
    return opts.state_dir / "runs" / exp.name / f"seed{seed}-{exp.config_hash()}"


def _is_global_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def validate_run(exp: Experiment, opts: RunOptions) -> dict[str, Any]:
    """Every check that needs no data, before anything is written; returns the Trainer arguments."""
    from benchmarks.run.validate import check_budget, check_trainer, check_values, check_writable, resolve_strategy

    check_experiment(exp)
    check_values(exp)
    args = resolve_strategy(exp, trainer_args(exp, opts.trainer_overrides))
    check_budget(exp, args)
    if opts.results_dir is not None:
        check_writable(opts.results_dir, "results_dir")
    check_writable(opts.state_dir, "state_dir")
    check_trainer(exp, args)
    return args


def _make_logger(exp: Experiment, seed: int, opts: RunOptions, run_id: str | None, commit: str) -> Any:
    from benchmarks.run.resumable_logger import ResumableMLFlowLogger
    from benchmarks.run.tracking import artifact_location, tracking_uri

    tags = {"experiment": exp.name, "seed": str(seed), "model": exp.model, "data": exp.data, "profile": exp.profile,
            "mlflow.source.git.commit": commit.removesuffix("-dirty"), "git_dirty": str(commit.endswith("-dirty")),
            "mlflow.note.content": exp.description or f"{exp.model} on {exp.data}"}
    return ResumableMLFlowLogger(
        experiment_name=opts.mlflow_experiment, run_name=f"{exp.name}/seed{seed}",
        tracking_uri=tracking_uri(opts.project_dir), artifact_location=artifact_location(opts.project_dir),
        tags=tags | opts.tags, run_id=run_id,
    )


def _describe_experiment(client: Any, exp_id: str) -> None:
    """The note the MLflow UI shows on the experiment, set once. Two workers may set it at the same moment:
    a tracking server then refuses the second insert, which leaves the same note in place."""
    from mlflow.exceptions import MlflowException

    if "mlflow.note.content" in client.get_experiment(exp_id).tags:
        return
    try:
        client.set_experiment_tag(exp_id, "mlflow.note.content", EXPERIMENT_NOTE)
    except MlflowException:
        if "mlflow.note.content" not in client.get_experiment(exp_id).tags:
            raise


def _close_stale_run(run_id: str | None, opts: RunOptions) -> None:
    """A killed run that will not be resumed (killed before its first checkpoint, or its state no longer
    matches) is closed as KILLED, never left RUNNING."""
    from benchmarks.run.tracking import end_run, tracking_uri

    if run_id:
        end_run(run_id, "KILLED", tracking_uri(opts.project_dir))


def _continued_checkpoint(exp: Experiment, seed: int, opts: RunOptions) -> Path:
    """The best checkpoint of the same seed of the experiment ``exp`` continues, which must have been run."""
    results = opts.results_dir if opts.results_dir is not None else opts.project_dir / "results"
    ckpt = seed_results_dir(results / str(exp.continues), seed) / "best.ckpt"
    if not ckpt.is_file():
        raise ArchbenchError(f"experiment '{exp.name}' continues '{exp.continues}', but {ckpt} does not exist; "
                             f"run `archbench train {exp.continues} --seed {seed}` first")
    return ckpt


def _start_point(exp: Experiment, seed: int, opts: RunOptions, state: Path, fp: Fingerprint
                 ) -> tuple[str | None, RunOptions]:
    """The checkpoint this seed starts from (its own last one, or another run's), and the options it implies."""
    if _is_global_zero():
        resume_from = resume_point(state, fp, opts.resume, exp.name)
    else:  # rank 0 has already decided and cleared; the other ranks follow what is on disk
        last = state / "ckpt" / "last.ckpt"
        resume_from = str(last) if opts.resume and last.is_file() else None
    if resume_from is None and opts.continue_from is None and exp.continues:
        opts = replace(opts, continue_from=_continued_checkpoint(exp, seed, opts))
    if resume_from is None and opts.continue_from is not None:
        if not Path(opts.continue_from).is_file():
            raise ArchbenchError(f"--continue-from {opts.continue_from}: no such checkpoint; pass a run's "
                                 f"ckpt/last.ckpt (under {opts.state_dir / 'runs'}) or drop the option")
        check_checkpoint(Path(opts.continue_from), exp.name)
        resume_from = str(opts.continue_from)
        opts = replace(opts, tags=opts.tags | {"continued_from": resume_from})
    return resume_from, opts


def run_seed(exp: Experiment, seed: int, opts: RunOptions) -> dict[str, Any]:
    """Train, validate and test one seed; returns {'metrics', 'stopped_by', 'timing', 'settings', 'run_id', ...}."""
    import torch

    from benchmarks.core.provenance import code_hash, git_commit, lock_state, machine
    from benchmarks.run.compute import CpuClock
    from benchmarks.run.fit import fit_and_test, seed_and_build
    from benchmarks.run.tracking import ensure_tracking_store, flatten, package_versions, set_status, tracking_uri

    cpu_started = time.process_time()  # data and model building count too
    args = validate_run(exp, opts)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    rank0 = _is_global_zero()
    dm, model = seed_and_build(exp, seed, opts.data_dir, opts.datamodule, opts.model_overrides)
    data_hash = dm.content_hash()
    fp = Fingerprint(exp.config_hash(), data_hash, code_hash(exp))
    state = seed_state_dir(exp, seed, opts)
    run_id_file = state / "run_id"
    previous_run = run_id_file.read_text().strip() if rank0 and run_id_file.is_file() else None
    resume_from, opts = _start_point(exp, seed, opts, state, fp)
    commit = git_commit(opts.project_dir)
    logger, run_id = None, None
    if rank0:
        state.mkdir(parents=True, exist_ok=True)
        write_fingerprint(state, fp)
        resumes_own = resume_from is not None and opts.continue_from is None
        if not resumes_own:
            _close_stale_run(previous_run, opts)
        old_run_id = previous_run if resumes_own else None
        ensure_tracking_store(tracking_uri(opts.project_dir))  # two jobs on a fresh checkout race to create it
        logger = _make_logger(exp, seed, opts, old_run_id, commit)
        run_id = logger.run_id
        run_id_file.write_text(run_id)
        # The MLflow UI opens on the experiment: say what it holds (once; later runs leave it as it is).
        _describe_experiment(logger.experiment, logger.experiment_id)
    else:
        logger = _make_logger(exp, seed, opts, None, commit)  # rank-zero-only inside: writes nothing here
    # From here on an MLflow run is open: whatever fails (a bad callback, the Trainer, fit, test) closes it.
    try:
        if rank0 and opts.on_run_created is not None:
            opts.on_run_created(run_id)
        # Trainable parameters, so models of "comparable size" can be checked rather than assumed.
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # The model's own arguments reach MLflow through Lightning (save_hyperparameters); these are the rest.
        extra = {f"exp.{k}": v for k, v in flatten(exp.as_dict()).items() if not k.startswith("model_args.")}
        logger.log_hyperparams(extra | {"seed": seed, "data_hash": data_hash, "git_commit": commit, "code_hash": fp.code_hash,
                                        "config_hash": exp.config_hash(), "parameters": n_params} | package_versions())
        clock = CpuClock(state, resumed=resume_from is not None and opts.continue_from is None, started=cpu_started)
        fitted = fit_and_test(exp, seed, model, dm, args, state, logger, resume_from,
                              extra_callbacks=[clock, *opts.extra_callbacks], monitor=opts.monitor, progress_bar=opts.progress_bar,
                              divergence_ratio=opts.divergence_ratio, skip_test=opts.skip_test)
        stop, fit_s = fitted.stopped_by, fitted.fit_s
        budget = {k: args.get(k) for k in ("max_epochs", "max_steps", "max_time")}
        result = {
            "experiment": exp.name, "seed": seed, "metrics": fitted.metrics, "stopped_by": stop, "epochs": fitted.epochs,
            "steps": fitted.steps, "budget": budget, "config_hash": exp.config_hash(), "code_hash": fp.code_hash,
            "data_hash": data_hash,
            "settings": {"data_hash": data_hash, "data": dm.describe(), "config_hash": exp.config_hash(),
                         "parameters": n_params} | getattr(model, "metric_settings", lambda: {})(),
        }
        provenance = {"run_id": run_id, "tracking_uri": tracking_uri(opts.project_dir), "git_commit": commit,
                      "dvc_lock": lock_state(opts.project_dir), "machine": machine(torch.get_num_threads()),
                      "device": str(model.device), "fit_s": fit_s, "cpu_s": clock.total(), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if rank0:
            client = logger.experiment
            client.set_tag(run_id, "stopped_by", stop)
            for path in (fitted.best_path, fitted.last_path):
                if path:
                    client.log_artifact(run_id, path, "checkpoints")
            log_seed_model(exp, seed, fitted.best_path, run_id, tracking_uri(opts.project_dir), opts.tags)
            client.log_dict(run_id, result | {"provenance": provenance}, "result.json")
            (state / "done.json").write_text(json.dumps(result, indent=2, default=str))
            if opts.results_dir is not None:
                write_seed_results(opts.results_dir / exp.name, state, fitted.best_path, result, provenance)
    except BaseException as exc:
        killed = isinstance(exc, (KeyboardInterrupt, SystemExit))  # Lightning turns Ctrl-C into SystemExit
        if rank0:
            pruned = type(exc).__name__ == "TrialPruned"
            set_status(run_id, "KILLED" if killed or pruned else "FAILED", tracking_uri(opts.project_dir))
            if not killed:  # a failed run leaves nothing that a later run would resume
                discard_checkpoints(state)
        raise
    return result | {"run_id": run_id, "provenance": provenance,
                     "timing": {"fit_s": fit_s, "epochs": fitted.epochs, "device": str(model.device)}}


def _run_seed_alone(exp: Experiment, seed: int, opts: RunOptions) -> dict[str, Any]:
    """One seed under a lease, so two workers (here or on machines sharing the state folder) never train it
    at once; a killed worker's lease goes stale and the seed can be taken again."""
    from benchmarks.run.leases import acquire

    if not _is_global_zero():
        return run_seed(exp, seed, opts)
    lease = acquire(opts.state_dir / "leases", f"{exp.name}.seed{seed}")
    if lease is None:
        raise ArchbenchError(f"seed {seed} of {exp.name} is being trained by another worker right now "
                             f"(lease under {opts.state_dir / 'leases'}); run another seed, or wait and rerun")
    try:
        with lease:
            return run_seed(exp, seed, opts)
    finally:
        # A seed rejected before training (a bad model argument) leaves no empty lease or state folders.
        for folder in (opts.state_dir / "leases", opts.state_dir):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def run_experiment(exp: Experiment, opts: RunOptions, seeds: list[int] | None = None) -> dict[str, Any]:
    """The chosen seeds (all by default) of one experiment, then the merge of every finished seed on disk."""
    from benchmarks.run.results import aggregate
    from benchmarks.run.validate import check_seed_choice

    validate_run(exp, opts)
    check_seed_choice(exp, seeds)
    chosen = list(seeds) if seeds else list(exp.seeds)
    results = [_run_seed_alone(exp, seed, opts) for seed in chosen]
    if not _is_global_zero():  # another DDP process: rank 0 writes and reports
        return {"experiment": exp.name}
    if opts.results_dir is None:
        return {"experiment": exp.name, "seeds": chosen, "summary": aggregate(results),
                "per_seed": {str(r["seed"]): r["metrics"] for r in results}}
    return merge_seeds(exp, opts.results_dir)
