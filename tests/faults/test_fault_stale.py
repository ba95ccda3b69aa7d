"""Issue cases 4 and 5: staleness covers the data (collect, publish and report name a seed made from other data
and leave it out), and publish refuses missing or stale seeds unless --allow-missing, which the ledger records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks.cli import main
from tests.conftest import tiny_params, write_params

pytestmark = pytest.mark.faults
WORDS = Path("/usr/share/dict/american-english")


def _errors(capsys: pytest.CaptureFixture[str]) -> tuple[str, list[str]]:
    captured = capsys.readouterr()
    err = re.sub(r"--- Logging error ---.*?\nArguments: [^\n]*\n", "", captured.err, flags=re.S)
    assert "Traceback" not in err, err
    return captured.out, [line for line in err.splitlines() if line.startswith("archbench: error:")]


@pytest.mark.skipif(not WORDS.is_file(), reason="needs the system word list (apt install wamerican)")
@pytest.mark.slow
def test_seeds_made_from_other_data_are_named_and_left_out(project: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHBENCH_DATA_DIR", str(project / "no-data-here"))  # the system word list
    assert main(["train", "words_lstm", "--seed", "0", "--no-progress"]) == 0
    assert main(["collect", "words_lstm"]) == 0 and main(["publish", "words_lstm"]) == 0
    capsys.readouterr()
    shorter = project / "data" / "words"
    shorter.mkdir(parents=True)
    (shorter / "american-english").write_text("\n".join(WORDS.read_text().splitlines()[2000:]) + "\n")
    monkeypatch.setenv("ARCHBENCH_DATA_DIR", str(project / "data"))  # the same word list, 2,000 lines shorter
    published = (project / "ledger" / "words_lstm.json").read_bytes()

    assert main(["collect", "words_lstm"]) == 2
    _, (line,) = _errors(capsys)
    assert "no finished seed to merge" in line and "seed 0: made from other data" in line, line
    assert main(["publish", "words_lstm"]) == 2
    _, (line,) = _errors(capsys)
    assert "cannot publish words_lstm: seed 0: made from other data" in line and "--allow-missing" in line, line
    assert (project / "ledger" / "words_lstm.json").read_bytes() == published  # the ledger keeps the current one
    assert main(["report"]) == 0
    out, _ = _errors(capsys)
    assert "report: words_lstm: left out seed 0: made from other data" in out
    board = json.loads((project / "results" / "report" / "leaderboard.json").read_text())
    assert board["words_lstm"]["source"] == "ledger"  # the stale results are gone; the published ones show


@pytest.mark.slow
def test_publish_refuses_a_missing_seed_unless_allowed_and_says_so(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tiny_params()
    params["experiments"]["hello_lstm"]["seeds"] = [0, 1]
    write_params(project / "params.yaml", params)
    assert main(["train", "hello_lstm", "--seed", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["publish", "hello_lstm"]) == 2
    _, (line,) = _errors(capsys)
    assert "cannot publish hello_lstm: seed [1] not finished" in line and "--allow-missing" in line, line
    assert not (project / "ledger" / "hello_lstm.json").exists()
    assert main(["publish", "hello_lstm", "--allow-missing"]) == 0
    record = json.loads((project / "ledger" / "hello_lstm.json").read_text())
    assert record["allow_missing"] is True and record["missing_seeds"] == [1] and list(record["seeds"]) == ["0"]
    assert record["stale_seeds"] == []


@pytest.mark.slow
def test_publish_with_allow_missing_leaves_a_stale_seed_out_and_records_it(project: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    params = tiny_params()
    write_params(project / "params.yaml", params)
    assert main(["train", "hello_lstm", "--no-progress"]) == 0
    seed1 = project / "results" / "hello_lstm" / "seeds" / "seed_1" / "result.json"
    seed1.write_text(json.dumps(json.loads(seed1.read_text()) | {"data_hash": "0" * 64}))
    capsys.readouterr()
    assert main(["publish", "hello_lstm"]) == 2
    _, (line,) = _errors(capsys)
    assert "seed 1: made from other data (000000000000" in line, line
    assert main(["publish", "hello_lstm", "--allow-missing"]) == 0
    out, _ = _errors(capsys)
    assert "publish hello_lstm: left out seed 1: made from other data" in out
    record = json.loads((project / "ledger" / "hello_lstm.json").read_text())
    assert record["stale_seeds"] == [1] and record["missing_seeds"] == [1] and record["allow_missing"] is True
