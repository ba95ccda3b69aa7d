"""Training one experiment: every seed through Lightning, tracked in MLflow, written for DVC.

Order matters here. Everything that can reject the input (names, values, budget, Trainer arguments, data,
model arguments, folders) runs before the first file or MLflow run is written. Per seed, a state folder
(outside DVC's outputs, which DVC deletes before a stage runs; see run_state.py) keeps the last checkpoint
and the MLflow run id, so a killed run resumes where it stopped, in the same MLflow run. One seed's steps
are ``SeedRun``'s (seed_run.py); here are the options, the lease around a seed, and the merge of seeds.

Under DDP every process runs this function (Lightning's launcher re-runs the command); only global rank 0
writes files or talks to MLflow.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.params import Experiment
from benchmarks.run.build import check_experiment, trainer_args
from benchmarks.run.results import load_seed_results, merge_seeds, seed_results_dir

__all__ = ["RunOptions", "run_seed", "run_experiment", "seed_state_dir", "load_seed_results", "merge_seeds",
           "seed_results_dir", "validate_run", "is_global_zero"]


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
    lease: Any = None  # the Lease this seed is trained under: every write is fenced by it (leases.py)
    stale_after_s: float = 120.0  # a seed lease whose heartbeat is older than this may be taken over
    outbox_dir: Path | None = None  # tracking writes that wait for the server (default <state_dir>/outbox)

    def outbox(self) -> Path:
        return self.outbox_dir if self.outbox_dir is not None else self.state_dir / "outbox"


EXPERIMENT_NOTE = ("archbench: one run per experiment and seed (tags experiment, seed, model, data, profile, "
                   "stopped_by), Optuna studies as parent runs with a nested run per trial. Metric keys: train/*, "
                   "val/*, test/*; losses in nats. Compare runs of one experiment with the search box, e.g. "
                   "tags.experiment = 'words_lstm'.")


def seed_state_dir(exp: Experiment, seed: int, opts: RunOptions) -> Path:
    return opts.state_dir / "runs" / exp.name / f"seed{seed}-{exp.config_hash()}"


def is_global_zero() -> bool:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    # Lightning sets rank_zero_only.rank on import (from the launcher's environment, else 0).
    return rank_zero_only.rank == 0


def validate_run(exp: Experiment, opts: RunOptions) -> dict[str, Any]:
    """Every check that needs no data, before anything is written; returns the Trainer arguments."""
    from benchmarks.run.tracking import check_tracking_uri, tracking_uri
    from benchmarks.core.files import check_writable
    from benchmarks.run.validate import check_budget, check_trainer, check_values, resolve_strategy

    check_experiment(exp)
    check_values(exp)
    args = resolve_strategy(exp, trainer_args(exp, opts.trainer_overrides))
    check_budget(exp, args)
    if opts.results_dir is not None:
        check_writable(opts.results_dir, "results_dir", setting=True)
    check_writable(opts.state_dir, "state_dir", setting=True)
    check_tracking_uri(tracking_uri(opts.project_dir))
    check_trainer(exp, args)
    return args


def run_seed(exp: Experiment, seed: int, opts: RunOptions) -> dict[str, Any]:
    """Train, validate and test one seed; returns {'metrics', 'stopped_by', 'timing', 'settings', 'run_id', ...}.

    The steps (prepare, open tracking, fit, record, publish, close tracking) are ``SeedRun``'s (seed_run.py)."""
    from benchmarks.run.seed_run import SeedRun

    return SeedRun(exp, seed, opts).run()


def _run_seed_alone(exp: Experiment, seed: int, opts: RunOptions) -> dict[str, Any]:
    """One seed under a lease, so two workers (here or on machines sharing the state folder) never train it
    at once; a killed worker's lease goes stale and the seed can be taken again."""
    from benchmarks.run.leases import acquire

    if not is_global_zero():
        return run_seed(exp, seed, opts)
    lease = acquire(opts.state_dir / "leases", f"{exp.name}.seed{seed}", heartbeat_s=min(20.0, opts.stale_after_s / 6),
                    stale_after_s=opts.stale_after_s)
    if lease is None:
        raise ArchbenchError(f"seed {seed} of {exp.name} is being trained by another worker right now "
                             f"(lease under {opts.state_dir / 'leases'}); run another seed, or wait and rerun")
    try:
        with lease:
            return run_seed(exp, seed, replace(opts, lease=lease))
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
    if not is_global_zero():  # another DDP process: rank 0 writes and reports
        return {"experiment": exp.name}
    if opts.results_dir is None:
        return {"experiment": exp.name, "seeds": chosen, "summary": aggregate(results),
                "per_seed": {str(r["seed"]): r["metrics"] for r in results}}
    return merge_seeds(exp, opts.results_dir, data=results[-1]["data_hash"])  # the data these seeds just saw
