"""IVF-PQ search: skvq's IVFPQNearestNeighbors against faiss' IndexIVFPQ.

Both indexes are trained at the same ``n_lists``, ``M`` and ``n_bits`` (coarse k-means on at
most 256 vectors per list, 20 iterations for skvq, faiss' default 25 for faiss; residual PQ
on at most 256 vectors per centroid) and searched over a sweep of ``n_probe``: 10-recall@10
against the exact neighbours (brute force in float64) and queries per second, all queries in
one call, at 1 and 2 threads, skvq and faiss timed alternately in the same loop (best of 3).

Data:

- the shared sentence embeddings (``../shared/data/embeddings/debian_minilm.npy``, 59,733 x
  384, unit norm): the first 1,000 rows are the queries, the rest the database; searched
  with the Euclidean metric and with the inner product (faiss ``METRIC_INNER_PRODUCT``);
  skipped when the file is absent;
- a synthetic Gaussian mixture of 1,000,000 x 64 float32 vectors and 1,000 queries
  (Euclidean).

``--quick``: 5,000 synthetic vectors of 32 features, 100 queries, a short sweep; no shared
data (a smoke test, under 30 s).
"""

import sys
import time
from pathlib import Path

import numpy as np

import _pq_peers as peers
from _common import ROOT, best_time, header, parse_args, pyplot, savefig, table, verdict, write
from skvq import PQ

K = 10
THREADS = [1, 2]
QPS_GOAL = 0.8
RECALL_TOLERANCE = 0.01
EMBEDDINGS = ROOT.parent / "shared" / "data" / "embeddings" / "debian_minilm.npy"


def exact_neighbors(database, queries, metric, k=K):
    """Indices of the exact ``k`` nearest rows (float64), in blocks of queries."""
    db = database.astype(np.float64)
    norms = np.einsum("ij,ij->i", db, db)
    out = np.empty((queries.shape[0], k), dtype=np.intp)
    for start in range(0, queries.shape[0], 100):
        q = queries[start:start + 100].astype(np.float64)
        scores = -2 * q @ db.T + norms[None, :] if metric == "euclidean" else -q @ db.T
        part = np.argpartition(scores, k, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(scores, part, axis=1), axis=1)
        out[start:start + 100] = np.take_along_axis(part, order, axis=1)
    return out


def recall(found, truth):
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def build(faiss, database, metric, n_lists, M, n_bits):
    """Both indexes, with their training + adding times (one run, no thread limit)."""
    from skvq.ivf import IVFPQNearestNeighbors

    times = {}
    start = time.perf_counter()
    ivf = IVFPQNearestNeighbors(PQ(M, n_bits, max_points_per_centroid=256, random_state=0),
                                n_lists=n_lists, n_neighbors=K, metric=metric,
                                random_state=0).fit(database)
    times["skvq"] = time.perf_counter() - start
    index = None
    if faiss:
        d = database.shape[1]
        euclidean = metric == "euclidean"
        coarse = faiss.IndexFlatL2(d) if euclidean else faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(coarse, d, n_lists, M, n_bits,
                                 faiss.METRIC_L2 if euclidean else faiss.METRIC_INNER_PRODUCT)
        start = time.perf_counter()
        with peers.quiet_stderr():
            index.train(database)
        index.add(database)
        times["faiss"] = time.perf_counter() - start
    return ivf, index, times


def sweep(faiss, ivf, index, queries, truth, n_probes, repeats):
    """rows of (threads, n_probe, skvq qps, faiss qps, skvq recall, faiss recall)."""
    rows = []
    for n_threads in THREADS:
        with peers.threads(n_threads):
            for n_probe in n_probes:
                ivf.set_params(n_probe=n_probe)
                ivf.kneighbors(queries[:10])  # warm-up (compilation on the first call)
                s_time, s_found, _ = best_time(lambda: ivf.kneighbors(queries)[1], 1)
                f_time, f_found = np.inf, None
                if index is not None:
                    index.nprobe = n_probe
                    index.search(queries[:10], K)
                # alternate skvq and faiss, best of `repeats` each
                for _ in range(repeats - 1 if repeats > 1 else 0):
                    s_time = min(s_time, best_time(lambda: ivf.kneighbors(queries), 1)[0])
                    if index is not None:
                        f_time = min(f_time, best_time(lambda: index.search(queries, K), 1)[0])
                if index is not None:
                    t, (_, f_found), _ = best_time(lambda: index.search(queries, K), 1)
                    f_time = min(f_time, t)
                n = queries.shape[0]
                row = [n_threads, n_probe, n / s_time, n / f_time if f_found is not None
                       else np.nan, recall(s_found, truth),
                       recall(f_found, truth) if f_found is not None else np.nan]
                rows.append(row)
                print(f"  {n_threads} thread(s) n_probe={n_probe}: skvq {row[2]:,.0f} q/s "
                      f"recall {row[4]:.3f} | faiss {row[3]:,.0f} q/s recall {row[5]:.3f}",
                      flush=True)
    return rows


def main():
    args = parse_args(__doc__)
    faiss = peers.faiss_module()
    repeats = 1 if args.quick else 3
    started = time.perf_counter()
    cases = []  # (name, database, queries, metric, n_lists, M, n_bits, n_probes)
    if args.quick:
        X = peers.gaussian_mixture(5_100, 32)
        cases.append(("synthetic 5,000 x 32", X[:5_000], X[5_000:], "euclidean", 32, 8, 8,
                      [1, 8]))
        cases.append(("synthetic 5,000 x 32, 4-bit codes", X[:5_000], X[5_000:],
                      "inner_product", 32, 8, 4, [1, 8]))
    else:
        if EMBEDDINGS.exists():
            E = np.load(EMBEDDINGS).astype(np.float32)
            for metric in ("euclidean", "inner_product"):
                cases.append((f"embeddings {E.shape[0] - 1000:,} x 384", E[1000:], E[:1000],
                              metric, 256, 32, 8, [1, 4, 16, 64]))
        else:
            print(f"{EMBEDDINGS} not found: the embeddings are skipped.")
        X = peers.gaussian_mixture(1_001_000, 64, n_components=1024)
        cases.append(("synthetic 1,000,000 x 64", X[:1_000_000], X[1_000_000:], "euclidean",
                      1024, 16, 8, [1, 4, 16, 64]))

    results = []
    for name, database, queries, metric, n_lists, M, n_bits, n_probes in cases:
        print(f"{name}, {metric}, n_lists={n_lists}, M={M}, n_bits={n_bits}", flush=True)
        truth = exact_neighbors(database, queries, metric)
        ivf, index, times = build(faiss, database, metric, n_lists, M, n_bits)
        rows = sweep(faiss, ivf, index, queries, truth, n_probes, repeats)
        results.append((name, metric, n_lists, M, n_bits, ivf.code_size_, times, rows))
        del index, ivf
    total = time.perf_counter() - started

    # -- report ----------------------------------------------------------------------------
    lines = header("IVF-PQ search: skvq IVFPQNearestNeighbors against faiss IndexIVFPQ", args,
                   repeats, note="after a warm-up search, skvq and faiss alternately")
    lines += [peers.peer_versions(), "",
              "The machine is shared with other jobs: absolute queries/s are noisy; the "
              "ratios compare skvq and faiss measured alternately in the same loop.", "",
              f"Both indexes at the same n_lists, M and n_bits; skvq: `IVFPQNearestNeighbors("
              f"PQ(M, n_bits, max_points_per_centroid=256), n_lists=...)` (coarse k-means on "
              f"at most 256 vectors a list); faiss: `IndexIVFPQ` with its defaults "
              f"(by_residual, precomputed table for L2). {K}-recall@{K} against the exact "
              f"neighbours (float64 brute force); queries/s with all queries in one call. "
              f"Total run time {total:.0f} s.", ""]
    goals = []
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (name, metric, n_lists, M, n_bits, code_size, times, rows) in zip(axes[0],
                                                                               results):
        lines += [f"## {name}, {metric}", "",
                  f"n_lists={n_lists}, M={M}, n_bits={n_bits}: {code_size} bytes of codes per "
                  f"vector. Training + adding (one run, no thread limit): skvq "
                  f"{times['skvq']:.1f} s" + (f", faiss {times['faiss']:.1f} s."
                                              if 'faiss' in times else "."), ""]
        lines += table(["threads", "n_probe", "skvq q/s", "faiss q/s", "skvq / faiss",
                        "skvq recall", "faiss recall", "recall difference"],
                       [[t, p, f"{sq:,.0f}", f"{fq:,.0f}", f"{sq / fq:.2f}", f"{sr:.3f}",
                         f"{fr:.3f}", f"{sr - fr:+.3f}"] for t, p, sq, fq, sr, fr in rows])
        for n_threads, marker in zip(THREADS, ["o", "s"]):
            sel = [r for r in rows if r[0] == n_threads]
            ax.plot([r[4] for r in sel], [r[2] for r in sel], marker=marker, color="C0",
                    label=f"skvq, {n_threads} thread{'s' if n_threads > 1 else ''}")
            ax.plot([r[5] for r in sel], [r[3] for r in sel], marker=marker, color="C1",
                    linestyle="--",
                    label=f"faiss, {n_threads} thread{'s' if n_threads > 1 else ''}")
        ax.set_yscale("log")
        ax.set_xlabel(f"{K}-recall@{K}")
        ax.set_ylabel("queries per second")
        ax.set_title(f"{name}\n{metric}, n_lists={n_lists}, M={M}, n_bits={n_bits}",
                     fontsize=9)
        ax.legend(fontsize=7)
        if faiss:
            worst_recall = max(abs(r[4] - r[5]) for r in rows)
            goals.append((f"{name}, {metric}: recall within {RECALL_TOLERANCE} of faiss at "
                          f"every n_probe", f"largest difference {worst_recall:.3f}",
                          worst_recall <= RECALL_TOLERANCE))
            one = [r[2] / r[3] for r in rows if r[0] == 1]
            goals.append((f"{name}, {metric}: queries/s >= {QPS_GOAL}x faiss at one thread",
                          f"{min(one):.2f}x to {max(one):.2f}x (median "
                          f"{np.median(one):.2f}x)", min(one) >= QPS_GOAL))
    fig.tight_layout()
    figure = Path(args.out) / "bench_ivf_search.png"
    savefig(fig, figure)
    lines += [f"![recall against queries per second]({figure.name})", ""]
    lines += ["## Goals", ""]
    lines += table(["goal", "measured", "verdict"], [[g, m, verdict(ok)] for g, m, ok in goals])
    write(f"{args.out}/bench_ivf_search.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
