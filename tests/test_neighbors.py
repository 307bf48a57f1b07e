"""PQNearestNeighbors against brute-force search over the reconstructions."""

import pickle

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    check_param_validation,
    parametrize_with_checks,
)

from skvq import OPQ, PQ
from skvq.neighbors import METRICS, PQNearestNeighbors, _smallest

QUANTIZERS = [
    PQ(n_subspaces=3, n_bits=5, random_state=0),
    PQ(n_subspaces=5, n_bits=4, random_state=0),  # uneven split of 12 features
    OPQ(n_subspaces=3, n_bits=5, n_iter=3, random_state=0),
]
QUANTIZER_IDS = ["PQ", "PQ-uneven", "OPQ"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    scales = np.linspace(0.5, 2.0, 12)
    return rng.normal(size=(600, 12)) * scales, rng.normal(size=(40, 12)) * scales


def _assert_distances_close(actual, expected):
    """Squared distances equal up to the rounding of ``|a|^2 + |b|^2 - 2 a.b`` in the tables."""
    np.testing.assert_allclose(actual**2, expected**2, rtol=1e-10, atol=1e-12)


def _brute_force(queries, database, k, exclude_self=False):
    """Exact search: sorted Euclidean distances and indices, equal distances by index."""
    squared = ((queries[:, None, :] - database[None, :, :]) ** 2).sum(axis=-1)
    if exclude_self:
        np.fill_diagonal(squared, np.inf)
    indices = np.argsort(squared, axis=1, kind="stable")[:, :k]
    return np.sqrt(np.take_along_axis(squared, indices, axis=1)), indices


@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=QUANTIZER_IDS)
def test_adc_equals_brute_force_over_reconstructions(quantizer, data):
    X, Q = data
    nn = PQNearestNeighbors(quantizer, n_neighbors=10).fit(X)
    distances, indices = nn.kneighbors(Q)
    reconstructions = nn.quantizer_.inverse_transform(nn.codes_)
    expected_distances, expected_indices = _brute_force(Q, reconstructions, 10)
    np.testing.assert_array_equal(indices, expected_indices)
    _assert_distances_close(distances, expected_distances)
    assert distances.dtype == np.float64 and indices.dtype == np.intp


@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=QUANTIZER_IDS)
def test_sdc_equals_brute_force_between_reconstructions(quantizer, data):
    X, Q = data
    nn = PQNearestNeighbors(quantizer, n_neighbors=10, distance="sdc").fit(X)
    distances, indices = nn.kneighbors(Q)
    q = nn.quantizer_
    expected_distances, expected_indices = _brute_force(
        q.inverse_transform(q.transform(Q)), q.inverse_transform(nn.codes_), 10)
    np.testing.assert_array_equal(indices, expected_indices)
    _assert_distances_close(distances, expected_distances)


@pytest.mark.parametrize("distance", ["adc", "sdc"])
@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=QUANTIZER_IDS)
def test_no_queries_searches_the_database_without_itself(quantizer, distance, data):
    """X=None: each database code queries the others (distances between reconstructions)."""
    X, _ = data
    nn = PQNearestNeighbors(quantizer, n_neighbors=4, distance=distance).fit(X)
    distances, indices = nn.kneighbors()
    reconstructions = nn.quantizer_.inverse_transform(nn.codes_)
    expected_distances, expected_indices = _brute_force(reconstructions, reconstructions, 4,
                                                        exclude_self=True)
    np.testing.assert_array_equal(indices, expected_indices)
    _assert_distances_close(distances, expected_distances)
    assert not np.any(indices == np.arange(X.shape[0])[:, None])


def test_float32_distances(data):
    X, Q = (a.astype(np.float32) for a in data)
    nn = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=5, random_state=0), n_neighbors=5).fit(X)
    distances, indices = nn.kneighbors(Q)
    assert distances.dtype == np.float32
    rec = nn.quantizer_.inverse_transform(nn.codes_).astype(np.float64)
    exact = np.sqrt(((Q[:, None, :].astype(np.float64) - rec[None]) ** 2).sum(-1))
    np.testing.assert_allclose(distances, np.take_along_axis(exact, indices, axis=1), rtol=1e-4)
    # The float32 ranking agrees with the exact one up to float32 rounding.
    np.testing.assert_allclose(distances, np.sort(exact, axis=1)[:, :5], rtol=1e-4)


def test_ties_are_ordered_by_index(data):
    X, Q = data
    nn = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=4, random_state=0)).fit(np.vstack([X, X]))
    for distance in ["adc", "sdc"]:
        # Every vector is there twice, with the same code: the copies come in index order, and
        # an odd n_neighbors splits a pair at the boundary.
        distances, indices = nn.set_params(distance=distance).kneighbors(Q, n_neighbors=7)
        assert np.all((np.diff(distances, axis=1) > 0) | (np.diff(indices, axis=1) > 0))
        assert np.all(np.diff(distances, axis=1) >= 0)


def test_smallest_against_lexsort():
    """Top-k selection on values with many ties equals a full (value, index) sort."""
    rng = np.random.default_rng(0)
    squared = rng.integers(0, 4, size=(30, 200)).astype(np.float64)
    squared[3] = 1.0  # a row of equal values
    for k in [1, 5, 60, 199, 200]:
        values, cols = _smallest(squared, k)
        expected = np.array([np.lexsort((np.arange(200), row))[:k] for row in squared])
        np.testing.assert_array_equal(cols, expected)
        np.testing.assert_array_equal(values, np.take_along_axis(squared, expected, axis=1))


def test_identical_database_vectors():
    X = np.vstack([np.zeros((300, 4)), np.random.default_rng(0).normal(size=(40, 4))])
    nn = PQNearestNeighbors(PQ(n_subspaces=2, n_bits=3, random_state=0), n_neighbors=5).fit(X)
    distances, indices = nn.kneighbors(np.zeros((2, 4)))
    np.testing.assert_array_equal(indices, [[0, 1, 2, 3, 4]] * 2)
    np.testing.assert_array_equal(nn.kneighbors(n_neighbors=3)[1][:2], [[1, 2, 3], [0, 2, 3]])


def test_all_neighbors_is_a_full_sort(data):
    X, Q = data
    X = X[:50]
    nn = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=3, random_state=0)).fit(X)
    distances, indices = nn.kneighbors(Q, n_neighbors=50)
    expected_distances, expected_indices = _brute_force(
        Q, nn.quantizer_.inverse_transform(nn.codes_), 50)
    np.testing.assert_array_equal(indices, expected_indices)
    _assert_distances_close(distances, expected_distances)


# A one-query batch is more than a working_memory of 1e-6 MiB: sklearn warns, as it should.
@pytest.mark.filterwarnings("ignore:Could not adhere to working_memory")
@pytest.mark.parametrize("distance", ["adc", "sdc"])
@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=QUANTIZER_IDS)
def test_batches_do_not_change_results(quantizer, distance, data):
    X, Q = data
    nn = PQNearestNeighbors(quantizer, n_neighbors=7, distance=distance).fit(X)
    distances, indices = nn.kneighbors(Q)
    self_distances, self_indices = nn.kneighbors()
    with sklearn.config_context(working_memory=1e-6):  # one query per batch
        d, i = nn.kneighbors(Q)
        d_self, i_self = nn.kneighbors()
    np.testing.assert_array_equal(i, indices)
    np.testing.assert_array_equal(i_self, self_indices)
    # Look-up sums are exact; the query's table is a BLAS product whose last bit may depend
    # on the batch shape.
    np.testing.assert_allclose(d, distances, rtol=1e-12)
    np.testing.assert_array_equal(d_self, self_distances)


def test_database_is_held_as_codes_only(data):
    X, _ = data
    nn = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=5, random_state=0)).fit(X)
    fitted = {k for k in vars(nn) if k.endswith("_") and not k.startswith("_")}
    assert fitted == {"quantizer_", "packed_codes_", "code_size_", "ids_", "n_samples_fit_",
                      "n_features_in_"}
    assert nn.ids_ is None
    # 3 codes of 5 bits: 15 bits, two bytes a vector, in faiss' bit-string layout.
    assert nn.code_size_ == 2 and nn.packed_codes_.shape == (X.shape[0], 2)
    assert nn.codes_.shape == (X.shape[0], 3) and nn.codes_.dtype == np.uint8
    np.testing.assert_array_equal(nn.codes_, nn.quantizer_.transform(X))
    assert nn.n_samples_fit_ == X.shape[0]
    # 2 bytes a vector and the codebooks, not 12 floats a vector.
    assert len(pickle.dumps(nn)) < X.nbytes / 8


def _random_pq(n_bits, n_features=6, n_subspaces=3, seed=0):
    """A 'fitted' PQ with random codebooks: wide codes without a k-means of 2**16 centroids."""
    pq = PQ(n_subspaces, n_bits)
    width = n_features // n_subspaces
    pq.codebook_ = np.random.default_rng(seed).normal(size=(n_subspaces, 2**n_bits, width))
    pq.subspace_bounds_ = np.arange(n_subspaces + 1) * width
    pq.bits_per_sample_ = float(n_subspaces * n_bits)
    pq.n_features_in_ = n_features
    return pq


@pytest.mark.parametrize("n_bits", [1, 3, 4, 7, 8, 9, 12, 16])
def test_packed_codes_round_trip_and_search(n_bits):
    """Codes of any width are stored packed (8 and 16 bits as they are) and the scan over
    them equals brute force over the reconstructions."""
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(n_bits)
    n_subspaces = 3
    X = rng.normal(size=(300, 6))
    Q = rng.normal(size=(7, 6))
    nn = PQNearestNeighbors(FrozenEstimator(_random_pq(n_bits)), n_neighbors=5).fit(X)
    codes = nn.quantizer_.transform(X)
    assert nn.code_size_ == -(-n_subspaces * n_bits // 8)
    assert nn.packed_codes_.dtype == np.uint8
    np.testing.assert_array_equal(nn.codes_, codes)
    # faiss' BitstringReader reads the same codes back (independent of skvq.packing).
    np.testing.assert_array_equal(
        faiss.unpack_bitstrings(nn.packed_codes_, n_subspaces, n_bits), codes)
    distances, indices = nn.kneighbors(Q)
    expected_distances, expected_indices = _brute_force(
        Q, nn.quantizer_.inverse_transform(codes), 5)
    np.testing.assert_array_equal(indices, expected_indices)
    _assert_distances_close(distances, expected_distances)


def _normalized(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


@pytest.mark.parametrize("distance", ["adc", "sdc"])
@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=QUANTIZER_IDS)
def test_inner_product_and_cosine_equal_brute_force(quantizer, distance, data):
    """inner_product: <q, q(y)>, largest first; cosine: 1 - <q/|q|, q(y/|y|)>, ascending."""
    X, Q = data
    for metric in ["inner_product", "cosine"]:
        nn = PQNearestNeighbors(quantizer, n_neighbors=8, metric=metric,
                                distance=distance).fit(X)
        q = nn.quantizer_
        database = _normalized(X) if metric == "cosine" else X
        np.testing.assert_array_equal(nn.codes_, q.transform(database))
        rec = q.inverse_transform(nn.codes_)
        queries = _normalized(Q) if metric == "cosine" else Q
        if distance == "sdc":
            queries = q.inverse_transform(q.transform(queries))
            if metric == "cosine":
                queries = _normalized(queries)
        similarity = queries @ rec.T
        expected_indices = np.argsort(-similarity, axis=1, kind="stable")[:, :8]
        expected = np.take_along_axis(similarity, expected_indices, axis=1)
        distances, indices = nn.kneighbors(Q)
        np.testing.assert_array_equal(indices, expected_indices)
        if metric == "cosine":
            expected = 1 - expected
        np.testing.assert_allclose(distances, expected, rtol=1e-10, atol=1e-10)
        # X=None: each reconstruction queries the others.
        self_indices = nn.kneighbors(n_neighbors=3, return_distance=False)
        queries = rec if metric == "inner_product" else _normalized(rec)
        similarity = queries @ rec.T
        np.fill_diagonal(similarity, -np.inf)
        np.testing.assert_array_equal(
            self_indices, np.argsort(-similarity, axis=1, kind="stable")[:, :3])


def test_inner_product_float32(data):
    X, Q = (a.astype(np.float32) for a in data)
    nn = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=5, random_state=0), n_neighbors=5,
                            metric="inner_product").fit(X)
    distances, indices = nn.kneighbors(Q)
    assert distances.dtype == np.float32
    rec = nn.quantizer_.inverse_transform(nn.codes_).astype(np.float64)
    exact = Q.astype(np.float64) @ rec.T
    np.testing.assert_allclose(distances, np.take_along_axis(exact, indices, axis=1),
                               rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(distances, axis=1) <= 0)


@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=QUANTIZER_IDS)
def test_inner_product_matches_faiss_index_pq(quantizer):
    """faiss' IndexPQ with METRIC_INNER_PRODUCT over the same codebooks finds the same
    neighbours with the same inner products."""
    faiss = pytest.importorskip("faiss")
    from skvq.interop import to_faiss

    if quantizer.n_subspaces == 5:
        pytest.skip("faiss has no uneven subspaces")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 12)).astype(np.float32)
    Q = rng.normal(size=(50, 12)).astype(np.float32)
    q = clone(quantizer).fit(X[:1000])
    exported = to_faiss(q)
    index_pq = faiss.IndexPQ(12, q.n_subspaces, q.n_bits, faiss.METRIC_INNER_PRODUCT)
    index_pq.pq = exported if isinstance(q, PQ) else exported[1]
    index_pq.is_trained = True
    index = index_pq if isinstance(q, PQ) else faiss.IndexPreTransform(exported[0], index_pq)
    index.add(X)
    expected_similarity, expected_indices = index.search(Q, 10)
    nn = PQNearestNeighbors(FrozenEstimator(q), n_neighbors=10,
                            metric="inner_product").fit(X)
    distances, indices = nn.kneighbors(Q)
    # float32 sums in a different order: near-ties may swap, nothing else.
    exact = Q.astype(np.float64) @ q.inverse_transform(nn.codes_).astype(np.float64).T
    np.testing.assert_allclose(np.take_along_axis(exact, indices, axis=1),
                               np.take_along_axis(exact, expected_indices, axis=1), atol=1e-5)
    assert np.mean(indices == expected_indices) > 0.9
    np.testing.assert_allclose(distances, expected_similarity, rtol=1e-5, atol=1e-4)


def test_partial_fit_equals_fit_with_the_same_quantizer(data):
    """fit on A then partial_fit B == the codes of A + B with that quantizer."""
    X, Q = data
    for metric in METRICS:
        nn = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=4, random_state=0), n_neighbors=6,
                                metric=metric).fit(X[:400])
        codebook = nn.quantizer_.codebook_.copy()
        nn.partial_fit(X[400:500]).partial_fit(X[500:])
        np.testing.assert_array_equal(nn.quantizer_.codebook_, codebook)  # not refitted
        full = PQNearestNeighbors(FrozenEstimator(nn.quantizer_), n_neighbors=6,
                                  metric=metric).fit(X)
        assert nn.n_samples_fit_ == X.shape[0] and nn.ids_ is None
        np.testing.assert_array_equal(nn.packed_codes_, full.packed_codes_)
        for a, b in zip(nn.kneighbors(Q), full.kneighbors(Q)):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(nn.kneighbors()[1], full.kneighbors()[1])


def test_partial_fit_first_call_fits_and_ids_are_returned(data):
    X, Q = data
    nn = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=4, random_state=0), n_neighbors=4)
    nn.partial_fit(X[:300])
    reference = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=4, random_state=0),
                                   n_neighbors=4).fit(X[:300])
    np.testing.assert_array_equal(nn.packed_codes_, reference.packed_codes_)
    ids = np.arange(300) * 10 + 7
    nn.partial_fit(X[300:], ids=ids)
    positions = PQNearestNeighbors(FrozenEstimator(nn.quantizer_), n_neighbors=4).fit(X)
    id_of = np.concatenate([np.arange(300), ids])
    np.testing.assert_array_equal(nn.kneighbors(Q)[1], id_of[positions.kneighbors(Q)[1]])
    np.testing.assert_array_equal(nn.ids_, id_of)
    graph = nn.kneighbors_graph(Q)
    assert graph.shape == (Q.shape[0], ids.max() + 1)
    np.testing.assert_array_equal(graph.indices.reshape(-1, 4), nn.kneighbors(Q)[1])
    # ids at fit time
    custom = PQNearestNeighbors(FrozenEstimator(nn.quantizer_), n_neighbors=4).fit(
        X, ids=id_of)
    np.testing.assert_array_equal(custom.kneighbors(Q)[1], nn.kneighbors(Q)[1])
    with pytest.raises(ValueError, match="ids must be a 1-D array of 5"):
        nn.partial_fit(X[:5], ids=np.arange(4))
    with pytest.raises(TypeError, match="ids must be integers"):
        nn.partial_fit(X[:5], ids=np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="features"):
        nn.partial_fit(X[:5, :-1])


def test_cosine_matches_sklearn_on_normalised_reconstructions(data):
    """The cosine distances are sklearn's NearestNeighbors(metric='cosine') over the
    reconstructions of the normalised database."""
    from sklearn.neighbors import NearestNeighbors

    X, Q = data
    nn = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=5, random_state=0), n_neighbors=5,
                            metric="cosine").fit(X)
    rec = nn.quantizer_.inverse_transform(nn.codes_)
    # cosine distance to rec equals 1 - <q/|q|, rec> only up to |rec|: compare the formula
    exact = NearestNeighbors(metric="cosine", algorithm="brute").fit(rec)
    d_sklearn = exact.kneighbors(Q, n_neighbors=rec.shape[0])
    norms = np.linalg.norm(rec, axis=1)
    distances, indices = nn.kneighbors(Q)
    expected = 1 - (1 - np.take_along_axis(d_sklearn[0], np.argsort(d_sklearn[1]), axis=1)
                    ) * norms[None, :]
    np.testing.assert_allclose(distances, np.take_along_axis(expected, indices, axis=1),
                               rtol=1e-9, atol=1e-9)


def test_default_quantizer_is_pq():
    X = np.random.default_rng(0).normal(size=(300, 16))
    nn = PQNearestNeighbors().fit(X)
    assert nn.quantizer is None
    assert isinstance(nn.quantizer_, PQ)
    assert nn.quantizer_.get_params() == PQ().get_params()
    assert nn.codes_.shape == (300, 8)


def test_quantizer_is_cloned_and_params_are_nested(data):
    X, _ = data
    quantizer = PQ(n_subspaces=3, n_bits=5, random_state=0)
    nn = PQNearestNeighbors(quantizer).fit(X)
    assert nn.quantizer_ is not quantizer
    assert not hasattr(quantizer, "codebook_")
    assert nn.get_params()["quantizer__n_bits"] == 5
    nn.set_params(quantizer__n_bits=4).fit(X)
    assert nn.codes_.max() < 16 and nn.quantizer_.n_bits == 4
    np.testing.assert_array_equal(clone(nn).fit(X).codes_, nn.codes_)


def test_frozen_quantizer_is_used_as_fitted(data):
    X, Q = data
    quantizer = PQ(n_subspaces=3, n_bits=5, random_state=0).fit(X[:200])
    nn = PQNearestNeighbors(FrozenEstimator(quantizer), n_neighbors=4).fit(X)
    assert nn.quantizer_.estimator is quantizer
    np.testing.assert_array_equal(nn.codes_, quantizer.transform(X))
    distances, indices = nn.kneighbors(Q)
    expected_distances, expected_indices = _brute_force(
        Q, quantizer.inverse_transform(quantizer.transform(X)), 4)
    np.testing.assert_array_equal(indices, expected_indices)
    _assert_distances_close(distances, expected_distances)


def test_kneighbors_graph(data):
    X, Q = data
    nn = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=5, random_state=0), n_neighbors=3).fit(X)
    distances, indices = nn.kneighbors(Q)
    graph = nn.kneighbors_graph(Q, mode="distance")
    assert graph.shape == (Q.shape[0], X.shape[0])
    dense = graph.toarray()
    np.testing.assert_array_equal(np.take_along_axis(dense, indices, axis=1), distances)
    assert np.count_nonzero(dense) == distances.size
    connectivity = nn.kneighbors_graph(n_neighbors=2)
    assert connectivity.shape == (X.shape[0], X.shape[0])
    np.testing.assert_array_equal(connectivity.sum(axis=1), 2)
    assert connectivity.diagonal().sum() == 0
    with pytest.raises(ValueError, match="mode"):
        nn.kneighbors_graph(Q, mode="nope")


def test_pickle_round_trip(data):
    X, Q = data
    nn = PQNearestNeighbors(OPQ(n_subspaces=3, n_bits=5, n_iter=2, random_state=0)).fit(X)
    nn2 = pickle.loads(pickle.dumps(nn))
    for a, b in zip(nn.kneighbors(Q), nn2.kneighbors(Q)):
        np.testing.assert_array_equal(a, b)


def test_bad_input(data):
    X, Q = data
    nn = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=4, random_state=0))
    with pytest.raises(NotFittedError):
        nn.kneighbors(Q)
    with pytest.raises(NotFittedError):
        nn.kneighbors_graph(Q)
    for bad, message in [(np.array([[1.0, np.nan]]), "NaN"), (np.array([[1.0, np.inf]]), "inf"),
                         (np.empty((0, 12)), "0 sample"), (np.arange(5.0), "2D array")]:
        with pytest.raises(ValueError, match=message):
            clone(nn).fit(bad)
    nn.fit(X)
    with pytest.raises(ValueError, match="NaN"):
        nn.kneighbors(np.full_like(Q, np.nan))
    with pytest.raises(ValueError, match="features"):
        nn.kneighbors(Q[:, :-1])
    with pytest.raises(ValueError, match="n_neighbors > 0"):
        nn.kneighbors(Q, n_neighbors=0)
    with pytest.raises(TypeError, match="integer"):
        nn.kneighbors(Q, n_neighbors=2.5)
    with pytest.raises(ValueError, match="n_neighbors > 0"):
        clone(nn).fit(X).set_params(n_neighbors=0).kneighbors(Q)
    with pytest.raises(ValueError, match="n_neighbors <= n_samples_fit"):
        nn.kneighbors(Q, n_neighbors=X.shape[0] + 1)
    with pytest.raises(ValueError, match="n_neighbors < n_samples_fit"):
        nn.kneighbors(n_neighbors=X.shape[0])
    assert nn.kneighbors(Q, n_neighbors=X.shape[0])[1].shape == (Q.shape[0], X.shape[0])
    for params, message in [({"n_neighbors": 0}, "n_neighbors"), ({"distance": "l2"}, "distance"),
                            ({"metric": "l2"}, "metric"),
                            ({"quantizer": KMeans()}, "quantizer")]:
        with pytest.raises(ValueError, match=message):
            clone(nn).set_params(**params).fit(X)


# Expected failures of scikit-learn's common checks, each with its reason (none so far).
EXPECTED_FAILED_CHECKS = {}
CHECKED = [
    PQNearestNeighbors(PQ(n_subspaces=2, n_bits=2)),
    PQNearestNeighbors(OPQ(n_subspaces=2, n_bits=2, n_iter=2), n_neighbors=3, distance="sdc"),
    PQNearestNeighbors(PQ(n_subspaces=2, n_bits=3), metric="cosine"),
]


@parametrize_with_checks(CHECKED, expected_failed_checks=lambda e: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", CHECKED, ids=["PQ", "OPQ-sdc", "PQ-cosine"])
@pytest.mark.parametrize("check", [check_param_validation,
                                   check_dataframe_column_names_consistency],
                         ids=lambda c: c.__name__)
def test_extra_checks(estimator, check):
    pytest.importorskip("pandas")
    check(type(estimator).__name__, estimator)


@pytest.mark.filterwarnings("ignore:Could not adhere to working_memory")
@pytest.mark.parametrize("distance", ["adc", "sdc"])
def test_thread_count_does_not_change_results(distance, data):
    """Query batches run on several threads when BLAS may use several: same answers."""
    from threadpoolctl import threadpool_limits

    X, Q = data
    nn = PQNearestNeighbors(PQ(n_subspaces=3, n_bits=4, random_state=0), n_neighbors=5,
                            distance=distance).fit(X)
    with sklearn.config_context(working_memory=1e-3):  # several batches
        with threadpool_limits(1):
            d1, i1 = nn.kneighbors(Q)
        with threadpool_limits(2):
            d2, i2 = nn.kneighbors(Q)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2, rtol=1e-12)
