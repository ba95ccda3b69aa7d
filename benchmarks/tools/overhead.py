"""What the suite costs on top of the training itself: `archbench train EXP --seed N --restart` end to end
(process start, imports, validation, Lightning, MLflow, checkpoints, results, exit) against a plain PyTorch
loop of the same training (same data, model, optimiser, epochs, validation and test passes) in a process
of its own. The two are run interleaved, several times, and the ratio of medians is printed: timings on a
shared machine drift, ratios measured in one run do not.

    archbench overhead [--experiment words_lstm] [--seed 0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PLAIN = r"""
import json, math, sys, time
started = time.perf_counter()
import torch
import torch.nn.functional as F
import lightning.pytorch as pl  # only for seed_everything, so both sides seed alike
from benchmarks.run.build import build_datamodule, build_model
from benchmarks.core.params import experiment_from_params, load_params, settings
from lightning_modules.recurrent.char_lm import IGNORE, chunk_losses

params = load_params(sys.argv[1]); exp = experiment_from_params(params, sys.argv[2]); seed = int(sys.argv[3])
torch.set_num_threads(settings(params)["threads"])
pl.seed_everything(seed, workers=True, verbose=False)
dm = build_datamodule(exp, settings(params)["data_dir"])
model = build_model(exp, dm)
opt = model.configure_optimizers()
k = model.hparams.tbptt_steps

def evaluate(loader):
    model.eval(); total, n_all = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            logits, _ = model(x); n = int((y != IGNORE).sum())
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)) * n; n_all += n
    model.train(); return total / max(n_all, 1)

for epoch in range(exp.trainer["max_epochs"]):
    for x, y in dm.train_dataloader():
        for loss, _ in chunk_losses(model.net, x, y, k or x.size(1)):
            opt.zero_grad(); loss.backward(); opt.step()
    val = evaluate(dm.val_dataloader())
dm.setup("test")
test = evaluate(dm.test_dataloader())
print(json.dumps({"val": val, "test": test, "s": time.perf_counter() - started}))
"""


def _time(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - started


def measure(experiment: str, seed: int, repeats: int, project: Path, params: str) -> dict[str, Any]:
    archbench = [str(Path(sys.executable).parent / "archbench"), "--params", params, "train", experiment,
                 "--seed", str(seed), "--restart", "--no-progress"]
    plain = [sys.executable, "-c", PLAIN, params, experiment, str(seed)]
    suite_s, plain_s = [], []
    for _ in range(repeats):  # interleaved: a busy minute slows both sides, not one
        suite_s.append(_time(archbench, project))
        plain_s.append(_time(plain, project))
    return {"experiment": experiment, "repeats": repeats, "archbench_s": suite_s, "plain_s": plain_s,
            "ratio": statistics.median(suite_s) / statistics.median(plain_s)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="archbench overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="words_lstm", help="a char_lm experiment (default words_lstm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--json", default=None, help="also write the measurements to this file")
    args = parser.parse_args(argv)
    result = measure(args.experiment, args.seed, args.repeats, Path.cwd(), args.params)
    print(f"{'run':<10} " + " ".join(f"{i:>8}" for i in range(args.repeats)) + "   median")
    for key in ("archbench_s", "plain_s"):
        values = result[key]
        print(f"{key[:-2]:<10} " + " ".join(f"{v:8.2f}" for v in values) + f" {statistics.median(values):8.2f} s")
    print(f"archbench / plain PyTorch loop: {result['ratio']:.2f}x (median of {args.repeats}, interleaved)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
