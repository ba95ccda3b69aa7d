"""Density estimation: parametric maximum likelihood against kernel density estimation.

The course notes' two routes to p(x):
- parametric: pick a family and minimise sum_i -log p(x_i) (``GaussianMLE`` in closed form, ``GaussianMixture``
  by EM);
- non-parametric: put a kernel on every training point (``GaussianKDE``). It needs no family, but the number of
  points it needs grows exponentially with the dimension (Silverman 1986, "Density Estimation", table 4.2), so it
  wins in low dimension and loses as d grows; ``benchmarks/claim/density.py`` measures where.

Everything is plain torch, float64 by default so the numbers match sklearn/scipy to ~1e-10, and works on whatever
device ``fit``'s input lives on; queries are moved there. Work over query points is chunked so memory stays bounded
by ``max_elems`` floats per intermediate, whatever n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["GaussianKDE", "GaussianMLE", "GaussianMixture", "PCAProjector"]

LOG_2PI = math.log(2.0 * math.pi)
MAX_ELEMS = 1 << 22  # floats per chunked intermediate: 32 MiB in float64


def _gaussian_log_prob(x: Tensor, means: Tensor, chols: Tensor) -> Tensor:
    """log N(x; mu_k, L_k L_k^T) for every point and component, via triangular solves (never an inverse).

    x [n, d], means [K, d], chols [K, d, d] (lower) -> [n, K].
    """
    d = x.shape[1]
    diff = (x.unsqueeze(0) - means.unsqueeze(1)).transpose(1, 2)  # [K, d, n]
    sol = torch.linalg.solve_triangular(chols, diff, upper=False)  # [K, d, n] = L^-1 (x - mu)
    maha = sol.pow(2).sum(1)  # [K, n]
    logdet = 2.0 * torch.diagonal(chols, dim1=-2, dim2=-1).log().sum(-1)  # [K]
    return (-0.5 * (d * LOG_2PI + logdet.unsqueeze(1) + maha)).T  # [n, K]


def _chunked_gaussian_log_prob(x: Tensor, means: Tensor, chols: Tensor, max_elems: int) -> Tensor:
    k, d = means.shape
    step = max(1, max_elems // (k * d))  # the [K, d, chunk] solve is the largest intermediate
    parts = [_gaussian_log_prob(x[i:i + step], means, chols) for i in range(0, x.shape[0], step)]
    return torch.cat(parts)  # [n, K]


class GaussianMLE:
    """One full-covariance Gaussian fit by maximum likelihood, in closed form.

    The MLE is the sample mean and the *biased* sample covariance (divide by n, not n-1; Bishop, PRML, eq. 2.121-2.122).
    ``reg * I`` is added to the covariance so the Cholesky factor exists when n <= d or a direction has no spread
    (e.g. a constant pixel); with reg=0 the fit is the exact MLE.
    """

    def __init__(self, reg: float = 1e-6, dtype: torch.dtype = torch.float64, max_elems: int = MAX_ELEMS) -> None:
        self.reg = float(reg)
        self.dtype = dtype
        self.max_elems = max_elems

    def fit(self, x: Tensor) -> GaussianMLE:
        x = x.to(self.dtype)  # [n, d]
        n, d = x.shape
        self.mean = x.mean(0)  # [d]
        xc = x - self.mean  # [n, d]
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        self.covariance = xc.T @ xc / n + self.reg * eye  # [d, d]
        self.chol = torch.linalg.cholesky(self.covariance)  # [d, d], lower
        return self

    def log_prob(self, x: Tensor) -> Tensor:
        x = x.to(self.mean.device, self.dtype)  # [n, d]
        return _chunked_gaussian_log_prob(x, self.mean[None], self.chol[None], self.max_elems)[:, 0]  # [n]

    def mean_log_likelihood(self, x: Tensor) -> float:
        return self.log_prob(x).mean().item()

    @property
    def n_parameters(self) -> int:
        d = self.mean.shape[0]
        return d + d * (d + 1) // 2


class GaussianMixture:
    """K full-covariance Gaussians fit by expectation-maximisation (Bishop, PRML, sec. 9.2.2).

    Initialisation draws from a CPU ``torch.Generator(seed)`` so the same seed gives the same start on any device:
    ``"kmeans++"`` seeds the means by D^2 sampling (Arthur & Vassilvitskii 2007) and starts from the hard assignment
    to the nearest mean; ``"random"`` takes K distinct random points as means. Responsibilities are computed in log
    space with log-sum-exp so far-away points do not underflow to 0/0. ``reg * I`` is added to each covariance (as
    sklearn's ``reg_covar``) so a component that collapses on a few points stays invertible; it makes the M-step a
    hair off the exact maximiser, so the EM log-likelihood is non-decreasing up to O(reg) rather than exactly.
    ``history`` holds the mean training log-likelihood after initialisation and after every M-step.
    """

    def __init__(self, n_components: int = 4, max_iter: int = 200, tol: float = 1e-5, reg: float = 1e-6,
                 seed: int = 0, init: str = "kmeans++", dtype: torch.dtype = torch.float64,
                 max_elems: int = MAX_ELEMS) -> None:
        if init not in ("kmeans++", "random"):
            raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.reg = float(reg)
        self.seed = seed
        self.init = init
        self.dtype = dtype
        self.max_elems = max_elems

    def _init_means(self, x: Tensor) -> Tensor:
        n, k = x.shape[0], self.n_components
        g = torch.Generator().manual_seed(self.seed)
        if self.init == "random":
            return x[torch.randperm(n, generator=g)[:k].to(x.device)]  # [K, d]
        idx = [int(torch.randint(n, (1,), generator=g))]
        d2 = (x - x[idx[0]]).pow(2).sum(1)  # [n], squared distance to the nearest chosen mean
        for _ in range(1, k):
            # D^2 sampling; a uniform fallback if every point sits on a chosen mean (duplicated data).
            w = d2.cpu() if d2.sum() > 0 else torch.ones(n, dtype=x.dtype)
            idx.append(int(torch.multinomial(w, 1, generator=g)))
            d2 = torch.minimum(d2, (x - x[idx[-1]]).pow(2).sum(1))
        return x[idx]  # [K, d]

    def _m_step(self, x: Tensor, resp: Tensor) -> None:
        """Closed-form weights, means and covariances given responsibilities resp [n, K]."""
        n, d = x.shape
        k = self.n_components
        nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps  # [K]; eps keeps an empty component finite
        self.weights = nk / n  # [K]
        self.means = (resp.T @ x) / nk[:, None]  # [K, d]
        cov = torch.zeros(k, d, d, dtype=x.dtype, device=x.device)  # [K, d, d]
        step = max(1, self.max_elems // (k * d))  # rows per chunk so diff [K, m, d] stays bounded
        for i in range(0, n, step):
            diff = x[i:i + step].unsqueeze(0) - self.means.unsqueeze(1)  # [K, m, d]
            cov += torch.einsum("mk,kmd,kme->kde", resp[i:i + step], diff, diff)
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        self.covariances = cov / nk[:, None, None] + self.reg * eye  # [K, d, d]
        self.chols = torch.linalg.cholesky(self.covariances)  # [K, d, d]

    def _e_step(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(log p(x_i) [n], responsibilities [n, K])."""
        log_joint = _chunked_gaussian_log_prob(x, self.means, self.chols, self.max_elems) + self.weights.log()
        log_norm = torch.logsumexp(log_joint, dim=1)  # [n]
        return log_norm, (log_joint - log_norm[:, None]).exp()

    def fit(self, x: Tensor) -> GaussianMixture:
        x = x.to(self.dtype)  # [n, d]
        means = self._init_means(x)  # [K, d]
        nearest = torch.cdist(x, means).argmin(1)  # [n]
        resp = torch.nn.functional.one_hot(nearest, self.n_components).to(x.dtype)  # [n, K]
        self._m_step(x, resp)
        log_norm, resp = self._e_step(x)
        self.history: list[float] = [log_norm.mean().item()]
        self.converged = False
        for self.n_iter in range(1, self.max_iter + 1):
            self._m_step(x, resp)
            log_norm, resp = self._e_step(x)
            self.history.append(log_norm.mean().item())
            if abs(self.history[-1] - self.history[-2]) < self.tol:
                self.converged = True
                break
        return self

    def log_prob(self, x: Tensor) -> Tensor:
        x = x.to(self.means.device, self.dtype)  # [n, d]
        return self._e_step(x)[0]  # [n]

    def mean_log_likelihood(self, x: Tensor) -> float:
        return self.log_prob(x).mean().item()

    @property
    def n_parameters(self) -> int:
        k, d = self.means.shape
        return (k - 1) + k * d + k * d * (d + 1) // 2


def _rms_std(x: Tensor) -> float:
    """One scale for an isotropic kernel: sqrt of the mean per-dimension (unbiased) variance."""
    return x.var(0, unbiased=True).mean().sqrt().item()


def rule_of_thumb_bandwidth(x: Tensor, rule: str) -> float:
    """Scott's or Silverman's bandwidth for an isotropic Gaussian kernel.

    The factors are scipy.stats.gaussian_kde's (Scott 1992 eq. 6.42: n^(-1/(d+4)); Silverman 1986 eq. 4.15:
    (n (d+2) / 4)^(-1/(d+4))), times the RMS per-dimension std because our kernel is isotropic. In 1-D this equals
    scipy's bandwidth exactly; Silverman's is then 1.06 sigma n^(-1/5), the AMISE-optimal h for Gaussian data.
    """
    n, d = x.shape
    if rule == "scott":
        factor = n ** (-1.0 / (d + 4))
    elif rule == "silverman":
        factor = (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
    else:
        raise ValueError(f"bandwidth rule must be 'scott' or 'silverman', got {rule!r}")
    return factor * _rms_std(x)


class GaussianKDE:
    """Isotropic Gaussian kernel density: log p(q) = logsumexp_i log N(q; x_i, h^2 I) - log n.

    ``bandwidth`` is a number h, ``"scott"``/``"silverman"`` (rules of thumb), or None: choose h in ``fit`` by
    ``select_bandwidth`` (k-fold cross-validated held-out likelihood, the likelihood criterion of Silverman 1986
    sec. 3.4.4). Squared distances use |q|^2 + |x|^2 - 2 q.x on data centred at the training mean; in float64 the
    cancellation error is ~1e-14 per distance, far below the 1e-6 the tests ask.
    """

    def __init__(self, bandwidth: float | str | None = None, cv_folds: int = 5, seed: int = 0,
                 grid: Sequence[float] | None = None, dtype: torch.dtype = torch.float64,
                 max_elems: int = MAX_ELEMS) -> None:
        self.bandwidth = bandwidth
        self.cv_folds = cv_folds
        self.seed = seed
        self.grid = grid
        self.dtype = dtype
        self.max_elems = max_elems
        self.cv_curve: dict[str, object] | None = None

    def _log_kernel_sums(self, q: Tensor, x: Tensor, bandwidths: Sequence[float]) -> Tensor:
        """log p(q_j) under a KDE on x for each bandwidth, sharing the distance computation. -> [H, m]."""
        m, d = q.shape
        n = x.shape[0]
        centre = x.mean(0)
        x, q = x - centre, q - centre  # [n, d], [m, d]
        x2 = x.pow(2).sum(1)  # [n]
        h = torch.tensor(list(bandwidths), dtype=x.dtype, device=x.device)  # [H]
        out = []
        step = max(1, self.max_elems // n)  # query rows per chunk so d2 [c, n] stays bounded
        for i in range(0, m, step):
            qc = q[i:i + step]  # [c, d]
            d2 = (qc.pow(2).sum(1, keepdim=True) + x2 - 2.0 * qc @ x.T).clamp_min(0.0)  # [c, n]
            # log-sum-exp by hand: the largest term is the nearest point's for every h, so the shift is computed
            # once and each bandwidth costs one scale+exp+sum (several times faster than torch.logsumexp per h).
            # One bandwidth at a time keeps the intermediate at [c, n] instead of [H, c, n].
            d2_min = d2.amin(1, keepdim=True)  # [c, 1]
            shifted = d2_min - d2  # [c, n], <= 0
            out.append(torch.stack([(shifted * (0.5 / hk**2)).exp_().sum(1).log_() - d2_min[:, 0] * (0.5 / hk**2)
                                    for hk in h.tolist()]))  # [H, c]
        log_sum = torch.cat(out, dim=1)  # [H, m]
        return log_sum - math.log(n) - 0.5 * d * (LOG_2PI + 2.0 * h.log()[:, None])

    def default_grid(self, x: Tensor) -> list[float]:
        """31 bandwidths log-spaced over sigma * [10^-2.5, 10^0.5], sigma the RMS per-dimension std.

        The range spans from well below Silverman's h for n ~ 10^5 in 1-D (0.1 sigma) up to several sigma (the
        Scott factor tends to 1 as d grows), so the CV optimum on our studies sits inside, not on an edge;
        ``cv_curve["at_grid_edge"]`` says when it does not.
        """
        s = _rms_std(x)
        return [s * 10.0 ** (-2.5 + 3.0 * i / 30) for i in range(31)]

    def select_bandwidth(self, x: Tensor, grid: Sequence[float] | None = None, folds: int = 5, seed: int = 0) -> float:
        """k-fold cross-validated held-out mean log-likelihood over ``grid``; stores and returns the best h."""
        x = x.to(self.dtype)  # [n, d]
        n = x.shape[0]
        grid = list(grid) if grid is not None else self.default_grid(x)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(x.device)  # [n]
        total = torch.zeros(len(grid), dtype=x.dtype, device=x.device)  # [H]
        for held in perm.tensor_split(folds):
            keep = torch.ones(n, dtype=torch.bool, device=x.device)
            keep[held] = False
            total += self._log_kernel_sums(x[held], x[keep], grid).sum(1)
        curve = (total / n).tolist()  # every point is held out once: the mean over all n
        best = max(range(len(grid)), key=curve.__getitem__)
        self.cv_curve = {"bandwidths": grid, "mean_log_lik": curve, "folds": folds, "seed": seed,
                         "best": grid[best], "at_grid_edge": best in (0, len(grid) - 1)}
        return grid[best]

    def fit(self, x: Tensor) -> GaussianKDE:
        self.data = x.to(self.dtype)  # [n, d]
        if self.bandwidth is None:
            self.bandwidth_ = self.select_bandwidth(self.data, self.grid, self.cv_folds, self.seed)
        elif isinstance(self.bandwidth, str):
            self.bandwidth_ = rule_of_thumb_bandwidth(self.data, self.bandwidth)
        else:
            self.bandwidth_ = float(self.bandwidth)
        return self

    def log_prob(self, q: Tensor) -> Tensor:
        q = q.to(self.data.device, self.dtype)  # [m, d]
        return self._log_kernel_sums(q, self.data, [self.bandwidth_])[0]  # [m]

    def mean_log_likelihood(self, q: Tensor) -> float:
        return self.log_prob(q).mean().item()


class PCAProjector:
    """Principal components of the training data (SVD of the centred matrix), for projecting to d dimensions.

    A plain orthonormal projection, not whitened: the map is a rotation onto the top-d subspace, so densities of the
    projected coordinates need no Jacobian term and the isotropic KDE kernel keeps the data's own metric. (Whitening
    would not change the Gaussian's held-out likelihood beyond a constant, but would stretch the low-variance
    directions to the same scale as the signal for the KDE.) Fit on train only so the test set stays unseen.
    """

    def fit(self, x: Tensor) -> PCAProjector:
        x = x.to(torch.float64) if not x.is_floating_point() else x  # [n, D]
        self.mean = x.mean(0)  # [D]
        _, s, vh = torch.linalg.svd(x - self.mean, full_matrices=False)  # vh [r, D], r = min(n, D)
        # SVD signs are arbitrary; fix them (largest |loading| positive) so projections are reproducible.
        sign = torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True)))  # [r, 1]
        self.components = vh * sign  # [r, D]
        self.explained_variance = s.pow(2) / max(1, x.shape[0] - 1)  # [r]
        return self

    def transform(self, x: Tensor, d: int) -> Tensor:
        if d > self.components.shape[0]:
            raise ValueError(f"asked for {d} components, the fit has {self.components.shape[0]}")
        x = x.to(self.mean.device, self.mean.dtype)  # [n, D]
        return (x - self.mean) @ self.components[:d].T  # [n, d]

