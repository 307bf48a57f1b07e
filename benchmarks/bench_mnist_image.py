"""The paper's Fig. 5-6: one MNIST image quantized to l values by each method.

The image (MNIST test image 0, pixels in [0, 1]) is one row of 784 values. The l2 loss is
the sum of squared errors over the pixels, after clipping the reconstruction to [0, 1] (the
paper's hard sigmoid, eq. 21); the loss before clipping is shown too when it differs.
"""

import sys
import warnings

import numpy as np

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
        "L0 dp": L0LeastSquareQuantizer(n_values=l),
        "KMeans-LS": KMeansLSQuantizer(n_values=l, random_state=0),
        "KMeans": KMeansQuantizer(n_values=l, random_state=0),
        "GMM": GaussianMixtureQuantizer(n_values=l, random_state=0),
        "L0 dp, count weighting": L0LeastSquareQuantizer(n_values=l, weighting="count"),
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
    X, _ = load_mnist()
    img = X[:1].astype(np.float64)
    ls = [2, 4] if args.quick else [2, 3, 4, 6, 8, 16]
    repeats = 1 if args.quick else 3
    results, images = {}, {}
    for l in ls:
        for name, q in methods(l).items():
            t, q = best_time(lambda: q.fit(img), repeats)
            rec = q.inverse_transform(q.transform(img))
            clipped = np.clip(rec, 0, 1)
            results[name, l] = (float(np.sum((img - clipped) ** 2)),
                                float(np.sum((img - rec) ** 2)), t, q.n_values_)
            images[name, l] = clipped.reshape(28, 28)
    names = list(methods(2))

    lines = ["# One MNIST image: l2 loss per method (paper Fig. 5-6)", ""]
    lines += header("bench_mnist_image", args)
    lines += [f"MNIST test image 0 (pixels in [0, 1], {np.unique(img).size} distinct values). "
              "l2 loss: sum of squared errors after clipping to [0, 1] (eq. 21), and before "
              "clipping in brackets where different. Unique-value weighting (the paper's) "
              "unless stated; the image is mostly 0, so `count` weighting, which minimises the "
              "loss of the whole image, is shown too. Picture: "
              "[bench_mnist_image.png](bench_mnist_image.png).", ""]
    rows = []
    for name in names:
        row = [name]
        for l in ls:
            c, u, _, k = results[name, l]
            row.append(f"{c:.3f}" + ("" if abs(c - u) < 1e-9 else f" ({u:.3f})")
                       + ("" if k == l else f" [{k} values]"))
        rows.append(row)
    lines += ["## l2 loss", ""] + table(["method"] + [f"l={l}" for l in ls], rows)
    lines += ["## Fit time (ms)", ""]
    lines += table(["method"] + [f"l={l}" for l in ls],
                   [[n] + [f"{1e3 * results[n, l][2]:.2f}" for l in ls] for n in names])
    write(f"{args.out}/bench_mnist_image.md", lines)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(names), len(ls) + 1,
                             figsize=(1.6 * (len(ls) + 1), 1.7 * len(names)))
    for i, name in enumerate(names):
        axes[i, 0].imshow(img.reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(name, fontsize=7)
        for j, l in enumerate(ls, 1):
            axes[i, j].imshow(images[name, l], cmap="gray", vmin=0, vmax=1)
            if i == 0:
                axes[i, j].set_title(f"l={l}", fontsize=8)
            axes[i, j].set_xlabel(f"{results[name, l][0]:.2f}", fontsize=7)
    axes[0, 0].set_title("original", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(f"{args.out}/bench_mnist_image.png", dpi=90)
    print(f"wrote {args.out}/bench_mnist_image.png")


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.exit(main())
