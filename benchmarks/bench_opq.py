"""OPQ: recall, MSE and fit time of skvq's OPQ against skvq's PQ, faiss' OPQ and nanopq's OPQ.

Datasets (each: training vectors that are also the database, and held-out queries):

* ``faiss-opq-test``: the data of faiss' own OPQ test (``tests/test_index_accuracy.py``,
  ``OPQRelativeAccuracy``, from ``Randu10kUnbalanced``): 10,000 training, 10,000 database and
  1,000 query vectors of 128 dimensions, Gaussian, scaled per dimension by ``0.95**i`` in a
  random order, L2-normalised; M=4 subspaces of 8 bits, faiss' OPQ with ``niter=10``,
  ``niter_pq=4`` as in that test. The database is distinct from the training set here.
* ``minilm``: 6,144 unit-norm all-MiniLM sentence embeddings (384-d) of
  ``../shared/data/embeddings/debian_minilm.npy``: the first 5,644 train and form the
  database, the last 500 are the queries; 8, 16 and 32 bytes (M x 8 bits).
* ``mnist``: 8,000 MNIST test images train and form the database, 2,000 are the queries
  (pixels in [-1, 1]); 8, 16, 32 bytes (784 features split unevenly: skvq only; faiss and
  nanopq need M to divide 784, so they run at M=8, 16 and 28 instead of 32).

1-recall@R: the fraction of queries whose exact nearest database vector (float64 brute
force) is among the R database vectors nearest to the query by the asymmetric distance (the
query against the reconstructions), R = 1, 10, 100. MSE: mean squared reconstruction error
per entry of the database.

Fit times: skvq ``OPQ(n_iter=N, n_iter_pq=4, max_iter=20)`` against faiss
``OPQMatrix(niter=N, niter_pq=4, niter_pq_0=20)`` followed by an ``IndexPQ`` trained with
20 k-means iterations (the same number of Lloyd steps), alternately, one thread each, best of
2 repeats, on faiss' test data and on the embeddings at M=16. ``--note TEXT`` records the run's
conditions in the report.

``--quick``: a smaller copy of faiss' test data only (1,000 x 16, M=4, 4 bits), one repeat:
no shared data needed. Every fit runs on one thread.
"""

import sys
import time
import warnings
from pathlib import Path

import numpy as np

import _pq_peers as peers
from _common import ROOT, header, parse_args, table, verdict, write
from skvq import OPQ, PQ

EMBEDDINGS = ROOT.parent / "shared" / "data" / "embeddings" / "debian_minilm.npy"
RANKS = (1, 10, 100)
INITS = ("identity", "eigenvalue_allocation", "random")


def faiss_opq_test_data(d=128, nt=10_000, nb=10_000, nq=1_000):
    """faiss' Randu10kUnbalanced (tests/common_faiss_tests.py), with numpy's generator in
    place of faiss.randn when faiss is missing."""
    faiss = peers.faiss_module()

    def unitary(n, seed):
        if faiss is not None:
            x = faiss.randn(n * d, seed).reshape(n, d)
        else:
            x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    weights = 0.95 ** np.arange(d)
    weights = weights[np.random.RandomState(123).permutation(d)]
    out = []
    for n, seed in ((nt, 2), (nb, 1), (nq, 3)):
        x = unitary(n, seed) * weights
        out.append(np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True),
                                        dtype=np.float32))
    return out  # train, database, queries


def exact_nn(database, queries):
    db = database.astype(np.float64)
    q = queries.astype(np.float64)
    d = np.einsum("ij,ij->i", db, db)[None] - 2 * q @ db.T
    return d.argmin(1)


def recalls(database_rec, queries, truth):
    rec = database_rec.astype(np.float64)
    q = queries.astype(np.float64)
    d = np.einsum("ij,ij->i", rec, rec)[None] - 2 * q @ rec.T
    order = np.argsort(d, axis=1, kind="stable")[:, :max(RANKS)]
    return [float(np.mean(np.any(order[:, :r] == truth[:, None], axis=1))) for r in RANKS]


class SkvqModel:
    def __init__(self, name, estimator):
        self.name, self.estimator = name, estimator

    def fit(self, X):
        self.estimator.fit(X)
        return self

    def reconstruct(self, X):
        return self.estimator.inverse_transform(self.estimator.transform(X))


class PeerModel:
    def __init__(self, peer):
        self.peer, self.name = peer, peer.name

    def fit(self, X):
        self.peer.fit(X)
        return self

    def reconstruct(self, X):
        return self.peer.inverse_transform(self.peer.transform(X))


class FaissOPQ:
    """faiss OPQMatrix (random start) with ``niter``/``niter_pq``/``niter_pq_0``, then an
    IndexPQ trained with ``niter_final`` k-means iterations on every vector."""

    def __init__(self, n_subspaces, n_bits, niter, niter_pq=4, niter_pq_0=40, niter_final=25):
        self.n_subspaces, self.n_bits = n_subspaces, n_bits
        self.niter, self.niter_pq, self.niter_pq_0 = niter, niter_pq, niter_pq_0
        self.niter_final = niter_final
        self.name = f"faiss OPQ (niter={niter})"

    def fit(self, X):
        faiss = peers.faiss_module()
        d = X.shape[1]
        self.opq = faiss.OPQMatrix(d, self.n_subspaces)
        self.opq.niter, self.opq.niter_pq = self.niter, self.niter_pq
        self.opq.niter_pq_0 = self.niter_pq_0
        self._pq = faiss.ProductQuantizer(d, self.n_subspaces, self.n_bits)
        self.opq.pq = self._pq
        self.index = faiss.IndexPQ(d, self.n_subspaces, self.n_bits)
        self.index.pq.cp.niter = self.niter_final
        self.index.pq.cp.max_points_per_centroid = peers.NO_SUBSAMPLE
        self.pre = faiss.IndexPreTransform(self.opq, self.index)
        with peers.quiet_stderr():
            self.pre.train(np.ascontiguousarray(X, dtype=np.float32))
        return self

    def reconstruct(self, X):
        X = np.ascontiguousarray(X, dtype=np.float32)
        pq = self.index.pq
        return self.opq.reverse_transform(pq.decode(pq.compute_codes(self.opq.apply(X))))


def evaluate(models, train, database, queries, truth):
    rows = {}
    for model in models:
        start = time.perf_counter()
        with warnings.catch_warnings(), peers.threads(1):
            warnings.simplefilter("ignore")
            model.fit(train)
        seconds = time.perf_counter() - start
        rec = model.reconstruct(database)
        mse = peers.mse(database, rec)
        rows[model.name] = recalls(rec, queries, truth) + [mse, seconds]
        print(f"  {model.name}: recall {rows[model.name][:3]}, mse {mse:.4g}, "
              f"{seconds:.1f} s", flush=True)
    return rows


def models_for(n_subspaces, n_bits, n_iter, faiss_niter, even, seed=0):
    models = [SkvqModel("skvq PQ", PQ(n_subspaces, n_bits, random_state=seed))]
    models += [SkvqModel(f"skvq OPQ init={init}", OPQ(n_subspaces, n_bits, n_iter=n_iter,
                                                      init=init, random_state=seed))
               for init in INITS]
    if even and peers.faiss_module():
        models.append(FaissOPQ(n_subspaces, n_bits, faiss_niter))
    if even and peers.nanopq_module():
        models.append(PeerModel(peers.NanoOPQ(n_subspaces, n_bits)))
    return models


def fit_time_ratios(X, n_subspaces, n_bits, n_iter, repeats):
    """skvq OPQ fit time / faiss OPQMatrix + IndexPQ, same iterations, one thread,
    alternately, best of ``repeats``."""
    if not peers.faiss_module():
        return None
    skvq_t, faiss_t = [], []
    with peers.threads(1):
        for _ in range(repeats):
            start = time.perf_counter()
            OPQ(n_subspaces, n_bits, n_iter=n_iter, n_iter_pq=4, max_iter=20,
                random_state=0).fit(X)
            skvq_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            FaissOPQ(n_subspaces, n_bits, n_iter, niter_pq=4, niter_pq_0=20,
                     niter_final=20).fit(X)
            faiss_t.append(time.perf_counter() - start)
    return min(skvq_t), min(faiss_t)


def main():
    args = parse_args(__doc__)
    repeats = 1 if args.quick else 2
    started = time.perf_counter()
    datasets = []  # (name, train, database, queries, [(M, bits, even)], n_iter, faiss niter)
    if args.quick:
        train, database, queries = faiss_opq_test_data(d=16, nt=1000, nb=1000, nq=100)
        datasets.append(("faiss-opq-test (quick: 1,000 x 16)", train, database, queries,
                         [(4, 4, True)], 3, 3))
    else:
        train, database, queries = faiss_opq_test_data()
        datasets.append(("faiss-opq-test", train, database, queries, [(4, 8, True)], 20, 10))
        if EMBEDDINGS.exists():
            E = np.ascontiguousarray(np.load(EMBEDDINGS, mmap_mode="r")[:6144],
                                     dtype=np.float32)
            datasets.append(("minilm", E[:5644], E[:5644], E[5644:],
                             [(8, 8, True), (16, 8, True), (32, 8, True)], 20, 20))
        else:
            print(f"{EMBEDDINGS} not found: skipping the embeddings")
        mnist = peers.mnist_split()
        if mnist is not None:
            tr, te = mnist
            datasets.append(("mnist", tr, tr, te, [(8, 8, True), (16, 8, True),
                                                    (32, 8, False)], 20, 20))
        else:
            print("MNIST not found: skipping it")

    results = {}
    for name, train, database, queries, configs, n_iter, faiss_niter in datasets:
        truth = exact_nn(database, queries)
        for n_subspaces, n_bits, even in configs:
            print(f"{name}: M={n_subspaces}, {n_bits} bits", flush=True)
            results[name, n_subspaces, n_bits] = evaluate(
                models_for(n_subspaces, n_bits, n_iter, faiss_niter, even),
                train, database, queries, truth)
    timing = {}
    for name, train, database, queries, configs, n_iter, faiss_niter in datasets:
        if name.startswith("mnist"):
            continue
        for n_subspaces, n_bits, even in configs:
            if name == "minilm" and n_subspaces != 16:
                continue  # one size of the embeddings is timed (the run stays ~15 min)
            t = fit_time_ratios(train, n_subspaces, n_bits, n_iter, repeats)
            if t is not None:
                timing[name, n_subspaces, n_bits] = t
                print(f"time {name} M={n_subspaces}: skvq {t[0]:.2f} s, faiss {t[1]:.2f} s")
    total = time.perf_counter() - started

    lines = header("OPQ: recall, MSE and fit time against PQ, faiss and nanopq", args, repeats,
                   note="one thread each, skvq and faiss alternately")
    lines += [peers.peer_versions(), "",
              f"Run conditions: {NOTE}" if NOTE else "Run on an otherwise idle machine; "
              "the ratios are measured side by side in one run.", "",
              f"Total run time {total:.0f} s. See the module docstring of "
              "`benchmarks/bench_opq.py` for the datasets and the protocol.", ""]
    goals = []
    for (name, n_subspaces, n_bits), rows in results.items():
        lines += [f"## {name}, M={n_subspaces}, {n_bits} bits "
                  f"({n_subspaces * n_bits // 8} bytes)", ""]
        lines += table(["model"] + [f"1-recall@{r}" for r in RANKS]
                       + ["MSE", "fit s (1 thread)"],
                       [[k] + [f"{v:.3f}" for v in row[:3]] + [f"{row[3]:.4g}",
                                                               f"{row[4]:.2f}"]
                        for k, row in rows.items()])
        default = rows.get("skvq OPQ init=eigenvalue_allocation")
        faiss_row = next((row for k, row in rows.items() if k.startswith("faiss OPQ")), None)
        if default and faiss_row and not name.startswith("mnist"):
            goals.append((f"{name} M={n_subspaces}: default OPQ recall@10 >= faiss OPQ",
                          f"{default[1]:.3f} vs {faiss_row[1]:.3f}",
                          default[1] >= faiss_row[1]))
        if default:
            pq = rows["skvq PQ"]
            goals.append((f"{name} M={n_subspaces}: default OPQ recall@10 >= skvq PQ",
                          f"{default[1]:.3f} vs {pq[1]:.3f}", default[1] >= pq[1]))
    if timing:
        lines += ["## Fit time, one thread", ""]
        lines += table(["data", "M", "skvq OPQ s", "faiss OPQ+PQ s", "skvq / faiss"],
                       [[k[0], k[1], f"{a:.2f}", f"{b:.2f}", f"{a / b:.2f}"]
                        for k, (a, b) in timing.items()])
        for k, (a, b) in timing.items():
            goals.append((f"{k[0]} M={k[1]}: OPQ fit time <= 2x faiss", f"{a / b:.2f}x",
                          a <= 2 * b))
    lines += ["## Goals", ""]
    lines += table(["goal", "measured", "verdict"], [[g, m, verdict(ok)] for g, m, ok in goals])
    write(f"{args.out}/bench_opq.md", lines)
    return 0


if __name__ == "__main__":
    NOTE = None
    if "--note" in sys.argv:  # a remark on the run's conditions, for the report
        i = sys.argv.index("--note")
        NOTE = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    sys.exit(main())
