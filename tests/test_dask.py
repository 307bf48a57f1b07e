"""dask arrays through every quantizer, fitting on a sample, and the sharded search, on a real
two-process ``LocalCluster`` started (and closed) here, bound to 127.0.0.1 only."""

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("dask.distributed")

from skvq import OPQ, PQ, L1LeastSquareQuantizer  # noqa: E402
from skvq.base import code_dtype  # noqa: E402
from skvq.distributed import (  # noqa: E402
    DistributedPQNearestNeighbors,
    fit_sample,
    sample_rows,
)
from skvq.neighbors import PQNearestNeighbors  # noqa: E402

from _estimators import all_estimators  # noqa: E402
from _data import embeddings  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # distributed's notes about ports and event loops
        cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                           host="127.0.0.1", dashboard_address=None)
        client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _data(n=1200, d=8, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(dtype)


def _fitted(estimator, X):
    # trained on 300 rows rounded to one decimal: the scalar quantizers' solvers work on the
    # distinct values, a few dozen here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny neural settings, few distinct values
        return clone(estimator).fit(np.round(X[:300], 1))


# -- import -----------------------------------------------------------------------------------

def test_import_skvq_does_not_import_dask():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import skvq, skvq.distributed, skvq.neighbors
        X = np.random.default_rng(0).normal(size=(64, 4))
        pq = skvq.PQ(2, 2).fit(X)
        pq.inverse_transform(pq.transform(X)); pq.score(X)
        assert not [m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")]
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


# -- transform / inverse_transform / score of dask arrays ----------------------------------------

def test_transform_is_lazy():
    calls = []

    def make_block(block_info=None):
        lo, hi = block_info[None]["array-location"][0]
        calls.append(lo)
        return _data()[lo:hi]

    X = da.map_blocks(make_block, chunks=((500, 400, 300), (8,)), dtype=np.float64)
    pq = PQ(n_subspaces=4, n_bits=3, random_state=0).fit(_data())
    with dask.config.set(scheduler="sync"):
        codes = pq.transform(X)
        rec = pq.inverse_transform(codes)
        assert calls == []  # nothing computed before .compute()
        assert codes.chunks == ((500, 400, 300), (4,)) and codes.dtype == np.uint8
        assert rec.chunks == ((500, 400, 300), (8,)) and rec.dtype == np.float64
        np.testing.assert_array_equal(rec.compute(), pq.inverse_transform(pq.transform(_data())))
        assert sorted(calls) == [0, 500, 900]


def _assert_reconstructions_equal(actual, expected):
    # OPQ rotates back with a matrix product whose rounding depends on where the numpy
    # path's batches and the dask chunks end (BLAS edge kernels): a few ulps
    scale = np.finfo(expected.dtype).eps * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=8 * scale)


@pytest.mark.parametrize("estimator", all_estimators(), ids=lambda e: repr(e)[:60])
def test_dask_path_equals_numpy_path(client, estimator):
    X = _data(900, dtype=np.float32)
    est = _fitted(estimator, X)
    # uneven row chunks, and a chunked feature axis (rechunked to one chunk)
    Xd = da.from_array(X, chunks=((400, 1, 299, 200), (3, 5)))
    codes = est.transform(Xd)
    expected = est.transform(X)
    assert codes.dtype == expected.dtype == code_dtype(est._code_cardinality())
    assert codes.chunks == ((400, 1, 299, 200), (expected.shape[1],))
    np.testing.assert_array_equal(codes.compute(), expected)

    codes_d = da.from_array(expected, chunks=(350, 1))
    rec = est.inverse_transform(codes_d)
    rec_expected = est.inverse_transform(expected)
    assert rec.dtype == rec_expected.dtype
    assert rec.chunks == ((350, 350, 200), (rec_expected.shape[1],))
    _assert_reconstructions_equal(rec.compute(), rec_expected)
    # one float64 sum per chunk instead of per batch, over reconstructions equal to a few
    # float32 ulps (OPQ): equal up to that rounding
    np.testing.assert_allclose(est.score(Xd), est.score(X), rtol=1e-6)

    # dask-ml's ParallelPostFit: its transform maps the estimator over the blocks
    wrappers = pytest.importorskip("dask_ml.wrappers")
    wrapped = wrappers.ParallelPostFit(est)
    codes = wrapped.transform(da.from_array(X, chunks=(300, 8)))
    assert codes.dtype == expected.dtype
    np.testing.assert_array_equal(codes.compute(), expected)
    np.testing.assert_array_equal(wrapped.transform(X), expected)
    # ParallelPostFit has no inverse_transform: the estimator's own dask path decodes


def test_float64_fit_reconstructs_float64_and_float16_input_is_converted(client):
    X = _data()
    pq = PQ(n_subspaces=2, n_bits=4, random_state=0).fit(X)
    X16 = X.astype(np.float16)
    codes = pq.transform(da.from_array(X16, chunks=300))
    np.testing.assert_array_equal(codes.compute(), pq.transform(X16))
    assert pq.inverse_transform(codes).dtype == np.float64


def test_dask_errors():
    pq = PQ(n_subspaces=2, n_bits=2, random_state=0).fit(_data())
    with pytest.raises(ValueError, match="expecting 8 features"):
        pq.transform(da.zeros((10, 5), chunks=5))
    with pytest.raises(ValueError, match="2-D"):
        pq.transform(da.zeros(10, chunks=5))
    with pytest.raises(ValueError, match="3 columns.*2 code columns"):
        pq.inverse_transform(da.zeros((10, 3), dtype=np.uint8, chunks=5))
    with pytest.raises(TypeError, match="codes must be an array of integers"):
        pq.inverse_transform(da.from_array(np.array([["a", "b"]])))
    out_of_range = pq.inverse_transform(da.full((10, 2), 4, dtype=np.uint8, chunks=5))
    with dask.config.set(scheduler="sync"), pytest.raises(ValueError, match="out of range"):
        out_of_range.compute()  # the range is checked when the blocks are computed
    with dask.config.set(scheduler="sync"), pytest.raises(ValueError, match="NaN"):
        pq.transform(da.full((10, 8), np.nan, chunks=5)).compute()
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        PQ().transform(da.zeros((10, 8), chunks=5))


# -- fitting on a sample -----------------------------------------------------------------------

def test_sample_rows_is_a_reproducible_subset_in_order():
    X = np.arange(10_000 * 2, dtype=np.float64).reshape(-1, 2)
    Xd = da.from_array(X, chunks=1000)
    with dask.config.set(scheduler="sync"):
        sample = sample_rows(Xd, 5000, random_state=0)
        again = sample_rows(Xd, 5000, random_state=0)
        other = sample_rows(Xd, 5000, random_state=1)
        everything = sample_rows(Xd, 20_000, random_state=0)
    rows = sample[:, 0].astype(np.int64) // 2
    assert sample.shape == (5000, 2)
    np.testing.assert_array_equal(sample, X[rows])  # rows of X, whole
    assert np.all(np.diff(rows) > 0)  # distinct, in X's order
    np.testing.assert_array_equal(sample, again)
    assert not np.array_equal(sample, other)
    np.testing.assert_array_equal(everything, X)
    # a uniform draw of half the rows takes about half of each chunk (hypergeometric, sd 16)
    per_chunk = np.bincount(rows // 1000, minlength=10)
    assert np.all(np.abs(per_chunk - 500) < 120), per_chunk


def test_sample_rows_from_a_few_chunks():
    X = np.arange(10_000, dtype=np.float64).reshape(-1, 1)
    with dask.config.set(scheduler="sync"):
        sample = sample_rows(da.from_array(X, chunks=1000), 1500, max_chunks=2,
                             random_state=0)
    assert sample.shape == (1500, 1)
    assert len(np.unique(sample[:, 0] // 1000)) == 2


def test_fit_sample_with_every_row_equals_fit(client):
    X = _data(dtype=np.float32)
    est = fit_sample(PQ(n_subspaces=4, n_bits=4, random_state=0),
                     da.from_array(X, chunks=250), n_samples=10**6)
    np.testing.assert_array_equal(est.codebook_, PQ(n_subspaces=4, n_bits=4,
                                                    random_state=0).fit(X).codebook_)
    # a numpy array goes to fit as it is
    np.testing.assert_array_equal(
        fit_sample(PQ(n_subspaces=4, n_bits=4, random_state=0), X).codebook_, est.codebook_)


def test_fit_on_a_billion_rows_without_materialising(client):
    # 10^9 x 8 float64 is 64 GB: only two chunks of 10^6 rows are ever computed
    X = da.random.default_rng(0).normal(size=(10**9, 8), chunks=(10**6, 8))
    pq = fit_sample(PQ(n_subspaces=2, n_bits=4, random_state=0), X, n_samples=4000,
                    max_chunks=2, random_state=0)
    assert pq.codebook_.shape == (2, 16, 4)
    codes = pq.transform(X)  # lazy, 10^9 rows
    assert codes.shape == (10**9, 2)
    np.testing.assert_array_equal(codes[:1000].compute(), pq.transform(X[:1000].compute()))


def test_fit_sample_errors():
    X = da.zeros((100, 2), chunks=10)
    with pytest.raises(ValueError, match="n_samples"):
        fit_sample(PQ(), X, n_samples=0)
    with pytest.raises(ValueError, match="max_chunks"):
        fit_sample(PQ(), X, max_chunks=0)
    with pytest.raises(TypeError, match="dask array"):
        sample_rows(np.zeros((3, 2)), 2)


# -- sharded search ----------------------------------------------------------------------------

@pytest.mark.parametrize("distance, metric", [("adc", "euclidean"), ("sdc", "euclidean"),
                                              ("adc", "inner_product"), ("sdc", "cosine")])
@pytest.mark.parametrize("quantizer", [PQ(n_subspaces=4, n_bits=5, random_state=0),
                                       OPQ(n_subspaces=2, n_bits=4, n_iter=3, random_state=0)],
                         ids=["PQ", "OPQ"])
def test_sharded_search_equals_single_process(client, quantizer, distance, metric):
    X = _data(3000, 8, dtype=np.float32)
    Q = _data(150, 8, seed=1, dtype=np.float32)
    fitted = clone(quantizer).fit(X)
    ref = PQNearestNeighbors(FrozenEstimator(fitted), n_neighbors=10, distance=distance,
                             metric=metric).fit(X)
    nn = DistributedPQNearestNeighbors(FrozenEstimator(fitted), n_neighbors=10,
                                       distance=distance, metric=metric)
    nn.fit(da.from_array(X, chunks=((1000, 7, 993, 1000), (8,))))
    d_ref, i_ref = ref.kneighbors(Q)
    d, i = nn.kneighbors(Q)
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_array_equal(d, d_ref)
    assert d.dtype == d_ref.dtype
    # more neighbours than some shards hold
    np.testing.assert_array_equal(nn.kneighbors(Q[:5], n_neighbors=50, return_distance=False),
                                  ref.kneighbors(Q[:5], n_neighbors=50, return_distance=False))


def test_sharded_search_ties_and_training_on_all_rows(client):
    # 4 centroids in one subspace, duplicated rows: most distances tie, ordered by index
    X = np.repeat(_data(100, 2), 20, axis=0)
    Q = _data(30, 2, seed=2)
    ref = PQNearestNeighbors(PQ(n_subspaces=1, n_bits=2, random_state=0), n_neighbors=25)
    ref.fit(X)
    # max_train_samples >= n: trained on X itself, in order, so the same quantizer
    nn = DistributedPQNearestNeighbors(PQ(n_subspaces=1, n_bits=2, random_state=0),
                                       n_neighbors=25, max_train_samples=10**6)
    nn.fit(da.from_array(X, chunks=300))
    np.testing.assert_array_equal(nn.quantizer_.codebook_, ref.quantizer_.codebook_)
    d_ref, i_ref = ref.kneighbors(Q)
    d, i = nn.kneighbors(da.from_array(Q, chunks=10))
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_array_equal(d, d_ref)
    # the codes stay where they were computed: futures on the cluster
    assert nn.codes_.shape == (2000, 1)
    assert all(isinstance(v, distributed.Future)
               for v in nn.codes_.__dask_graph__().values())


def test_sharded_search_errors():
    X = _data(300, 4)
    with dask.config.set(scheduler="sync"):
        nn = DistributedPQNearestNeighbors(PQ(n_subspaces=2, n_bits=2), n_neighbors=3).fit(X)
        with pytest.raises(ValueError, match="needs query vectors"):
            nn.kneighbors(None)
        with pytest.raises(ValueError, match="n_neighbors <= n_samples_fit"):
            nn.kneighbors(X[:2], n_neighbors=301)
        with pytest.raises(ValueError, match="expecting 4 features"):
            nn.kneighbors(X[:2, :3])
        with pytest.raises(ValueError, match="distance"):
            DistributedPQNearestNeighbors(distance="l1").fit(X)


# -- real data ----------------------------------------------------------------------------------

def test_real_embeddings(client):
    X = embeddings(20_000)
    Xd = da.from_array(X, chunks=(5000, 384))
    pq = fit_sample(PQ(n_subspaces=16, n_bits=6, random_state=0), Xd, n_samples=5000,
                    random_state=0)
    np.testing.assert_array_equal(pq.transform(Xd).compute(), pq.transform(X))
    nn = DistributedPQNearestNeighbors(FrozenEstimator(pq), n_neighbors=10).fit(Xd)
    ref = PQNearestNeighbors(FrozenEstimator(pq), n_neighbors=10).fit(X)
    d, i = nn.kneighbors(X[:100])
    d_ref, i_ref = ref.kneighbors(X[:100])
    np.testing.assert_array_equal(i, i_ref)
    np.testing.assert_array_equal(d, d_ref)


def test_fit_on_a_dask_array_trains_on_a_bounded_sample(monkeypatch):
    """fit(X_dask) draws a uniform sample of at most FIT_SAMPLES rows (with the estimator's
    random_state) and fits on it: the same model as fitting on that sample; a small array is
    used whole; sample_weight with a dask array is refused."""
    import skvq.distributed as dist

    monkeypatch.setattr(dist, "FIT_SAMPLES", 500)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 8)).astype(np.float32)
    Xd = da.from_array(X, chunks=(700, 8))
    with dask.config.set(scheduler="sync"):
        pq = PQ(2, 4, random_state=0).fit(Xd)
        sample = dist.sample_rows(Xd, 500, random_state=0)
        ref = PQ(2, 4, random_state=0).fit(sample)
        np.testing.assert_array_equal(pq.codebook_, ref.codebook_)
        small = PQ(2, 4, random_state=0).fit(Xd[:400])
        np.testing.assert_array_equal(small.codebook_,
                                      PQ(2, 4, random_state=0).fit(X[:400]).codebook_)
        with pytest.raises(TypeError, match="sample_weight"):
            L1LeastSquareQuantizer(n_values=4).fit(Xd, sample_weight=np.ones(3000))
