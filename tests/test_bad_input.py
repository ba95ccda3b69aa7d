"""Bad input gets one line naming the problem and the fix, never a traceback, and exit code 2."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.cli import main
from tests.conftest import tiny_params, write_params


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archbench: error: ") and "\n" not in err, err
    return err


def _with(project: Path, name: str, **changes: object) -> None:
    params = tiny_params()
    params["experiments"][name].update(changes)
    write_params(project / "params.yaml", params)


def test_malformed_params_yaml(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "params.yaml").write_text("experiments:\n  hello_lstm: {model: char_lm\n  oops: [\n")
    err = _one_line_error(capsys, ["train", "hello_lstm"])
    assert "not valid YAML" in err and "line" in err


def test_missing_params_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "params.yaml").unlink()
    assert "params.yaml not found" in _one_line_error(capsys, ["list"])


def test_unknown_experiment(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(capsys, ["train", "nope"])
    assert "unknown experiment 'nope'" in err and "hello_lstm" in err


def test_unknown_model(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", model="transformer")
    err = _one_line_error(capsys, ["train", "hello_lstm"])
    assert "experiment 'hello_lstm'" in err and "unknown model 'transformer'" in err and "char_lm" in err


def test_unknown_dataset(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", data="imagenet")
    err = _one_line_error(capsys, ["train", "hello_lstm"])
    assert "unknown dataset 'imagenet'" in err and "words" in err


def test_unknown_model_argument(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", model_args={"hiden_size": 8})
    err = _one_line_error(capsys, ["train", "hello_lstm"])
    assert "experiment 'hello_lstm'" in err and "'hiden_size'" in err and "hidden_size" in err


def test_unknown_trainer_argument(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", trainer={"max_epoch": 1})
    assert "unknown trainer key 'max_epoch'" in _one_line_error(capsys, ["train", "hello_lstm"])


def test_negative_hidden_size(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", model_args={"hidden_size": -4})
    err = _one_line_error(capsys, ["train", "hello_lstm"])
    assert "hello_lstm" in err and "hidden_size" in err and "-4" in err
    # Validated before training: no MLflow run was opened and nothing was written.
    assert not (project / "mlflow.db").exists() and not (project / "results").exists()


def test_bad_data_value(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", data_args={"batch_size": 0})
    assert "batch_size" in _one_line_error(capsys, ["train", "hello_lstm"])


def test_missing_data_file(project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """tinyshakespeare with no data dir and no download gives one line naming every option."""
    monkeypatch.setenv("ARCHBENCH_DATA_DIR", str(project / "empty"))
    params = tiny_params()
    params["full_experiments"]["shakespeare_lstm"]["data_args"]["download"] = False
    write_params(project / "params.yaml", params)
    err = _one_line_error(capsys, ["train", "shakespeare_lstm"])
    assert "tinyshakespeare/input.txt" in err and "ARCHBENCH_DATA_DIR" in err and "http" in err


def test_unknown_study(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown study 'x'" in _one_line_error(capsys, ["tune", "x"])


def test_bad_seeds(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", seeds="zero")
    assert "seeds" in _one_line_error(capsys, ["train", "hello_lstm"])


def test_continue_from_a_missing_checkpoint_or_without_a_seed(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _with(project, "hello_lstm", seeds=[0, 1])
    err = _one_line_error(capsys, ["train", "hello_lstm", "--continue-from", "last.ckpt"])
    assert "seeds [0, 1]" in err and "add --seed N" in err
    err = _one_line_error(capsys, ["train", "hello_lstm", "--seed", "0", "--continue-from", "gone/last.ckpt"])
    assert "--continue-from gone/last.ckpt: no such checkpoint" in err and "ckpt/last.ckpt" in err


# ---- values, budgets and settings: each one line, before any training, and nothing left behind ----------------
def _nothing_written(project: Path) -> None:
    left = [p for p in ("mlflow.db", "optuna.db", "results", ".archbench", "mlruns") if (project / p).exists()]
    assert not left, f"bad input left {left} behind"


EXPERIMENT_CASES = {
    "max_epochs_zero": ({"trainer": {"max_epochs": 0}}, ["max_epochs must be a positive integer", "untrained"]),
    "max_epochs_forever": ({"trainer": {"max_epochs": -1}}, ["max_epochs must be a positive integer", "forever"]),
    "max_epochs_negative": ({"trainer": {"max_epochs": -5}}, ["max_epochs", "-5"]),
    "max_epochs_text": ({"trainer": {"max_epochs": "ten"}}, ["max_epochs", "'ten'"]),
    "max_steps_zero": ({"trainer": {"max_epochs": None, "max_steps": 0}}, ["max_steps must be a positive integer"]),
    "no_budget": ({"trainer": {"max_epochs": None}}, ["set trainer.max_epochs or trainer.max_steps"]),
    "max_time_malformed": ({"trainer": {"max_time": "forever"}}, ["bad trainer settings", "hello_lstm"]),
    "limit_batches_zero": ({"trainer": {"limit_train_batches": 0}}, ["limit_train_batches must be a positive"]),
    "accelerator_gpu_without_gpu": ({"trainer": {"accelerator": "gpu"}}, ["no CUDA GPU", "accelerator: auto"]),
    "unknown_accelerator": ({"trainer": {"accelerator": "banana"}}, ["bad trainer settings", "banana"]),
    "bad_devices": ({"trainer": {"devices": "many"}}, ["bad trainer settings", "devices"]),
    "reserved_trainer_key": ({"trainer": {"logger": False}}, ["unknown trainer key 'logger'"]),
    "repeated_seed": ({"seeds": [0, 0]}, ["repeat a seed", "distinct"]),
    "negative_seed": ({"seeds": [-1, 0]}, ["non-negative"]),
    "lr_infinite": ({"model_args": {"lr": float("inf")}}, ["model_args.lr is not a finite number"]),
    "lr_nan": ({"model_args": {"lr": float("nan")}}, ["model_args.lr is not a finite number"]),
    "bad_cell": ({"model_args": {"cell": "gru"}}, ["cell", "gru"]),
    "model_args_not_a_mapping": ({"model_args": [1, 2]}, ["'model_args' must be a mapping"]),
    "extends_unknown": ({"extends": "nowhere"}, ["extends unknown experiment 'nowhere'"]),
    "unknown_experiment_key": ({"epochs": 3}, ["unknown key 'epochs'"]),
    "model_missing": ({"model": None}, ["'model' is required"]),
}


@pytest.mark.parametrize("case", sorted(EXPERIMENT_CASES))
def test_bad_experiment_values(case: str, project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    change, expected = EXPERIMENT_CASES[case]
    params = tiny_params()
    exp = params["experiments"]["hello_lstm"]
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(exp.get(key), dict):
            exp[key] = exp[key] | value
        else:
            exp[key] = value
    write_params(project / "params.yaml", params)
    err = _one_line_error(capsys, ["train", "hello_lstm"])
    for text in expected:
        assert text in err, err
    _nothing_written(project)


SETTINGS_CASES = {
    "threads_zero": ({"threads": 0}, "settings.threads must be a positive integer"),
    "unknown_setting": ({"thread": 2}, "settings: unknown key 'thread'"),
    "empty_experiment_name": ({"mlflow_experiment": ""}, "settings.mlflow_experiment must be a non-empty string"),
    "results_dir_is_a_file": ({"results_dir": "params.yaml/results"}, "is not a folder"),
    "state_dir_is_a_file": ({"state_dir": "params.yaml"}, "state_dir params.yaml is not a folder"),
}


@pytest.mark.parametrize("case", sorted(SETTINGS_CASES))
def test_bad_settings(case: str, project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    change, expected = SETTINGS_CASES[case]
    params = tiny_params()
    params["settings"] = params["settings"] | change
    write_params(project / "params.yaml", params)
    assert expected in _one_line_error(capsys, ["train", "hello_lstm"])
    _nothing_written(project)


def test_binary_params_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "params.yaml").write_bytes(bytes(range(256)) * 4)
    assert "not a text file" in _one_line_error(capsys, ["list"])


def test_params_path_is_a_folder(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "folder").mkdir()
    assert "is a folder, not a params file" in _one_line_error(capsys, ["--params", "folder", "list"])


def test_unknown_top_level_section(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tiny_params() | {"experiment": {}}
    write_params(project / "params.yaml", params)
    assert "unknown section 'experiment'" in _one_line_error(capsys, ["list"])


def test_empty_params_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "params.yaml").write_text("")
    assert "must be a mapping of sections" in _one_line_error(capsys, ["list"])


@pytest.mark.parametrize("seed, expected", [("-1", "-1 is negative"), ("abc", "'abc' is not an integer seed"),
                                            ("7", "--seed 7 is not one of hello_lstm's seeds [0, 1]")])
def test_bad_seed_option(seed: str, expected: str, project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert expected in _one_line_error(capsys, ["train", "hello_lstm", "--seed", seed])
    _nothing_written(project)


def test_unknown_command_and_argument(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "invalid choice: 'trian'" in _one_line_error(capsys, ["trian"])
    assert "unrecognized arguments: --fast" in _one_line_error(capsys, ["train", "hello_lstm", "--fast"])


def test_unknown_claim(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown claim 'nope'" in _one_line_error(capsys, ["claim", "nope"])


def test_collect_with_nothing_finished(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no finished seed to merge" in _one_line_error(capsys, ["collect", "hello_lstm"])


def test_density_unknown_key(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = tiny_params()
    params["density"]["default"]["dimension"] = 3
    write_params(project / "params.yaml", params)
    assert "unknown key 'dimension'" in _one_line_error(capsys, ["density"])


@pytest.mark.slow
def test_a_corrupt_checkpoint_names_restart(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A killed run's last.ckpt, then truncated (a full disk): the rerun says how to start over."""
    import lightning.pytorch as pl

    from benchmarks.core.params import experiment_from_params, load_params
    from benchmarks.run.train import run_seed, seed_state_dir
    from tests.conftest import run_options

    class Kill(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            trainer.save_checkpoint(trainer.checkpoint_callback.dirpath + "/last.ckpt")
            raise SystemExit(1)

    exp = experiment_from_params(load_params(), "hello_lstm")
    opts = run_options(project, results_dir=Path("results"), state_dir=Path(".archbench"))
    with pytest.raises(SystemExit):
        run_seed(exp, 0, replace(opts, extra_callbacks=[Kill()]))
    last = seed_state_dir(exp, 0, opts) / "ckpt" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    capsys.readouterr()  # the killed run's own output
    err = _one_line_error(capsys, ["train", "hello_lstm", "--seed", "0"])
    assert "is corrupt" in err and "--restart" in err
    # and --restart does what the line says
    assert main(["train", "hello_lstm", "--seed", "0", "--restart", "--no-progress"]) == 0


def test_continue_from_a_corrupt_checkpoint(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "bad.ckpt").write_text("not a checkpoint")
    err = _one_line_error(capsys, ["train", "hello_lstm", "--seed", "0", "--continue-from", "bad.ckpt"])
    assert "bad.ckpt is corrupt" in err


# ---- studies, through the console script (the definitions are shared with tests/test_tune.py) ---------------
from tests.test_tune import BAD_STUDIES  # noqa: E402


@pytest.mark.parametrize(("key", "value", "message"), BAD_STUDIES, ids=[f"{k}-{m[:24]}" for k, _, m in BAD_STUDIES])
def test_bad_study_from_the_command_line(key: str, value: object, message: str, project: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    params = tiny_params()
    params["studies"]["lstm_depth"][key] = value
    write_params(project / "params.yaml", params)
    assert message in _one_line_error(capsys, ["tune", "lstm_depth"])
    _nothing_written(project)


def test_tuned_by_is_not_inherited_through_extends(tmp_path: Path) -> None:
    from benchmarks.core.params import experiment_from_params, load_params

    params = load_params()
    params["studies"]["lstm_depth"]["experiment"] = "words_lstm"
    params["experiments"]["words_lstm"]["tuned_by"] = "lstm_depth"
    params.setdefault("full_experiments", {})["words_lstm_wide"] = {"extends": "words_lstm",
                                                                    "model_args": {"hidden_size": 512}}
    assert experiment_from_params(params, "words_lstm").tuned_by == "lstm_depth"
    assert experiment_from_params(params, "words_lstm_wide").tuned_by is None
