"""PQ speed and quality against faiss and nanopq: fit, encode, decode, MSE; OPQ's train MSE.

M=8 subspaces of 256 centroids, 20 k-means iterations on every training vector, on MNIST
(8,000 x 784, pixels in [-1, 1]) and on a synthetic float32 Gaussian mixture of 100,000 x
128, at 1 and at 2 threads (``threadpoolctl.threadpool_limits`` for BLAS and OpenMP, and
``faiss.omp_set_num_threads``). Encode and decode run on the training vectors. Then OPQ's
training MSE on MNIST: skvq, nanopq, faiss, and skvq's PQ.

``--quick`` uses 5,000 x 64 synthetic vectors and skips MNIST (a smoke test).
"""

import os
import sys
import time

import numpy as np

import _pq_peers as peers
from _common import best_time, header, parse_args, table, verdict, write
from skvq import OPQ, PQ

M, N_BITS, N_ITER = 8, 8, 20
THREADS = [1, 2]
MSE_TOL = 0.01     # same MSE as faiss within 1%
FIT_RATIO = 1.5    # fit time at most 1.5x faiss
DECODE_RATIO = 0.5  # decode throughput at least half of faiss'
SKVQ_RANDOM = 'skvq PQ init="random"'
FAST_REPEATS = 3


def libraries():
    out = {"skvq PQ": lambda: PQ(M, N_BITS, max_iter=N_ITER, random_state=0),
           # faiss' seeding, to separate the cost of k-means++ from that of Lloyd's steps
           SKVQ_RANDOM: lambda: PQ(M, N_BITS, max_iter=N_ITER, init="random",
                                   random_state=0)}
    if peers.faiss_module():
        out["faiss PQ"] = lambda: peers.FaissPQ(M, N_BITS, niter=N_ITER)
    if peers.nanopq_module():
        out["nanopq PQ"] = lambda: peers.NanoPQ(M, N_BITS, iter=N_ITER, seed=0)
    return out


def measure(make, X, repeats):
    """Best-of-``repeats`` fit time, best-of-``FAST_REPEATS * repeats`` encode and decode
    times (they take milliseconds and vary more), and the training MSE."""
    fit_s, model, _ = best_time(lambda: make().fit(X), repeats)
    encode_s, codes, _ = best_time(lambda: model.transform(X), FAST_REPEATS * repeats)
    decode_s, X_rec, _ = best_time(lambda: model.inverse_transform(codes),
                                   FAST_REPEATS * repeats)
    return {"fit": fit_s, "encode": X.shape[0] / encode_s, "decode": X.shape[0] / decode_s,
            "mse": peers.mse(X, X_rec)}


def main():
    args = parse_args(__doc__)
    repeats = 1 if args.quick else 3
    data = {}
    if args.quick:
        data["synthetic 5,000 x 64"] = peers.gaussian_mixture(5_000, 64)
        print("--quick: MNIST skipped.")
    else:
        mnist = peers.mnist_split()
        if mnist is None:
            print("MNIST not found (set SKVQ_MNIST or provide ../shared/data/mnist); "
                  "skipping its rows.")
        else:
            data["MNIST 8,000 x 784"] = mnist[0]
        data["synthetic 100,000 x 128"] = peers.gaussian_mixture(100_000, 128)
    libs = libraries()
    started = time.perf_counter()
    small = peers.gaussian_mixture(1_000, 64)
    for make in libs.values():  # warm-up: thread pools, BLAS, imports
        make().fit(small)

    results = {}  # (data, threads, lib) -> dict
    for data_name, X in data.items():
        for n_threads in THREADS:
            with peers.threads(n_threads):
                for name, make in libs.items():
                    results[data_name, n_threads, name] = r = measure(make, X, repeats)
                    print(f"{data_name} {n_threads} thread(s) {name}: fit {r['fit']:.2f} s, "
                          f"encode {r['encode']:.3g}/s, decode {r['decode']:.3g}/s, "
                          f"MSE {r['mse']:.5g}", flush=True)

    # OPQ's training MSE.
    opq_data_name = "MNIST 8,000 x 784" if "MNIST 8,000 x 784" in data else next(iter(data))
    X = data[opq_data_name]
    opq = {"skvq OPQ (default init)": lambda: OPQ(M, N_BITS, max_iter=N_ITER, random_state=0),
           "skvq PQ": libs["skvq PQ"]}
    if peers.nanopq_module():
        opq["nanopq OPQ"] = lambda: peers.NanoOPQ(M, N_BITS, iter=N_ITER, seed=0)
    if peers.faiss_module():
        opq["faiss OPQ"] = lambda: peers.FaissOPQ(M, N_BITS, niter=20, niter_pq=N_ITER)
    opq_results = {}
    for name, make in opq.items():
        start = time.perf_counter()
        model = make().fit(X)
        seconds = time.perf_counter() - start
        opq_results[name] = (peers.mse(X, model.inverse_transform(model.transform(X))),
                             seconds)
        print(f"{opq_data_name} {name}: train MSE {opq_results[name][0]:.5f}, "
              f"fit {seconds:.1f} s", flush=True)
    total = time.perf_counter() - started

    # -- report ----------------------------------------------------------------------------
    lines = header("PQ speed against faiss and nanopq", args, repeats,
                   note=f"after a warm-up fit of each library; encode and decode: best of "
                        f"{FAST_REPEATS * repeats}")
    lines += [peers.peer_versions(), "",
              f"M={M}, K={2**N_BITS} centroids, {N_ITER} k-means iterations on every training "
              f"vector (faiss: `cp.niter={N_ITER}`, `max_points_per_centroid` "
              f"{peers.NO_SUBSAMPLE}; nanopq: `fit(iter={N_ITER})`), float32 data. skvq seeds "
              "k-means with k-means++, faiss and nanopq with random training vectors. "
              f"The goals are computed for skvq's default (`init=\"k-means++\"`); the "
              f"`{SKVQ_RANDOM}` row seeds k-means as faiss does, for information. "
              "Encode and decode run on the training vectors; throughput in vectors per "
              "second. Threads limited with `threadpoolctl.threadpool_limits` and "
              f"`faiss.omp_set_num_threads`. Total run time {total:.0f} s.", ""]
    has_faiss = peers.faiss_module() is not None
    goals = []
    for data_name in data:
        lines += [f"## {data_name}", ""]
        rows = []
        for n_threads in THREADS:
            ref = results.get((data_name, n_threads, "faiss PQ"))
            for name in libs:
                r = results[data_name, n_threads, name]
                ratio = (lambda key: f"{r[key] / ref[key]:.2f}") if ref else (lambda key: "-")
                rows.append([n_threads, name, f"{r['fit']:.2f}", ratio("fit"),
                             f"{r['encode']:,.0f}", ratio("encode"), f"{r['decode']:,.0f}",
                             ratio("decode"), f"{r['mse']:.5f}", ratio("mse")])
            if ref:
                r = results[data_name, n_threads, "skvq PQ"]
                where = f"{data_name}, {n_threads} thread{'s' if n_threads > 1 else ''}"
                goals.append((f"MSE within 1% of faiss ({where})",
                              f"{r['mse'] / ref['mse']:.3f}", r["mse"] <= (1 + MSE_TOL) * ref["mse"]))
                goals.append((f"fit time <= 1.5x faiss ({where})",
                              f"{r['fit'] / ref['fit']:.2f}x", r["fit"] <= FIT_RATIO * ref["fit"]))
                if n_threads == 1:
                    goals.append((f"encode >= faiss at 1 thread ({data_name})",
                                  f"{r['encode'] / ref['encode']:.2f}x",
                                  r["encode"] >= ref["encode"]))
                goals.append((f"decode >= half of faiss ({where})",
                              f"{r['decode'] / ref['decode']:.2f}x",
                              r["decode"] >= DECODE_RATIO * ref["decode"]))
        lines += table(["threads", "library", "fit (s)", "fit / faiss", "encode (vec/s)",
                        "encode / faiss", "decode (vec/s)", "decode / faiss", "train MSE",
                        "MSE / faiss"], rows)

    lines += [f"## OPQ training MSE ({opq_data_name}, M={M}, K={2**N_BITS})", "",
              f"One fit each, no thread limit ({os.cpu_count()} CPUs). skvq `OPQ(n_iter=20)` with its default `init`; nanopq "
              "`OPQ.fit(pq_iter=20)` (identity start, 10 rotation updates); faiss "
              "`OPQMatrix(niter=20)` (random start) trained with an 8-bit PQ, then a "
              "20-iteration PQ.", ""]
    lines += table(["estimator", "train MSE", "fit (s)"],
                   [[name, f"{m:.5f}", f"{s:.2f}"] for name, (m, s) in opq_results.items()])
    skvq_opq = opq_results["skvq OPQ (default init)"][0]
    if "nanopq OPQ" in opq_results:
        goals.append((f"OPQ train MSE <= nanopq's ({opq_data_name})",
                      f"{skvq_opq:.5f} vs {opq_results['nanopq OPQ'][0]:.5f}",
                      skvq_opq <= opq_results["nanopq OPQ"][0]))
    goals.append((f"OPQ train MSE < PQ's ({opq_data_name})",
                  f"{skvq_opq:.5f} vs {opq_results['skvq PQ'][0]:.5f}",
                  skvq_opq < opq_results["skvq PQ"][0]))

    lines += ["## Goals", ""]
    if not has_faiss:
        lines += ["faiss is not installed: the goals relative to faiss are not evaluated.", ""]
    lines += table(["goal", "measured", "verdict"],
                   [[g, m, verdict(ok)] for g, m, ok in goals])
    write(f"{args.out}/bench_pq_speed.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
