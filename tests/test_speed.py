"""The speed benchmark at a tiny size: every row complete and its ratios consistent with its timings."""

from __future__ import annotations

import pytest
import torch

from benchmarks.speed import format_table, main, run_speed


def test_run_speed_rows_and_ratios() -> None:
    rows = run_speed(time_steps=4, batch=2, input_size=3, hidden_size=5, depths=(1, 2), repeats=1)
    assert [(r["cell"], r["depth"]) for r in rows] == [(c, d) for c in ("elman", "lstm", "peephole") for d in (1, 2)]
    for r in rows:
        assert r["baseline"] == ("nn.RNN" if r["cell"] == "elman" else "nn.LSTM")
        for path in ("fused", "ref"):
            for kind in ("fwd", "fwd_bwd"):
                assert r[f"{path}_{kind}_ms"] > 0
                assert r[f"{path}_{kind}_ratio"] == pytest.approx(r[f"{path}_{kind}_ms"] / r[f"torch_{kind}_ms"])
    table = format_table(rows).splitlines()
    assert len(table) == 2 + len(rows) and "fused/t" in table[0]


def test_main_one_table_per_thread_count(capsys: pytest.CaptureFixture[str]) -> None:
    before = torch.get_num_threads()
    try:
        assert main(["--time-steps", "3", "--batch", "2", "--input", "3", "--hidden", "4", "--depths", "1",
                     "--repeats", "1", "--cells", "lstm", "--threads", "1", "2"]) == 0
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert "threads=1 " in out and "threads=2 " in out
    assert out.count("nn.LSTM") == 2


def test_main_rejects_bad_threads() -> None:
    with pytest.raises(SystemExit):
        main(["--threads", "0"])
