"""The `archbench` console script: its parser, one-line errors and exit codes. The handlers live in
`benchmarks.commands` (the run side) and `benchmarks.use.commands` (sample, translate, tag, score, evaluate)."""

from __future__ import annotations

import argparse
import sys

from benchmarks.commands import (cmd_baselines, cmd_claim, cmd_code_hash, cmd_collect, cmd_density, cmd_list,
                                 cmd_overhead, cmd_prepare, cmd_publish, cmd_report, cmd_speed, cmd_suite, cmd_train,
                                 cmd_tune)
from benchmarks.core.errors import ArchbenchError
from benchmarks.core.files import FULL, READ_ONLY


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

    from benchmarks.use.commands import (
        add_parsers as add_use_parsers,  # sample, translate, tag, score, evaluate
    )

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
