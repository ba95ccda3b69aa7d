"""DVC's own experiment loop on the tiny profile, as its tutorial runs it: `dvc repro`, the README's `dvc exp run -S`
line as written, `dvc exp show` with each experiment's headline metrics, `dvc metrics diff` of your own runs, a new
experiment reaching the report with no edit to dvc.yaml, and `dvc plots show` drawn offline in headless Chromium."""

from __future__ import annotations

import csv
import io
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, env_for_subprocess, tiny_params, write_params

COPIED = ("benchmarks", "lightning_modules", "datamodules", "estimators", "scripts", "dvc.yaml", ".dvcignore",
          ".gitignore", "README.md")
VEGA = ROOT / "vendor" / "vega" / "node_modules"


def _sh(cwd: Path, *cmd: str) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env_for_subprocess(), capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def _commit(repo: Path, message: str) -> None:
    _sh(repo, "git", "add", "-A")
    _sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def readme_exp_run_line() -> list[str]:
    """The README's `dvc exp run -S ...` example (the one under "Everyday use"), as argv."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "README.md").read_text().splitlines()
             if line.startswith("dvc exp run -S")]
    assert lines, "README.md has no `dvc exp run -S` line"
    return shlex.split(lines[0])


def _exp_rows(repo: Path) -> list[dict[str, str]]:
    """`dvc exp show --csv` (stdout only: stderr notes the ledger's metrics, which this copy has none of)."""
    out = subprocess.run(["dvc", "exp", "show", "--csv"], cwd=repo, env=env_for_subprocess(), capture_output=True,
                         text=True, check=True).stdout
    return list(csv.DictReader(io.StringIO(out)))


@pytest.fixture
def repo(tmp_path: Path, project: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, root / name)
    write_params(root / "params.yaml", tiny_params())
    _sh(root, "git", "init", "-q")
    _sh(root, "dvc", "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", root / ".dvc" / "config")  # the offline plot template
    (root / "vendor").symlink_to(ROOT / "vendor")  # what scripts/vega.sh installed
    _commit(root, "init")
    return root


@pytest.mark.slow
def test_the_dvc_experiment_loop_as_the_readme_runs_it(repo: Path, tmp_path: Path) -> None:
    _sh(repo, "dvc", "repro")
    _commit(repo, "baseline")
    base = {r["rev"]: r for r in _exp_rows(repo)}
    words = "results/headline/words_lstm.json:test/loss"
    assert base["workspace"][words] not in ("", "!")  # your own run's metrics, read from DVC's cache

    params_before = yaml.safe_load((repo / "params.yaml").read_text())
    argv = readme_exp_run_line()
    out = _sh(repo, *argv)
    key, value = argv[-1].split("=")
    # It ran, and reran only the experiment it names (and the report): no other training, no study, no claim.
    trains = re.findall(r"Running stage 'train@(\w+)'", out)
    assert trains == [key.split(".")[1]], out[-3000:]
    assert "Running stage 'tune@" not in out and "Running stage 'claim@" not in out and "Running stage 'density'" not in out
    assert "Running stage 'report'" in out
    # params.yaml changed in that value alone.
    params_after = yaml.safe_load((repo / "params.yaml").read_text())
    node = params_before
    *path, leaf = key.split(".")
    for part in path:
        node = node[part]
    node[leaf] = yaml.safe_load(value)
    assert params_after == params_before

    rows = _exp_rows(repo)
    made = [r for r in rows if r["typ"].startswith("branch")]  # the DVC experiment's own row
    assert made and all(r[words] not in ("", "!") for r in made)
    assert made[0][key] == value and made[0][words] != base["workspace"][words]
    assert all(r["results/headline/hello_lstm.json:test/loss"] == base["workspace"]["results/headline/hello_lstm.json:test/loss"]
               for r in made)  # an unrelated experiment's numbers are the same

    diff = subprocess.run(["dvc", "metrics", "diff", "HEAD"], cwd=repo, env=env_for_subprocess(), capture_output=True,
                          text=True, check=True).stdout
    assert "results/headline/words_lstm.json" in diff and "test/loss" in diff
    shown = subprocess.run(["dvc", "exp", "show", "--no-pager", "--only-changed", "--drop",
                            "Created|.*american-english|results/headline$"], cwd=repo, env=env_for_subprocess()
                           | {"COLUMNS": "200"}, capture_output=True, text=True, check=True).stdout
    assert "words_lstm.json:test/loss" in shown and max(len(line.rstrip()) for line in shown.splitlines()) <= 200
    metrics = _sh(repo, "dvc", "metrics", "show")
    assert max(len(line.rstrip()) for line in metrics.splitlines()) <= 200, metrics

    # A new experiment in params.yaml reaches the report through `dvc repro`, with no edit to dvc.yaml.
    _commit(repo, "exp applied")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["experiments"]["words_lstm3"] = params["experiments"]["words_lstm"] | {"description": "a copy"}
    write_params(repo / "params.yaml", params)
    out = _sh(repo, "dvc", "repro")
    assert re.findall(r"Running stage 'train@(\w+)'", out) == ["words_lstm3"] and "Running stage 'report'" in out
    assert "words_lstm3" in (repo / "results" / "report" / "leaderboard.md").read_text()

    _sh(repo, "dvc", "plots", "show")
    _plots_draw_offline(repo / "dvc_plots" / "index.html", tmp_path)


def _plots_draw_offline(page_path: Path, tmp_path: Path) -> None:
    """Headless Chromium opens DVC's plot page from disk; every request stays on disk and every plot has coloured
    marks (grey is axes and grid; the curves and their points are coloured)."""
    from tests.test_report_browser import CHROMIUM, Browser, Page

    if not CHROMIUM.is_file():
        pytest.skip("needs Debian's chromium (scripts/test.sh installs it)")
    assert (VEGA / "vega-embed" / "build" / "vega-embed.min.js").is_file(), "run `bash scripts/vega.sh` first"
    browser = Browser(tmp_path / "profile")
    try:
        page = Page(browser)
        page.open(page_path.as_uri())
        page.js("new Promise(r => setTimeout(r, 1000))")  # vega-embed renders after load
        assert page.js("typeof vegaEmbed") == "function"
        coloured = page.js("""[...document.querySelectorAll('canvas')].map(c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
            for (let i = 0; i < d.length; i += 4) {
              if (d[i + 3] > 0 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 40) n++; }
            return n; })""")
        assert len(coloured) >= 5 and sum(n > 200 for n in coloured) >= len(coloured) - 1, coloured
        assert all(u.startswith(("file://", "data:")) for u in page.requests()), page.requests()
        assert page.errors() == []
    finally:
        browser.close()
