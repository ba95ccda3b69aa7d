"""Every attribute the suite reads from a model is declared in lightning_modules/contracts.py and read through it,
and the suite's control flow matches exceptions by type (issue 35, item 5)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lightning_modules import MODELS
from lightning_modules.contracts import DECLARED, GeneratesImages, SuiteModelDefaults, declared, is_conditional, missing_defaults
from tests.conftest import ROOT

# The numeric run path is frozen (its bytes are in every code hash): fit.py still reads monitor/monitor_mode with
# getattr defaults, build.py MODEL_ARGS, callbacks.py make_samples. Everything else goes through the contract.
FROZEN = {"benchmarks/run/fit.py", "benchmarks/run/build.py", "benchmarks/run/callbacks.py", "benchmarks/run/guards.py"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_declared_attribute_reads_with_its_type(name: str) -> None:
    cls = MODELS[name]
    types = {"monitor": str, "monitor_mode": str, "alternates_networks": bool, "fallback_monitor": str}
    for attr in DECLARED:
        value = declared(cls, attr)
        assert isinstance(value, types[attr]), (name, attr, value)
    assert declared(cls, "alternates_networks") == (name in {"gan", "cgan", "pix2pix", "cyclegan"})
    # What a model leaves to the defaults is what inheriting SuiteModelDefaults would give it.
    for attr in missing_defaults(cls):
        assert declared(cls, attr) == vars(SuiteModelDefaults)[attr]


def test_an_undeclared_attribute_cannot_be_read() -> None:
    with pytest.raises(AttributeError, match="not an attribute of the SuiteModel contract"):
        declared(MODELS["char_lm"], "monitr")


def _suite_files() -> list[Path]:
    return [p for p in sorted((ROOT / "benchmarks").rglob("*.py")) if str(p.relative_to(ROOT)) not in FROZEN]


def test_no_declared_attribute_is_read_with_a_getattr_default() -> None:
    """The SuiteModel attributes (and metric_settings, generate, make_samples) are read through the contract, never
    getattr(x, name, default)."""
    declared_names = {*DECLARED, "metric_settings", "generate", "make_samples"}
    found = []
    for path in _suite_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and len(node.args) == 3 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in declared_names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not found, found


def test_generators_are_found_by_their_protocol() -> None:
    """The GANs draw from a seed (GeneratesImages); only the cgan takes a class; the VAEs and DDPM sample instead."""
    generators = {name for name, cls in MODELS.items() if isinstance(cls, GeneratesImages)}
    assert generators == {"gan", "cgan"}
    assert {name for name, cls in MODELS.items() if is_conditional(cls)} == {"cgan"}


def test_the_champion_is_the_best_seed_by_the_key_its_run_monitored() -> None:
    """An image model's monitor is a property of its arguments (val/fid with an extractor), so the champion is chosen
    by the ``<monitor>_best`` each run recorded, in that key's direction, not by the class's attribute."""
    from benchmarks.run.model_logging import best_seed

    fid = {0: {"val/fid_best": 30.0, "test/fid": 1.0}, 1: {"val/fid_best": 10.0, "test/fid": 99.0},
           2: {"val/fid_best": 20.0}}
    assert best_seed(fid) == 1
    acc = {0: {"val/acc_best": 0.7}, 1: {"val/acc_best": 0.9}, 2: {"val/acc_best": 0.8}}
    assert best_seed(acc) == 1  # higher is better for accuracy
    # Missing and non-finite values lose; ties fall to the lowest seed; nothing trained, no champion.
    assert best_seed({0: {}, 1: {"val/loss_best": float("nan")}, 2: {"val/loss_best": 3.0}}) == 2
    assert best_seed({3: {"val/loss_best": 2.0}, 1: {"val/loss_best": 2.0}}) == 1
    assert best_seed({}) is None
    assert best_seed({2: {"test/loss": 1.0}, 1: {}}) == 1  # nothing monitored was recorded: the lowest seed
    # Seeds chosen on different keys (an override, or two in one seed) cannot be ranked: one line, no champion.
    from benchmarks.core.errors import ArchbenchError

    for mixed in ({0: {"val/fid_best": 3.0}, 1: {"val/loss_best": 1.0}}, {0: {"val/fid_best": 3.0, "val/loss_best": 1.0}}):
        with pytest.raises(ArchbenchError, match=r"chosen on different keys \(val/fid_best, val/loss_best\)"):
            best_seed(mixed)
    with pytest.raises(ArchbenchError, match="val/made_up has no direction"):
        best_seed({0: {"val/made_up_best": 1.0}})


def _is_type_name(node: ast.AST) -> bool:
    """``type(x).__name__``"""
    return (isinstance(node, ast.Attribute) and node.attr == "__name__" and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "type")


def _is_text_test(node: ast.AST) -> bool:
    """``str(x).startswith(...)`` / ``str(x).endswith(...)``"""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("startswith", "endswith") and isinstance(node.func.value, ast.Call)
            and isinstance(node.func.value.func, ast.Name) and node.func.value.func.id == "str")


def test_exceptions_are_matched_by_type_not_by_text() -> None:
    found = []
    for path in _suite_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Compare) and any(map(_is_type_name, [node.left, *node.comparators]))) \
                    or _is_text_test(node):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not found, found


def test_evaluating_on_val_compares_the_key_the_seeds_checkpoint_was_chosen_on() -> None:
    """`archbench evaluate --split val` sets the recomputed value beside the recorded best of the key the run chose
    its checkpoint on (here an override of the model's own val/loss), and nothing beside the other keys."""
    from benchmarks.use.evaluation import compare

    model = MODELS["char_lm"]
    fresh = {"val/bpc": 2.0, "val/loss": 1.4}
    assert compare({"val/bpc_best": 2.1}, fresh, "val", model) == [("val/bpc", 2.1, 2.0), ("val/loss", None, 1.4)]
    assert compare({"val/loss_best": 1.5}, fresh, "val", model) == [("val/bpc", None, 2.0), ("val/loss", 1.5, 1.4)]
    assert compare({}, fresh, "val", model) == [("val/bpc", None, 2.0), ("val/loss", None, 1.4)]
    assert compare({"test/loss": 1.0}, {"test/loss": 1.1, "val/x": 0.0}, "test", model) == [("test/loss", 1.0, 1.1)]
