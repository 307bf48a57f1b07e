"""Lloyd's k-means in torch, on whatever device the data live on (DCN's and MDCN's latents).

The numpy k-means of the classical quantizers (:mod:`skvq._kmeans`) needs the data on the
CPU; the latent vectors of a network trained on a GPU would make a round trip to host memory
and back for every fit. This module runs the same algorithm where the tensor is: greedy
k-means++ seeding (Arthur and Vassilvitskii, 2007, with scikit-learn's ``2 + ln k`` local
trials per centroid), then Lloyd iterations whose assignment step is the one torch
nearest-codeword kernel (:func:`~skvq.neural.layers._kernels.nearest_codeword`). Every random
draw comes from a ``torch.Generator``, so a seeded generator gives the same centroids.

This module imports torch: import it only from code that already needs torch.
"""

import math

import torch

from ._kernels import nearest_codeword, squared_distances

__all__ = ["assign", "kmeans", "kmeans_plusplus"]

# k-means++ draws its seeds from a random sample of at most this many rows per centroid
# (as skvq._kmeans does): after the Lloyd iterations the result is as good, and seeding
# costs O(k) passes over the sample instead of over every row.
_SEED_POINTS_PER_CENTROID = 64
# Entries of one (rows, k) block of scores in the assignment step: 2**24 float32 = 64 MiB.
_BLOCK_ENTRIES = 2**24


def _check_data(X, n_clusters):
    if not isinstance(X, torch.Tensor) or X.ndim != 2 or not X.is_floating_point():
        raise ValueError("X must be a 2-D floating-point tensor of shape (n_samples, n_features).")
    n = X.shape[0]
    if isinstance(n_clusters, bool) or int(n_clusters) != n_clusters or n_clusters < 1:
        raise ValueError(f"n_clusters must be a positive int, got {n_clusters!r}.")
    if n_clusters > n:
        raise ValueError(f"n_clusters={n_clusters} is larger than n_samples={n}.")
    if not bool(torch.isfinite(X).all()):
        raise ValueError("X contains NaN or infinity.")
    return int(n_clusters)


def assign(X, centers):
    """Nearest centroid of every row and its squared distance, in blocks of bounded memory.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
    centers : Tensor of shape (n_clusters, n_features)

    Returns
    -------
    labels : Tensor of shape (n_samples,), int64
        Index of the nearest centroid (:func:`nearest_codeword`).
    distances : Tensor of shape (n_samples,), float64
        Squared Euclidean distance to it, computed as ``|x - c|^2`` (not the expanded form,
        so it is exact up to rounding of the difference and never negative).
    """
    n = X.shape[0]
    step = max(1, _BLOCK_ENTRIES // max(1, centers.shape[0]))
    labels = torch.empty(n, dtype=torch.long, device=X.device)
    distances = torch.empty(n, dtype=torch.float64, device=X.device)
    for start in range(0, n, step):
        block = X[start:start + step]
        lab = nearest_codeword(block, centers)
        labels[start:start + step] = lab
        distances[start:start + step] = (block - centers[lab]).double().pow(2).sum(1)
    return labels, distances


def kmeans_plusplus(X, n_clusters, *, generator=None, n_local_trials=None):
    """Greedy k-means++ seeding.

    The first centroid is a row drawn uniformly; each next one is the best, by the potential
    (sum of squared distances to the nearest centroid) it leaves, of ``n_local_trials`` rows
    drawn with probability proportional to their squared distance to the nearest centroid so
    far (Arthur and Vassilvitskii, 2007; the greedy variant of scikit-learn's
    ``kmeans_plusplus``).

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
    n_clusters : int
        At most ``n_samples``.
    generator : torch.Generator or None
        Source of the random draws, on ``X``'s device; ``None`` uses torch's global one.
    n_local_trials : int or None
        Candidates per centroid; ``None`` gives ``2 + floor(ln n_clusters)``.

    Returns
    -------
    centers : Tensor of shape (n_clusters, n_features)
        Rows of ``X``.
    """
    k = _check_data(X, n_clusters)
    n = X.shape[0]
    trials = 2 + int(math.log(k)) if n_local_trials is None else int(n_local_trials)
    device = X.device
    centers = X.new_empty((k, X.shape[1]))
    first = int(torch.randint(n, (1,), generator=generator, device=device))
    centers[0] = X[first]
    closest = squared_distances(X, centers[:1])[:, 0].double()
    potential = closest.sum()
    for c in range(1, k):
        if float(potential) > 0:
            draws = torch.rand(trials, generator=generator, device=device, dtype=torch.float64)
            cumulative = torch.cumsum(closest, 0)
            candidates = torch.searchsorted(cumulative, draws * cumulative[-1]).clamp_(max=n - 1)
        else:  # every row sits on a centroid already: any row will do
            candidates = torch.randint(n, (trials,), generator=generator, device=device)
        trial = torch.minimum(closest[:, None], squared_distances(X, X[candidates]).double())
        potentials = trial.sum(0)
        best = int(torch.argmin(potentials))
        centers[c] = X[candidates[best]]
        closest = trial[:, best].contiguous()
        potential = potentials[best]
    return centers


def _split_largest(centers, counts, generator):
    """Re-seed each empty centroid by splitting the largest cluster in two (faiss' rule, as
    :func:`skvq._kmeans._split_largest`): both halves move a relative ``1/1024`` apart.
    Returns the indices of the split (largest) clusters."""
    empty = torch.nonzero(counts == 0).flatten().tolist()
    counts = counts.double()
    eps = 1.0 / 1024
    split = []
    for j in empty:
        big = int(torch.argmax(counts))
        if float(counts[big]) < 2:
            break
        signs = torch.sign(torch.rand(centers.shape[1], generator=generator,
                                      device=centers.device, dtype=torch.float64) - 0.5)
        noise = (1 + eps * signs).to(centers.dtype)
        centers[j] = centers[big] * noise
        centers[big] = centers[big] / noise
        counts[j] = counts[big] / 2
        counts[big] -= counts[j]
        split.append(big)
    return split


def kmeans(X, n_clusters, *, max_iter=20, init="k-means++", generator=None):
    """Lloyd's k-means on a torch tensor, on the tensor's device.

    Parameters
    ----------
    X : Tensor of shape (n_samples, n_features)
        Finite floating-point data, on any device.
    n_clusters : int
        Number of centroids, at most ``n_samples``.
    max_iter : int, default=20
        Lloyd iterations at most; the loop stops early once an iteration leaves every
        assignment unchanged (a fixed point).
    init : {"k-means++"} or Tensor of shape (n_clusters, n_features), default="k-means++"
        Greedy k-means++ seeding (:func:`kmeans_plusplus`, on a random sample of at most
        ``64 * n_clusters`` rows), or starting centroids.
    generator : torch.Generator or None
        Source of every random draw (seeding, re-seeding of empty clusters), on ``X``'s
        device; ``None`` uses torch's global generator.

    Returns
    -------
    centers : Tensor of shape (n_clusters, n_features)
        In ``X``'s dtype and on its device.
    labels : Tensor of shape (n_samples,), int64
        Nearest centroid of each row (for the returned centers).
    inertia : float
        Sum of squared distances of the rows to their nearest centroid.
    n_iter : int
        Lloyd iterations run.
    """
    k = _check_data(X, n_clusters)
    n, d = X.shape
    if isinstance(init, str):
        if init != "k-means++":
            raise ValueError(f"init must be 'k-means++' or a tensor of centroids, got {init!r}.")
        if n > _SEED_POINTS_PER_CENTROID * k:
            sample = torch.randperm(n, generator=generator, device=X.device)
            sample = sample[:_SEED_POINTS_PER_CENTROID * k]
            centers = kmeans_plusplus(X[sample], k, generator=generator)
        else:
            centers = kmeans_plusplus(X, k, generator=generator)
    else:
        centers = torch.as_tensor(init, dtype=X.dtype, device=X.device).clone()
        if centers.shape != (k, d):
            raise ValueError(f"init must have shape ({k}, {d}), got {tuple(centers.shape)}.")
    # sums in float64: float32 sums of many rows lose the centroid's low digits
    X64 = X.double()
    labels = None
    unsplit = None  # (indices, centroids) of the clusters split by the last update
    n_iter = 0
    for iteration in range(1, int(max_iter) + 1):
        new_labels, _ = assign(X, centers)
        if labels is not None and torch.equal(new_labels, labels):
            if unsplit is not None:
                # the split moved no row (the largest cluster's rows coincide): its means
                # are the fixed point, and the split-off centroids stay empty
                centers[unsplit[0]] = unsplit[1]
            break
        labels = new_labels
        n_iter = iteration
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros((k, d), dtype=torch.float64, device=X.device).index_add_(0, labels, X64)
        nonempty = counts > 0
        centers[nonempty] = (sums[nonempty] / counts[nonempty, None]).to(X.dtype)
        unsplit = None
        if iteration < max_iter and not bool(nonempty.all()):
            means = centers.clone()
            split = _split_largest(centers, counts, generator)
            if split:
                index = torch.as_tensor(split, device=X.device)
                unsplit = (index, means[index])
    labels, distances = assign(X, centers)
    return centers, labels, float(distances.sum()), n_iter
