"""Non-exhaustive search over product-quantization codes: inverted lists (IVF-PQ)."""

from contextlib import nullcontext
from numbers import Integral

import numpy as np
from numba import njit
from sklearn.base import _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_random_state, validate_data
from threadpoolctl import threadpool_limits

from ._kmeans import kmeans, nearest_centroid
from ._parallel import effective_n_threads, map_threads
from .neighbors import (
    METRICS,
    _check_ids,
    _check_queries,
    _CodeSearcher,
    _inner_product_tables,
    _n_bits,
    _to_distances,
    _unpack_rows,
)
from .packing import pack_codes, packed_row_bytes
from .pq import PQ

__all__ = ["IVFPQNearestNeighbors"]

# Queries per task of the search at most: enough to amortise the Python around the compiled
# scan (tables, probing), small enough for the tables of a task to stay in memory.
_QUERIES_PER_TASK = 256


class IVFPQNearestNeighbors(_CodeSearcher):
    """Approximate nearest neighbours over inverted lists of product-quantization codes.

    Jégou et al.'s IVFADC (faiss' ``IndexIVFPQ`` with ``by_residual=True``): a coarse
    k-means of ``n_lists`` centroids splits the database into inverted lists (each vector in
    the list of its nearest centroid in the metric: Euclidean distance, or the largest inner
    product as in faiss' inner-product indexes); the residual of each vector
    from its list's centroid is encoded by a product quantizer; a query scans only the
    ``n_probe`` lists whose centroids are nearest to it, with ADC look-up tables, and may
    re-rank a shortlist against stored full vectors.

    Read more in the :ref:`User Guide <search-codes>`.

    Parameters
    ----------
    quantizer : estimator or None, default=None
        Product quantizer of the residuals, :class:`~skvq.PQ` or :class:`~skvq.OPQ`; cloned
        and fitted on the residuals of the database in ``fit`` (a
        :class:`sklearn.frozen.FrozenEstimator` is used as it is). None means ``PQ()``.
    n_lists : int, default=100
        Number of inverted lists, the coarse centroids (faiss' ``nlist``; ``k'`` in the
        paper).
    n_probe : int, default=1
        Lists scanned per query (faiss' ``nprobe``; ``w`` in the paper); at most
        ``n_lists`` are scanned. ``n_probe=n_lists`` is an exhaustive ADC search over the
        residual codes.
    n_neighbors : int, default=5
        Number of neighbours ``kneighbors`` returns by default.
    metric : {"euclidean", "inner_product", "cosine"}, default="euclidean"
        As in :class:`~skvq.neighbors.PQNearestNeighbors`: Euclidean distances (ascending),
        inner products (descending, faiss' ``METRIC_INNER_PRODUCT``) or cosine distances
        ``1 - cos`` (ascending; database and queries are normalised). Vectors are assigned
        to, and queries probe, the lists of the nearest centroids in that metric (largest
        ``<x, c>`` for the inner product and the cosine, as faiss' ``IndexFlatIP`` coarse
        quantizer); the coarse k-means itself is Euclidean.
    rerank : int or False, default=False
        False: the distances are the ADC estimates. An int ``r``: the full vectors are kept
        (``vectors_``) and the ``max(r, n_neighbors)`` best candidates of the ADC scan are
        re-ranked by their exact distances, which are then returned. ``True`` is refused
        (say how many).
    max_iter : int, default=20
        Lloyd iterations of the coarse k-means.
    max_points_per_list : int or None, default=256
        The coarse k-means trains on at most ``max_points_per_list * n_lists`` database
        vectors drawn at random (faiss' ``max_points_per_centroid``); None: on all of them.
        The residual quantizer has its own ``max_points_per_centroid``.
    random_state : int, RandomState instance or None, default=None
        Seeds the coarse k-means and its training sample.

    Attributes
    ----------
    quantizer_ : estimator
        The product quantizer fitted on the residuals.
    centroids_ : ndarray of shape (n_lists, n_features)
        Coarse centroids.
    list_offsets_ : ndarray of shape (n_lists + 1,)
        List ``l`` holds the entries ``list_offsets_[l]:list_offsets_[l + 1]`` of
        ``packed_codes_``, ``ids_`` and ``vectors_``.
    packed_codes_ : ndarray of shape (n_samples_fit, code_size), dtype uint8
        Codes of the residuals, list after list, bit-packed by
        :func:`skvq.packing.pack_codes` (faiss' layout; one byte per code for 8 bits).
    code_size_ : int
        Bytes of codes per vector, ``ceil(n_subspaces * n_bits / 8)`` (the ids take 8 more,
        as in faiss).
    codes_ : ndarray of shape (n_samples_fit, n_subspaces)
        The codes unpacked (a property, computed on access).
    ids_ : ndarray of shape (n_samples_fit,), dtype int64
        Id of each entry (what ``kneighbors`` returns), list after list.
    vectors_ : ndarray of shape (n_samples_fit, n_features) or None
        The database vectors (normalised for ``"cosine"``), list after list, when ``rerank``
        was set at ``fit``; None otherwise.
    n_samples_fit_ : int
        Number of database vectors.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    skvq.neighbors.PQNearestNeighbors : Exhaustive search over PQ codes.
    skvq.interop.to_faiss : Export to a faiss ``IndexIVFPQ``.

    Notes
    -----
    With ``metric="euclidean"`` the estimate for a vector of list ``l`` with residual code
    ``c`` is ``||x - y_l - q(r)||^2 = ||x - y_l||^2 + sum_m (||c_m||^2 + 2 <y_l[m], c_m>)
    - 2 sum_m <x[m], c_m>``: the middle term depends on the list and the code only and is
    precomputed at ``fit`` for every list, subspace and centroid (faiss'
    ``precomputed_table``, ``n_lists * n_subspaces * 2**n_bits`` floats: 12.5 MiB for 1,024
    lists of 12 subspaces of 256 centroids in float32), so that a query's table for a list
    is one addition per entry. For the inner product, ``<x, y_l + q(r)> = <x, y_l> +
    sum_m <x[m], c_m>`` needs one table per query.

    Each query keeps its best candidates in a heap while the probed lists are scanned
    (compiled, without the GIL; queries are split over as many threads as the BLAS setting
    allows). Equal distances are ordered by storage position (list, then insertion order).
    When the probed lists hold fewer than ``n_neighbors`` vectors, the missing neighbours
    are ``-1`` with an infinite distance (``-inf`` inner product), as in faiss.

    ``partial_fit`` adds vectors to the lists of their nearest centroids without changing
    the centroids or the codebooks (faiss' ``add``); the lists are stored as contiguous
    arrays and rebuilt by one stable sort on each call.

    References
    ----------
    H. Jégou, M. Douze and C. Schmid, "Product quantization for nearest neighbor search",
    IEEE TPAMI 33(1), 2011, Section IV (IVFADC, Fig. 5).

    Examples
    --------
    >>> import numpy as np
    >>> from skvq import PQ
    >>> from skvq.ivf import IVFPQNearestNeighbors
    >>> X = np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32)
    >>> ivf = IVFPQNearestNeighbors(PQ(n_subspaces=4, n_bits=4, random_state=0), n_lists=16,
    ...                             n_probe=4, n_neighbors=3, random_state=0).fit(X)
    >>> ivf.code_size_, int(ivf.list_offsets_[-1])
    (2, 2000)
    >>> distances, ids = ivf.kneighbors(X[:2])
    >>> ids.shape, bool(np.all(np.diff(distances, axis=1) >= 0))
    ((2, 3), True)
    """

    _parameter_constraints = {
        "quantizer": [HasMethods(["fit", "transform", "inverse_transform"]), None],
        "n_lists": [Interval(Integral, 1, None, closed="left")],
        "n_probe": [Interval(Integral, 1, None, closed="left")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "metric": [StrOptions(set(METRICS))],
        "rerank": [Interval(Integral, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "max_points_per_list": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def __init__(self, quantizer=None, n_lists=100, n_probe=1, n_neighbors=5, *,
                 metric="euclidean", rerank=False, max_iter=20, max_points_per_list=256,
                 random_state=None):
        self.quantizer = quantizer
        self.n_lists = n_lists
        self.n_probe = n_probe
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.rerank = rerank
        self.max_iter = max_iter
        self.max_points_per_list = max_points_per_list
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, ids=None):
        """Learn the coarse centroids and the residual quantizer, and fill the lists with ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Database vectors (also the training data); ``n_samples >= n_lists``.
        y : None
            Ignored.
        ids : array-like of shape (n_samples,) or None, default=None
            Integer id of each vector, what ``kneighbors`` returns; None: ``0, 1, ...``.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        if self.rerank is True:
            raise ValueError("rerank=True is ambiguous: give the number of ADC candidates to "
                             "re-rank (an int >= n_neighbors), or False.")
        ids = _check_ids(ids, X.shape[0], 0)
        X = self._prepare(X)
        n_samples = X.shape[0]
        if n_samples < self.n_lists:
            raise ValueError(f"n_samples={n_samples} should be >= n_lists={self.n_lists} (one "
                             "training vector per coarse centroid at least).")
        rng = np.random.default_rng(check_random_state(self.random_state).randint(2**31 - 1))
        train = X
        cap = self.max_points_per_list
        if cap is not None and n_samples > cap * self.n_lists:
            train = X[np.sort(rng.choice(n_samples, cap * self.n_lists, replace=False))]
        self.centroids_ = kmeans(np.ascontiguousarray(train), self.n_lists,
                                 max_iter=self.max_iter, rng=rng)[0]
        labels = self._assign(X)
        residuals = X - self.centroids_[labels]
        quantizer = PQ() if self.quantizer is None else self.quantizer
        self.quantizer_ = clone(quantizer).fit(residuals)
        n_bits, n_subspaces = _n_bits(self.quantizer_), self.quantizer_.codebook_.shape[0]
        self.code_size_ = packed_row_bytes(n_subspaces, n_bits)
        self.packed_codes_ = np.empty((0, self.code_size_), dtype=np.uint8)
        self.ids_ = np.empty(0, dtype=np.int64)
        self.vectors_ = np.empty((0, X.shape[1]), dtype=X.dtype) if self.rerank else None
        self.list_offsets_ = np.zeros(self.n_lists + 1, dtype=np.int64)
        self._append(X, labels, residuals, ids)
        self._precomputed_table = _precompute_table(self.quantizer_, self.centroids_,
                                                    self.metric)
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X, y=None, ids=None):
        """Add vectors to the lists of their nearest centroids (faiss' ``add``).

        The first call (on an unfitted searcher) is ``fit``; later calls encode the residuals
        with ``quantizer_`` as it is: neither the centroids nor the codebooks change.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Vectors to add.
        y : None
            Ignored.
        ids : array-like of shape (n_samples,) or None, default=None
            Integer ids of the new vectors; None: ``n_samples_fit_`` onwards (their
            positions in the order they were added). Not checked for uniqueness.

        Returns
        -------
        self : object
            The searcher, with ``n_samples_fit_`` increased by ``n_samples``.
        """
        if not hasattr(self, "quantizer_"):
            return self.fit(X, y, ids=ids)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        ids = _check_ids(ids, X.shape[0], self.n_samples_fit_)
        X = self._prepare(X).astype(self.centroids_.dtype, copy=False)
        labels = self._assign(X)
        self._append(X, labels, X - self.centroids_[labels], ids)
        return self

    def _assign(self, X):
        """The list of each vector: its nearest centroid in the metric (Euclidean, or the
        largest inner product), the rule queries probe by."""
        if self.metric == "euclidean":
            return nearest_centroid(X, self.centroids_)
        labels = np.empty(X.shape[0], dtype=np.intp)
        for start in range(0, X.shape[0], 4096):
            labels[start:start + 4096] = np.argmax(X[start:start + 4096] @ self.centroids_.T,
                                                   axis=1)
        return labels

    def _append(self, X, labels, residuals, ids):
        """Merge new entries into the contiguous lists (one stable sort by list)."""
        packed = pack_codes(self.quantizer_.transform(residuals), _n_bits(self.quantizer_))
        old_labels = np.repeat(np.arange(self.n_lists), np.diff(self.list_offsets_))
        all_labels = np.concatenate([old_labels, labels])
        order = np.argsort(all_labels, kind="stable")
        self.packed_codes_ = np.concatenate([self.packed_codes_, packed])[order]
        self.ids_ = np.concatenate([self.ids_, ids])[order]
        if self.vectors_ is not None:
            self.vectors_ = np.concatenate([self.vectors_, X.astype(self.vectors_.dtype)])[order]
        counts = np.bincount(all_labels, minlength=self.n_lists)
        self.list_offsets_ = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.n_samples_fit_ = int(self.list_offsets_[-1])

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """Find the ``n_neighbors`` nearest database vectors of each query in its probed lists.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features) or None, default=None
            Query vectors. None queries the database itself, with each vector's
            reconstruction (its centroid plus its decoded residual; the stored vector when
            re-ranking) as the query, one row per vector in the order of their ids (the
            order they were added in, for the default ids); a vector is not its own
            neighbour.
        n_neighbors : int or None, default=None
            Number of neighbours; None means the ``n_neighbors`` parameter.
        return_distance : bool, default=True
            Whether to return the distances.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors)
            Estimated (exact when re-ranking) distances in the metric's terms, nearest
            first: Euclidean distances, inner products (descending) or cosine distances.
            Missing neighbours (the probed lists held too few vectors) are ``inf``
            (``-inf`` for the inner product).
        indices : ndarray of shape (n_queries, n_neighbors)
            Ids of the neighbours; ``-1`` for missing ones.
        """
        query_is_train = X is None
        X, n_neighbors = _check_queries(self, X, n_neighbors)
        n_fit = self.n_samples_fit_
        rerank = int(self.rerank)
        if rerank and self.vectors_ is None:
            raise ValueError("rerank is set but the vectors were not kept: fit with rerank "
                             "set to keep them.")
        if query_is_train:
            # rows in the order of the ids (insertion order for the default ids)
            exclude = np.argsort(self.ids_, kind="stable").astype(np.int64)
            X = (self._reconstruct() if self.vectors_ is None else self.vectors_)[exclude]
        else:
            X = self._prepare(X)
            exclude = np.full(X.shape[0], -1, dtype=np.int64)
        n_queries = X.shape[0]
        n_candidates = max(rerank, n_neighbors) if rerank else n_neighbors
        n_candidates = min(n_candidates, n_fit)
        dtype = self.quantizer_.codebook_.dtype
        distances = np.empty((n_queries, n_neighbors), dtype=dtype)
        positions = np.empty((n_queries, n_neighbors), dtype=np.int64)

        n_threads = effective_n_threads() if n_queries > 1 else 1
        step = min(_QUERIES_PER_TASK, -(-n_queries // n_threads))
        n_threads = min(n_threads, -(-n_queries // step))

        def search_task(start):
            stop = min(start + step, n_queries)
            sums, pos = self._scan_lists(X[start:stop], exclude[start:stop], n_candidates)
            if rerank:
                sums, pos = self._rerank(X[start:stop], sums, pos, n_neighbors)
            distances[start:stop], positions[start:stop] = sums, pos

        with threadpool_limits(1, user_api="blas") if n_threads > 1 else nullcontext():
            map_threads(search_task, range(0, n_queries, step), n_threads)
        missing = positions >= n_fit
        indices = np.where(missing, -1, self.ids_[np.minimum(positions, n_fit - 1)])
        if return_distance:
            return _to_distances(distances, self.metric), indices
        return indices

    # -- the search ------------------------------------------------------------------------
    def _probe(self, X):
        """The ``n_probe`` lists to scan for each query and the coarse term of each:
        ``||x - y_l||^2`` (Euclidean) or ``-<x, y_l>``."""
        n_probe = min(self.n_probe, self.n_lists)
        centroids = self.centroids_.astype(X.dtype, copy=False)
        products = X @ centroids.T
        if self.metric == "euclidean":
            coarse = np.einsum("ij,ij->i", centroids, centroids)[None, :] - 2 * products
            coarse += np.einsum("ij,ij->i", X, X)[:, None]
            np.maximum(coarse, 0, out=coarse)
        else:
            coarse = -products
        if n_probe == 1 and self.n_lists > 1:
            lists = coarse.argmin(axis=1)[:, None]  # one SIMD pass; argpartition costs ~10x
        elif n_probe < self.n_lists:
            lists = np.argpartition(coarse, n_probe - 1, axis=1)[:, :n_probe]
        else:
            lists = np.broadcast_to(np.arange(self.n_lists), coarse.shape)
        return np.ascontiguousarray(lists, dtype=np.int64), np.take_along_axis(coarse, lists,
                                                                                axis=1)

    def _scan_lists(self, X, exclude, k):
        """ADC scan of the probed lists: the ``k`` smallest sums and their positions."""
        quantizer = self.quantizer_
        dtype = quantizer.codebook_.dtype
        lists, coarse = self._probe(X)
        tables = _inner_product_tables(quantizer, X)
        tables *= -2 if self.metric == "euclidean" else -1
        n_bits = _n_bits(quantizer)
        n_subspaces = quantizer.codebook_.shape[0]
        if n_bits == 8:
            codes, packed, bits = self.packed_codes_, _NO_PACKED, 0
        elif n_bits == 16:
            codes, packed, bits = self.packed_codes_.view("<u2"), _NO_PACKED, 0
        else:
            longest = max(int(np.diff(self.list_offsets_).max()), 1)
            codes = np.empty((longest, n_subspaces), dtype=np.uint16)
            packed, bits = self.packed_codes_, n_bits
        precomputed = self._precomputed_table
        use_precomputed = precomputed is not None
        if not use_precomputed:
            precomputed = np.empty((1, 1, 1), dtype=dtype)
        values = np.full((X.shape[0], k), np.inf, dtype=dtype)
        positions = np.full((X.shape[0], k), self.n_samples_fit_, dtype=np.int64)
        _ivf_scan(np.ascontiguousarray(tables, dtype=dtype), lists,
                  np.ascontiguousarray(coarse, dtype=dtype), precomputed, use_precomputed,
                  self.list_offsets_, codes, packed, bits, exclude, values, positions,
                  np.empty(tables.shape[1:], dtype=dtype))
        return values, positions

    def _rerank(self, X, sums, positions, k):
        """Exact distances of the candidates (the smallest ``k`` kept, by value then
        position); missing candidates stay at ``inf``."""
        valid = positions < self.n_samples_fit_
        vectors = self.vectors_[np.where(valid, positions, 0)]
        X = X.astype(vectors.dtype, copy=False)
        if self.metric == "euclidean":
            diff = vectors - X[:, None, :]
            exact = np.einsum("ijk,ijk->ij", diff, diff)
        else:
            exact = -np.einsum("ijk,ik->ij", vectors, X)
        exact = np.where(valid, exact, np.inf).astype(sums.dtype)
        exact, positions = _sort_pairs(exact, positions)
        return exact[:, :k], positions[:, :k]

    def _reconstruct(self):
        """The database as the index sees it: each entry's centroid plus its decoded
        residual, in storage order."""
        labels = np.repeat(np.arange(self.n_lists), np.diff(self.list_offsets_))
        return (self.quantizer_.inverse_transform(self.codes_)
                + self.centroids_[labels].astype(self.quantizer_.codebook_.dtype))

    def _n_ids(self):
        return int(self.ids_.max()) + 1 if self.ids_.size else 0


_NO_PACKED = np.empty((0, 1), dtype=np.uint8)


def _precompute_table(quantizer, centroids, metric):
    """For the Euclidean metric, ``table[l, m, k] = ||c_mk||^2 + 2 <y_l[m], c_mk>`` in the
    code space (faiss' ``precomputed_table``); None for the other metrics."""
    if metric != "euclidean":
        return None
    codebook = quantizer.codebook_
    table = _inner_product_tables(quantizer, centroids.astype(codebook.dtype))
    table *= 2
    bounds = quantizer.subspace_bounds_
    for m in range(codebook.shape[0]):
        centers = codebook[m, :, :bounds[m + 1] - bounds[m]]
        table[:, m] += np.einsum("ij,ij->i", centers, centers)[None, :]
    return table


def _sort_pairs(values, positions):
    """Each row sorted by (value, position)."""
    order = np.argsort(positions, axis=1, kind="stable")
    values, positions = (np.take_along_axis(values, order, axis=1),
                         np.take_along_axis(positions, order, axis=1))
    order = np.argsort(values, axis=1, kind="stable")
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(positions, order, axis=1)


@njit(nogil=True, cache=True, inline="always")
def _greater(v1, p1, v2, p2):
    return v1 > v2 or (v1 == v2 and p1 > p2)


@njit(nogil=True, cache=True)
def _push(values, positions, v, p):
    """Replace the root of the max-heap ``(values, positions)`` (ordered by value, then
    position) by ``(v, p)`` and restore the heap."""
    k = values.shape[0]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= k:
            break
        right = child + 1
        if right < k and _greater(values[right], positions[right], values[child],
                                  positions[child]):
            child = right
        if _greater(values[child], positions[child], v, p):
            values[i] = values[child]
            positions[i] = positions[child]
            i = child
        else:
            break
    values[i] = v
    positions[i] = p


@njit(nogil=True, cache=True)
def _ivf_scan(tables, lists, coarse, precomputed, use_precomputed, offsets, codes, packed,
              n_bits, exclude, values, positions, table):
    """For each query ``i``, scan its probed lists: the sum of entry ``j`` of list ``l`` is
    ``coarse[i, p] + sum_m T[m, code_j[m]]`` with ``T = precomputed[l] + tables[i]`` (or
    ``tables[i]``); the ``k`` smallest (value, position) pairs are kept in the max-heap
    ``values[i], positions[i]`` (initialised to ``inf`` and an out-of-range position),
    sorted at the end. Packed codes (``n_bits > 0``) are unpacked list by list into ``codes``."""
    n_queries, n_probe = lists.shape
    n_subspaces, n_centroids = tables.shape[1], tables.shape[2]
    for i in range(n_queries):
        heap_values = values[i]
        heap_positions = positions[i]
        skip = exclude[i]
        for p in range(n_probe):
            lst = lists[i, p]
            lo, hi = offsets[lst], offsets[lst + 1]
            if hi == lo:
                continue
            if use_precomputed:
                pre = precomputed[lst]
                query = tables[i]
                for m in range(n_subspaces):
                    for c in range(n_centroids):
                        table[m, c] = pre[m, c] + query[m, c]
                tab = table
            else:
                tab = tables[i]
            if n_bits > 0:
                entries = codes[:hi - lo]
                _unpack_rows(packed[lo:hi], n_bits, entries)
            else:
                entries = codes[lo:hi]
            base = coarse[i, p]
            for j in range(hi - lo):
                code = entries[j]
                s = base
                for m in range(n_subspaces):
                    s += tab[m, code[m]]
                pos = lo + j
                if pos == skip:
                    continue
                if _greater(heap_values[0], heap_positions[0], s, pos):
                    _push(heap_values, heap_positions, s, pos)
        # the heap in order: insertion sort by (value, position), k is small
        for a in range(1, heap_values.shape[0]):
            v, q = heap_values[a], heap_positions[a]
            b = a - 1
            while b >= 0 and _greater(heap_values[b], heap_positions[b], v, q):
                heap_values[b + 1] = heap_values[b]
                heap_positions[b + 1] = heap_positions[b]
                b -= 1
            heap_values[b + 1] = v
            heap_positions[b + 1] = q
