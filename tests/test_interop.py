"""Export to and import from faiss: same codes, same decodes, same search results."""

import sys

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator

from skvq import OPQ, PQ, L0LeastSquareQuantizer
from skvq.interop import from_faiss, to_faiss
from skvq.neighbors import PQNearestNeighbors

faiss = pytest.importorskip("faiss")

N_SUBSPACES = 4


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """faiss' OpenMP threads spin-wait: on a busy machine one thread trains 100x faster."""
    n_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n_threads)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    scales = np.linspace(0.5, 2.0, 16)
    # faiss trains 8-bit OPQ on 39 points per centroid at least (it warns below that).
    X = (rng.normal(size=(10_000, 16)) * scales).astype(np.float32)
    Q = (rng.normal(size=(300, 16)) * scales).astype(np.float32)
    return X, Q


def _faiss_codes(codes, n_bits):
    """faiss packs codes of n_bits != 8 into bit strings: unpack them to one column each."""
    return faiss.unpack_bitstrings(codes, N_SUBSPACES, n_bits)


@pytest.mark.parametrize("n_bits", [4, 6, 8])
def test_export_pq_same_codes_and_decodes(n_bits, data):
    X, Q = data
    pq = PQ(N_SUBSPACES, n_bits, max_iter=10, random_state=0).fit(X[:2000])
    faiss_pq = to_faiss(pq)
    assert (faiss_pq.d, faiss_pq.M, faiss_pq.nbits) == (16, N_SUBSPACES, n_bits)
    for Y in (X, Q):  # training data and new data
        packed = faiss_pq.compute_codes(Y)
        codes = pq.transform(Y)
        np.testing.assert_array_equal(_faiss_codes(packed, n_bits), codes)
        np.testing.assert_allclose(faiss_pq.decode(packed), pq.inverse_transform(codes),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n_bits", [4, 8])
def test_export_opq_same_codes_and_decodes(n_bits, data):
    X, Q = data
    opq = OPQ(N_SUBSPACES, n_bits, n_iter=3, max_iter=10, random_state=0).fit(X[:2000])
    opq_matrix, faiss_pq = to_faiss(opq)
    assert isinstance(opq_matrix, faiss.OPQMatrix) and opq_matrix.is_orthonormal
    # faiss applies y = A x: A is the transpose of skvq's rotation_ (y = x @ rotation_).
    A = faiss.vector_to_array(opq_matrix.A).reshape(16, 16)
    np.testing.assert_array_equal(A, opq.rotation_.T)
    np.testing.assert_allclose(opq_matrix.apply(Q), Q @ opq.rotation_, rtol=1e-5, atol=1e-5)
    for Y in (X, Q):
        packed = faiss_pq.compute_codes(opq_matrix.apply(Y))
        codes = opq.transform(Y)
        np.testing.assert_array_equal(_faiss_codes(packed, n_bits), codes)
        np.testing.assert_allclose(opq_matrix.reverse_transform(faiss_pq.decode(packed)),
                                   opq.inverse_transform(codes), rtol=1e-5, atol=1e-5)
    # The same pair in a faiss index.
    index = faiss.IndexPreTransform(opq_matrix, faiss.IndexPQ(16, N_SUBSPACES, n_bits))
    faiss.downcast_index(index.index).pq = faiss_pq
    index.is_trained = index.index.is_trained = True
    np.testing.assert_array_equal(_faiss_codes(index.sa_encode(Q), n_bits), opq.transform(Q))


def test_import_pq_same_codes_and_decodes(data):
    X, Q = data
    faiss_pq = faiss.ProductQuantizer(16, N_SUBSPACES, 5)
    faiss_pq.cp.niter = 10
    faiss_pq.train(X)
    pq = from_faiss(faiss_pq)
    assert isinstance(pq, PQ) and (pq.n_subspaces, pq.n_bits) == (N_SUBSPACES, 5)
    assert pq.n_features_in_ == 16 and not hasattr(pq, "feature_names_in_")
    for Y in (X, Q):
        packed = faiss_pq.compute_codes(Y)
        codes = pq.transform(Y)
        np.testing.assert_array_equal(codes, _faiss_codes(packed, 5))
        assert codes.dtype == np.uint8
        np.testing.assert_allclose(pq.inverse_transform(codes), faiss_pq.decode(packed),
                                   rtol=1e-6, atol=1e-6)
        # faiss' packed bytes are skvq's packed codes
        assert pq.code_size_ == faiss_pq.code_size
        np.testing.assert_array_equal(pq.pack(codes), packed)
    # ADC tables: faiss' own distance tables hold the same squared distances.
    tables = np.empty((len(Q), N_SUBSPACES, 32), dtype=np.float32)
    faiss_pq.compute_distance_tables(len(Q), faiss.swig_ptr(Q), faiss.swig_ptr(tables))
    np.testing.assert_allclose(pq.distance_table(Q), tables, rtol=1e-5, atol=1e-5)
    # And the round trip back to faiss.
    again = to_faiss(pq)
    np.testing.assert_array_equal(faiss.vector_to_array(again.centroids),
                                  faiss.vector_to_array(faiss_pq.centroids))


def test_import_opq_from_a_faiss_index(data):
    X, Q = data
    index = faiss.index_factory(16, f"OPQ{N_SUBSPACES},PQ{N_SUBSPACES}x4")
    opq_matrix = faiss.downcast_VectorTransform(index.chain.at(0))
    opq_matrix.niter = 3
    index.train(X)
    opq = from_faiss(faiss.downcast_index(index.index).pq, opq_matrix)
    assert isinstance(opq, OPQ) and (opq.n_subspaces, opq.n_bits) == (N_SUBSPACES, 4)
    np.testing.assert_allclose(opq.rotation_ @ opq.rotation_.T, np.eye(16), atol=1e-5)
    for Y in (X, Q):
        packed = index.sa_encode(Y)
        codes = opq.transform(Y)
        np.testing.assert_array_equal(codes, _faiss_codes(packed, 4))
        np.testing.assert_allclose(opq.inverse_transform(codes), index.sa_decode(packed),
                                   rtol=1e-5, atol=1e-5)
        assert opq.code_size_ == index.sa_code_size()
        np.testing.assert_array_equal(opq.pack(codes), packed)
    # And the round trip back to faiss.
    matrix_again, _ = to_faiss(opq)
    np.testing.assert_array_equal(faiss.vector_to_array(matrix_again.A),
                                  faiss.vector_to_array(opq_matrix.A))


@pytest.mark.parametrize("quantizer", [PQ(N_SUBSPACES, 8, max_iter=10, random_state=0),
                                       OPQ(N_SUBSPACES, 6, n_iter=3, max_iter=10,
                                           random_state=0)], ids=["PQ", "OPQ"])
def test_search_matches_faiss(quantizer, data):
    """faiss' IndexPQ over an exported codebook finds PQNearestNeighbors' ADC neighbours."""
    X, Q = data
    quantizer = quantizer.fit(X[:4000])
    exported = to_faiss(quantizer)
    index_pq = faiss.IndexPQ(16, N_SUBSPACES, quantizer.n_bits)
    index_pq.pq = exported if isinstance(quantizer, PQ) else exported[1]
    index_pq.is_trained = True
    index = index_pq if isinstance(quantizer, PQ) else faiss.IndexPreTransform(exported[0],
                                                                                index_pq)
    index.add(X)
    expected_squared, expected_indices = index.search(Q, 10)
    nn = PQNearestNeighbors(FrozenEstimator(quantizer), n_neighbors=10).fit(X)
    distances, indices = nn.kneighbors(Q)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances**2, expected_squared, rtol=1e-5, atol=1e-5)


def test_uneven_split_cannot_be_exported(data):
    X, _ = data
    pq = PQ(n_subspaces=3, n_bits=4, max_iter=2, random_state=0).fit(X[:500])
    with pytest.raises(ValueError, match="multiple of n_subspaces"):
        to_faiss(pq)
    opq = OPQ(n_subspaces=3, n_bits=4, n_iter=1, max_iter=2, random_state=0).fit(X[:500])
    with pytest.raises(ValueError, match="multiple of n_subspaces"):
        to_faiss(opq)


def test_bad_input(data):
    X, _ = data
    with pytest.raises(NotFittedError):
        to_faiss(PQ(n_subspaces=4))
    with pytest.raises(TypeError, match="PQ and OPQ"):
        to_faiss(L0LeastSquareQuantizer().fit(X[:50, :2]))
    with pytest.raises(ValueError, match="not trained"):
        from_faiss(faiss.ProductQuantizer(16, 4, 4))
    faiss_pq = faiss.ProductQuantizer(16, 4, 4)
    faiss_pq.cp.niter = 2
    faiss_pq.train(X[:1000])
    with pytest.raises(ValueError, match="not trained"):
        from_faiss(faiss_pq, faiss.OPQMatrix(16, 4))
    with pytest.raises(ValueError, match="square"):
        from_faiss(faiss_pq, faiss.OPQMatrix(16, 4, 8))
    scaling = faiss.OPQMatrix(16, 4)
    faiss.copy_array_to_vector((2 * np.eye(16, dtype=np.float32)).ravel(), scaling.A)
    scaling.is_trained = True
    with pytest.raises(ValueError, match="orthogonal"):
        from_faiss(faiss_pq, scaling)


def test_missing_faiss_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    with pytest.raises(ImportError, match="faiss-cpu"):
        to_faiss(PQ())
    with pytest.raises(ImportError, match="bench"):
        from_faiss(object())
