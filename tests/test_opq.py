"""OPQ's eigenvalue allocation, any finite scale for PQ and OPQ, and bit-packed codes."""

import numpy as np
import pytest

from skvq import OPQ, PQ
from skvq.packing import pack_codes
from skvq.pq import _allocate_eigenvalues, _eigenvalue_allocation, _subspace_bounds

from _data import embeddings




def unit_norm_gaussian(n=3000, d=32, seed=0):
    """Unit-norm vectors with decaying per-dimension scales: every eigenvalue below 1."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * 0.9 ** np.arange(d)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def bucket_log_sums(eigvals, order, sizes):
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return np.array([np.log(eigvals[order[lo:hi]]).sum() for lo, hi in zip(bounds[:-1],
                                                                             bounds[1:])])


@pytest.mark.parametrize("factor", [1.0, 1e-6, 1e6, 1e-250, 1e250])
def test_allocation_is_balanced_and_scale_invariant(factor):
    """All eigenvalues below 1 (unit-norm data): each subspace gets one of the M leading
    directions and the log-products of the subspaces differ by less than the spread of one
    direction (the old greedy put ranks 0 to 5 in one subspace); scaling changes nothing."""
    eigvals = 0.05 * 0.8 ** np.arange(24)
    sizes = np.array([6, 6, 6, 6])
    order = _allocate_eigenvalues(eigvals * factor, sizes)
    np.testing.assert_array_equal(order, _allocate_eigenvalues(eigvals, sizes))
    assert sorted(order) == list(range(24))
    leaders = order.reshape(4, 6).min(axis=1)
    np.testing.assert_array_equal(np.sort(leaders), [0, 1, 2, 3])
    sums = bucket_log_sums(eigvals, order, sizes)
    assert sums.max() - sums.min() <= np.log(eigvals[0] / eigvals[-1])
    # better balanced than dealing the directions out round-robin
    robin = np.arange(24).reshape(6, 4).T.ravel()
    assert np.ptp(sums) <= np.ptp(bucket_log_sums(eigvals, robin, sizes))


def test_allocation_on_unit_norm_embeddings():
    X = embeddings(4000)
    bounds = _subspace_bounds(X.shape[1], 16)
    R = _eigenvalue_allocation(X, bounds)
    np.testing.assert_allclose(R.T @ R, np.eye(X.shape[1]), atol=1e-8)
    # the variance of the rotated data per subspace: no subspace gets all the leading ones
    var = (X @ R).var(axis=0)
    per_subspace = np.array([var[lo:hi].sum() for lo, hi in zip(bounds[:-1], bounds[1:])])
    assert per_subspace.max() < 2 * per_subspace.min()
    top = np.argsort(var)[::-1][:16]  # the 16 leading directions
    assert len(set(np.searchsorted(bounds, top, side="right") - 1)) == 16
    # invariant to the scale of X: the same variance in each subspace (the eigenvectors of
    # nearly equal eigenvalues may turn within their span)
    for factor in (1e-3, 1e3):
        var2 = (X @ _eigenvalue_allocation(X * factor, bounds)).var(axis=0)
        sub2 = np.array([var2[lo:hi].sum() for lo, hi in zip(bounds[:-1], bounds[1:])])
        np.testing.assert_allclose(sub2, per_subspace, rtol=1e-4)


def test_eigenvalue_allocation_opq_no_worse_than_pq_on_embeddings():
    X = embeddings(3000)
    pq = PQ(8, 6, random_state=0).fit(X)
    opq = OPQ(8, 6, n_iter=4, init="eigenvalue_allocation", random_state=0).fit(X)
    assert -opq.score(X) <= -pq.score(X)


def test_eigenvalue_allocation_beats_pq_on_unit_norm_data():
    X = unit_norm_gaussian()
    pq = PQ(4, 5, random_state=0).fit(X)
    opq = OPQ(4, 5, n_iter=3, init="eigenvalue_allocation", random_state=0).fit(X)
    assert -opq.score(X) < -pq.score(X)


# -- any finite scale ---------------------------------------------------------------------

@pytest.mark.parametrize("Estimator, params", [(PQ, {}), (OPQ, {"n_iter": 2})],
                         ids=["PQ", "OPQ"])
@pytest.mark.parametrize("exponent", [-996, -60, 60, 996])  # 2**+-996 ~ 1e+-300
def test_power_of_two_scales_give_the_same_codes(Estimator, params, exponent):
    """X * 2**e is exact: codes equal those at unit scale, codebooks and reconstructions
    scaled back exactly (or to the rounding of the scaled products)."""
    X = unit_norm_gaussian(600, 8)
    s = 2.0**exponent
    ref = Estimator(2, 3, random_state=0, **params).fit(X)
    est = Estimator(2, 3, random_state=0, **params).fit(X * s)
    codes = est.transform(X * s)
    np.testing.assert_array_equal(codes, ref.transform(X))
    np.testing.assert_allclose(est.codebook_ / s, ref.codebook_, rtol=1e-12, atol=0)
    np.testing.assert_allclose(est.inverse_transform(codes) / s, ref.inverse_transform(codes),
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("Estimator, params", [(PQ, {}), (OPQ, {"n_iter": 2})],
                         ids=["PQ", "OPQ"])
@pytest.mark.parametrize("factor", [1e-300, 1e300, np.float32(1e-30), np.float32(1e30)])
def test_extreme_scales_code_to_the_nearest_centroid(Estimator, params, factor):
    """At 1e-300 the codes used to be all 0 and OPQ raised LinAlgError at 1e300: now the
    codes are the nearest centroids (brute force on the data rescaled to unit scale) and
    the relative error is that of unit-scale data."""
    X = unit_norm_gaussian(600, 8)
    dtype = np.float32 if isinstance(factor, np.float32) else np.float64
    Xs = (X * factor).astype(dtype)
    est = Estimator(2, 3, random_state=0, **params).fit(Xs)
    codes = est.transform(Xs)
    assert len(np.unique(codes[:, 0])) == 8
    R = getattr(est, "rotation_", np.eye(8)).astype(np.float64)
    Z = (Xs.astype(np.float64) / factor) @ R
    for m in range(2):
        lo, hi = est.subspace_bounds_[m], est.subspace_bounds_[m + 1]
        C = est.codebook_[m, :, :hi - lo].astype(np.float64) / factor
        brute = ((Z[:, None, lo:hi] - C[None]) ** 2).sum(-1).argmin(1)
        np.testing.assert_array_equal(codes[:, m], brute)
    rec = est.inverse_transform(codes).astype(np.float64) / factor
    unit = Estimator(2, 3, random_state=0, **params).fit(X.astype(dtype))
    unit_mse = np.mean((X - unit.inverse_transform(unit.transform(X.astype(dtype)))) ** 2)
    assert np.mean((X - rec) ** 2) <= 1.5 * unit_mse


# -- bit-packed codes ---------------------------------------------------------------------

@pytest.mark.parametrize("Estimator", [PQ, OPQ])
@pytest.mark.parametrize("n_subspaces, n_bits", [(4, 4), (5, 4), (4, 10), (8, 8), (3, 1)])
def test_pack_roundtrip_and_code_size(Estimator, n_subspaces, n_bits):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2**n_bits + 100, 10))
    params = {"n_iter": 1} if Estimator is OPQ else {}
    est = Estimator(n_subspaces, n_bits, max_iter=2, random_state=0, **params).fit(X)
    codes = est.transform(X)
    packed = est.pack(codes)
    assert packed.dtype == np.uint8
    assert packed.shape == (len(X), est.code_size_)
    assert est.code_size_ == -(-n_subspaces * n_bits // 8)
    np.testing.assert_array_equal(packed, pack_codes(codes, n_bits))
    np.testing.assert_array_equal(est.unpack(packed), codes)
    assert est.unpack(packed).dtype == codes.dtype


def test_four_bit_codes_take_half_a_byte():
    X = np.random.default_rng(0).normal(size=(500, 16))
    pq = PQ(8, 4, max_iter=2, random_state=0).fit(X)
    packed = pq.pack(pq.transform(X))
    assert pq.code_size_ == 4 and packed.nbytes == len(X) * 8 // 2


def test_pack_checks_codes():
    X = np.random.default_rng(0).normal(size=(200, 8))
    pq = PQ(2, 4, max_iter=2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="out of range"):
        pq.pack(np.full((3, 2), 16))
    with pytest.raises(ValueError, match="columns"):
        pq.pack(np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        pq.unpack(np.zeros((3, 2), dtype=np.uint8))


@pytest.mark.parametrize("n_subspaces, n_bits", [(4, 10), (8, 4), (16, 8), (5, 6)])
def test_code_size_and_packing_match_faiss(n_subspaces, n_bits):
    faiss = pytest.importorskip("faiss")
    from skvq.interop import to_faiss

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2**n_bits + 200, 4 * n_subspaces)).astype(np.float32)
    pq = PQ(n_subspaces, n_bits, max_iter=2, random_state=0).fit(X)
    fpq = to_faiss(pq)
    assert pq.code_size_ == fpq.code_size
    np.testing.assert_array_equal(pq.pack(pq.transform(X)), fpq.compute_codes(X))
    del faiss
