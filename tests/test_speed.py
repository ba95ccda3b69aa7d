"""The speed benchmark at a tiny size: every row complete, its ratio that of its timings, the table and the JSON."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from benchmarks.tools.speed import format_table, main, run_speed


def test_run_speed_rows_and_ratios() -> None:
    rows = run_speed(time_steps=4, batch=2, input_size=3, hidden_size=5, depths=(1, 2), repeats=3)
    assert [(r["cell"], r["depth"]) for r in rows] == [(c, d) for c in ("lstm", "elman", "peephole") for d in (1, 2)]
    for r in rows:
        assert r["baseline"] == ("RNN" if r["cell"] == "elman" else "LSTM")
        assert r["threads"] == torch.get_num_threads()
        eq, tk = r["times_ms"]["equations"], r["times_ms"]["torch"]
        assert len(eq) == len(tk) == 3 and min(eq + tk) > 0
        assert r["equations_ms"] == statistics.median(eq) and r["torch_ms"] == statistics.median(tk)
        assert r["ratio"] == pytest.approx(r["equations_ms"] / r["torch_ms"])
        per_repeat = [a / b for a, b in zip(eq, tk)]
        assert (r["ratio_min"], r["ratio_max"]) == (min(per_repeat), max(per_repeat))
    table = format_table(rows).splitlines()
    assert len(table) == 2 + len(rows) and "ratio" in table[0] and "per repeat" in table[0]


def test_main_one_row_per_thread_count_and_cell_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    before = torch.get_num_threads()
    out_json = tmp_path / "speed" / "run.json"
    assert main(["--time-steps", "3", "--batch", "2", "--input", "3", "--hidden", "4", "--depths", "1",
                 "--repeats", "1", "--cells", "peephole", "elman", "--threads", "1", "2", "--json", str(out_json)]) == 0
    assert torch.get_num_threads() == before  # restored
    out = capsys.readouterr().out
    assert "equations / torch's kernel" in out and out.count(" LSTM ") == 2 and out.count(" RNN ") == 2
    record = json.loads(out_json.read_text())
    assert [(r["threads"], r["cell"]) for r in record["rows"]] == [(1, "peephole"), (1, "elman"), (2, "peephole"),
                                                                   (2, "elman")]
    assert record["torch"] == torch.__version__ and record["cpus"] >= 1


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--repeats", "0"], ["--cells", "gru"]])
def test_main_rejects_bad_args(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(argv)
