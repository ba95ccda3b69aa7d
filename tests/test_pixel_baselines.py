"""The independent-pixel baselines against a direct count on a tiny array."""

from __future__ import annotations

import math

import pytest
import torch

from estimators.pixel_baselines import IndependentBernoulli, IndependentCategorical, baseline_scores


def test_categorical_is_the_smoothed_count_of_each_pixel() -> None:
    train = torch.tensor([[0, 1, 2], [0, 1, 1], [3, 1, 2], [0, 0, 2]])  # 4 images, 3 pixels, levels 0..3
    test = torch.tensor([[0, 1, 2], [3, 3, 3]])
    model = IndependentCategorical(levels=4, alpha=1.0).fit(train)
    # By hand, p_d(k) = (count + 1) / (4 + 4): pixel 0 saw 0 three times and 3 once, pixel 1 saw 1 three times
    # and 0 once, pixel 2 saw 2 three times and 1 once.
    first = -(math.log(4 / 8) + math.log(4 / 8) + math.log(4 / 8))
    second = -(math.log(2 / 8) + math.log(1 / 8) + math.log(1 / 8))
    assert model.nll(test).tolist() == pytest.approx([first, second], rel=1e-12)
    assert torch.allclose(model.log_probs.exp().sum(1), torch.ones(3, dtype=torch.float64))  # each p_d sums to 1
    scores = baseline_scores(model, test)
    assert scores["nll_nats"] == pytest.approx((first + second) / 2)
    assert scores["bpd"] == pytest.approx((first + second) / 2 / (3 * math.log(2)))
    # Floats in [0, 1] (the datamodules' images) give the same numbers as their integer levels.
    assert torch.allclose(IndependentCategorical(4).fit(train / 3).nll(test / 3), model.nll(test))


def test_bernoulli_and_bad_input() -> None:
    train = torch.tensor([[1, 0], [1, 1], [0, 0]]).float()
    model = IndependentBernoulli(alpha=0.5).fit(train)
    p = torch.tensor([(2 + 0.5) / 4, (1 + 0.5) / 4])  # P(x_d = 1) = (n_d + α) / (N + 2α)
    x = torch.tensor([[1.0, 0.0]])
    assert model.nll(x).item() == pytest.approx(-(math.log(p[0]) + math.log(1 - p[1])), rel=1e-12)
    with pytest.raises(ValueError, match="levels"):
        IndependentCategorical(4).fit(torch.tensor([[0.5, 0.1]]))
    with pytest.raises(ValueError, match="pixel values must be in 0..1"):
        model.nll(torch.tensor([[2, 0]]))
    with pytest.raises(ValueError, match="call fit"):
        IndependentCategorical(4).nll(torch.tensor([[0, 1]]))
