"""Lloyd's k-means for vectors, vectorised: the one k-means used by the vector quantizers.

Distances are ``|x|^2 - 2 x.c + |c|^2`` with one BLAS product per block of rows, then one
compiled pass that takes each row's argmin and adds the row to its centroid's sum (no
distance matrix beyond the block, no second pass for the update); empty clusters are re-seeded by splitting the
largest cluster (faiss' rule), so every centroid ends up used when the data allow it.
"""

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


def nearest_centroid(X, centers, return_distances=False, augmented=False):
    """Index of the nearest centroid of each row (squared Euclidean), batched.

    Parameters
    ----------
    X : ndarray of shape (n, d), or (n, d + 1) from :func:`augment` if ``augmented``
    centers : ndarray of shape (k, d)
    return_distances : bool
        Also return the squared distance to the nearest centroid.
    augmented : bool
        ``X`` already carries the column of ones (k-means reuses it across iterations).
    """
    n, k = X.shape[0], centers.shape[0]
    dtype = X.dtype
    table = _distance_table(centers, dtype)
    labels = np.empty(n, dtype=np.intp)
    dists = np.empty(n, dtype=dtype) if return_distances else None
    # Small blocks keep the distance block in cache: one product, one SIMD argmin per block.
    step = max(1, min(get_chunk_n_rows(row_bytes=8 * k), _BLOCK))
    buf = np.empty((min(step, n), k), dtype=dtype)
    for start in range(0, n, step):
        batch = X[start:start + step]
        rows = batch.shape[0]
        full = batch if augmented else augment(batch)
        d = buf[:rows]
        np.matmul(full, table, out=d)
        lab = np.argmin(d, axis=1)
        labels[start:start + rows] = lab
        if return_distances:
            sub = full[:, :-1]
            norms = np.einsum("ij,ij->i", sub, sub)
            dists[start:start + rows] = np.maximum(d[np.arange(rows), lab] + norms, 0)
    return (labels, dists) if return_distances else labels


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
        Sum of squared distances to the nearest centroid.
    n_iter : int
        Iterations of the kept run.
    """
    rng = np.random.default_rng() if rng is None else rng
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
        labels = nearest_centroid(X_aug, centers, augmented=True)
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
