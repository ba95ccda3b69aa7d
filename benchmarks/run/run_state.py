"""The resumable state of one seed: .archbench/runs/<exp>/seed<N>-<config hash>/.

It holds ckpt/last.ckpt, the MLflow run id, ``fingerprint.json`` (config, data and code hashes) and, once
training has finished, ``done.json`` (the result and its provenance). A run resumes only from state with the
same fingerprint; otherwise it says why and starts over. A finished seed whose fingerprint still matches is
not trained again: its results are written (again) from ``done.json``, so a kill between ``done.json`` and the
result files, or a full results disk, costs no retraining.

A run that fails (an exception, a divergence) removes its checkpoints, so no later run resumes a poisoned
state; a run that is killed (SIGKILL, Ctrl-C), stopped by a full disk or by a tracker outage keeps them,
which is what resuming is for. Every file here is written atomically.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.files import atomic_write_json

FINGERPRINT = "fingerprint.json"
DONE = "done.json"


@dataclass(frozen=True)
class Fingerprint:
    config_hash: str
    data_hash: str
    code_hash: str

    def differences(self, other: "Fingerprint") -> list[str]:
        names = {"config_hash": "the experiment's config", "data_hash": "the data", "code_hash": "the code"}
        mine, theirs = asdict(self), asdict(other)
        return [label for key, label in names.items() if mine[key] != theirs[key]]


def read_fingerprint(state: Path) -> Fingerprint | None:
    path = state / FINGERPRINT
    if not path.is_file():
        return None
    try:
        return Fingerprint(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
        return None


def write_fingerprint(state: Path, fp: Fingerprint) -> None:
    atomic_write_json(state / FINGERPRINT, asdict(fp))


def check_checkpoint(path: Path, name: str) -> None:
    """A truncated or garbage checkpoint is one line naming --restart, before anything is built on it."""
    ok = path.stat().st_size > 0 and zipfile.is_zipfile(path)
    if ok:
        with zipfile.ZipFile(path) as archive:
            ok = archive.testzip() is None and any(n.endswith("data.pkl") for n in archive.namelist())
    if not ok:
        raise ArchbenchError(f"{path} is corrupt (not a readable checkpoint); rerun with "
                             f"`archbench train {name} --restart` to start that seed over")


def check_compatible(path: Path, model: Any, name: str) -> None:
    """A checkpoint to go on from must hold this model's weights (names and shapes): one line otherwise, before
    an MLflow run is opened (a checkpoint of another experiment would fail deep inside ``fit``)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    theirs = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(theirs, dict):
        raise ArchbenchError(f"{path} holds no model weights (not a Lightning checkpoint); pass a run's ckpt/last.ckpt")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = {k: tuple(v.shape) for k, v in theirs.items() if hasattr(v, "shape")}
    missing, extra = sorted(set(ours) - set(shapes)), sorted(set(shapes) - set(ours))
    differ = sorted(k for k in set(ours) & set(shapes) if ours[k] != shapes[k])
    if missing or extra or differ:
        what = (f"{differ[0]} has shape {list(shapes[differ[0]])} there, {list(ours[differ[0]])} here" if differ else
                f"it lacks {missing[0]}" if missing else f"it has {extra[0]}, which this model lacks")
        raise ArchbenchError(f"{path} was not made by a model of experiment '{name}' ({what}); pass a checkpoint "
                             f"of '{name}' (or of a run with the same model arguments)")


def resume_point(state: Path, fp: Fingerprint, resume: bool, name: str) -> str | None:
    """The checkpoint to resume from, or None after clearing state that must not be resumed."""
    last = state / "ckpt" / "last.ckpt"
    if not resume or (state / DONE).exists():
        clear(state)
        return None
    if not last.is_file():
        return None
    old = read_fingerprint(state)
    changed = fp.differences(old) if old else ["an unrecorded state (no fingerprint)"]
    if changed:
        print(f"archbench: {name}: starting over, not resuming {last}: {' and '.join(changed)} changed since it was written")
        clear(state)
        return None
    check_checkpoint(last, name)
    return str(last)


def finished(state: Path, fp: Fingerprint) -> dict[str, Any] | None:
    """The record of a seed that finished training under this very fingerprint, or None."""
    path = state / DONE
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(done, dict) or done.get("fingerprint") != asdict(fp) or "result" not in done:
        return None
    return done


def write_done(state: Path, done: dict[str, Any]) -> None:
    atomic_write_json(state / DONE, done)


def clear(state: Path) -> None:
    shutil.rmtree(state, ignore_errors=True)


def discard_checkpoints(state: Path) -> None:
    """After a failure: keep the run id and curve for the record, drop what a later run could resume."""
    shutil.rmtree(state / "ckpt", ignore_errors=True)
    (state / FINGERPRINT).unlink(missing_ok=True)


def remove_temporaries(state: Path) -> None:
    """Temporary files a write cut short (a full disk, a kill) may leave in the state folder."""
    for pattern in ("*.tmp", ".*.tmp", "ckpt/*.tmp*", "ckpt/.*.tmp*"):
        for path in state.glob(pattern):
            if path.is_file():
                path.unlink(missing_ok=True)


def continued_checkpoint(exp: Any, seed: int, opts: Any) -> Path:
    """The best checkpoint of the same seed of the experiment ``exp`` continues, which must have been run."""
    from benchmarks.run.results import seed_results_dir

    results = opts.results_dir if opts.results_dir is not None else opts.project_dir / "results"
    ckpt = seed_results_dir(results / str(exp.continues), seed) / "best.ckpt"
    if not ckpt.is_file():
        raise ArchbenchError(f"experiment '{exp.name}' continues '{exp.continues}', but {ckpt} does not exist; "
                             f"run `archbench train {exp.continues} --seed {seed}` first")
    return ckpt
