"""`archbench sample --label` takes a class number or a class name of the data the generator was trained on."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks.core.errors import ArchbenchError
from benchmarks.use.class_names import FASHION_MNIST, resolve_label
from tests.test_use import _Conditional

PARAMS = str(Path(__file__).resolve().parents[1] / "params.yaml")


@pytest.mark.parametrize(("text", "number"), [("9", 9), ("Ankle boot", 9), ("ankle-boot", 9), ("ANKLE_BOOT", 9),
                                              ("sneaker", 7), ("shirt", 6), ("T-shirt/top", 0), ("t-shirt", 0), ("top", 0),
                                              (" 0 ", 0), ("bag", 8)])
def test_a_number_or_any_spelling_of_a_name_is_that_class(text: str, number: int) -> None:
    assert resolve_label(text, FASHION_MNIST, 10, "fashion_cgan") == number


@pytest.mark.parametrize("text", ["10", "-1", "--1", "\u00b2", "3.0", "boots", "shirt/top", "", "s"])
def test_anything_else_is_one_line_listing_every_class(text: str) -> None:
    with pytest.raises(ArchbenchError) as err:
        resolve_label(text, FASHION_MNIST, 10, "fashion_cgan")
    assert str(err.value) == (f"--label {text!r}: fashion_cgan draws the classes 0 T-shirt/top, 1 Trouser, 2 Pullover, "
                              "3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot; give one of those "
                              "numbers or names")


def test_without_names_only_numbers_in_range_are_classes() -> None:
    assert resolve_label("3", None, 10, "digits_cond") == 3
    with pytest.raises(ArchbenchError, match=r"^--label 'three': digits_cond draws the classes 0\.\.9; give one of "
                                             r"those numbers$"):
        resolve_label("three", None, 10, "digits_cond")


def test_the_sample_command_reads_names_from_the_experiments_data(capsys: pytest.CaptureFixture[str]) -> None:
    """fashion_cgan trains on fashion_mnist, so its names are Fashion-MNIST's; an experiment this params file does
    not define (a model URI from elsewhere) takes numbers only; a generator without classes refuses --label."""
    from benchmarks.use.commands import _label

    model = _Conditional()
    assert _label(argparse.Namespace(params=PARAMS, label="sneaker"), model, "fashion_cgan") == 7
    assert capsys.readouterr().err == "# class 7 (Sneaker)\n"
    assert _label(argparse.Namespace(params=PARAMS, label="7"), model, "elsewhere_cgan") == 7
    assert capsys.readouterr().err == "# class 7\n"
    with pytest.raises(ArchbenchError, match="draws the classes 0..9; give one of those numbers$"):
        _label(argparse.Namespace(params=PARAMS, label="sneaker"), model, "elsewhere_cgan")
    with pytest.raises(ArchbenchError, match="fashion_gan is not class-conditional: drop --label"):
        _label(argparse.Namespace(params=PARAMS, label="7"), object(), "fashion_gan")
