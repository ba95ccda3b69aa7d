"""The smaller frictions a new user met: each one's fix, checked."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from benchmarks.core.errors import ArchbenchError
from tests.conftest import tiny_params

ROOT = Path(__file__).resolve().parents[1]


def test_prepare_lists_every_missing_data_set_not_just_the_first(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.run.prepare import prepare

    monkeypatch.delenv("ARCHBENCH_DATA_DIR", raising=False)
    params = tiny_params()
    params["settings"]["data_dir"] = str(tmp_path / "empty")
    params["experiments"] = {
        "shakespeare": {"model": "char_lm", "data": "tinyshakespeare", "data_args": {"download": False}, "seeds": [0]},
        "tags": {"model": "tagger", "data": "ud_ewt", "data_args": {"download": False}, "seeds": [0]},
        "toy": {"model": "char_lm", "data": "hello", "seeds": [0]},
    }
    with pytest.raises(ArchbenchError) as err:
        prepare(params, "default", tmp_path / "out")
    message = str(err.value)
    assert "2 of the 3 data sets of profile 'default' cannot be used" in message
    assert "'shakespeare'" in message and "'tags'" in message and "\n" not in message
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_multi30k_downloads_follow_a_pinned_commit() -> None:
    from datamodules import translation

    urls = {translation._URL.format(name) for name in translation._SHA256}
    assert all(f"/multi30k/dataset/{translation.MULTI30K_COMMIT}/" in url for url in urls)
    assert len(translation.MULTI30K_COMMIT) == 40 and "master" not in "".join(urls)


def _apt(tmp_path: Path, locked_tries: int, wait: int) -> subprocess.CompletedProcess[str]:
    """scripts/apt.sh's apt_get against a stand-in apt-get that finds the lock held ``locked_tries`` times."""
    fake = tmp_path / "apt-get"
    count = tmp_path / "count"
    fake.write_text(f"""#!/usr/bin/env bash
n=$(cat {count} 2>/dev/null || echo 0); echo $((n + 1)) > {count}
if [ "$n" -lt {locked_tries} ]; then
  echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)" >&2
  exit 100
fi
echo "installed $*"
""")
    fake.chmod(0o755)
    env = dict(os.environ, APT_GET=str(fake), APT_LOCK_POLL="0", APT_LOCK_WAIT=str(wait))
    return subprocess.run(["bash", "-c", f"source {ROOT / 'scripts/apt.sh'}; apt_get install -y wamerican"],
                          env=env, capture_output=True, text=True, timeout=60)


def test_setup_waits_for_the_package_lock_and_says_who_holds_it(tmp_path: Path) -> None:
    done = _apt(tmp_path, locked_tries=2, wait=600)
    assert done.returncode == 0 and "installed" in done.stdout
    waits = [line for line in done.stderr.splitlines() if "waiting" in line]
    assert len(waits) == 2 and "held by process 4242 (unattended-upgr)" in waits[0]


def test_setup_gives_up_on_a_lock_that_stays_held_with_one_line(tmp_path: Path) -> None:
    done = _apt(tmp_path, locked_tries=10**6, wait=0)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("apt-get install -y wamerican: the package lock is still held")


def test_setup_scripts_install_through_the_waiting_apt_get() -> None:
    for script in ("setup.sh", "test.sh"):
        text = (ROOT / "scripts" / script).read_text()
        assert "source scripts/apt.sh" in text and "apt_get install" in text
        assert not [line for line in text.splitlines() if "apt-get install" in line and "apt_get" not in line]
