"""IVFPQNearestNeighbors against brute force over what the index stores, and against faiss."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    check_param_validation,
    parametrize_with_checks,
)

from skvq import OPQ, PQ
from skvq.ivf import IVFPQNearestNeighbors
from skvq.neighbors import METRICS

from _data import embeddings


QUANTIZERS = [
    PQ(n_subspaces=3, n_bits=4, random_state=0),  # packed: 2 codes a byte
    PQ(n_subspaces=3, n_bits=8, max_iter=5, random_state=0),
    OPQ(n_subspaces=3, n_bits=5, n_iter=2, random_state=0),
]
QUANTIZER_IDS = ["PQ4", "PQ8", "OPQ5"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 12)) * 3
    X = centers[rng.integers(20, size=2500)] + rng.normal(size=(2500, 12))
    Q = centers[rng.integers(20, size=30)] + rng.normal(size=(30, 12))
    return X, Q


def _normalized(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _stored(ivf, X):
    """What the index holds, rebuilt independently: each vector's list (nearest centroid,
    brute force), its residual's code, and its reconstruction; in id order."""
    X = _normalized(X) if ivf.metric == "cosine" else X
    C = ivf.centroids_
    if ivf.metric == "euclidean":
        labels = np.argmin(((X[:, None, :] - C[None]) ** 2).sum(-1), axis=1)
    else:
        labels = np.argmax(X @ C.T, axis=1)
    codes = ivf.quantizer_.transform(X - C[labels])
    return labels, codes, C[labels] + ivf.quantizer_.inverse_transform(codes)


def _scores(metric, Q, database):
    """Brute-force sums to minimise: squared distances or negative (cosine) similarities."""
    if metric == "euclidean":
        return ((Q[:, None, :] - database[None]) ** 2).sum(-1)
    if metric == "cosine":
        Q = _normalized(Q)
    return -Q @ database.T


def _as_metric(metric, scores):
    return {"euclidean": np.sqrt, "inner_product": np.negative,
            "cosine": lambda s: 1 + s}[metric](scores)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=QUANTIZER_IDS)
def test_all_lists_probed_equals_brute_force_over_reconstructions(quantizer, metric, data):
    """n_probe = n_lists: an exhaustive ADC search over the residual codes."""
    X, Q = data
    ivf = IVFPQNearestNeighbors(quantizer, n_lists=8, n_probe=8, n_neighbors=10, metric=metric,
                                random_state=0).fit(X)
    labels, codes, rec = _stored(ivf, X)
    # storage: lists are contiguous, each entry's code is its residual's code
    np.testing.assert_array_equal(np.bincount(labels, minlength=8), np.diff(ivf.list_offsets_))
    np.testing.assert_array_equal(ivf.codes_, codes[ivf.ids_])
    scores = _scores(metric, Q, rec)
    expected = np.argsort(scores, axis=1, kind="stable")[:, :10]
    distances, indices = ivf.kneighbors(Q)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(distances, _as_metric(metric, np.take_along_axis(
        scores, expected, axis=1)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("metric", METRICS)
def test_probed_lists_only(metric, data):
    """n_probe < n_lists: brute force restricted to the lists of the nearest centroids."""
    X, Q = data
    ivf = IVFPQNearestNeighbors(QUANTIZERS[0], n_lists=10, n_probe=3, n_neighbors=5,
                                metric=metric, random_state=0).fit(X)
    labels, _, rec = _stored(ivf, X)
    scores = _scores(metric, Q, rec)
    coarse = _scores(metric, Q, ivf.centroids_)
    probed = np.argsort(coarse, axis=1)[:, :3]
    allowed = (labels[None, :] == probed[:, :, None]).any(axis=1)
    scores = np.where(allowed, scores, np.inf)
    expected = np.argsort(scores, axis=1, kind="stable")[:, :5]
    distances, indices = ivf.kneighbors(Q)
    np.testing.assert_array_equal(indices, expected)


def test_too_few_vectors_in_probed_lists_gives_minus_one():
    X = np.vstack([np.zeros((40, 4)), np.full((5, 4), 10.0)])
    X += np.random.default_rng(0).normal(scale=0.1, size=X.shape)
    ivf = IVFPQNearestNeighbors(PQ(2, 2, random_state=0), n_lists=2, n_probe=1,
                                n_neighbors=8, random_state=0).fit(X)
    distances, indices = ivf.kneighbors(np.full((1, 4), 10.0))
    assert set(indices[0, :5]) == set(range(40, 45))
    np.testing.assert_array_equal(indices[0, 5:], -1)
    assert np.all(np.isinf(distances[0, 5:]))


@pytest.mark.parametrize("metric", METRICS)
def test_rerank_returns_exact_distances_of_the_shortlist(metric, data):
    X, Q = data
    ivf = IVFPQNearestNeighbors(QUANTIZERS[0], n_lists=8, n_probe=8, n_neighbors=5,
                                metric=metric, rerank=40, random_state=0).fit(X)
    assert ivf.vectors_.shape == X.shape
    _, _, rec = _stored(ivf, X)
    shortlist = np.argsort(_scores(metric, Q, rec), axis=1, kind="stable")[:, :40]
    database = _normalized(X) if metric == "cosine" else X
    exact = _scores(metric, Q, database)
    exact_short = np.take_along_axis(exact, shortlist, axis=1)
    order = np.argsort(exact_short, axis=1, kind="stable")[:, :5]
    expected = np.take_along_axis(shortlist, order, axis=1)
    distances, indices = ivf.kneighbors(Q)
    np.testing.assert_array_equal(np.sort(indices, axis=1), np.sort(expected, axis=1))
    np.testing.assert_allclose(distances, _as_metric(metric, np.take_along_axis(
        exact_short, order, axis=1)), rtol=1e-9, atol=1e-9)
    # re-ranking finds the true nearest neighbour more often than ADC alone
    truth = np.argmin(exact, axis=1)
    adc = clone(ivf).set_params(rerank=False).fit(X).kneighbors(Q, 1)[1][:, 0]
    assert np.mean(indices[:, 0] == truth) >= np.mean(adc == truth)


def test_partial_fit_equals_encoding_everything_with_the_same_quantizer(data):
    """fit on A, partial_fit B: each vector of B in its nearest centroid's list, coded with
    the fitted quantizer; the search equals brute force over A + B's reconstructions."""
    X, Q = data
    ivf = IVFPQNearestNeighbors(QUANTIZERS[0], n_lists=8, n_probe=8, n_neighbors=6,
                                random_state=0).fit(X[:1500])
    centroids, codebook = ivf.centroids_.copy(), ivf.quantizer_.codebook_.copy()
    ivf.partial_fit(X[1500:2000]).partial_fit(X[2000:], ids=np.arange(2000, 2500) * 10)
    np.testing.assert_array_equal(ivf.centroids_, centroids)
    np.testing.assert_array_equal(ivf.quantizer_.codebook_, codebook)
    assert ivf.n_samples_fit_ == 2500
    ids = np.concatenate([np.arange(2000), np.arange(2000, 2500) * 10])
    labels, codes, rec = _stored(ivf, X)
    position = np.argsort(ids)[np.searchsorted(np.sort(ids), ivf.ids_)]
    np.testing.assert_array_equal(ivf.codes_, codes[position])
    expected = ids[np.argsort(_scores("euclidean", Q, rec), axis=1, kind="stable")[:, :6]]
    np.testing.assert_array_equal(ivf.kneighbors(Q)[1], expected)
    # first call of partial_fit is fit
    first = clone(ivf).partial_fit(X[:1500])
    np.testing.assert_array_equal(first.packed_codes_,
                                  clone(ivf).fit(X[:1500]).packed_codes_)


def test_no_queries_searches_the_reconstructions_without_themselves(data):
    X, _ = data
    ivf = IVFPQNearestNeighbors(QUANTIZERS[0], n_lists=8, n_probe=8, n_neighbors=4,
                                random_state=0).fit(X)
    _, _, rec = _stored(ivf, X)
    scores = _scores("euclidean", rec, rec)
    np.fill_diagonal(scores, np.inf)
    expected = np.argsort(scores, axis=1, kind="stable")[:, :4]
    indices = ivf.kneighbors(return_distance=False)
    agree = np.mean(np.all(indices == expected, axis=1))
    assert agree > 0.98  # ties between vectors with the same code may order differently
    graph = ivf.kneighbors_graph(n_neighbors=3)
    assert graph.shape == (X.shape[0], X.shape[0]) and graph.diagonal().sum() == 0


@pytest.mark.filterwarnings("ignore:Could not adhere to working_memory")
def test_threads_and_batches_do_not_change_results(data):
    from threadpoolctl import threadpool_limits

    X, Q = data
    Q = np.vstack([Q] * 5)
    ivf = IVFPQNearestNeighbors(QUANTIZERS[0], n_lists=8, n_probe=3, n_neighbors=5,
                                random_state=0).fit(X)
    with threadpool_limits(1):
        d1, i1 = ivf.kneighbors(Q)
    with threadpool_limits(2):
        d2, i2 = ivf.kneighbors(Q)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)
    d3, i3 = ivf.kneighbors(Q[:1])
    np.testing.assert_array_equal(i3, i1[:1])


def test_fit_is_deterministic_and_pickles(data):
    X, Q = data
    ivf = IVFPQNearestNeighbors(QUANTIZERS[2], n_lists=8, n_probe=2, random_state=0).fit(X)
    again = clone(ivf).fit(X)
    np.testing.assert_array_equal(ivf.packed_codes_, again.packed_codes_)
    np.testing.assert_array_equal(ivf.ids_, again.ids_)
    loaded = pickle.loads(pickle.dumps(ivf))
    for a, b in zip(ivf.kneighbors(Q), loaded.kneighbors(Q)):
        np.testing.assert_array_equal(a, b)
    assert ivf.code_size_ == 2  # 3 codes of 5 bits


def test_bad_input(data):
    X, Q = data
    ivf = IVFPQNearestNeighbors(QUANTIZERS[0], n_lists=8, random_state=0)
    with pytest.raises(NotFittedError):
        ivf.kneighbors(Q)
    with pytest.raises(ValueError, match="n_lists=8"):
        clone(ivf).fit(X[:5])
    with pytest.raises(ValueError, match="rerank=True"):
        clone(ivf).set_params(rerank=True).fit(X)
    for params, message in [({"n_lists": 0}, "n_lists"), ({"n_probe": 0}, "n_probe"),
                            ({"metric": "l1"}, "metric"), ({"rerank": -1}, "rerank")]:
        with pytest.raises(ValueError, match=message):
            clone(ivf).set_params(**params).fit(X)
    ivf.fit(X)
    with pytest.raises(ValueError, match="features"):
        ivf.kneighbors(Q[:, :-1])
    with pytest.raises(ValueError, match="n_neighbors <= n_samples_fit"):
        ivf.kneighbors(Q, n_neighbors=X.shape[0] + 1)
    with pytest.raises(ValueError, match="vectors were not kept"):
        ivf.set_params(rerank=10).kneighbors(Q)
    with pytest.raises(ValueError, match="ids must be a 1-D array"):
        ivf.partial_fit(X[:3], ids=[1, 2])


EXPECTED_FAILED_CHECKS = {}
CHECKED = [
    IVFPQNearestNeighbors(PQ(n_subspaces=2, n_bits=2), n_lists=2, n_probe=2),
    IVFPQNearestNeighbors(OPQ(n_subspaces=2, n_bits=2, n_iter=2), n_lists=2, n_neighbors=3,
                          metric="inner_product", rerank=4),
]


@parametrize_with_checks(CHECKED, expected_failed_checks=lambda e: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", CHECKED, ids=["PQ", "OPQ-ip-rerank"])
@pytest.mark.parametrize("check", [check_param_validation,
                                   check_dataframe_column_names_consistency],
                         ids=lambda c: c.__name__)
def test_extra_checks(estimator, check):
    pytest.importorskip("pandas")
    check(type(estimator).__name__, estimator)


# -- faiss ----------------------------------------------------------------------------------

def _faiss():
    faiss = pytest.importorskip("faiss")
    faiss.omp_set_num_threads(1)
    return faiss


def _agree(found, expected, scores):
    """Same neighbours up to ties (4-bit codes repeat: many vectors share a code): the exact
    scores of the neighbours at each rank agree."""
    np.testing.assert_allclose(np.take_along_axis(scores, found, axis=1),
                               np.take_along_axis(scores, expected, axis=1), atol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("quantizer", [QUANTIZERS[0], QUANTIZERS[2]], ids=["PQ4", "OPQ5"])
def test_to_faiss_searches_the_same(quantizer, metric, data):
    _faiss()  # skips without faiss
    from skvq.interop import from_faiss, to_faiss

    X, Q = (a.astype(np.float32) for a in data)
    quantizer = clone(quantizer).set_params(n_subspaces=4)
    ivf = IVFPQNearestNeighbors(quantizer, n_lists=8, n_probe=3, n_neighbors=10,
                                metric=metric, random_state=0).fit(X, ids=np.arange(2500) + 7)
    index = to_faiss(ivf)
    assert index.ntotal == X.shape[0]
    queries = _normalized(Q) if metric == "cosine" else Q
    faiss_values, faiss_ids = index.search(queries, 10)
    distances, ids = ivf.kneighbors(Q)
    _, _, rec = _stored(ivf, X.astype(np.float64))
    scores = np.full((Q.shape[0], X.shape[0] + 7), np.inf)
    scores[:, 7:] = _scores(metric, Q.astype(np.float64), rec)
    _agree(ids, faiss_ids, scores)
    expected = {"euclidean": np.sqrt(np.maximum(faiss_values, 0)),
                "inner_product": faiss_values, "cosine": 1 - faiss_values}[metric]
    np.testing.assert_allclose(distances, expected, rtol=1e-4, atol=1e-4)
    # and back: the imported index searches as faiss does
    back = from_faiss(index)
    assert back.n_lists == 8 and back.n_probe == 3
    np.testing.assert_array_equal(back.packed_codes_, ivf.packed_codes_)
    np.testing.assert_array_equal(back.ids_, ivf.ids_)
    back_ids = back.set_params(n_neighbors=10).kneighbors(queries)[1]
    _agree(back_ids, faiss_ids, scores)


def test_from_faiss_imports_a_faiss_trained_index(data):
    faiss = _faiss()
    from skvq.interop import from_faiss

    X, Q = (a.astype(np.float32) for a in data)
    coarse = faiss.IndexFlatL2(12)
    index = faiss.IndexIVFPQ(coarse, 12, 8, 4, 6)
    index.cp.niter = 5
    index.pq.cp.niter = 5
    index.train(X)
    index.add(X)
    index.nprobe = 4
    faiss_distances, faiss_ids = index.search(Q, 10)
    ivf = from_faiss(index)
    distances, ids = ivf.kneighbors(Q, 10)
    assert np.mean(ids == faiss_ids) > 0.95
    np.testing.assert_allclose(distances**2, faiss_distances, rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="IndexIVFPQ"):
        from_faiss(faiss.IndexFlatL2(12))
    flat = faiss.IndexIVFPQ(faiss.IndexFlatL2(12), 12, 8, 4, 6)
    with pytest.raises(ValueError, match="not trained"):
        from_faiss(flat)


def _recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


def _compare_recall_with_faiss(X, Q, metric, n_lists, n_subspaces, n_bits, n_probes):
    faiss = _faiss()
    d = X.shape[1]
    faiss_metric = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    coarse = faiss.IndexFlatL2(d) if metric == "euclidean" else faiss.IndexFlatIP(d)
    index = faiss.IndexIVFPQ(coarse, d, n_lists, n_subspaces, n_bits, faiss_metric)
    index.train(X)
    index.add(X)
    ivf = IVFPQNearestNeighbors(PQ(n_subspaces, n_bits, max_points_per_centroid=256,
                                   random_state=0), n_lists=n_lists, n_neighbors=10,
                                metric=metric, random_state=0).fit(X)
    Q64, X64 = Q.astype(np.float64), X.astype(np.float64)
    scores = -Q64 @ X64.T
    if metric == "euclidean":
        scores = 2 * scores + np.einsum("ij,ij->i", X64, X64)[None, :]
    truth = np.argsort(scores, axis=1)[:, :10]
    for n_probe in n_probes:
        index.nprobe = n_probe
        ours = _recall(ivf.set_params(n_probe=n_probe).kneighbors(Q)[1], truth)
        theirs = _recall(index.search(Q, 10)[1], truth)
        assert abs(ours - theirs) <= 0.01 or ours > theirs, (n_probe, ours, theirs)


@pytest.mark.parametrize("metric", ["euclidean", "inner_product"])
def test_recall_matches_faiss_on_synthetic_data(metric):
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(64, 32)).astype(np.float32) * 2
    X = centers[rng.integers(64, size=20_000)] + rng.normal(size=(20_000, 32)).astype(
        np.float32)
    Q = X[:400] + 0.3 * rng.normal(size=(400, 32)).astype(np.float32)
    _compare_recall_with_faiss(X[400:], Q, metric, 64, 8, 8, [1, 4, 16])


@pytest.mark.parametrize("metric", ["euclidean", "inner_product"])
def test_recall_matches_faiss_on_embeddings(metric):
    E = embeddings(21_000)
    _compare_recall_with_faiss(E[1000:], E[:1000], metric, 64, 48, 4, [1, 4, 16])
