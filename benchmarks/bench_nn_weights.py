"""The paper's Fig. 1-2: quantize the last layer of a 784-256-128-64-10 MLP trained on MNIST.

Only MNIST's 10,000 test images are available (``../shared/data/mnist``, or ``$SKVQ_MNIST``):
the first 8,000 train the network, the last 2,000 test it. The 64 x 10 weight matrix of the
last layer is quantized with each method to l values, put back, and the accuracies measured.
"""

import sys
import warnings

import numpy as np
from sklearn.neural_network import MLPClassifier

from _common import best_time, header, l0learn_available, parse_args, table, warm_up, write
from skvq import (
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)
from skvq.datasets import find_mnist, load_mnist


def methods(l):
    ms = {
        "L1 + LS": L1LeastSquareQuantizer(n_values=l),
        "L1 (no LS)": L1LeastSquareQuantizer(n_values=l, refit=False),
        "L1 - l2 + LS": L1LeastSquareQuantizer(n_values=l, negative_l2=1e-6),
        "L0 dp": L0LeastSquareQuantizer(n_values=l),
        "KMeans-LS": KMeansLSQuantizer(n_values=l, random_state=0),
        "KMeans": KMeansQuantizer(n_values=l, random_state=0),
        "GMM": GaussianMixtureQuantizer(n_values=l, random_state=0),
    }
    if l0learn_available():
        ms["L0 l0learn"] = L0LeastSquareQuantizer(n_values=l, solver="l0learn")
    return ms


def main():
    args = parse_args(__doc__)
    if find_mnist() is None:
        print("MNIST not found (set SKVQ_MNIST or provide ../shared/data/mnist); skipping.")
        return
    warm_up()
    X, y = load_mnist()
    n_train = 8000
    if args.quick:
        X, y, n_train = X[:1000], y[:1000], 800
    Xtr, ytr, Xte, yte = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    net = MLPClassifier(hidden_layer_sizes=(256, 128, 64), random_state=0,
                        max_iter=5 if args.quick else 30, early_stopping=False)
    net.fit(Xtr, ytr)
    acc = (net.score(Xtr, ytr), net.score(Xte, yte))
    W = net.coefs_[-1].copy()  # 64 x 10
    print(f"float accuracy train {acc[0]:.4f} test {acc[1]:.4f}", flush=True)

    ls = [2, 4, 8] if args.quick else [2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64]
    repeats = 1 if args.quick else 3
    results = {}
    for l in ls:
        for name, q in methods(l).items():
            t, q = best_time(lambda: q.fit(W), repeats)
            net.coefs_[-1] = q.inverse_transform(q.transform(W))
            results[name, l] = (net.score(Xtr, ytr), net.score(Xte, yte), t, q.n_values_)
        net.coefs_[-1] = W
        print("l", l, "done", flush=True)
    names = list(methods(2))

    lines = ["# Neural-network weights: accuracy after quantizing the last layer (paper "
             "Fig. 1-2)", ""] + header("bench_nn_weights", args)
    lines += [f"MLP 784-256-128-64-10 (scikit-learn `MLPClassifier`, adam, {net.n_iter_} "
              f"epochs, seed 0) trained on MNIST test images 0-{n_train - 1}, tested on the "
              f"rest. Float accuracy: train {acc[0]:.4f}, test {acc[1]:.4f}. The last layer's "
              f"{W.shape[0]} x {W.shape[1]} weights ({np.unique(W).size} distinct values) are "
              "quantized to l values (paper's unique-value weighting; `L1 - l2` uses "
              "negative_l2=1e-6); `values` in brackets when a method reached fewer than l.", ""]
    for title, idx in [("Test accuracy", 1), ("Train accuracy", 0)]:
        lines += [f"## {title}", ""]
        rows = []
        for name in names:
            row = [name]
            for l in ls:
                r = results[name, l]
                row.append(f"{r[idx]:.4f}" + ("" if r[3] == l else f" ({r[3]})"))
            rows.append(row)
        lines += table(["method"] + [f"l={l}" for l in ls], rows)
    lines += ["## Fit time (ms)", ""]
    lines += table(["method"] + [f"l={l}" for l in ls],
                   [[n] + [f"{1e3 * results[n, l][2]:.2f}" for l in ls] for n in names])
    write(f"{args.out}/bench_nn_weights.md", lines)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name in names:
        for ax, idx in zip(axes, (0, 1, 2)):
            ax.plot(ls, [results[name, l][idx] for l in ls], marker="o", label=name)
    axes[0].set(title="train accuracy", xlabel="number of values l", xscale="log")
    axes[1].set(title="test accuracy", xlabel="number of values l", xscale="log")
    axes[2].set(title="fit time (s)", xlabel="number of values l", xscale="log", yscale="log")
    for ax in axes[:2]:
        ax.axhline(acc[axes.tolist().index(ax)], color="k", ls=":", label="float")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{args.out}/bench_nn_weights.png", dpi=90)
    print(f"wrote {args.out}/bench_nn_weights.png")


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.exit(main())
