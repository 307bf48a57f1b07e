"""skvq on dask: encoding a database generated chunk by chunk with 1 and 2 workers, and the
sharded search against the single-process searcher.

Encoding: ``--n-rows`` float32 vectors of 64 features (10^8 by default), generated chunk by
chunk on the workers (``--chunk-rows`` rows a chunk, never the whole array anywhere), are
encoded with ``PQ(n_subspaces=8, n_bits=8)`` (trained by :func:`skvq.distributed.fit_sample`
on 25,600 rows of two chunks); only a checksum of each chunk's codes leaves its worker. Two
``LocalCluster`` s of one-thread worker processes, one with 1 worker and one with 2, run side
by side and the same computation alternates between them (best of the repeats); the same
chunks, generated the same way, are also timed without the encoding (generation alone), and
one chunk is encoded in the driver without dask. Peak memory per worker is the worker
process's peak resident set (``getrusage``), before and after the runs.

Search: a database of ``--search-rows`` vectors (10^6) in chunks of 10^5 rows, 1,000 queries,
k=10, ADC: :class:`skvq.distributed.DistributedPQNearestNeighbors` on the 2-worker cluster
against :class:`skvq.neighbors.PQNearestNeighbors` in the driver (threads as BLAS allows),
alternately, best of the repeats; the answers must be identical.

``--quick``: 10^5 rows in chunks of 25,000, a database of 10^4, 100 queries.
"""

import argparse
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from _common import ROOT, header, table, verdict, write

D, M, N_BITS, K = 64, 8, 8, 10
SPEEDUP_GOAL = 1.7


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast smoke run (CI); its numbers are not the results")
    parser.add_argument("--out", default=str(ROOT / "doc" / "benchmarks"),
                        help="folder for the markdown report (default doc/benchmarks)")
    parser.add_argument("--n-rows", type=int, default=None,
                        help="vectors to encode (default 10^8; --quick 2 x 10^5)")
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="rows per chunk (default 250,000; --quick 50,000)")
    parser.add_argument("--search-rows", type=int, default=None,
                        help="database vectors of the search part (default 10^6)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per configuration (default 2; --quick 1)")
    args = parser.parse_args()
    args.n_rows = args.n_rows or (100_000 if args.quick else 10**8)
    args.chunk_rows = args.chunk_rows or (25_000 if args.quick else 250_000)
    args.search_rows = args.search_rows or (10_000 if args.quick else 10**6)
    args.repeats = args.repeats or (1 if args.quick else 2)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def _generate(block_info=None):
    """Chunk ``i`` of the synthetic database: a Gaussian mixture seeded by the chunk's index."""
    (lo, hi), _ = block_info[None]["array-location"]
    i = block_info[None]["chunk-location"][0]
    rng = np.random.default_rng([12345, i])
    centers = np.random.default_rng(0).normal(size=(32, D)).astype(np.float32)
    X = rng.standard_normal((hi - lo, D), dtype=np.float32)
    X += centers[rng.integers(32, size=hi - lo)]
    return X


def database(n_rows, chunk_rows):
    import dask.array as da

    chunks = (tuple(min(chunk_rows, n_rows - s) for s in range(0, n_rows, chunk_rows)), (D,))
    return da.map_blocks(_generate, chunks=chunks, dtype=np.float32)


def _checksum(codes):
    return np.array([codes.sum(dtype=np.uint64)], dtype=np.uint64)


def _row_count(X):
    return np.array([X.shape[0]], dtype=np.float64)


def checksum(codes):
    return codes.map_blocks(_checksum, chunks=((1,) * codes.numblocks[0],), drop_axis=1,
                            dtype=np.uint64).sum()


def generation_only(X):
    return X.map_blocks(_row_count, chunks=((1,) * X.numblocks[0],), drop_axis=1,
                        dtype=np.float64).sum()


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mib():
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def cluster(n_workers):
    from dask.distributed import Client, LocalCluster

    c = LocalCluster(n_workers=n_workers, processes=True, threads_per_worker=1,
                     host="127.0.0.1", dashboard_address=None, silence_logs=50)
    return c, Client(c, set_as_default=False)


def main():
    args = parse_args()
    try:
        import dask
        import dask.array  # noqa: F401
        import dask.distributed  # noqa: F401
    except ImportError:
        print("dask[array,distributed] not installed; skipping.")
        return 0
    from sklearn.frozen import FrozenEstimator

    from skvq import PQ
    from skvq.distributed import DistributedPQNearestNeighbors, fit_sample
    from skvq.neighbors import PQNearestNeighbors

    warnings.simplefilter("ignore")  # distributed's notes about large graphs and ports
    lines = header("skvq on dask: encoding with 1 and 2 workers, sharded search", args,
                   args.repeats, note="after a warm-up run on each cluster")
    lines += [
        "The machine is shared with other jobs (2 CPUs): times are noisy, ratios are measured "
        "side by side in one run, alternating the configurations.", ""]

    clusters = {n: cluster(n) for n in (1, 2)}
    try:
        X = database(args.n_rows, args.chunk_rows)
        chunk_mib = args.chunk_rows * D * 4 / 2**20
        with dask.config.set(scheduler="sync"):
            pq = fit_sample(PQ(n_subspaces=M, n_bits=N_BITS, random_state=0), X,
                            n_samples=100 * 2**N_BITS, max_chunks=2, random_state=0)
        codes = pq.transform(X)  # lazy
        # warm-up on each cluster: numba kernels compiled (or loaded) in every worker
        small = database(4 * args.chunk_rows, args.chunk_rows)
        for _, client in clusters.values():
            client.compute(checksum(pq.transform(small))).result()
            client.run(lambda: None)
        base_rss = {n: client.run(_rss_mib) for n, (_, client) in clusters.items()}

        # in the driver, without dask: one chunk
        one_chunk = _generate({None: {"array-location": [(0, args.chunk_rows), (0, D)],
                                      "chunk-location": (0, 0)}})
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # as in a worker (the nanny sets OMP_NUM_THREADS=1)
            t_numpy = min(_timed(lambda: pq.transform(one_chunk))[0] for _ in range(3))

        times = {("encode", n): np.inf for n in clusters}
        times.update({("generate", n): np.inf for n in clusters})
        sums = {}
        for _ in range(args.repeats):
            for n, (_, client) in clusters.items():
                t, value = _timed(lambda: client.compute(checksum(codes)).result())
                times[("encode", n)] = min(times[("encode", n)], t)
                sums[n] = int(value)
                t, rows = _timed(lambda: client.compute(generation_only(X)).result())
                times[("generate", n)] = min(times[("generate", n)], t)
                assert int(rows) == args.n_rows
        peak = {n: client.run(_peak_rss_mib) for n, (_, client) in clusters.items()}
        assert sums[1] == sums[2], "1 and 2 workers gave different codes"

        rows = []
        for n in clusters:
            encode_only = times[("encode", n)] - times[("generate", n)]
            rows.append([n, f"{args.n_rows:,}", f"{times[('encode', n)]:.1f}",
                         f"{args.n_rows / times[('encode', n)]:,.0f}",
                         f"{times[('generate', n)]:.1f}",
                         f"{args.n_rows / max(encode_only, 1e-9):,.0f}",
                         ", ".join(f"{base_rss[n][w]:.0f} / {peak[n][w]:.0f}"
                                   for w in sorted(peak[n]))])
        speedup = times[("encode", 1)] / times[("encode", 2)]
        lines += [
            f"## Encoding {args.n_rows:,} x {D} float32 vectors with PQ(n_subspaces={M}, "
            f"n_bits={N_BITS})", "",
            f"Chunks of {args.chunk_rows:,} rows ({chunk_mib:.0f} MiB of float32), "
            f"{X.numblocks[0]} chunks, generated on the workers (a Gaussian mixture seeded "
            "by the chunk index). Trained with `fit_sample(..., n_samples=25600, "
            "max_chunks=2)`. The codes of both clusters have the same checksum.", ""]
        lines += table(["workers", "rows", "generate + encode (s)", "rows/s",
                        "generate only (s)", "encode rows/s (without generation)",
                        "RSS per worker after warm-up / peak (MiB)"], rows)
        lines += [
            f"Without dask, `pq.transform` on one chunk in the driver: "
            f"{args.chunk_rows / t_numpy:,.0f} rows/s on one thread (including no "
            "generation).", "",
            f"Two workers against one (generate + encode): **{speedup:.2f}x** "
            f"(goal >= {SPEEDUP_GOAL}x: {verdict(speedup >= SPEEDUP_GOAL)}).", "",
            "Peak memory per worker is bounded by the chunk, not by the number of rows: one "
            "task holds a chunk, its codes and the encoder's distance table of a batch "
            "(bounded by scikit-learn's `working_memory`).", ""]

        # -- sharded search ---------------------------------------------------------------
        n_db, n_q = args.search_rows, (100 if args.quick else 1000)
        db = database(n_db, min(100_000, max(n_db // 4, 1)))
        _, client2 = clusters[2]
        Xdb = client2.compute(db).result()
        Q = np.random.default_rng(1).normal(size=(n_q, D)).astype(np.float32) + Xdb[:n_q]
        single = PQNearestNeighbors(FrozenEstimator(pq), n_neighbors=K).fit(Xdb)
        with client2.as_current():
            sharded = DistributedPQNearestNeighbors(FrozenEstimator(pq), n_neighbors=K)
            sharded.fit(db)
            sharded.kneighbors(Q[:10])  # warm-up
            t_single, t_sharded = np.inf, np.inf
            for _ in range(max(args.repeats, 2)):
                t, (d1, i1) = _timed(lambda: single.kneighbors(Q))
                t_single = min(t_single, t)
                t, (d2, i2) = _timed(lambda: sharded.kneighbors(Q))
                t_sharded = min(t_sharded, t)
        same = bool(np.array_equal(i1, i2) and np.array_equal(d1, d2))
        lines += [f"## Search: {n_db:,} database vectors, {n_q:,} queries, k={K}, ADC", "",
                  "`PQNearestNeighbors` in the driver (threads as BLAS allows) against "
                  "`DistributedPQNearestNeighbors` with the codes persisted on the 2 workers "
                  f"({sharded.codes_.numblocks[0]} chunks); the same fitted quantizer.", ""]
        lines += table(["searcher", "time (s)", "queries/s"],
                       [["PQNearestNeighbors (one process)", f"{t_single:.2f}",
                         f"{n_q / t_single:,.0f}"],
                        ["DistributedPQNearestNeighbors (2 workers)", f"{t_sharded:.2f}",
                         f"{n_q / t_sharded:,.0f}"]])
        lines += [f"Identical indices and distances: {verdict(same)}. Sharded / single time: "
                  f"{t_sharded / t_single:.2f}.", ""]
    finally:
        for c, client in clusters.values():
            client.close()
            c.close()
    write(Path(args.out) / "bench_dask.md", lines)
    return 0 if same else 1


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


if __name__ == "__main__":
    sys.exit(main())
