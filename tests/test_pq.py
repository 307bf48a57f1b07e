"""PQ and OPQ against independent references: brute-force assignment, closed forms, faiss."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.model_selection import GridSearchCV

from skvq import OPQ, PQ
from skvq._kmeans import kmeans
from skvq.metrics import make_rate_distortion_scorer, rate_distortion_cost


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 10)) * 3
    return centers[rng.integers(0, 20, 600)] + rng.normal(size=(600, 10))


def brute_force_codes(q, X, rotation=None):
    Z = X if rotation is None else X @ rotation
    codes = []
    for m in range(q.n_subspaces):
        lo, hi = q.subspace_bounds_[m], q.subspace_bounds_[m + 1]
        C = q.codebook_[m, :, :hi - lo]
        d = ((Z[:, None, lo:hi] - C[None]) ** 2).sum(-1)
        codes.append(d.argmin(1))
    return np.stack(codes, 1)


@pytest.mark.parametrize("n_subspaces, n_bits", [(1, 4), (2, 3), (3, 4), (4, 2), (10, 1)])
def test_codes_are_the_nearest_centroids(X, n_subspaces, n_bits):
    q = PQ(n_subspaces, n_bits, random_state=0).fit(X)
    codes = q.transform(X)
    assert codes.shape == (X.shape[0], n_subspaces) and codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, brute_force_codes(q, X))
    assert q.bits_per_sample_ == n_subspaces * n_bits


def test_uneven_split_and_padding(X):
    q = PQ(3, 3, random_state=0).fit(X)  # 10 features: blocks of 4, 3, 3
    np.testing.assert_array_equal(q.subspace_bounds_, [0, 4, 7, 10])
    assert q.codebook_.shape == (3, 8, 4)
    assert np.all(q.codebook_[1:, :, 3] == 0)
    rec = q.inverse_transform(q.transform(X))
    # Reconstruction is the concatenation of the chosen centroids.
    codes = q.transform(X)
    expected = np.hstack([q.codebook_[m, codes[:, m], :w] for m, w in enumerate([4, 3, 3])])
    np.testing.assert_allclose(rec, expected)


def test_one_subspace_is_kmeans_vq(X):
    """PQ(n_subspaces=1) is plain k-means: a fixed point of Lloyd's iteration, and about as
    good as scikit-learn's KMeans."""
    q = PQ(1, 4, max_iter=100, n_init=5, random_state=0).fit(X)
    codes = q.transform(X)[:, 0]
    np.testing.assert_array_equal(codes, ((X[:, None] - q.codebook_[0][None]) ** 2).sum(-1)
                                  .argmin(1))
    means = np.stack([X[codes == k].mean(0) for k in range(16)])
    np.testing.assert_allclose(q.codebook_[0], means, rtol=1e-6, atol=1e-6)
    ref = KMeans(16, n_init=5, random_state=0).fit(X)
    assert q.inertia_ <= ref.inertia_ * 1.2


def test_inertia_matches_reconstruction_error(X):
    q = PQ(2, 4, random_state=0).fit(X)
    rec = q.inverse_transform(q.transform(X))
    assert q.inertia_ == pytest.approx(np.sum((X - rec) ** 2))


def test_kmeans_lloyd_never_increases_inertia(X):
    rng = np.random.default_rng(1)
    inertias = [kmeans(X, 16, max_iter=it, init="random", rng=np.random.default_rng(3))[2]
                for it in range(1, 8)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(inertias, inertias[1:]))
    centers, labels, _, _ = kmeans(X[:40], 40, max_iter=5, rng=rng)
    assert np.unique(labels).size == 40  # every centroid used (empty-cluster splitting)


def test_distance_tables_are_brute_force(X):
    q = PQ(2, 3, random_state=0).fit(X)
    table = q.distance_table(X[:5])
    codes = q.transform(X)
    rec = q.inverse_transform(codes)
    adc = np.stack([table[i, np.arange(2), codes].sum(-1) for i in range(5)])
    np.testing.assert_allclose(adc, ((X[:5, None] - rec[None]) ** 2).sum(-1), rtol=1e-9,
                               atol=1e-9)
    sdc = q.symmetric_distance_table()
    a, b = codes[0], codes[1]
    assert sdc[np.arange(2), a, b].sum() == pytest.approx(np.sum((rec[0] - rec[1]) ** 2))


def test_opq_rotation_is_orthogonal_and_codes_are_nearest(X):
    for init in ["identity", "eigenvalue_allocation", "random"]:
        q = OPQ(2, 3, n_iter=5, init=init, random_state=0).fit(X)
        R = q.rotation_
        np.testing.assert_allclose(R @ R.T, np.eye(X.shape[1]), atol=1e-10)
        np.testing.assert_array_equal(q.transform(X), brute_force_codes(q, X, R))
        rec = q.inverse_transform(q.transform(X))
        np.testing.assert_allclose(rec, q.pq_.inverse_transform(q.transform(X)) @ R.T)
        table = q.distance_table(X[:3])
        codes = q.transform(X)
        adc = np.stack([table[i, np.arange(2), codes].sum(-1) for i in range(3)])
        np.testing.assert_allclose(adc, ((X[:3, None] - rec[None]) ** 2).sum(-1), rtol=1e-8,
                                   atol=1e-8)


def test_opq_from_identity_never_worse_than_its_first_pq(X):
    """With init='identity' the first step is plain PQ and every later step lowers the error."""
    Xs = X * np.linspace(0.2, 3, X.shape[1])
    first = OPQ(2, 4, n_iter=0, init="identity", random_state=0).fit(Xs)
    later = OPQ(2, 4, n_iter=10, init="identity", random_state=0).fit(Xs)
    assert later.inertia_ <= first.inertia_ * (1 + 1e-9)


def test_too_few_samples_and_too_many_subspaces(X):
    with pytest.raises(ValueError, match="n_samples=10 should be >= 2\\*\\*n_bits=16"):
        PQ(2, 4).fit(X[:10])
    with pytest.raises(ValueError, match="n_subspaces=11 is larger than n_features=10"):
        PQ(11, 2).fit(X)
    with pytest.raises(ValueError, match="n_bits"):
        PQ(2, 17).fit(X)


def test_sixteen_bits_gives_uint16_codes():
    X = np.random.default_rng(0).normal(size=(600, 2))
    q = PQ(1, 9, max_iter=2, init="random", random_state=0).fit(X)
    assert q.transform(X).dtype == np.uint16


def test_max_points_per_centroid_subsamples(X):
    q = PQ(2, 2, max_points_per_centroid=10, random_state=0).fit(X)
    assert q.codebook_.shape == (2, 4, 5)


def test_grid_search_over_code_length(X):
    scorer = make_rate_distortion_scorer(rate_weight=0.05)
    grid = [{"n_subspaces": [1, 2, 5], "n_bits": [1, 2, 4]}]
    search = GridSearchCV(PQ(random_state=0), grid, scoring=scorer, cv=3).fit(X)
    costs = {}
    for m in [1, 2, 5]:
        for b in [1, 2, 4]:
            costs[m, b] = rate_distortion_cost(PQ(m, b, random_state=0).fit(X), X, 0.05)
    best = search.best_params_["n_subspaces"], search.best_params_["n_bits"]
    # The search's choice is among the cheapest by the full-data cost.
    assert costs[best] <= sorted(costs.values())[2] + 1e-9


def test_same_mse_as_faiss_within_a_percent():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(3000, 16)) @ rng.normal(size=(16, 16))).astype(np.float32)
    q = PQ(4, 6, max_iter=20, random_state=0).fit(X)
    mse = np.mean((X - q.inverse_transform(q.transform(X))) ** 2)
    fpq = faiss.ProductQuantizer(16, 4, 6)
    fpq.cp.niter = 20
    fpq.cp.max_points_per_centroid = 10**6
    fpq.train(X)
    fmse = np.mean((X - fpq.decode(fpq.compute_codes(X))) ** 2)
    assert mse <= fmse * 1.01


@pytest.mark.parametrize("estimator", [PQ(3, 3, random_state=0), OPQ(2, 3, n_iter=2, random_state=0)],
                         ids=["PQ", "OPQ"])
def test_thread_count_does_not_change_the_fit(X, estimator, monkeypatch):
    """Subspaces fit on several threads when BLAS may use several: same codebooks as on one
    thread, since every subspace draws from its own generator."""
    import skvq.pq
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits

    monkeypatch.setattr(skvq.pq, "_PARALLEL_FIT_WORK", 1)  # threads even for tiny data

    with threadpool_limits(1):
        one = clone(estimator).fit(X)
    with threadpool_limits(2):
        two = clone(estimator).fit(X)
    np.testing.assert_allclose(one.codebook_, two.codebook_, rtol=1e-12)
    np.testing.assert_array_equal(one.transform(X), two.transform(X))


@pytest.mark.parametrize("n_subspaces", [3, 5])  # 10 features: uneven split, then even
def test_threaded_decode_is_the_concatenated_centroids(X, monkeypatch, n_subspaces):
    """Large outputs are decoded on several threads: every row is still the concatenation of
    its centroids (brute force), for even and uneven splits and any integer code dtype."""
    import skvq.pq
    from threadpoolctl import threadpool_limits

    monkeypatch.setattr(skvq.pq, "_PARALLEL_DECODE_SIZE", 1)
    q = PQ(n_subspaces, 3, random_state=0).fit(X)
    codes = q.transform(X)
    bounds = q.subspace_bounds_
    expected = np.hstack([q.codebook_[m, codes[:, m], :bounds[m + 1] - bounds[m]]
                          for m in range(n_subspaces)])
    with threadpool_limits(2):
        for dtype in (np.uint8, np.int64, np.float64):
            np.testing.assert_array_equal(q.inverse_transform(codes.astype(dtype)), expected)
