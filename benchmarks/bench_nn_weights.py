"""The paper's Fig. 1-2 (and Fig. 4's l1 - l2): quantize the last layer of a 784-256-128-64-10 MLP.

Only MNIST's 10,000 test images are available (``../shared/data/mnist``, or ``$SKVQ_MNIST``):
the first 8,000 train the network, the last 2,000 test it. The 64 x 10 weight matrix of the
last layer is quantized with each method to l values, put back, and the accuracies measured.
"""

import sys
import time
import warnings

import numpy as np
from sklearn.neural_network import MLPClassifier

from _common import (NA_L0LEARN, best_time, header, l0learn_available, parse_args, pyplot,
                     savefig, table, warm_up, write)
from skvq import (
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)
from skvq.datasets import find_mnist, load_mnist

L1 = "L1 + LS"
L1_NEG_L2 = "L1 - l2 + LS"
L0LEARN = "L0 l0learn"
# Paper Fig. 4: lambda_2 = 4e-3 * lambda_1, lambda_1 being the plain L1 search's lambda at l.
NEG_L2_RATIO = 4e-3


def quantizers(l, alpha_l1):
    """The methods at l values; ``alpha_l1`` is the lambda the L1 + LS search found at l."""
    qs = {
        L1: L1LeastSquareQuantizer(n_values=l),
        "L1 (no LS)": L1LeastSquareQuantizer(n_values=l, refit=False),
        L1_NEG_L2: L1LeastSquareQuantizer(n_values=l, negative_l2=NEG_L2_RATIO * alpha_l1),
        "L0 dp": L0LeastSquareQuantizer(n_values=l),
        "KMeans-LS": KMeansLSQuantizer(n_values=l, n_init=10, random_state=0),
        "KMeans": KMeansQuantizer(n_values=l, n_init=10, random_state=0),
        "GMM": GaussianMixtureQuantizer(n_values=l, random_state=0),
    }
    if l0learn_available():
        qs[L0LEARN] = L0LeastSquareQuantizer(n_values=l, solver="l0learn")
    return qs


def main():
    args = parse_args(__doc__)
    if find_mnist() is None:
        print("MNIST not found (set SKVQ_MNIST or provide ../shared/data/mnist); skipping.")
        return 0
    warm_up()
    X, y = load_mnist()
    n_train = 8000
    if args.quick:
        X, y, n_train = X[:1000], y[:1000], 800
    Xtr, ytr, Xte, yte = X[:n_train], y[:n_train], X[n_train:], y[n_train:]
    max_iter = 5 if args.quick else 60
    net = MLPClassifier(hidden_layer_sizes=(256, 128, 64), random_state=0, max_iter=max_iter)
    start = time.perf_counter()
    net.fit(Xtr, ytr)
    train_s = time.perf_counter() - start
    acc = (net.score(Xtr, ytr), net.score(Xte, yte))
    W = net.coefs_[-1].copy()  # 64 x 10
    print(f"MLP: {net.n_iter_} epochs in {train_s:.1f} s; float accuracy train {acc[0]:.4f} "
          f"test {acc[1]:.4f}", flush=True)

    ls = [2, 4, 8] if args.quick else [2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64]
    repeats = 1 if args.quick else 3
    results = {}  # (method, l) -> (train acc, test acc, seconds, values, weight SSE, warned)
    for l in ls:
        alpha_l1 = L1LeastSquareQuantizer(n_values=l).fit(W).alpha_
        for name, q in quantizers(l, alpha_l1).items():
            t, q, warned = best_time(lambda: q.fit(W), repeats)
            Wq = q.inverse_transform(q.transform(W))
            net.coefs_[-1] = Wq
            results[name, l] = (net.score(Xtr, ytr), net.score(Xte, yte), t, q.n_values_,
                                float(np.sum((W - Wq) ** 2)), warned)
        net.coefs_[-1] = W
        print("l =", l, "done", flush=True)
    names = list(quantizers(2, 1.0))
    shown = names + ([] if L0LEARN in names else [L0LEARN])

    def cell(name, l, text):
        r = results[name, l]
        return (text + ("" if r[3] == l else f" ({r[3]})")
                + (" †" if "ConvergenceWarning" in r[5] else ""))

    def rows(fmt):
        out = []
        for name in shown:
            if name not in names:
                out.append([name, NA_L0LEARN] + [""] * (len(ls) - 1))
            else:
                out.append([name] + [cell(name, l, fmt(results[name, l])) for l in ls])
        return out

    columns = ["method"] + [f"l={l}" for l in ls]
    lines = header("Neural-network weights: accuracy after quantizing the last layer "
                   "(paper Fig. 1-2)", args, repeats)
    lines += [
        f"MLP 784-256-128-64-10: scikit-learn `MLPClassifier(hidden_layer_sizes=(256, 128, "
        f"64), random_state=0, max_iter={max_iter})` (adam, relu), {net.n_iter_} epochs in "
        f"{train_s:.1f} s, trained on MNIST test images 0-{n_train - 1} and tested on images "
        f"{n_train}-{len(X) - 1} (only the 10,000 test images are available). Float accuracy: "
        f"train {acc[0]:.4f}, test {acc[1]:.4f}. The last layer's {W.shape[0]} x "
        f"{W.shape[1]} weights ({np.unique(W).size} distinct values, range "
        f"[{W.min():.3f}, {W.max():.3f}]) are quantized to l values with the paper's "
        "unique-value weighting and put back; the biases stay in floating point.",
        "",
        f"`{L1_NEG_L2}`: eq. 13 with `negative_l2` = {NEG_L2_RATIO:g} x the lambda that the "
        f"`{L1}` search found at the same l (the paper's Fig. 4 ratio), then the same "
        "n_values search (its time excludes that first search). The k-means-based methods use "
        "`n_init=10, random_state=0`. A number in brackets is the number of values reached "
        "when it differs from l; † marks a fit that raised a `ConvergenceWarning`.",
        "",
        "![accuracy and time](bench_nn_weights.png)",
        "",
        "![zoom on few values](bench_nn_weights_zoom.png)",
        "",
    ]
    lines += ["## Test accuracy", ""] + table(columns, rows(lambda r: f"{r[1]:.4f}"))
    lines += ["## Train accuracy", ""] + table(columns, rows(lambda r: f"{r[0]:.4f}"))
    lines += ["## Squared error of the quantized weights", ""]
    lines += table(columns, rows(lambda r: f"{r[4]:.3g}"))
    lines += ["## Fit time (ms)", ""] + table(columns, rows(lambda r: f"{1e3 * r[2]:.2f}"))
    write(f"{args.out}/bench_nn_weights.md", lines)

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for name in names:
        for ax, idx in zip(axes, (0, 1, 2)):
            ax.plot(ls, [results[name, l][idx] for l in ls], marker="o", ms=3, label=name)
    axes[0].set(title="train accuracy", ylabel="accuracy")
    axes[1].set(title="test accuracy", ylabel="accuracy")
    axes[2].set(title="fit time", ylabel="seconds", yscale="log")
    for ax, a in zip(axes[:2], acc):
        ax.axhline(a, color="k", ls=":", label="float weights")
    for ax in axes:
        ax.set(xlabel="number of values l", xscale="log")
        ax.set_xticks(ls, [str(l) for l in ls], fontsize=7)
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    savefig(fig, f"{args.out}/bench_nn_weights.png")

    few = [l for l in ls if l <= 8]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        for ax, idx in zip(axes, (0, 1)):
            ax.plot(few, [results[name, l][idx] for l in few], marker="o", ms=3, label=name)
    for ax, a, title in zip(axes, acc, ("train accuracy", "test accuracy")):
        ax.axhline(a, color="k", ls=":", label="float weights")
        ax.set(title=f"{title}, few values (paper Fig. 2)", xlabel="number of values l",
               ylabel="accuracy")
        ax.set_xticks(few)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    savefig(fig, f"{args.out}/bench_nn_weights_zoom.png")
    return 0


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.exit(main())
