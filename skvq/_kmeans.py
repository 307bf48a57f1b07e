"""Lloyd's k-means for vectors, vectorised: the one k-means used by the vector quantizers.

Distances are ``|x|^2 - 2 x.c + |c|^2`` with one BLAS product per batch of rows; centroid
updates are per-dimension ``bincount``; empty clusters are re-seeded by splitting the
largest cluster (faiss' rule), so every centroid ends up used when the data allow it.
"""

import numpy as np
from sklearn.utils._chunking import get_chunk_n_rows


def augment(X):
    """``[X, 1]``: with centroids augmented as ``[-2 C^T; |C|^2]`` one product gives
    ``|c|^2 - 2 x.c``, the squared distance up to the constant ``|x|^2``."""
    out = np.empty((X.shape[0], X.shape[1] + 1), dtype=X.dtype)
    out[:, :-1] = X
    out[:, -1] = 1
    return out


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
    table = np.empty((centers.shape[1] + 1, k), dtype=dtype)
    table[:-1] = -2.0 * centers.T
    table[-1] = np.einsum("ij,ij->i", centers, centers)
    labels = np.empty(n, dtype=np.intp)
    dists = np.empty(n, dtype=dtype) if return_distances else None
    # Small batches keep the distance block in cache: one product, one argmin per batch.
    step = max(1, min(get_chunk_n_rows(row_bytes=8 * k), 4096))
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
            dists[start:start + rows] = np.maximum(
                d[np.arange(rows), lab] + np.einsum("ij,ij->i", sub, sub), 0)
    return (labels, dists) if return_distances else labels


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
        k-means++ seeding, ``k`` distinct rows drawn at random (faiss' default), or initial
        centroids (a warm start; ``n_init`` is then 1).
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
            centers = _kmeans_plusplus(X, k, rng, sq_norms)
        else:
            centers = X[rng.choice(n, size=k, replace=False)].copy()
        prev = np.inf
        n_iter = 0
        for n_iter in range(1, max_iter + 1):
            if tol > 0:
                labels, dists = nearest_centroid(X_aug, centers, return_distances=True,
                                                 augmented=True)
                inertia = float(dists.sum(dtype=np.float64))
            else:
                labels = nearest_centroid(X_aug, centers, augmented=True)
            counts = np.bincount(labels, minlength=k)
            for j in range(d):
                centers[:, j] = np.bincount(labels, weights=X[:, j], minlength=k)
            nonempty = counts > 0
            centers[nonempty] /= counts[nonempty, None]
            _split_largest(centers, counts, rng)
            if tol > 0:
                if prev - inertia <= tol * prev:
                    break
                prev = inertia
        labels, dists = nearest_centroid(X_aug, centers, return_distances=True, augmented=True)
        inertia = float(dists.sum(dtype=np.float64))
        if best is None or inertia < best[2]:
            best = (centers, labels, inertia, n_iter)
    return best


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
