"""The paper's l0 solver (L0Learn) against the exact DP optimum.

L0Learn has wheels only for CPython <= 3.10 and needs numpy < 2: CI runs this file in such
an environment (see .ci/run); elsewhere it skips.
"""

import numpy as np
import pytest

from skvq import L0LeastSquareQuantizer

l0learn = pytest.importorskip("l0learn")


def sse(q, values, weights=None):
    rec = q.codebook_[np.argmin(np.abs(values[:, None] - q.codebook_[None, :]), axis=1)]
    return float(np.sum((1.0 if weights is None else weights) * (values - rec) ** 2))


@pytest.mark.parametrize("data", ["mixture", "uniform", "gaussian", "weights"])
def test_l0learn_never_better_than_dp(data):
    rng = np.random.default_rng(0)
    if data == "mixture":
        x = np.concatenate([rng.normal(20, 5, 100), rng.normal(70, 8, 100)])
    elif data == "uniform":
        x = rng.uniform(0, 100, 200)
    elif data == "gaussian":
        x = rng.normal(50, 15, 200)
    else:  # last-layer-like weights, centred at zero
        x = rng.normal(0, 0.1, 640)
    X = x[None, :]
    values = np.unique(X)
    for n_values in [2, 4, 8, 16]:
        l0 = L0LeastSquareQuantizer(n_values=n_values, solver="l0learn").fit(X)
        dp = L0LeastSquareQuantizer(n_values=n_values, solver="dp").fit(X)
        assert 1 <= l0.n_values_ <= n_values
        assert dp.n_values_ == n_values
        assert sse(dp, values) <= sse(l0, values) * (1 + 1e-9) + 1e-12


def test_l0learn_estimator_contract():
    X = np.random.default_rng(1).normal(size=(10, 8))
    q = L0LeastSquareQuantizer(n_values=4, solver="l0learn").fit(X)
    codes = q.transform(X)
    assert codes.dtype == np.uint8 and codes.shape == X.shape
    assert q.inverse_transform(codes).shape == X.shape
