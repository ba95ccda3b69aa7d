"""A published row that today's params.yaml or code would no longer make says so in the report (HTML and Markdown),
and a current one does not: the ledger keeps what was published, the report keeps it honest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.report.leaderboard import write_report
from benchmarks.report.ledger import publish
from tests.published_seeds import VALUES, publishable


pytestmark = pytest.mark.usefixtures("data_now_is_d0")


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
    board = json.loads((project / "results" / "report" / "leaderboard.json").read_text())
    assert board["hello_lstm"]["older"] == "config and code"

    path.write_text(json.dumps(record))  # the code it was made by, under the changed recipe
    md, html = _rows(project, params)
    assert md.startswith("| hello_lstm (published) (older config: rerun pending) |") and ">older config</span>" in html


@pytest.mark.parametrize("missing", ["config_hash", "code_hash"])
def test_a_record_without_its_hashes_is_not_called_older(project: Path, missing: str) -> None:
    """Nothing to compare is not a difference: the row is shown as published, unmarked."""
    params = publishable(project, (0, 1, 2), VALUES)
    path = publish(params, "hello_lstm", project / "results")
    record = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in record.items() if k != missing}))
    md, html = _rows(project, params)
    assert md.startswith("| hello_lstm (published) |") and "older" not in html


def test_a_model_no_longer_registered_leaves_the_row_unmarked_and_the_report_whole(project: Path) -> None:
    """An experiment whose params entry names a model the code no longer has cannot be compared: its published row
    is shown unmarked and the rest of the report is written. (An entry params.yaml cannot read at all, e.g. an unknown
    key, stops the report in one line naming the key, as every command does.)"""
    from benchmarks.core.errors import ArchbenchError

    params = publishable(project, (0, 1, 2), VALUES)
    publish(params, "hello_lstm", project / "results")
    defined = dict(params["experiments"]["hello_lstm"])
    params["experiments"]["hello_lstm"]["model"] = "no_such_model"
    md, html = _rows(project, params)
    assert md.startswith("| hello_lstm (published) |") and "older" not in html
    params["experiments"]["hello_lstm"] = defined | {"model_argz": {}}
    with pytest.raises(ArchbenchError, match="^experiment 'hello_lstm': unknown key 'model_argz'"):
        _rows(project, params)
