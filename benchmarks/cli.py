"""The `archbench` console script. Heavy libraries are imported inside the commands, so --help is instant."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.files import FULL, READ_ONLY, check_writable


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
    from datamodules import DATAMODULES
    from lightning_modules import MODELS

    from benchmarks.core.params import experiment_from_params, load_params, raw_experiments

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
    from benchmarks.core.params import experiment_from_params, experiment_names, load_params, settings
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
    from benchmarks.core.params import experiment_from_params, experiment_names, load_params
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
    from benchmarks.core.params import load_params, settings
    from benchmarks.report.leaderboard import write_report

    import time

    from benchmarks.report.ledger import (compare_rows, format_compare, ledger_dir_for, load_ledger_at,
                                          nothing_to_compare)

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


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer seed") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; seeds are integers >= 0")
    return value


class _OneLineParser(argparse.ArgumentParser):
    """argparse's usage errors as the suite's one line (and exit code 2), not a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ArchbenchError(f"{message} (see `archbench {self.prog.partition(' ')[2]} --help`)".replace("  --", " --"))


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="archbench", description="Reproducible, experiment-tracked benchmarks of classic neural architectures."
    )
    parser.add_argument("--params", default=None, help="params file (default: params.yaml or $ARCHBENCH_PARAMS)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list models, datasets, experiments and studies").set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train one experiment (all its seeds, or --seed N)")
    p.add_argument("experiment")
    p.add_argument("--seed", type=_seed, default=None, help="run only this seed (one of the experiment's seeds)")
    p.add_argument("--restart", action="store_true", help="ignore a resumable checkpoint and start over")
    p.add_argument("--continue-from", metavar="CKPT", default=None,
                   help="go on from another run's checkpoint (e.g. a finished run under a longer max_time): "
                        "weights, optimiser states, epoch and elapsed time come from it, in a new MLflow run")
    p.add_argument("--stale-after", type=float, default=120.0, metavar="SECONDS",
                   help="another worker may take over a seed whose lease heartbeat is this old")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("collect", help="merge every finished seed of experiments run as separate jobs into "
                                       "results/<exp>/metrics.json and summary.json")
    p.add_argument("experiments", nargs="*", help="experiment names (default: every experiment with seeds on disk)")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("suite", help="train every experiment of a profile, then write the report")
    p.add_argument("--profile", choices=["default", "full"], default="default")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_suite)

    p = sub.add_parser("prepare", help="locate, verify and describe the datasets a profile uses")
    p.add_argument("--profile", choices=["default", "full"], default="default")
    p.add_argument("--out", default="results/data", help="folder for the per-dataset manifests")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("tune", help="run (or continue) an Optuna study defined in params.yaml")
    p.add_argument("study")
    p.add_argument("--n-trials", type=int, default=None, help="override the study's n_trials")
    p.add_argument("--restamp-from", metavar="OLD_PARAMS", default=None,
                   help="restamp a study stamped under the params.yaml it ran with (git show <commit>:params.yaml), "
                        "where the base experiment changed only in the searched keys; runs nothing")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("claim", help="run one of the seed's claims (arms x sweep x seeds) and judge it: "
                                     "Supported, Refuted or Inconclusive")
    p.add_argument("claim")
    p.add_argument("--worker", action="store_true",
                   help="one of several workers (any machine sharing the results folder): take unfinished "
                        "cell-seeds under a lease, leave when none is left to take; the last one writes the table")
    p.add_argument("--stale-after", type=float, default=120.0, metavar="SECONDS",
                   help="take over a cell-seed whose worker has not beaten its lease's heartbeat for this long")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_claim)

    p = sub.add_parser("report", help="write results/report/: a static site (index.html: leaderboards, curves, "
                                      "claims, studies, compare view) beside the published ledger")
    p.add_argument("--compare", metavar="REV", default=None,
                   help="put the ledger as committed at git revision REV beside your results, and print the comparison")
    p.add_argument("--mlflow-url", metavar="URL", default=None,
                   help="MLflow UI address for the run links, e.g. http://127.0.0.1:5000 for `mlflow ui` "
                        "(default: MLFLOW_TRACKING_URI when it is an http server)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("publish", help="copy finished experiments, claims and studies (per-seed results, verdicts, "
                                       "trials, provenance, compute) into ledger/")
    p.add_argument("names", nargs="*", help="experiment, claim or study names; every seed, cell-seed or trial must be "
                                            "finished and current")
    for kind in ("experiment", "claim", "study"):
        p.add_argument(f"--{kind}", action="append", default=[], metavar="NAME", help=f"publish this {kind} (repeatable)")
    p.add_argument("--allow-missing", action="store_true",
                   help="publish an experiment's current seeds although some are missing or stale (named, left out, "
                        "and recorded in the ledger)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("baselines", help="compute each leaderboard task's trivial baseline on the experiments' own "
                                         "splits into results/baselines/ (--publish: also ledger/baselines/)")
    p.add_argument("experiments", nargs="*", help="experiment names (default: every experiment of --profile)")
    p.add_argument("--profile", choices=["default", "full"], default="default")
    p.add_argument("--publish", action="store_true", help="also write ledger/baselines/ (commit it)")
    p.set_defaults(func=cmd_baselines)

    p = sub.add_parser("density", help="parametric MLE vs KDE held-out likelihood against the dimension")
    p.add_argument("--profile", choices=["default", "full"], default="default")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_density)

    p = sub.add_parser("code-hash", help="write the code hash of every experiment and claim of a profile (one JSON "
                                         "each: the hash and the files it covers), which DVC's stages depend on")
    p.add_argument("--profile", choices=["default", "full"], default="default")
    p.add_argument("--out", default="results/code", help="folder for the per-experiment and per-claim files")
    p.set_defaults(func=cmd_code_hash)

    from benchmarks.use.commands import add_parsers as add_use_parsers  # sample, translate, tag, score, evaluate

    add_use_parsers(sub, _seed)

    # add_help=False: `archbench speed --help` reaches the benchmark's own parser.
    p = sub.add_parser("speed", help="time the suite's cells against torch.nn.LSTM / nn.RNN", add_help=False)
    p.set_defaults(func=cmd_speed)
    p = sub.add_parser("overhead", help="time `archbench train` end to end against a plain PyTorch loop of the "
                                        "same training (interleaved, ratio of medians)", add_help=False)
    p.set_defaults(func=cmd_overhead)
    return parser


def main(argv: list[str] | None = None) -> int:
    from benchmarks.core.errors import DivergedError

    parser = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
        if args.command in ("speed", "overhead"):
            args.rest = rest  # the benchmark parses its own options
        elif rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        code = int(args.func(args) or 0)
    except DivergedError as exc:
        print(f"archbench: failed: {exc}", file=sys.stderr)
        return 3
    except ArchbenchError as exc:
        print(f"archbench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A place the suite checks before writing can still change under it (a disk fills, a mount turns
        # read-only): still one line, naming the file.
        if exc.errno not in FULL + READ_ONLY:
            raise
        what = "no space left on its disk" if exc.errno in FULL else "it is not writable (read-only?)"
        print(f"archbench: error: cannot write {exc.filename or 'a file'}: {what}; fix that and rerun", file=sys.stderr)
        return 2
    _fast_exit(code)
    return code


def _fast_exit(code: int) -> None:
    """Leave without the interpreter's slow teardown (1.5-2 s of module finalisers after a training run).

    Only from the console script, after everything is written: streams are flushed and the MLflow client's
    (every MLflow call here is synchronous). Tests call ``main`` in-process and keep the normal exit."""
    if not getattr(sys, "_archbench_console", False) or "torch" not in sys.modules:
        return
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def console() -> int:
    sys._archbench_console = True  # type: ignore[attr-defined]
    return main()


if __name__ == "__main__":
    sys.exit(console())
