"""A study's definition in params.yaml: validated whole before anything is created, each problem one line.

Checks: pruner kind and keys, ranges (low <= high, low > 0 on a log scale), categorical choices, spec
keys, the metric (a validation key of the vocabulary whose direction agrees), direction, n_trials and the
worker settings; a metric the model does not log stops its first trial at the sanity check. Also the
sampler and pruner the definition names, and ``definition_hash``, which a continued study must match.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.params import Experiment, check_name

STUDY_KEYS = {"experiment", "n_trials", "metric", "direction", "seed", "pruner", "search_space", "trainer",
              "description", "heartbeat_s", "max_retry"}
PRUNER_KEYS = {"median": {"n_startup_trials", "n_warmup_steps", "interval_steps"},
               "percentile": {"percentile", "n_startup_trials", "n_warmup_steps", "interval_steps"},
               "hyperband": {"min_resource", "max_resource", "reduction_factor"},
               "none": set()}
SPEC_KEYS = {"int": {"type", "low", "high", "step", "log"}, "float": {"type", "low", "high", "step", "log"},
             "categorical": {"type", "choices"}}

def study_config(params: dict[str, Any], name: str) -> dict[str, Any]:
    # `studies` run in the default suite (a DVC stage each); `full_studies` only on request.
    studies = (params.get("studies") or {}) | (params.get("full_studies") or {})
    if name not in studies:
        raise ArchbenchError(f"unknown study '{name}' (known: {', '.join(sorted(studies)) or 'none'}); define it under 'studies' in params.yaml")
    conf = studies[name]
    check_name("study", name)
    if not isinstance(conf, dict):
        raise ArchbenchError(f"study '{name}' must be a mapping (experiment, n_trials, metric, search_space, ...)")
    unknown = set(conf) - STUDY_KEYS
    if unknown:
        raise ArchbenchError(f"study '{name}': unknown key '{sorted(unknown)[0]}' (allowed: {', '.join(sorted(STUDY_KEYS))})")
    if not isinstance(conf.get("search_space"), dict) or not conf["search_space"]:
        raise ArchbenchError(f"study '{name}': 'search_space' must map model_args names to distributions")
    if conf.get("direction", "minimize") not in ("minimize", "maximize"):
        raise ArchbenchError(f"study '{name}': direction must be minimize or maximize, got {conf.get('direction')!r}")
    check_positive(name, "n_trials", conf.get("n_trials"))
    check_positive(name, "heartbeat_s", conf.get("heartbeat_s", 30))
    if not isinstance(conf.get("max_retry", 2), int) or conf.get("max_retry", 2) < 0:
        raise ArchbenchError(f"study '{name}': max_retry must be a non-negative integer")
    check_pruner(name, conf.get("pruner"))
    for key, spec in conf["search_space"].items():
        check_spec(name, key, spec)
    check_metric(name, conf.get("metric", "val/loss"), conf.get("direction", "minimize"))
    return conf


def check_positive(study: str, key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ArchbenchError(f"study '{study}': {key} must be a positive integer, got {value!r}")


def check_pruner(study: str, conf: Any) -> None:
    if conf is None:
        return
    if not isinstance(conf, dict):
        raise ArchbenchError(f"study '{study}': pruner must be a mapping such as {{kind: median, n_startup_trials: 2}}, got {conf!r}")
    kind = conf.get("kind", "median")
    if kind not in PRUNER_KEYS:
        raise ArchbenchError(f"study '{study}': unknown pruner kind {kind!r} (known: {', '.join(PRUNER_KEYS)})")
    bad = sorted(set(conf) - PRUNER_KEYS[kind] - {"kind", "sampler_startup_trials"})
    if bad:
        allowed = ", ".join(sorted(PRUNER_KEYS[kind] | {"kind", "sampler_startup_trials"}))
        raise ArchbenchError(f"study '{study}': pruner key '{bad[0]}' does not apply to the {kind} pruner (allowed: {allowed})")


def check_spec(study: str, key: str, spec: Any) -> None:
    where = f"study '{study}': search_space.{key}"
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in SPEC_KEYS:
        raise ArchbenchError(f"{where} needs type int, float or categorical, got {kind!r}")
    bad = sorted(set(spec) - SPEC_KEYS[kind])
    if bad:
        raise ArchbenchError(f"{where}: unknown key '{bad[0]}' for a {kind} (allowed: {', '.join(sorted(SPEC_KEYS[kind]))})")
    if kind == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise ArchbenchError(f"{where}: choices must be a non-empty list")
        return
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise ArchbenchError(f"{where}: low and high must be numbers, got {low!r} and {high!r}")
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        raise ArchbenchError(f"{where}: an int range needs integer low and high, got {low!r} and {high!r}")
    if low > high:
        raise ArchbenchError(f"{where}: low ({low}) is above high ({high})")
    if spec.get("log") and low <= 0:
        raise ArchbenchError(f"{where}: a log range needs low > 0, got {low}")
    if spec.get("log") and spec.get("step") not in (None, 1):
        raise ArchbenchError(f"{where}: a log range takes no step")


def check_metric(study: str, metric: Any, direction: str) -> None:
    """The objective must be a validation key of the vocabulary (test keys must not choose hyperparameters)."""
    from benchmarks.core.metric_keys import lookup

    if not isinstance(metric, str) or not metric.startswith("val/"):
        raise ArchbenchError(f"study '{study}': metric {metric!r} is not a validation key; tune on a val/ metric (e.g. val/loss)")
    known = lookup(metric)
    if known is None:
        raise ArchbenchError(f"study '{study}': metric '{metric}' is not in the metric vocabulary (benchmarks/core/metric_keys.py); use a key the model logs, e.g. val/loss")
    wanted = {"min": "minimize", "max": "maximize"}.get(known.direction)
    if wanted and wanted != direction:
        raise ArchbenchError(f"study '{study}': {metric} is better when {known.direction}imised; set direction: {wanted}")


_DEFINING = ("metric", "direction", "seed", "pruner", "search_space", "trainer")


def _digest(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def definition_hash(conf: dict[str, Any], base: Experiment) -> str:
    """What a trial's value depends on; n_trials, description and worker settings may change as a study goes on.

    The base experiment counts without the values of the searched keys (every trial sets its own) and without its
    seeds (a trial runs the study's seed): applying a study's best to its base experiment leaves the study current.
    """
    searched = set(conf.get("search_space") or {})
    shown = base.as_dict() | {"seeds": None,
                              "model_args": {k: v for k, v in base.model_args.items() if k not in searched}}
    return _digest([{k: conf.get(k) for k in _DEFINING}, shown])


def legacy_definition_hash(conf: dict[str, Any], base: Experiment) -> str:
    """The stamp studies carried before the base's searched keys and seeds were left out: a study stamped so is
    restamped where its definition is unchanged (see study.parent and ``archbench tune --restamp-from``)."""
    return _digest([{k: conf.get(k) for k in _DEFINING}, base.as_dict()])


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    chosen = {}
    for key, spec in space.items():
        if spec["type"] == "int":
            chosen[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False))
        elif spec["type"] == "float":
            chosen[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), step=spec.get("step"),
                                              log=spec.get("log", False))
        elif any(isinstance(c, (list, dict)) for c in spec["choices"]):
            # Optuna stores only scalar choices: suggest their JSON text and decode it.
            chosen[key] = json.loads(trial.suggest_categorical(key, [json.dumps(c) for c in spec["choices"]]))
        else:
            chosen[key] = trial.suggest_categorical(key, spec["choices"])
    return chosen


def make_sampler(conf: dict[str, Any], seed: int) -> Any:
    import optuna

    startup = int((conf.get("pruner") or {}).get("sampler_startup_trials", 4))
    # constant_liar: running trials count as bad guesses, so concurrent workers explore apart.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def make_pruner(conf: dict[str, Any]) -> Any:
    import optuna

    given = {k: v for k, v in (conf.get("pruner") or {}).items() if k not in ("kind", "sampler_startup_trials")}
    kind = (conf.get("pruner") or {}).get("kind", "median")
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**given)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(**given)
    return optuna.pruners.MedianPruner(**({"n_startup_trials": 2, "n_warmup_steps": 1} | given))


def metric_check(study: str, model: str, metric: str) -> Any:
    """A callback that stops a trial at the sanity check (before any training step) when the model does not
    log the study's metric, naming the validation keys it does log."""
    import lightning.pytorch as pl

    class MetricCheck(pl.Callback):
        def _check(self, trainer: Any, promised: bool = False) -> None:
            if metric not in trainer.callback_metrics and not promised:
                logged = sorted(k for k in trainer.callback_metrics if k.startswith("val/")) or ["none"]
                raise ArchbenchError(f"study '{study}': model {model} does not log '{metric}' (its validation keys: "
                                     f"{', '.join(logged)}); set the study's metric to one of them")

        def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:
            # A model's own checkpoint key may be logged only by a real validation pass (a GAN's val/fid skips
            # the sanity batches): that one is checked at the first validation end instead.
            self._check(trainer, promised=metric == pl_module.monitor)

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking:
                self._check(trainer)

    return MetricCheck()
