"""The paper's Fig. 7-8: 500 samples of three distributions in [0, 100]; l2 loss and time.

For each distribution (Gaussian mixture, uniform, single Gaussian) and each number of values
l, every method quantizes the 500 samples; the l2 loss is the sum of squared errors. The
named peer is scikit-learn's ``KMeans(n_clusters=l, n_init=10)`` run directly on the samples.
"""

import warnings

import numpy as np
from sklearn.cluster import KMeans

from _common import best_time, header, l0learn_available, parse_args, table, warm_up, write
from skvq import (
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)


def distributions(rng, n=500):
    """Three 500-sample data sets constrained to [0, 100] (rejection sampling)."""
    def constrained(draw):
        out = np.empty(0)
        while out.size < n:
            x = draw(2 * n)
            out = np.concatenate([out, x[(x >= 0) & (x <= 100)]])
        return out[:n]

    def mixture(k):
        comp = rng.choice(3, size=k, p=[0.3, 0.45, 0.25])
        return rng.normal(np.array([20.0, 55.0, 85.0])[comp], np.array([6.0, 9.0, 4.0])[comp])

    return {
        "gaussian mixture": constrained(mixture),
        "uniform": constrained(lambda k: rng.uniform(0, 100, k)),
        "gaussian": constrained(lambda k: rng.normal(50, 15, k)),
    }


def methods(l):
    ms = {
        "L1 + LS (Alg. 1-2)": L1LeastSquareQuantizer(n_values=l),
        "L1 (no LS)": L1LeastSquareQuantizer(n_values=l, refit=False),
        "L0 dp (eq. 16)": L0LeastSquareQuantizer(n_values=l),
        "KMeans-LS (Alg. 3)": KMeansLSQuantizer(n_values=l, random_state=0),
        "KMeansQuantizer": KMeansQuantizer(n_values=l, random_state=0),
        "GMM": GaussianMixtureQuantizer(n_values=l, random_state=0),
    }
    if l0learn_available():
        ms["L0 l0learn"] = L0LeastSquareQuantizer(n_values=l, solver="l0learn")
    return ms


def main():
    args = parse_args(__doc__)
    warm_up()
    rng = np.random.default_rng(0)
    data = distributions(rng)
    ls = [2, 8, 16] if args.quick else [2, 4, 8, 16, 24, 32, 48, 64]
    repeats = 1 if args.quick else 3
    results = {}  # (dist, method, l) -> (loss, time, n_values)
    for dist, x in data.items():
        X = x[None, :]
        for l in ls:
            for name, q in methods(l).items():
                t, q = best_time(lambda: q.fit(X), repeats)
                rec = q.inverse_transform(q.transform(X))
                results[dist, name, l] = (float(np.sum((X - rec) ** 2)), t, q.n_values_)
            t, km = best_time(lambda: KMeans(n_clusters=l, n_init=10, random_state=0)
                              .fit(x[:, None]), repeats)
            results[dist, "sklearn KMeans(n_init=10)", l] = (float(km.inertia_), t, l)
            print(dist, l, "done", flush=True)
    names = list(methods(2)) + ["sklearn KMeans(n_init=10)"]

    lines = ["# Synthetic data: l2 loss and time against the number of values (paper Fig. 8)",
             ""] + header("bench_synthetic", args)
    lines += ["500 samples per distribution, in [0, 100] (rejection sampling, seed 0). l2 loss: "
              "sum of squared errors over the 500 samples (every sample is distinct, so the "
              "paper's unique-value weighting is the plain squared error). `values` is the "
              "number of values reached when it differs from l.", ""]
    for dist in data:
        lines += [f"## {dist}", "", "l2 loss:", ""]
        rows = []
        for name in names:
            row = [name]
            for l in ls:
                loss, _, k = results[dist, name, l]
                row.append(f"{loss:.4g}" + ("" if k == l else f" ({k} values)"))
            rows.append(row)
        lines += table(["method"] + [f"l={l}" for l in ls], rows)
        lines += ["fit time (ms):", ""]
        rows = [[name] + [f"{1e3 * results[dist, name, l][1]:.2f}" for l in ls]
                for name in names]
        lines += table(["method"] + [f"l={l}" for l in ls], rows)

    # Goals, computed from the numbers above.
    km = "sklearn KMeans(n_init=10)"
    dp = "L0 dp (eq. 16)"
    others = [n for n in names if n != dp]
    goal_a = all(results[d, dp, l][0] <= min(results[d, n, l][0] for n in others) * (1 + 1e-9)
                 for d in data for l in ls)
    goal_b = all(results[d, dp, l][1] < results[d, km, l][1] for d in data for l in ls if l >= 16)
    goal_c = all(results[d, "KMeans-LS (Alg. 3)", l][0] <= results[d, km, l][0] * (1 + 1e-9)
                 for d in data for l in ls)
    speed = [results[d, km, l][1] / results[d, dp, l][1] for d in data for l in ls if l >= 16]
    lines += ["## Goals", "",
              f"- L0 dp has the lowest l2 loss of all methods at every l, on all three data "
              f"sets: **{'PASS' if goal_a else 'FAIL'}**.",
              f"- L0 dp is faster than sklearn KMeans(n_init=10) for every l >= 16: "
              f"**{'PASS' if goal_b else 'FAIL'}** (speed-up "
              f"{min(speed):.1f}x to {max(speed):.1f}x).",
              f"- KMeans-LS l2 loss <= sklearn KMeans(n_init=10) at every l on all three data "
              f"sets: **{'PASS' if goal_c else 'FAIL'}**.", ""]
    l1 = "L1 + LS (Alg. 1-2)"
    big = [l for l in ls if l >= 64]
    if big:
        lines += ["The paper's claim, l1 + least squares against k-means for l >= 64:", ""]
        rows = []
        for d in data:
            for l in big:
                lr = results[d, l1, l][0] / results[d, km, l][0]
                tr = results[d, km, l][1] / results[d, l1, l][1]
                rows.append([d, l, f"{lr:.2f}", f"{tr:.1f}x", results[d, l1, l][2]])
        lines += table(["data", "l", "loss L1+LS / KMeans", "KMeans time / L1+LS time",
                        "L1+LS values"], rows)

    write(f"{args.out}/bench_synthetic.md", lines)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(data), figsize=(5 * len(data), 8))
    for j, dist in enumerate(data):
        for name in names:
            axes[0, j].plot(ls, [results[dist, name, l][0] for l in ls], marker="o", label=name)
            axes[1, j].plot(ls, [results[dist, name, l][1] for l in ls], marker="o", label=name)
        axes[0, j].set(title=dist, xlabel="number of values l", ylabel="l2 loss", yscale="log")
        axes[1, j].set(xlabel="number of values l", ylabel="fit time (s)", yscale="log")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{args.out}/bench_synthetic.png", dpi=90)
    print(f"wrote {args.out}/bench_synthetic.png")


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main()
