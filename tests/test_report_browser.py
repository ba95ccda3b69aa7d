"""The report in a real browser: headless Chromium, driven over the DevTools protocol on a pipe (no port, no
extra package). The page must load from file:// with no request leaving the machine and no console error,
show the leaderboard and a drawn chart, look like something (pixel variance), and its compare view must
build the diff table when two experiments are ticked."""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cli import main
from tests.test_report import SERVER, _ledger_entry, write_fixture

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                               "(apt-get install chromium)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe", "--window-size=1280,1000", "--hide-scrollbars")


class Browser:
    """Chromium with the DevTools protocol on fds 3 (commands in) and 4 (replies out), NUL-separated JSON."""

    def __init__(self, profile: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()

        def wire() -> None:
            # In the child: the pipe ends become fds 3 and 4, as --remote-debugging-pipe expects. Copied high
            # first, so neither lands on the other's number; dup2 makes the copies inheritable. close_fds would
            # run after this and close them, and Python's own fds are not inheritable, so nothing else leaks.
            high_r, high_w = os.dup(cmd_r), os.dup(out_w)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(out_w)
        self._next = 0
        self.events: list[dict[str, Any]] = []
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while chunk := os.read(self._out_r, 1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                (self._replies.put if "id" in msg else self.events.append)(msg)

    def send(self, method: str, session: str | None = None, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._replies.get(timeout=max(0.1, deadline - time.monotonic()))
            if reply["id"] == self._next:
                assert "error" not in reply, reply
                return reply.get("result", {})

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events if e.get("method") == method]
            if found:
                self.events.remove(found[0])
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {method} within {timeout} s")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self._cmd_w)


class Page:
    def __init__(self, browser: Browser) -> None:
        self.b = browser
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.b.send(method, self.session, **params)

    def open(self, url: str) -> None:
        self.b.events[:] = [e for e in self.b.events if e.get("method") != "Page.loadEventFired"]
        self.send("Page.navigate", url=url)
        self.b.wait_event("Page.loadEventFired")

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.b.events if e.get("method") == "Network.requestWillBeSent"]

    def errors(self) -> list[str]:
        found = []
        for e in self.b.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(p["exceptionDetails"])[:300])
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") == "error":
                found.append(json.dumps(p.get("args"))[:300])
            elif e.get("method") == "Log.entryAdded" and p["entry"].get("level") == "error":
                found.append(p["entry"].get("text", "")[:300])
        return found

    def screenshot(self, path: Path) -> float:
        """Full-page PNG written to ``path``; returns the grey-level variance (0 for a blank page)."""
        from PIL import Image, ImageStat

        blob = base64.b64decode(self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        path.write_bytes(blob)
        return float(ImageStat.Stat(Image.open(io.BytesIO(blob)).convert("L")).var[0])


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path / "profile")
    yield b
    b.close()


def _shots_dir(tmp_path: Path) -> Path:
    """Screenshots stay in the test's tmp folder, or in ARCHBENCH_SCREENSHOTS to look at them afterwards."""
    where = Path(os.environ.get("ARCHBENCH_SCREENSHOTS") or tmp_path / "shots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def _board(page: Page, table: int) -> dict[str, Any]:
    """The page's ``table``-th leaderboard: its headers (key, direction, sorted?) and per row whether it is
    ranked, its rank cell and every cell's data-v."""
    return page.js(f"""(() => {{ const t = document.querySelectorAll('table.board')[{table}];
        return {{heads: [...t.tHead.rows[0].cells].map(h => [h.dataset.key || null, h.dataset.dir || null,
                                                             h.classList.contains('sorted')]),
                 rows: [...t.tBodies[0].rows].map(r => ({{
                    ranked: !r.classList.contains('row-anchor') && !r.classList.contains('row-baseline'),
                    rank: r.cells[0].textContent, v: [...r.cells].map(c => c.getAttribute('data-v'))}}))}}; }})()""")


def _every_header_sorts_its_column(page: Page, table: int) -> None:
    """For each metric header of a board: put the rows in reverse order (so the column is out of order), click
    the header, and check that its whole column is now in the metric's direction, empty cells last, ranked 1, 2..."""
    grab = f"document.querySelectorAll('table.board')[{table}]"
    heads = _board(page, table)["heads"]
    clicked = 0
    for idx, (key, direction, _) in enumerate(heads):
        if key is None:
            continue
        values = [r["v"][idx] for r in _board(page, table)["rows"]]
        numbers = sorted(float(v) for v in values if v not in (None, ""))
        best_first = numbers[::-1] if direction == "max" else numbers
        page.js(f"(() => {{ const b = {grab}.tBodies[0]; [...b.rows].reverse().forEach(r => b.appendChild(r)); }})()")
        if len(set(numbers)) > 1:
            shuffled = [float(r["v"][idx]) for r in _board(page, table)["rows"] if r["v"][idx] not in (None, "")]
            assert shuffled != best_first, key  # out of order before the click
        page.js(f"{grab}.tHead.rows[0].cells[{idx}].click()")
        board = _board(page, table)
        column = [r["v"][idx] for r in board["rows"]]
        assert [float(v) for v in column if v not in (None, "")] == best_first, (table, key, column)
        assert all(v in (None, "") for v in column[len(numbers):]), (table, key, column)  # empty cells last
        ranks = [r["rank"] for r in board["rows"] if r["ranked"]]
        assert ranks == [str(i) for i in range(1, len(ranks) + 1)], (table, key, ranks)
        assert [h[2] for h in board["heads"]] == [i == idx for i in range(len(heads))], (table, key)
        clicked += 1
    assert clicked >= 1, table


@pytest.mark.slow
def test_report_in_headless_chromium(project: Path, browser: Browser, tmp_path: Path) -> None:
    write_fixture(project)
    _ledger_entry(project)
    assert main(["report", "--mlflow-url", SERVER]) == 0
    site = project / "results" / "report"
    shots = _shots_dir(tmp_path)
    page = Page(browser)

    page.open((site / "index.html").as_uri())
    page.js("new Promise(r => setTimeout(r, 300))")  # let Plotly finish its first layout
    assert page.js("document.querySelectorAll('table.board').length") == 3  # one per task: digits, hello, words
    assert page.js("document.querySelectorAll('.js-plotly-plot .main-svg').length") >= 1  # a chart was drawn
    assert page.js("document.querySelector('#task-char_lm-hello tbody tr').dataset.exp") == "hello_lstm"
    boards = page.js("document.querySelectorAll('table.board').length")
    directions = {h[1] for i in range(boards) for h in _board(page, i)["heads"] if h[0]}
    assert {"min", "max"} <= directions  # losses and accuracies: both directions are sorted below
    for table in range(boards):
        _every_header_sorts_its_column(page, table)
    assert page.screenshot(shots / "index.png") > 100.0

    page.open((site / "compare.html").as_uri() + "#hello_lstm")
    assert page.js("document.getElementById('compare-table')") is None
    page.js("""(() => { const box = document.querySelector('input[value="hello_elman"]');
                        box.checked = true; box.dispatchEvent(new Event('change', {bubbles: true})); })()""")
    assert page.js("document.querySelectorAll('#compare-table tr.differs').length") >= 3
    assert page.js("document.querySelector('#compare-table td.best') !== null")
    assert page.js("document.querySelectorAll('#compare-chart .scatterlayer .trace').length") == 4  # 2 exps x 2 seeds
    assert page.screenshot(shots / "compare.png") > 100.0

    for name in ("claims.html", "exp-digits_classifier.html"):
        page.open((site / name).as_uri())
        page.js("new Promise(r => setTimeout(r, 200))")
        assert page.js("document.querySelectorAll('.js-plotly-plot').length") >= 1, name
        page.screenshot(shots / name.replace(".html", ".png"))
    assert page.js("[...document.images].every(i => i.complete && i.naturalWidth > 0)")

    urls = page.requests()
    assert urls and all(u.startswith(("file://", "data:")) for u in urls), [u for u in urls if not u.startswith("file")]
    assert page.errors() == []
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


UNITS_JS = """(() => {
  const bad = [];
  document.querySelectorAll('table.board').forEach(table => {
    const heads = [...table.tHead.rows[0].cells];
    [...table.tBodies[0].rows].forEach(row => [...row.cells].forEach((cell, i) => {
      const key = cell.getAttribute('data-key');
      if (key === null) return;
      const head = heads[i];
      if (head.getAttribute('data-key') !== key || head.getAttribute('data-unit') !== cell.getAttribute('data-unit'))
        bad.push(table.closest('section').id + ': ' + key + ' in ' + cell.getAttribute('data-unit'));
    }));
  });
  return bad;
})()"""


@pytest.mark.slow
def test_claims_studies_and_task_boards_of_a_fresh_clone_in_headless_chromium(
        tmp_path: Path, browser: Browser, migrated_mlflow_db: Any) -> None:
    """Built from a published ledger alone: both findings pages name every claim and study and draw their charts;
    every leaderboard table keeps one unit per column, and the tasks with a baseline show its row."""
    from tests.test_report_findings import build_fresh

    project = tmp_path / "project"
    project.mkdir()
    site = build_fresh(project, migrated_mlflow_db)
    shots, page = _shots_dir(tmp_path), Page(browser)
    claims = sorted(p.stem for p in (project / "ledger" / "claims").glob("*.json"))
    studies = sorted(p.stem for p in (project / "ledger" / "studies").glob("*.json"))
    assert claims == ["long_lag"] and studies == ["lstm_depth"]

    page.open((site / "claims.html").as_uri())
    page.js("new Promise(r => setTimeout(r, 300))")
    summary = page.js("document.querySelector('table.claims-summary').innerText")
    assert all(name in summary for name in claims) and "Supported" in summary
    assert page.js("document.querySelectorAll('section.claim .js-plotly-plot').length") == len(claims)
    assert page.screenshot(shots / "claims.png") > 100.0

    page.open((site / "studies.html").as_uri())
    page.js("new Promise(r => setTimeout(r, 500))")
    summary = page.js("document.querySelector('table.studies-summary').innerText")
    assert all(name in summary for name in studies)
    for name in studies:
        drawn = page.js(f"document.querySelectorAll('#study-{name} .js-plotly-plot .main-svg').length")
        assert drawn >= 5, name  # history, slice, importance, parallel coordinates, intermediate values
    assert page.screenshot(shots / "studies.png") > 100.0

    page.open((site / "index.html").as_uri())
    page.js("new Promise(r => setTimeout(r, 300))")
    assert page.js(UNITS_JS) == []
    assert page.js("document.querySelectorAll('#task-char_lm-hello tr.row-baseline').length") == 1
    tasks = page.js("[...document.querySelectorAll('section.task')].map(s => s.id)")
    assert "task-sequence_classification-long_lag" in tasks and len(tasks) == len(set(tasks))
    page.js("document.querySelector('#task-char_lm-hello th[data-key=\"test/loss\"]').click()")
    assert page.js("document.querySelector('#task-char_lm-hello tr.row-baseline td.rank').textContent") == ""
    assert page.screenshot(shots / "index-tasks.png") > 100.0
    urls = page.requests()
    assert urls and all(u.startswith(("file://", "data:")) for u in urls), [u for u in urls if not u.startswith("file")]
    assert page.errors() == []
