"""Density estimators against sklearn/scipy references, EM's monotonicity, CV bandwidth, and the study end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from estimators.density import GaussianKDE, GaussianMixture, GaussianMLE, PCAProjector, rule_of_thumb_bandwidth


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These tensors are tiny; on the shared 2-core machine two OpenMP threads contending with other jobs made the
    study test 8x slower (16 s vs 2 s measured), so run single-threaded and restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _normal(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ a + 0.5  # correlated, off-centre [n, d]


def _two_blobs(n: int, seed: int) -> torch.Tensor:
    """A well-separated 2-component 2-D mixture: means (-3, 0) and (3, 1), weights 0.3 / 0.7. -> [n, 2]."""
    g = torch.Generator().manual_seed(seed)
    first = torch.rand(n, generator=g) < 0.3
    means = torch.where(first[:, None], torch.tensor([-3.0, 0.0]), torch.tensor([3.0, 1.0])).double()
    return means + 0.5 * torch.randn(n, 2, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("d", [1, 3, 8])
def test_kde_matches_sklearn(d: int) -> None:
    from sklearn.neighbors import KernelDensity

    x, q = _normal(400, d, 0), _normal(150, d, 1)
    h = 0.7
    ours = GaussianKDE(bandwidth=h, max_elems=10_000).fit(x).log_prob(q).numpy()  # small chunks: exercise chunking
    # leaf_size > n makes sklearn's tree a single leaf, so it sums every kernel exactly; its default tree pruning is
    # off by up to ~1e-6 (kd-tree) or whole nats (ball-tree, d=8) in the tails (scikit-learn issues #7492, #27186).
    ref = KernelDensity(kernel="gaussian", bandwidth=h, leaf_size=1000).fit(x.numpy()).score_samples(q.numpy())
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_kde_matches_scipy_1d() -> None:
    x, q = _normal(500, 1, 2), _normal(200, 1, 3)
    h = 0.3
    # scipy's kernel variance is (bw factor)^2 * var(data, ddof=1): the factor for our h is h / std.
    factor = h / x[:, 0].numpy().std(ddof=1)
    ref = stats.gaussian_kde(x[:, 0].numpy(), bw_method=factor).logpdf(q[:, 0].numpy())
    ours = GaussianKDE(bandwidth=h).fit(x).log_prob(q).numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    # Silverman's rule in 1-D is scipy's "silverman" exactly.
    silverman = stats.gaussian_kde(x[:, 0].numpy(), bw_method="silverman")
    np.testing.assert_allclose(rule_of_thumb_bandwidth(x, "silverman"), np.sqrt(silverman.covariance[0, 0]), rtol=1e-12)


def test_gaussian_mle_closed_form() -> None:
    x = _normal(300, 4, 4)
    m = GaussianMLE(reg=0.0).fit(x)
    np.testing.assert_allclose(m.mean.numpy(), x.numpy().mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(m.covariance.numpy(), np.cov(x.numpy(), rowvar=False, bias=True), rtol=0, atol=1e-10)
    q = _normal(100, 4, 5)
    ref = stats.multivariate_normal(mean=m.mean.numpy(), cov=m.covariance.numpy()).logpdf(q.numpy())
    np.testing.assert_allclose(m.log_prob(q).numpy(), ref, rtol=0, atol=1e-6)
    assert m.n_parameters == 4 + 10


def test_gmm_em_recovers_two_components() -> None:
    train, test = _two_blobs(1000, 0), _two_blobs(500, 1)
    gmm = GaussianMixture(n_components=2, seed=0).fit(train)
    assert np.all(np.diff(gmm.history) >= -1e-9), "EM log-likelihood must not decrease"
    order = gmm.means[:, 0].argsort()
    np.testing.assert_allclose(gmm.means[order].numpy(), [[-3.0, 0.0], [3.0, 1.0]], atol=0.1)
    np.testing.assert_allclose(gmm.weights[order].numpy(), [0.3, 0.7], atol=0.05)
    assert gmm.mean_log_likelihood(test) > GaussianMLE().fit(train).mean_log_likelihood(test) + 0.5


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_gmm_history_monotone_on_harder_data(init: str) -> None:
    x = _normal(600, 3, 6) ** 2  # skewed, not a mixture of Gaussians: EM takes many steps
    gmm = GaussianMixture(n_components=4, seed=1, init=init, max_elems=5_000).fit(x)
    assert len(gmm.history) > 3
    assert np.all(np.diff(gmm.history) >= -1e-8)


def test_gmm_log_prob_matches_sklearn() -> None:
    from sklearn.mixture import GaussianMixture as SkGMM

    x, q = _two_blobs(400, 2), _two_blobs(100, 3)
    ours = GaussianMixture(n_components=3, seed=0, max_iter=20).fit(x)
    sk = SkGMM(n_components=3, covariance_type="full")
    sk.weights_ = ours.weights.numpy()
    sk.means_ = ours.means.numpy()
    sk.covariances_ = ours.covariances.numpy()
    # sklearn stores the Cholesky factor of the precision: inv(L)^T for covariance L L^T.
    eye = torch.eye(2, dtype=torch.float64).expand(3, 2, 2)
    sk.precisions_cholesky_ = torch.linalg.solve_triangular(ours.chols, eye, upper=False).transpose(1, 2).numpy()
    np.testing.assert_allclose(ours.log_prob(q).numpy(), sk.score_samples(q.numpy()), rtol=0, atol=1e-6)


def test_cv_bandwidth_near_silverman() -> None:
    x = torch.randn(1000, 1, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2.0
    kde = GaussianKDE(bandwidth=None, cv_folds=5, seed=0).fit(x)
    silverman = rule_of_thumb_bandwidth(x, "silverman")
    assert silverman / 2 < kde.bandwidth_ < silverman * 2
    curve = kde.cv_curve
    assert curve is not None and not curve["at_grid_edge"] and len(curve["mean_log_lik"]) == len(curve["bandwidths"])
    assert max(curve["mean_log_lik"]) == pytest.approx(curve["mean_log_lik"][curve["bandwidths"].index(kde.bandwidth_)])


def test_pca_projection_fit_on_train() -> None:
    x = _normal(200, 5, 8)
    pca = PCAProjector().fit(x)
    z = pca.transform(x, 3)  # [200, 3]
    assert z.shape == (200, 3)
    np.testing.assert_allclose(z.mean(0).numpy(), 0.0, atol=1e-12)  # centred by the train mean
    np.testing.assert_allclose((pca.components[:3] @ pca.components[:3].T).numpy(), np.eye(3), atol=1e-12)
    np.testing.assert_allclose(z.var(0).numpy(), pca.explained_variance[:3].numpy(), rtol=1e-10)
    with pytest.raises(ValueError):
        pca.transform(x, 6)


def test_density_study_small(tmp_path: Path) -> None:
    from benchmarks.claim.density import run_density_study

    report = run_density_study(["toy_ring", "digits"], [2, 8], n_train=300, n_test=200, seed=0, gmm_components=3,
                               out_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "density.json").read_text())
    assert (tmp_path / "kde_vs_dim.png").stat().st_size > 0
    assert saved["crossover"] == report["crossover"] and set(report["crossover"]) == {"toy_ring", "digits"}
    ring = report["results"]["toy_ring"]["dims"][2]
    assert ring["kde"]["test_mean_log_lik"] > ring["gaussian"]["test_mean_log_lik"]
    assert set(report["results"]["digits"]["dims"]) == {2, 8}
    r = saved["results"]["digits"]["dims"]["8"]
    assert r["kde"]["test_mean_log_lik_per_dim"] == pytest.approx(r["kde"]["test_mean_log_lik"] / 8)
    assert saved["results"]["digits"]["n_train"] == 300 and saved["settings"]["seed"] == 0
    # The study runs at the threads it is given, whatever the process had: the same bytes from a 2-thread process.
    torch.set_num_threads(2)
    run_density_study(["toy_ring", "digits"], [2, 8], n_train=300, n_test=200, seed=0, gmm_components=3,
                      out_dir=tmp_path / "again", progress=False)
    assert torch.get_num_threads() == 1
    assert (tmp_path / "again" / "density.json").read_bytes() == (tmp_path / "density.json").read_bytes()


def test_a_large_n_test_never_empties_the_digits_training_set() -> None:
    from benchmarks.claim.density import DIGITS_TEST, load_dataset

    train, test, _ = load_dataset("digits", n_train=None, n_test=2000, seed=0)  # the full profile's n_test
    assert test.shape[0] == DIGITS_TEST and train.shape[0] == 1797 - DIGITS_TEST

