"""results/<exp>/: what a finished seed leaves, and the merge of every finished seed into one summary.

Layout (DVC tracks ``seeds/`` as an output and ``metrics.json`` as metrics):

    results/<exp>/metrics.json                  numbers only: {key: {mean, std, ci95, n}, "n_seeds": n}
    results/<exp>/summary.json                  per-seed values, stopped_by, budget, settings (deterministic)
    results/<exp>/seeds/seed_N/result.json      one finished seed (deterministic)
    results/<exp>/seeds/seed_N/provenance.json  run id, commit, machine, wall time (ignored by DVC's hashes)
    results/<exp>/seeds/seed_N/best.ckpt, samples/     results/<exp>/curves/seed_N.csv

Everything hashed by DVC is a function of the experiment, seed, data and code alone, so a rerun on a fresh
clone reproduces dvc.lock byte for byte; what varies between machines lives in provenance.json.

The summary is always rebuilt from the seed files, never from whichever seed ran last, so seeds can run as
separate jobs on separate machines and be merged (``archbench collect EXP``). A seed file counts only when
its experiment config, code and data match the current ones: nothing stale is merged or published.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.files import atomic_copy, atomic_write_bytes, atomic_write_json
from benchmarks.core.params import Experiment

RESULT_FILE = "result.json"
PROVENANCE_FILE = "provenance.json"


def seed_results_dir(out: Path, seed: int) -> Path:
    """results/<exp>/seeds/seed_N/: one seed's result, samples and best checkpoint."""
    return out / "seeds" / f"seed_{seed}"


def write_json(path: Path, data: Any, hint: str = "") -> None:
    """Atomic: a reader (another worker, the report) never sees half a file; a full disk is one line."""
    atomic_write_json(path, data, hint)


def portable_checkpoint(src: str | Path, dst: Path, hint: str = "") -> None:
    """Copy a Lightning checkpoint without its callbacks' state, which holds absolute paths of this machine
    (and so would change DVC's hash of the output between two clones). Serialised in memory first, so its
    size is known and a full disk is one line (torch's own file writer reports it as "unexpected pos")."""
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=False)
    ckpt.pop("callbacks", None)
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    atomic_write_bytes(dst, buffer.getvalue(), hint)


def write_seed_results(out: Path, state: Path, best_ckpt: str, result: dict[str, Any], provenance: dict[str, Any]
                       ) -> None:
    """results/<exp>/seeds/seed_N/ and results/<exp>/curves/seed_N.csv for one finished seed.

    Curves sit apart from the seed folders because DVC tracks them as plots and the rest as outputs.
    """
    seed = result["seed"]
    seed_dir = seed_results_dir(out, seed)
    hint = (f"the trained seed is safe in {state}: `archbench train {result['experiment']} --seed {seed}` "
            f"writes its results without training it again")
    (seed_dir / RESULT_FILE).unlink(missing_ok=True)  # first: until the new one is whole, the seed is not complete
    if (state / "curve.csv").is_file():
        atomic_copy(state / "curve.csv", out / "curves" / f"seed_{seed}.csv", hint)
    if (state / "samples").is_dir():
        for sample in sorted(p for p in (state / "samples").rglob("*") if p.is_file()):
            atomic_copy(sample, seed_dir / "samples" / sample.relative_to(state / "samples"), hint)
    if best_ckpt:
        portable_checkpoint(best_ckpt, seed_dir / "best.ckpt", hint)
    write_json(seed_dir / PROVENANCE_FILE, provenance, hint)
    write_json(seed_dir / RESULT_FILE, result, hint)  # last: its presence means the seed is complete


def load_seed_results(exp_dir: Path) -> dict[int, dict[str, Any]]:
    """seed -> result of every finished seed under results/<exp>/seeds/ (any config; see current_seeds).

    A result file must be one seed's result of this experiment, in its own folder: a file copied into another
    seed's folder (or another experiment's) would silently stand in for that seed's real result."""
    found: dict[int, dict[str, Any]] = {}
    for path in sorted((exp_dir / "seeds").glob(f"seed_*/{RESULT_FILE}")):
        found[_folder_seed(path)] = read_result(path, exp_dir.name)
    return found


def _folder_seed(path: Path) -> int:
    text = path.parent.name.removeprefix("seed_")
    if not text.isdigit():
        raise ArchbenchError(f"{path.parent} is not a seed folder (seed_<N>); move it out of {path.parent.parent}")
    return int(text)


def read_result(path: Path, experiment: str) -> dict[str, Any]:
    """One seed's result.json, checked against the folder it lies in; every problem is one line."""
    seed = _folder_seed(path)
    fix = f"delete it and rerun that seed (`archbench train {experiment} --seed {seed}`)"
    try:
        result = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArchbenchError(f"{path} is corrupt (not JSON text); {fix}") from None
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
        raise ArchbenchError(f"{path} is not a seed result (a JSON object with experiment, seed and metrics); {fix}")
    if result.get("seed") != seed:
        raise ArchbenchError(f"{path} says seed {result.get('seed')!r} but lies in seed_{seed}/; {fix}")
    if result.get("experiment") != experiment:
        raise ArchbenchError(f"{path} is a result of experiment {result.get('experiment')!r}, not {experiment!r}; {fix}")
    return result


def current_seeds(exp: Experiment, exp_dir: Path, code: str, data: str | None = None
                  ) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """The finished seeds of ``exp`` made by this config, code and data (``data``: the current data's hash, see
    ``data_hash``), and for each one left out as stale, a line saying why."""
    kept: dict[int, dict[str, Any]] = {}
    stale: dict[int, str] = {}
    for seed, result in load_seed_results(exp_dir).items():
        if seed not in exp.seeds:
            continue
        why = stale_reason(exp, result, code, data)
        if why:
            stale[seed] = f"seed {seed}: {why}"
        else:
            kept[seed] = result
    seen = {r.get("data_hash") for r in kept.values()}
    if len(seen) > 1:
        raise ArchbenchError(f"{exp.name}: finished seeds saw different data ({', '.join(sorted(map(str, seen)))}); "
                             f"rerun them with `archbench train {exp.name} --restart`")
    return kept, stale


def stale_reason(exp: Experiment, result: dict[str, Any], code: str, data: str | None) -> str | None:
    """Why a finished seed's result is not current (another config, code or data made it); None when it is."""
    if result.get("config_hash") != exp.config_hash():
        return f"made by another config of {exp.name} ({result.get('config_hash')})"
    if result.get("code_hash") != code:
        return f"made by other code ({result.get('code_hash')}, now {code})"
    if data is not None and result.get("data_hash") != data:
        return f"made from other data ({str(result.get('data_hash'))[:12]}, now {data[:12]})"
    return None


_DATA_HASHES: dict[str, str] = {}


def data_hash(exp: Experiment, data_dir: str | None) -> str:
    """The content hash of the data ``exp`` would train on now (its datamodule built as training builds it; once
    per process and setting). A dataset that cannot be found is one line naming where it was looked for."""
    import os

    key = json.dumps([exp.data, exp.data_args, data_dir, os.environ.get("ARCHBENCH_DATA_DIR")], sort_keys=True,
                     default=str)
    if key not in _DATA_HASHES:
        import lightning.pytorch as pl

        from benchmarks.run.build import build_datamodule

        pl.seed_everything(0, workers=True, verbose=False)  # as a run seeds before it builds its data
        _DATA_HASHES[key] = build_datamodule(exp, data_dir).content_hash()
    return _DATA_HASHES[key]


def mean_std_ci(values: list[float]) -> dict[str, float]:
    """Mean, sample std and the half-width of the 95% Student-t interval (0 and nan for a single seed)."""
    from benchmarks.core.stats import mean_ci

    stats = mean_ci(values, confidence=0.95)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": stats["mean"], "std": std, "ci95": stats["ci"], "n": stats["n"]}


def aggregate(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per metric over seeds; only finite values count (a diverged seed never reaches a result file)."""
    keys = sorted({k for r in results for k in r["metrics"]})
    summary = {}
    for key in keys:
        values = [r["metrics"][key] for r in results if key in r["metrics"] and math.isfinite(r["metrics"][key])]
        if values:
            summary[key] = mean_std_ci(values)
    return summary


def headline_path(results_dir: Path, name: str) -> Path:
    """results/headline/<exp>.json: one small file per experiment in one folder, DVC's metrics of the training stage
    (``dvc exp show``, ``dvc metrics diff``), and the report stage's dependency on every experiment at once."""
    return results_dir / "headline" / f"{name}.json"


def headline(stats: dict[str, dict[str, float]], n_seeds: int) -> dict[str, Any]:
    """The seed means of the test metrics that have a better direction, to 5 significant digits, and the seed count:
    a few readable columns per experiment. The full table (std, CI, n, diagnostics) stays in metrics.json."""
    from benchmarks.core.metric_keys import direction

    keep = {k: float(f"{s['mean']:.5g}") for k, s in sorted(stats.items())
            if k.startswith("test/") and not k.endswith("_std") and direction(k) in ("min", "max")}
    return keep | {"seeds": n_seeds}


def merge_seeds(exp: Experiment, results_dir: Path, code: str | None = None, data: str | None = None,
                data_dir: str | None = None) -> dict[str, Any]:
    """Rebuild results/<exp>/metrics.json and summary.json from every current finished seed (config, code and
    data as they are now; ``data`` is computed from ``data_dir`` when not given)."""
    from benchmarks.core.provenance import code_hash

    out = results_dir / exp.name
    kept, stale = current_seeds(exp, out, code or code_hash(exp), data or data_hash(exp, data_dir))
    if not kept:
        why = f" ({'; '.join(stale.values())})" if stale else ""
        raise ArchbenchError(f"{exp.name}: no finished seed to merge{why}; run `archbench train {exp.name}` first")
    results = [kept[s] for s in sorted(kept)]
    stats = aggregate(results)
    missing = [s for s in exp.seeds if s not in kept]
    first = results[0]
    summary = {
        "experiment": exp.name, "model": exp.model, "data": exp.data, "profile": exp.profile,
        "description": exp.description, "seeds": sorted(kept), "missing_seeds": missing, "summary": stats,
        "per_seed": {str(r["seed"]): r["metrics"] for r in results},
        "stopped_by": {str(r["seed"]): r["stopped_by"] for r in results},
        "epochs": {str(r["seed"]): r["epochs"] for r in results},
        "truncated": any(r["stopped_by"] == "max_time" for r in results),
        "budget": first["budget"], "settings": first["settings"],
    }
    numbers: dict[str, Any] = {key: {k: v for k, v in s.items() if not (isinstance(v, float) and math.isnan(v))}
                               for key, s in stats.items()}
    write_json(out / "summary.json", summary)
    write_json(out / "metrics.json", numbers | {"n_seeds": len(results)})
    write_json(headline_path(results_dir, exp.name), headline(stats, len(results)))
    for line in stale.values():
        print(f"{exp.name}: left out {line}")
    return summary
