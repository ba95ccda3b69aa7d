"""A published row that today's params.yaml or code would no longer make says so in the report (HTML and Markdown),
and a current one does not: the ledger keeps what was published, the report keeps it honest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.report.leaderboard import write_report
from benchmarks.report.ledger import publish
from tests.published_seeds import VALUES, data_now_is_d0, publishable


@pytest.fixture(autouse=True)
def _data_now_is_d0(monkeypatch: pytest.MonkeyPatch) -> None:
    data_now_is_d0(monkeypatch)


def _rows(project: Path, params: dict) -> tuple[str, str]:
    """(the hello_lstm line of leaderboard.md, the hello_lstm row of index.html), from the ledger alone."""
    import shutil

    shutil.rmtree(project / "results" / "hello_lstm", ignore_errors=True)  # only the published row is shown
    index = write_report(project / "results", params)
    md = next(line for line in (index.parent / "leaderboard.md").read_text().splitlines()
              if line.startswith("| hello_lstm"))
    html = index.read_text()
    start = html.index('data-exp="hello_lstm"')
    return md, html[start: html.index("</tr>", start)]


def test_a_current_published_row_has_no_mark_and_older_code_or_config_is_named(project: Path) -> None:
    params = publishable(project, (0, 1, 2), VALUES)
    path = publish(params, "hello_lstm", project / "results")
    md, html = _rows(project, params)
    assert md.startswith("| hello_lstm (published) |") and "older" not in md and "older" not in html

    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"code_hash": "0ldc0de0ldc0"}))
    md, html = _rows(project, params)
    assert md.startswith("| hello_lstm (published) (older code: rerun pending) |")
    assert '<span class="badge warn older"' in html and ">older code</span>" in html
    assert "`archbench train hello_lstm` and `archbench publish hello_lstm` run again" in html

    params["experiments"]["hello_lstm"]["model_args"]["hidden_size"] += 1  # another recipe under the same name
    md, html = _rows(project, params)
    assert md.startswith("| hello_lstm (published) (older config and code: rerun pending) |")
    assert ">older config and code</span>" in html


def test_an_experiment_no_longer_defined_is_shown_unmarked(project: Path) -> None:
    params = publishable(project, (0, 1, 2), VALUES)
    publish(params, "hello_lstm", project / "results")
    del params["experiments"]["hello_lstm"]
    md, html = _rows(project, params)
    assert md.startswith("| hello_lstm (published) |") and "older" not in html
