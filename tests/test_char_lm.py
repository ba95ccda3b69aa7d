"""The char-level LM: the seed's eel example, truncated BPTT against full BPTT, and sampling."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from datamodules.text import TinyShakespeareDataModule
from lightning_modules.recurrent.char_lm import CharLM, chunk_losses
from tests.conftest import run_options


def _model(cell: str = "lstm", **kw: object) -> CharLM:
    torch.manual_seed(0)
    return CharLM(vocab="\nabcdef", end_symbol="\n", cell=cell, hidden_size=12, num_layers=2, **kw)


def _batch(t: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 7, (3, t), generator=gen)  # [batch, time]
    y = torch.randint(0, 7, (3, t), generator=gen)
    y[0, -3:] = -100  # padding must be ignored
    return x, y


def _grads(model: CharLM) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("cell", ["elman", "lstm"])
def test_tbptt_with_k_equal_to_length_gives_full_bptt_gradients(cell: str) -> None:
    x, y = _batch()
    model = _model(cell)
    logits, _ = model(x)
    F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100).backward()
    full = _grads(model)
    model.zero_grad()
    chunks = list(chunk_losses(model.net, x, y, k=x.size(1)))
    assert len(chunks) == 1
    chunks[0][0].backward()
    for a, b in zip(full, _grads(model)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_truncation_carries_state_but_cuts_gradient() -> None:
    x, y = _batch()
    model = _model("lstm")
    # Forward values: chunked with carried state equals the unchunked pass.
    full_logits, _ = model(x)
    state, parts = None, []
    for xc in x.split(4, dim=1):
        out, state = model(xc, state)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), full_logits)
    # Gradients: with k < T the summed chunk gradients differ from full BPTT (the cut is real).
    full_logits_loss = F.cross_entropy(full_logits.flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum")
    full_logits_loss.backward()
    full = _grads(model)
    model.zero_grad()
    for loss, n in chunk_losses(model.net, x, y, k=4):
        (loss * n).backward()
    diffs = [float((a - b).abs().max()) for a, b in zip(full, _grads(model))]
    assert max(diffs) > 1e-4


def test_sampling_is_reproducible_and_stops_at_end_symbol() -> None:
    model = _model("lstm")
    a, b = model.sample(6, 20, seed=3), model.sample(6, 20, seed=3)
    assert a == b and all("\n" not in s for s in a)
    assert model.sample(6, 20, seed=4) != a


@pytest.mark.parametrize(
    "kwargs, word",
    [({"hidden_size": -3}, "hidden_size"), ({"lr": 0}, "lr"), ({"cell": "gru"}, "gru"), ({"tbptt_steps": -1}, "tbptt_steps")],
)
def test_bad_values_name_the_argument(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        CharLM(vocab="\nab", **kwargs)


@pytest.mark.slow
def test_hello_lstm_learns_eel(project: Path) -> None:
    """The seed's example: after "e","e" the next letter is "l" (heel, eel), with probability > 0.9."""
    import yaml

    from benchmarks.core.params import experiment_from_params
    from benchmarks.run.train import run_seed

    real = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    exp = experiment_from_params(real, "hello_lstm")
    result = run_seed(exp, 0, run_options(project))
    model = CharLM.load_from_checkpoint(project / "results" / "hello_lstm" / "seeds" / "seed_0" / "best.ckpt")
    probs = model.next_char_probs("ee")
    assert probs["l"] > 0.9, probs
    assert result["metrics"]["test/loss"] < 0.8


class _LocalShakespeare(TinyShakespeareDataModule):
    """The tiny-shakespeare datamodule over a small synthetic text: its split, windows and test pass as they are."""

    TEXT = "".join(f"line {i % 7} of the play, act {i % 3}.\n" for i in range(400))

    def _load(self) -> bytes:
        return self.TEXT.encode()


def test_the_test_pass_scores_test_alone_and_val_plus_test_as_one_text() -> None:
    import lightning.pytorch as pl

    dm = _LocalShakespeare(batch_size=8, seq_len=16)
    dm.setup("fit")
    pl.seed_everything(0, verbose=False)
    model = CharLM(**dm.model_args(), cell="lstm", hidden_size=8, sample_count=0)
    tested = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).test(
        model, datamodule=dm, verbose=False)[0]
    # By hand: summed per-character losses over each split's windows, each window from a zero state.
    sums = {}
    with torch.no_grad():
        for split in ("val", "test"):
            x, y = zip(*[dm._splits[split][i] for i in range(len(dm._splits[split]))])
            logits, _ = model(torch.stack(x))
            sums[split] = (float(F.cross_entropy(logits.flatten(0, 1), torch.stack(y).flatten(), reduction="sum")),
                           torch.stack(y).numel())
    assert tested["test/loss"] == pytest.approx(sums["test"][0] / sums["test"][1], rel=1e-5)
    both = (sums["test"][0] + sums["val"][0]) / (sums["test"][1] + sums["val"][1])
    assert tested["test/loss_valtest"] == pytest.approx(both, rel=1e-5)
    assert tested["test/bpc"] == pytest.approx(tested["test/loss"] / math.log(2), rel=1e-5)
    # Validation still reads the val windows alone, without tags.
    val = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        model, datamodule=dm, verbose=False)[0]
    assert val["val/loss"] == pytest.approx(sums["val"][0] / sums["val"][1], rel=1e-5) and "val/loss_valtest" not in val
