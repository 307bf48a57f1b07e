"""The neural base (TorchQuantizer) and the torch k-means: a minimal subclass through the
common checks, the shared parameters on every estimator, scaling, float32 overflow, network
size limits, and k-means against scikit-learn and brute force."""

import warnings
from numbers import Integral

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skorch")

from sklearn.base import _fit_context  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.utils._param_validation import Interval, InvalidParameterError  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    check_dataframe_column_names_consistency,
    check_param_validation,
    check_set_output_transform_pandas,
    check_transformer_get_feature_names_out,
    parametrize_with_checks,
)
from skorch import NeuralNet  # noqa: E402
from skorch.callbacks import ProgressBar  # noqa: E402
from torch import nn  # noqa: E402

from skvq.neural._autoencoder import SCQ, VQAutoencoder  # noqa: E402
from skvq.neural._base import OPTIMIZERS, TorchQuantizer, check_image_shape  # noqa: E402
from skvq.neural._deepvq import DCN, MDCN, DeepVQ  # noqa: E402
from skvq.neural.layers._kmeans_torch import assign, kmeans, kmeans_plusplus  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 10)) @ rng.normal(size=(10, 10))
    return X.astype(np.float32)


# -- a new neural estimator is one class: the guide of TorchQuantizer's docstring, followed --
class _SignAutoencoder(nn.Module):
    """Linear encoder to ``n_bits`` signs (straight-through), linear decoder."""

    def __init__(self, n_features, n_bits):
        super().__init__()
        self.enc = nn.Linear(n_features, n_bits)
        self.dec = nn.Linear(n_bits, n_features)

    def encode(self, x):
        return torch.tanh(self.enc(x))

    def forward(self, x):
        f = self.encode(x)
        b = torch.where(f >= 0, 1.0, -1.0)
        return self.dec(f + (b - f).detach())


class TinyBinaryQuantizer(TorchQuantizer):
    """n_bits signs of a linear encoder: the smallest neural quantizer on the base."""

    _parameter_constraints = {**TorchQuantizer._parameter_constraints,
                              "n_bits": [Interval(Integral, 1, None, closed="left")]}

    def __init__(self, n_bits=4, *, scaling="standard", optimizer="adam", lr=1e-2,
                 weight_decay=0.0, batch_size=16, max_epochs=3, device="auto",
                 random_state=None, verbose=0):
        self.n_bits = n_bits
        self.scaling = scaling
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        Xs = self._start_fit(X)
        module = self._build_module(lambda: _SignAutoencoder(Xs.shape[1], self.n_bits),
                                    n_bits=self.n_bits)
        net = self._make_net(NeuralNet, module, n_samples=Xs.shape[0])
        net.fit(Xs, Xs)
        net.module_.eval()
        self.net_ = net
        self._record_history(net)
        self.bits_per_sample_ = float(self.n_bits)
        return self

    def _n_code_columns(self):
        return self.n_bits

    def _code_cardinality(self):
        return 2

    def _encode(self, X):
        with torch.no_grad():
            f = self.net_.module_.encode(self._to_tensor(X))
        self._check_finite(f)
        return (f >= 0).to(torch.uint8).cpu().numpy()

    def _decode(self, codes):
        b = torch.as_tensor(2.0 * np.asarray(codes, dtype=np.float32) - 1.0, device=self.device_)
        with torch.no_grad():
            return self._unscale(self.net_.module_.dec(b))


@parametrize_with_checks([TinyBinaryQuantizer(max_epochs=2)])
def test_minimal_subclass_is_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("check", [check_param_validation, check_set_output_transform_pandas,
                                   check_transformer_get_feature_names_out,
                                   check_dataframe_column_names_consistency],
                         ids=lambda c: c.__name__)
def test_minimal_subclass_extra_checks(check):
    pytest.importorskip("pandas")
    check("TinyBinaryQuantizer", TinyBinaryQuantizer(max_epochs=2))


def test_minimal_subclass_without_batch_norm_takes_batch_size_one(data):
    q = TinyBinaryQuantizer(batch_size=1, max_epochs=1, random_state=0).fit(data[:20])
    assert q.n_iter_ == 1 and "iterator_train__drop_last" not in q.net_.get_params()


# -- the shared parameters, the same on every estimator ---------------------------------------
def _deepvq(**kw):
    params = dict(n_bits=5, hidden_sizes=(16,), max_epochs=2, b_iter=3, batch_size=32,
                  random_state=0)
    params.update(kw)
    return DeepVQ(**params)


def _dcn(cls=DCN, **kw):
    params = dict(n_bits=3, hidden_sizes=(16,), latent_dim=3, pretrain_epochs=1,
                  max_epochs=1, batch_size=32, random_state=0)
    params.update(kw)
    return cls(**params)


def _autoencoder(cls=VQAutoencoder, **kw):
    params = dict(codebook_size=4, latent_dim=2, n_latents=2, hidden_size=8, max_epochs=1,
                  batch_size=32, random_state=0)
    params.update(kw)
    return cls(**params)


MAKERS = {"DeepVQ": _deepvq, "DCN": _dcn, "MDCN": lambda **kw: _dcn(MDCN, **kw),
          "SCQ": lambda **kw: _autoencoder(SCQ, **kw), "VQAutoencoder": _autoencoder,
          "Tiny": lambda **kw: TinyBinaryQuantizer(**{"random_state": 0, **kw})}


def test_one_constraint_set():
    shared = TorchQuantizer._parameter_constraints
    for make in MAKERS.values():
        est = make()
        params = est.get_params()
        for name, constraint in shared.items():
            assert name in params, (type(est).__name__, name)
            assert type(est)._parameter_constraints[name] is constraint


@pytest.mark.parametrize("name", MAKERS)
def test_device_resolution(name, data):
    make = MAKERS[name]
    q = make(device=torch.device("cpu")).fit(data)
    assert q.device_ == "cpu" and q.device == torch.device("cpu")
    q = make(device="auto").fit(data)
    assert q.device_ == ("cuda" if torch.cuda.is_available() else "cpu")
    assert q.device == "auto"
    with pytest.raises(ValueError, match="device='tpu'"):
        make(device="tpu").fit(data)
    with pytest.raises(InvalidParameterError, match="device"):
        make(device=3).fit(data)
    if not torch.cuda.is_available():
        for device in ("cuda", "cuda:1", torch.device("cuda")):
            with pytest.raises(ValueError, match="CUDA is not available"):
                make(device=device).fit(data)


@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_optimizer_table(name, optimizer, data):
    q = MAKERS[name](optimizer=optimizer, weight_decay=1e-3, max_epochs=1).fit(data)
    opt = q.net_.optimizer_
    expected = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                "sgd": torch.optim.SGD}[optimizer]
    assert type(opt) is expected
    group = opt.param_groups[0]
    assert group["weight_decay"] == 1e-3 and group["lr"] == q.lr
    if optimizer == "sgd":
        assert group["momentum"] == 0.9


@pytest.mark.parametrize("name", ["DeepVQ", "DCN", "MDCN"])
def test_batch_norm_batches(name, data):
    make = MAKERS[name]
    with pytest.raises(ValueError, match="batch_size=1.*batch normalisation"):
        make(batch_size=1).fit(data)
    # 97 rows in batches of 32: the last batch has one row and is dropped
    q = make(batch_size=32).fit(data[:97])
    assert q.net_.get_params()["iterator_train__drop_last"] is True
    q = make(batch_size=32).fit(data[:96])
    assert "iterator_train__drop_last" not in q.net_.get_params()
    with pytest.raises(ValueError, match="n_samples=1"):
        make().fit(data[:1])


@pytest.mark.parametrize("name", MAKERS)
def test_history_and_n_iter(name, data):
    q = MAKERS[name](max_epochs=2).fit(data)
    expected = {"DeepVQ": 2, "DCN": 1 + 2, "MDCN": 1 + 2, "Tiny": 2}.get(name, 2)
    assert q.n_iter_ == expected == len(q.history_)
    assert all("train_loss" in row and "batches" not in row for row in q.history_)


def test_max_epochs_zero(data):
    # DeepVQ: the initialised network; DCN: the k-means centroids of the pre-trained latents
    q = _deepvq(max_epochs=0).fit(data)
    assert q.n_iter_ == 0 and set(np.unique(q.transform(data))) <= {0, 1}
    d = _dcn(max_epochs=0, kmeans_iter=100).fit(data)
    assert d.n_iter_ == 1
    module = d.net_.module_.eval()
    with torch.no_grad():
        z = module.encode(torch.as_tensor((data - d.offset_) / d.scale_,
                                          dtype=torch.float32)).double().numpy()
    labels = ((z[:, None] - d.centroids_[None].astype(np.float64)) ** 2).sum(-1).argmin(1)
    for k in np.unique(labels):  # a Lloyd fixed point: every centroid is its cluster's mean
        np.testing.assert_allclose(d.centroids_[k], z[labels == k].mean(0), rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("cls", [SCQ, VQAutoencoder])
def test_max_epochs_zero_autoencoders(cls, data):
    """max_epochs=0: nothing trained; the codes are the initialised network's nearest
    codewords (brute force); a codebook drawn from the first training batch is refused."""
    q = _autoencoder(cls, max_epochs=0).fit(data)
    assert q.n_iter_ == 0 and q.history_ == []
    module = q.net_.module_
    with torch.no_grad():
        z = module.encoder(torch.as_tensor(((data - q.offset_) / q.scale_).astype(np.float32)))
    z = z.double().numpy()
    codebook = module.bottleneck.codebook.detach().double().numpy()
    dist = ((z[:, :, None, :] - codebook[None, None]) ** 2).sum(-1)
    # SCQ's code is the argmax of its convex weights, which for these well separated
    # latents is the nearest codeword too; compare where the nearest one is clear
    clear = np.sort(dist, -1)[..., 1] - dist.min(-1) > 1e-6 * (1 + dist.min(-1))
    codes = q.transform(data)
    if cls is VQAutoencoder:
        np.testing.assert_array_equal(codes, dist.argmin(-1))
    else:
        weights = q.transform_weights(data)
        np.testing.assert_array_equal(codes, weights.argmax(-1))
        assert clear.mean() > 0.9
    # trained for one epoch, the same seed gives other weights: 0 really trained nothing
    trained = _autoencoder(cls, max_epochs=1).fit(data).net_.module_
    assert not torch.equal(trained.encoder.net[0].weight, module.encoder.net[0].weight)
    if cls is SCQ:
        with pytest.raises(ValueError, match="max_epochs=0 trains nothing.*codebook_init"):
            _autoencoder(cls, max_epochs=0,
                         bottleneck_params={"codebook_init": "data"}).fit(data)


@pytest.mark.parametrize("cls", [SCQ, VQAutoencoder])
def test_autoencoders_take_batch_size_one(cls, data):
    q = _autoencoder(cls, batch_size=1).fit(data[:10])
    assert q.n_iter_ == 1 and "iterator_train__drop_last" not in q.net_.get_params()


@pytest.mark.parametrize("name", MAKERS)
def test_verbose_levels(name, data, capsys):
    make = MAKERS[name]
    make(max_epochs=1).fit(data)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    make(max_epochs=1, verbose=1).fit(data)
    assert "train_loss" in capsys.readouterr().out
    q = make(max_epochs=1, verbose=2).fit(data)
    capsys.readouterr()
    assert any(isinstance(cb, ProgressBar) for _, cb in q.net_.callbacks_)


# -- scaling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("scaling", ["standard", "minmax", "global", None])
def test_scaling_values(name, scaling, data):
    X = data.astype(np.float64)
    X[:, 3] = 7.0  # a constant feature
    q = MAKERS[name](scaling=scaling, max_epochs=1).fit(X)
    X64 = X.astype(np.float64)
    if scaling == "standard":
        std = X64.std(0)
        np.testing.assert_allclose(q.offset_, X64.mean(0))
        np.testing.assert_allclose(q.scale_, np.where(std > 0, std, 1.0))
    elif scaling == "minmax":
        Xs = (X64 - q.offset_) / q.scale_
        np.testing.assert_allclose(Xs.min(0)[[0, 1, 2, 4]], -1.0)
        np.testing.assert_allclose(Xs.max(0)[[0, 1, 2, 4]], 1.0)
        assert q.scale_[3] == 1.0
    elif scaling == "global":
        Xs = (X64 - q.offset_) / q.scale_
        assert np.ptp(q.offset_) == 0 and np.ptp(q.scale_) == 0
        assert Xs.min() == pytest.approx(-1.0) and Xs.max() == pytest.approx(1.0)
    else:
        np.testing.assert_array_equal(q.offset_, 0.0)
        np.testing.assert_array_equal(q.scale_, 1.0)
    rec = q.inverse_transform(q.transform(X))
    assert rec.dtype == X.dtype and np.all(np.isfinite(rec))


def test_default_scalings():
    # one default for every neural estimator: one affine map of the whole data to [-1, 1]
    assert DeepVQ().scaling == DCN().scaling == MDCN().scaling == "global"
    assert SCQ().scaling == VQAutoencoder().scaling == "global"


def test_standard_scaling_of_huge_data_is_finite():
    # Sums of squares of 1e300 overflow float64: the statistics are still the exact ones,
    # scaled (the data are 1e300 times moderate numbers).
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(60, 4)) + 3.0
    q = TinyBinaryQuantizer(scaling="standard", max_epochs=1, random_state=0).fit(Y * 1e300)
    np.testing.assert_allclose(q.offset_, Y.mean(0) * 1e300, rtol=1e-12)
    np.testing.assert_allclose(q.scale_, Y.std(0) * 1e300, rtol=1e-12)
    rec = q.inverse_transform(q.transform(Y * 1e300))
    assert np.all(np.isfinite(rec)) and np.all(np.abs(rec) < 1e302)


@pytest.mark.parametrize("name", ["DeepVQ", "DCN", "MDCN", "SCQ", "VQAutoencoder"])
def test_minmax_scalings_of_data_spanning_float64(name):
    rng = np.random.default_rng(2)
    X = rng.uniform(-1.0, 1.0, size=(64, 5)) * 1.7e308
    for scaling in ("minmax", "global"):
        q = MAKERS[name](scaling=scaling, max_epochs=1).fit(X)
        assert np.all(np.isfinite(q.offset_)) and np.all(np.isfinite(q.scale_))
        Xs = (X / 2 - q.offset_ / 2) / (q.scale_ / 2)
        assert Xs.min() >= -1 - 1e-12 and Xs.max() <= 1 + 1e-12


@pytest.mark.parametrize("name", MAKERS)
def test_values_overflowing_float32_are_refused(name, data):
    q = MAKERS[name](max_epochs=1).fit(data.astype(np.float64))
    X = data.astype(np.float64)
    X[5, 2] = 1e300  # finite in float64, infinite once cast to float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cast warning: a ValueError instead of codes
        with pytest.raises(ValueError, match="overflow float32"):
            q.transform(X)
        with pytest.raises(ValueError, match="overflow float32"):
            q.score(X)
        with pytest.raises(ValueError, match="overflow float32"):
            MAKERS[name](scaling=None, max_epochs=1).fit(X)


def test_non_finite_network_output_is_refused(data):
    q = _deepvq().fit(data)
    with torch.no_grad():
        q.net_.module_.enc[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        q.transform(data)


# -- sizes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, name", [
    (lambda: _deepvq(hidden_sizes=(10**9,)), "hidden_sizes"),
    (lambda: _deepvq(hidden_sizes=(16, 10**30)), "hidden_sizes"),
    (lambda: _deepvq(n_bits=10**9), "n_bits"),
    (lambda: _deepvq(tied_weights=False, decoder_hidden=(10**9,)), "decoder_hidden"),
    (lambda: _dcn(latent_dim=10**9), "latent_dim"),
    (lambda: _dcn(MDCN, hidden_sizes=(10**9, 8)), "hidden_sizes"),
    (lambda: TinyBinaryQuantizer(n_bits=10**9), "n_bits"),
    (lambda: _autoencoder(SCQ, hidden_size=10**9), "hidden_size"),
    (lambda: _autoencoder(n_latents=10**9), "n_latents"),
    (lambda: _autoencoder(codebook_size=10**10), "codebook_size"),
])
def test_absurd_sizes_refused_early(make, name, data):
    with pytest.raises(ValueError, match=f"{name}=.*weights.*lower {name}"):
        make().fit(data)


def test_size_limit_counts_weights_and_buffers(data):
    # a network just below and just above the limit, measured against its own count
    class Small(TinyBinaryQuantizer):
        _max_n_weights = 10 * 7 + 7 + 7 * 10 + 10  # weights and biases at n_bits=7

    Small(n_bits=7, max_epochs=1).fit(data)
    with pytest.raises(ValueError, match="n_bits=8 gives a network of 178 weights"):
        Small(n_bits=8, max_epochs=1).fit(data)


# -- seeds, batching ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MAKERS)
def test_transform_in_small_batches_equals_one_batch(name, data):
    from sklearn import config_context

    q = MAKERS[name](max_epochs=1).fit(data)
    codes = q.transform(data)
    rec = q.inverse_transform(codes)
    with config_context(working_memory=1e-4), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not adhere to working_memory": 1 row a batch
        np.testing.assert_array_equal(q.transform(data), codes)
        np.testing.assert_allclose(q.inverse_transform(codes), rec, rtol=1e-5, atol=1e-6)


def test_check_image_shape():
    assert check_image_shape((1, 8, 8), 64, 4) == (1, 8, 8)
    assert check_image_shape([3, 4, 2], 24) == (3, 4, 2)
    for bad in ((8, 8), (1, 8, 0), ("1", 8, 8), (True, 8, 8), None, 5):
        with pytest.raises(ValueError, match="three positive ints"):
            check_image_shape(bad, 64)
    with pytest.raises(ValueError, match="n_features=63"):
        check_image_shape((1, 8, 8), 63)
    with pytest.raises(ValueError, match="multiples of 4"):
        check_image_shape((1, 6, 8), 48, 4)


# -- k-means in torch ---------------------------------------------------------------------------
def _blobs(seed, n=600, d=5, k=8, spread=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 4
    return centers[rng.integers(k, size=n)] + spread * rng.normal(size=(n, d))


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_assignments_are_brute_force_nearest(seed):
    X = torch.as_tensor(_blobs(seed), dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    centers, labels, inertia, n_iter = kmeans(X, 8, max_iter=50, generator=g)
    Xn, Cn = X.numpy(), centers.numpy()
    d2 = ((Xn[:, None, :] - Cn[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels.numpy(), d2.argmin(1))
    assert inertia == pytest.approx(d2.min(1).sum(), rel=1e-12)
    assert 1 <= n_iter <= 50
    # a fixed point of Lloyd's iteration: every centroid is the mean of its cluster
    for k in range(8):
        np.testing.assert_allclose(Cn[k], Xn[labels.numpy() == k].mean(0), rtol=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_kmeans_inertia_against_sklearn(seed):
    # Separated blobs: both reach the global optimum; uniform data: local optima, compared
    # on average over restarts (not worse than scikit-learn's by more than 2%).
    X = _blobs(seed)
    ours = kmeans(torch.as_tensor(X), 8, max_iter=100,
                  generator=torch.Generator().manual_seed(seed))[2]
    ref = KMeans(8, n_init=1, random_state=seed, max_iter=100).fit(X).inertia_
    assert ours <= ref * 1.001
    U = np.random.default_rng(seed).uniform(size=(500, 3))
    ours = np.mean([kmeans(torch.as_tensor(U), 16, max_iter=100,
                           generator=torch.Generator().manual_seed(s))[2] for s in range(5)])
    ref = np.mean([KMeans(16, n_init=1, random_state=s, max_iter=100).fit(U).inertia_
                   for s in range(5)])
    assert ours <= ref * 1.02


def test_kmeans_float32_and_subsampled_seeding():
    X = _blobs(5, n=3000, k=4)
    ours = kmeans(torch.as_tensor(X, dtype=torch.float32), 4, max_iter=50,
                  generator=torch.Generator().manual_seed(0))  # seeding on 256 of 3000 rows
    assert ours[0].dtype == torch.float32
    ref = KMeans(4, n_init=1, random_state=0).fit(X).inertia_
    assert ours[2] <= ref * 1.001


def test_kmeans_seeded_generator_is_deterministic():
    X = torch.as_tensor(_blobs(3), dtype=torch.float32)
    a = kmeans(X, 8, generator=torch.Generator().manual_seed(7))
    b = kmeans(X, 8, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_kmeans_plusplus_picks_distinct_rows_and_covers_blobs():
    X = torch.as_tensor(_blobs(4, spread=0.01), dtype=torch.float64)
    centers = kmeans_plusplus(X, 8, generator=torch.Generator().manual_seed(0))
    rows = {tuple(r) for r in X.numpy()}
    assert all(tuple(c) in rows for c in centers.numpy())
    labels, _ = assign(X, centers)
    assert len(torch.unique(labels)) == 8  # one seed per (tight, far apart) blob


def test_kmeans_as_many_clusters_as_points_and_duplicates():
    X = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    centers, labels, inertia, _ = kmeans(X, 5, generator=torch.Generator().manual_seed(0))
    assert inertia == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(centers[labels].numpy(), X.numpy(), atol=1e-6)
    centers, labels, inertia, _ = kmeans(X, 3, generator=torch.Generator().manual_seed(0))
    assert inertia == pytest.approx(0.0, abs=1e-9)


def test_kmeans_bad_input():
    X = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="n_clusters=5 is larger than n_samples=4"):
        kmeans(X, 5)
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans(X, 0)
    with pytest.raises(ValueError, match="2-D floating-point"):
        kmeans(torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="NaN or infinity"):
        kmeans(torch.tensor([[0.0], [float("nan")]]), 1)
    with pytest.raises(ValueError, match="init must have shape"):
        kmeans(X, 2, init=torch.zeros(3, 2))
