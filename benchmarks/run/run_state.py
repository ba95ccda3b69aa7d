"""The resumable state of one seed: .archbench/runs/<exp>/seed<N>-<config hash>/.

It holds ckpt/last.ckpt, the MLflow run id and ``fingerprint.json`` (config, data and code hashes). A run
resumes only from state with the same fingerprint; otherwise it says why and starts over. A run that
fails (an exception, a divergence) removes its checkpoints, so no later run resumes a poisoned state; a
run that is killed (SIGKILL, Ctrl-C) keeps them, which is what resuming is for.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.core.errors import ArchbenchError

FINGERPRINT = "fingerprint.json"


@dataclass(frozen=True)
class Fingerprint:
    config_hash: str
    data_hash: str
    code_hash: str

    def differences(self, other: "Fingerprint") -> list[str]:
        names = {"config_hash": "the experiment's config", "data_hash": "the data", "code_hash": "the code"}
        return [label for key, label in names.items() if getattr(self, key) != getattr(other, key)]


def read_fingerprint(state: Path) -> Fingerprint | None:
    path = state / FINGERPRINT
    if not path.is_file():
        return None
    try:
        return Fingerprint(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None


def write_fingerprint(state: Path, fp: Fingerprint) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / FINGERPRINT).write_text(json.dumps(fp.__dict__, sort_keys=True))


def check_checkpoint(path: Path, name: str) -> None:
    """A truncated or garbage checkpoint is one line naming --restart, before anything is built on it."""
    ok = path.stat().st_size > 0 and zipfile.is_zipfile(path)
    if ok:
        with zipfile.ZipFile(path) as archive:
            ok = archive.testzip() is None and any(n.endswith("data.pkl") for n in archive.namelist())
    if not ok:
        raise ArchbenchError(f"{path} is corrupt (not a readable checkpoint); rerun with "
                             f"`archbench train {name} --restart` to start that seed over")


def resume_point(state: Path, fp: Fingerprint, resume: bool, name: str) -> str | None:
    """The checkpoint to resume from, or None after clearing state that must not be resumed."""
    last = state / "ckpt" / "last.ckpt"
    if not resume or (state / "done.json").exists():
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


def clear(state: Path) -> None:
    shutil.rmtree(state, ignore_errors=True)


def discard_checkpoints(state: Path) -> None:
    """After a failure: keep the run id and curve for the record, drop what a later run could resume."""
    shutil.rmtree(state / "ckpt", ignore_errors=True)
    (state / FINGERPRINT).unlink(missing_ok=True)
