"""The paper's Fig. 5-6: one MNIST image quantized to l values by each method.

The image (MNIST test image 0, pixels in [0, 1]) is one row of 784 values. The l2 loss is
the sum of squared errors over the pixels, after clipping the reconstruction to [0, 1] (the
paper's hard sigmoid, eq. 21); the loss before clipping is shown too when it differs.
"""

import sys
import warnings

import numpy as np

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


L0LEARN = "L0 l0learn"


def quantizers(l):
    qs = {
        "L1 + LS": L1LeastSquareQuantizer(n_values=l),
        "L1 (no LS)": L1LeastSquareQuantizer(n_values=l, refit=False),
        "L0 dp": L0LeastSquareQuantizer(n_values=l),
        "KMeans-LS": KMeansLSQuantizer(n_values=l, n_init=10, random_state=0),
        "KMeans": KMeansQuantizer(n_values=l, n_init=10, random_state=0),
        "GMM": GaussianMixtureQuantizer(n_values=l, random_state=0),
        "L0 dp, count weighting": L0LeastSquareQuantizer(n_values=l, weighting="count"),
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
    X, _ = load_mnist()
    img = X[:1].astype(np.float64)
    distinct, first = np.unique(img, return_index=True)
    ls = [2, 4] if args.quick else [2, 3, 4, 6, 8, 16]
    repeats = 1 if args.quick else 3
    results, images = {}, {}
    for l in ls:
        for name, q in quantizers(l).items():
            t, q, _ = best_time(lambda: q.fit(img), repeats)
            rec = q.inverse_transform(q.transform(img))
            clipped = np.clip(rec, 0, 1)
            rec_distinct = clipped.ravel()[first]  # every pixel of a value gets one code
            results[name, l] = (float(np.sum((img - clipped) ** 2)),
                                float(np.sum((img - rec) ** 2)), t, q.n_values_,
                                float(np.sum((distinct - rec_distinct) ** 2)))
            images[name, l] = clipped.reshape(28, 28)
    names = list(quantizers(2))
    shown = names + ([] if L0LEARN in names else [L0LEARN])

    lines = header("One MNIST image: l2 loss per method (paper Fig. 5-6)", args, repeats)
    lines += [f"MNIST test image 0 (pixels in [0, 1], {np.unique(img).size} distinct values, "
              f"{int(np.sum(img == 0))} of the 784 pixels are 0). "
              "l2 loss: sum of squared errors after clipping to [0, 1] (eq. 21), and before "
              "clipping in brackets where different. Unique-value weighting (the paper's) "
              "unless stated: it minimises the error over the distinct values, each counted "
              "once, not over the pixels, so the value 0 weighs as much as any other; "
              "`count` weighting, which minimises the loss of the whole image, is shown too. "
              "The second table is the loss over the distinct values (clipped), the objective "
              "that unique weighting minimises. The k-means-based methods use "
              "`n_init=10, random_state=0`.", "",
              "![reconstructions](bench_mnist_image.png)", ""]
    def rows(fmt):
        out = []
        for name in shown:
            if name not in names:
                out.append([name, NA_L0LEARN] + [""] * (len(ls) - 1))
                continue
            out.append([name] + [fmt(results[name, l])
                                 + ("" if results[name, l][3] == l
                                    else f" [{results[name, l][3]} values]") for l in ls])
        return out

    columns = ["method"] + [f"l={l}" for l in ls]
    lines += ["## l2 loss over the 784 pixels", ""]
    lines += table(columns, rows(lambda r: f"{r[0]:.3f}"
                                 + ("" if abs(r[0] - r[1]) < 1e-9 else f" ({r[1]:.3f})")))
    lines += [f"## l2 loss over the {distinct.size} distinct values", ""]
    lines += table(columns, rows(lambda r: f"{r[4]:.4f}"))
    lines += ["## Fit time (ms)", ""] + table(columns, rows(lambda r: f"{1e3 * r[2]:.2f}"))
    write(f"{args.out}/bench_mnist_image.md", lines)

    plt = pyplot()

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
    fig.suptitle("MNIST test image 0 quantized to l values (l2 loss after clipping below)",
                 fontsize=9)
    fig.tight_layout()
    savefig(fig, f"{args.out}/bench_mnist_image.png")
    return 0


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.exit(main())
