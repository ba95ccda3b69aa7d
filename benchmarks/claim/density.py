"""The seed's density claim: kernel density estimation works in low dimension and degrades as d grows.

For each dataset and each d, project train and test onto the top-d principal components of *train*, fit a single
Gaussian (closed-form MLE), a Gaussian mixture (EM) and a Gaussian KDE (bandwidth by k-fold CV on train), and
report the held-out mean log-likelihood, in total nats and in nats per dimension. The crossover is the smallest d
at which a parametric model (Gaussian or GMM) beats the KDE on held-out likelihood.

``python -m benchmarks.claim.density --help``. Torch, sklearn and matplotlib are imported inside functions so the
help answers at once.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

TOYS = ("toy_two_moons", "toy_ring")
DATASETS = (*TOYS, "digits", "fashion_mnist")
DIMS = (2, 4, 8, 16, 32, 64)
METHODS = ("gaussian", "gmm", "kde")
TOY_DEFAULT_N = (2000, 1000)  # (train, test) drawn for a toy when --n-train / --n-test are not given
DIGITS_TEST = 597  # load_digits has 1797 images: a 1200 / 597 split; --n-test may only shrink the test part


def toy_two_moons(n: int, generator: Any) -> Tensor:
    """Two interleaved half circles plus N(0, 0.1^2) noise (the shape of sklearn's make_moons). -> [n, 2]."""
    import torch

    t = math.pi * torch.rand(n, generator=generator, dtype=torch.float64)  # [n]
    upper = torch.rand(n, generator=generator) < 0.5  # [n]
    x = torch.where(upper, torch.cos(t), 1.0 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    return torch.stack([x, y], 1) + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def toy_ring(n: int, generator: Any) -> Tensor:
    """A unit circle with radial N(0, 0.1^2) noise: a Gaussian fits it badly, which a KDE should expose. -> [n, 2]."""
    import torch

    angle = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)  # [n]
    radius = 1.0 + 0.1 * torch.randn(n, generator=generator, dtype=torch.float64)  # [n]
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)


def load_dataset(name: str, n_train: int | None, n_test: int | None, seed: int) -> tuple[Tensor, Tensor, dict]:
    """(train [n, D], test [m, D], notes) as float64, continuous: discrete pixels get uniform dequantisation.

    Dequantisation adds u ~ U[0, 1) quantisation steps to each pixel (Theis, van den Oord & Bethge 2016, "A note on
    the evaluation of generative models", sec. 3.1): the continuous likelihood is then a lower bound on the discrete
    one instead of being unbounded on spikes (a constant border pixel would give a Gaussian infinite density).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    if name in TOYS:
        n_tr, n_te = n_train or TOY_DEFAULT_N[0], n_test or TOY_DEFAULT_N[1]
        x = (toy_two_moons if name == "toy_two_moons" else toy_ring)(n_tr + n_te, g)
        return x[:n_tr], x[n_tr:], {"source": f"{name}(seed={seed})", "dequantisation": None}
    if name == "digits":
        from sklearn.datasets import load_digits

        pixels = torch.from_numpy(load_digits().data).to(torch.float64)  # [1797, 64], values 0..16
        x = (pixels + torch.rand(pixels.shape, generator=g, dtype=torch.float64)) / 16.0
        perm = torch.randperm(x.shape[0], generator=g)
        # 1797 images: the test split is capped at DIGITS_TEST so a profile-wide n_test (sized for
        # Fashion-MNIST) cannot swallow the training set.
        n_te = min(n_test or DIGITS_TEST, DIGITS_TEST)
        test, rest = x[perm[:n_te]], x[perm[n_te:]]
        return rest[:n_train], test, {"source": "sklearn.datasets.load_digits, /16",
                                       "dequantisation": "(v + U[0,1)) / 16"}
    if name == "fashion_mnist":
        from datamodules.images import load_fashion_mnist

        splits = load_fashion_mnist(data_dir=None, download=True)
        out = []
        for split, n in (("train", n_train), ("test", n_test)):
            pixels = torch.as_tensor(splits[split][0]).reshape(len(splits[split][0]), -1).to(torch.float64)  # [N, 784]
            pixels = pixels[torch.randperm(pixels.shape[0], generator=g)[:n]]
            out.append((pixels + torch.rand(pixels.shape, generator=g, dtype=torch.float64)) / 256.0)
        return out[0], out[1], {"source": "datamodules.images.load_fashion_mnist",
                                "dequantisation": "(v + U[0,1)) / 256"}
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def evaluate(train: Tensor, test: Tensor, seed: int, gmm_components: int, cv_folds: int) -> dict[str, dict]:
    """Fit the three estimators on train [n, d] and score test [m, d]. -> {method: numbers and settings}."""
    from estimators.density import GaussianKDE, GaussianMixture, GaussianMLE

    d = train.shape[1]
    out: dict[str, dict] = {}
    for method in METHODS:
        t0 = time.perf_counter()
        if method == "gaussian":
            model: Any = GaussianMLE(reg=1e-6).fit(train)
            extra: dict[str, Any] = {"reg": 1e-6, "n_parameters": model.n_parameters}
        elif method == "gmm":
            model = GaussianMixture(n_components=gmm_components, reg=1e-6, seed=seed).fit(train)
            extra = {"n_components": gmm_components, "reg": 1e-6, "n_parameters": model.n_parameters,
                     "em_iterations": model.n_iter, "converged": model.converged, "init": model.init}
        else:
            model = GaussianKDE(bandwidth=None, cv_folds=cv_folds, seed=seed).fit(train)
            extra = {"bandwidth": model.bandwidth_, "bandwidth_selection": f"{cv_folds}-fold CV on train",
                     "cv_curve": model.cv_curve}
        test_ll = model.mean_log_likelihood(test)
        out[method] = {"test_mean_log_lik": test_ll, "test_mean_log_lik_per_dim": test_ll / d,
                       "fit_seconds": round(time.perf_counter() - t0, 3), **extra}
    return out


def find_crossover(per_dim: dict[int, dict[str, dict]]) -> int | None:
    """Smallest d at which the Gaussian or the GMM beats the KDE on held-out likelihood (None if none does)."""
    for d in sorted(per_dim):
        r = per_dim[d]
        if max(r["gaussian"]["test_mean_log_lik"], r["gmm"]["test_mean_log_lik"]) > r["kde"]["test_mean_log_lik"]:
            return d
    return None


def plot(results: dict[str, dict], path: Path) -> None:
    """Per dataset: held-out nats/dim vs d for each method, crossover marked and stated in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        dims = sorted(int(d) for d in results[name]["dims"])
        for method in METHODS:
            ys = [results[name]["dims"][d][method]["test_mean_log_lik_per_dim"] for d in dims]
            ax.plot(dims, ys, marker="o", label=method)
        cross = results[name]["crossover"]
        if cross is not None:
            ax.axvline(cross, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_xlabel("PCA dimension d")
        ax.set_ylabel("held-out mean log-lik / d (nats)")
        ax.set_title(f"{name}: crossover d={cross}" if cross is not None else f"{name}: no crossover <= {dims[-1]}",
                     fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_density_study(datasets: list[str], dims: list[int], n_train: int | None, n_test: int | None, seed: int,
                      gmm_components: int, out_dir: Path, cv_folds: int = 5, progress: bool = True,
                      threads: int = 1) -> dict:
    """Run the study, write out_dir/density.json and out_dir/kde_vs_dim.png, and return the JSON's dict.

    ``threads`` torch threads (settings.threads): a float64 reduction split over another number of threads sums in
    another order, so the last digits of density.json (and DVC's hash of it) would follow the machine's cores."""
    import torch
    from tqdm import tqdm

    from estimators.density import PCAProjector

    torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {name: load_dataset(name, n_train, n_test, seed) for name in datasets}
    # For the 2-D toys only d=2 makes sense; elsewhere skip any d above the data's dimension.
    jobs = [(name, d) for name in datasets for d in ([2] if name in TOYS else dims) if d <= data[name][0].shape[1]]
    results: dict[str, dict] = {}
    for name, d in tqdm(jobs, desc="density", disable=not progress):
        train, test, notes = data[name]
        pca = PCAProjector().fit(train)  # fit on train only: the test set stays unseen
        entry = results.setdefault(name, {"n_train": train.shape[0], "n_test": test.shape[0],
                                          "data_dim": train.shape[1], **notes, "dims": {}})
        entry["dims"][d] = evaluate(pca.transform(train, d), pca.transform(test, d), seed, gmm_components, cv_folds)
        entry["dims"][d]["pca_explained_variance_fraction"] = (
            pca.explained_variance[:d].sum() / pca.explained_variance.sum()).item()
    for entry in results.values():
        entry["crossover"] = find_crossover(entry["dims"])
    report = {
        "settings": {"datasets": datasets, "dims": dims, "n_train": n_train, "n_test": n_test, "seed": seed,
                     "gmm_components": gmm_components, "cv_folds": cv_folds, "dtype": "float64",
                     "pca": "fit on train only, plain orthonormal projection (no whitening)",
                     "metric": "held-out mean log-likelihood in nats (total and per dimension)"},
        "results": results,
        "crossover": {name: entry["crossover"] for name, entry in results.items()},
    }
    # Fit times vary with the machine's load: they go to provenance.json, which DVC leaves out of the output's
    # hash, so density.json (and dvc.lock) depend on the data, settings and code alone.
    timings = {name: {str(d): {m: r[m].pop("fit_seconds") for m in METHODS} for d, r in entry["dims"].items()}
               for name, entry in results.items()}
    (out_dir / "density.json").write_text(json.dumps(report, indent=1))
    (out_dir / "provenance.json").write_text(json.dumps({"fit_seconds": timings}, indent=1))
    plot(results, out_dir / "kde_vs_dim.png")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.claim.density", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["toy_two_moons", "toy_ring", "digits"], choices=DATASETS)
    p.add_argument("--dims", nargs="+", type=int, default=list(DIMS))
    p.add_argument("--n-train", type=int, default=None, help="cap on training points (default: all; toys draw 2000)")
    p.add_argument("--n-test", type=int, default=None, help="held-out points (default: toys 1000, digits 597, "
                                                             "fashion_mnist all 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gmm-components", type=int, default=4)
    p.add_argument("--cv-folds", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("results/density"))
    args = p.parse_args(argv)
    if any(d <= 0 for d in args.dims):
        p.error("--dims must be positive integers")
    t0 = time.perf_counter()
    report = run_density_study(args.datasets, sorted(set(args.dims)), args.n_train, args.n_test, args.seed,
                               args.gmm_components, args.out, cv_folds=args.cv_folds)
    for name, entry in report["results"].items():
        print(f"{name} (n_train={entry['n_train']}, n_test={entry['n_test']}): crossover d={entry['crossover']}")
        for d, r in entry["dims"].items():
            cells = "  ".join(f"{m}={r[m]['test_mean_log_lik_per_dim']:+.3f}" for m in METHODS)
            print(f"  d={d:>3}  nats/dim: {cells}  (kde h={r['kde']['bandwidth']:.4g})")
    print(f"wrote {args.out / 'density.json'} and {args.out / 'kde_vs_dim.png'} in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
