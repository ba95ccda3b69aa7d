"""The `archbench` commands that run, collect, judge and publish: one handler per subcommand of `benchmarks.cli`.

Heavy libraries are imported inside each handler, so `archbench --help` stays instant."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.files import check_writable


def _options(params: dict[str, Any], progress: bool = True) -> Any:
    from benchmarks.core.params import settings
    from benchmarks.run.train import RunOptions

    conf = settings(params)
    return RunOptions(
        data_dir=conf["data_dir"],
        results_dir=Path(conf["results_dir"]),
        state_dir=Path(conf["state_dir"]),
        mlflow_experiment=conf["mlflow_experiment"],
        progress_bar=progress,
        threads=conf["threads"],
    )


def cmd_list(args: argparse.Namespace) -> int:
    from benchmarks.core.params import (
        experiment_from_params,
        load_params,
        raw_experiments,
    )
    from datamodules import DATAMODULES
    from lightning_modules import MODELS

    params = load_params(args.params)
    print("models:      " + ", ".join(sorted(MODELS)))
    print("datasets:    " + ", ".join(sorted(DATAMODULES)))
    print("experiments:")
    for name, (profile, _) in raw_experiments(params).items():
        exp = experiment_from_params(params, name)
        print(f"  {name:<28} {profile:<8} {exp.model} on {exp.data}, seeds {list(exp.seeds)}")
    print("studies:     " + ", ".join(sorted(params.get("studies") or {})) + " (default); "
          + ", ".join(sorted(params.get("full_studies") or {})) + " (full)")
    print("claims:      " + ", ".join(sorted(params.get("claims") or {})) + " (default); "
          + ", ".join(sorted(params.get("full_claims") or {})) + " (full)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from benchmarks.core.params import experiment_from_params, load_params
    from benchmarks.run.train import run_experiment

    params = load_params(args.params)
    exp = experiment_from_params(params, args.experiment)
    opts = _options(params, progress=not args.no_progress)
    opts.resume = not args.restart
    if not args.stale_after > 0:
        raise ArchbenchError(f"--stale-after {args.stale_after:g}: give a positive number of seconds (default 120)")
    opts.stale_after_s = args.stale_after
    if args.continue_from is not None:
        if args.seed is None and len(exp.seeds) > 1:
            raise ArchbenchError(f"--continue-from holds one seed's checkpoint but {exp.name} has seeds "
                                 f"{list(exp.seeds)}; add --seed N")
        opts.continue_from = Path(args.continue_from)
    summary = run_experiment(exp, opts, seeds=[args.seed] if args.seed is not None else None)
    _print_summary(exp.name, summary)
    return 0


def _print_summary(name: str, summary: dict[str, Any]) -> None:
    for key, stats in summary.get("summary", {}).items():
        ci = stats.get("ci95")
        spread = f" ± {ci:.4f} (95% CI, n={stats['n']})" if ci is not None and math.isfinite(ci) else \
            f" (n={stats['n']}, no CI)"
        print(f"{name} {key}: {stats['mean']:.4f}{spread}")
    missing = summary.get("missing_seeds")
    if missing:
        print(f"{name}: seeds {missing} not finished yet; run them (`archbench train {name} --seed N`), then "
              f"`archbench collect {name}`")
    truncated = [s for s, why in summary.get("stopped_by", {}).items() if why == "max_time"]
    if truncated:
        print(f"{name}: seeds {truncated} were cut by max_time (a safety limit): their numbers are marked truncated")


def cmd_collect(args: argparse.Namespace) -> int:
    from benchmarks.core.params import (
        experiment_from_params,
        experiment_names,
        load_params,
        settings,
    )
    from benchmarks.run.results import merge_seeds

    params = load_params(args.params)
    names = args.experiments or [n for n in experiment_names(params)
                                 if (Path(settings(params)["results_dir"]) / n / "seeds").is_dir()]
    exps = [experiment_from_params(params, n) for n in names]
    for exp in exps:
        _print_summary(exp.name, merge_seeds(exp, Path(settings(params)["results_dir"]),
                                             data_dir=settings(params)["data_dir"]))
    return 0


def cmd_suite(args: argparse.Namespace) -> int:
    from benchmarks.core.params import (
        experiment_from_params,
        experiment_names,
        load_params,
    )
    from benchmarks.report.leaderboard import write_report
    from benchmarks.run.train import run_experiment

    params = load_params(args.params)
    opts = _options(params, progress=not args.no_progress)
    names = experiment_names(params, args.profile)
    exps = [experiment_from_params(params, n) for n in names]  # validate all before training any
    for exp in exps:
        run_experiment(exp, opts)
    write_report(opts.results_dir, params)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from benchmarks.core.params import load_params
    from benchmarks.run.prepare import prepare

    params = load_params(args.params)
    check_writable(Path(args.out), "--out")
    prepare(params, args.profile, Path(args.out))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from benchmarks.core.params import load_params
    from benchmarks.study.tune import run_study

    params = load_params(args.params)
    if args.restamp_from:
        from benchmarks.study.restamp import restamp

        digest = restamp(params, args.study, load_params(args.restamp_from), Path.cwd())
        print(f"study {args.study}: stamped {digest}, the definition in {args.params or 'params.yaml'}")
        return 0
    best = run_study(params, args.study, _options(params, progress=not args.no_progress), n_trials=args.n_trials)
    print(f"best {best['metric']} = {best['value']:.4f} with {best['params']}")
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    from benchmarks.claim.claims import run_claim
    from benchmarks.core.params import load_params

    if not args.stale_after > 0:
        raise ArchbenchError(f"--stale-after {args.stale_after:g}: give a positive number of seconds (default 120)")
    params = load_params(args.params)
    result = run_claim(params, args.claim, _options(params, progress=not args.no_progress), worker=args.worker,
                       stale_after_s=args.stale_after)
    if result is None:  # a worker that left while others still train: the last of them writes the table
        print(f"{args.claim}: nothing left to take; the worker that finishes last writes the table "
              f"(or run `archbench claim {args.claim}` to wait for it)")
        return 0
    print(f"{result['claim']}: {result['outcome'] or 'not judged'}. {result['verdict']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import time

    from benchmarks.core.params import load_params, settings
    from benchmarks.report.leaderboard import write_report
    from benchmarks.report.ledger import (
        compare_rows,
        format_compare,
        ledger_dir_for,
        load_ledger_at,
        nothing_to_compare,
    )

    params = load_params(args.params)
    results_dir = Path(settings(params)["results_dir"])
    ledger = load_ledger_at(args.compare, ledger_dir_for(results_dir)) if args.compare else None
    started = time.perf_counter()
    out = write_report(results_dir, params, ledger=ledger, mlflow_url=args.mlflow_url)
    print(f"wrote {out} in {time.perf_counter() - started:.2f} s (open it in a browser: file://{out.resolve()})")
    if args.compare:
        from benchmarks.report.site.build import gather

        ours = gather(results_dir, {}, None, None)["entries"]
        rows = compare_rows(ours, ledger or {})
        if not rows:  # the site is written, but there is no comparison to show
            raise ArchbenchError(nothing_to_compare(ours, ledger or {}, args.compare))
        print(format_compare(rows, args.compare))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from benchmarks.core.params import load_params, settings
    from benchmarks.report.publish import publish_all

    params = load_params(args.params)
    explicit = {"experiment": args.experiment, "claim": args.claim, "study": args.study}
    for line in publish_all(params, args.names, explicit, Path(settings(params)["results_dir"]),
                            allow_missing=args.allow_missing):
        print(line)
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    from benchmarks.core.params import load_params, settings
    from benchmarks.report.baselines import run_baselines
    from benchmarks.report.ledger import ledger_dir_for

    params = load_params(args.params)
    results = Path(settings(params)["results_dir"])
    run_baselines(params, args.experiments, args.profile, results, ledger_dir_for(results) / "baselines" if args.publish else None)
    return 0


def cmd_density(args: argparse.Namespace) -> int:
    from benchmarks.claim.density import run_density_study
    from benchmarks.core.params import load_params, settings

    params = load_params(args.params)
    conf = dict((params.get("density") or {}).get(args.profile) or {})
    allowed = {"datasets", "dims", "n_train", "n_test", "seed", "gmm_components", "cv_folds"}
    if not conf or set(conf) - allowed:
        bad = sorted(set(conf) - allowed)
        raise ArchbenchError(f"density.{args.profile}: " + (f"unknown key '{bad[0]}' (allowed: {', '.join(sorted(allowed))})"
                             if bad else "missing; define datasets and dims under density.<profile> in params.yaml"))
    out = Path(settings(params)["results_dir"]) / ("density" if args.profile == "default" else f"density_{args.profile}")
    check_writable(out, "results_dir")
    report = run_density_study(
        conf["datasets"], sorted(set(conf["dims"])), conf.get("n_train"), conf.get("n_test"), int(conf.get("seed", 0)),
        int(conf.get("gmm_components", 4)), out, cv_folds=int(conf.get("cv_folds", 5)), progress=not args.no_progress,
        threads=int(settings(params)["threads"]),
    )
    for name, entry in report["results"].items():
        print(f"{name}: crossover d = {entry['crossover']}")
    return 0


def cmd_code_hash(args: argparse.Namespace) -> int:
    from benchmarks.core.params import load_params
    from benchmarks.tools.code_deps import write_code_hashes

    written = write_code_hashes(load_params(args.params), args.profile, Path(args.out))
    print(f"wrote {len(written)} code hashes under {args.out}")
    return 0


def cmd_overhead(args: argparse.Namespace) -> int:
    from benchmarks.tools.overhead import main as overhead_main

    return overhead_main(args.rest)


def cmd_speed(args: argparse.Namespace) -> int:
    from benchmarks.tools.speed import main as speed_main

    return speed_main(args.rest)
