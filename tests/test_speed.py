"""The speed benchmark at a tiny size: every row complete, its ratios consistent with its timings, the
per-thread tables, the summary and the JSON record."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch

from benchmarks.tools.speed import format_summary, format_table, format_verdicts, main, run_speed, verdict

CELLS = ("lstm", "peephole", "elman")


def test_run_speed_rows_and_ratios() -> None:
    rows = run_speed(time_steps=4, batch=2, input_size=3, hidden_size=5, depths=(1, 2), repeats=3)
    assert [(r["cell"], r["depth"]) for r in rows] == [(c, d) for c in CELLS for d in (1, 2)]
    for r in rows:
        assert r["baseline"] == ("nn.RNN" if r["cell"] == "elman" else "nn.LSTM")
        assert r["threads"] == torch.get_num_threads()
        for kind in ("fwd", "fwd_bwd"):
            assert len(r["times_ms"][f"torch_{kind}"]) == 3
            for path in ("fused", "ref"):
                ts = r["times_ms"][f"{path}_{kind}"]
                assert len(ts) == 3 and min(ts) > 0
                assert r[f"{path}_{kind}_ms"] == statistics.median(ts)
                assert r[f"{path}_{kind}_ratio"] == pytest.approx(r[f"{path}_{kind}_ms"] / r[f"torch_{kind}_ms"])
                assert r[f"{path}_{kind}_faster"] == sum(a < b for a, b in zip(ts, r["times_ms"][f"torch_{kind}"]))
                assert 0.0 < r[f"{path}_{kind}_sign_p"] <= 1.0
    table = format_table(rows).splitlines()
    assert len(table) == 2 + len(rows) and "fused/t" in table[0] and "ref/t" in table[0]


def _timed_row(ours: list[float], theirs: list[float], **key) -> dict:
    """A row as run_speed makes it, from given per-repeat forward+backward times."""
    from benchmarks.tools.speed import _sign_test

    return {**key, "times_ms": {"fused_fwd_bwd": ours, "torch_fwd_bwd": theirs},
            **_sign_test(ours, theirs, "fused_fwd_bwd")}


def test_sign_test_verdicts_can_come_out_each_way() -> None:
    """Seven clean wins is faster (p = 2/128), seven losses slower, six of seven or a near-equal ratio a tie."""
    theirs = [100.0] * 7
    assert verdict(_timed_row([90.0] * 7, theirs)) == "faster"
    assert verdict(_timed_row([110.0] * 7, theirs)) == "slower"
    assert verdict(_timed_row([90.0] * 6 + [130.0], theirs)) == "tie"  # p = 0.125
    assert verdict(_timed_row([99.0, 101.0] * 3 + [99.0], theirs)) == "tie"
    assert _timed_row([90.0] * 7, theirs)["fused_fwd_bwd_sign_p"] == pytest.approx(2 / 128)


def test_verdict_table_one_line_per_threads_and_depth() -> None:
    rows = [_timed_row([90.0] * 7 if n == 1 else [110.0] * 7, [100.0] * 7, threads=n, depth=1, cell=c)
            for n in (1, 2) for c in ("lstm", "peephole")]
    lines = format_verdicts(rows).splitlines()
    assert lines[0].split() == ["threads", "depth", "lstm", "peephole"]
    assert lines[2].split() == ["1", "1"] + ["7/7", "p=0.02", "faster"] * 2
    assert lines[3].split() == ["2", "1"] + ["0/7", "p=0.02", "slower"] * 2


def test_run_speed_without_ref_path() -> None:
    rows = run_speed(time_steps=3, batch=2, input_size=3, hidden_size=4, depths=(1,), repeats=1,
                     cells=("lstm",), ref=False)
    assert "fused_fwd_bwd_ratio" in rows[0] and not any(k.startswith("ref_") for k in rows[0])
    assert "ref" not in format_table(rows)


def test_summary_one_line_per_threads_and_depth() -> None:
    rows = []
    for n in (1, 2):
        for cell in CELLS:
            for d in (1, 3):
                rows.append({"threads": n, "cell": cell, "depth": d, "baseline": "nn.RNN" if cell == "elman"
                             else "nn.LSTM", "fused_fwd_ratio": 0.5 + d / 10, "fused_fwd_bwd_ratio": n + d / 100})
    lines = format_summary(rows).splitlines()
    assert "peephole/LSTM f+b" in lines[0] and "elman/RNN fwd" in lines[0] and "lstm/LSTM fwd" in lines[0]
    assert [ln.split()[:2] for ln in lines[2:]] == [["1", "1"], ["1", "3"], ["2", "1"], ["2", "3"]]
    assert lines[-1].split()[2:] == ["0.80", "2.03"] * 3  # threads 2, depth 3: fwd 0.5+0.3, f+b 2+0.03


def test_main_one_table_per_thread_count_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    before = torch.get_num_threads()
    out_json = tmp_path / "speed" / "run.json"
    assert main(["--time-steps", "3", "--batch", "2", "--input", "3", "--hidden", "4", "--depths", "1",
                 "--repeats", "1", "--cells", "lstm", "elman", "--threads", "1", "2", "--no-ref",
                 "--json", str(out_json)]) == 0
    assert torch.get_num_threads() == before  # restored
    out = capsys.readouterr().out
    assert "threads=1 " in out and "threads=2 " in out and "fused path / torch" in out and "sign test" in out
    assert out.count("nn.LSTM") == 2 and out.count("nn.RNN") == 2
    record = json.loads(out_json.read_text())
    assert [(r["threads"], r["cell"]) for r in record["rows"]] == [(1, "lstm"), (1, "elman"), (2, "lstm"),
                                                                   (2, "elman")]
    assert record["torch"] == torch.__version__ and record["cpus"] >= 1


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--repeats", "0"], ["--cells", "gru"]])
def test_main_rejects_bad_args(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(argv)
