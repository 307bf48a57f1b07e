"""Search over PQ codes: skvq's PQNearestNeighbors (ADC, SDC) against faiss' IndexPQ.

A synthetic float32 Gaussian mixture of 101,000 x 128: the first 100,000 vectors are the
database, the last 1,000 the queries. Both libraries train a PQ with M=8 subspaces of 256
centroids (20 k-means iterations on every database vector) and hold the database as codes.
10-recall@10 is the fraction of each query's 10 exact nearest neighbours (float vectors,
brute force in float64) found among the 10 returned, 1-recall@10 the fraction of queries
whose nearest neighbour is among them; queries per second are measured at 1
and 2 threads. skvq's ADC top-10 is checked against a brute-force search over the
reconstructed database.

``--quick`` uses 5,000 database vectors of 64 features and 100 queries (a smoke test).
"""

import sys
import time

import numpy as np

import _pq_peers as peers
from _common import best_time, header, parse_args, table, verdict, write
from skvq import PQ

M, N_BITS, N_ITER, K = 8, 8, 20, 10
THREADS = [1, 2]
QPS_RATIO = 0.5  # queries per second within 2x of faiss


def exact_neighbors(database, queries, k):
    """Indices of the ``k`` nearest rows of ``database`` (squared Euclidean, float64), ties by
    index, and the squared distances of all rows, computed in blocks of queries."""
    db = database.astype(np.float64)
    db_norms = np.einsum("ij,ij->i", db, db)
    out_idx = np.empty((queries.shape[0], k), dtype=np.intp)
    out_dist = np.empty((queries.shape[0], k))
    for start in range(0, queries.shape[0], 100):
        q = queries[start:start + 100].astype(np.float64)
        d = db_norms[None, :] - 2 * q @ db.T + np.einsum("ij,ij->i", q, q)[:, None]
        idx = np.argsort(d, axis=1, kind="stable")[:, :k]
        out_idx[start:start + 100] = idx
        out_dist[start:start + 100] = np.take_along_axis(d, idx, axis=1)
    return out_idx, out_dist


def recall(found, truth):
    """(10-recall@10, 1-recall@10): the fraction of the exact 10 nearest neighbours among the
    10 returned, and the fraction of queries whose exact nearest neighbour is among them."""
    overlap = np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)])
    first = np.mean([t[0] in f for f, t in zip(found, truth)])
    return float(overlap), float(first)


def main():
    args = parse_args(__doc__)
    try:
        from skvq.neighbors import PQNearestNeighbors
    except ImportError:
        print("skvq.neighbors.PQNearestNeighbors not available; skipping.")
        return 0
    repeats = 1 if args.quick else 3
    n_db, n_features, n_queries = (5_000, 64, 100) if args.quick else (100_000, 128, 1_000)
    X = peers.gaussian_mixture(n_db + n_queries, n_features)
    database, queries = X[:n_db], X[n_db:]
    started = time.perf_counter()
    truth, _ = exact_neighbors(database, queries, K)

    models = {}
    fit_s = {}
    for distance in ("adc", "sdc"):
        start = time.perf_counter()
        models[f"skvq {distance.upper()}"] = PQNearestNeighbors(
            PQ(M, N_BITS, max_iter=N_ITER, random_state=0), n_neighbors=K,
            distance=distance).fit(database)
        fit_s[f"skvq {distance.upper()}"] = time.perf_counter() - start
    faiss = peers.faiss_module()
    if faiss:
        index = faiss.IndexPQ(n_features, M, N_BITS)
        index.pq.cp.niter = N_ITER
        index.pq.cp.max_points_per_centroid = peers.NO_SUBSAMPLE
        start = time.perf_counter()
        with peers.quiet_stderr():
            index.train(database)
        index.add(database)
        fit_s["faiss IndexPQ"] = time.perf_counter() - start

    searches = {name: (lambda nn=nn: nn.kneighbors(queries)[1]) for name, nn in models.items()}
    if faiss:
        searches["faiss IndexPQ"] = lambda: index.search(queries, K)[1]
    results = {}  # (threads, name) -> (qps, recall)
    for n_threads in THREADS:
        with peers.threads(n_threads):
            for name, search in searches.items():
                search()  # warm-up
                seconds, found, _ = best_time(search, repeats)
                results[n_threads, name] = (n_queries / seconds,) + recall(found, truth)
                print(f"{n_threads} thread(s) {name}: {n_queries / seconds:,.0f} queries/s, "
                      f"recall {results[n_threads, name][1:]}", flush=True)

    # skvq's ADC top-10 against brute force over the reconstructions.
    nn = models["skvq ADC"]
    rec = nn.quantizer_.inverse_transform(nn.codes_)
    bf_idx, bf_dist = exact_neighbors(rec, queries, K)
    dist, idx = nn.kneighbors(queries)
    same = np.all(idx == bf_idx, axis=1)
    # A differing row is a tie only if skvq's neighbours are exactly as close (up to float32
    # rounding of the tables) as brute force's.
    rel = np.abs(dist.astype(np.float64) ** 2 - bf_dist) / np.maximum(bf_dist, 1e-12)
    ties = ~same & np.all(rel < 1e-4, axis=1)
    max_rel = float(rel.max())
    total = time.perf_counter() - started

    # -- report ----------------------------------------------------------------------------
    lines = header("Search over PQ codes: skvq ADC/SDC against faiss IndexPQ", args, repeats,
                   note="after a warm-up search")
    lines += [peers.peer_versions(), "",
              f"Synthetic float32 Gaussian mixture: {n_db:,} database vectors and {n_queries:,} "
              f"queries of {n_features} features. PQ with M={M}, K={2**N_BITS}, {N_ITER} "
              f"k-means iterations on every database vector (skvq: `PQNearestNeighbors(PQ({M}, "
              f"{N_BITS}))`, k-means++ seeding; faiss: `IndexPQ` with `cp.niter={N_ITER}`, no "
              f"subsample, random seeding). {K}-recall@{K}: fraction of the {K} exact nearest "
              f"neighbours (brute force over the float vectors) among the {K} returned; "
              f"1-recall@{K}: fraction of the queries whose exact nearest neighbour is among "
              f"them. In this mixture the neighbours of a query within its component are "
              f"nearly equidistant in {n_features} dimensions, so no {M * N_BITS}-bit code "
              f"ranks them well: the recalls are low for both libraries, and the comparison is "
              f"between them. "
              f"Queries per second: all {n_queries:,} queries in one call. Total run time "
              f"{total:.0f} s.", ""]
    rows = []
    for n_threads in THREADS:
        ref = results.get((n_threads, "faiss IndexPQ"))
        for name in searches:
            qps, r, r1 = results[n_threads, name]
            rows.append([n_threads, name, f"{qps:,.0f}", f"{qps / ref[0]:.2f}" if ref else "-",
                         f"{r:.3f}", f"{r1:.3f}"])
    lines += table(["threads", "search", "queries/s", "/ faiss", f"{K}-recall@{K}",
                    f"1-recall@{K}"], rows)
    lines += table(["index", "fit + encode the database (s, one run, no thread limit)"],
                   [[name, f"{s:.2f}"] for name, s in fit_s.items()])

    goals = [(f"skvq ADC top-{K} = brute-force ADC top-{K}",
              f"{int(same.sum())}/{n_queries} queries identical, {int(ties.sum())} differ by "
              f"ties only (largest relative distance difference {max_rel:.1e})",
              bool(np.all(same | ties)))]
    if faiss:
        for n_threads in THREADS:
            qps, ref = results[n_threads, "skvq ADC"][0], results[n_threads, "faiss IndexPQ"][0]
            goals.append((f"ADC queries/s within 2x of faiss IndexPQ ({n_threads} thread"
                          f"{'s' if n_threads > 1 else ''})", f"{qps / ref:.2f}x",
                          qps >= QPS_RATIO * ref))
    lines += ["## Goals", ""]
    lines += table(["goal", "measured", "verdict"], [[g, m, verdict(ok)] for g, m, ok in goals])
    write(f"{args.out}/bench_pq_search.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
