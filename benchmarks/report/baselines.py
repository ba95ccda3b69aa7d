"""``archbench baselines``: each leaderboard task's trivial baseline, computed on the very split its rows saw.

For every experiment named (or every one of a profile) the command builds the experiment's datamodule from
its own data_args, so the baseline sees the same split, vocabulary and targets as the model, and computes
the baseline of the experiment's task (benchmarks/report/tasks.py) with estimators/baselines.py. Experiments
whose data hash to the same content share one baseline. Each is written to
``results/baselines/<kind>-<data>-<hash8>.json`` and, with ``--publish``, to ``ledger/baselines/`` (commit it),
from where a fresh clone's report shows it as a row of the task's table. The rows record their data hash,
so the report pairs a baseline only with rows of the same split.

The FID floor (real training images against the same test reference) is computed inside every generator's
own run at its own sample count (``test/fid_floor``); the report shows it as that task's baseline row.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.params import Experiment
from benchmarks.report.tasks import task_kinds, task_of

ROOT = Path(__file__).resolve().parents[2]
CODE = (ROOT / "estimators" / "baselines.py", ROOT / "estimators" / "pixel_baselines.py", Path(__file__))
IGNORE = -100  # the loaders' ignore_index: padding positions carry no target
COMPUTED = ("char_unigram", "majority_class", "frequent_tag", "bernoulli_pixels", "categorical_pixels")
MODEL_NAMES = {"char_unigram": "unigram characters (add-one)", "majority_class": "majority class",
               "frequent_tag": "most frequent tag per word",
               "bernoulli_pixels": "independent Bernoulli pixels (add-one)",
               "categorical_pixels": "independent 256-level pixels (add-one)"}


def code_hash() -> str:
    digest = hashlib.sha256()
    for path in CODE:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _flat_targets(batches: Any, index: int) -> list[int]:
    """The targets of every batch of a loader (element ``index`` of each batch), padding removed."""
    out: list[int] = []
    for batch in batches:
        out += [int(v) for v in batch[index].flatten().tolist() if v != IGNORE]
    return out


def compute(kind: str, dm: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics in the suite's vocabulary, settings that say how) of one baseline on a built datamodule."""
    from estimators import baselines

    if kind == "char_unigram":
        train = _flat_targets(dm.train_dataloader(), 1)
        test = _flat_targets(dm.test_dataloader(), 1)
        got = baselines.char_unigram(train, test, len(dm.vocab))
        metrics = {"test/loss": got["loss"], "test/bpc": got["bpc"]}
        settings = {"loss_unit": "nats per character", "n_train_chars": got["n_train"], "n_test_chars": got["n_eval"],
                    "rule": "p(c) = (count in train targets + 1) / (train targets + vocab size); mean -ln p over "
                            "the test targets the char LM is scored on"}
        if getattr(dm, "end_symbol", None) == "":  # free-running text: the val+test figure that nanoGPT's anchor pairs with
            both = baselines.char_unigram(train, _flat_targets(dm.val_dataloader(), 1) + test, len(dm.vocab))
            metrics["test/loss_valtest"] = both["loss"]
            settings["n_valtest_chars"] = both["n_eval"]
        return metrics, settings
    if kind == "majority_class":
        got = baselines.majority_class(_flat_targets(dm.train_dataloader(), -1), _flat_targets(dm.test_dataloader(), -1))
        return {"test/acc": got["acc"]}, {"label": got["label"], "n_train_labels": got["n_train"],
                                          "n_test_labels": got["n_eval"],
                                          "rule": "the most frequent training label (ties: the smallest) for every item"}
    if kind == "frequent_tag":
        got = baselines.frequent_tag(dm.sentences("train"), dm.sentences("test"))
        return {"test/acc": got["acc"]}, {"unseen_tag": got["unseen_tag"], "unseen_test_tokens": got["unseen_forms"],
                                          "n_test_tokens": got["n_eval"],
                                          "rule": "each word form's most frequent training tag (exact form); "
                                                  "forms unseen in training get the most frequent tag overall"}
    if kind in ("bernoulli_pixels", "categorical_pixels"):
        from estimators.pixel_baselines import IndependentBernoulli, IndependentCategorical, baseline_scores

        model = IndependentBernoulli() if kind == "bernoulli_pixels" else IndependentCategorical(256)
        # [N, 1, H, W] in [0, 1]: the split and preprocessing the models are scored on; 8-bit likelihoods bin each
        # pixel into 256 levels as the DDPM's discretized decoder does (a no-op for 8-bit data such as Fashion-MNIST).
        train, test = dm.images("train"), dm.images("test")
        if kind == "categorical_pixels":
            train, test = (train * 255).round() / 255, (test * 255).round() / 255
        got = baseline_scores(model.fit(train), test)
        # The exact NLL: with independent pixels no bound is needed, so it sits in the column of the models' tightest
        # bound (k = 500 importance samples, nats per image) or their bits/dim.
        metrics = ({"test/nll_k500": got["nll_nats"]} if kind == "bernoulli_pixels" else {"test/bpd": got["bpd"]})
        return metrics, {"loss_unit": "nats per image" if kind == "bernoulli_pixels" else "bits per dimension",
                         "nll_nats": got["nll_nats"], "bpd": got["bpd"], "test_images": got["test_images"],
                         "dims": got["dims"], "levels": got["levels"], "smoothing": got["smoothing"],
                         "rule": "p(x) = prod_d p_d(x_d), each p_d counted on the training images with add-one "
                                 "smoothing; exact -ln p(x) on the test images"}
    raise ArchbenchError(f"no baseline named {kind!r}")


def _machine() -> dict[str, Any]:
    import os

    import torch

    from benchmarks.core.provenance import cpu_model

    return {"host": platform.node(), "cpu_model": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads()}


def baseline_kinds(exp: Experiment) -> list[str]:
    return sorted({b for k in task_kinds(exp.model, bool(exp.data_args.get("binarize")), set())
                   if (b := task_of(k).baseline) in COMPUTED})


def run_baselines(params: dict[str, Any], names: list[str], profile: str | None, results_dir: Path,
                  publish_to: Path | None = None, say: Any = print) -> list[dict[str, Any]]:
    """Compute the baselines of the named experiments (or of a profile's); returns the records written."""
    import torch

    from benchmarks.core.params import experiment_from_params, experiment_names, settings
    from benchmarks.run.build import build_datamodule

    exps = [experiment_from_params(params, n) for n in (names or experiment_names(params, profile))]
    data_dir = settings(params)["data_dir"]
    torch.set_num_threads(int(settings(params)["threads"]))
    built: dict[str, tuple[Any, str, float]] = {}  # data config -> (datamodule, content hash, cpu seconds to build)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for exp in exps:
        for kind in baseline_kinds(exp):
            key = json.dumps([exp.data, exp.data_args], sort_keys=True, default=str)
            if key not in built:
                start = time.process_time()
                dm = build_datamodule(exp, data_dir)
                built[key] = (dm, dm.content_hash(), time.process_time() - start)
            dm, data_hash, _ = built[key]
            group = groups.setdefault((kind, data_hash), {"exp": exp, "key": key, "experiments": []})
            group["experiments"].append(exp.name)
    records = []
    for (kind, data_hash), group in sorted(groups.items()):
        exp, (dm, _, build_s) = group["exp"], built[group["key"]]
        start = time.process_time()
        metrics, how = compute(kind, dm)
        task = next(k for k in task_kinds(exp.model, bool(exp.data_args.get("binarize")), set()) if task_of(k).baseline == kind)
        name = f"{kind}-{exp.data}-{data_hash[:8]}"
        record = {"schema": 1, "baseline": name, "kind": kind, "task": task, "model": MODEL_NAMES[kind], "data": exp.data,
                  "data_hash": data_hash, "data_args": exp.data_args, "experiments": sorted(group["experiments"]),
                  "metrics": metrics, "settings": how | {"data_hash": data_hash}, "code_hash": code_hash(),
                  "command": f"archbench baselines {' '.join(sorted(group['experiments']))}",
                  "compute": {"cpu_s": round(build_s + time.process_time() - start, 3), "machine": _machine(),
                              "how": "process CPU time of building the data and counting"}}
        for folder in filter(None, (results_dir / "baselines", publish_to)):
            _write(folder / f"{name}.json", record)
        shown = ", ".join(f"{k} = {v:.4f}" for k, v in metrics.items())
        say(f"{name} ({', '.join(record['experiments'])}): {shown}" + (f" -> {publish_to / (name + '.json')}" if publish_to else ""))
        records.append(record)
    return records


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def load_baselines(*folders: Path) -> list[dict[str, Any]]:
    """Every baseline record in these folders (results/baselines/ first: a fresh one replaces a published one)."""
    found: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            record = json.loads(path.read_text())
            found.setdefault(record.get("baseline", path.stem), record)
    return list(found.values())
