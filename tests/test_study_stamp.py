"""The study's stamp: what its trials depend on, kept when the base experiment takes the study's best."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest

from benchmarks.core.errors import ArchbenchError
from benchmarks.core.params import experiment_from_params, load_params
from benchmarks.study.restamp import restamp
from benchmarks.study.spec import definition_hash, legacy_definition_hash, study_config

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path: Path, **base_args: Any) -> dict[str, Any]:
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params.setdefault("settings", {})["optuna_storage"] = f"sqlite:///{tmp_path / 'optuna.db'}"
    params["experiments"]["words_lstm"]["model_args"].update(base_args)
    return params


def _stamp(params: dict[str, Any], legacy: bool = False) -> str:
    conf = study_config(params, "lstm_depth")
    base = experiment_from_params(params, conf["experiment"])
    return (legacy_definition_hash if legacy else definition_hash)(conf, base)


def test_the_stamp_ignores_the_searched_keys_and_seeds_but_not_the_rest(tmp_path: Path) -> None:
    searched = set(study_config(_params(tmp_path), "lstm_depth")["search_space"])
    assert "num_layers" in searched
    one, three = _params(tmp_path, num_layers=1), _params(tmp_path, num_layers=3)
    assert _stamp(one) == _stamp(three)
    assert _stamp(one, legacy=True) != _stamp(three, legacy=True)  # the old form moved with the best
    seeds = _params(tmp_path)
    seeds["experiments"]["words_lstm"]["seeds"] = [0, 1, 2, 3]
    assert _stamp(seeds) == _stamp(_params(tmp_path))
    assert _stamp(_params(tmp_path, sample_length=12)) != _stamp(_params(tmp_path, sample_length=24))


def _study(params: dict[str, Any], stamp: str) -> optuna.Study:
    url = params["settings"]["optuna_storage"]
    study = optuna.create_study(study_name="lstm_depth", storage=url)
    study.set_user_attr("definition_hash", stamp)
    return study


def test_restamp_proves_the_old_definition_before_it_writes(tmp_path: Path) -> None:
    old, new = _params(tmp_path, num_layers=1), _params(tmp_path, num_layers=3)
    _study(old, _stamp(old, legacy=True))
    assert restamp(new, "lstm_depth", old, tmp_path) == _stamp(new)
    study = optuna.load_study(study_name="lstm_depth", storage=new["settings"]["optuna_storage"])
    assert study.user_attrs["definition_hash"] == _stamp(new)
    assert study.user_attrs["restamped_from"] == _stamp(old, legacy=True)


def test_restamp_refuses_a_base_changed_beyond_the_searched_keys(tmp_path: Path) -> None:
    old, new = _params(tmp_path, sample_length=12), _params(tmp_path, sample_length=24)
    _study(old, _stamp(old, legacy=True))
    with pytest.raises(ArchbenchError, match="defines? it differently|define it differently"):
        restamp(new, "lstm_depth", old, tmp_path)


def test_restamp_refuses_a_stamp_the_old_params_did_not_make(tmp_path: Path) -> None:
    old, new = _params(tmp_path, num_layers=1), _params(tmp_path, num_layers=3)
    _study(old, "0123456789ab")
    with pytest.raises(ArchbenchError, match="is not the definition in the old params"):
        restamp(new, "lstm_depth", old, tmp_path)
    study = optuna.load_study(study_name="lstm_depth", storage=new["settings"]["optuna_storage"])
    assert study.user_attrs["definition_hash"] == "0123456789ab"
