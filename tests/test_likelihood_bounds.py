"""The likelihood arithmetic behind test/nll_k{k} and test/bpd, piece by piece against direct computations: the
seeded evaluation noise, bits per dimension, the discretised decoder's edge bins, the chunked importance
weights and the argument checks that guard them (the closed forms and the bounds themselves are checked
against torch.distributions and an exact posterior in tests/test_vae.py and tests/test_diffusion.py)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from lightning_modules.likelihood.bounds import (bernoulli_log_prob, bits_per_dim, check_ks,
                                                 discretized_gaussian_log_prob, importance_log_weights,
                                                 importance_weighted_nll, iw_nll, normal_kl, normal_log_prob,
                                                 randint, randn)


def test_seeded_noise_is_the_generators_own_draws_in_the_asked_dtype() -> None:
    ours = randn((3, 2), torch.Generator().manual_seed(5), "cpu", torch.float64)
    assert ours.dtype == torch.float64 and ours.device.type == "cpu"
    assert torch.equal(ours, torch.randn((3, 2), generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    torch.manual_seed(9)
    unseeded = randn((4,), None, "cpu", torch.float64)
    torch.manual_seed(9)
    assert unseeded.dtype == torch.float64 and torch.equal(unseeded, torch.randn(4, dtype=torch.float64))
    assert randn((2,), None, "cpu").dtype == torch.float32
    ints = randint(3, 7, [50], torch.Generator().manual_seed(1), "cpu")
    assert torch.equal(ints, torch.randint(3, 7, (50,), generator=torch.Generator().manual_seed(1)))
    assert int(ints.min()) == 3 and int(ints.max()) == 6
    torch.manual_seed(2)
    unseeded = randint(500, 1000, [60], None, "cpu")
    torch.manual_seed(2)
    assert torch.equal(unseeded, torch.randint(500, 1000, (60,))) and int(unseeded.min()) >= 500


def test_bits_per_dimension_divides_by_dims_and_ln_2() -> None:
    assert bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0, rel=1e-15)
    assert bits_per_dim(3.0, 2) == pytest.approx(3.0 / (2 * math.log(2.0)), rel=1e-15)
    assert torch.allclose(bits_per_dim(torch.tensor([2 * math.log(2.0)]), 1), torch.tensor([2.0]))


def test_log_densities_at_default_arguments_and_broadcast_targets() -> None:
    x, mean = torch.tensor([0.3, -1.2]), torch.tensor([0.0, 0.5])
    assert torch.allclose(normal_log_prob(x, mean), torch.tensor(stats.norm.logpdf([0.3, -1.2], [0.0, 0.5]),
                                                                 dtype=torch.float32))
    # a Python float log variance is taken at x's precision (float64 here), not rounded to float32 first
    x64 = torch.tensor([0.3, -1.2], dtype=torch.float64)
    expected = stats.norm.logpdf([0.3, -1.2], [0.0, 0.5], math.exp(0.15))
    assert normal_log_prob(x64, mean.double(), 0.3).tolist() == pytest.approx(list(expected), rel=1e-14)
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])  # [2 draws, 2 pixels], one target row for both
    bits = torch.tensor([1.0, 0.0])
    expected = torch.log(torch.tensor([[1 / (1 + math.exp(-2.0)), 1 - 1 / (1 + math.exp(1.0))],
                                       [1 / (1 + math.exp(-0.5)), 1 - 1 / (1 + math.exp(-3.0))]]))
    assert torch.allclose(bernoulli_log_prob(bits, logits), expected, atol=1e-6)


def test_discretised_decoder_edge_bins_reach_to_infinity() -> None:
    levels, std = 4, 0.7
    x = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0], dtype=torch.float64)  # the four pixel values
    mean = torch.full_like(x, 0.2)
    got = discretized_gaussian_log_prob(x, mean, math.log(std), levels)
    half = 1 / 3
    cdf = [stats.norm.cdf((v - 0.2) / std) for v in (-1 + half, -1 / 3 + half, 1 / 3 + half)]
    expected = [math.log(cdf[0]), math.log(cdf[1] - cdf[0]), math.log(cdf[2] - cdf[1]), math.log(1 - cdf[2])]
    assert got.tolist() == pytest.approx(expected, rel=1e-9)
    far = discretized_gaussian_log_prob(torch.tensor([1 / 3], dtype=torch.float64), torch.tensor([-40.0]), 0.0, levels)
    assert float(far) == pytest.approx(math.log(1e-12))  # a middle bin far in the tail: floored, never -inf
    pixels = torch.linspace(-1, 1, 256, dtype=torch.float64)  # 8-bit images: 256 levels unless told otherwise
    assert torch.equal(discretized_gaussian_log_prob(pixels, pixels * 0.9, -1.0),
                       discretized_gaussian_log_prob(pixels, pixels * 0.9, -1.0, levels=256))
    assert float(discretized_gaussian_log_prob(pixels, torch.zeros(256), -1.0).exp().sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError) as err:
        discretized_gaussian_log_prob(x, mean, 0.0, levels=1)
    assert str(err.value) == "levels must be >= 2, got 1"


def test_importance_weights_are_drawn_in_chunks_of_the_asked_size() -> None:
    calls: list[tuple[int, object]] = []
    gen = torch.Generator()

    def draw(n: int, generator: torch.Generator | None) -> torch.Tensor:
        calls.append((n, generator))
        start = sum(c for c, _ in calls[:-1])
        return torch.arange(start, start + n, dtype=torch.float64)[:, None].expand(n, 2)  # [n, batch]

    log_w = importance_log_weights(draw, 7, chunk=3, generator=gen)
    assert [n for n, _ in calls] == [3, 3, 1] and all(g is gen for _, g in calls)
    assert log_w[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6]
    calls.clear()
    assert importance_log_weights(draw, 6, chunk=3).shape == (6, 2) and [n for n, _ in calls] == [3, 3]
    calls.clear()
    assert importance_log_weights(draw, 1, chunk=1).shape == (1, 2) and [n for n, _ in calls] == [1]
    for k, chunk in ((0, 3), (3, 0)):
        with pytest.raises(ValueError) as err:
            importance_log_weights(draw, k, chunk)
        assert str(err.value) == f"k and chunk must be >= 1, got k={k}, chunk={chunk}"


def test_the_k_sample_bounds_are_nested_prefixes_of_one_draw() -> None:
    draws: list[int] = []
    w = torch.tensor([[-1.0, 0.5], [-3.0, 0.0], [-0.5, 2.0], [-2.0, 1.0]], dtype=torch.float64)  # [4, batch]

    def draw(n: int, generator: torch.Generator | None) -> torch.Tensor:
        draws.append(n)
        start = sum(draws[:-1])
        return w[start:start + n]

    seen: list[object] = []
    gen = torch.Generator()
    bounds = importance_weighted_nll(lambda n, g: (seen.append(g), draw(n, g))[1], [1, 3, 4], chunk=2, generator=gen)
    assert sum(draws) == 4 and seen == [gen, gen]  # one pass of max(ks) draws, with the caller's generator
    for k in (1, 3, 4):
        direct = [-math.log(sum(math.exp(float(v)) for v in w[:k, b]) / k) for b in range(2)]
        assert bounds[k].tolist() == pytest.approx(direct, rel=1e-12)
        assert torch.equal(bounds[k], iw_nll(w[:k]))
    for ks in ([], [0, 2]):
        with pytest.raises(ValueError) as err:
            importance_weighted_nll(draw, ks)
        assert str(err.value) == f"ks must be a non-empty list of integers >= 1, got {ks}"


@pytest.mark.parametrize("ks", [[], [0], [1, -2], [2.5], [True], "5", 5, None])
def test_bad_importance_sample_counts_are_one_line(ks: object) -> None:
    with pytest.raises(ValueError) as err:
        check_ks("nll_samples", ks)  # type: ignore[arg-type]
    assert str(err.value) == f"nll_samples must be a non-empty list of integers >= 1, got {ks!r}"


def test_good_importance_sample_counts_come_back_as_a_list() -> None:
    assert check_ks("k", (1, 50)) == [1, 50] and check_ks("k", [5000]) == [5000] and check_ks("k", [1]) == [1]


def test_float_log_variances_are_taken_at_the_means_precision() -> None:
    mq = torch.tensor([0.3, -0.7], dtype=torch.float64)
    lq, lp, mp = 0.3, -0.2, 0.1  # Python floats, as the models pass fixed variances
    expected = [0.5 * (lp - lq + (math.exp(lq) + (m - mp) ** 2) / math.exp(lp) - 1) for m in (0.3, -0.7)]
    assert normal_kl(mq, lq, mp, lp).tolist() == pytest.approx(expected, rel=1e-14)
