"""Exact nearest codes and any finite scale: skvq's encoder against a float64 brute force
and against faiss."""

import numpy as np
import pytest

from skvq import PQ
from skvq._kmeans import nearest_centroid

from _data import embeddings



def brute_force(X, C):
    """Nearest centroid in float64 from the differences; exact ties to the lowest index."""
    d = ((X.astype(np.float64)[:, None, :] - C.astype(np.float64)[None]) ** 2).sum(-1)
    return d.argmin(1)


def test_exact_ties_go_to_the_lowest_index():
    # every row is exactly halfway between centroids 1 and 3 (integers: no rounding)
    C = np.array([[10.0, 10.0], [0.0, 0.0], [-20.0, 5.0], [2.0, 0.0]], dtype=np.float32)
    X = np.array([[1.0, y] for y in range(-5, 6)], dtype=np.float32)
    np.testing.assert_array_equal(nearest_centroid(X, C), np.ones(len(X)))
    np.testing.assert_array_equal(nearest_centroid(X, C[::-1].copy()), np.full(len(X), 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_near_ties_match_float64_brute_force(dtype):
    """Rows near the midpoint of two centroids far from the origin, where the expanded
    formula cannot tell them apart: float32 rows are the float64 midpoints rounded to
    float32, float64 rows the midpoints moved by 1e-9 (a real gap, far above float64's
    rounding of the reference but below the expanded formula's)."""
    rng = np.random.default_rng(0)
    n, d, k = 3000, 24, 64
    offset = 30.0
    C = (offset + rng.normal(size=(k, d))).astype(dtype)
    X = np.empty((n, d), dtype=dtype)
    for i in range(n):
        a, b = rng.choice(k, 2, replace=False)
        mid = (C[a].astype(np.float64) + C[b]) / 2
        X[i] = mid + (1e-9 if dtype == np.float64 else 1e-4 * rng.choice([0.0, 1.0])) \
            * rng.normal(size=d)
    labels = nearest_centroid(X, C)
    np.testing.assert_array_equal(labels, brute_force(X, C))
    # the expanded formula alone gets some of these wrong (the test is not vacuous)
    expanded = (np.einsum("ij,ij->i", C, C)[None] - 2 * X @ C.T).argmin(1)
    assert np.any(expanded != labels)


@pytest.mark.parametrize("n_bits", [4, 8])
def test_codes_are_float64_brute_force_on_random_data(n_bits):
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(4000, 32)) @ rng.normal(size=(32, 32))).astype(np.float32)
    pq = PQ(4, n_bits, max_iter=5, random_state=0).fit(X[:2000])
    codes = pq.transform(X)
    for m in range(4):
        lo, hi = pq.subspace_bounds_[m], pq.subspace_bounds_[m + 1]
        np.testing.assert_array_equal(codes[:, m], brute_force(X[:, lo:hi], pq.codebook_[m]))


def _faiss_codes(pq, X):
    faiss = pytest.importorskip("faiss")
    from skvq.interop import to_faiss

    fpq = to_faiss(pq)
    codes = fpq.compute_codes(np.ascontiguousarray(X, dtype=np.float32))
    return faiss.unpack_bitstrings(codes, pq.n_subspaces, pq.n_bits) if pq.n_bits != 8 \
        else codes


@pytest.mark.parametrize("n_subspaces, n_bits", [(8, 8), (4, 6), (16, 4)])
def test_same_codes_as_faiss_on_random_data(n_subspaces, n_bits):
    rng = np.random.default_rng(2)
    X = (rng.normal(size=(6000, 64)) * rng.uniform(0.1, 3, 64)).astype(np.float32)
    pq = PQ(n_subspaces, n_bits, max_iter=5, random_state=0).fit(X[:3000])
    np.testing.assert_array_equal(pq.transform(X), _faiss_codes(pq, X))


def test_same_codes_as_faiss_on_the_embeddings():
    X = embeddings(12000)
    pq = PQ(16, 8, max_iter=5, random_state=0).fit(X[:4000])
    codes = pq.transform(X)
    np.testing.assert_array_equal(codes, _faiss_codes(pq, X))
    for m in (0, 7, 15):
        lo, hi = pq.subspace_bounds_[m], pq.subspace_bounds_[m + 1]
        np.testing.assert_array_equal(codes[:, m], brute_force(X[:, lo:hi], pq.codebook_[m]))
