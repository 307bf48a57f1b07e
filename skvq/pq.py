"""Product quantization (PQ) and optimized product quantization (OPQ)."""

from numbers import Integral, Real

import numpy as np
from numba import njit
from sklearn.base import _fit_context
from threadpoolctl import threadpool_limits
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from ._kmeans import kmeans, nearest_centroid, unit_scale
from ._parallel import effective_n_threads, map_threads
from .base import BaseQuantizer
from .packing import pack_codes, packed_row_bytes, unpack_codes

__all__ = ["OPQ", "PQ"]


def _subspace_bounds(n_features, n_subspaces):
    """Offsets of ``n_subspaces`` contiguous blocks whose sizes differ by at most one."""
    sizes = np.full(n_subspaces, n_features // n_subspaces)
    sizes[: n_features % n_subspaces] += 1
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)


def _generator(random_state):
    """A numpy Generator drawn from ``random_state`` (the parameter itself never changes)."""
    return np.random.default_rng(check_random_state(random_state).randint(2**31 - 1))


_PQ_PARAMS = {
    "n_subspaces": [Interval(Integral, 1, None, closed="left")],
    "n_bits": [Interval(Integral, 1, 16, closed="both")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "n_init": [Interval(Integral, 1, None, closed="left")],
    "init": [StrOptions({"k-means++", "random"})],
    "tol": [Interval(Real, 0, None, closed="left")],
    "max_points_per_centroid": [Interval(Integral, 1, None, closed="left"), None],
    "random_state": ["random_state"],
}


# Subspaces are fitted on several threads when one Lloyd step of a subspace costs at least
# this many multiply-adds: below it, the GIL-bound Python around the small products makes
# threads slower than one (scikit-learn's digits: 17 s -> 5 min for a grid search).
_PARALLEL_FIT_WORK = 1 << 24
# Outputs of at least this many entries are decoded on several threads.
_PARALLEL_DECODE_SIZE = 1 << 18


@njit(nogil=True, cache=True)
def _gather(codebook, codes, bounds, out):
    """``out[i, bounds[m]:bounds[m+1]] = codebook[m, codes[i, m]]`` for every row and subspace."""
    n, n_subspaces = codes.shape
    for i in range(n):
        for m in range(n_subspaces):
            dst = out[i, bounds[m]:bounds[m + 1]]
            src = codebook[m, codes[i, m]]
            for t in range(dst.shape[0]):
                dst[t] = src[t]


class _ProductCodes:
    """Code layout shared by PQ and OPQ: one column per subspace, ``2**n_bits`` values."""

    def _n_code_columns(self):
        return self.n_subspaces

    def _code_cardinality(self):
        return 2**self.n_bits

    def pack(self, codes):
        """Bit-pack codes: ``n_bits`` bits per code, ``code_size_`` bytes per vector.

        Parameters
        ----------
        codes : array-like of shape (n_samples, n_subspaces)
            Integer codes, as returned by ``transform``.

        Returns
        -------
        packed : ndarray of shape (n_samples, code_size), dtype uint8
            Each row's codes as one little-endian bit stream, faiss' layout
            (:func:`skvq.packing.pack_codes`): 4-bit codes two to a byte.
        """
        check_is_fitted(self)
        codes = self._check_codes(codes)
        if codes.dtype.kind not in "ui":
            codes = codes.astype(np.int64)
        return pack_codes(codes, self.n_bits)

    def unpack(self, packed):
        """Codes from their bit-packed form (the inverse of :meth:`pack`).

        Parameters
        ----------
        packed : array-like of shape (n_samples, code_size), dtype uint8
            Packed codes, as returned by :meth:`pack` (or faiss' ``compute_codes``).

        Returns
        -------
        codes : ndarray of shape (n_samples, n_subspaces)
            Codes in the dtype ``transform`` returns.
        """
        check_is_fitted(self)
        return unpack_codes(packed, self.n_bits, self.n_subspaces)

    def _set_code_size(self):
        self.code_size_ = packed_row_bytes(self.n_subspaces, self.n_bits)


class PQ(_ProductCodes, BaseQuantizer):
    """Product quantization (Jégou, Douze and Schmid, 2011).

    The features are split into ``n_subspaces`` contiguous blocks; each block is quantized by
    its own k-means codebook of ``2**n_bits`` centroids, and a vector's code is the tuple of
    its blocks' centroid indices. ``PQ(n_subspaces=1)`` is plain k-means vector quantization.

    Read more in the :ref:`User Guide <pq>`.

    Parameters
    ----------
    n_subspaces : int, default=8
        Number of subspaces ``M`` (code columns). When ``n_features`` is not a multiple of
        ``M`` the blocks differ in size by one feature (the first ``n_features % M`` blocks are
        one longer); faiss and nanopq refuse such splits.
    n_bits : int, default=8
        Bits per subspace code, 1 to 16: ``K = 2**n_bits`` centroids per subspace.
    max_iter : int, default=20
        Lloyd iterations per subspace (faiss' benchmarks use 20).
    n_init : int, default=1
        k-means restarts per subspace; the lowest-inertia run is kept.
    init : {"k-means++", "random"}, default="k-means++"
        k-means seeding: k-means++, or ``K`` training vectors drawn at random (faiss).
    tol : float, default=0.0
        Stop a subspace's k-means when its inertia decreases by less than this fraction in
        one iteration; 0 runs all ``max_iter`` iterations.
    max_points_per_centroid : int or None, default=None
        If set, train each k-means on at most ``max_points_per_centroid * K`` vectors drawn at
        random (faiss' default is 256); None trains on every vector.
    random_state : int, RandomState instance or None, default=None
        Seeds the k-means initialisation and the subsample.

    Attributes
    ----------
    codebook_ : ndarray of shape (n_subspaces, 2**n_bits, max_subspace_dim)
        Centroids of each subspace; subspace ``m`` uses the first
        ``subspace_bounds_[m + 1] - subspace_bounds_[m]`` columns (the rest are 0).
    subspace_bounds_ : ndarray of shape (n_subspaces + 1,)
        Feature offsets of the subspaces.
    bits_per_sample_ : float
        Rate: ``n_subspaces * n_bits`` bits per vector.
    code_size_ : int
        Bytes per vector of the bit-packed codes (:meth:`pack`),
        ``ceil(n_subspaces * n_bits / 8)``: faiss' ``code_size``.
    inertia_ : float
        Sum of squared reconstruction errors of the training vectors (inf or 0 where that
        sum overflows or underflows float64, at scales near 1e300 or 1e-300).
    n_iter_ : int
        Largest number of Lloyd iterations run in a subspace.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    OPQ : PQ after a learned rotation.

    References
    ----------
    H. Jégou, M. Douze and C. Schmid, "Product quantization for nearest neighbor search",
    IEEE TPAMI 33(1), 2011.

    Examples
    --------
    >>> import numpy as np
    >>> from skvq import PQ
    >>> X = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    >>> pq = PQ(n_subspaces=4, n_bits=4, random_state=0).fit(X)
    >>> codes = pq.transform(X)
    >>> codes.shape, codes.dtype, pq.bits_per_sample_
    ((500, 4), dtype('uint8'), 16.0)
    >>> pq.inverse_transform(codes).shape
    (500, 16)
    """

    _parameter_constraints = dict(_PQ_PARAMS)

    def __init__(self, n_subspaces=8, n_bits=8, *, max_iter=20, n_init=1, init="k-means++",
                 tol=0.0, max_points_per_centroid=None, random_state=None):
        self.n_subspaces = n_subspaces
        self.n_bits = n_bits
        self.max_iter = max_iter
        self.n_init = n_init
        self.init = init
        self.tol = tol
        self.max_points_per_centroid = max_points_per_centroid
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn one k-means codebook per subspace.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training vectors; ``n_samples`` must be at least ``2**n_bits``.
        y : None
            Ignored.

        Returns
        -------
        self : object
            Fitted quantizer.
        """
        X, _ = self._validate_fit_data(X)
        self._fit_pq(X, _generator(self.random_state))
        return self

    def _check_sizes(self, X):
        n_samples, n_features = X.shape
        n_centroids = 2**self.n_bits
        if self.n_subspaces > n_features:
            raise ValueError(f"n_subspaces={self.n_subspaces} is larger than "
                             f"n_features={n_features}.")
        if n_samples < n_centroids:
            raise ValueError(f"n_samples={n_samples} should be >= 2**n_bits={n_centroids} "
                             "(one training vector per centroid at least).")
        return n_centroids

    def _fit_pq(self, X, rng, init_codebook=None, max_iter=None, inertia=True):
        """k-means in every subspace of validated ``X``; warm start from ``init_codebook``.

        Returns the codes of ``X`` under the new codebooks (k-means' last assignment, exact)
        when every row of ``X`` was trained on, else None.
        """
        n_centroids = self._check_sizes(X)
        bounds = _subspace_bounds(X.shape[1], self.n_subspaces)
        train = X
        cap = self.max_points_per_centroid
        if cap is not None and X.shape[0] > cap * n_centroids:
            train = X[np.sort(rng.choice(X.shape[0], cap * n_centroids, replace=False))]
        codebook = np.zeros((self.n_subspaces, n_centroids, int(np.diff(bounds).max())),
                            dtype=X.dtype)
        # One generator per subspace, drawn up front: the result does not depend on how
        # many threads fit the subspaces.
        seeds = rng.integers(2**63 - 1, size=self.n_subspaces)
        n_iter_max = self.max_iter if max_iter is None else max_iter
        codes = (np.empty((X.shape[0], self.n_subspaces), dtype=np.intp) if train is X
                 else None)

        def fit_subspace(m):
            lo, hi = bounds[m], bounds[m + 1]
            init = self.init if init_codebook is None else init_codebook[m, :, :hi - lo]
            centers, labels, _, it = kmeans(np.ascontiguousarray(train[:, lo:hi]), n_centroids,
                                            max_iter=n_iter_max, init=init, n_init=self.n_init,
                                            tol=self.tol, rng=np.random.default_rng(seeds[m]))
            codebook[m, :, :hi - lo] = centers
            if codes is not None:
                codes[:, m] = labels
            return it

        work = train.shape[0] * n_centroids * (codebook.shape[2] + 1)  # per Lloyd step
        n_threads = effective_n_threads() if work >= _PARALLEL_FIT_WORK else 1
        if n_threads > 1 and self.n_subspaces > 1:
            # subspaces in parallel, one BLAS thread each (more than one BLAS thread on
            # these small products costs more than it gains)
            with threadpool_limits(1, user_api="blas"):
                n_iters = map_threads(fit_subspace, range(self.n_subspaces), n_threads)
        else:
            n_iters = [fit_subspace(m) for m in range(self.n_subspaces)]
        n_iter = max(n_iters)
        self.codebook_ = codebook
        self.subspace_bounds_ = bounds
        self.n_iter_ = n_iter
        self.bits_per_sample_ = float(self.n_subspaces * self.n_bits)
        self._set_code_size()
        if inertia:
            self.inertia_ = self._mse(X) * X.size
        return codes

    # -- the contract's hooks --------------------------------------------------------------
    def _bytes_per_row(self):
        return 8 * (self.n_features_in_ + 2**self.n_bits) * 2

    def _subspaces(self):
        bounds = self.subspace_bounds_
        for m, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            yield m, lo, hi, self.codebook_[m, :, :hi - lo]

    def _encode(self, X):
        codes = np.empty((X.shape[0], self.n_subspaces), dtype=self._code_dtype())
        for m, lo, hi, centers in self._subspaces():
            codes[:, m] = nearest_centroid(X[:, lo:hi].astype(centers.dtype, copy=False),
                                           centers)
        return codes

    def _decode(self, codes):
        out = np.empty((codes.shape[0], self.n_features_in_), dtype=self.codebook_.dtype)
        self._decode_into(codes, out)
        return out

    def _decode_into(self, codes, out):
        """Write the reconstructions of ``codes`` into ``out``: a compiled gather of each
        subspace's centroid (skipping the padding of an uneven split), no memory beyond
        ``out``; big outputs are split over as many threads as the BLAS setting allows."""
        bounds = self.subspace_bounds_
        if codes.dtype.kind not in "ui":  # whole-number floats or booleans, already checked
            codes = codes.astype(np.intp)
        codes = np.ascontiguousarray(codes)
        n = codes.shape[0]

        def decode_rows(lo, hi):
            _gather(self.codebook_, codes[lo:hi], bounds, out[lo:hi])

        n_threads = effective_n_threads() if out.size >= _PARALLEL_DECODE_SIZE else 1
        if n_threads <= 1:
            decode_rows(0, n)
            return
        edges = np.linspace(0, n, n_threads + 1).astype(np.intp)
        map_threads(lambda j: decode_rows(edges[j], edges[j + 1]), range(n_threads),
                    n_threads)

    def _inverse_transform(self, codes):
        # The gather needs no temporary memory: decode straight into the result.
        out = np.empty((codes.shape[0], self.n_features_in_), dtype=self.codebook_.dtype)
        self._decode_into(codes, out)
        return out

    # -- distances for search over codes ---------------------------------------------------
    def distance_table(self, X):
        """Asymmetric distance tables: squared distances from each subvector to each centroid.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)
            Query vectors (in the input space; OPQ rotates them first).

        Returns
        -------
        table : ndarray of shape (n_queries, n_subspaces, 2**n_bits)
            ``table[i, m, k] = ||x_i[m] - codebook_[m, k]||^2``; the squared distance from
            ``x_i`` to the reconstruction of code ``c`` is ``sum_m table[i, m, c[m]]``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self._distance_table(X)

    def _distance_table(self, X):
        table = np.empty((X.shape[0], self.n_subspaces, 2**self.n_bits),
                         dtype=self.codebook_.dtype)
        for m, lo, hi, centers in self._subspaces():
            sub = X[:, lo:hi].astype(centers.dtype, copy=False)
            d = sub @ centers.T
            d *= -2
            d += np.einsum("ij,ij->i", centers, centers)[None, :]
            d += np.einsum("ij,ij->i", sub, sub)[:, None]
            table[:, m] = np.maximum(d, 0)
        return table

    def symmetric_distance_table(self):
        """Squared distances between the centroids of each subspace (for SDC).

        Returns
        -------
        table : ndarray of shape (n_subspaces, 2**n_bits, 2**n_bits)
            The squared distance between the reconstructions of codes ``a`` and ``b`` is
            ``sum_m table[m, a[m], b[m]]``.
        """
        check_is_fitted(self)
        k = 2**self.n_bits
        table = np.empty((self.n_subspaces, k, k), dtype=self.codebook_.dtype)
        for m, _, _, centers in self._subspaces():
            norms = np.einsum("ij,ij->i", centers, centers)
            table[m] = np.maximum(norms[:, None] + norms[None, :] - 2 * centers @ centers.T, 0)
            np.fill_diagonal(table[m], 0)  # exact zero for identical codes, not rounding
        return table


def _allocate_eigenvalues(eigvals, sizes):
    """Eigenvalue allocation (Ge et al. 2014, Section 4.2): deal directions to subspaces so
    that the products of their eigenvalues are balanced.

    The directions, by decreasing eigenvalue, go one at a time to the non-full subspace
    whose product so far is the smallest (fewest directions, then lowest index, on ties),
    until each subspace holds its number of features. The product is compared through the
    sum of the logs of the eigenvalues divided by the smallest one: every term is then
    non-negative, so each new direction raises its subspace's product whatever the scale of
    the data (with raw logs, eigenvalues below 1 lower it, and one subspace would collect
    every leading direction), and the allocation is invariant to scaling the data.

    Parameters
    ----------
    eigvals : ndarray of shape (n_features,)
        Positive eigenvalues in decreasing order.
    sizes : ndarray of shape (n_subspaces,)
        Number of features of each subspace.

    Returns
    -------
    order : ndarray of shape (n_features,)
        Eigenvalue ranks, subspace by subspace.
    """
    logs = np.log(eigvals / eigvals.min())
    products = np.zeros(len(sizes))
    buckets = [[] for _ in sizes]
    for rank, value in enumerate(logs):
        # products equal up to rounding (1e-9 in the log) count as ties: the allocation of
        # X and of X scaled is the same
        b = min((j for j in range(len(sizes)) if len(buckets[j]) < sizes[j]),
                key=lambda j: (round(products[j], 9), len(buckets[j]), j))
        buckets[b].append(rank)
        products[b] += value
    return np.array([rank for bucket in buckets for rank in bucket], dtype=np.intp)


def _eigenvalue_allocation(X, bounds):
    """Ge et al.'s parametric OPQ: the principal directions of ``X``, dealt to the subspaces
    by :func:`_allocate_eigenvalues` (``X`` at a safe scale: see :func:`unit_scale`)."""
    centered = X.astype(np.float64) - X.mean(axis=0, dtype=np.float64)
    cov = centered.T @ centered / max(X.shape[0] - 1, 1)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    # zero-variance directions (constant pixels, rank-deficient data) get a floor relative
    # to the largest eigenvalue, so that the allocation does not depend on the scale
    floor = max(float(eigvals[0]), np.finfo(np.float64).tiny) * 1e-12
    eigvals = np.maximum(eigvals, floor)
    return eigvecs[:, _allocate_eigenvalues(eigvals, np.diff(bounds))]


class OPQ(_ProductCodes, BaseQuantizer):
    """Optimized product quantization (Ge, He, Ke and Sun, 2013/2014).

    PQ after an orthogonal rotation ``R`` learned by alternating optimisation (the
    non-parametric OPQ): with the codebooks fixed, ``R`` is the orthogonal Procrustes
    solution that best maps the data onto their reconstructions; with ``R`` fixed, the
    codebooks are refined by a few Lloyd iterations.

    Read more in the :ref:`User Guide <pq>`.

    Parameters
    ----------
    n_subspaces : int, default=8
        Number of subspaces ``M``.
    n_bits : int, default=8
        Bits per subspace code, 1 to 16.
    n_iter : int, default=20
        Outer iterations (rotation update, then codebook refinement).
    init : {"eigenvalue_allocation", "identity", "random"}, default="eigenvalue_allocation"
        Initial rotation: Ge et al.'s parametric solution (principal directions dealt to
        the subspaces so that the products of their eigenvalues are balanced, at any scale:
        :func:`_allocate_eigenvalues`), the identity (nanopq; the first PQ is then plain
        PQ), or a random orthogonal matrix (faiss). Measured on faiss' own OPQ test data
        (``OPQRelativeAccuracy``: 10,000 unit-norm vectors of 128 dimensions, M=4, 8 bits;
        ``benchmarks/bench_opq.py``), 1-recall@1/10/100 and MSE: eigenvalue allocation
        0.196/0.636/0.975, 0.00199; random 0.191/0.645/0.964, 0.00211; identity
        0.146/0.571/0.950, 0.00222; faiss' OPQ 0.199/0.625/0.957, 0.00219; PQ
        0.151/0.539/0.944, 0.00230. On 6,144 unit-norm MiniLM embeddings (384-d, M=8):
        eigenvalue allocation 0.432/0.858/0.978, identity 0.390/0.836/0.978, random
        0.390/0.842/0.976, faiss' OPQ (niter=20) 0.374/0.826/0.984, PQ 0.288/0.740/0.956.
    max_iter : int, default=20
        Lloyd iterations of the initial PQ and of the final refinement.
    n_iter_pq : int, default=4
        Lloyd iterations of the codebook refinement in each outer iteration (faiss'
        ``niter_pq``), warm-started from the previous codebooks.
    n_init : int, default=1
        k-means restarts of the initial PQ.
    kmeans_init : {"k-means++", "random"}, default="k-means++"
        Seeding of the initial PQ's k-means.
    max_points_per_centroid : int or None, default=None
        Training subsample per k-means, as in :class:`PQ`.
    random_state : int, RandomState instance or None, default=None
        Seeds the random rotation and the k-means.

    Attributes
    ----------
    rotation_ : ndarray of shape (n_features, n_features)
        Orthogonal matrix; codes are those of ``X @ rotation_``.
    pq_ : PQ
        The product quantizer of the rotated data.
    codebook_ : ndarray of shape (n_subspaces, 2**n_bits, max_subspace_dim)
        ``pq_.codebook_``, centroids in the rotated space.
    subspace_bounds_ : ndarray of shape (n_subspaces + 1,)
        Feature offsets of the subspaces of the rotated space.
    bits_per_sample_ : float
        Rate: ``n_subspaces * n_bits`` bits per vector.
    code_size_ : int
        Bytes per vector of the bit-packed codes (:meth:`pack`), faiss' ``code_size``.
    inertia_ : float
        Sum of squared reconstruction errors of the training vectors.
    n_iter_ : int
        Outer iterations run.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    PQ : Product quantization without rotation.

    References
    ----------
    T. Ge, K. He, Q. Ke and J. Sun, "Optimized product quantization", IEEE TPAMI 36(4),
    2014 (CVPR 2013).

    Examples
    --------
    >>> import numpy as np
    >>> from skvq import OPQ
    >>> X = np.random.default_rng(0).normal(size=(500, 16)) @ np.diag(np.arange(1, 17.0))
    >>> opq = OPQ(n_subspaces=4, n_bits=4, n_iter=5, random_state=0).fit(X)
    >>> np.allclose(opq.rotation_ @ opq.rotation_.T, np.eye(16))
    True
    """

    _parameter_constraints = {
        **{k: v for k, v in _PQ_PARAMS.items() if k not in ("init", "tol")},
        "n_iter": [Interval(Integral, 0, None, closed="left")],
        "init": [StrOptions({"eigenvalue_allocation", "identity", "random"})],
        "n_iter_pq": [Interval(Integral, 1, None, closed="left")],
        "kmeans_init": [StrOptions({"k-means++", "random"})],
    }

    def __init__(self, n_subspaces=8, n_bits=8, *, n_iter=20, init="eigenvalue_allocation",
                 max_iter=20, n_iter_pq=4, n_init=1, kmeans_init="k-means++",
                 max_points_per_centroid=None, random_state=None):
        self.n_subspaces = n_subspaces
        self.n_bits = n_bits
        self.n_iter = n_iter
        self.init = init
        self.max_iter = max_iter
        self.n_iter_pq = n_iter_pq
        self.n_init = n_init
        self.kmeans_init = kmeans_init
        self.max_points_per_centroid = max_points_per_centroid
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the rotation and the codebooks.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training vectors; ``n_samples`` must be at least ``2**n_bits``.
        y : None
            Ignored.

        Returns
        -------
        self : object
            Fitted quantizer.
        """
        X, _ = self._validate_fit_data(X)
        rng = _generator(self.random_state)
        pq = PQ(self.n_subspaces, self.n_bits, max_iter=self.max_iter, n_init=self.n_init,
                init=self.kmeans_init, max_points_per_centroid=self.max_points_per_centroid)
        pq.n_features_in_ = X.shape[1]
        pq._check_sizes(X)
        # The rotation does not depend on the scale: learn it on X divided by a power of two
        # (exact) when X is far from unit scale, so that the products and the SVD neither
        # underflow nor overflow; the codebooks are scaled back at the end.
        scale = unit_scale(X)
        X_unit = X * (1.0 / scale) if scale != 1.0 else X
        d = X.shape[1]
        if self.init == "identity":
            R = np.eye(d)
        elif self.init == "random":
            R, _ = np.linalg.qr(rng.standard_normal((d, d)))
        else:
            R = _eigenvalue_allocation(X_unit, _subspace_bounds(d, self.n_subspaces))
        R = R.astype(X.dtype)
        Z = X_unit @ R
        codes = pq._fit_pq(Z, rng, inertia=False)
        for _ in range(self.n_iter):
            if codes is None:  # trained on a subsample: code every row
                codes = pq._encode(Z)
            Y = pq._decode(codes)
            # Orthogonal Procrustes: argmin_R ||X R - Y|| over orthogonal R; the product in
            # the data's dtype (one BLAS call), the small SVD in float64.
            U, _, Vt = np.linalg.svd((X_unit.T @ Y).astype(np.float64))
            R = (U @ Vt).astype(X.dtype)
            Z = X_unit @ R
            codes = pq._fit_pq(Z, rng, init_codebook=pq.codebook_, max_iter=self.n_iter_pq,
                               inertia=False)
        if self.n_iter:
            pq._fit_pq(Z, rng, init_codebook=pq.codebook_, inertia=False)
        if scale != 1.0:
            pq.codebook_ = pq.codebook_ * scale
        self.rotation_ = R
        self.pq_ = pq
        self.codebook_ = pq.codebook_
        self.subspace_bounds_ = pq.subspace_bounds_
        self.bits_per_sample_ = pq.bits_per_sample_
        self._set_code_size()
        self.n_iter_ = self.n_iter
        self.inertia_ = self._mse(X) * X.size
        pq.inertia_ = self.inertia_
        return self

    def _bytes_per_row(self):
        return 8 * (2 * self.n_features_in_ + 2**self.n_bits) * 2

    def _encode(self, X):
        return self.pq_._encode(X.astype(self.rotation_.dtype, copy=False) @ self.rotation_)

    def _decode(self, codes):
        return self.pq_._decode(codes) @ self.rotation_.T

    def distance_table(self, X):
        """Asymmetric distance tables of the rotated queries (see :meth:`PQ.distance_table`).

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features)
            Query vectors in the input space.

        Returns
        -------
        table : ndarray of shape (n_queries, n_subspaces, 2**n_bits)
            Squared distances; the rotation is orthogonal, so distances in the rotated space
            are distances in the input space.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self.pq_._distance_table(X.astype(self.rotation_.dtype, copy=False)
                                        @ self.rotation_)

    def symmetric_distance_table(self):
        """Squared distances between centroids, per subspace (see :class:`PQ`)."""
        check_is_fitted(self)
        return self.pq_.symmetric_distance_table()
