"""The report site and the ledger on a small fixed set of results written here (no training): files, sorting
by each metric's direction, 95% CIs against scipy, MLflow links, the published column, publish's refusals,
the report from the ledger alone, and `dvc metrics diff` over two committed ledgers."""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from benchmarks.cli import main
from benchmarks.core.errors import ArchbenchError
from tests.conftest import env_for_subprocess, tiny_params

# experiment -> (data, model, per-seed test/loss or test/acc values, stopped_by per seed)
RESULTS: dict[str, dict[str, Any]] = {
    "hello_elman": {"data": "hello", "model": "char_lm", "metrics": {0: {"test/loss": 0.91, "test/bpc": 1.313,
                    "val/loss_best": 0.88}, 1: {"test/loss": 0.97, "test/bpc": 1.399, "val/loss_best": 0.93}},
                    "stopped_by": {0: "max_epochs", 1: "max_epochs"}},
    "hello_lstm": {"data": "hello", "model": "char_lm", "metrics": {0: {"test/loss": 0.52, "test/bpc": 0.750,
                   "val/loss_best": 0.50}, 1: {"test/loss": 0.58, "test/bpc": 0.837, "val/loss_best": 0.55}},
                   "stopped_by": {0: "max_epochs", 1: "max_time"}},
    "digits_classifier": {"data": "digits", "model": "classifier", "metrics": {0: {"test/acc": 0.95, "test/loss": 0.19},
                          1: {"test/acc": 0.97, "test/loss": 0.12}}, "stopped_by": {0: "max_epochs", 1: "max_epochs"}},
}
SERVER = "http://127.0.0.1:5000"


def _png(path: Path, shade: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (48, 32), (shade, 40, 255 - shade))
    for x in range(0, 48, 6):
        for y in range(32):
            img.putpixel((x, y), (255, 255, 255))
    img.save(path)


def _dump(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


RUN_IDS: dict[tuple[str, int], str] = {}  # (experiment, seed) -> the fixture's MLflow run id


def write_fixture(root: Path) -> Path:
    """results/ in the layout train.py writes (current config, code and data, so it can be published), one claim,
    one study, the density study, and an MLflow SQLite store that knows the runs' experiment id."""
    from benchmarks.core.params import experiment_from_params
    from benchmarks.core.provenance import code_hash
    from benchmarks.run.results import data_hash

    from mlflow.tracking import MlflowClient

    params, results = tiny_params(), root / "results"
    db = root / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp_id = [client.create_experiment(f"fixture{i}") for i in range(3)][-1]  # "3": the runs' experiment id
    for name, spec in RESULTS.items():
        exp, out = experiment_from_params(params, name), results / name
        settings = {"data_hash": data_hash(exp, None), "config_hash": exp.config_hash(), "parameters": 1000 + len(name) * 7,
                    "data": {"split": "sha1 % 100", "n_test": 200},
                    "loss_unit": "nats per character" if spec["model"] == "char_lm" else "nats per image (cross-entropy)"}
        for seed, metrics in spec["metrics"].items():
            run_id = client.create_run(exp_id, run_name=f"{name}/seed{seed}").info.run_id
            RUN_IDS[name, seed] = run_id
            result = {"experiment": name, "seed": seed, "metrics": metrics, "stopped_by": spec["stopped_by"][seed],
                      "epochs": 2, "steps": 20, "budget": {"max_epochs": 2, "max_steps": -1, "max_time": "00:00:10:00"},
                      "config_hash": exp.config_hash(), "code_hash": code_hash(exp), "data_hash": settings["data_hash"],
                      "settings": settings}
            seed_dir = out / "seeds" / f"seed_{seed}"
            _dump(seed_dir / "result.json", result)
            _dump(seed_dir / "provenance.json", {"run_id": run_id, "tracking_uri": f"sqlite:///{db}",
                                                 "git_commit": "abc123def456", "machine": {"host": "box", "cpu": "x86_64",
                                                 "cores": 2, "threads": 1, "gpu": None}, "device": "cpu",
                                                 "fit_s": 1.5 + seed, "finished_at": "2026-12-01T03:00:00Z"})
            if spec["model"] == "char_lm":
                (seed_dir / "samples").mkdir(parents=True, exist_ok=True)
                (seed_dir / "samples" / "samples.txt").write_text(f"hello hell <{name} seed {seed}>\n")
            else:
                _png(seed_dir / "samples" / "samples.png", 60 + 100 * seed)
            shift = 0.1 * list(RESULTS).index(name)
            rows = ["epoch,train/loss,val/loss"] + [f"{e},{1.5 - 0.2 * e + 0.01 * seed + shift},{1.6 - 0.25 * e + 0.03 * seed + shift}"
                                                    for e in range(3)]
            (out / "curves").mkdir(parents=True, exist_ok=True)
            (out / "curves" / f"seed_{seed}.csv").write_text("\n".join(rows) + "\n")
        summary = {"experiment": name, "model": spec["model"], "data": spec["data"], "profile": "default",
                   "description": f"{name} on {spec['data']}", "seeds": sorted(spec["metrics"]), "missing_seeds": [],
                   "per_seed": {str(s): m for s, m in spec["metrics"].items()},
                   "stopped_by": {str(s): v for s, v in spec["stopped_by"].items()}, "epochs": {"0": 2, "1": 2},
                   "truncated": "max_time" in spec["stopped_by"].values(),
                   "budget": {"max_epochs": 2, "max_steps": -1, "max_time": "00:00:10:00"}, "settings": settings}
        _dump(out / "summary.json", summary)
    claim = {"claim": "long_lag", "statement": "An LSTM remembers longer than an Elman RNN.", "metric": "test/acc",
             "mode": "max", "sweep": {"path": "data_args.lag", "values": [3, 6]}, "arms": ["elman", "lstm"], "also": [],
             "table": [{"arm": a, "value": v, "seeds": [m, m + 0.02], "test/acc": {"mean": m + 0.01, "ci": 0.127, "n": 2}}
                       for a, v, m in (("elman", 3, 0.9), ("elman", 6, 0.3), ("lstm", 3, 0.95), ("lstm", 6, 0.9))],
             "verdicts": [{"type": "better", "margin": 0.05, "outcome": "Supported", "comparisons": [],
                           "text": "Supported: lstm vs elman at data_args.lag = 6 on test/acc: better."},
                          {"type": "compare", "outcome": None, "comparisons": [],
                           "text": "Comparison: lstm vs elman at data_args.lag = 3 is no significant difference."}],
             "outcome": "Supported", "verdict": "Supported: lstm vs elman"}
    _dump(results / "claims" / "long_lag" / "claim.json", claim)
    _png(results / "claims" / "long_lag" / "claim.png", 200)
    _dump(results / "tune" / "lstm_depth" / "best_params.json", {
        "study": "lstm_depth", "metric": "val/loss", "direction": "minimize", "value": 0.4321, "trial": 2,
        "params": {"num_layers": 2, "hidden_size": 64, "lr": 0.003}, "n_complete": 3, "n_pruned": 1, "n_trials": 4,
        "n_repeats": 0, "experiment": "words_lstm"})
    _png(results / "tune" / "lstm_depth" / "history.png", 120)
    dims = {str(d): {m: {"test_mean_log_lik_per_dim": v - 0.1 * d} for m, v in (("gaussian", -1.0), ("gmm", -0.8),
                                                                               ("kde", -0.5 - 0.3 * d))}
            # the study also records a number per d that is not a method
            | {"pca_explained_variance_fraction": 0.9} for d in (2, 4)}
    _dump(results / "density" / "density.json", {"results": {"toy_ring": {"n_train": 300, "n_test": 200,
                                                                          "crossover": 4, "dims": dims}}})
    _png(results / "density" / "kde_vs_dim.png", 30)
    return results


def _ledger_entry(root: Path) -> None:
    """A published words_lstm (never run here) and a published hello_lstm whose CI our rerun falls outside."""
    ledger = root / "ledger"
    seeds = {str(s): {"metrics": {"test/loss": v, "test/bpc": v / math.log(2)}, "stopped_by": "max_epochs", "epochs": 4,
                      "steps": 400, "provenance": {"run_id": f"pub-words-{s}", "tracking_uri": SERVER,
                                                   "experiment_id": "7", "git_commit": "feedbeef"}}
             for s, v in ((0, 1.21), (1, 1.25), (2, 1.23))}
    _dump(ledger / "words_lstm.json", {"schema": 1, "experiment": "words_lstm", "model": "char_lm", "data": "words",
                                       "profile": "default", "budget": {"max_epochs": 4}, "settings": {"parameters": 54321},
                                       "seeds": seeds, "summary": {"test/loss": {"mean": 1.23, "ci95": 0.0497, "n": 3}},
                                       "curves": {"0": {"epoch": [0, 1], "val/loss": [1.6, 1.3]}}})
    _dump(ledger / "digits_wide.json", {"schema": 1, "experiment": "digits_wide", "model": "classifier", "data": "digits",
                                        "seeds": {"0": {"metrics": {"test/acc": 0.99, "test/loss": 0.05}}}})
    _dump(ledger / "hello_lstm.json", {"schema": 1, "experiment": "hello_lstm", "model": "char_lm", "data": "hello",
                                       "seeds": {}, "summary": {"test/loss": {"mean": 0.80, "ci95": 0.05, "n": 2}}})


@pytest.fixture
def site(project: Path) -> Path:
    write_fixture(project)
    _ledger_entry(project)
    started = time.perf_counter()
    assert main(["report", "--mlflow-url", SERVER]) == 0
    print(f"report build: {time.perf_counter() - started:.2f} s")
    return project / "results" / "report"


def _board(index: str, task: str) -> str:
    return re.search(rf'<section class="task" id="task-{task}"[^>]*>(.*?)</section>', index, re.S).group(1)


def test_site_files_and_no_remote_reference(site: Path) -> None:
    names = {p.name for p in site.iterdir()}
    assert {"index.html", "compare.html", "claims.html", "studies.html", "density.html", "leaderboard.md",
            "exp-hello_elman.html", "exp-words_lstm.html", "assets", "img"} <= names
    assert (site / "assets" / "plotly.min.js").stat().st_size > 1_000_000
    for page in site.glob("*.html"):
        text = page.read_text()
        # Links to the MLflow server are navigations; nothing is *loaded* from anywhere but the folder itself.
        loaded = re.findall(r'(?:src|href)="([^"]+)"', text)
        assert all(not u.startswith(("http:", "https:", "//")) for u in loaded if not u.startswith(SERVER)), page
        for rel in re.findall(r'src="([^"]+)"', text):
            assert (site / rel).is_file(), (page.name, rel)
    assert "img/digits_classifier/seed_1/samples.png" in (site / "exp-digits_classifier.html").read_text()
    assert "hello hell &lt;hello_lstm seed 1&gt;" in (site / "exp-hello_lstm.html").read_text()


def test_leaderboard_sorted_by_direction_with_scipy_ci(site: Path) -> None:
    index = (site / "index.html").read_text()
    hello, digits = _board(index, "char_lm-hello"), _board(index, "image_classification-digits")
    assert re.findall(r'data-exp="(\w+)"', hello) == ["hello_lstm", "hello_elman"]  # test/loss: lower first
    assert 'data-primary="test/acc"' in digits  # accuracy: higher is better
    assert re.findall(r'data-exp="(\w+)"', digits) == ["digits_wide", "digits_classifier"]
    for name, spec in RESULTS.items():
        key = "test/acc" if spec["data"] == "digits" else "test/loss"
        values = [m[key] for m in spec["metrics"].values()]
        low, high = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / len(values), scale=stats.sem(values))
        row = re.search(rf'<tr class="row-results" data-exp="{name}">(.*?)</tr>', index, re.S).group(1)
        cell = re.search(rf'data-v="[^"]*" data-mean="([^"]+)" data-ci="([^"]+)"', row)
        assert float(cell.group(1)) == pytest.approx((low + high) / 2, abs=1e-12)
        assert float(cell.group(2)) == pytest.approx((high - low) / 2, abs=1e-12)
        assert f"{(low + high) / 2:.4g} ± {(high - low) / 2:.2g}" in row
    row = re.search(r'data-exp="hello_lstm">(.*?)</tr>', hello, re.S).group(1)
    assert "truncated" in row and "max_time" in row and "epochs 2" in row  # stopped by max_time: marked
    # The published hello_lstm (0.80 ± 0.05) does not contain our rerun's 0.55: outside.
    assert 'data-within="False"' in row and "outside CI" in row


def test_every_number_links_to_its_run_with_settings(site: Path) -> None:
    index = (site / "index.html").read_text()
    assert f'href="{SERVER}/#/experiments/3/runs/{RUN_IDS["hello_lstm", 1]}"' in index  # experiment id from the store
    words = (site / "exp-words_lstm.html").read_text()
    assert f'href="{SERVER}/#/experiments/7/runs/pub-words-2"' in words
    cell = re.search(r'data-exp="hello_elman">.*?title="([^"]+)"', index, re.S).group(1)
    tip = html.unescape(cell)
    hello = json.loads((site.parent / "hello_elman" / "seeds" / "seed_0" / "result.json").read_text())["data_hash"]
    assert f"run {RUN_IDS['hello_elman', 0]}" in tip and f"data_hash: {hello}" in tip and "git commit: abc123def456" in tip
    assert "data.split: sha1 % 100" in tip and "data.n_test: 200" in tip
    page = (site / "exp-hello_elman.html").read_text()
    assert page.count(f"{SERVER}/#/experiments/3/runs/{RUN_IDS['hello_elman', 0]}") == 4  # 3 metrics and the run id


def test_anchors_claims_studies_density_and_compare(site: Path) -> None:
    index = (site / "index.html").read_text()
    assert "published" in _board(index, "char_lm-words") and "exp-words_lstm.html" in index  # ledger-only row
    claims = (site / "claims.html").read_text()
    assert "An LSTM remembers longer" in claims and 'class="badge ok">Supported' in claims
    assert re.search(r'class="badge ?">Comparison</span> compare: Comparison', claims) and "better (margin 0.05)" in claims
    assert "img/claims/long_lag.png" in claims
    studies = (site / "studies.html").read_text()
    assert "lstm_depth" in studies and "0.4321" in studies
    assert "archbench publish --study lstm_depth" in studies  # only the best is known until it is published
    assert "crossover d = <b>4</b>" in (site / "density.html").read_text()
    data = json.loads(re.search(r'id="page-data">(.*?)</script>', (site / "compare.html").read_text(), re.S).group(1))
    choices = data["compare"]["choices"]
    assert {"hello_elman", "hello_lstm", "hello_lstm [published]", "words_lstm [published]"} <= set(choices)
    assert data["compare"]["directions"]["test/acc"] == "max"


def test_anchor_rows_sit_at_their_rank(project: Path) -> None:
    from benchmarks.report.site.board_model import boards

    entry = {"name": "shakespeare_lstm", "model": "char_lm", "data": "tinyshakespeare", "source": "results",
             "seeds": [{"seed": 0, "metrics": {}, "stopped_by": "max_epochs"}], "budget": {}, "curves": {},
             "settings": {"loss_unit": "nats per character"}, "truncated": False,
             "summary": {"test/loss_valtest": {"mean": 1.60, "ci95": float("nan"), "n": 1},
                         "val/loss_best": {"mean": 1.40, "ci95": float("nan"), "n": 1}}}
    (board,) = boards({"shakespeare_lstm": entry}, {}, [])
    # nanoGPT's validation loss is paired with our loss over val+test, not with our (easier) val loss
    assert board["primary"] == ("test/loss_valtest", "nats/char")
    assert [r["kind"] for r in board["rows"]] == ["anchor", "run", "anchor"]  # 1.47 < 1.60 < 1.88 nats


def test_the_tagger_table_holds_udpipe_and_no_other_table_does(project: Path) -> None:
    from benchmarks.report.site.board_model import boards

    def entry(name: str, model: str, data: str, acc: float) -> dict:
        return {"name": name, "model": model, "data": data, "source": "results", "budget": {}, "curves": {},
                "seeds": [{"seed": 0, "metrics": {}, "stopped_by": "max_epochs"}], "settings": {}, "truncated": False,
                "summary": {"test/acc": {"mean": acc, "ci95": float("nan"), "n": 1}}}

    tables = boards({"ud_tagger": entry("ud_tagger", "tagger", "ud_ewt", 0.95),
                     "old_tagger": entry("old_tagger", "tagger", "ud_ewt", 0.93),
                     "tagger_on_frames": entry("tagger_on_frames", "frame_labeller", "ud_ewt", 0.5)}, {}, [])
    by_kind = {b["kind"]: b for b in tables}
    upos = by_kind["upos"]
    assert upos["primary"] == ("test/acc", "fraction")
    assert [r.get("name", r.get("model")) for r in upos["rows"]] == [
        "ud_tagger", "UDPipe 1.2 tagger (UD 2.5 English-EWT model)", "old_tagger"]  # 0.95 > 0.944 > 0.93
    assert upos["rows"][1]["approx"] is True and "gold tokenisation" in upos["rows"][1]["protocol"]
    assert by_kind["frame_labels"]["anchors"] == []  # same dataset, another task: no UPOS anchor
    from benchmarks.report.leaderboard import leaderboard_markdown

    md = leaderboard_markdown({"entries": {"ud_tagger": entry("ud_tagger", "tagger", "ud_ewt", 0.95)},
                               "published": {}, "baselines": []})
    assert "| *UDPipe 1.2 tagger (UD 2.5 English-EWT model)* (anchor: ufal/udpipe" in md and "| ≈0.944 |" in md


def test_report_renders_from_the_ledger_alone(project: Path) -> None:
    _ledger_entry(project)
    assert main(["report"]) == 0
    index = (project / "results" / "report" / "index.html").read_text()
    assert re.findall(r'data-exp="(\w+)"', index) == ["hello_lstm", "words_lstm", "digits_wide"]
    assert "1.23 ± 0.05" in index and "Multi30k" not in index


def test_publish_writes_a_deterministic_ledger_and_refuses_bad_seeds(project: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    write_fixture(project)
    assert main(["publish", "hello_lstm"]) == 0
    record_path, numbers_path = project / "ledger" / "hello_lstm.json", project / "ledger" / "metrics" / "hello_lstm.json"
    first = record_path.read_bytes()
    assert main(["publish", "hello_lstm"]) == 0 and record_path.read_bytes() == first
    record = json.loads(first)
    assert list(record) == sorted(record) and record["truncated"] is True
    assert record["seeds"]["1"]["stopped_by"] == "max_time" and record["seeds"]["0"]["provenance"]["experiment_id"] == "3"
    numbers = json.loads(numbers_path.read_text())
    values = [0.52, 0.58]
    half = stats.t.ppf(0.975, 1) * stats.tstd(values) / math.sqrt(2)
    assert numbers["test/loss"]["ci95"] == pytest.approx(half) and numbers["n_seeds"] == 2
    assert all(isinstance(v, (int, float)) for m in numbers.values() if isinstance(m, dict) for v in m.values())
    from benchmarks.report.ledger import numbers as ledger_numbers

    assert ledger_numbers({"test/loss": [0.52]}) == {"test/loss": {"mean": 0.52, "n": 1}}  # no spread from one seed

    seed1 = project / "results" / "hello_elman" / "seeds" / "seed_1" / "result.json"
    result = json.loads(seed1.read_text())
    seed1.write_text(json.dumps(result | {"code_hash": "0123456789ab"}))
    assert main(["publish", "hello_elman"]) == 2
    assert "cannot publish hello_elman: seed 1: made by other code" in capsys.readouterr().err
    seed1.write_text(json.dumps(result | {"stopped_by": "diverged"}))
    with pytest.raises(ArchbenchError, match="seed 1 diverged"):
        from benchmarks.report.ledger import publish

        publish(tiny_params(), "hello_elman", project / "results")
    assert main(["publish", "words_lstm"]) == 2
    assert "no finished seed" in capsys.readouterr().err
    assert not (project / "ledger" / "hello_elman.json").exists()


def test_published_samples_show_in_a_report_from_the_ledger_alone(project: Path) -> None:
    write_fixture(project)
    assert main(["publish", "hello_lstm", "digits_classifier"]) == 0
    text = json.loads((project / "ledger" / "hello_lstm.json").read_text())["samples"]
    assert text == {s: [{"name": "samples.txt", "text": f"hello hell <hello_lstm seed {s}>\n"}] for s in ("0", "1")}
    images = json.loads((project / "ledger" / "digits_classifier.json").read_text())["samples"]
    assert images == {"0": [{"name": "samples.png", "file": "samples/digits_classifier/seed_0/samples.png"}]}
    published = project / "ledger" / "samples" / "digits_classifier" / "seed_0" / "samples.png"
    source = project / "results" / "digits_classifier" / "seeds" / "seed_0" / "samples" / "samples.png"
    image = source.read_bytes()
    assert published.read_bytes() == image
    (project / "ledger" / "samples" / "digits_classifier" / "seed_9").mkdir()  # left from an earlier publish
    assert main(["publish", "digits_classifier"]) == 0
    assert sorted(p.name for p in (project / "ledger" / "samples" / "digits_classifier").iterdir()) == ["seed_0"]

    import shutil

    shutil.rmtree(project / "results")  # a fresh clone: the ledger alone
    assert main(["report"]) == 0
    page = (project / "results" / "report" / "exp-hello_lstm.html").read_text()
    assert "hello hell &lt;hello_lstm seed 1&gt;" in page
    page = (project / "results" / "report" / "exp-digits_classifier.html").read_text()
    src = re.search(r'<img src="([^"]+)" alt="samples.png"', page).group(1)
    assert (project / "results" / "report" / src).read_bytes() == image


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env_for_subprocess(), check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.slow
def test_dvc_metrics_diff_and_compare_between_ledger_revisions(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_fixture(project)
    (project / ".gitignore").write_text("/results/\n/mlflow.db\n")
    _git(project, "init", "-q")
    subprocess.run(["dvc", "init", "-q"], cwd=project, env=env_for_subprocess(), check=True)
    assert main(["publish", "hello_lstm"]) == 0
    _git(project, "add", "-A")
    _git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "publish")
    summary = project / "results" / "hello_lstm" / "seeds" / "seed_1" / "result.json"
    result = json.loads(summary.read_text())
    result["metrics"]["test/loss"] = 0.70
    summary.write_text(json.dumps(result))
    assert main(["publish", "hello_lstm"]) == 0
    out = subprocess.run(["dvc", "metrics", "diff", "HEAD", "--targets", "ledger/metrics", "--json"], cwd=project, env=env_for_subprocess(),
                         capture_output=True, text=True, check=True).stdout
    diff = json.loads(out)["ledger/metrics/hello_lstm.json"]
    assert diff["test/loss.mean"]["old"] == pytest.approx(0.55) and diff["test/loss.mean"]["new"] == pytest.approx(0.61)
    capsys.readouterr()
    assert main(["report", "--compare", "HEAD"]) == 0
    printed = capsys.readouterr().out
    ours, theirs = [0.52, 0.70], [0.52, 0.58]
    half = [stats.t.ppf(0.975, 1) * stats.tstd(v) / math.sqrt(2) for v in (ours, theirs)]  # 1.14, 0.381
    line = rf"hello_lstm test/loss\s+0\.61 ± {half[0]:.2g} \(n=2\)\s+0\.55 ± {half[1]:.2g} \(n=2\)\s+yes"
    assert re.search(line, printed), printed
    assert main(["report", "--compare", "no-such-rev"]) == 2


def test_the_seeds_table_names_the_cpu_model_and_its_vector_isa() -> None:
    """Kernels (and so rounding) differ between AVX2 and AVX-512 CPUs: a seed's record says which ran it."""
    import torch

    from benchmarks.core.provenance import machine
    from benchmarks.report.site.pages import cpu_label

    m = machine(1)
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    if Path("/proc/cpuinfo").is_file():
        assert m["cpu_model"] and m["cpu_model"] in Path("/proc/cpuinfo").read_text()
    assert cpu_label(m) == ", ".join(x for x in (m["cpu_model"] or m["cpu"], m["cpu_capability"]) if x)
    assert cpu_label({"cpu": "x86_64"}) == "x86_64"  # a record written before the model was kept
