"""The seed's claims as experiments: arms x a sweep x seeds, each cell summarised as mean ± 95% CI, and a verdict.

A claim in params.yaml (``claims:`` runs with ``dvc repro``, ``full_claims:`` is the full profile)::

    long_lag:
      statement: An LSTM learns long-lag dependencies that an Elman RNN cannot.
      model: sequence_classifier
      data: long_lag
      model_args: {hidden_size: 32}
      data_args: {}
      trainer: {max_epochs: 5}
      seeds: [0, 1, 2]
      arms: {elman: {model_args: {cell: elman}}, lstm: {model_args: {cell: lstm}}}
      sweep: {path: data_args.lag, values: [5, 20, 50]}
      metric: test/acc
      mode: max                      # max: higher is better
      also: [test/grad_norm_first]   # reported beside the metric, not judged
      verdict:                       # one mapping or a list
        - {type: better, arm: lstm, than: elman, margin: 0.05}   # margin: the smallest gain that matters
        - {type: compare, arm: peephole, than: lstm}

Verdict types (``better``, ``plateau``, ``compare``) and their three outcomes, Supported, Refuted and
Inconclusive, are defined in claim_stats.py. The claim is Refuted if any verdict is, else Inconclusive if
any is, else Supported.

Every cell-seed (arm x sweep value x seed) is an ordinary run of ``run_seed`` (MLflow run, checkpoints,
results/claims/<claim>/runs/<cell>/seeds/seed_N/result.json) taken under a lease
(results/claims/.leases/<claim>/), so any number of workers sharing the results folder can run one claim
(``archbench claim NAME --worker``), a killed worker's cell-seed is taken again once its lease is stale,
and a rerun resumes. The run is fenced by its lease: a worker frozen past ``--stale-after`` stops before its
next write, with one line, and leaves the cell-seed to the worker that took it over. The table is built only
from finished seed files made by each cell's config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from benchmarks.claim.stats import CONFIDENCE, judge, mean_ci, summarise, welch_interval
from benchmarks.core.errors import ArchbenchError, DivergedError
from benchmarks.core.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from benchmarks.core.params import Experiment, check_name, deep_merge

__all__ = ["CONFIDENCE", "cell_experiments", "claim_config", "claims_section", "judge", "mean_ci", "run_claim",
           "summarise", "welch_interval"]

CLAIM_SECTIONS = ("claims", "full_claims")
CLAIM_KEYS = {"statement", "model", "data", "model_args", "data_args", "trainer", "seeds", "arms", "sweep", "metric",
              "mode", "also", "verdict"}
SWEEP_ROOTS = ("model_args", "data_args", "trainer")
VERDICT_TYPES = {"better": {"arm", "than", "margin"}, "plateau": {"arm", "after", "margin"}, "compare": {"arm", "than"}}
STALE_AFTER_S = 120.0  # a lease whose heartbeat is older than this belongs to a dead (or hung) worker
SWEEP_VALUE = re.compile(r"[A-Za-z0-9_.+-]+\Z")


# ---- definitions ----------------------------------------------------------------------------------------
def claim_config(params: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """(profile, validated mapping) of a claim; every mistake is one line naming the key and the fix."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for section in CLAIM_SECTIONS:
        entries = params.get(section) or {}
        if not isinstance(entries, dict):
            raise ArchbenchError(f"params section '{section}' must be a mapping of claim names")
        for key, conf in entries.items():
            found[key] = ("default" if section == "claims" else "full", conf)
    if name not in found:
        raise ArchbenchError(f"unknown claim '{name}' (known: {', '.join(sorted(found)) or 'none'}); add it under claims:")
    profile, conf = found[name]
    check_name("claim", name)
    if not isinstance(conf, dict):
        raise ArchbenchError(f"claim '{name}' must be a mapping (statement, model, data, arms, sweep, metric, verdict)")
    unknown = sorted(set(conf) - CLAIM_KEYS)
    if unknown:
        raise ArchbenchError(f"claim '{name}': unknown key '{unknown[0]}' (allowed: {', '.join(sorted(CLAIM_KEYS))})")
    for key in ("statement", "model", "data", "metric"):
        if not isinstance(conf.get(key), str):
            raise ArchbenchError(f"claim '{name}': '{key}' is required and must be a string")
    arms = conf.get("arms")
    if not isinstance(arms, dict) or not arms or not all(isinstance(v, dict) for v in arms.values()):
        raise ArchbenchError(f"claim '{name}': 'arms' must map arm names to overrides, e.g. {{lstm: {{model_args: {{cell: lstm}}}}}}")
    for arm in arms:
        check_name(f"claim '{name}': arm", arm)
    seeds = conf.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or len(seeds) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ArchbenchError(f"claim '{name}': 'seeds' must list at least 2 integers (a CI needs them), got {seeds!r}")
    sweep = conf.get("sweep") or {"path": None, "values": [None]}
    path, values = sweep.get("path"), sweep.get("values")
    if path is not None and (not isinstance(path, str) or path.split(".")[0] not in SWEEP_ROOTS or path.count(".") != 1):
        raise ArchbenchError(f"claim '{name}': sweep.path must be <{'|'.join(SWEEP_ROOTS)}>.<key>, got {path!r}")
    if not isinstance(values, list) or not values:
        raise ArchbenchError(f"claim '{name}': sweep.values must be a non-empty list")
    if path is not None and not all(isinstance(v, (int, float, bool)) or (isinstance(v, str) and SWEEP_VALUE.match(v))
                                    for v in values):
        raise ArchbenchError(f"claim '{name}': sweep.values must be numbers or plain words (they become part of "
                             f"folder names), got {values!r}")
    mode = conf.get("mode", "min")
    if mode not in ("min", "max"):
        raise ArchbenchError(f"claim '{name}': mode must be min or max, got {mode!r}")
    also = conf.get("also", [])
    if not isinstance(also, list) or not all(isinstance(k, str) for k in also):
        raise ArchbenchError(f"claim '{name}': 'also' must be a list of metric names")
    verdicts = conf.get("verdict")
    verdicts = [verdicts] if isinstance(verdicts, dict) else verdicts
    if not isinstance(verdicts, list) or not verdicts:
        raise ArchbenchError(f"claim '{name}': 'verdict' must be a mapping (or a list of them) with a type")
    for verdict in verdicts:
        kind = verdict.get("type") if isinstance(verdict, dict) else None
        if kind not in VERDICT_TYPES:
            raise ArchbenchError(f"claim '{name}': verdict.type must be one of {sorted(VERDICT_TYPES)}")
        missing = sorted(VERDICT_TYPES[kind] - set(verdict))
        if missing:
            raise ArchbenchError(f"claim '{name}': a '{kind}' verdict needs '{missing[0]}'")
        extra = sorted(set(verdict) - VERDICT_TYPES[kind] - {"type"})
        if extra:
            raise ArchbenchError(f"claim '{name}': a '{kind}' verdict has no key '{extra[0]}' "
                                 f"(allowed: type, {', '.join(sorted(VERDICT_TYPES[kind]))})")
        for key in ("arm", "than"):
            if key in VERDICT_TYPES[kind] and verdict[key] not in arms:
                raise ArchbenchError(f"claim '{name}': verdict.{key} '{verdict[key]}' is not an arm ({', '.join(arms)})")
        margin = verdict.get("margin", 1.0)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < math.inf:
            raise ArchbenchError(f"claim '{name}': verdict.margin must be a positive number in {conf['metric']}'s "
                                 f"units (the smallest difference that matters), got {margin!r}")
        if kind == "plateau":
            _check_plateau(name, verdict["after"], values)
    return profile, conf | {"seeds": seeds, "sweep": {"path": path, "values": values}, "mode": mode, "also": also,
                            "verdict": verdicts}


def _check_plateau(name: str, after: Any, values: list[Any]) -> None:
    if after not in values:
        raise ArchbenchError(f"claim '{name}': verdict.after {after!r} is not a sweep value {values}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ArchbenchError(f"claim '{name}': a plateau needs numeric sweep values, got {values}")
    if after == min(values) or after == max(values):
        raise ArchbenchError(f"claim '{name}': verdict.after {after!r} needs sweep values below and above it "
                             f"(a gain up to it, and a plateau beyond it), got {values}")


def cell_experiments(name: str, profile: str, conf: dict[str, Any]) -> dict[tuple[str, Any], Experiment]:
    """(arm, sweep value) -> the Experiment of that cell: the claim's base, the arm's overrides, the swept value."""
    base = {k: dict(conf.get(k) or {}) for k in SWEEP_ROOTS}
    path = conf["sweep"]["path"]
    cells = {}
    for arm, override in conf["arms"].items():
        bad = sorted(set(override) - set(SWEEP_ROOTS))
        if bad:
            raise ArchbenchError(f"claim '{name}': arm '{arm}' overrides '{bad[0]}' (allowed: {', '.join(SWEEP_ROOTS)})")
        merged = deep_merge(base, override)
        for value in conf["sweep"]["values"]:
            parts = dict(merged)
            label = arm
            if path is not None:
                root, key = path.split(".")
                parts = deep_merge(parts, {root: {key: value}})
                label = f"{arm}_{key}{value}"
            cells[(arm, value)] = Experiment(
                name=f"claim_{name}_{label}", model=conf["model"], data=conf["data"], model_args=parts["model_args"],
                data_args=parts["data_args"], trainer=parts["trainer"], seeds=tuple(conf["seeds"]), profile=profile,
                description=f"claim {name}: arm {arm}" + (f", {path} = {value}" if path else ""),
            )
    return cells


# ---- running ----------------------------------------------------------------------------------------------
def run_claim(params: dict[str, Any], name: str, opts: Any, worker: bool = False,
              stale_after_s: float = STALE_AFTER_S) -> dict[str, Any] | None:
    """Train every unfinished cell-seed under a lease, then write results/claims/<name>/{claim.json, claim.png}.

    Several processes may run this at once, on machines sharing the results folder. A plain run waits for
    cell-seeds held by other workers (and takes over any whose lease goes stale), then writes the table. A
    ``worker`` leaves as soon as nothing is left to take, returning None unless everything is finished; the
    last worker to finish writes the table.
    """
    from benchmarks.core.files import check_writable
    from benchmarks.run.build import check_experiment
    from benchmarks.run.run_groups import claim_parent_tags
    from benchmarks.run.tracker_link import TrackerLink
    from benchmarks.run.tracking import check_tracking_uri, tracking_uri

    profile, conf = claim_config(params, name)
    cells = cell_experiments(name, profile, conf)
    for exp in cells.values():  # validate every cell before training any
        check_experiment(exp)
    for folder, what in ((opts.results_dir, "results_dir"), (opts.state_dir, "state_dir")):
        check_writable(folder, what)  # a read-only checkout: one line before any lease or run
    check_tracking_uri(tracking_uri(opts.project_dir))
    out = opts.results_dir / "claims" / name
    _drop_stale_table(out, conf)
    # The parent run is made (or found) on the tracking server within the tracker's retry window, said on stderr.
    link = TrackerLink(tracking_uri(opts.project_dir), opts.outbox(), f"claim.{name}")
    parent = link.retried(claim_parent_tags, name, conf.get("statement", ""), opts)
    link.close()
    opts = dataclasses.replace(opts, tags=opts.tags | parent)
    if not _work(name, list(cells.values()), out / "runs", dataclasses.replace(opts, results_dir=out / "runs"),
                 opts.results_dir / "claims" / ".leases" / name, worker, stale_after_s):
        return None
    failed = [(exp.name, seed, why) for exp in cells.values() for seed, why in diverged_seeds(exp, out / "runs").items()]
    if failed:
        cell, _, why = failed[0]
        raise DivergedError(f"claim '{name}': {len(failed)} cell-seed(s) diverged, first: {why}; "
                            f"no verdict is written from failed runs; change the recipe (e.g. a lower lr) and rerun, or "
                            f"delete {out / 'runs' / cell / DIVERGED_DIR} to retry as is")
    return write_table(name, conf, cells, out)


# A diverged cell-seed leaves a note here (per config hash), so that no worker retrains it and the claim says why.
DIVERGED_DIR = "diverged"


def diverged_seeds(exp: Experiment, runs_dir: Path) -> dict[int, str]:
    """seed -> reason, for the seeds of this very config that diverged."""
    found = {}
    for path in sorted((runs_dir / exp.name / DIVERGED_DIR).glob("seed_*.json")):
        note = json.loads(path.read_text())
        if note.get("config_hash") == exp.config_hash() and note.get("seed") in exp.seeds:
            found[int(note["seed"])] = str(note.get("reason", "diverged"))
    return found


def _settled(exp: Experiment, runs_dir: Path) -> set[int]:
    """Seeds of this cell that need no more work: finished, or diverged (a diverged one is never retried)."""
    return set(finished_seeds(exp, runs_dir)) | set(diverged_seeds(exp, runs_dir))


def _note_divergence(exp: Experiment, seed: int, runs_dir: Path, reason: str) -> None:
    atomic_write_json(runs_dir / exp.name / DIVERGED_DIR / f"seed_{seed}.json",
                      {"seed": seed, "config_hash": exp.config_hash(), "reason": reason})


def _conf_hash(conf: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _drop_stale_table(out: Path, conf: dict[str, Any]) -> None:
    """A table of another definition of the claim is removed before any work, so it is never mistaken for this one."""
    table = out / "claim.json"
    if table.is_file() and json.loads(table.read_text()).get("config_hash") != _conf_hash(conf):
        table.unlink(missing_ok=True)
        (out / "claim.png").unlink(missing_ok=True)


def finished_seeds(exp: Experiment, runs_dir: Path) -> dict[int, dict[str, Any]]:
    """seed -> result of every finished seed of this cell made by this very config (nothing stale counts)."""
    from benchmarks.run.train import load_seed_results

    return {seed: result for seed, result in load_seed_results(runs_dir / exp.name).items()
            if seed in exp.seeds and result.get("config_hash") == exp.config_hash()}


def _work(name: str, cells: list[Experiment], runs_dir: Path, opts: Any, leases: Path, worker: bool,
          stale_after_s: float) -> bool:
    """Take unfinished cell-seeds one at a time under a lease until none is left; True when all are finished."""
    from benchmarks.run.leases import acquire, holders
    from benchmarks.run.train import run_seed

    heartbeat_s = min(20.0, stale_after_s / 6)
    waited = False
    while True:
        left = [(exp, seed) for exp in cells for settled in [_settled(exp, runs_dir)]  # one read per cell
                for seed in exp.seeds if seed not in settled]
        if not left:
            return True
        took = False
        for exp, seed in left:
            lease = acquire(leases, f"{exp.name}.seed{seed}", heartbeat_s, stale_after_s)
            if lease is None:
                continue  # a live worker trains it
            with lease:
                # It may have finished (or diverged) between our look and the lease.
                if seed not in _settled(exp, runs_dir):
                    try:
                        # Fenced by the lease: a worker frozen past stale_after stops before its next write.
                        run_seed(exp, seed, dataclasses.replace(opts, lease=lease))
                        print(f"claim {name}: trained {exp.name} seed {seed}", flush=True)
                    except DivergedError as exc:  # a result of the recipe, not of this worker: nobody retries it
                        _note_divergence(exp, seed, runs_dir, str(exc).split(";")[0])
                        print(f"claim {name}: {exp.name} seed {seed} diverged; noted, not retried", flush=True)
            took = True
            break
        if took:
            continue
        if worker:
            print(f"claim {name}: {len(left)} cell-seeds are held by other workers; the last to finish writes "
                  f"the table", flush=True)
            return False
        if not waited:
            print(f"claim {name}: waiting for {len(holders(leases, stale_after_s))} cell-seeds held by other "
                  f"workers", flush=True)
            waited = True
        time.sleep(min(5.0, heartbeat_s))


def write_table(name: str, conf: dict[str, Any], cells: dict[tuple[str, Any], Experiment], out: Path) -> dict[str, Any]:
    """claim.json and claim.png from the finished seed files alone (any worker may write them; same content)."""
    runs, metrics = out / "runs", [conf["metric"], *conf["also"]]
    per_seed: dict[tuple[str, Any], dict[str, list[float]]] = {}
    for key, exp in cells.items():
        done = finished_seeds(exp, runs)
        results = [done[s] for s in exp.seeds if s in done]
        per_seed[key] = {m: [float(r["metrics"][m]) for r in results if m in r["metrics"]] for m in metrics}
        if not per_seed[key][conf["metric"]]:
            raise ArchbenchError(f"claim '{name}': the runs logged no '{conf['metric']}'; pick a test/ metric the model logs")
    first = next(iter(finished_seeds(next(iter(cells.values())), runs).values()))
    result = summarise(name, conf, per_seed) | {"unit": _unit(conf["metric"], first.get("settings", {})),
                                                "config_hash": _conf_hash(conf)}
    plot_claim(result, out / "claim.png")
    atomic_write_text(out / "claim.json", json.dumps(result, indent=2) + "\n")  # last: a claim.json means its plot is there
    return result


def plot_claim(result: dict[str, Any], path: Path) -> None:
    """The metric (and each ``also`` metric) against the sweep value, one line per arm, 95% CI bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.core.metric_keys import label

    metrics = [result["metric"], *result["also"]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    values = result["sweep"]["values"]
    for ax, metric in zip(axes[0], metrics):
        for arm in result["arms"]:
            rows = [r for r in result["table"] if r["arm"] == arm and metric in r]
            xs = list(range(len(rows))) if result["sweep"]["path"] is None else [values.index(r["value"]) for r in rows]
            ax.errorbar(xs, [r[metric]["mean"] for r in rows], yerr=[r[metric]["ci"] for r in rows], marker="o",
                        capsize=3, label=arm)
        ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set(xlabel=result["sweep"]["path"] or "", ylabel=label(metric), title=metric)
        if metric != result["metric"] and all(r[metric]["mean"] > 0 for r in result["table"] if metric in r):
            ax.set_yscale("log")  # gradient norms span orders of magnitude
        ax.legend(fontsize=7)
    fig.suptitle(f"{result['claim']}: {result['outcome'] or 'not judged'}", fontsize=9)
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, dpi=110, format="png")
    plt.close(fig)
    atomic_write_bytes(path, image.getvalue())  # workers may write it at once: each its own temporary file


def _unit(metric: str, settings: dict[str, Any]) -> str:
    """The metric's unit; a loss has none of its own, its model records one (e.g. nats per character)."""
    from benchmarks.core.metric_keys import lookup

    known = lookup(metric)
    unit = known.unit if known is not None else ""
    return unit or (str(settings.get("loss_unit", "")) if metric.endswith("loss") else "")


def _margin(verdict: dict[str, Any], claim: dict[str, Any]) -> str:
    if "margin" not in verdict:
        return "not judged"
    unit = claim.get("unit", "")
    return f"margin {verdict['margin']:g}{' ' + unit if unit else ''} on {claim['metric']}"


def claims_section(results_dir: Path, out: Path) -> str:
    """The report's claims section: statement, outcome, each verdict with its margin, the table and plot."""
    from benchmarks.core.files import atomic_copy

    paths = sorted((results_dir / "claims").glob("*/claim.json"))
    if not paths:
        return ""
    md = ["", "## The seed's claims", "", f"Mean ± half-width of the {int(CONFIDENCE * 100)}% t-interval over seeds. "
          "A verdict is Supported or Refuted by Welch's 95% interval of the gain, or Refuted by an equivalence test "
          "(TOST) at its margin, the smallest difference that matters; otherwise it is Inconclusive and says what "
          "these seeds can detect. A claim is Refuted if any verdict is, else Inconclusive if any is.", ""]
    for path in paths:
        claim = json.loads(path.read_text())
        metrics = [claim["metric"], *claim["also"]]
        md += [f"### {claim['claim']}: {claim['outcome'] or 'not judged'}", "", f"*{claim['statement']}*", "",
               f"**Verdict:** {claim['outcome'] or 'not judged'}", "",
               *(f"- {v['type']} ({_margin(v, claim)}): {v['text']}" for v in claim["verdicts"]), "",
               "| arm | " + (claim["sweep"]["path"] or "") + " | n | " + " | ".join(metrics) + " |",
               "|---|---|---|" + "---|" * len(metrics)]
        for row in claim["table"]:
            cells = [f"{row[m]['mean']:.4g} ± {row[m]['ci']:.2g}" if m in row else "–" for m in metrics]
            md.append(f"| {row['arm']} | {row['value'] if row['value'] is not None else ''} | {len(row['seeds'])} | "
                      + " | ".join(cells) + " |")
        if path.with_name("claim.png").is_file():
            atomic_copy(path.with_name("claim.png"), out / f"claim_{claim['claim']}.png")
            md += ["", f"![{claim['claim']}](claim_{claim['claim']}.png)"]
        md.append("")
    return "\n".join(md) + "\n"
