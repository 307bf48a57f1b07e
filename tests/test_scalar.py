"""Correctness of the scalar quantizers against independent references.

References: scikit-learn's Lasso on the paper's dense matrix V (eq. 6), brute force over all
supports of alpha (eq. 16), the KKT conditions of eq. 13, scikit-learn's KMeans (Alg. 3).
"""

import itertools
import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans

from skvq import (
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)
from skvq.scalar._least_squares import _l1_objective
from skvq.scalar._solvers import weighted_tv_denoise


def reconstruct(q, values):
    """Nearest codebook value of each value, by brute force."""
    return q.codebook_[np.argmin(np.abs(values[:, None] - q.codebook_[None, :]), axis=1)]


def dense_v(values):
    """The paper's V (section 3.2), built directly from its definition."""
    m = values.size
    V = np.zeros((m, m))
    for i in range(m):
        for j in range(i + 1):
            V[i, j] = values[0] if j == 0 else values[j] - values[j - 1]
    return V


def random_values(rng, kind, m):
    if kind == "positive":
        v = rng.uniform(0.001, 3, m)
    elif kind == "mixed":
        v = rng.uniform(-3, 3, m)
    elif kind == "negative":
        v = rng.uniform(-5, -0.1, m)
    else:  # contains 0 exactly: V's first column is zero
        v = np.concatenate([[0.0], rng.uniform(-2, 2, m - 1)])
    return np.unique(v)


@pytest.mark.parametrize("kind", ["positive", "mixed", "negative", "zero"])
@pytest.mark.parametrize("weighted", [False, True])
def test_tv_solver_matches_lasso_objective(kind, weighted):
    """solver='tv' and solver='cd' (sklearn Lasso on V) reach the same eq. 6 objective."""
    rng = np.random.default_rng(hash((kind, weighted)) % 2**32)
    for _ in range(15):
        values = random_values(rng, kind, int(rng.integers(2, 30)))
        weights = rng.integers(1, 5, values.size).astype(float) if weighted else None
        lam = float(10 ** rng.uniform(-3, 2.5))
        tv = L1LeastSquareQuantizer(alpha=lam, refit=False, solver="tv")
        cd = L1LeastSquareQuantizer(alpha=lam, refit=False, solver="cd", tol=1e-14,
                                    max_iter=10**6)
        x_tv = tv._solve(values, weights, lam)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x_cd = cd._solve(values, weights, lam)
        f_tv = _l1_objective(values, weights, x_tv, lam)
        f_cd = _l1_objective(values, weights, x_cd, lam)
        assert f_tv <= f_cd * (1 + 1e-8) + 1e-12
        assert f_tv == pytest.approx(f_cd, rel=1e-8, abs=1e-12)


def test_tv_objective_is_eq6_in_the_papers_variables(rng):
    """The TV form is a change of variables: eq. 6 evaluated with alpha and V directly."""
    values = random_values(rng, "mixed", 25)
    lam = 0.7
    x = L1LeastSquareQuantizer(alpha=lam, refit=False)._solve(values, None, lam)
    V = dense_v(values)
    alpha = np.linalg.solve(V, x)
    direct = np.sum((values - V @ alpha) ** 2) + lam * np.sum(np.abs(alpha))
    assert _l1_objective(values, None, x, lam) == pytest.approx(direct, rel=1e-10)


def test_tv_solver_large_input_is_finite_and_monotone(rng):
    values = np.unique(rng.normal(size=200_000))
    d = np.diff(values, prepend=0.0)
    x = weighted_tv_denoise(values, np.ones_like(values), 0.5 / np.abs(d))
    assert np.all(np.isfinite(x))
    assert np.unique(x).size < values.size


def brute_force_l0(values, n_values, weights=None):
    """min ||v - V_S a||^2 over every support S with at most n_values distinct outputs."""
    V = dense_v(values)
    w = np.ones_like(values) if weights is None else weights
    sw = np.sqrt(w)
    best = np.sum(w * values**2)  # empty support: w* = 0
    m = values.size
    for size in range(1, m + 1):
        for support in itertools.combinations(range(m), size):
            cols = V[:, support]
            coef, *_ = np.linalg.lstsq(cols * sw[:, None], values * sw, rcond=None)
            x = cols @ coef
            if np.unique(np.round(x, 10)).size <= n_values:
                best = min(best, np.sum(w * (values - x) ** 2))
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weighting", ["unique", "count"])
def test_l0_dp_is_the_brute_force_optimum(seed, weighting):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 9))
    values = random_values(rng, ["positive", "mixed", "zero"][seed % 3], m)
    counts = rng.integers(1, 4, values.size)
    X = np.repeat(values, counts)[None, :]
    weights = counts.astype(float) if weighting == "count" else None
    for n_values in range(1, values.size + 1):
        q = L0LeastSquareQuantizer(n_values=n_values, weighting=weighting).fit(X)
        rec = reconstruct(q, values)
        err = np.sum((1.0 if weights is None else weights) * (values - rec) ** 2)
        assert q.n_values_ == n_values
        assert err == pytest.approx(brute_force_l0(values, n_values, weights), rel=1e-9,
                                    abs=1e-12)


@pytest.mark.parametrize("data", ["mixture", "uniform", "gaussian"])
def test_dp_never_worse_than_kmeans_and_kmeansls_never_worse_than_kmeans(data):
    rng = np.random.default_rng(1)
    if data == "mixture":
        x = np.concatenate([rng.normal(20, 5, 250), rng.normal(70, 8, 250)])
    elif data == "uniform":
        x = rng.uniform(0, 100, 500)
    else:
        x = rng.normal(50, 15, 500)
    X = np.clip(x, 0, 100)[None, :]
    values = np.unique(X)
    for n_values in [2, 5, 16, 40]:
        # The peer on the user's data, as the user gave it.
        ref = KMeans(n_clusters=n_values, n_init=10, random_state=0).fit(X.reshape(-1, 1))
        ref_loss = ref.inertia_
        kls = KMeansLSQuantizer(n_values=n_values, random_state=0).fit(X)
        dp = L0LeastSquareQuantizer(n_values=n_values).fit(X)
        loss = {name: np.sum((values - reconstruct(q, values)) ** 2)
                for name, q in [("kls", kls), ("dp", dp)]}
        assert loss["kls"] <= ref_loss * (1 + 1e-12)
        assert loss["dp"] <= loss["kls"] * (1 + 1e-12)


def test_kmeans_quantizer_matches_sklearn_kmeans(rng):
    X = rng.normal(size=(30, 4))
    q = KMeansQuantizer(n_values=5, random_state=0).fit(X)
    ref = KMeans(n_clusters=5, n_init=10, random_state=0).fit(X.reshape(-1, 1))
    np.testing.assert_allclose(q.codebook_, np.sort(ref.cluster_centers_.ravel()))


def eq13_objective(values, alpha, lam1, lam2):
    V = dense_v(values)
    return (np.sum((values - V @ alpha) ** 2) + lam1 * np.abs(alpha).sum()
            - lam2 * np.sum(alpha**2))


def test_negative_l2_satisfies_kkt_when_convex(rng):
    """With lambda_2 below the smallest eigenvalue of V^T V, eq. 13 is convex: check KKT."""
    values = np.unique(rng.uniform(1, 10, 12))
    V = dense_v(values)
    lam2 = 0.5 * np.linalg.eigvalsh(V.T @ V).min()
    lam1 = 0.5
    q = L1LeastSquareQuantizer(alpha=lam1, negative_l2=lam2, refit=False, tol=1e-14,
                               max_iter=100000)
    x = q._solve(values, None, lam1)
    alpha = np.linalg.solve(V, x)
    grad = 2 * V.T @ (V @ alpha - values) - 2 * lam2 * alpha  # smooth part
    nz = np.abs(alpha) > 1e-9
    np.testing.assert_allclose(grad[nz], -lam1 * np.sign(alpha[nz]), atol=1e-6)
    assert np.all(np.abs(grad[~nz]) <= lam1 + 1e-6)


def test_negative_l2_decreases_eq13_and_stays_bounded(rng):
    """Far beyond convexity (the paper's instability) the result stays finite and in range,
    and eq. 13 is never above its value at the l1 starting point."""
    values = np.unique(rng.uniform(0, 1, 60))
    V = dense_v(values)
    lam1 = 0.05
    x_l1 = L1LeastSquareQuantizer(alpha=lam1, refit=False)._solve(values, None, lam1)
    a_l1 = np.linalg.solve(V, x_l1)
    for lam2 in [1e-6, 4e-3 * lam1, 1.0, 100.0]:
        q = L1LeastSquareQuantizer(alpha=lam1, negative_l2=lam2, refit=False)
        x = q._solve(values, None, lam1)
        assert np.all(np.isfinite(x))
        jumps = np.abs(np.diff(x, prepend=0.0))
        assert jumps.max() <= 2 * np.abs(values).max() * (1 + 1e-12)
        a = np.linalg.solve(V, x)
        assert eq13_objective(values, a, lam1, lam2) <= (
            eq13_objective(values, a_l1, lam1, lam2) + 1e-9)
        q.fit(values[None, :])
        assert np.all(np.isfinite(q.codebook_))


def test_negative_l2_gives_fewer_values_for_the_same_lambda(rng):
    """The paper's observation (Fig. 4): l1 - l2 reaches sparsity with the same lambda_1."""
    X = rng.normal(size=(1, 400))
    l1 = L1LeastSquareQuantizer(alpha=0.05, refit=False).fit(X)
    l12 = L1LeastSquareQuantizer(alpha=0.05, negative_l2=2e-4, refit=False).fit(X)
    assert l12.n_values_ <= l1.n_values_


def test_refit_never_increases_the_squared_error(rng):
    values = np.unique(rng.normal(size=300))
    for lam in [0.01, 0.1, 1.0]:
        raw = L1LeastSquareQuantizer(alpha=lam, refit=False)._solve(values, None, lam)
        ref = L1LeastSquareQuantizer(alpha=lam, refit=True)._solve(values, None, lam)
        # Same support (the refit keeps the jumps), lower squared error.
        np.testing.assert_array_equal(np.diff(raw, prepend=0) != 0,
                                      np.diff(ref, prepend=0) != 0)
        assert np.sum((values - ref) ** 2) <= np.sum((values - raw) ** 2) + 1e-12


@pytest.mark.parametrize("refit", [True, False])
def test_l1_n_values_search(rng, refit):
    X = rng.normal(size=(20, 30))
    for target in [2, 5, 17, 64]:
        q = L1LeastSquareQuantizer(n_values=target, refit=refit).fit(X)
        assert 1 <= q.n_values_ <= target
        # alpha_ is the smallest lambda reaching the target: a slightly smaller one does not.
        values = np.unique(X)
        smaller = q._solve(values, None, q.alpha_ * (1 - 1e-6))
        assert np.unique(smaller).size > target or q.n_values_ == target


def test_unique_weighting_ignores_duplicates_count_weighting_uses_them(rng):
    X = rng.normal(size=(10, 5))
    X_dup = np.vstack([X, np.repeat(X[:1], 20, axis=0)])
    a = L0LeastSquareQuantizer(n_values=4).fit(X).codebook_
    b = L0LeastSquareQuantizer(n_values=4).fit(X_dup).codebook_
    np.testing.assert_array_equal(a, b)
    c = L0LeastSquareQuantizer(n_values=4, weighting="count").fit(X_dup).codebook_
    assert not np.allclose(a, c)


@pytest.mark.parametrize("cls", [L0LeastSquareQuantizer, L1LeastSquareQuantizer,
                                 KMeansLSQuantizer])
def test_integer_sample_weight_equals_repeated_rows(cls, rng):
    X = rng.normal(size=(12, 4))
    sw = rng.integers(0, 4, 12)
    sw[0] = 1
    params = {"weighting": "count"}
    if "random_state" in cls().get_params():
        params["random_state"] = 0
    a = cls(**params).fit(X, sample_weight=sw).codebook_
    b = cls(**params).fit(np.repeat(X, sw, axis=0)).codebook_
    np.testing.assert_allclose(a, b)


def test_count_weighting_minimises_the_array_mse(rng):
    """Weighting by multiplicity is what minimises the MSE of the whole array."""
    X = np.round(rng.exponential(size=(200, 10)), 1)
    mse = {w: -L0LeastSquareQuantizer(n_values=4, weighting=w).fit(X).score(X)
           for w in ["unique", "count"]}
    assert mse["count"] <= mse["unique"]


def test_unseen_values_go_to_the_nearest_value():
    q = L0LeastSquareQuantizer(n_values=3).fit(np.array([[0.0, 0.1, 5.0, 5.1, 10.0, 10.1]]))
    new = np.array([[-100.0, 2.5, 2.6, 7.0, 7.6, 100.0]])
    rec = q.inverse_transform(q.transform(new))
    np.testing.assert_allclose(rec, [[0.05, 0.05, 5.05, 5.05, 10.05, 10.05]])


def test_gmm_codebook_is_component_means(rng):
    X = np.concatenate([rng.normal(0, 0.1, 100), rng.normal(5, 0.1, 100)])[None, :]
    q = GaussianMixtureQuantizer(n_values=2, random_state=0).fit(X)
    np.testing.assert_allclose(q.codebook_, [0, 5], atol=0.05)
