"""From one machine to a cluster: dask arrays, fitting on a sample, sharded search.

Every skvq quantizer's ``transform``, ``inverse_transform`` and ``score`` take dask arrays
(:class:`skvq.base.BaseQuantizer` sends them here): ``transform`` maps each row chunk to its
codes with ``map_blocks`` and returns a dask array of chunks ``(row_chunks,
n_code_columns)`` in the code dtype; ``inverse_transform`` maps code chunks back to rows in
the fitted float dtype. Nothing is computed until the result is (``.compute()``,
``.persist()``, ``to_zarr``...), on whichever dask scheduler is active, a
``dask.distributed`` cluster included. A row's code never depends on the other rows, so the
codes equal those of the numpy path.

Fitting is the one step that does not split by rows. Every quantizer's ``fit`` given a dask
array trains on a uniform random sample of at most ``FIT_SAMPLES`` (100,000) of its rows,
drawn chunk by chunk with the estimator's ``random_state``, so that a database of 10^9 rows is
never held in one process. :func:`fit_sample` does the same with a sample size of your choice
(a trade of training time against codebook quality), or draws from a few random chunks only.

:class:`DistributedPQNearestNeighbors` keeps the database's codes as a dask array persisted
on the workers; each worker scans its shards and only the per-shard top ``k`` travel back.
Its answers are those of :class:`skvq.neighbors.PQNearestNeighbors` (same indices, same
distances, ties ordered by index).

dask is imported only by the functions of this module, never by ``import skvq`` or
``import skvq.distributed``.
"""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_array, check_is_fitted

from .base import _is_dask_array, _n_rows_per_batch

__all__ = ["FIT_SAMPLES", "DistributedPQNearestNeighbors", "fit_sample", "sample_rows"]


def _import_dask_array():
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - only without dask
        raise ImportError("skvq.distributed needs dask: pip install 'skvq[dask]' "
                          "(or pip install 'dask[array,distributed]').") from exc
    return da


# -- transform, inverse_transform, score of dask arrays ---------------------------------------

def _rows_only(X, n_columns, what):
    """``X`` 2-D with ``n_columns`` columns in one chunk (row chunks only)."""
    if X.ndim != 2:
        raise ValueError(f"Expected a 2-D dask array for {what}, got {X.ndim} dimension(s) "
                         f"(shape {X.shape}).")
    if X.shape[1] != n_columns:
        return None
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X


def _transform_block(block, estimator):
    # the numpy path's validation without the feature-count check (done once, up front);
    # a chunk of zero rows is a valid chunk
    block = check_array(block, dtype=[np.float64, np.float32], ensure_min_samples=0)
    return estimator._transform(block)


def _dask_transform(estimator, X):
    """Lazy codes of the dask array ``X`` (``estimator`` fitted)."""
    n_features = estimator.n_features_in_
    Xr = _rows_only(X, n_features, "X")
    if Xr is None:
        raise ValueError(f"X has {X.shape[1]} features, but {type(estimator).__name__} is "
                         f"expecting {n_features} features as input.")
    if Xr.dtype.kind not in "biuf":
        raise TypeError(f"X must be a numeric dask array, got dtype {Xr.dtype}.")
    dtype = estimator._code_dtype()
    n_columns = estimator._n_code_columns()
    return Xr.map_blocks(_transform_block, estimator, chunks=(Xr.chunks[0], (n_columns,)),
                         dtype=dtype, meta=np.empty((0, 0), dtype=dtype))


def _inverse_transform_block(block, estimator):
    return estimator._inverse_transform(estimator._check_codes(block))


def _dask_inverse_transform(estimator, codes):
    """Lazy reconstructions of the dask array of ``codes``."""
    n_columns = estimator._n_code_columns()
    if codes.dtype == object or codes.dtype.kind not in "biuf":
        raise TypeError(f"codes must be an array of integers, got an array of dtype "
                        f"{codes.dtype}.")
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D array of shape (n_samples, {n_columns}), got "
                         f"an array of shape {codes.shape}.")
    codes_r = _rows_only(codes, n_columns, "codes")
    if codes_r is None:
        raise ValueError(f"codes have {codes.shape[1]} columns, but "
                         f"{type(estimator).__name__} was fitted with {n_columns} code "
                         "columns.")
    # the reconstruction of zero codes gives the output's width and dtype without data
    empty = estimator._inverse_transform(np.zeros((0, n_columns), dtype=np.intp))
    return codes_r.map_blocks(_inverse_transform_block, estimator,
                              chunks=(codes_r.chunks[0], (empty.shape[1],)),
                              dtype=empty.dtype, meta=empty[:0, :0])


def _squared_error_block(block, estimator):
    block = check_array(block, dtype=[np.float64, np.float32], ensure_min_samples=0)
    total = estimator._mse(block) * block.size if block.size else 0.0
    return np.array([[total, block.size]], dtype=np.float64)


def _dask_score(estimator, X):
    """Negative mean squared reconstruction error of the dask array ``X`` (computed)."""
    Xr = _rows_only(X, estimator.n_features_in_, "X")
    if Xr is None:
        raise ValueError(f"X has {X.shape[1]} features, but {type(estimator).__name__} is "
                         f"expecting {estimator.n_features_in_} features as input.")
    parts = Xr.map_blocks(_squared_error_block, estimator,
                          chunks=((1,) * Xr.numblocks[0], (2,)), dtype=np.float64)
    total, size = parts.sum(axis=0).compute()
    if size == 0:
        raise ValueError("Cannot score an empty array.")
    return -float(total / size)


# -- fitting on a sample ----------------------------------------------------------------------

def _take_rows(block, rows):
    return np.asarray(block)[rows]


def sample_rows(X, n_samples, *, max_chunks=None, random_state=None):
    """A random sample of at most ``n_samples`` rows of the dask array ``X``, as numpy.

    Parameters
    ----------
    X : dask array of shape (n_rows, n_features)
        Rows chunked along the first axis; chunk sizes must be known.
    n_samples : int
        Rows to draw. When ``X`` has no more rows, all of them are returned, in order.
    max_chunks : int or None, default=None
        None: every row has the same chance (a uniform sample without replacement); each
        chunk is computed once, and only its sampled rows leave the worker. An int: the rows
        are drawn from at most ``max_chunks`` chunks picked at random (with probabilities
        proportional to their sizes), so that only those are computed: much faster on a
        large array, but a uniform sample only when the chunks are alike (not for data
        sorted by source or date).
    random_state : int, RandomState instance or None, default=None
        Seeds the draw.

    Returns
    -------
    sample : ndarray of shape (n_drawn, n_features)
        The drawn rows, in their order in ``X``.
    """
    da = _import_dask_array()
    if not _is_dask_array(X):
        raise TypeError(f"X must be a dask array, got {type(X).__name__}.")
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D dask array, got shape {X.shape}.")
    if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}.")
    if max_chunks is not None and (not isinstance(max_chunks, Integral)
                                   or isinstance(max_chunks, bool) or max_chunks < 1):
        raise ValueError(f"max_chunks must be a positive int or None, got {max_chunks!r}.")
    sizes = np.asarray(X.chunks[0], dtype=np.float64)
    if np.isnan(sizes).any():
        raise ValueError("X has chunks of unknown size; call X.compute_chunk_sizes() first.")
    sizes = sizes.astype(np.int64)
    # one Generator seeded from random_state, so that an int, a RandomState or None work
    rng = np.random.default_rng(check_random_state(random_state).randint(2**31 - 1))
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    chunks = np.flatnonzero(sizes)
    if max_chunks is not None and len(chunks) > max_chunks:
        p = sizes[chunks] / sizes[chunks].sum()
        chunks = np.sort(rng.choice(chunks, max_chunks, replace=False, p=p))
    available = int(sizes[chunks].sum())
    if n_samples >= available:
        counts = sizes[chunks]
    else:  # a uniform draw of n_samples rows among the chunks' rows, counted per chunk
        counts = rng.multivariate_hypergeometric(sizes[chunks], int(n_samples),
                                                 method="marginals")
    pieces = []
    for chunk, count in zip(chunks, counts):
        if count == 0:
            continue
        rows = np.sort(rng.choice(sizes[chunk], int(count), replace=False))
        block = X.blocks[int(chunk)]
        pieces.append(block.map_blocks(_take_rows, rows=rows, chunks=((len(rows),), X.chunks[1]),
                                       dtype=X.dtype))
    return da.concatenate(pieces).compute()


# The largest sample ``fit(X)`` draws from a dask array ``X`` (see ``BaseQuantizer.fit``):
# 256 rows per centroid for 2**8 centroids and more, what faiss trains k-means on at most.
FIT_SAMPLES = 100_000


def fit_sample(estimator, X, n_samples=100_000, *, max_chunks=None, random_state=None,
               **fit_params):
    """Fit ``estimator`` on a random sample of at most ``n_samples`` rows of a dask array.

    The array is never gathered in one process: at most one chunk per worker thread is in
    memory at a time, and only the sampled rows travel to the caller, where ``fit`` runs.
    A numpy array (or anything not a dask array) is passed to ``fit`` as it is.

    Parameters
    ----------
    estimator : estimator
        A skvq quantizer (or any estimator with ``fit``), fitted in place.
    X : dask array or array-like of shape (n_rows, n_features)
        Training data, chunked along the rows.
    n_samples : int, default=100_000
        Largest number of training rows. A product quantizer of ``2**n_bits`` centroids per
        subspace needs at least that many; about 256 per centroid is plenty (faiss trains
        on at most 256 per centroid by default).
    max_chunks : int or None, default=None
        Draw from every chunk (None: a uniform sample, one pass over the array) or from at
        most that many chunks picked at random (only those are computed; see
        :func:`sample_rows`).
    random_state : int, RandomState instance or None, default=None
        Seeds the draw (the estimator's own ``random_state`` seeds its fit).
    **fit_params : dict
        Passed to ``estimator.fit``.

    Returns
    -------
    estimator : estimator
        The fitted estimator.

    Examples
    --------
    >>> import dask.array as da
    >>> from skvq import PQ
    >>> from skvq.distributed import fit_sample
    >>> X = da.random.default_rng(0).normal(size=(1_000_000, 16), chunks=(100_000, 16))
    >>> pq = fit_sample(PQ(n_subspaces=4, n_bits=4, random_state=0), X, n_samples=2_000,
    ...                 max_chunks=2, random_state=0)
    >>> codes = pq.transform(X)  # lazy: nothing computed yet
    >>> codes.shape, codes.dtype, codes.chunks[0][:2]
    ((1000000, 4), dtype('uint8'), (100000, 100000))
    """
    if not _is_dask_array(X):
        return estimator.fit(X, **fit_params)
    sample = sample_rows(X, n_samples, max_chunks=max_chunks, random_state=random_state)
    return estimator.fit(sample, **fit_params)


# -- sharded search ---------------------------------------------------------------------------

def _merge_smallest(parts, k):
    """The ``k`` smallest ``(value, index)`` pairs of each row among several candidate lists,
    ordered by value then index (the order of ``PQNearestNeighbors``)."""
    values = np.concatenate([p[0] for p in parts], axis=1)
    indices = np.concatenate([p[1] for p in parts], axis=1)
    order = np.lexsort((indices, values), axis=-1)[:, :k]
    return np.take_along_axis(values, order, axis=1), np.take_along_axis(indices, order, axis=1)


def _search_shard(batches, codes, offset, k):
    """Top ``k`` of each query among one shard of codes, with global indices.

    ``batches`` is a list of look-up tables laid out (n_subspaces, K, n_queries_in_batch).
    The shard is scanned in pieces whose distance arrays stay within ``working_memory``.
    """
    from .neighbors import _scan, _smallest

    codes = np.ascontiguousarray(codes)
    n = codes.shape[0]
    dtype = batches[0].dtype
    n_queries = sum(t.shape[2] for t in batches)
    if n == 0:
        return (np.empty((n_queries, 0), dtype=dtype), np.empty((n_queries, 0), dtype=np.intp))
    results = []
    for tables in batches:
        # per database row: the batch's distances, the partition's copy of them and a mask
        step = _n_rows_per_batch(tables.shape[2] * (2 * dtype.itemsize + 1))
        parts = []
        for start in range(0, n, step):
            squared = _scan(tables, codes[start:start + step])
            values, cols = _smallest(squared, min(k, squared.shape[1]))
            parts.append((values, cols + (offset + start)))
        results.append(parts[0] if len(parts) == 1 else _merge_smallest(parts, k))
    return (np.concatenate([r[0] for r in results]),
            np.concatenate([r[1] for r in results]).astype(np.intp, copy=False))


def _merge_pair(*parts, k):
    return _merge_smallest(parts, k)


class DistributedPQNearestNeighbors(BaseEstimator):
    """Nearest neighbours over product-quantization codes sharded across dask workers.

    :class:`skvq.neighbors.PQNearestNeighbors` for databases that do not fit in one
    process. ``fit`` trains a clone of ``quantizer`` on a random sample of the database
    (:func:`fit_sample`), encodes the database chunk by chunk and persists the codes where
    they were computed: with a ``dask.distributed`` client, on the workers. ``kneighbors``
    computes the queries' look-up tables once, sends them to every shard, lets each worker
    scan its shards and keep their top ``n_neighbors``, and merges those in a tree. The
    answer equals ``PQNearestNeighbors``'s with the same fitted quantizer: the same indices
    and distances, equal distances ordered by database index.

    Parameters
    ----------
    quantizer : estimator or None, default=None
        A product quantizer with ``distance_table`` and ``symmetric_distance_table``
        (:class:`~skvq.PQ` or :class:`~skvq.OPQ`); cloned and fitted on a sample of the
        database in ``fit``. None means ``PQ()``. A quantizer wrapped in
        :class:`sklearn.frozen.FrozenEstimator` is used as it is (not refitted).
    n_neighbors : int, default=5
        Number of neighbours ``kneighbors`` returns by default.
    distance : {"adc", "sdc"}, default="adc"
        Asymmetric or symmetric distance estimates (see ``PQNearestNeighbors``).
    metric : {"euclidean", "inner_product", "cosine"}, default="euclidean"
        What "near" means and what ``kneighbors`` returns, as in ``PQNearestNeighbors``
        (for ``"cosine"`` the database chunks are normalised before the quantizer is
        trained on them and before they are encoded).
    max_train_samples : int, default=100_000
        Rows of the database the quantizer is trained on (:func:`fit_sample`).
    max_train_chunks : int or None, default=None
        Chunks the training rows are drawn from; None draws uniformly from all of them.
    random_state : int, RandomState instance or None, default=None
        Seeds the training sample.

    Attributes
    ----------
    quantizer_ : estimator
        The fitted quantizer.
    codes_ : dask array of shape (n_samples_fit, n_subspaces)
        The database's codes, persisted (on the workers of a distributed client).
    n_samples_fit_ : int
        Number of database vectors.
    n_features_in_ : int
        Number of features of the database vectors.

    See Also
    --------
    skvq.neighbors.PQNearestNeighbors : The same search in one process.

    Notes
    -----
    The scan of a shard holds the distances of one batch of at most 64 queries to a piece of
    the shard sized by scikit-learn's ``working_memory``, on the worker; what travels back
    is ``n_queries * n_neighbors`` distances and indices per chunk of the database. The
    queries are processed in the batches ``PQNearestNeighbors`` uses, so that the look-up
    tables are computed on exactly the same rows and the distances agree to the last bit.
    ``kneighbors`` needs explicit queries (querying the database with itself is
    ``n_samples_fit`` queries).

    Examples
    --------
    >>> import dask.array as da
    >>> from skvq import PQ
    >>> from skvq.distributed import DistributedPQNearestNeighbors
    >>> X = da.random.default_rng(0).normal(size=(20_000, 16), chunks=(5_000, 16))
    >>> nn = DistributedPQNearestNeighbors(PQ(n_subspaces=4, n_bits=6, random_state=0),
    ...                                    n_neighbors=3, random_state=0).fit(X)
    >>> distances, indices = nn.kneighbors(X[:2].compute())
    >>> indices.shape
    (2, 3)
    """

    _parameter_constraints = {
        "quantizer": [HasMethods(["fit", "transform", "distance_table",
                                  "symmetric_distance_table"]), None],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "distance": [StrOptions({"adc", "sdc"})],
        "metric": [StrOptions({"euclidean", "inner_product", "cosine"})],
        "max_train_samples": [Interval(Integral, 1, None, closed="left")],
        "max_train_chunks": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    def __init__(self, quantizer=None, n_neighbors=5, *, distance="adc", metric="euclidean",
                 max_train_samples=100_000, max_train_chunks=None, random_state=None):
        self.quantizer = quantizer
        self.n_neighbors = n_neighbors
        self.distance = distance
        self.metric = metric
        self.max_train_samples = max_train_samples
        self.max_train_chunks = max_train_chunks
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Train the quantizer on a sample of ``X``, encode ``X`` and persist its codes.

        Parameters
        ----------
        X : dask array or array-like of shape (n_samples, n_features)
            Database vectors, chunked along the rows (a numpy array is split into chunks
            of dask's default size).
        y : None
            Ignored.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        from sklearn.frozen import FrozenEstimator

        da = _import_dask_array()
        if not _is_dask_array(X):
            X = da.from_array(check_array(X, dtype=[np.float64, np.float32]))
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array, got shape {X.shape}.")
        if np.isnan(X.shape[0]):
            raise ValueError("X has chunks of unknown size; call X.compute_chunk_sizes() "
                             "first.")
        from .pq import PQ

        if len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        if self.metric == "cosine":  # row by row, as PQNearestNeighbors normalises
            X = X.map_blocks(normalize, dtype=X.dtype)
        quantizer = clone(PQ() if self.quantizer is None else self.quantizer)
        if not isinstance(quantizer, FrozenEstimator):
            fit_sample(quantizer, X, self.max_train_samples, max_chunks=self.max_train_chunks,
                       random_state=self.random_state)
        self.quantizer_ = quantizer
        self.n_features_in_ = self.quantizer_.n_features_in_
        self.codes_ = self.quantizer_.transform(X).persist()
        self.n_samples_fit_ = int(X.shape[0])
        return self

    def _query_step(self):
        # PQNearestNeighbors.kneighbors's batch of queries (its _bytes_per_query), so that
        # the tables are computed on the same rows
        from .neighbors import _MAX_QUERIES_PER_BATCH

        itemsize = np.dtype(self.quantizer_.codebook_.dtype).itemsize
        n_subspaces, n_centroids = self.quantizer_.codebook_.shape[:2]
        per_query = (self.n_samples_fit_ * (2 * itemsize + 1)
                     + 2 * n_subspaces * n_centroids * itemsize)
        return min(_n_rows_per_batch(per_query), _MAX_QUERIES_PER_BATCH)

    def _tables(self, X):
        """Look-up tables of the queries, one (n_subspaces, K, n_batch) array per batch."""
        from .neighbors import _query_tables, _symmetric_tables

        quantizer, metric = self.quantizer_, self.metric
        dtype = quantizer.codebook_.dtype
        symmetric = self.distance == "sdc"
        sdc = (quantizer.symmetric_distance_table()
               if symmetric and metric == "euclidean" else None)
        step = self._query_step()
        batches = []
        for start in range(0, X.shape[0], step):
            rows = X[start:start + step]
            if sdc is not None:
                tables = _symmetric_tables(sdc, quantizer.transform(rows))
            else:
                queries = quantizer.inverse_transform(quantizer.transform(rows)) \
                    if symmetric else rows
                tables = np.moveaxis(_query_tables(quantizer, queries, metric), 0, -1)
            batches.append(np.ascontiguousarray(tables, dtype=dtype))
        return batches

    def kneighbors(self, X, n_neighbors=None, return_distance=True):
        """Find the ``n_neighbors`` nearest database vectors of each query.

        Parameters
        ----------
        X : array-like or dask array of shape (n_queries, n_features)
            Query vectors (a dask array is computed: the queries are held by the caller).
        n_neighbors : int or None, default=None
            Number of neighbours; None means the ``n_neighbors`` parameter.
        return_distance : bool, default=True
            Whether to return the distances.

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors)
            Estimated distances in the metric's terms, nearest first (only if
            ``return_distance``): Euclidean distances (ascending), inner products
            (descending) or cosine distances (ascending).
        indices : ndarray of shape (n_queries, n_neighbors)
            Database indices of the neighbours; equal distances are ordered by index.
        """
        import dask

        from .neighbors import _check_queries

        check_is_fitted(self)
        if X is None:
            raise ValueError("DistributedPQNearestNeighbors.kneighbors needs query vectors X "
                             "(querying the database with itself is not supported).")
        if _is_dask_array(X):
            X = X.compute()
        X, n_neighbors = _check_queries(self, X, n_neighbors)
        if self.metric == "cosine":
            X = normalize(X)
        tables = dask.delayed(self._tables(X), pure=True, traverse=False)
        offsets = np.concatenate([[0], np.cumsum(self.codes_.chunks[0])[:-1]])
        level = [dask.delayed(_search_shard, pure=True)(tables, block, int(offset),
                                                        n_neighbors)
                 for block, offset in zip(self.codes_.to_delayed().ravel(), offsets)]
        # merge in a tree of fan-in 8: no task holds more than 8 shards' candidates
        while len(level) > 1:
            level = [dask.delayed(_merge_pair, pure=True)(*level[i:i + 8], k=n_neighbors)
                     for i in range(0, len(level), 8)]
        from .neighbors import _to_distances

        distances, indices = level[0].compute()
        if return_distance:
            return _to_distances(distances, self.metric), indices
        return indices
