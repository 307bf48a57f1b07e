"""Shared pieces of the product-quantization benchmarks (``bench_pq_*.py``).

faiss and nanopq behind the estimator interface skvq uses (``fit``, ``transform``,
``inverse_transform``), the MNIST split of DeepVQ's Table 1, the synthetic Gaussian mixture,
thread limits, and MSE. faiss and nanopq are optional: their rows read "n/a" without them.
"""

import contextlib
import os
import sys

import numpy as np

# faiss' k-means trains on every vector (no subsample): the issue's "no training subsample".
NO_SUBSAMPLE = 1 << 30


def faiss_module():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def nanopq_module():
    try:
        import nanopq
    except ImportError:
        return None
    return nanopq


def peer_versions():
    """One line naming the peers' versions (or their absence)."""
    parts = []
    for name, module in (("faiss-cpu", faiss_module()), ("nanopq", nanopq_module())):
        parts.append(f"{name} {getattr(module, '__version__', '?')}" if module
                     else f"{name} not installed")
    try:
        import threadpoolctl
        parts.append(f"threadpoolctl {threadpoolctl.__version__}")
    except ImportError:
        parts.append("threadpoolctl not installed")
    return "Peers: " + ", ".join(parts) + "."


@contextlib.contextmanager
def quiet_stderr():
    """Silence C-level stderr (faiss prints k-means warnings from C++)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def threads(n):
    """Limit BLAS/OpenMP (threadpoolctl) and faiss (``omp_set_num_threads``) to ``n``."""
    from threadpoolctl import threadpool_limits

    faiss = faiss_module()
    before = faiss.omp_get_max_threads() if faiss else None
    with threadpool_limits(limits=n):
        if faiss:
            faiss.omp_set_num_threads(n)
        try:
            yield
        finally:
            if faiss:
                faiss.omp_set_num_threads(before)


def mse(X, X_rec):
    """Mean squared error per entry, accumulated in float64."""
    return float(np.mean((np.asarray(X, dtype=np.float64) - X_rec) ** 2))


def mnist_split():
    """DeepVQ's Table 1 data: MNIST test images in [-1, 1], first 8,000 train, last 2,000
    test (float32); None when MNIST is not found."""
    from skvq.datasets import find_mnist, load_mnist

    if find_mnist() is None:
        return None
    X, _ = load_mnist(scale="symmetric")
    X = np.ascontiguousarray(X, dtype=np.float32)
    return X[:8000], X[8000:]


def gaussian_mixture(n_samples, n_features, n_components=64, seed=0):
    """Synthetic float32 data: a mixture of axis-aligned Gaussians with random means and
    per-component, per-feature scales."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 2.0, size=(n_components, n_features))
    scales = rng.uniform(0.3, 1.5, size=(n_components, n_features))
    labels = rng.integers(n_components, size=n_samples)
    X = means[labels] + rng.standard_normal((n_samples, n_features)) * scales[labels]
    return X.astype(np.float32)


class FaissPQ:
    """``faiss.ProductQuantizer`` with ``niter`` k-means iterations on every vector."""

    name = "faiss PQ"

    def __init__(self, n_subspaces, n_bits, niter=20):
        self.n_subspaces, self.n_bits, self.niter = n_subspaces, n_bits, niter

    def fit(self, X):
        faiss = faiss_module()
        pq = faiss.ProductQuantizer(X.shape[1], self.n_subspaces, self.n_bits)
        pq.cp.niter = self.niter
        pq.cp.max_points_per_centroid = NO_SUBSAMPLE
        pq.cp.min_points_per_centroid = 1
        with quiet_stderr():
            pq.train(np.ascontiguousarray(X, dtype=np.float32))
        self.pq_ = pq
        return self

    def transform(self, X):
        return self.pq_.compute_codes(np.ascontiguousarray(X, dtype=np.float32))

    def inverse_transform(self, codes):
        return self.pq_.decode(codes)


class FaissOPQ:
    """``faiss.OPQMatrix`` (random initial rotation, ``niter`` outer iterations) followed by
    an ``IndexPQ`` trained as :class:`FaissPQ`, through ``faiss.IndexPreTransform``."""

    name = "faiss OPQ"

    def __init__(self, n_subspaces, n_bits, niter=20, niter_pq=20):
        self.n_subspaces, self.n_bits = n_subspaces, n_bits
        self.niter, self.niter_pq = niter, niter_pq

    def fit(self, X):
        faiss = faiss_module()
        d = X.shape[1]
        opq = faiss.OPQMatrix(d, self.n_subspaces)
        opq.niter = self.niter
        # The rotation is learned with a PQ of the benchmarked size (faiss' default is 8 bits).
        self._train_pq = faiss.ProductQuantizer(d, self.n_subspaces, self.n_bits)
        opq.pq = self._train_pq
        index = faiss.IndexPQ(d, self.n_subspaces, self.n_bits)
        index.pq.cp.niter = self.niter_pq
        index.pq.cp.max_points_per_centroid = NO_SUBSAMPLE
        index.pq.cp.min_points_per_centroid = 1
        pre = faiss.IndexPreTransform(opq, index)
        with quiet_stderr():
            pre.train(np.ascontiguousarray(X, dtype=np.float32))
        self.opq_, self.index_, self.pre_ = opq, index, pre
        return self

    def transform(self, X):
        return self.index_.pq.compute_codes(
            self.opq_.apply(np.ascontiguousarray(X, dtype=np.float32)))

    def inverse_transform(self, codes):
        return self.opq_.reverse_transform(self.index_.pq.decode(codes))


class NanoPQ:
    """``nanopq.PQ`` fitted with ``iter`` k-means iterations (scipy's ``kmeans2``)."""

    name = "nanopq PQ"

    def __init__(self, n_subspaces, n_bits, iter=20, seed=0):
        self.n_subspaces, self.n_bits, self.iter, self.seed = n_subspaces, n_bits, iter, seed

    def fit(self, X):
        import warnings

        nanopq = nanopq_module()
        self.pq_ = nanopq.PQ(M=self.n_subspaces, Ks=2**self.n_bits, verbose=False)
        with warnings.catch_warnings():  # scipy: "One of the clusters is empty."
            warnings.simplefilter("ignore")
            self.pq_.fit(np.ascontiguousarray(X, dtype=np.float32), iter=self.iter,
                         seed=self.seed)
        return self

    def transform(self, X):
        return self.pq_.encode(np.ascontiguousarray(X, dtype=np.float32))

    def inverse_transform(self, codes):
        return self.pq_.decode(codes)


class NanoOPQ(NanoPQ):
    """``nanopq.OPQ`` (identity initial rotation, its default 10 rotation iterations of
    one-pass PQ, then ``iter`` k-means iterations)."""

    name = "nanopq OPQ"

    def fit(self, X):
        import warnings

        nanopq = nanopq_module()
        self.pq_ = nanopq.OPQ(M=self.n_subspaces, Ks=2**self.n_bits, verbose=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.pq_.fit(np.ascontiguousarray(X, dtype=np.float32), pq_iter=self.iter,
                         seed=self.seed)
        return self
