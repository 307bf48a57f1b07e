"""The exact l1 solver (eq. 6) on real-like data: no ZeroDivisionError, finite results, and
the optimum.

References, both independent of the solver: the duality gap of the weighted TV problem
(a dual-feasible point built from the residuals bounds the optimum from below, so a zero gap
certifies optimality), and scikit-learn's Lasso on the paper's dense V (eq. 6) built from
its definition.
"""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from skvq import L1LeastSquareQuantizer
from skvq.scalar._solvers import weighted_tv_denoise


def tv_objective(y, w, c, x, anchor=True):
    """1/2 sum w (y - x)^2 + sum c_j |x_j - x_{j-1}| (+ c_0 |x_0| with the anchor)."""
    jumps = np.diff(x, prepend=0.0)
    if not anchor:
        jumps[0] = 0.0
    with np.errstate(invalid="ignore"):
        penalty = np.where(jumps == 0, 0.0, c * np.abs(jumps))  # c = inf, jump 0: no cost
    return 0.5 * np.sum(w * (y - x) ** 2) + np.sum(penalty)


def duality_gap(y, w, c, x, anchor=True):
    """Primal objective at x minus the dual objective at a dual-feasible point built from x.

    The dual of the problem is ``max_{|s_j| <= c_j} -1/2 sum_i (D^T s)_i^2 / w_i
    + sum_i (D^T s)_i y_i`` with ``(D^T s)_i = s_i - s_{i+1}`` (``s_0 = 0`` without the
    anchor); at the optimum ``s_j = sum_{i >= j} w_i (y_i - x_i)``. The gap is never below
    the suboptimality of x, and is 0 at the optimum. Relative to 1/2 sum(w) spread^2.
    """
    s = np.cumsum((w * (y - x))[::-1])[::-1]
    s = np.clip(s, -c, c)
    if not anchor:
        s[0] = 0.0
    dts = s - np.append(s[1:], 0.0)
    dual = -0.5 * np.sum(dts**2 / w) + np.sum(dts * y)
    lo = min(y.min(), 0.0) if anchor else y.min()
    hi = max(y.max(), 0.0) if anchor else y.max()
    return (tv_objective(y, w, c, x, anchor) - dual) / (0.5 * np.sum(w) * (hi - lo) ** 2)


def dense_v(values):
    """The paper's V (section 3.2): V_ij = d_j for j <= i, d_1 = v_1, d_j = v_j - v_{j-1}."""
    d = np.diff(values, prepend=0.0)
    return np.tril(np.ones((values.size, values.size))) * d[None, :]


def lasso_reconstruction(values, weights, lam):
    """Eq. 6 by scikit-learn's Lasso on V: ||v - V a||^2 + lam ||a||_1 (weighted rows)."""
    sw = np.sqrt(weights)
    V = dense_v(values)
    lasso = Lasso(alpha=lam / (2 * values.size), fit_intercept=False, tol=1e-12,
                  max_iter=20000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lasso.fit(V * sw[:, None], values * sw)
    return V @ lasso.coef_


def eq6_objective(values, weights, x, lam):
    """Eq. 6 at the reconstruction x: sum w (v - x)^2 + lam sum |x_j - x_{j-1}| / |d_j|."""
    d = np.abs(np.diff(values, prepend=0.0))
    return 2 * tv_objective(values, weights, lam / (2 * d), x)


def real_like(kind, m, rng):
    """Sorted distinct values of data as found in trained weights and measurements."""
    if kind == "student_t1":  # Cauchy tails: a few values 1e3 times the bulk
        v = rng.standard_t(1, m)
    elif kind == "student_t2":
        v = rng.standard_t(2, m)
    elif kind == "ties":  # few distinct levels, heavily repeated (counted by weights)
        v = np.round(rng.normal(size=m), 1)
    elif kind == "near_duplicates":  # pairs 1 ulp apart
        base = rng.normal(size=(m + 1) // 2)
        v = np.concatenate([base, np.nextafter(base, np.inf)])[:m]
    elif kind == "wide_range":  # magnitudes from 1e-12 to 1e12, both signs
        v = rng.choice([-1.0, 1.0], m) * 10.0 ** rng.uniform(-12, 12, m)
    else:  # "dead_inputs": weight decay leaves 1e-62 .. 1e-5 on inputs that are always 0
        k = max(m // 10, 2)
        v = np.concatenate([0.1 * rng.normal(size=m - k),
                            rng.choice([-1.0, 1.0], k) * 10.0 ** rng.uniform(-62, -5, k)])
    values, counts = np.unique(v, return_counts=True)
    return values, counts.astype(float)


KINDS = ["student_t1", "student_t2", "ties", "near_duplicates", "wide_range", "dead_inputs"]


@pytest.fixture(scope="module")
def mlp_first_layer():
    """The 64 x 64 first layer of an MLP trained on scikit-learn's digits (the reported
    case: 4,096 distinct values, some of them ~1e-62 on pixels that are always 0)."""
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=300, random_state=0)
        clf.fit(X / 16, y)
    return clf.coefs_[0]


def test_mlp_first_layer_every_n_values(mlp_first_layer):
    """The reported crash: ZeroDivisionError at every l from 4 to 32."""
    W = mlp_first_layer
    lo, hi = min(W.min(), 0.0), max(W.max(), 0.0)
    for n_values in range(4, 33):
        q = L1LeastSquareQuantizer(n_values=n_values).fit(W)
        assert 1 <= q.n_values_ <= n_values
        assert np.all(np.isfinite(q.codebook_))
        assert lo <= q.codebook_.min() and q.codebook_.max() <= hi
        rec = q.inverse_transform(q.transform(W))
        assert np.all(np.isfinite(rec))


@pytest.mark.parametrize("lam", [1e-4, 1e-2, 1.0, 100.0])
def test_mlp_first_layer_solution_is_optimal(mlp_first_layer, lam):
    values = np.unique(mlp_first_layer)
    w = np.ones_like(values)
    c = lam / (2 * np.abs(np.diff(values, prepend=0.0)))
    x = weighted_tv_denoise(values, w, c)
    assert np.all(np.isfinite(x))
    assert duality_gap(values, w, c, x) <= 1e-12


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weighting", ["unique", "count"])
def test_tv_matches_dense_lasso_on_real_like_data(kind, weighting):
    """Small sizes: the TV solution is optimal (zero duality gap) and never worse than
    scikit-learn's Lasso on V; where Lasso converges, the two agree."""
    rng = np.random.default_rng(KINDS.index(kind))
    for m in [7, 25, 60]:
        values, counts = real_like(kind, m, rng)
        weights = counts if weighting == "count" else np.ones_like(values)
        scale = np.max(np.abs(values)) ** 2
        for lam in scale * np.array([1e-4, 1e-2, 1.0]):
            x = L1LeastSquareQuantizer(alpha=lam, refit=False)._solve(
                values, None if weighting == "unique" else weights, lam)
            assert np.all(np.isfinite(x))
            c = lam / (2 * np.abs(np.diff(values, prepend=0.0)))
            assert duality_gap(values, weights, c, x) <= 1e-10
            f_tv = eq6_objective(values, weights, x, lam)
            f_lasso = eq6_objective(values, weights, lasso_reconstruction(values, weights, lam),
                                    lam)
            assert f_tv <= f_lasso * (1 + 1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_tv_large_inputs_are_finite_and_optimal(kind):
    rng = np.random.default_rng(10 + KINDS.index(kind))
    values, counts = real_like(kind, 50_000, rng)
    d = np.abs(np.diff(values, prepend=0.0))
    for weights in [np.ones_like(values), counts]:
        for lam in np.max(np.abs(values)) ** 2 * np.array([1e-6, 1e-2, 1.0]):
            c = lam / (2 * d)
            x = weighted_tv_denoise(values, weights, c)
            assert np.all(np.isfinite(x))
            assert min(values.min(), 0) <= x.min() and x.max() <= max(values.max(), 0)
            assert duality_gap(values, weights, c, x) <= 1e-10


@pytest.mark.parametrize("anchor", [True, False])
def test_tv_infinite_and_huge_jump_weights(rng, anchor):
    """c = inf forbids a jump (and pins x_0 to 0); c = 1e300 may not break the DP."""
    for _ in range(50):
        m = int(rng.integers(2, 40))
        y = rng.standard_t(1.5, m)
        w = rng.integers(1, 4, m).astype(float)
        c = rng.choice([0.0, 1e-300, 0.3, 1e300, np.inf], m) * rng.uniform(0.5, 2)
        x = weighted_tv_denoise(y, w, c, anchor=anchor)
        assert np.all(np.isfinite(x))
        forbidden = np.flatnonzero(np.isinf(c[1:])) + 1
        assert np.all(x[forbidden] == x[forbidden - 1])
        if anchor and np.isinf(c[0]):
            assert x[0] == 0
        assert duality_gap(y, w, c, x, anchor) <= 1e-10


def test_tv_any_finite_scale(rng):
    """Data near the overflow and underflow thresholds: the same solution, scaled."""
    y = np.sort(rng.standard_t(2, 300))
    w = np.ones_like(y)
    c = 0.05 / np.abs(np.diff(y, prepend=0.0))
    x = weighted_tv_denoise(y, w, c)
    for s in [2.0**1000, 2.0**-1000]:
        xs = weighted_tv_denoise(y * s, w, c * s)
        assert np.all(np.isfinite(xs))
        np.testing.assert_allclose(xs / s, x, rtol=1e-12, atol=1e-12 * np.abs(y).max())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weighting", ["unique", "count"])
def test_l1_quantizer_on_real_like_data(kind, weighting):
    rng = np.random.default_rng(20 + KINDS.index(kind))
    for m in [60, 20_000]:
        values, counts = real_like(kind, m, rng)
        X = np.repeat(values, counts.astype(int))[rng.permutation(int(counts.sum()))]
        X = X[: X.size - X.size % 4].reshape(-1, 4)
        lo, hi = min(X.min(), 0.0), max(X.max(), 0.0)
        for n_values in [4, 16]:
            q = L1LeastSquareQuantizer(n_values=n_values, weighting=weighting).fit(X)
            assert 1 <= q.n_values_ <= n_values
            assert np.all(np.isfinite(q.codebook_))
            assert lo <= q.codebook_.min() and q.codebook_.max() <= hi
