"""The compare view and `report --compare`: the Δ column visible, the address following the ticked boxes, and a
clear line (and a failing exit) when your runs and the ledger share no experiment."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.cli import main
from tests.conftest import env_for_subprocess


def _commit_ledger(root: Path, names: list[str]) -> None:
    ledger = root / "ledger"
    ledger.mkdir(exist_ok=True)
    for name in names:
        (ledger / f"{name}.json").write_text(json.dumps({"schema": 1, "experiment": name, "seeds": {},
                                                        "summary": {"test/loss": {"mean": 1.0, "n": 1}}}))
    for cmd in (["git", "init", "-q"], ["git", "add", "ledger"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "ledger"]):
        subprocess.run(cmd, cwd=root, env=env_for_subprocess(), check=True, capture_output=True)


def test_compare_with_nothing_in_common_says_why_and_fails(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_report import write_fixture

    write_fixture(project)  # your runs: hello_elman, hello_lstm, digits_classifier
    _commit_ledger(project, ["shakespeare_lstm", "ud_tagger"])
    code = main(["report", "--compare", "HEAD"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("archbench:")]
    assert code == 2 and len(err) == 1
    assert "your runs (digits_classifier, hello_elman" in err[0] and "are not in the ledger at HEAD" in err[0]
    assert "(shakespeare_lstm, ud_tagger)" in err[0] and "archbench train shakespeare_lstm" in err[0]


def test_compare_without_runs_of_your_own_says_so(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _commit_ledger(project, ["words_lstm"])
    assert main(["report", "--compare", "HEAD"]) == 2
    assert "you have no finished experiment under results/" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_view_shows_the_delta_and_keeps_the_ticks_in_the_address(project: Path, tmp_path: Path) -> None:
    from tests.test_report import write_fixture
    from tests.test_report_browser import CHROMIUM, Browser, Page

    if not CHROMIUM.is_file():
        pytest.skip("needs Debian's chromium")
    write_fixture(project)
    assert main(["report"]) == 0
    browser = Browser(tmp_path / "profile")
    try:
        page = Page(browser)
        page.open((project / "results" / "report" / "compare.html").as_uri() + "#hello_lstm")
        page.js("""(() => { for (const v of ["digits_classifier", "hello_elman"]) { const box = document.querySelector(
                     `input[value="${v}"]`); box.checked = true; box.dispatchEvent(new Event('change', {bubbles: true})); }
                 })()""")
        assert page.js("location.hash") == "#digits_classifier,hello_elman,hello_lstm"  # the ticked boxes, in page order
        deltas = page.js("[...document.querySelectorAll('#compare-table .delta')].map(d => d.getBoundingClientRect().right)")
        assert deltas and max(deltas) <= page.js("document.documentElement.clientWidth")  # every Δ in view
        assert page.js("document.querySelector('#compare-out > .scroll > #compare-table') !== null")
        page.open("about:blank")  # a new load: a change of hash alone is no navigation
        page.open((project / "results" / "report" / "compare.html").as_uri() + "#digits_classifier,hello_lstm")
        assert page.js("[...document.querySelectorAll('#compare-picker input:checked')].map(i => i.value)") == \
            ["digits_classifier", "hello_lstm"]  # the address ticks the boxes again
    finally:
        browser.close()
