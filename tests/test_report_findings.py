"""The report on a fresh clone (the ledger alone): the claims page's first screen, the studies page's Optuna
figures rebuilt from the published trials, one table per task with its baseline row and never two units in
a column, the settings of each row, who tuned it, the claims that test it, and the compute behind it all."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.cli import main
from tests.conftest import tiny_params, write_params
from tests.findings_fixtures import TRIALS, VALUES, published_findings


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, migrated_mlflow_db: Callable[[], Path]) -> Path:
    """One fresh clone's report for every test here (building it is most of their time)."""
    project = tmp_path_factory.mktemp("fresh")
    return build_fresh(project, migrated_mlflow_db)


def build_fresh(project: Path, migrated_mlflow_db: Callable[[], Path]) -> Path:
    """The project fixture's set-up (tiny params, no outside stores, the migrated MLflow store), then
    published_findings and the report; returns results/report/."""
    write_params(project / "params.yaml", tiny_params())
    shutil.copyfile(migrated_mlflow_db(), project / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        for var in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE", "ARCHBENCH_PARAMS"):
            mp.delenv(var, raising=False)
        published_findings(project)
        assert main(["report"]) == 0
    return project / "results" / "report"


def _data(page: str) -> dict:
    return json.loads(re.search(r'id="page-data">(.*?)</script>', page, re.S).group(1))


def columns_mix_units(index: str) -> list[str]:
    """Every (table, column) whose cells carry another unit than the column's header (an empty list is right)."""
    mixed = []
    for table in re.findall(r'<table class="board".*?</table>', index, re.S):
        heads = re.findall(r'<th class="sortable" data-key="([^"]*)" data-unit="([^"]*)"', table)
        for row in re.findall(r"<tr class=\"row-.*?</tr>", table, re.S):
            cells = re.findall(r'<td class="num"[^>]*?(?:data-key="([^"]*)" data-unit="([^"]*)")?[^>]*>', row)
            keyed = [(k, u) for k, u in cells if k]
            mixed += [f"{k} in {u}" for k, u in keyed if (k, u) not in heads]
    return mixed


def test_claims_page_first_screen_gives_statement_verdict_and_effect(fresh: Path) -> None:
    page = (fresh / "claims.html").read_text()
    summary = re.search(r'<table class="claims-summary">(.*?)</table>', page, re.S).group(1)
    assert "long_lag" in summary and "An LSTM learns dependencies" in summary and 'badge ok">Supported' in summary
    gain = sum([0.90, 0.93]) / 2 - sum([0.30, 0.34]) / 2
    assert f"lstm over elman at data_args.lag = 6: {gain:+.3g} (95% CI" in summary and "published" in summary
    assert page.index("claims-summary") < page.index('<section class="claim"')  # the summary comes first
    assert "12 cell-seeds: runs and cost" in page and "claim_long_lag_lstm_lag6-s1" in page
    assert "seeds per arm would detect the margin 0.05" in page


def test_studies_page_draws_optunas_figures_from_the_published_trials(fresh: Path) -> None:
    page = (fresh / "studies.html").read_text()
    assert 'id="study-lstm_depth"' in page and "4 trials" in page and "pruned at step" in page
    charts = _data(page)["charts"]
    assert {f"study-lstm_depth-{k}" for k in ("history", "slice", "importance", "parallel", "intermediate")} <= set(charts)
    history = charts["study-lstm_depth-history"]
    objective = next(t for t in history["traces"] if t.get("mode") == "markers")
    assert sorted(objective["y"]) == sorted(v for v in VALUES if v is not None)  # the complete trials' values
    assert history["source"] == "optuna.visualization" and "template" not in history["layout"]
    importance = charts["study-lstm_depth-importance"]["traces"][0]
    assert sorted(importance["y"]) == sorted(TRIALS[0])  # every varied parameter has an importance
    assert "history.png" not in page


def test_one_table_per_task_with_its_baseline_and_no_column_mixing_units(fresh: Path) -> None:
    index = (fresh / "index.html").read_text()
    hello = re.search(r'id="task-char_lm-hello".*?</section>', index, re.S).group(0)
    assert hello.count('class="row-baseline"') == 1 and "unigram characters" in hello
    assert 'data-unit="nats/char"' in hello and 'data-unit="nats per character"' not in hello  # one spelling of one unit
    assert columns_mix_units(index) == []
    for chart in _data(index)["charts"].values():  # one unit per chart, named on its axis
        assert chart["unit"] in chart["layout"]["yaxis"]["title"]["text"] or not chart["unit"]
    md = (fresh / "leaderboard.md").read_text()
    assert "## Character-level language model · hello" in md and "(baseline)" in md


def test_rows_show_their_recipe_who_tuned_them_and_the_claim_that_tests_them(fresh: Path) -> None:
    index = (fresh / "index.html").read_text()
    row = re.search(r'data-exp="long_lag_lstm">(.*?)</tr>', index, re.S).group(1)
    assert "forget_bias 1.0 (default)" in row and "lag 100" in row  # not the claim's forget bias 5
    section = re.search(r'id="task-sequence_classification-long_lag".*?</section>', index, re.S).group(0)
    assert 'href="claims.html#claim-long_lag"' in section and "<b>Supported</b>" in section
    assert '{"model_args": {"cell": "lstm", "forget_bias": 5.0}}' in section.replace("&quot;", '"')
    assert "Claim long_lag_full (defined in params.yaml, no verdict published yet" in section  # not run: named anyway
    words = re.search(r'data-exp="words_lstm">(.*?)</tr>', index, re.S).group(1)
    assert 'href="studies.html#study-lstm_depth"' in words and "tuned by lstm_depth" in words
    assert "Compute behind the published ledger" in index
    assert re.search(r"<td>claims</td><td>1</td><td>\d+\.\d+ CPU-h</td>", index)
