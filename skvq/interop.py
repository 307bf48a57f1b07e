"""Exchange fitted product quantizers and IVF-PQ indexes with faiss.

:func:`to_faiss` exports a fitted :class:`~skvq.PQ` as a ``faiss.ProductQuantizer`` (and a
fitted :class:`~skvq.OPQ` as a ``faiss.OPQMatrix`` and a ``faiss.ProductQuantizer``), and a
fitted :class:`~skvq.ivf.IVFPQNearestNeighbors` as a ``faiss.IndexIVFPQ`` with its inverted
lists; :func:`from_faiss` imports them back as fitted skvq estimators. Both sides then encode the same
data into the same codes and decode the same codes into the same vectors (faiss computes in
float32, so an exported float64 codebook is rounded to float32).

faiss is imported only when these functions are called: ``pip install faiss-cpu``.
"""

import numpy as np

from .pq import OPQ, PQ

__all__ = ["from_faiss", "to_faiss"]


def _import_faiss():
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(
            "skvq.interop needs faiss, which is not installed: pip install faiss-cpu "
            "(or the optional 'bench' extra: pip install 'skvq[bench]')."
        ) from exc
    return faiss


def to_faiss(quantizer):
    """Export a fitted PQ, OPQ or IVFPQNearestNeighbors to faiss.

    Parameters
    ----------
    quantizer : PQ, OPQ or IVFPQNearestNeighbors
        Fitted quantizer whose ``n_features_in_`` is a multiple of ``n_subspaces`` (faiss
        supports equal subspaces only), or a fitted IVF-PQ searcher whose residual quantizer
        is one.

    Returns
    -------
    index : faiss.IndexIVFPQ or faiss.IndexPreTransform
        For an :class:`~skvq.ivf.IVFPQNearestNeighbors`: an ``IndexIVFPQ`` (``by_residual``,
        ``METRIC_L2`` for ``"euclidean"``, ``METRIC_INNER_PRODUCT`` otherwise, ``nprobe =
        n_probe``) over an ``IndexFlatL2``/``IndexFlatIP`` of the coarse centroids, holding
        the same inverted lists (codes and ids, in the same order, no re-encoding) and,
        for the Euclidean metric, its precomputed table; with an OPQ residual quantizer, an
        ``IndexPreTransform`` of its rotation and an ``IndexIVFPQ`` over the rotated
        centroids (the rotation being orthogonal, the lists and distances are the same).
        It returns the neighbours the searcher returns without re-ranking. For
        ``metric="cosine"``, normalise the queries before searching it.
    product_quantizer : faiss.ProductQuantizer
        For a :class:`~skvq.PQ`: the same codebooks, in float32.
    (opq_matrix, product_quantizer) : tuple of faiss.OPQMatrix and faiss.ProductQuantizer
        For an :class:`~skvq.OPQ`: faiss applies ``y = A x`` with ``A = rotation_.T``, which
        is skvq's ``x @ rotation_``; the product quantizer codes the rotated vectors.
        ``faiss.IndexPreTransform(opq_matrix, index_pq)`` chains them in an index.

    See Also
    --------
    from_faiss : The inverse.

    Notes
    -----
    faiss packs codes of ``n_bits`` other than 8 into bit strings (``code_size`` bytes per
    vector); ``faiss.unpack_bitstrings(codes, n_subspaces, n_bits)`` gives skvq's code array.

    To search with faiss, put the product quantizer in an index: ``index =
    faiss.IndexPQ(n_features, n_subspaces, n_bits)``, ``index.pq = product_quantizer``,
    ``index.is_trained = True``, then ``index.add(X)``; its ADC search finds the neighbours
    :class:`~skvq.neighbors.PQNearestNeighbors` finds.

    Examples
    --------
    >>> import numpy as np
    >>> from skvq import PQ
    >>> from skvq.interop import to_faiss
    >>> X = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
    >>> pq = PQ(n_subspaces=4, n_bits=8, random_state=0).fit(X)
    >>> faiss_pq = to_faiss(pq)
    >>> faiss_pq.M, faiss_pq.nbits, faiss_pq.dsub
    (4, 8, 4)
    >>> bool(np.array_equal(faiss_pq.compute_codes(X), pq.transform(X)))
    True
    """
    faiss = _import_faiss()
    from sklearn.utils.validation import check_is_fitted

    from .ivf import IVFPQNearestNeighbors

    if isinstance(quantizer, IVFPQNearestNeighbors):
        return _ivf_to_faiss(faiss, quantizer)
    if not isinstance(quantizer, (PQ, OPQ)):
        raise TypeError(f"to_faiss exports PQ and OPQ, got {type(quantizer).__name__}.")
    check_is_fitted(quantizer)
    pq = quantizer.pq_ if isinstance(quantizer, OPQ) else quantizer
    n_features, n_subspaces = quantizer.n_features_in_, quantizer.n_subspaces
    if n_features % n_subspaces:
        raise ValueError(
            f"faiss needs n_features to be a multiple of n_subspaces: n_features="
            f"{n_features} is split into {n_subspaces} subspaces of unequal sizes."
        )
    product_quantizer = faiss.ProductQuantizer(n_features, n_subspaces, quantizer.n_bits)
    faiss.copy_array_to_vector(np.ascontiguousarray(pq.codebook_, dtype=np.float32).ravel(),
                               product_quantizer.centroids)
    if isinstance(quantizer, PQ):
        return product_quantizer
    opq_matrix = faiss.OPQMatrix(n_features, n_subspaces)
    faiss.copy_array_to_vector(
        np.ascontiguousarray(quantizer.rotation_.T, dtype=np.float32).ravel(), opq_matrix.A)
    opq_matrix.is_trained = True
    opq_matrix.set_is_orthonormal()  # lets faiss invert it by its transpose
    return opq_matrix, product_quantizer


def from_faiss(product_quantizer, opq_matrix=None):
    """Import a trained faiss product quantizer (with its OPQ rotation if any), or an IVF-PQ.

    Parameters
    ----------
    product_quantizer : faiss.ProductQuantizer, faiss.IndexIVFPQ or faiss.IndexPreTransform
        Trained product quantizer (for OPQ, the one that codes the rotated vectors, for example
        ``faiss.downcast_index(index.index).pq`` of an ``"OPQ...,PQ..."`` index); or an
        ``IndexIVFPQ`` with ``by_residual`` (``METRIC_L2`` or ``METRIC_INNER_PRODUCT``), alone
        or behind an ``OPQMatrix`` in an ``IndexPreTransform``, which is imported as a
        fitted :class:`~skvq.ivf.IVFPQNearestNeighbors` (``n_lists``, ``n_probe`` and the
        metric from faiss, its lists and ids as they are, no vectors kept).
    opq_matrix : faiss.OPQMatrix or None, default=None
        Trained square, orthogonal rotation without bias applied before ``product_quantizer``.

    Returns
    -------
    quantizer : PQ or OPQ
        A fitted skvq quantizer (an :class:`~skvq.OPQ` when ``opq_matrix`` is given) with
        ``n_subspaces`` and ``n_bits`` from faiss and float32 codebooks, so that
        ``transform``, ``inverse_transform``, ``distance_table`` and
        ``symmetric_distance_table`` work. faiss keeps no training statistics: ``inertia_`` and
        ``n_iter_`` are not set, and the other parameters keep their defaults. To search
        with it, pass ``sklearn.frozen.FrozenEstimator(quantizer)`` to
        :class:`~skvq.neighbors.PQNearestNeighbors`, which then does not refit it.

    See Also
    --------
    to_faiss : The inverse.

    Examples
    --------
    >>> import faiss
    >>> import numpy as np
    >>> from skvq.interop import from_faiss
    >>> X = np.random.default_rng(0).normal(size=(2000, 16)).astype(np.float32)
    >>> faiss_pq = faiss.ProductQuantizer(16, 4, 4)
    >>> faiss_pq.train(X)
    >>> pq = from_faiss(faiss_pq)
    >>> pq
    PQ(n_bits=4, n_subspaces=4)
    >>> codes = faiss.unpack_bitstrings(faiss_pq.compute_codes(X), 4, 4)
    >>> bool(np.array_equal(pq.transform(X), codes))
    True
    """
    faiss = _import_faiss()
    if isinstance(product_quantizer, faiss.Index):
        return _ivf_from_faiss(faiss, product_quantizer)
    n_features, n_subspaces, n_bits = (int(product_quantizer.d), int(product_quantizer.M),
                                       int(product_quantizer.nbits))
    n_centroids, width = int(product_quantizer.ksub), int(product_quantizer.dsub)
    centroids = faiss.vector_to_array(product_quantizer.centroids)
    # faiss allocates the centroids as zeros and has no is_trained flag for a bare
    # ProductQuantizer: all zeros is what an untrained one holds.
    if centroids.size != n_subspaces * n_centroids * width or not np.any(centroids):
        raise ValueError("product_quantizer is not trained: its centroids are all zero or "
                         f"missing ({centroids.size} entries, expected "
                         f"{n_subspaces * n_centroids * width}).")
    pq = PQ(n_subspaces=n_subspaces, n_bits=n_bits)
    pq.codebook_ = centroids.astype(np.float32).reshape(n_subspaces, n_centroids, width)
    pq.subspace_bounds_ = np.arange(n_subspaces + 1, dtype=np.intp) * width
    pq.bits_per_sample_ = float(n_subspaces * n_bits)
    pq.n_features_in_ = n_features
    pq._set_code_size()
    if opq_matrix is None:
        return pq

    d_in, d_out = int(opq_matrix.d_in), int(opq_matrix.d_out)
    if d_in != d_out or d_out != n_features:
        raise ValueError(f"opq_matrix must be a square rotation of the product quantizer's "
                         f"{n_features} features, got d_in={d_in}, d_out={d_out}.")
    if not opq_matrix.is_trained:
        raise ValueError("opq_matrix is not trained.")
    if opq_matrix.have_bias and np.any(faiss.vector_to_array(opq_matrix.b)):
        raise ValueError("opq_matrix has a bias; skvq's OPQ is a rotation without bias.")
    rotation = np.ascontiguousarray(
        faiss.vector_to_array(opq_matrix.A).astype(np.float32).reshape(d_out, d_in).T)
    if not np.allclose(rotation @ rotation.T, np.eye(n_features), atol=1e-4):
        raise ValueError("opq_matrix is not orthogonal; skvq's OPQ needs a rotation.")
    opq = OPQ(n_subspaces=n_subspaces, n_bits=n_bits)
    opq.rotation_ = rotation
    opq.pq_ = pq
    opq.codebook_ = pq.codebook_
    opq.subspace_bounds_ = pq.subspace_bounds_
    opq.bits_per_sample_ = pq.bits_per_sample_
    opq.n_features_in_ = n_features
    opq._set_code_size()
    return opq


def _ivf_to_faiss(faiss, ivf):
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(ivf)
    quantizer = getattr(ivf.quantizer_, "estimator", ivf.quantizer_)  # a FrozenEstimator's
    exported = to_faiss(quantizer)
    product_quantizer = exported if isinstance(quantizer, PQ) else exported[1]
    centroids = ivf.centroids_
    if not isinstance(quantizer, PQ):
        centroids = centroids.astype(quantizer.rotation_.dtype) @ quantizer.rotation_
    n_features = ivf.n_features_in_
    euclidean = ivf.metric == "euclidean"
    coarse = faiss.IndexFlatL2(n_features) if euclidean else faiss.IndexFlatIP(n_features)
    coarse.add(np.ascontiguousarray(centroids, dtype=np.float32))
    index = faiss.IndexIVFPQ(coarse, n_features, ivf.n_lists, int(product_quantizer.M),
                             int(product_quantizer.nbits),
                             faiss.METRIC_L2 if euclidean else faiss.METRIC_INNER_PRODUCT)
    index.pq = product_quantizer
    index.by_residual = True
    index.is_trained = True
    if euclidean:
        index.precompute_table()
    offsets = ivf.list_offsets_
    codes = np.ascontiguousarray(ivf.packed_codes_)
    ids = np.ascontiguousarray(ivf.ids_, dtype=np.int64)
    for lst in range(ivf.n_lists):
        lo, hi = int(offsets[lst]), int(offsets[lst + 1])
        if hi > lo:
            index.invlists.add_entries(lst, hi - lo, faiss.swig_ptr(ids[lo:hi]),
                                       faiss.swig_ptr(codes[lo:hi]))
    index.ntotal = ivf.n_samples_fit_
    index.nprobe = min(ivf.n_probe, ivf.n_lists)
    if isinstance(quantizer, PQ):
        return index
    wrapped = faiss.IndexPreTransform(exported[0], index)
    wrapped.ntotal = index.ntotal
    return wrapped


def _ivf_from_faiss(faiss, index):
    from .ivf import IVFPQNearestNeighbors, _precompute_table

    opq_matrix = None
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        if index.chain.size() != 1:
            raise ValueError("Only an IndexPreTransform of one OPQMatrix is imported, got "
                             f"{index.chain.size()} transforms.")
        opq_matrix = faiss.downcast_VectorTransform(index.chain.at(0))
        if not isinstance(opq_matrix, faiss.OPQMatrix):
            raise ValueError("Only an OPQMatrix transform is imported, got "
                             f"{type(opq_matrix).__name__}.")
        index = faiss.downcast_index(index.index)
    if not isinstance(index, faiss.IndexIVFPQ):
        raise TypeError(f"from_faiss imports a ProductQuantizer or an IndexIVFPQ, got "
                        f"{type(index).__name__}.")
    if not index.is_trained:
        raise ValueError("The IndexIVFPQ is not trained.")
    if not index.by_residual:
        raise ValueError("Only an IndexIVFPQ with by_residual=True is imported.")
    metrics = {faiss.METRIC_L2: "euclidean", faiss.METRIC_INNER_PRODUCT: "inner_product"}
    if index.metric_type not in metrics:
        raise ValueError(f"Only METRIC_L2 and METRIC_INNER_PRODUCT are imported, got metric "
                         f"{index.metric_type}.")
    quantizer = from_faiss(index.pq, opq_matrix)
    n_lists = int(index.nlist)
    centroids = faiss.downcast_index(index.quantizer).reconstruct_n(0, n_lists)
    if opq_matrix is not None:
        centroids = centroids @ quantizer.rotation_.T  # back to the input space
    invlists = index.invlists
    code_size = int(index.code_size)
    sizes = np.array([invlists.list_size(lst) for lst in range(n_lists)], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    codes = np.empty((int(offsets[-1]), code_size), dtype=np.uint8)
    ids = np.empty(int(offsets[-1]), dtype=np.int64)
    for lst in np.flatnonzero(sizes):
        lo, hi = int(offsets[lst]), int(offsets[lst + 1])
        codes[lo:hi] = faiss.rev_swig_ptr(invlists.get_codes(int(lst)),
                                          (hi - lo) * code_size).reshape(hi - lo, code_size)
        ids[lo:hi] = faiss.rev_swig_ptr(invlists.get_ids(int(lst)), hi - lo)
    ivf = IVFPQNearestNeighbors(quantizer=type(quantizer)(quantizer.n_subspaces,
                                                          quantizer.n_bits),
                                n_lists=n_lists, n_probe=int(index.nprobe),
                                metric=metrics[index.metric_type])
    ivf.quantizer_ = quantizer
    ivf.centroids_ = np.ascontiguousarray(centroids, dtype=np.float32)
    ivf.list_offsets_ = offsets
    ivf.packed_codes_ = codes
    ivf.code_size_ = code_size
    ivf.ids_ = ids
    ivf.vectors_ = None
    ivf.n_samples_fit_ = int(offsets[-1])
    ivf.n_features_in_ = int(index.d)
    ivf._precomputed_table = _precompute_table(quantizer, ivf.centroids_, ivf.metric)
    return ivf
