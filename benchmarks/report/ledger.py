"""The results ledger: published per-seed results, tracked in git, so a fresh clone shows the benchmark.

``archbench publish EXP`` copies a finished experiment into two files:

- ``ledger/<exp>.json``: every current seed's metrics, stopped_by, epochs and steps, the budget, the
  settings and config, and each seed's provenance (MLflow run, commit, machine, threads, device, wall
  time). Keys are sorted and nothing depends on when it was published, so publishing twice gives the
  same bytes; the file is written atomically.
- ``ledger/metrics/<exp>.json``: numbers only (mean, std, ci95, n per metric), declared as DVC metrics,
  so ``dvc metrics diff REV`` compares the published benchmark between two revisions.
- ``ledger/samples/<exp>/seed_N/``: the sample images of the first seed (a few tens of KB each), so a
  fresh clone's report shows what the model makes; text samples of every seed go in the record itself.

Nothing diverged or stale is published: every seed must be finished and made by the current config, code
and data (the same rule as ``archbench collect``). ``--allow-missing`` publishes the current seeds alone; the
missing and stale ones are named, left out, and the record says so (``allow_missing``, ``stale_seeds``).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.stats import within

SCHEMA = 1
# Curves make the published report show training dynamics too; thinned to keep a ledger file small.
MAX_CURVE_POINTS = 200


def ledger_dir_for(results_dir: Path) -> Path:
    """ledger/ beside results/ (the project root for the default settings)."""
    return results_dir.parent / "ledger"


def build_record(exp: Any, results_dir: Path, code: str, data: str | None = None,
                 allow_missing: bool = False) -> dict[str, Any]:
    """The ledger record of ``exp`` from its finished seeds, or one line saying why it cannot be published."""
    from benchmarks.run.results import PROVENANCE_FILE, current_seeds, seed_results_dir
    from benchmarks.report.site.collect import mlflow_experiment_id, read_curves, read_json

    exp_dir = results_dir / exp.name
    kept, stale = current_seeds(exp, exp_dir, code, data)
    completeness = check_complete(exp, kept, stale, allow_missing)
    if not kept:
        raise ArchbenchError(f"cannot publish {exp.name}: no finished seed under {exp_dir / 'seeds'}; "
                             f"run `archbench train {exp.name}` first")
    diverged = sorted(s for s, r in kept.items() if r.get("stopped_by") == "diverged")
    if diverged:
        raise ArchbenchError(f"cannot publish {exp.name}: seed {diverged[0]} diverged; fix the recipe and rerun it")
    seeds = {}
    for seed, result in sorted(kept.items()):
        prov_path = seed_results_dir(exp_dir, seed) / PROVENANCE_FILE
        prov = read_json(prov_path) if prov_path.is_file() else {}
        if prov.get("run_id") and "experiment_id" not in prov:
            prov["experiment_id"] = mlflow_experiment_id(prov.get("tracking_uri"), prov["run_id"])
        seeds[str(seed)] = {"metrics": result["metrics"], "stopped_by": result.get("stopped_by"),
                            "epochs": result.get("epochs"), "steps": result.get("steps"), "provenance": prov}
    first = kept[min(kept)]
    curves = {s: thin(c) for s, c in read_curves(exp_dir).items() if int(s) in kept}
    return {
        "schema": SCHEMA, "experiment": exp.name, "model": exp.model, "data": exp.data, "profile": exp.profile,
        "description": exp.description, "config": exp.as_dict(), "config_hash": exp.config_hash(), "code_hash": code,
        "data_hash": first.get("data_hash"), "budget": first.get("budget", {}), "settings": first.get("settings", {}),
        "seeds": seeds, "missing_seeds": [s for s in exp.seeds if s not in kept],
        "truncated": any(r.get("stopped_by") == "max_time" for r in kept.values()),
        "summary": numbers(record_values(seeds)), "curves": curves,
        "samples": sample_index(exp.name, exp_dir, sorted(kept)),
    } | completeness


def check_complete(exp: Any, kept: dict[int, Any], stale: dict[int, str], allow_missing: bool) -> dict[str, Any]:
    """Every seed of ``exp`` finished and current, or (``--allow-missing``) the ones that are not named and left
    out; the record says which rule it was published under."""
    missing = [s for s in exp.seeds if s not in kept]
    if missing and (kept or stale) and not allow_missing:
        unfinished = [s for s in missing if s not in stale]
        why = "; ".join([*stale.values()] + ([f"seed{'s' * (len(unfinished) > 1)} {unfinished} not finished"]
                                              if unfinished else []))
        raise ArchbenchError(f"cannot publish {exp.name}: {why}; run `archbench train {exp.name}` for "
                             f"{'them' if len(missing) > 1 else 'it'} (or publish the current seeds alone with "
                             f"--allow-missing, which the ledger records)")
    for line in stale.values():
        print(f"publish {exp.name}: left out {line}")
    return {"allow_missing": allow_missing, "stale_seeds": sorted(stale)}


def sample_index(name: str, exp_dir: Path, seeds: list[int]) -> dict[str, list[dict[str, str]]]:
    """Per seed: its text samples inline, and for the first seed its images as paths under ledger/."""
    from benchmarks.run.results import seed_results_dir
    from benchmarks.report.site.collect import read_samples

    index: dict[str, list[dict[str, str]]] = {}
    for seed in seeds:
        items = [{"name": item["name"], "text": item["text"]} if "text" in item
                 else {"name": item["name"], "file": f"samples/{name}/seed_{seed}/{item['name']}"}
                 for item in read_samples(seed_results_dir(exp_dir, seed)) if "text" in item or seed == seeds[0]]
        if items:
            index[str(seed)] = items
    return index


def copy_sample_files(record: dict[str, Any], exp_dir: Path, ledger: Path) -> None:
    """Replace ledger/samples/<exp>/ with the images the record names: built beside it and swapped in whole, so
    a full disk leaves the old folder as it was (and no temporary file)."""
    import shutil

    from benchmarks.core.files import atomic_copy, swapped_in
    from benchmarks.run.results import seed_results_dir

    folder = ledger / "samples" / record["experiment"]
    files = [(seed, item) for seed, items in record.get("samples", {}).items() for item in items if "file" in item]
    if not files and not folder.exists():
        return
    with swapped_in(folder, "the ledger is left as it was") as build:
        shutil.rmtree(build)
        build.mkdir(parents=True)
        for seed, item in files:
            atomic_copy(seed_results_dir(exp_dir, int(seed)) / "samples" / item["name"],
                        build / Path(item["file"]).relative_to(Path("samples") / record["experiment"]))


def thin(curve: dict[str, list[float | None]]) -> dict[str, list[float | None]]:
    """At most MAX_CURVE_POINTS rows (evenly spaced, the last kept), values to 6 significant digits."""
    n = len(next(iter(curve.values()), []))
    step = max(1, math.ceil(n / MAX_CURVE_POINTS))
    rows = sorted(set(range(0, n, step)) | ({n - 1} if n else set()))
    return {k: [None if v[i] is None else float(f"{v[i]:.6g}") for i in rows] for k, v in curve.items()}


def record_values(seeds: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    keys = sorted({k for s in seeds.values() for k in s["metrics"]})
    return {k: [float(s["metrics"][k]) for s in seeds.values() if k in s["metrics"]] for k in keys}


def numbers(values: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Per metric: mean, std, ci95 and n; one seed has no spread, so std and ci95 are left out for it."""
    from benchmarks.run.results import mean_std_ci

    out = {}
    for key, vals in values.items():
        finite = [v for v in vals if math.isfinite(v)]
        if finite:
            stats = mean_std_ci(finite)
            out[key] = stats if len(finite) > 1 else {"mean": stats["mean"], "n": stats["n"]}
    return out


def publish(params: dict[str, Any], name: str, results_dir: Path, ledger_dir: Path | None = None,
            allow_missing: bool = False) -> Path:
    """Write ledger/<name>.json and ledger/metrics/<name>.json; returns the first."""
    from benchmarks.core.params import experiment_from_params, settings
    from benchmarks.core.provenance import code_hash
    from benchmarks.run.model_logging import publish_model
    from benchmarks.run.results import data_hash, write_json

    exp = experiment_from_params(params, name)
    record = build_record(exp, results_dir, code_hash(exp), data_hash(exp, settings(params)["data_dir"]), allow_missing)
    record = publish_model(exp, record, results_dir)  # registry; no local paths
    ledger = ledger_dir or ledger_dir_for(results_dir)
    copy_sample_files(record, results_dir / name, ledger)
    write_json(ledger / f"{name}.json", record)
    write_json(ledger / "metrics" / f"{name}.json", record["summary"] | {"n_seeds": len(record["seeds"])})
    return ledger / f"{name}.json"


def load_ledger(ledger_dir: Path) -> dict[str, dict[str, Any]]:
    """experiment -> record of every ledger/<exp>.json in the working tree (each checked by read_record)."""
    records = {p.stem: read_record(str(p), p.stem, p.read_bytes()) for p in sorted(ledger_dir.glob("*.json"))
               if p.is_file()}
    for record in records.values():  # sample images as paths on this disk, for the report
        for items in record.get("samples", {}).values():
            for item in items:
                if "file" in item and (ledger_dir / item["file"]).is_file():
                    item["src"] = ledger_dir / item["file"]
    return records


def load_ledger_at(rev: str, ledger_dir: Path) -> dict[str, dict[str, Any]]:
    """The ledger as committed at git revision ``rev`` (a branch, tag or commit)."""
    root = _git(ledger_dir.parent if ledger_dir.parent.exists() else Path("."), "rev-parse", "--show-toplevel").strip()
    rel = Path(ledger_dir).resolve().relative_to(Path(root).resolve()).as_posix()
    listing = _git(Path(root), "ls-tree", "--name-only", f"{rev}:{rel}", what=f"revision '{rev}' has no {rel}/")
    records = {}
    for name in sorted(listing.split()):
        if name.endswith(".json"):
            blob = _git_bytes(Path(root), "show", f"{rev}:{rel}/{name}")
            records[name.removesuffix(".json")] = read_record(f"{rev}:{rel}/{name}", name.removesuffix(".json"), blob)
    return records


# ---- reading a ledger file: a schema this archbench knows, or one line --------------------------------------
KNOWN_SCHEMAS = (SCHEMA,)


def read_record(where: str, stem: str, blob: bytes) -> dict[str, Any]:
    """A ledger record from its bytes, checked: JSON text holding an object of a schema version this archbench
    reads, for the experiment its file is named after, with seeds that hold metrics. Every problem is one line
    naming the file and the fix."""
    fix = f"restore it (`git checkout -- {where}` or an older revision) or republish it (`archbench publish {stem}`)"
    try:
        record = json.loads(blob.decode("utf-8"))
    except UnicodeDecodeError:
        raise ArchbenchError(f"ledger file {where} is not text (binary bytes); {fix}") from None
    except json.JSONDecodeError as exc:
        raise ArchbenchError(f"ledger file {where} is not valid JSON ({exc.msg} at line {exc.lineno}); {fix}") from None
    if not isinstance(record, dict):
        raise ArchbenchError(f"ledger file {where} holds a JSON {type(record).__name__}, not a published experiment "
                             f"(an object); {fix}")
    schema = record.get("schema")
    if schema not in KNOWN_SCHEMAS:
        known = ", ".join(map(str, KNOWN_SCHEMAS))
        what = f"schema {schema!r}" if "schema" in record else "no schema version"
        raise ArchbenchError(f"ledger file {where} has {what}; this archbench reads schema {known}: update archbench "
                             f"if a newer one wrote it, else {fix}")
    problem = _record_problem(record, stem)
    if problem:
        raise ArchbenchError(f"ledger file {where}: {problem}; {fix}")
    return record


def _record_problem(record: dict[str, Any], stem: str) -> str | None:
    if record.get("experiment") != stem:
        return f"it names experiment {record.get('experiment')!r}, not {stem!r} (its file name)"
    seeds = record.get("seeds")
    if not isinstance(seeds, dict):
        return "'seeds' must map seed numbers to their results"
    for seed, entry in seeds.items():
        if not str(seed).isdigit() or not isinstance(entry, dict) or not isinstance(entry.get("metrics"), dict):
            return f"seeds.{seed} must be a seed number holding a 'metrics' mapping"
        bad = [k for k, v in entry["metrics"].items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            return f"seeds.{seed}.metrics.{bad[0]} is not a number"
    for key in ("summary", "settings", "budget", "curves", "samples"):
        if key in record and not isinstance(record[key], dict):
            return f"'{key}' must be a mapping"
    return None


def _git(cwd: Path, *args: str, what: str = "") -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        problem = what or (out.stderr.strip().splitlines() or ["git failed"])[-1]
        raise ArchbenchError(f"git {' '.join(args[:2])}: {problem}; pass a revision of this repository (e.g. HEAD~1)")
    return out.stdout


def _git_bytes(cwd: Path, *args: str) -> bytes:
    """A file's bytes at a revision (a ledger file may not be text; read_record says so in one line)."""
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    if out.returncode != 0:
        problem = (out.stderr.decode(errors="replace").strip().splitlines() or ["git failed"])[-1]
        raise ArchbenchError(f"git {' '.join(args[:2])}: {problem}; pass a revision of this repository (e.g. HEAD~1)")
    return out.stdout


def compare_rows(ours: dict[str, dict[str, Any]], ledger: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per experiment and metric present on both sides: our mean ± CI, the published one, inside or not."""
    rows = []
    for name in sorted(set(ours) & set(ledger)):
        published = ledger[name].get("summary", {})
        for key, stat in sorted(ours[name]["summary"].items()):
            if key in published:
                rows.append({"experiment": name, "metric": key, "ours": stat, "published": published[key],
                             "within": within(stat["mean"], published[key])})
    return rows


def nothing_to_compare(ours: dict[str, Any], ledger: dict[str, Any], rev: str) -> str:
    """Why ``report --compare`` found no pair: which side lacks what, and what would make one."""
    if not ours:
        return (f"nothing to compare: you have no finished experiment under results/ (the ledger at {rev} has "
                f"{len(ledger)}: {', '.join(sorted(ledger)[:6]) or 'none'}); run one of them, e.g. "
                f"`archbench train {min(ledger) if ledger else 'EXP'}`, then compare again")
    if not ledger:
        return f"nothing to compare: the ledger at {rev} is empty; publish an experiment there first (archbench publish EXP)"
    return (f"nothing to compare: your runs ({', '.join(sorted(ours)[:6])}) are not in the ledger at {rev} "
            f"({', '.join(sorted(ledger)[:6])}); train one of the ledger's experiments, e.g. "
            f"`archbench train {min(ledger)}`, or publish yours and commit ledger/")


def format_compare(rows: list[dict[str, Any]], rev: str) -> str:
    """The CLI's compare table, one line per experiment and metric."""
    if not rows:
        return f"nothing to compare: no experiment has both results here and a ledger entry at {rev}"

    def fmt(s: dict[str, Any]) -> str:
        ci = s.get("ci95")
        return f"{s['mean']:.4g}" + (f" ± {ci:.2g}" if isinstance(ci, float) and not math.isnan(ci) else "") + f" (n={s['n']})"

    width = max(len(f"{r['experiment']} {r['metric']}") for r in rows)
    lines = [f"{'experiment metric':<{width}}  {'yours':<24}  {'ledger at ' + rev:<24}  within CI"]
    for r in rows:
        mark = {True: "yes", False: "NO", None: "n/a (1 seed)"}[r["within"]]
        lines.append(f"{r['experiment'] + ' ' + r['metric']:<{width}}  {fmt(r['ours']):<24}  {fmt(r['published']):<24}  {mark}")
    return "\n".join(lines)
