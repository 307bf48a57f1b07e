"""Lloyd's k-means for vectors, vectorised: the one k-means used by the vector quantizers.

Distances are ``|x|^2 - 2 x.c + |c|^2`` with one BLAS product per block of rows, then one
compiled pass that takes each row's argmin and adds the row to its centroid's sum (no
distance matrix beyond the block, no second pass for the update); empty clusters are re-seeded by splitting the
largest cluster (faiss' rule), so every centroid ends up used when the data allow it.
"""

import math

import numpy as np
from numba import njit
from sklearn.utils._chunking import get_chunk_n_rows


# Rows per block of the distance product: the (block, k) block stays in cache.
_BLOCK = 1024
# k-means++ draws its seeds from a random sample of at most this many rows per centroid.
_SEED_POINTS_PER_CENTROID = 64


def augment(X):
    """``[X, 1]``: with centroids augmented as ``[-2 C^T; |C|^2]`` one product gives
    ``|c|^2 - 2 x.c``, the squared distance up to the constant ``|x|^2``."""
    out = np.empty((X.shape[0], X.shape[1] + 1), dtype=X.dtype)
    out[:, :-1] = X
    out[:, -1] = 1
    return out


def _distance_table(centers, dtype):
    table = np.empty((centers.shape[1] + 1, centers.shape[0]), dtype=dtype)
    table[:-1] = -2.0 * centers.T
    table[-1] = np.einsum("ij,ij->i", centers, centers)
    return table


# Data whose largest magnitude lies in [2**-_SAFE_EXPONENT, 2**_SAFE_EXPONENT] are used as
# they are; beyond, they are rescaled by a power of two (exact) so that squared distances
# neither underflow to 0 nor overflow to inf, in float32 as in float64.
_SAFE_EXPONENT = 16


def unit_scale(X):
    """A power of two ``s`` such that ``X / s`` has its largest magnitude in [0.5, 1), or 1
    when ``X`` is already in a safe range (or all zero): dividing by ``s`` is exact, so codes
    of ``X / s`` against centroids ``C / s`` are those of ``X`` against ``C``."""
    top = float(np.max(np.abs(X))) if X.size else 0.0
    if top == 0.0 or not np.isfinite(top):
        return 1.0
    exponent = np.frexp(top)[1]
    if -_SAFE_EXPONENT <= exponent <= _SAFE_EXPONENT:
        return 1.0
    return float(np.ldexp(1.0, exponent))


@njit(nogil=True, cache=True)
def _exact_sq_distance(X, i, centers, k, inv_row_scale):
    """Squared distance from row ``i`` of ``X`` to centroid ``k`` from the differences, in
    float64 (float32 inputs: the differences and squares are exact), each difference scaled by
    ``inv_row_scale`` (a power of two) so that rows far from the centroids' scale cannot
    overflow."""
    total = 0.0
    for t in range(centers.shape[1]):
        diff = (np.float64(X[i, t]) - np.float64(centers[k, t])) * inv_row_scale
        total += diff * diff
    return total


@njit(nogil=True, cache=True)
def _recheck(d, X, centers, center_norms, gamma, labels, dists, rows):
    """Make the labels of ``rows`` exact: the expanded distances ``d`` (``|c|^2 - 2 x.c``)
    lose up to ``gamma * (|x|^2 + |c_k|^2 + |c_best|^2)`` to rounding (the dot product's
    error bound), so every centroid within that margin of the row's best is compared again
    with :func:`_exact_sq_distance`; the label becomes the nearest centroid in float64 and,
    on exact ties, the lowest index (as faiss and ``np.argmin``). Rows whose expanded
    distances are not finite (far outside the centroids' scale) are searched exactly over
    every centroid. ``labels`` holds each row's argmin on entry; ``rows`` are the rows whose
    second-best expanded distance lies within the margin (found vectorised by the caller).
    ``dists`` (if it has rows) receives the squared distances of these rows."""
    k = d.shape[1]
    for r in range(rows.shape[0]):
        i = rows[r]
        best = labels[i]
        low = np.float64(d[i, best])
        xn = 0.0
        top = 0.0
        for t in range(centers.shape[1]):
            v = np.float64(X[i, t])
            xn += v * v
            top = max(top, abs(v))
        inv_row_scale = 1.0
        finite = np.isfinite(low) and np.isfinite(xn)
        if finite:
            exact_best = _exact_sq_distance(X, i, centers, best, 1.0)
            for j in range(k):
                if j != best and (np.float64(d[i, j]) - low
                                  <= gamma * (xn + center_norms[best] + center_norms[j])):
                    e = _exact_sq_distance(X, i, centers, j, 1.0)
                    if e < exact_best or (e == exact_best and j < best):
                        exact_best = e
                        best = j
        else:
            # scale the differences by the row's largest entry (a power of two)
            inv_row_scale = 1.0 / math.ldexp(1.0, math.frexp(top)[1]) if top > 0 else 1.0
            best = 0
            exact_best = _exact_sq_distance(X, i, centers, 0, inv_row_scale)
            for j in range(1, k):
                e = _exact_sq_distance(X, i, centers, j, inv_row_scale)
                if e < exact_best:
                    exact_best = e
                    best = j
        labels[i] = best
        if dists.shape[0]:
            dists[i] = exact_best / (inv_row_scale * inv_row_scale)


def nearest_centroid(X, centers, return_distances=False, augmented=False, exact=True):
    """Index of the nearest centroid of each row (squared Euclidean), batched and exact.

    Distances are computed with the expanded formula ``|c|^2 - 2 x.c`` (one BLAS product per
    block of rows, in the dtype of ``X``); the rows whose best and other candidates lie
    within the formula's rounding bound are compared again from the differences in float64
    (:func:`_argmin_checked`), so the result is the nearest centroid in float64 arithmetic,
    the lowest index on exact ties, whatever the dtype. Data and centroids far from unit
    scale are first divided by a power of two (:func:`unit_scale`, exact), so that any finite
    scale, 1e-300 to 1e300, gives the codes of the data at unit scale.

    Parameters
    ----------
    X : ndarray of shape (n, d), or (n, d + 1) from :func:`augment` if ``augmented``
    centers : ndarray of shape (k, d)
    return_distances : bool
        Also return the squared distance to the nearest centroid (in float64 for the rows
        compared exactly; it may overflow to inf or underflow to 0 at extreme scales).
    augmented : bool
        ``X`` already carries the column of ones (k-means reuses it across iterations); it
        is then used at its scale, which :func:`kmeans` has made safe.
    exact : bool
        Re-check near ties (default). Lloyd's inner iterations pass False: an assignment
        off by a rounding error there does not change the fit's quality, and the one
        SIMD argmin is faster.
    """
    n, k = X.shape[0], centers.shape[0]
    dtype = X.dtype
    scale = 1.0 if augmented else unit_scale(centers)
    if scale != 1.0:
        centers = centers * (1.0 / scale)
    table = _distance_table(centers, dtype)
    center_norms = np.einsum("ij,ij->i", centers.astype(np.float64),
                             centers.astype(np.float64))
    centers_c = np.ascontiguousarray(centers, dtype=dtype)
    # rounding bound of a (d + 1)-term dot product in ``dtype``, with a safety factor 2
    gamma = 2.0 * (centers.shape[1] + 2) * float(np.finfo(dtype).eps)
    norm_max = float(center_norms.max()) if k else 0.0
    labels = np.empty(n, dtype=np.intp)
    dists = np.empty(n, dtype=np.float64) if return_distances else np.empty(0)
    # Small blocks keep the distance block in cache: one product, one SIMD argmin and one
    # compiled pass (second best, and the exact re-check of the rows near a tie) per block.
    step = max(1, min(get_chunk_n_rows(row_bytes=8 * k), _BLOCK))
    buf = np.empty((min(step, n), k), dtype=dtype)
    for start in range(0, n, step):
        batch = X[start:start + step]
        rows = batch.shape[0]
        if augmented:
            full = batch
        else:
            full = augment(batch)
            if scale != 1.0:
                full[:, :-1] *= 1.0 / scale
        d = buf[:rows]
        np.matmul(full, table, out=d)
        lab = np.argmin(d, axis=1)
        if not (exact or return_distances):
            labels[start:start + rows] = lab
            continue
        block_labels = labels[start:start + rows]
        block_labels[:] = lab
        block_dists = dists[start:start + rows] if return_distances else dists
        at = np.arange(rows)
        low = d[at, lab].astype(np.float64)
        sub = full[:, :-1]
        xn = np.einsum("ij,ij->i", sub, sub).astype(np.float64)
        if return_distances:
            block_dists[:] = np.maximum(low + xn, 0)
        if exact:
            # second-best expanded distance by one more SIMD pass (the best masked out);
            # only the rows within the rounding margin go to the compiled float64 check
            d[at, lab] = np.inf
            second = d.min(axis=1).astype(np.float64)
            margin = gamma * (xn + center_norms[lab] + norm_max)
            near = np.flatnonzero(~(second - low > margin))  # NaN and inf rows as well
            if near.size:
                d[at, lab] = low
                _recheck(d, full, centers_c, center_norms, gamma, block_labels, block_dists,
                         near)
    if not return_distances:
        return labels
    if scale != 1.0:
        dists *= scale * scale
    return labels, dists.astype(dtype, copy=False)


@njit(nogil=True, cache=True)
def _accumulate(X, centers, labels, sums, counts):
    """Centroid sums and counts of an assignment, in one pass; returns its inertia (the sum
    of squared distances to ``centers``, exact, for the ``tol`` test)."""
    n, d = X.shape
    total = 0.0
    for i in range(n):
        a = labels[i]
        dist2 = 0.0
        for t in range(d):
            v = X[i, t]
            diff = v - centers[a, t]
            dist2 += diff * diff
            sums[a, t] += v
        counts[a] += 1
        total += dist2
    return total


def _kmeans_plusplus(X, k, rng, sq_norms):
    """k-means++ seeding: each new centroid drawn with probability proportional to the
    squared distance to the nearest centroid so far (in place, one matrix-vector product per
    centroid)."""
    n = X.shape[0]
    centers = np.empty((k, X.shape[1]), dtype=X.dtype)
    closest = np.full(n, np.inf, dtype=np.float64)
    dist = np.empty(n, dtype=X.dtype)
    idx = int(rng.integers(n))
    for i in range(k):
        centers[i] = X[idx]
        np.matmul(X, X[idx], out=dist)
        dist *= -2
        dist += sq_norms
        dist += sq_norms[idx]
        np.minimum(closest, dist, out=closest)
        np.maximum(closest, 0, out=closest)
        if i + 1 == k:
            break
        cumulative = np.cumsum(closest)
        total = cumulative[-1]
        if total <= 0:
            idx = int(rng.integers(n))
        else:
            idx = min(int(np.searchsorted(cumulative, rng.random() * total)), n - 1)
    return centers


def kmeans(X, k, *, max_iter=20, init="k-means++", n_init=1, tol=0.0, rng=None):
    """Lloyd's k-means.

    Parameters
    ----------
    X : ndarray of shape (n, d), float32 or float64
    k : int
        Number of centroids, ``k <= n``.
    max_iter : int
        Lloyd iterations.
    init : {"k-means++", "random"} or ndarray of shape (k, d)
        k-means++ seeding (from a random sample of at most ``64 * k`` rows; the Lloyd
        iterations then use every row), ``k`` distinct rows drawn at random (faiss'
        default), or initial centroids (a warm start; ``n_init`` is then 1).
    n_init : int
        Restarts; the run with the lowest inertia is kept.
    tol : float
        Stop when the relative decrease of the inertia falls below ``tol`` (0: never early).
    rng : numpy.random.Generator

    Returns
    -------
    centers : ndarray of shape (k, d)
    labels : ndarray of shape (n,)
    inertia : float
        Sum of squared distances to the nearest centroid (inf or 0 where the sum overflows
        or underflows float64; the centroids and labels are still those of the data at unit
        scale).
    n_iter : int
        Iterations of the kept run.
    """
    rng = np.random.default_rng() if rng is None else rng
    scale = unit_scale(X)
    if scale != 1.0:
        # k-means of X / scale (a power of two: exact), scaled back: squared distances
        # neither underflow nor overflow at any finite scale
        if not isinstance(init, str):
            init = np.asarray(init) * (1.0 / scale)
        centers, labels, inertia, n_iter = kmeans(
            X * (1.0 / scale), k, max_iter=max_iter, init=init, n_init=n_init, tol=tol, rng=rng)
        return centers * scale, labels, inertia * scale * scale, n_iter
    n, d = X.shape
    sq_norms = np.einsum("ij,ij->i", X, X)
    X_aug = augment(X)
    best = None
    for _ in range(n_init if isinstance(init, str) else 1):
        if not isinstance(init, str):
            centers = np.array(init, dtype=X.dtype)
        elif init == "k-means++":
            if n > _SEED_POINTS_PER_CENTROID * k:
                # seeding on a sample: as good after the Lloyd iterations, and O(k) passes
                # over a sample instead of over all the rows (benchmarks/bench_pq_speed.py)
                idx = np.sort(rng.choice(n, _SEED_POINTS_PER_CENTROID * k, replace=False))
                centers = _kmeans_plusplus(X[idx], k, rng, sq_norms[idx])
            else:
                centers = _kmeans_plusplus(X, k, rng, sq_norms)
        else:
            centers = X[rng.choice(n, size=k, replace=False)].copy()
        n_iter = _lloyd(X, X_aug, centers, max_iter, tol, rng)
        labels, dists = nearest_centroid(X_aug, centers, return_distances=True, augmented=True)
        inertia = float(dists.sum(dtype=np.float64))
        if best is None or inertia < best[2]:
            best = (centers, labels, inertia, n_iter)
    return best


def _lloyd(X, X_aug, centers, max_iter, tol, rng):
    """Lloyd iterations on ``centers`` in place: one BLAS product and one SIMD argmin per
    block of rows for the assignment, one compiled pass for the centroid sums (which also
    gives the exact inertia of the assignment). Returns the number of iterations run.
    """
    n, d = X.shape
    k = centers.shape[0]
    sums = np.empty((k, d), dtype=np.float64)
    counts = np.empty(k, dtype=np.int64)
    prev = np.inf
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        labels = nearest_centroid(X_aug, centers, augmented=True, exact=False)
        sums[:] = 0
        counts[:] = 0
        inertia = _accumulate(X, centers, labels, sums, counts)
        nonempty = counts > 0
        centers[nonempty] = sums[nonempty] / counts[nonempty, None]
        _split_largest(centers, counts, rng)
        if tol > 0:
            if prev - inertia <= tol * prev:
                break
            prev = inertia
    return n_iter


def _split_largest(centers, counts, rng):
    """Re-seed each empty centroid by splitting the largest cluster in two (as faiss does)."""
    counts = counts.astype(np.float64)
    for empty in np.flatnonzero(counts == 0):
        big = int(np.argmax(counts))
        if counts[big] < 2:
            break
        eps = 1.0 / 1024
        noise = 1 + eps * np.sign(rng.random(centers.shape[1]) - 0.5)
        centers[empty] = centers[big] * noise
        centers[big] = centers[big] / noise
        counts[empty] = counts[big] / 2
        counts[big] -= counts[empty]
