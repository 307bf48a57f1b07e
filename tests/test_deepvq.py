"""DeepVQ, DCN and MDCN: contract, the B-step against brute force, codes, pickling, devices."""

import io
import itertools
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skorch")

import joblib  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from skorch.callbacks import Checkpoint  # noqa: E402

from skvq.metrics import make_rate_distortion_scorer  # noqa: E402
from skvq.neural._deepvq import (  # noqa: E402
    DCN,
    MDCN,
    DeepVQ,
    binary_penalty_step,
    pack_codes,
    unpack_codes,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _small(**kw):
    params = dict(n_bits=6, hidden_sizes=(16,), max_epochs=3, b_iter=4, batch_size=32,
                  random_state=0)
    params.update(kw)
    return DeepVQ(**params)


def _small_dcn(cls=DCN, **kw):
    params = dict(n_bits=3, hidden_sizes=(16,), latent_dim=3, pretrain_epochs=2,
                  max_epochs=2, batch_size=32, random_state=0)
    params.update(kw)
    return cls(**params)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 10)) @ rng.normal(size=(10, 10))
    return X.astype(np.float32)


# scikit-learn's common checks run on DeepVQ, DCN and MDCN from the one contract table
# (tests/_estimators.py, tests/test_common.py).


# -- the B-step (eq. 6-8) against brute force --------------------------------------------------
def _brute_force(h_np, shape):
    """Binary optimum of ``h`` over every one of the 2**(N L) sign patterns."""
    patterns = np.array(list(itertools.product((-1.0, 1.0), repeat=shape[0] * shape[1])))
    values = h_np(patterns.reshape((-1,) + shape))
    best = int(np.argmin(values))
    return patterns[best].reshape(shape), float(values[best])


def _linear_problem(seed, n, n_bits, n_features, gamma, w_scale, orthogonal):
    rng = np.random.default_rng(seed)
    if orthogonal:  # W W^T = w_scale^2 I: h is separable over the entries of B
        q, _ = np.linalg.qr(rng.normal(size=(n_features, n_bits)))
        W = w_scale * q.T
    else:
        W = w_scale * rng.normal(size=(n_bits, n_features)) / np.sqrt(n_features)
    c = rng.normal(size=n_features)
    X = rng.normal(size=(n, n_features))
    F = np.tanh(rng.normal(size=(n, n_bits)))

    def h_np(B):  # B of shape (N, L) or a stack (P, N, L)
        return (np.sum((B @ W + c - X) ** 2, axis=(-2, -1))
                + gamma * np.sum((F - B) ** 2, axis=(-2, -1)))

    Wt, ct, Xt, Ft = (torch.as_tensor(a, dtype=torch.float64) for a in (W, c, X, F))

    def h_torch(B):
        return torch.sum((B @ Wt + ct - Xt) ** 2) + gamma * torch.sum((Ft - B) ** 2)

    return h_np, h_torch, Ft


SLOW_SCHEDULE = dict(rho=1e-3, rho_growth=1.2, n_iter=60, step_size=0.1)


@pytest.mark.parametrize("penalty", ["squared", "linear"])
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n, n_bits", [(3, 4), (2, 6)])
def test_b_step_separable_matches_brute_force(seed, n, n_bits, penalty):
    # With orthogonal decoder rows h is separable over the entries of B and the binary
    # optimum of eq. (6) is the sign of the box-relaxed optimum: the penalty method must
    # reach the brute-force optimum over all 2**(N L) sign patterns.
    h_np, h_torch, F = _linear_problem(seed, n, n_bits, 8, gamma=1.0, w_scale=1.5,
                                       orthogonal=True)
    B, n_rounded = binary_penalty_step(h_torch, F, penalty=penalty, **SLOW_SCHEDULE)
    expected, _ = _brute_force(h_np, (n, n_bits))
    assert set(np.unique(B.numpy())) <= {-1.0, 1.0}
    np.testing.assert_array_equal(B.numpy(), expected)
    if penalty == "linear":  # the exact penalty binarises B by itself
        assert n_rounded == 0


@pytest.mark.parametrize("seed", range(8))
def test_b_step_coupled_against_brute_force(seed):
    # Coupled entries (a general linear decoder): the penalty method is a local method, so
    # it is checked to be binary without rounding, never worse than the encoder's signs it
    # starts from, and bounded below by the brute-force optimum.
    h_np, h_torch, F = _linear_problem(seed, 3, 4, 6, gamma=1.0, w_scale=1.0,
                                       orthogonal=False)
    B, n_rounded = binary_penalty_step(h_torch, F, penalty="linear", **SLOW_SCHEDULE)
    _, best = _brute_force(h_np, (3, 4))
    signs = np.where(F.numpy() >= 0, 1.0, -1.0)
    assert n_rounded == 0
    assert set(np.unique(B.numpy())) <= {-1.0, 1.0}
    assert best - 1e-9 <= h_np(B.numpy()) <= h_np(signs) + 1e-9


def test_b_step_strongly_convex_finds_optimum():
    # gamma large against the decoder's coupling: the brute-force optimum is found.
    hits = 0
    for seed in range(10):
        h_np, h_torch, F = _linear_problem(seed, 3, 4, 6, gamma=2.0, w_scale=1.0,
                                           orthogonal=False)
        B, _ = binary_penalty_step(h_torch, F, penalty="linear", **SLOW_SCHEDULE)
        expected, _ = _brute_force(h_np, (3, 4))
        hits += np.array_equal(B.numpy(), expected)
    assert hits >= 6


def test_b_step_rounds_only_when_rho_stays_small():
    h_np, h_torch, F = _linear_problem(0, 3, 4, 6, gamma=1.0, w_scale=1.0, orthogonal=False)
    B, n_rounded = binary_penalty_step(h_torch, F * 0.01, rho=1e-9, rho_growth=1.0,
                                       n_iter=1, step_size=1e-3)
    assert n_rounded > 0  # rho never grew: the entries stayed inside the box
    assert set(np.unique(B.numpy())) <= {-1.0, 1.0}


def test_b_step_does_not_modify_start():
    _, h_torch, F = _linear_problem(1, 2, 3, 4, gamma=1.0, w_scale=1.0, orthogonal=False)
    F0 = F.clone()
    binary_penalty_step(h_torch, F)
    assert torch.equal(F, F0)


# -- codes ------------------------------------------------------------------------------
def test_codes_strictly_binary_and_sign_of_encoder(data):
    q = _small().fit(data)
    bits = q.transform(data)
    assert bits.shape == (data.shape[0], 6) and bits.dtype == np.uint8
    assert set(np.unique(bits)) <= {0, 1}
    module = q.net_.module_.eval()
    x = torch.as_tensor((data - q.offset_) / q.scale_, dtype=torch.float32)
    with torch.no_grad():
        f = module.encode(x).numpy()
    np.testing.assert_array_equal(bits, (f >= 0).astype(np.uint8))
    # decode(bits) is g(2 * bits - 1) in the input's units
    with torch.no_grad():
        rec = module.decode(torch.as_tensor(2.0 * bits - 1.0, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(q.inverse_transform(bits), rec * q.scale_ + q.offset_,
                               rtol=1e-5, atol=1e-5)
    assert q.bits_per_sample_ == 6.0


@pytest.mark.parametrize("n_bits", [1, 7, 8, 9, 16, 20])
def test_pack_roundtrip_and_inverse_transform_accepts_both(data, n_bits):
    q = _small(n_bits=n_bits, max_epochs=1).fit(data)
    bits = q.transform(data)
    packed = q.pack_codes(bits)
    assert packed.dtype == np.uint8 and packed.shape == (len(data), -(-n_bits // 8))
    np.testing.assert_array_equal(
        np.unpackbits(packed, axis=1, count=n_bits, bitorder="little"), bits)
    np.testing.assert_array_equal(q.unpack_codes(packed) if n_bits > 1 else bits, bits)
    if n_bits > 1:
        np.testing.assert_array_equal(q.inverse_transform(packed), q.inverse_transform(bits))


def test_pack_codes_function():
    bits = np.array([[1, 0, 1, 1, 0, 0, 0, 0, 1, 1]], dtype=np.uint8)
    np.testing.assert_array_equal(pack_codes(bits), [[0b00001101, 0b00000011]])
    np.testing.assert_array_equal(unpack_codes(pack_codes(bits), 10), bits)
    with pytest.raises(ValueError, match="0 and 1"):
        pack_codes([[0, 2]])
    with pytest.raises(ValueError, match="shape"):
        unpack_codes(np.zeros((1, 3), np.uint8), 10)


def test_bad_codes(data):
    q = _small(n_bits=10, max_epochs=1).fit(data)
    with pytest.raises(ValueError, match="out of range"):
        q.inverse_transform(np.full((2, 10), 2))
    with pytest.raises(ValueError, match="10 bits or 2 packed bytes"):
        q.inverse_transform(np.zeros((2, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="unused high bits"):
        q.inverse_transform(np.array([[0, 4]], dtype=np.uint8))  # bit 10 of a 10-bit code
    with pytest.raises(ValueError, match="range"):
        q.inverse_transform(np.array([[0, 256]]))
    with pytest.raises(TypeError):
        q.inverse_transform(np.array([[0.0, 64.0]]))
    with pytest.raises(ValueError, match="whole numbers"):
        q.inverse_transform(np.full((1, 10), 0.5))
    with pytest.raises(ValueError, match="2-D"):
        q.inverse_transform(np.zeros(10, dtype=np.uint8))


# -- fit, determinism, options ---------------------------------------------------------------
def test_same_seed_same_codes(data):
    a = _small(random_state=3).fit(data)
    b = _small(random_state=3).fit(data)
    np.testing.assert_array_equal(a.transform(data), b.transform(data))
    np.testing.assert_array_equal(a.inverse_transform(a.transform(data)),
                                  b.inverse_transform(b.transform(data)))
    assert a.random_state == 3 and a.device == "auto" and a.device_ == "cpu"


def test_dcn_same_seed_same_codes(data):
    for cls in (DCN, MDCN):
        a = _small_dcn(cls, random_state=5).fit(data)
        b = _small_dcn(cls, random_state=5).fit(data)
        np.testing.assert_array_equal(a.transform(data), b.transform(data))
        np.testing.assert_array_equal(a.codebook_, b.codebook_)


@pytest.mark.parametrize("options", [
    dict(pretrain_epochs=1),
    dict(pretrain_epochs=1, tied_weights=False, decoder_hidden=(24, 8)),
    dict(warmup_epochs=2, dropout=0.2, tied_weights=False),
    dict(optimizer="sgd", lr=1e-2, weight_decay=1e-4),
    dict(finetune_epochs=2, tied_weights=False),
])
def test_options_fit_binary_codes(data, options):
    q = _small(**options).fit(data)
    bits = q.transform(data)
    assert set(np.unique(bits)) <= {0, 1}
    assert np.isfinite(q.score(data))


def test_finetune_keeps_the_encoder(data):
    # The decoder fine-tuning freezes the encoder: the codes are those of the model before it,
    # and the training error of those codes can only be fitted better by the decoder.
    plain = _small(tied_weights=False).fit(data)
    tuned = _small(tied_weights=False, finetune_epochs=30).fit(data)
    np.testing.assert_array_equal(plain.transform(data), tuned.transform(data))
    assert -tuned.score(data) < -plain.score(data)


def test_training_beats_the_mean_predictor():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(8, 12)) * 3
    X = (centers[rng.integers(8, size=400)] + 0.1 * rng.normal(size=(400, 12))).astype(np.float32)
    q = DeepVQ(n_bits=6, hidden_sizes=(32,), max_epochs=40, batch_size=64, lr=3e-3,
               tied_weights=False, random_state=0).fit(X)
    mse = -q.score(X)
    assert mse < 0.2 * np.mean((X - X.mean(0)) ** 2)


def test_dcn_codes_are_nearest_latent_centroid(data):
    for cls in (DCN, MDCN):
        q = _small_dcn(cls).fit(data)
        codes = q.transform(data)
        assert codes.shape == (len(data), 1) and codes.dtype == np.uint8
        module = q.net_.module_.eval()
        x = torch.as_tensor((data - q.offset_) / q.scale_, dtype=torch.float32)
        with torch.no_grad():
            z = module.encode(x).numpy().astype(np.float64)
        d = ((z[:, None, :] - q.centroids_[None].astype(np.float64)) ** 2).sum(-1)
        brute = d.argmin(1)
        agree = np.mean(brute == codes[:, 0])
        assert agree > 0.99  # float32 ties aside
        # g(c_s) row by row against the decoded codebook: the same values, up to float32
        # rounding of batches of different sizes
        np.testing.assert_allclose(q.inverse_transform(codes), q.codebook_[codes[:, 0]],
                                   rtol=1e-5, atol=1e-6)
        assert q.n_clusters_ == 8 and q.bits_per_sample_ == 3.0


def test_dcn_more_clusters_than_samples_warns():
    X = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="only n_samples=20"):
        q = _small_dcn(n_bits=10).fit(X)
    assert q.n_clusters_ == 20 and q.transform(X).dtype == np.uint16
    with pytest.raises(ValueError, match="out of range"):
        q.inverse_transform(np.array([[25]]))


# -- bad input and parameters ----------------------------------------------------------------
@pytest.mark.parametrize("make", [_small, _small_dcn])
def test_bad_input(make, data):
    q = make()
    with pytest.raises(NotFittedError):
        q.transform(data)
    for bad in (np.array([[np.nan, 1.0], [1.0, 2.0]]), np.array([[np.inf, 1.0], [0.0, 1.0]])):
        with pytest.raises(ValueError):
            make().fit(bad)
    with pytest.raises(ValueError):
        make().fit(np.empty((0, 3)))
    with pytest.raises(ValueError, match="n_samples=1"):
        make().fit(np.ones((1, 3)))
    q.fit(data)
    with pytest.raises(ValueError, match="features"):
        q.transform(data[:, :3])


@pytest.mark.parametrize("params, match", [
    (dict(hidden_sizes=(8, 0)), "positive ints"),
    (dict(decoder_hidden=(4,)), "tied_weights"),
    (dict(warmup_epochs=5, max_epochs=2), "warmup_epochs"),
    (dict(device="tpu"), "device"),
])
def test_bad_parameters(data, params, match):
    with pytest.raises(ValueError, match=match):
        _small(**params).fit(data)


# -- the defaults: the settings tuned on MNIST (doc/benchmarks/bench_deepvq_table1.md) -------
def test_defaults_are_the_tuned_settings():
    # The settings the Table 1 benchmark tuned (its report's former explicit row); the
    # defaults must stay these, since the report's "defaults" row measures them.
    tuned = dict(max_epochs=90, warmup_epochs="auto", lr=1e-3, dropout=0.1, b_step_size=0.3,
                 rho=1e-4, rho_growth=3.0, b_iter=10, batch_size=128, gamma=1.0,
                 optimizer="adam", tied_weights=True, hidden_sizes=(500, 255),
                 pretrain_epochs=0, finetune_epochs=0, penalty="squared")
    params = DeepVQ().get_params()
    assert {k: params[k] for k in tuned} == tuned


@pytest.mark.parametrize("max_epochs, expected", [(0, 0), (4, 2), (5, 3)])
def test_auto_warmup_is_60_percent_of_max_epochs(data, max_epochs, expected):
    # "auto" is floor(0.6 * max_epochs): the same training, loss for loss, as that int given
    # explicitly; the parameter itself stays "auto".
    auto = _small(max_epochs=max_epochs, b_iter=2).fit(data)
    explicit = _small(max_epochs=max_epochs, b_iter=2, warmup_epochs=expected).fit(data)
    assert auto.warmup_epochs == "auto"
    assert auto.warmup_epochs_ == expected == explicit.warmup_epochs_
    assert auto.net_.warmup_epochs == expected
    np.testing.assert_array_equal([row["train_loss"] for row in auto.history_],
                                  [row["train_loss"] for row in explicit.history_])
    np.testing.assert_array_equal(auto.transform(data), explicit.transform(data))


def test_auto_warmup_follows_max_epochs_in_a_search(data):
    # with "auto" the warm-up scales with max_epochs, so a grid over max_epochs never
    # meets warmup_epochs > max_epochs
    search = GridSearchCV(_small(b_iter=2), {"max_epochs": [1, 3]}, cv=2).fit(data)
    assert search.best_estimator_.warmup_epochs_ == (3 * search.best_params_["max_epochs"]) // 5


def test_explicit_warmup_is_used_as_given(data):
    q = _small(max_epochs=3, warmup_epochs=3, b_iter=2).fit(data)
    assert q.warmup_epochs_ == 3 == q.net_.warmup_epochs
    with pytest.raises(ValueError, match=r"warmup_epochs=4 is larger than max_epochs=3"):
        _small(max_epochs=3, warmup_epochs=4).fit(data)
    with pytest.raises(ValueError, match="warmup_epochs"):
        _small(warmup_epochs="half").fit(data)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without CUDA")
def test_cuda_requested_without_cuda(data):
    with pytest.raises(ValueError, match="CUDA is not available"):
        _small(device="cuda").fit(data)


# -- model search, pickling, verbosity -------------------------------------------------------
def test_grid_search_over_n_bits(data):
    search = GridSearchCV(_small(max_epochs=2), {"n_bits": [2, 8]}, cv=2,
                          scoring=make_rate_distortion_scorer(rate_weight=1e-3))
    search.fit(data)
    assert search.best_params_["n_bits"] in (2, 8)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


@pytest.mark.parametrize("make", [_small, _small_dcn, lambda: _small_dcn(MDCN)])
def test_pickle_roundtrip_on_cpu(make, data):
    q = make().fit(data)
    buf = io.BytesIO()
    joblib.dump(q, buf)
    buf.seek(0)
    loaded = joblib.load(buf)
    assert loaded.device_ == "cpu"
    np.testing.assert_array_equal(loaded.transform(data), q.transform(data))
    np.testing.assert_allclose(loaded.inverse_transform(q.transform(data)),
                               q.inverse_transform(q.transform(data)))


def test_verbose(data, capsys):
    _small(max_epochs=1).fit(data)
    assert capsys.readouterr().out == ""
    _small(max_epochs=2, verbose=1).fit(data)
    assert "train_loss" in capsys.readouterr().out


# -- skorch with its grain: the nets take the settings, the centroids are buffers --------------
def _scaled(q, X):
    return ((X - q.offset_) / q.scale_).astype(np.float32)


ALL = {"DeepVQ": _small, "DCN": _small_dcn, "MDCN": lambda **kw: _small_dcn(MDCN, **kw)}


@pytest.mark.parametrize("name", ALL)
def test_net_partial_fit_after_fit(name, data):
    q = ALL[name]().fit(data)
    n_epochs = len(q.net_.history)
    q.net_.partial_fit(_scaled(q, data))
    assert len(q.net_.history) == n_epochs + q.net_.max_epochs
    assert np.isfinite(q.net_.history[-1, "train_loss"])
    codes = q.transform(data)  # the estimator codes with the further trained net
    if name == "DeepVQ":
        assert set(np.unique(codes)) <= {0, 1}
        # the epochs after fit are B-step/W-step epochs: B-steps record their rounding
        assert all("n_rounded" in b for b in q.net_.history[-1, "batches"])
    else:
        assert codes.max() < q.n_clusters_


def test_net_get_params_holds_the_settings(data):
    q = _small(gamma=0.5, rho=2e-4, rho_growth=2.0, b_step_size=0.2, penalty="linear",
               warmup_epochs=1).fit(data)
    params = q.net_.get_params()
    for name in ("gamma", "rho", "rho_growth", "b_iter", "b_step_size", "penalty",
                 "warmup_epochs"):
        assert params[name] == getattr(q, name), name
    d = _small_dcn(MDCN, lam=0.3).fit(data)
    params = d.net_.get_params()
    assert params["lam"] == 0.3 and params["reconstruct_from"] == "centroid"
    assert params["clustering"] is True
    assert _small_dcn().fit(data).net_.get_params()["reconstruct_from"] == "latent"
    # the settings are ordinary net parameters: set_params changes what the next
    # training step uses
    q.net_.set_params(gamma=0.0, warmup_epochs=0)
    assert q.net_.gamma == 0.0 and q.net_.get_params()["warmup_epochs"] == 0


@pytest.mark.parametrize("name", ALL)
def test_clone_and_refit_same_codes(name, data):
    q = ALL[name](random_state=11).fit(data)
    c = clone(q)
    assert not hasattr(c, "net_") and c.get_params() == q.get_params()
    c.fit(data)
    np.testing.assert_array_equal(c.transform(data), q.transform(data))
    np.testing.assert_array_equal(c.inverse_transform(q.transform(data)),
                                  q.inverse_transform(q.transform(data)))


def test_dcn_centroids_are_module_buffers(data):
    q = _small_dcn().fit(data)
    state = q.net_.module_.state_dict()
    np.testing.assert_array_equal(state["centroids"].numpy(), q.centroids_)
    assert state["cluster_counts"].sum() >= len(data)  # k-means sizes plus the batches
    assert all(p is not q.net_.module_.centroids for p in q.net_.module_.parameters())


@pytest.mark.parametrize("cls", [DCN, MDCN])
def test_dcn_save_and_load_params_restore_centroids_and_codes(cls, data, tmp_path):
    q = _small_dcn(cls, random_state=1).fit(data)
    f_params = os.fspath(tmp_path / "params.pt")
    q.net_.save_params(f_params=f_params)
    other = _small_dcn(cls, random_state=2).fit(data)
    assert not np.array_equal(other.centroids_, q.centroids_)
    other.net_.load_params(f_params=f_params)
    np.testing.assert_array_equal(other.centroids_, q.centroids_)
    np.testing.assert_array_equal(other.codebook_, q.codebook_)
    np.testing.assert_array_equal(other.transform(data), q.transform(data))


def test_dcn_checkpoint_callback_restores_centroids_and_codes(data, tmp_path):
    # skorch's Checkpoint during further training, loaded into another model
    q = _small_dcn(random_state=3).fit(data)
    checkpoint = Checkpoint(monitor=None, dirname=os.fspath(tmp_path), f_optimizer=None,
                            f_criterion=None)
    q.net_.set_params(callbacks=[("checkpoint", checkpoint)])
    q.net_.initialize_callbacks()  # the net is initialised: only its callbacks are new
    q.net_.partial_fit(_scaled(q, data))
    assert os.path.exists(tmp_path / "params.pt")
    other = _small_dcn(random_state=4).fit(data)
    other.net_.load_params(checkpoint=checkpoint)
    np.testing.assert_array_equal(other.centroids_, q.centroids_)
    np.testing.assert_array_equal(other.transform(data), q.transform(data))
    assert len(other.net_.history) == len(q.net_.history)  # the checkpoint's history


# -- CUDA ------------------------------------------------------------------------------------
@CUDA
@pytest.mark.parametrize("make", [_small, _small_dcn])
def test_cuda_fit_and_pickle(make, data):
    q = make(device="cuda").fit(data)
    assert q.device_ == "cuda" and q.device == "cuda"
    codes = q.transform(data)
    assert np.all(np.isfinite(q.inverse_transform(codes)))
    buf = io.BytesIO()
    joblib.dump(q, buf)
    buf.seek(0)
    loaded = joblib.load(buf)
    np.testing.assert_array_equal(loaded.transform(data), codes)


@CUDA
def test_cuda_auto_device(data):
    assert _small(max_epochs=1).fit(data).device_.startswith("cuda")
