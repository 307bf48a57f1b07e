"""Per-feature and grouped codebooks, per-entry importance, any finite scale, bit packing.

References: the existing single-codebook quantizer fitted on each group alone, brute force
over every partition of a few values, scikit-learn's KMeans per column, bit-by-bit packing.
"""

import itertools
import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from skvq import (
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)
from skvq.packing import pack_codes, packed_row_bytes, unpack_codes

ALL = [
    L0LeastSquareQuantizer(n_values=6, weighting="count"),
    L0LeastSquareQuantizer(n_values=6),
    L1LeastSquareQuantizer(n_values=6, weighting="count"),
    KMeansLSQuantizer(n_values=6, n_init=2, random_state=0, weighting="count"),
    KMeansQuantizer(n_values=6, n_init=2, random_state=0),
    GaussianMixtureQuantizer(n_values=4, random_state=0),
]
ALL_IDS = [f"{type(e).__name__}-{e.weighting}" for e in ALL]


@pytest.fixture(scope="module")
def mlp_weights():
    """First-layer weights (64 x 64) of a small MLP trained on scikit-learn's digits."""
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=60, random_state=0)
        clf.fit(X / 16.0, y)
    return clf.coefs_[0]


def brute_force_codebook_error(values, weights, k):
    """min over partitions of the sorted values into <= k runs of the weighted SSE."""
    m = values.size
    best = np.inf
    for n_cuts in range(0, min(k, m) - 1 + 1):
        for cuts in itertools.combinations(range(1, m), n_cuts):
            bounds = (0,) + cuts + (m,)
            err = 0.0
            for a, b in zip(bounds[:-1], bounds[1:]):
                v, w = values[a:b], weights[a:b]
                err += np.sum(w * (v - np.sum(w * v) / np.sum(w)) ** 2)
            best = min(best, err)
    return best


@pytest.mark.parametrize("est", ALL + [L1LeastSquareQuantizer(alpha=0.05),
                                       L1LeastSquareQuantizer(alpha=0.05, refit=False)],
                         ids=ALL_IDS + ["L1-alpha", "L1-alpha-norefit"])
@pytest.mark.parametrize("group_size", [1, 3, 5])
def test_grouped_equals_fitting_each_group_alone(est, group_size, rng):
    X = np.round(rng.standard_t(2, size=(40, 11)), 2)  # heavy tails and ties
    params = est.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        q = type(est)(**{**params, "group_size": group_size}).fit(X)
    n_groups = -(-X.shape[1] // group_size)
    assert q.n_groups_ == n_groups
    assert q.codebook_.shape == (n_groups, q.n_values_)
    for g in range(n_groups):
        cols = slice(g * group_size, (g + 1) * group_size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            ref = type(est)(**params).fit(X[:, cols])
        assert q.group_n_values_[g] == ref.n_values_
        np.testing.assert_allclose(q.codebook_[g, :ref.n_values_], ref.codebook_,
                                   rtol=1e-10, atol=1e-12)
        # Padding repeats the largest value.
        assert np.all(q.codebook_[g, ref.n_values_:] == ref.codebook_[-1])
        np.testing.assert_allclose(q.inverse_transform(q.transform(X))[:, cols],
                                   ref.inverse_transform(ref.transform(X[:, cols])))


def test_per_feature_l0_is_the_brute_force_optimum(rng):
    X = rng.normal(size=(7, 4))
    w = rng.integers(1, 4, size=7)
    q = L0LeastSquareQuantizer(n_values=3, weighting="count", group_size=1).fit(
        X, sample_weight=w)
    rec = q.inverse_transform(q.transform(X))
    for j in range(4):
        order = np.argsort(X[:, j])
        best = brute_force_codebook_error(X[order, j], w[order].astype(float), 3)
        assert np.sum(w * (X[:, j] - rec[:, j]) ** 2) == pytest.approx(best, rel=1e-10)


def test_importance_is_solved_exactly_by_the_dp(rng):
    """Weighted optimum against brute force, and integer importance = repeated entries."""
    X = rng.normal(size=(6, 3))
    imp = rng.uniform(0.1, 5.0, size=X.shape)
    q = L0LeastSquareQuantizer(n_values=3, weighting="count", group_size=1).fit(
        X, importance=imp)
    rec = q.inverse_transform(q.transform(X))
    for j in range(3):
        order = np.argsort(X[:, j])
        best = brute_force_codebook_error(X[order, j], imp[order, j], 3)
        assert np.sum(imp[:, j] * (X[:, j] - rec[:, j]) ** 2) == pytest.approx(best, rel=1e-10)
    # Shared codebook: integer importances behave as repeated entries.
    counts = rng.integers(1, 4, size=X.shape)
    a = L0LeastSquareQuantizer(n_values=4, weighting="count").fit(X, importance=counts)
    b = L0LeastSquareQuantizer(n_values=4, weighting="count").fit(
        np.repeat(X.ravel(), counts.ravel())[None, :])
    np.testing.assert_allclose(a.codebook_, b.codebook_)


def test_importance_pulls_the_codebook_towards_important_entries():
    X = np.array([[0.0, 1.0, 2.0, 10.0]]).T
    imp = np.array([[1.0, 1.0, 1.0, 100.0]]).T
    plain = L0LeastSquareQuantizer(n_values=1, weighting="count").fit(X)
    weighted = L0LeastSquareQuantizer(n_values=1, weighting="count").fit(X, importance=imp)
    assert plain.codebook_[0] == pytest.approx(13.0 / 4)
    assert weighted.codebook_[0] == pytest.approx(np.sum(imp * X) / np.sum(imp))


@pytest.mark.parametrize("bad, error, match", [
    (np.ones((3, 3)), ValueError, "shape of X"),
    (-np.ones((4, 3)), ValueError, "non-negative"),
    (np.full((4, 3), np.nan), ValueError, "NaN"),
    (np.full((4, 3), "a"), TypeError, "numbers"),
])
def test_bad_importance(bad, error, match):
    X = np.arange(12.0).reshape(4, 3)
    with pytest.raises(error, match=match):
        L0LeastSquareQuantizer(n_values=2).fit(X, importance=bad)


def test_kmeans_per_feature_matches_sklearn_kmeans_per_column(rng):
    X = rng.normal(size=(50, 3))
    q = KMeansQuantizer(n_values=4, random_state=0, group_size=1, weighting="count").fit(X)
    for j in range(3):
        ref = KMeans(n_clusters=4, n_init=10, random_state=0).fit(X[:, j:j + 1])
        np.testing.assert_allclose(q.codebook_[j], np.sort(ref.cluster_centers_.ravel()),
                                   rtol=1e-6)


def test_grouped_codes_are_the_nearest_value_of_the_own_codebook(rng):
    X = rng.laplace(size=(60, 8))
    q = L0LeastSquareQuantizer(n_values=5, weighting="count", group_size=2).fit(X)
    new = rng.laplace(scale=3, size=(30, 8))
    codes = q.transform(new)
    for j in range(8):
        cb = q.codebook_[j // 2, :q.group_n_values_[j // 2]]
        brute = np.argmin(np.abs(new[:, j:j + 1] - cb[None, :]), axis=1)
        np.testing.assert_array_equal(cb[codes[:, j]], cb[brute])


def test_grouped_inverse_transform_checks_each_groups_range():
    X = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0]])
    with pytest.warns(UserWarning, match="distinct values"):
        q = L0LeastSquareQuantizer(n_values=3, group_size=1).fit(X)
    assert list(q.group_n_values_) == [3, 1]
    with pytest.raises(ValueError, match="column 1 belongs to group 1"):
        q.inverse_transform(np.array([[0, 2]]))
    np.testing.assert_allclose(q.inverse_transform([[2, 0]]), [[2.0, 5.0]])


def test_rate_counts_codes_and_codebooks(rng):
    X = rng.normal(size=(100, 16)).astype(np.float32)
    q = L0LeastSquareQuantizer(n_values=16, weighting="count", group_size=4).fit(X)
    assert q.bits_per_code_ == 4
    assert q.codebook_bits_ == 4 * 16 * 32
    assert q.bits_per_entry_ == pytest.approx(4 + 4 * 16 * 32 / X.size)
    assert q.bits_per_sample_ == pytest.approx(16 * 4)
    shared = L0LeastSquareQuantizer(n_values=5).fit(X)
    assert shared.bits_per_code_ == 3 and shared.codebook_bits_ == 5 * 32


@pytest.mark.parametrize("est", ALL + [L0LeastSquareQuantizer(6, group_size=2),
                                       L1LeastSquareQuantizer(n_values=5, group_size=4),
                                       L1LeastSquareQuantizer(alpha=0.3)],
                         ids=ALL_IDS + ["L0-grouped", "L1-grouped", "L1-alpha"])
@pytest.mark.parametrize("c", [1e-300, 1e-150, 1e-12, 1e12, 1e150, 1e300])
def test_any_finite_scale_gives_the_same_relative_error(est, c, rng):
    X = rng.standard_t(3, size=(30, 8))
    params = est.get_params()
    if params.get("n_values") is None:  # a fixed lambda: eq. 6 scales as the squared data
        params["alpha"] = params["alpha"] * c * c
        if not np.isfinite(params["alpha"]) or params["alpha"] == 0:
            pytest.skip("lambda * c**2 is not a float64")
    ref = type(est)(**est.get_params()).fit(X)
    q = type(est)(**params).fit(X * c)
    rel_ref = np.mean((X - ref.inverse_transform(ref.transform(X))) ** 2)
    rec = q.inverse_transform(q.transform(X * c))
    rel = np.mean((X - rec / c) ** 2)
    assert np.all(np.isfinite(q.codebook_))
    # c is not a power of two: X * c differs from X by rounding, which EM and Lloyd iterations
    # may carry a little further than the exact solvers.
    assert rel == pytest.approx(rel_ref, rel=1e-6 if hasattr(est, "solver") else 1e-3)


@pytest.mark.parametrize("est", ALL, ids=ALL_IDS)
def test_real_weights_per_channel_no_exception(est, mlp_weights):
    """A trained network's weights, per output channel (columns of W as stored by sklearn)."""
    W = mlp_weights
    params = est.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        q = type(est)(**{**params, "group_size": 1}).fit(W)
    rec = q.inverse_transform(q.transform(W))
    assert np.all(np.isfinite(rec))
    assert np.mean((W - rec) ** 2) < np.var(W)


def test_per_channel_beats_per_tensor_on_real_weights(mlp_weights):
    W = mlp_weights
    tensor = L0LeastSquareQuantizer(8, weighting="count").fit(W)
    channel = L0LeastSquareQuantizer(8, weighting="count", group_size=1).fit(W)
    assert -channel.score(W) < -tensor.score(W)


# -- bit packing ------------------------------------------------------------------------------
def pack_reference(codes, n_bits):
    """Bit by bit, from the documented layout."""
    n, c = codes.shape
    out = np.zeros((n, packed_row_bytes(c, n_bits)), dtype=np.uint8)
    for i in range(n):
        for j in range(c):
            for b in range(n_bits):
                p = j * n_bits + b
                if (int(codes[i, j]) >> b) & 1:
                    out[i, p // 8] |= 1 << (p % 8)
    return out


@pytest.mark.parametrize("n_bits", range(1, 17))
def test_pack_matches_the_bitwise_reference_and_round_trips(n_bits, rng):
    codes = rng.integers(0, 2**n_bits, size=(5, 13))
    packed = pack_codes(codes, n_bits)
    assert packed.shape == (5, -(-13 * n_bits // 8))
    np.testing.assert_array_equal(packed, pack_reference(codes, n_bits))
    back = unpack_codes(packed, n_bits, 13)
    np.testing.assert_array_equal(back, codes)
    assert back.dtype == (np.uint8 if n_bits <= 8 else np.uint16)


def test_pack_estimator_codes(rng):
    X = rng.normal(size=(20, 7))
    q = L0LeastSquareQuantizer(n_values=8, group_size=1).fit(X)
    codes = q.transform(X)
    packed = pack_codes(codes, q.bits_per_code_)
    assert packed.nbytes == 20 * 3  # 7 codes of 3 bits: 21 bits, 3 bytes a row
    np.testing.assert_array_equal(q.inverse_transform(unpack_codes(packed, 3, 7)),
                                  q.inverse_transform(codes))


def test_pack_errors():
    with pytest.raises(ValueError, match=r"\[1, 16\]"):
        pack_codes(np.zeros((1, 1), dtype=int), 17)
    with pytest.raises(ValueError, match="out of range"):
        pack_codes(np.array([[4]]), 2)
    with pytest.raises(ValueError, match="out of range"):
        pack_codes(np.array([[-1]]), 2)
    with pytest.raises(TypeError, match="integers"):
        pack_codes(np.array([[0.5]]), 2)
    with pytest.raises(ValueError, match="2-D"):
        pack_codes(np.array([1, 2]), 2)
    with pytest.raises(ValueError, match="shape"):
        unpack_codes(np.zeros((1, 2), dtype=np.uint8), 4, 5)
    with pytest.raises(TypeError, match="uint8"):
        unpack_codes(np.zeros((1, 3)), 4, 5)
    assert pack_codes(np.zeros((0, 5), dtype=int), 3).shape == (0, 2)
    assert unpack_codes(np.zeros((2, 0), dtype=np.uint8), 3, 0).shape == (2, 0)


def test_group_without_any_importance_is_fitted_with_uniform_importance(rng):
    """A dead unit's weights get no gradient: its channel is fitted as if unweighted."""
    X = rng.normal(size=(30, 4))
    imp = rng.uniform(0.5, 2.0, size=X.shape)
    imp[:, 2] = 0.0
    q = L0LeastSquareQuantizer(n_values=4, weighting="count", group_size=1).fit(
        X, importance=imp)
    plain = L0LeastSquareQuantizer(n_values=4, weighting="count").fit(X[:, 2:3])
    np.testing.assert_allclose(q.codebook_[2], plain.codebook_)
    alone = L0LeastSquareQuantizer(n_values=4, weighting="count").fit(
        X[:, :1], importance=imp[:, :1])
    np.testing.assert_allclose(q.codebook_[0], alone.codebook_)


def test_grouped_dp_in_chunks_equals_one_pass(rng, monkeypatch):
    """The exact grouped solver works through X in chunks of groups (bounded memory)."""
    import skvq.scalar._least_squares as least_squares

    X = rng.standard_t(3, size=(50, 37))
    whole = L0LeastSquareQuantizer(n_values=5, group_size=3).fit(X)
    monkeypatch.setattr(least_squares, "_CHUNK_ENTRIES", 200)
    chunked = L0LeastSquareQuantizer(n_values=5, group_size=3).fit(X)
    np.testing.assert_array_equal(whole.codebook_, chunked.codebook_)
    np.testing.assert_array_equal(whole.group_n_values_, chunked.group_n_values_)


def test_all_zero_importance_is_uniform_importance(rng):
    """A layer the loss does not use (a pooler) gets no gradient at all."""
    X = rng.normal(size=(20, 3))
    for group_size in (None, 1):
        a = L0LeastSquareQuantizer(n_values=3, weighting="count", group_size=group_size)
        b = L0LeastSquareQuantizer(n_values=3, weighting="count", group_size=group_size)
        a.fit(X, importance=np.zeros_like(X))
        np.testing.assert_array_equal(a.codebook_, b.fit(X).codebook_)


def test_importance_spanning_many_orders_of_magnitude(rng):
    """Squared gradients range over 1e-30 to 1: the prefix sums lose the tiny ones, which
    must not divide by zero (a crash on a trained MLP's Fisher importance)."""
    X = rng.normal(size=(200, 3))
    imp = 10.0 ** rng.uniform(-40, 0, size=X.shape)
    for group_size in (None, 1):
        q = L0LeastSquareQuantizer(n_values=8, weighting="count", group_size=group_size)
        rec = q.fit(X, importance=imp).inverse_transform(q.transform(X))
        assert np.all(np.isfinite(q.codebook_)) and np.all(np.isfinite(rec))
    # Against brute force on a tiny column with weights 1 and 1e-30.
    x = np.array([0.0, 1.0, 2.0, 3.0, 10.0])
    w = np.array([1.0, 1e-30, 1e-30, 1.0, 1.0])
    q = L0LeastSquareQuantizer(n_values=3, weighting="count").fit(x[:, None], importance=w[:, None])
    err = np.sum(w * (x - q.inverse_transform(q.transform(x[:, None])).ravel()) ** 2)
    assert err == pytest.approx(brute_force_codebook_error(x, w, 3), abs=1e-12)


def test_gmm_refuses_importance_by_name():
    X = np.arange(12.0).reshape(4, 3)
    with pytest.raises(TypeError, match="L0LeastSquareQuantizer"):
        GaussianMixtureQuantizer(n_values=2).fit(X, importance=np.ones_like(X))
