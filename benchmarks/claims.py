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
        - {type: better, arm: lstm, than: elman}
        - {type: compare, arm: peephole, than: lstm}

Verdict types, each judged with Welch's 95% confidence interval of the difference of means:

- ``better``: ``arm`` beats ``than`` at the largest sweep value (where a long-lag claim bites); the
  table still shows every value.
- ``plateau``: a single arm; no sweep value above ``after`` is significantly better than ``after``.
- ``compare``: no expected direction; states which arm is better per sweep value, or that neither is.

Every cell is an ordinary experiment run (MLflow run, checkpoints, results/claims/<claim>/runs/...),
so a killed claim resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.errors import ArchbenchError
from benchmarks.params import Experiment, deep_merge

CLAIM_SECTIONS = ("claims", "full_claims")
CLAIM_KEYS = {"statement", "model", "data", "model_args", "data_args", "trainer", "seeds", "arms", "sweep", "metric",
              "mode", "also", "verdict"}
SWEEP_ROOTS = ("model_args", "data_args", "trainer")
VERDICT_TYPES = {"better": {"arm", "than"}, "plateau": {"arm", "after"}, "compare": {"arm", "than"}}
CONFIDENCE = 0.95


# ---- statistics ---------------------------------------------------------------------------------------
def mean_ci(values: list[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """Mean and the half-width of its Student-t confidence interval (nan with fewer than 2 values)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "ci": math.nan, "n": n}
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "ci": float(half), "n": n}


def welch_interval(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): Welch's interval for the difference of two means, unequal variances."""
    from scipy import stats

    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:  # every seed of both arms agrees: the difference is exact
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return diff, diff - half, diff + half


def judge(a: list[float], b: list[float], higher_is_better: bool) -> str:
    """'better', 'worse' or 'no significant difference' for a against b at 95%."""
    diff, low, high = welch_interval(a, b)
    if math.isnan(low):
        return "inconclusive (fewer than 2 seeds)"
    if not higher_is_better:
        low, high = -high, -low
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no significant difference"


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
    seeds = conf.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or len(seeds) < 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ArchbenchError(f"claim '{name}': 'seeds' must list at least 2 integers (a CI needs them), got {seeds!r}")
    sweep = conf.get("sweep") or {"path": None, "values": [None]}
    path, values = sweep.get("path"), sweep.get("values")
    if path is not None and (not isinstance(path, str) or path.split(".")[0] not in SWEEP_ROOTS or path.count(".") != 1):
        raise ArchbenchError(f"claim '{name}': sweep.path must be <{'|'.join(SWEEP_ROOTS)}>.<key>, got {path!r}")
    if not isinstance(values, list) or not values:
        raise ArchbenchError(f"claim '{name}': sweep.values must be a non-empty list")
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
        for key in ("arm", "than"):
            if key in VERDICT_TYPES[kind] and verdict[key] not in arms:
                raise ArchbenchError(f"claim '{name}': verdict.{key} '{verdict[key]}' is not an arm ({', '.join(arms)})")
        if kind == "plateau" and verdict["after"] not in values:
            raise ArchbenchError(f"claim '{name}': verdict.after {verdict['after']!r} is not a sweep value {values}")
    return profile, conf | {"seeds": seeds, "sweep": {"path": path, "values": values}, "mode": mode, "also": also,
                            "verdict": verdicts}


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


# ---- running and judging -----------------------------------------------------------------------------
def run_claim(params: dict[str, Any], name: str, opts: Any) -> dict[str, Any]:
    """Train every cell (resuming finished seeds), then write results/claims/<name>/{claim.json, claim.png}."""
    from benchmarks.build import check_experiment
    from benchmarks.train import run_experiment

    profile, conf = claim_config(params, name)
    cells = cell_experiments(name, profile, conf)
    for exp in cells.values():  # validate every cell before training any
        check_experiment(exp)
    out = opts.results_dir / "claims" / name
    cell_opts = dataclasses.replace(opts, results_dir=out / "runs")
    per_seed: dict[tuple[str, Any], dict[str, list[float]]] = {}
    for key, exp in cells.items():
        summary = _finished(out / "runs" / exp.name / "metrics.json", exp) or run_experiment(exp, cell_opts)
        per_seed[key] = {m: [float(summary["per_seed"][str(s)][m]) for s in exp.seeds if m in summary["per_seed"][str(s)]]
                         for m in [conf["metric"], *conf["also"]]}
        if not per_seed[key][conf["metric"]]:
            raise ArchbenchError(f"claim '{name}': the runs logged no '{conf['metric']}'; pick a test/ metric the model logs")
    result = summarise(name, conf, per_seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "claim.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_claim(result, out / "claim.png")
    return result


def _finished(path: Path, exp: Experiment) -> dict[str, Any] | None:
    """A cell's earlier summary when it ran this very configuration and these seeds (a rerun skips it)."""
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    same = summary.get("settings", {}).get("config_hash") == exp.config_hash() and summary.get("seeds") == list(exp.seeds)
    return summary if same else None


def summarise(name: str, conf: dict[str, Any], per_seed: dict[tuple[str, Any], dict[str, list[float]]]) -> dict[str, Any]:
    metric = conf["metric"]
    table = [{"arm": arm, "value": value, "seeds": per_seed[(arm, value)][metric],
              **{m: mean_ci(per_seed[(arm, value)][m]) for m in [metric, *conf["also"]] if per_seed[(arm, value)][m]}}
             for arm, value in per_seed]
    verdicts = [_verdict(conf, verdict, per_seed) for verdict in conf["verdict"]]
    judged = [v["supported"] for v in verdicts if v["supported"] is not None]
    return {"claim": name, "statement": conf["statement"], "metric": metric, "mode": conf["mode"],
            "sweep": conf["sweep"], "arms": list(conf["arms"]), "also": conf["also"], "confidence": CONFIDENCE,
            "table": table, "verdicts": verdicts, "supported": all(judged) if judged else None,
            "verdict": " ".join(v["text"] for v in verdicts)}


def _verdict(conf: dict[str, Any], verdict: dict[str, Any], per_seed: dict[tuple[str, Any], dict[str, list[float]]]
             ) -> dict[str, Any]:
    metric, higher, path, values = conf["metric"], conf["mode"] == "max", conf["sweep"]["path"], conf["sweep"]["values"]
    comparisons: list[dict[str, Any]] = []

    def compare(a_key: tuple[str, Any], b_key: tuple[str, Any], a: str, b: str, value: Any) -> str:
        xa, xb = per_seed[a_key][metric], per_seed[b_key][metric]
        diff, low, high = welch_interval(xa, xb)
        outcome = judge(xa, xb, higher)
        comparisons.append({"value": value, "a": a, "b": b, "diff": diff, "low": low, "high": high, "outcome": outcome})
        return outcome

    kind = verdict["type"]
    if kind in ("better", "compare"):
        arm, than = verdict["arm"], verdict["than"]
        outcomes = [compare((arm, v), (than, v), arm, than, v) for v in values]
        where = f" at {path} = {values[-1]}" if path else ""
        if kind == "better":
            supported: bool | None = outcomes[-1] == "better"
            text = (f"{'Supported' if supported else 'Not supported'}: {arm} vs {than}{where} is {outcomes[-1]} "
                    f"on {metric}.")
        else:
            supported = None
            text = "Comparison: " + "; ".join(f"{arm} vs {than}" + (f" at {v}" if path else "") + f" is {o}"
                                              for v, o in zip(values, outcomes)) + "."
    else:  # plateau
        arm, after = verdict["arm"], verdict["after"]
        for v in values:
            if v != after:
                compare((arm, v), (arm, after), f"{arm}@{v}", f"{arm}@{after}", v)
        gains = [c for c in comparisons if _after(c["value"], after) and c["outcome"] == "better"]
        supported = not gains
        text = (f"{'Supported' if supported else 'Not supported'} ({arm}): "
                + (f"no {path} above {after} is significantly better on {metric}." if supported
                   else f"{path} = {', '.join(str(c['value']) for c in gains)} is significantly better than {after}."))
    return {"type": kind, "supported": supported, "text": text, "comparisons": comparisons}


def _after(value: Any, after: Any) -> bool:
    try:
        return value > after
    except TypeError:
        return False


def plot_claim(result: dict[str, Any], path: Path) -> None:
    """The metric (and each ``also`` metric) against the sweep value, one line per arm, 95% CI bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        ax.set(xlabel=result["sweep"]["path"] or "", ylabel=metric, title=metric)
        if metric != result["metric"] and all(r[metric]["mean"] > 0 for r in result["table"] if metric in r):
            ax.set_yscale("log")  # gradient norms span orders of magnitude
        ax.legend(fontsize=7)
    fig.suptitle(result["claim"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def claims_section(results_dir: Path, out: Path) -> str:
    """The report's claims section: statement, verdict, and the mean ± 95% CI table with its plot."""
    import shutil

    paths = sorted((results_dir / "claims").glob("*/claim.json"))
    if not paths:
        return ""
    md = ["", "## The seed's claims", "", f"Mean ± half-width of the {int(CONFIDENCE * 100)}% t-interval over seeds; "
          "verdicts from Welch's interval of the difference of means.", ""]
    for path in paths:
        claim = json.loads(path.read_text())
        metrics = [claim["metric"], *claim["also"]]
        md += [f"### {claim['claim']}", "", f"*{claim['statement']}*", "", "**Verdict:**", "",
               *(f"- {v['text']}" for v in claim["verdicts"]), "",
               "| arm | " + (claim["sweep"]["path"] or "") + " | n | " + " | ".join(metrics) + " |",
               "|---|---|---|" + "---|" * len(metrics)]
        for row in claim["table"]:
            cells = [f"{row[m]['mean']:.4g} ± {row[m]['ci']:.2g}" if m in row else "–" for m in metrics]
            md.append(f"| {row['arm']} | {row['value'] if row['value'] is not None else ''} | {len(row['seeds'])} | "
                      + " | ".join(cells) + " |")
        if path.with_name("claim.png").is_file():
            shutil.copy(path.with_name("claim.png"), out / f"claim_{claim['claim']}.png")
            md += ["", f"![{claim['claim']}](claim_{claim['claim']}.png)"]
        md.append("")
    return "\n".join(md) + "\n"
