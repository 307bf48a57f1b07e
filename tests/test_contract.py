"""The quantizer contract over every public estimator of tests/_estimators.py (neural ones
included): codes, inverse_transform checks, bad input, pickling, search; and the table's
completeness against the registry."""

import pickle
import sys
import subprocess

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from skvq import (
    KMeansLSQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
    code_dtype,
)
from skvq.metrics import (
    bits_per_sample,
    make_rate_distortion_scorer,
    rate_distortion_cost,
    reconstruction_mse,
)

from _estimators import (CONFIGURATIONS, NEURAL, all_estimators, is_neural, scalar_estimators,
                         unavailable_estimators)
from skvq._registry import QUANTIZERS, estimator_names, public_estimators

ESTIMATORS = all_estimators()
IDS = [f"{type(e).__name__}-{i}" for i, e in enumerate(ESTIMATORS)]
SCALAR = scalar_estimators()
SCALAR_IDS = [f"{type(e).__name__}-{i}" for i, e in enumerate(SCALAR)]


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).normal(size=(40, 6))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the one table: every registered estimator, neural ones included ---------------------------
def test_the_table_has_a_row_for_every_registered_estimator():
    """A quantizer added to the registry without a row here fails (no torch needed)."""
    assert set(CONFIGURATIONS) == set(estimator_names())
    assert NEURAL == {QUANTIZERS[n].class_name for n in QUANTIZERS if QUANTIZERS[n].neural}
    assert NEURAL <= set(CONFIGURATIONS)


def test_the_table_configures_every_available_estimator():
    classes = public_estimators()
    tested = {type(e) for e in ESTIMATORS}
    assert tested == set(classes)
    for cls in classes:  # every row builds instances of its own class only
        assert {type(e) for e in CONFIGURATIONS[cls.__name__]()} == {cls}
    assert {cls.__name__ for cls in classes} | set(unavailable_estimators()) == set(
        estimator_names())


def test_import_does_not_import_torch():
    code = "import sys, skvq; skvq.L0LeastSquareQuantizer(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("n_codes, dtype", [(1, np.uint8), (256, np.uint8), (257, np.uint16),
                                            (65536, np.uint16), (65537, np.uint32),
                                            (2**32, np.uint32), (2**32 + 1, np.uint64)])
def test_code_dtype(n_codes, dtype):
    assert code_dtype(n_codes) == dtype
    assert np.iinfo(code_dtype(n_codes)).max >= n_codes - 1


def test_code_dtype_rejects_zero():
    with pytest.raises(ValueError, match="at least 1"):
        code_dtype(0)


@pytest.mark.parametrize("est", SCALAR, ids=SCALAR_IDS)
def test_round_trip_and_rate(est, X):
    q = clone(est).fit(X)
    codes = q.transform(X)
    assert codes.shape == X.shape
    assert codes.dtype == code_dtype(q.n_values_)
    rec = q.inverse_transform(codes)
    assert rec.dtype == X.dtype and rec.shape == X.shape
    # Codes point at the nearest value of the feature's codebook (brute force over it).
    if q.group_size is None:
        books, n_values = [q.codebook_] * X.shape[1], [q.n_values_] * X.shape[1]
    else:
        books = [q.codebook_[j // q.group_size] for j in range(X.shape[1])]
        n_values = [q.group_n_values_[j // q.group_size] for j in range(X.shape[1])]
    for j, book in enumerate(books):
        brute = np.argmin(np.abs(X[:, j, None] - book[None, :]), axis=-1)
        np.testing.assert_allclose(book[codes[:, j]], book[brute])
    np.testing.assert_allclose(reconstruction_mse(q, X), np.mean((X - rec) ** 2))
    assert q.score(X) == pytest.approx(-np.mean((X - rec) ** 2))
    assert bits_per_sample(q) == pytest.approx(np.sum(np.log2(n_values)))


@pytest.mark.parametrize("est", ESTIMATORS, ids=IDS)
def test_float32_in_float32_out(est, X):
    X32 = X.astype(np.float32)
    q = clone(est).fit(X32)
    if hasattr(q, "codebook_"):  # DeepVQ's and the autoencoders' decoders are networks
        assert q.codebook_.dtype == np.float32
    assert q.inverse_transform(q.transform(X32)).dtype == np.float32


@pytest.mark.parametrize("est", ESTIMATORS, ids=IDS)
def test_bad_input(est, X):
    q = clone(est)
    with pytest.raises(NotFittedError):
        q.transform(X)
    with pytest.raises(NotFittedError):
        q.inverse_transform(np.zeros((2, X.shape[1]), dtype=np.uint8))
    for bad, message in [(np.array([[1.0, np.nan]]), "NaN"), (np.array([[1.0, np.inf]]), "inf"),
                         (np.empty((0, 3)), "0 sample"), (np.arange(5.0), "2D array"),
                         (np.array([["a", "b"]], dtype=object), "")]:
        with pytest.raises(ValueError, match=message or None):
            clone(est).fit(bad)
    q.fit(X)
    with pytest.raises(ValueError, match="features"):
        q.transform(X[:, :-1])
    with pytest.raises(ValueError, match="NaN"):
        q.transform(np.full_like(X, np.nan))
    codes = q.transform(X)
    with pytest.raises(ValueError, match="out of range"):
        q.inverse_transform(np.full_like(codes, q._code_cardinality(), dtype=np.int64))
    with pytest.raises(ValueError, match="out of range"):
        q.inverse_transform(-np.ones_like(codes, dtype=np.int64))
    with pytest.raises(ValueError, match="columns"):
        q.inverse_transform(codes[:, :-1])
    with pytest.raises(ValueError, match="2-D"):
        q.inverse_transform(codes[0])
    with pytest.raises(ValueError, match="whole numbers"):
        q.inverse_transform(codes + 0.5)
    with pytest.raises(TypeError, match="integers"):
        q.inverse_transform(codes.astype(str))


def test_impossible_parameters(X):
    with pytest.raises(ValueError, match="n_values"):
        L0LeastSquareQuantizer(n_values=0).fit(X)
    with pytest.raises(ValueError, match="alpha"):
        L1LeastSquareQuantizer(alpha=-1.0).fit(X)
    with pytest.raises(ValueError, match="solver"):
        L1LeastSquareQuantizer(solver="nope").fit(X)
    with pytest.raises(ValueError, match="(?i)sample.weight"):
        L0LeastSquareQuantizer().fit(X, sample_weight=np.zeros(X.shape[0]))
    with pytest.raises(ValueError, match="(?i)sample.weight"):
        L0LeastSquareQuantizer().fit(X, sample_weight=-np.ones(X.shape[0]))


@pytest.mark.parametrize("est", [L0LeastSquareQuantizer(n_values=10),
                                 KMeansLSQuantizer(n_values=10, n_init=1),
                                 L1LeastSquareQuantizer(n_values=10)], ids=lambda e: type(e).__name__)
def test_more_values_than_distinct_values(est):
    """n_values > number of distinct values: a warning, and the lossless codebook."""
    X = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 5.0]])
    with pytest.warns(UserWarning, match="larger than the number of distinct values"):
        q = clone(est).fit(X)
    np.testing.assert_array_equal(q.codebook_, [0.0, 1.0, 2.0, 5.0])
    np.testing.assert_array_equal(q.inverse_transform(q.transform(X)), X)


@pytest.mark.parametrize("est", ESTIMATORS, ids=IDS)
def test_pickle_round_trip(est, X):
    q = clone(est).fit(X)
    q2 = pickle.loads(pickle.dumps(q))
    codes = q.transform(X)
    np.testing.assert_array_equal(codes, q2.transform(X))
    np.testing.assert_array_equal(q.inverse_transform(codes), q2.inverse_transform(codes))
    if hasattr(q, "codebook_"):
        np.testing.assert_array_equal(q.codebook_, q2.codebook_)


@pytest.mark.parametrize("est", ESTIMATORS, ids=IDS)
def test_same_seed_same_codes(est, X):
    params = {"random_state": 3} if "random_state" in est.get_params() else {}
    a = clone(est).set_params(**params).fit(X).transform(X)
    b = clone(est).set_params(**params).fit(X).transform(X)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("est", ESTIMATORS, ids=IDS)
def test_batches_do_not_change_codes(est, X):
    """transform/inverse_transform in tiny batches (working_memory) give identical results."""
    q = clone(est).fit(X)
    codes = q.transform(X)
    rec = q.inverse_transform(codes)
    # Exact for table look-ups; a rotation (OPQ) is a BLAS product whose last bit may
    # depend on the batch shape, and a network's decoder computes in float32.
    tol = 1e-5 if is_neural(est) else 1e-12
    with sklearn.config_context(working_memory=1e-6):  # one row per batch
        np.testing.assert_array_equal(q.transform(X), codes)
        np.testing.assert_allclose(q.inverse_transform(codes), rec, rtol=tol, atol=tol)
        assert q.score(X) == pytest.approx(-np.mean((X - rec) ** 2))


def test_pandas_output(X):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X, columns=[f"w{i}" for i in range(X.shape[1])])
    q = L0LeastSquareQuantizer(n_values=4).set_output(transform="pandas").fit(df)
    out = q.transform(df)
    assert list(out.columns) == list(df.columns)
    np.testing.assert_array_equal(q.inverse_transform(out), q.codebook_[out.to_numpy()])


def test_pipeline(X):
    pipe = make_pipeline(MinMaxScaler(), L0LeastSquareQuantizer(n_values=4)).fit(X)
    codes = pipe.transform(X)
    assert codes.max() == 3
    rec = pipe.inverse_transform(codes)
    assert rec.shape == X.shape
    assert pipe.score(X) <= 0


def test_grid_search_over_n_values_with_rate_distortion():
    X = load_digits().data
    scorer = make_rate_distortion_scorer(rate_weight=0.01)
    search = GridSearchCV(L0LeastSquareQuantizer(weighting="count"),
                          {"n_values": [2, 4, 8, 16]}, scoring=scorer, cv=3).fit(X)
    # Independent reference: the cost of each candidate computed by hand on the full data.
    costs = {}
    for n in [2, 4, 8, 16]:
        q = L0LeastSquareQuantizer(n_values=n, weighting="count").fit(X)
        mse = np.mean((X - q.inverse_transform(q.transform(X))) ** 2)
        costs[n] = mse / X.var(axis=0).mean() + 0.01 * np.log2(n)
        assert rate_distortion_cost(q, X) == pytest.approx(costs[n])
    assert search.best_params_["n_values"] == min(costs, key=costs.get)
    # Plain -MSE always prefers the largest codebook: why the scorer exists.
    plain = GridSearchCV(L0LeastSquareQuantizer(weighting="count"),
                         {"n_values": [2, 4, 8, 16]}, cv=3).fit(X)
    assert plain.best_params_["n_values"] == 16


def test_grid_search_over_alpha_with_rate_distortion():
    X = load_digits().data / 16.0
    alphas = [1e-4, 1e-2, 1.0, 100.0]
    search = GridSearchCV(L1LeastSquareQuantizer(weighting="count"), {"alpha": alphas},
                          scoring=make_rate_distortion_scorer(0.05), cv=3).fit(X)
    assert search.best_params_["alpha"] in alphas
    costs = [rate_distortion_cost(L1LeastSquareQuantizer(alpha=a, weighting="count").fit(X), X,
                                  0.05) for a in alphas]
    # The choice is not the smallest alpha that plain -MSE would make.
    assert search.best_params_["alpha"] != alphas[0] or np.argmin(costs) == 0
    plain = GridSearchCV(L1LeastSquareQuantizer(weighting="count"), {"alpha": alphas},
                         cv=3).fit(X)
    assert plain.best_params_["alpha"] == alphas[0]


def test_rate_distortion_scorer_on_pipeline(X):
    pipe = make_pipeline(MinMaxScaler(), L0LeastSquareQuantizer(n_values=4)).fit(X)
    scorer = make_rate_distortion_scorer(0.01)
    Xs = pipe[0].transform(X)
    assert scorer(pipe, X) == pytest.approx(-rate_distortion_cost(pipe[-1], Xs, 0.01))
    with pytest.raises(ValueError, match="rate_weight"):
        make_rate_distortion_scorer(-1)
