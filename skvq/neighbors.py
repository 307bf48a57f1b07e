"""Nearest-neighbour search over product-quantization codes.

The searchers (:class:`PQNearestNeighbors` here, :class:`~skvq.ivf.IVFPQNearestNeighbors`)
share the private pieces of this module: :func:`_query_tables` (per-query look-up tables of
a metric, whose sums over the subspaces are minimised), :func:`_to_distances` (those sums in
the metric's own terms), :func:`_scan` (the sums for every database code) and
:func:`_smallest` (top-k selection with ties by position).
"""

from contextlib import nullcontext
from numbers import Integral

import numpy as np
from numba import njit
from scipy.sparse import csr_matrix
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.preprocessing import normalize
from sklearn.utils import check_array
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from ._parallel import effective_n_threads, map_threads
from .base import _n_rows_per_batch
from .packing import pack_codes, packed_row_bytes, unpack_codes
from .pq import PQ

__all__ = ["PQNearestNeighbors"]

METRICS = ("euclidean", "inner_product", "cosine")


def _n_bits(quantizer):
    """Bits per code of a fitted product quantizer, from its number of centroids."""
    return int(quantizer.codebook_.shape[1]).bit_length() - 1


def _code_space(quantizer, X):
    """``X`` in the space of the codebooks: rotated by an OPQ's ``rotation_``."""
    rotation = getattr(quantizer, "rotation_", None)
    if rotation is None:
        return X
    return X.astype(rotation.dtype, copy=False) @ rotation


def _inner_product_tables(quantizer, X):
    """``out[i, m, k] = <x_i[m], codebook_[m, k]>`` in the code space (OPQ rotates ``X``)."""
    codebook, bounds = quantizer.codebook_, quantizer.subspace_bounds_
    X = _code_space(quantizer, X).astype(codebook.dtype, copy=False)
    out = np.empty((X.shape[0], codebook.shape[0], codebook.shape[1]), dtype=codebook.dtype)
    for m in range(codebook.shape[0]):
        lo, hi = bounds[m], bounds[m + 1]
        out[:, m] = X[:, lo:hi] @ codebook[m, :, :hi - lo].T
    return out


def _query_tables(quantizer, X, metric):
    """Look-up tables of validated queries, whose sums over the subspaces are minimised.

    Parameters
    ----------
    quantizer : PQ or OPQ
        Fitted product quantizer (possibly wrapped in a ``FrozenEstimator``).
    X : ndarray of shape (n_queries, n_features)
        Validated queries.
    metric : {"euclidean", "inner_product", "cosine"}

    Returns
    -------
    tables : ndarray of shape (n_queries, n_subspaces, 2**n_bits)
        In the codebook's dtype. The estimate for a database code ``c`` is
        ``s = sum_m tables[i, m, c[m]]``, smaller is nearer, with

        - ``"euclidean"``: ``tables[i, m, k] = ||x_i[m] - codebook_[m, k]||^2``, so that
          ``s = ||x_i - q(y)||^2``, the squared ADC distance;
        - ``"inner_product"``: ``tables[i, m, k] = -<x_i[m], codebook_[m, k]>``, so that
          ``s = -<x_i, q(y)>``;
        - ``"cosine"``: as ``"inner_product"`` for the normalised query ``x_i / ||x_i||``
          (the database was normalised before it was encoded), ``s = -<x_i/||x_i||, q(y)>``.

        :func:`_to_distances` turns ``s`` into the metric's distances.
    """
    if metric == "euclidean":
        return quantizer.distance_table(X)
    if metric == "cosine":
        X = normalize(X)
    tables = _inner_product_tables(quantizer, X)
    return np.negative(tables, out=tables)


def _to_distances(sums, metric):
    """The sums of :func:`_query_tables`' tables in the metric's own terms (in place).

    ``"euclidean"``: ``sqrt(s)``, the estimated Euclidean distance (as
    :class:`sklearn.neighbors.NearestNeighbors`); ``"inner_product"``: ``-s``, the estimated
    inner product (largest first, as faiss' ``METRIC_INNER_PRODUCT``); ``"cosine"``:
    ``1 + s``, the estimated cosine distance ``1 - cos`` (as scikit-learn's ``"cosine"``).
    """
    if metric == "euclidean":
        np.maximum(sums, 0, out=sums)
        return np.sqrt(sums, out=sums)
    if metric == "inner_product":
        return np.negative(sums, out=sums)
    return np.add(sums, 1, out=sums)


def _check_n_neighbors(n_neighbors, default):
    if n_neighbors is None:  # the parameter, possibly set after fit
        n_neighbors = default
    if not isinstance(n_neighbors, Integral) or isinstance(n_neighbors, bool):
        raise TypeError(f"n_neighbors does not take {type(n_neighbors)} value, enter "
                        "integer value.")
    if n_neighbors <= 0:
        raise ValueError(f"Expected n_neighbors > 0. Got {n_neighbors}.")
    return int(n_neighbors)


def _check_queries(searcher, X, n_neighbors):
    """The checks every searcher's ``kneighbors`` starts with: fitted, ``n_neighbors`` (None:
    the parameter) an int >= 1 that the database can supply, and ``X`` validated (None: the
    database queries itself, so a vector not being its own neighbour needs one more).

    Returns
    -------
    X : ndarray or None
        Validated queries (float32/float64, the fitted width), or None.
    n_neighbors : int
    """
    check_is_fitted(searcher)
    n_neighbors = _check_n_neighbors(n_neighbors, searcher.n_neighbors)
    n_fit = searcher.n_samples_fit_
    if X is None:
        if n_neighbors >= n_fit:
            raise ValueError(f"Expected n_neighbors < n_samples_fit, but n_neighbors = "
                             f"{n_neighbors}, n_samples_fit = {n_fit} (the queries are "
                             "the database, and a vector is not its own neighbour).")
        return None, n_neighbors
    X = validate_data(searcher, X, dtype=[np.float64, np.float32], reset=False)
    if n_neighbors > n_fit:
        raise ValueError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = "
                         f"{n_neighbors}, n_samples_fit = {n_fit}, n_samples = {X.shape[0]}.")
    return X, n_neighbors


def _check_ids(ids, n_rows, first):
    """Validated ``ids`` of ``n_rows`` new vectors (int64); None: ``first, first + 1, ...``."""
    if ids is None:
        return np.arange(first, first + n_rows, dtype=np.int64)
    ids = check_array(ids, ensure_2d=False, dtype=None, input_name="ids")
    if ids.ndim != 1 or ids.shape[0] != n_rows:
        raise ValueError(f"ids must be a 1-D array of {n_rows} integers (one per row of X), "
                         f"got shape {ids.shape}.")
    if ids.dtype.kind not in "iu" and not (ids.dtype.kind == "f"
                                           and np.array_equal(ids, np.round(ids))):
        raise TypeError(f"ids must be integers, got dtype {ids.dtype}.")
    return ids.astype(np.int64)


def _neighbors_graph(indices, distances, n_columns):
    n_queries, k = indices.shape
    data = np.ones(indices.size) if distances is None else distances.ravel()
    indptr = np.arange(0, n_queries * k + 1, k)
    return csr_matrix((data, indices.ravel(), indptr), shape=(n_queries, n_columns))


class _CodeSearcher(BaseEstimator):
    """What the searchers over codes share: ``kneighbors_graph``, the codes, ``code_size_``."""

    def _prepare(self, X):
        """Validated vectors as the index sees them: normalised for ``metric="cosine"``."""
        return normalize(X) if self.metric == "cosine" else X

    @property
    def codes_(self):
        """Codes of the database, one column per subspace (unpacked from ``packed_codes_``).

        ndarray of shape (n_samples_fit, n_subspaces), in the quantizer's code dtype; in the
        order of ``packed_codes_``.
        """
        return unpack_codes(self.packed_codes_, _n_bits(self.quantizer_),
                            self.quantizer_.codebook_.shape[0])

    def kneighbors_graph(self, X=None, n_neighbors=None, mode="connectivity"):
        """Sparse graph of the ``n_neighbors`` nearest database vectors of each query.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features) or None, default=None
            Query vectors; None queries the database itself (see ``kneighbors``).
        n_neighbors : int or None, default=None
            Number of neighbours; None means the ``n_neighbors`` parameter.
        mode : {"connectivity", "distance"}, default="connectivity"
            Ones, or the estimated distances (in the metric's terms, see ``kneighbors``), as
            the graph's entries.

        Returns
        -------
        graph : sparse matrix of shape (n_queries, n_ids)
            CSR matrix; row ``i`` holds the neighbours of query ``i`` in the columns of their
            ids; ``n_ids`` is the largest id plus one.
        """
        check_is_fitted(self)
        if mode == "connectivity":
            indices, distances = self.kneighbors(X, n_neighbors, return_distance=False), None
        elif mode == "distance":
            distances, indices = self.kneighbors(X, n_neighbors)
        else:
            raise ValueError(f'Unsupported mode, must be one of "connectivity" or "distance", '
                             f"but got {mode!r} instead.")
        return _neighbors_graph(indices, distances, self._n_ids())


class PQNearestNeighbors(_CodeSearcher):
    """Nearest neighbours of queries among vectors held only as product-quantization codes.

    ``fit`` trains a clone of ``quantizer`` on the database and keeps its codes, never the
    vectors: bit-packed, ``code_size_ = ceil(n_subspaces * n_bits / 8)`` bytes per vector
    (4-bit codes two to a byte). ``partial_fit`` appends more vectors, encoded with the fitted
    quantizer. ``kneighbors`` returns distances and ids like
    :class:`sklearn.neighbors.NearestNeighbors`, with Jégou et al.'s estimates computed from
    per-query look-up tables:

    - ``"adc"`` (asymmetric distance computation): the query itself against each database
      reconstruction ``q(y)``; for ``metric="euclidean"``
      ``d(x, q(y))^2 = sum_m ||x[m] - c_m(y)||^2``, with the ``(n_subspaces, 2**n_bits)``
      table of squared distances from the query's subvectors to the centroids
      (:meth:`PQ.distance_table`); for ``"inner_product"``
      ``<x, q(y)> = sum_m <x[m], c_m(y)>``, with the table of the subvectors' inner products
      with the centroids (faiss' ``METRIC_INNER_PRODUCT``, nanopq's ``metric="dot"``);
    - ``"sdc"`` (symmetric distance computation): the reconstruction of the query's code
      against each database reconstruction.

    Read more in the :ref:`User Guide <search-codes>`.

    Parameters
    ----------
    quantizer : estimator or None, default=None
        A product quantizer with ``distance_table`` and ``symmetric_distance_table``
        (:class:`~skvq.PQ` or :class:`~skvq.OPQ`); cloned and fitted on the database in
        ``fit``. None means ``PQ()``. To train on fewer vectors than the database holds, set
        the quantizer's ``max_points_per_centroid``; to search with a quantizer fitted
        elsewhere (for example one imported by :func:`skvq.interop.from_faiss`), wrap it in
        :class:`sklearn.frozen.FrozenEstimator`, which ``fit`` neither clones nor refits.
    n_neighbors : int, default=5
        Number of neighbours ``kneighbors`` returns by default.
    distance : {"adc", "sdc"}, default="adc"
        Asymmetric (query against reconstructions: more accurate) or symmetric (both sides
        quantized) estimates.
    metric : {"euclidean", "inner_product", "cosine"}, default="euclidean"
        What "near" means, and what ``kneighbors`` returns as distances:

        - ``"euclidean"``: the Euclidean distance (not squared), ascending, as
          :class:`sklearn.neighbors.NearestNeighbors`;
        - ``"inner_product"``: the inner product ``<x, q(y)>``, largest first, as faiss'
          ``IndexPQ(..., METRIC_INNER_PRODUCT)`` returns it (a similarity, not a distance);
        - ``"cosine"``: the database vectors are normalised before they are encoded (and
          before the quantizer is fitted on them) and so are the queries, as faiss users do
          with normalised vectors and the inner product; the distance is
          ``1 - <x / ||x||, q(y / ||y||)>``, ascending, scikit-learn's cosine distance
          estimated on the codes. Zero vectors stay zero (:func:`sklearn.preprocessing.normalize`).

    Attributes
    ----------
    quantizer_ : estimator
        The quantizer fitted on the database.
    packed_codes_ : ndarray of shape (n_samples_fit, code_size), dtype uint8
        Codes of the database vectors, bit-packed by :func:`skvq.packing.pack_codes`
        (faiss' layout; for ``n_bits=8`` one byte per code, as they are).
    code_size_ : int
        Bytes per database vector, ``ceil(n_subspaces * n_bits / 8)``.
    codes_ : ndarray of shape (n_samples_fit, n_subspaces)
        The codes unpacked (a property, computed from ``packed_codes_`` on access).
    ids_ : ndarray of shape (n_samples_fit,) or None
        The id of each database vector, what ``kneighbors`` returns; None when the ids are
        the positions ``0, 1, ...`` (nothing is stored for them).
    n_samples_fit_ : int
        Number of database vectors.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    sklearn.neighbors.NearestNeighbors : Exact search over the vectors themselves.
    skvq.ivf.IVFPQNearestNeighbors : Non-exhaustive search over inverted lists of codes.
    skvq.PQ : The default quantizer.

    Notes
    -----
    Queries are processed in batches of at most 64 whose temporary memory (a few distance
    arrays of ``n_samples_fit_`` entries per query) stays within scikit-learn's
    ``working_memory`` (see :func:`sklearn.config_context`). The distances of a batch are
    gathered from its look-up tables with one gather per subspace, over database chunks that
    stay in cache (packed codes are unpacked a chunk at a time), and the ``n_neighbors``
    nearest are selected by partition, not by a full sort. Equal distances are ordered by
    position in the database, so the results do not depend on the batching. On 100,000
    vectors of 128 features (8 subspaces of 256 centroids, float32, one thread) this searches
    as many queries per second as faiss' ``IndexPQ``; one query at a time is about 3 times
    slower than faiss.

    ``"sdc"`` with the Euclidean metric and ``kneighbors()`` without queries use the table of
    squared distances between the centroids of every subspace, ``n_subspaces * 4**n_bits``
    entries (2 MiB for ``n_subspaces=8, n_bits=8`` in float32): use ``"adc"`` with large
    ``n_bits``. For the other metrics, SDC searches with the reconstructions of the queries'
    codes as queries (the same sums).

    Adding vectors is ``partial_fit``, scikit-learn's name for learning from data that comes
    in pieces (faiss calls it ``add``): for a searcher the database is what is learned; the
    first call fits the quantizer, later calls only encode, so the codebooks never change.

    Distances are in the quantizer's float dtype (float32 when it was fitted on float32).

    References
    ----------
    H. Jégou, M. Douze and C. Schmid, "Product quantization for nearest neighbor search",
    IEEE TPAMI 33(1), 2011, Section III.A (eq. 12-13: SDC and ADC).

    Examples
    --------
    >>> import numpy as np
    >>> from skvq import PQ
    >>> from skvq.neighbors import PQNearestNeighbors
    >>> X = np.random.default_rng(0).normal(size=(1000, 16))
    >>> nn = PQNearestNeighbors(PQ(n_subspaces=4, n_bits=4, random_state=0), n_neighbors=3)
    >>> nn = nn.fit(X)
    >>> nn.code_size_, nn.packed_codes_.shape, nn.codes_.shape
    (2, (1000, 2), (1000, 4))
    >>> distances, indices = nn.kneighbors(X[:2])
    >>> indices[:, 0]
    array([0, 1])
    >>> bool(np.all(np.diff(distances, axis=1) >= 0))
    True
    >>> nn = nn.partial_fit(X[:10], ids=np.arange(5000, 5010))
    >>> nn.n_samples_fit_, int(nn.kneighbors(X[:1], n_neighbors=2)[1][0, 1])
    (1010, 5000)
    """

    _parameter_constraints = {
        "quantizer": [HasMethods(["fit", "transform", "distance_table",
                                  "symmetric_distance_table"]), None],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "distance": [StrOptions({"adc", "sdc"})],
        "metric": [StrOptions(set(METRICS))],
    }

    def __init__(self, quantizer=None, n_neighbors=5, *, distance="adc", metric="euclidean"):
        self.quantizer = quantizer
        self.n_neighbors = n_neighbors
        self.distance = distance
        self.metric = metric

    # The quantizer's parameters are validated by its own fit.
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, ids=None):
        """Fit the quantizer on the database ``X`` and keep the codes of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Database vectors (also the quantizer's training data).
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
        ids = _check_ids(ids, X.shape[0], 0)
        X = self._prepare(X)
        quantizer = PQ() if self.quantizer is None else self.quantizer
        # Fitted on the validated array: the names, if any, are checked here, not twice.
        self.quantizer_ = clone(quantizer).fit(X, y)
        n_bits = _n_bits(self.quantizer_)
        self.packed_codes_ = pack_codes(self.quantizer_.transform(X), n_bits)
        self.code_size_ = packed_row_bytes(self.quantizer_.codebook_.shape[0], n_bits)
        self.ids_ = None if np.array_equal(ids, np.arange(X.shape[0])) else ids
        self.n_samples_fit_ = X.shape[0]
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X, y=None, ids=None):
        """Append vectors to the database, encoded with the fitted quantizer.

        The first call (on an unfitted searcher) is ``fit``; later calls encode ``X`` with
        ``quantizer_`` as it is (its codebooks are not refitted) and append the codes: the
        searcher is then the one ``fit`` would give on all the vectors with that quantizer.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Vectors to add.
        y : None
            Ignored.
        ids : array-like of shape (n_samples,) or None, default=None
            Integer ids of the new vectors; None: their positions in the database,
            ``n_samples_fit_`` onwards. Ids are not checked for uniqueness.

        Returns
        -------
        self : object
            The searcher, with ``n_samples_fit_`` increased by ``n_samples``.
        """
        if not hasattr(self, "quantizer_"):
            return self.fit(X, y, ids=ids)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        ids = _check_ids(ids, X.shape[0], self.n_samples_fit_)
        packed = pack_codes(self.quantizer_.transform(self._prepare(X)),
                            _n_bits(self.quantizer_))
        if self.ids_ is not None or not np.array_equal(
                ids, np.arange(self.n_samples_fit_, self.n_samples_fit_ + X.shape[0])):
            old = (np.arange(self.n_samples_fit_, dtype=np.int64) if self.ids_ is None
                   else self.ids_)
            self.ids_ = np.concatenate([old, ids])
        self.packed_codes_ = np.concatenate([self.packed_codes_, packed])
        self.n_samples_fit_ += X.shape[0]
        return self

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """Find the ``n_neighbors`` nearest database vectors of each query.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features) or None, default=None
            Query vectors. None queries the database itself: each database vector's code is
            the query (the vectors are not kept), so the estimates are between
            reconstructions (SDC) whatever ``distance`` is, and, as in scikit-learn, a vector
            is not its own neighbour (its position is excluded, not duplicates of it).
        n_neighbors : int or None, default=None
            Number of neighbours; None means the ``n_neighbors`` parameter.
        return_distance : bool, default=True
            Whether to return the distances.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors)
            Estimated distances in the metric's terms, nearest first (only if
            ``return_distance``): Euclidean distances (ascending), inner products
            (descending) or cosine distances (ascending); see ``metric``.
        indices : ndarray of shape (n_queries, n_neighbors)
            Ids of the neighbours (their positions unless ``ids`` were given); equal
            distances are ordered by position in the database.
        """
        query_is_train = X is None
        X, n_neighbors = _check_queries(self, X, n_neighbors)
        n_fit = self.n_samples_fit_
        if query_is_train:
            n_queries = n_fit
        else:
            X = self._prepare(X)
            n_queries = X.shape[0]
        metric, quantizer = self.metric, self.quantizer_
        symmetric = query_is_train or self.distance == "sdc"
        sdc_table = (quantizer.symmetric_distance_table()
                     if symmetric and metric == "euclidean" else None)
        n_bits, n_subspaces = _n_bits(quantizer), quantizer.codebook_.shape[0]

        distances = np.empty((n_queries, n_neighbors), dtype=quantizer.codebook_.dtype)
        indices = np.empty((n_queries, n_neighbors), dtype=np.intp)
        step = min(_n_rows_per_batch(self._bytes_per_query()), _MAX_QUERIES_PER_BATCH)

        def search_batch(start):
            stop = min(start + step, n_queries)
            if query_is_train:
                codes = unpack_codes(self.packed_codes_[start:stop], n_bits, n_subspaces)
            elif symmetric:
                codes = quantizer.transform(X[start:stop])
            if sdc_table is not None:
                tables = _symmetric_tables(sdc_table, codes)
            else:
                queries = quantizer.inverse_transform(codes) if symmetric else X[start:stop]
                tables = np.moveaxis(_query_tables(quantizer, queries, metric), 0, -1)
            sums = _scan(np.ascontiguousarray(tables, dtype=distances.dtype),
                         self.packed_codes_, n_bits)
            if query_is_train:
                sums[np.arange(stop - start), np.arange(start, stop)] = np.inf
            distances[start:stop], indices[start:stop] = _smallest(sums, n_neighbors)

        # Batches run on as many threads as the BLAS setting allows (the scan releases the
        # GIL); each thread holds one batch's memory at a time.
        n_threads = effective_n_threads() if n_queries > step else 1
        with threadpool_limits(1, user_api="blas") if n_threads > 1 else nullcontext():
            map_threads(search_batch, range(0, n_queries, step), n_threads)
        if self.ids_ is not None:
            indices = self.ids_[indices]
        if return_distance:
            return _to_distances(distances, metric), indices
        return indices

    def _n_ids(self):
        return self.n_samples_fit_ if self.ids_ is None else int(self.ids_.max()) + 1

    def _bytes_per_query(self):
        # Per query: its distances to the database, the partition's copy of them and a mask;
        # its look-up tables.
        itemsize = np.dtype(self.quantizer_.codebook_.dtype).itemsize
        n_subspaces, n_centroids = self.quantizer_.codebook_.shape[:2]
        return (self.n_samples_fit_ * (2 * itemsize + 1)
                + 2 * n_subspaces * n_centroids * itemsize)


# Cache-sized work (measured on 100,000 x 128 vectors, 8 subspaces of 256 centroids): at most
# 64 queries a batch, so that the tables of a subspace stay in cache, and database chunks whose
# distances for the batch fill about 256 KiB. Larger blocks run 2-3 times slower.
_MAX_QUERIES_PER_BATCH = 64
_SCAN_CHUNK_BYTES = 2**18


def _symmetric_tables(sdc_table, query_codes):
    """SDC look-up tables of a batch of query codes, laid out (n_subspaces, K, n_queries)."""
    query_codes = np.asarray(query_codes, dtype=np.intp)
    return np.stack([sdc_table[m][:, query_codes[:, m]] for m in range(sdc_table.shape[0])])


@njit(nogil=True, cache=True)
def _unpack_rows(packed, n_bits, out):
    """Unpack the rows of ``packed`` (:func:`skvq.packing.pack_codes`' layout) into ``out``
    (serial, releases the GIL: the scans unpack one database chunk at a time)."""
    n, c = out.shape
    mask = (1 << n_bits) - 1
    for i in range(n):
        row = packed[i]
        pos = 0
        for j in range(c):
            byte = pos >> 3
            shift = pos & 7
            # a code spans at most 3 bytes (n_bits <= 16)
            v = np.int64(row[byte]) >> shift
            got = 8 - shift
            while got < n_bits:
                byte += 1
                v |= np.int64(row[byte]) << got
                got += 8
            out[i, j] = v & mask
            pos += n_bits


@njit(nogil=True, cache=True)
def _scan_kernel(tables, codes, out, buffer, packed, n_bits):
    """Fill ``out[q, j] = sum_m tables[m, codes[j, m], q]`` chunk by chunk of the database:
    the sums of a chunk are built row by row in a small buffer, contiguous in the queries,
    then written transposed. With ``n_bits > 0`` the codes are ``packed`` and each chunk is
    first unpacked into ``codes`` (a chunk-sized buffer)."""
    n_subspaces, _, n_queries = tables.shape
    n = packed.shape[0] if n_bits > 0 else codes.shape[0]
    step = buffer.shape[0]
    for start in range(0, n, step):
        stop = min(start + step, n)
        if n_bits > 0:
            chunk = codes[:stop - start]
            _unpack_rows(packed[start:stop], n_bits, chunk)
        else:
            chunk = codes[start:stop]
        for j in range(start, stop):
            row = buffer[j - start]
            code = chunk[j - start]
            first = tables[0, code[0]]
            for q in range(n_queries):
                row[q] = first[q]
            for m in range(1, n_subspaces):
                table = tables[m, code[m]]
                for q in range(n_queries):
                    row[q] += table[q]
        for q in range(n_queries):
            dst = out[q]
            for j in range(start, stop):
                dst[j] = buffer[j - start, q]


def _scan(tables, codes, n_bits=None):
    """Sums of a batch of queries' tables over every database code, shape (n_queries, n).

    ``tables`` is laid out (n_subspaces, K, n_queries), so that each database code gathers a
    contiguous row of the batch's sums: one gather per subspace, summed in order, over
    database chunks small enough for the sums to stay in cache. ``codes`` is an
    (n, n_subspaces) integer array, or, when ``n_bits`` is given, the rows packed by
    :func:`skvq.packing.pack_codes` (n, code_size), unpacked a chunk at a time (8- and
    16-bit codes are read in place).
    """
    n_subspaces, _, n_queries = tables.shape
    packed = np.empty((0, 1), dtype=np.uint8)
    bits = 0
    if n_bits == 8:
        n_bits = None
    elif n_bits == 16:
        codes, n_bits = np.ascontiguousarray(codes).view("<u2"), None
    if n_bits is not None:
        packed, bits = np.ascontiguousarray(codes), int(n_bits)
    n = codes.shape[0]
    out = np.empty((n_queries, n), dtype=tables.dtype)
    step = max(256, _SCAN_CHUNK_BYTES // (n_queries * tables.itemsize))
    step = min(step, max(n, 1))
    buffer = np.empty((step, n_queries), dtype=tables.dtype)
    if bits:
        codes = np.empty((step, n_subspaces), dtype=np.uint16)
    _scan_kernel(tables, codes, out, buffer, packed, bits)
    return out


def _smallest(squared, k):
    """The ``k`` smallest entries of each row and their columns, ordered by (value, column).

    Partition finds each row's k-th smallest value; the entries below it and, where several
    equal it, the first of those by column make exactly ``k`` a row, so that the result never
    depends on partition's order and memory stays bounded however many ties there are.
    """
    n_rows, n_cols = squared.shape
    if k < n_cols:
        kth = np.partition(squared, k - 1, axis=1)[:, k - 1:k]
        keep = squared <= kth
        if np.count_nonzero(keep) > n_rows * k:  # ties at the k-th value in some rows
            for i in np.flatnonzero(np.count_nonzero(keep, axis=1) > k):
                n_below = np.count_nonzero(squared[i] < kth[i])
                keep[i, np.flatnonzero(squared[i] == kth[i])[k - n_below:]] = False
        cols = np.flatnonzero(keep).reshape(n_rows, k) % n_cols
    else:
        cols = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    values = np.take_along_axis(squared, cols, axis=1)
    order = np.argsort(values, axis=1, kind="stable")  # columns ascend: ties by column
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(cols, order, axis=1)
