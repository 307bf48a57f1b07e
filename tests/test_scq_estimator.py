"""SCQ and VQAutoencoder: codes, soft weights, pickling, devices, bad input.

scikit-learn's common checks and the quantizer contract run over them with every other
public estimator (tests/_estimators.py, test_common.py, test_contract.py); the parameters
they share with every neural quantizer are tested in test_neural_base.py."""

import io
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("skorch")

import joblib  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402

from skvq.base import code_dtype  # noqa: E402
from skvq.neural._autoencoder import BOTTLENECKS, SCQ, VQAutoencoder  # noqa: E402
from skvq.neural.layers._catalogue import CATALOGUE, BottleneckEntry  # noqa: E402
from skvq.neural.layers._vq_baselines import ResidualVQ  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")

# Small work on tiny inputs.
TINY = dict(codebook_size=4, latent_dim=2, n_latents=2, hidden_size=8, max_epochs=2,
            batch_size=16)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return load_digits().data[:300]


def _fit(digits, cls=SCQ, **params):
    params = {**dict(codebook_size=8, latent_dim=3, n_latents=2, hidden_size=16, max_epochs=3,
                     batch_size=32, random_state=0), **params}
    return cls(**params).fit(digits)


@pytest.mark.parametrize("bottleneck", BOTTLENECKS)
def test_every_bottleneck_trains_and_codes(digits, bottleneck):
    est = _fit(digits, VQAutoencoder, bottleneck=bottleneck)
    codes = est.transform(digits)
    n_stages = 2 if bottleneck == "rvq" else 1  # residual VQ: one code column per stage
    assert est.n_stages_ == n_stages
    assert codes.shape == (len(digits), 2 * n_stages)
    assert codes.dtype == code_dtype(est.n_codes_)
    assert est.n_codes_ == 8
    assert est.bits_per_sample_ == pytest.approx(2 * n_stages * np.log2(8))
    rec = est.inverse_transform(codes)
    assert rec.shape == digits.shape and rec.dtype == digits.dtype
    assert est.score(digits) == pytest.approx(-np.mean((rec - digits) ** 2))
    stats = est.bottleneck_stats(digits)
    assert 1.0 <= stats["perplexity"] <= 8.0 + 1e-9
    if bottleneck not in ("scq", "gumbel"):  # hard quantizers: no soft weights
        assert stats["soft_perplexity"] == pytest.approx(stats["perplexity"])
    assert 0.0 < stats["usage"] <= 1.0
    assert est.n_iter_ == 3 and len(est.net_.history) == 3


def test_codes_are_the_bottlenecks_nearest_codewords(digits):
    """transform = nearest codeword of the encoder output (brute force), for VQ."""
    est = _fit(digits, VQAutoencoder, bottleneck="vq", scaling="minmax")
    module = est.net_.module_
    with torch.no_grad():
        xs = torch.as_tensor(((digits - est.offset_) / est.scale_).astype(np.float32))
        z = module.encoder(xs).numpy()  # (n, n_latents, d)
    codebook = module.bottleneck.codebook.detach().numpy()
    dist = ((z[:, :, None, :] - codebook[None, None]) ** 2).sum(-1)
    np.testing.assert_array_equal(est.transform(digits), dist.argmin(-1))
    # and inverse_transform is the decoder of those codewords, unscaled
    with torch.no_grad():
        rec = module.decoder(torch.as_tensor(codebook[dist.argmin(-1)])).numpy()
    np.testing.assert_allclose(est.inverse_transform(dist.argmin(-1)),
                               rec * est.scale_ + est.offset_, rtol=1e-5, atol=1e-4)


def test_scaling_is_undone(digits):
    for scaling in ["standard", "minmax", None]:
        est = _fit(digits, VQAutoencoder, scaling=scaling, max_epochs=1)
        scaled = est._scale(digits)
        np.testing.assert_allclose(est._unscale(scaled), digits, atol=1e-4)
    est = _fit(digits, VQAutoencoder, scaling="minmax", max_epochs=1)
    scaled = est._scale(digits)
    assert scaled.min() >= -1 - 1e-6 and scaled.max() <= 1 + 1e-6


def test_scq_weights_are_convex_and_decode(digits):
    est = _fit(digits)
    weights = est.transform_weights(digits)
    assert weights.shape == (len(digits), 2, 8)
    assert weights.min() >= -1e-6
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(weights.argmax(-1), est.transform(digits))
    # Decoding the weights is the autoencoder's output (decoder of C P*).
    module = est.net_.module_
    with torch.no_grad():
        xs = torch.as_tensor(est._scale(digits))
        out = module.decoder(module.bottleneck(module.encoder(xs)).quantized).numpy()
    np.testing.assert_allclose(est.inverse_transform(weights), out * est.scale_ + est.offset_,
                               rtol=1e-4, atol=1e-3)
    stats = est.bottleneck_stats(digits)
    assert stats["reconstruction_mse"] == pytest.approx(np.mean((out - xs.numpy()) ** 2),
                                                        rel=1e-4)
    # perplexities: of the argmax codes' histogram, and of the mean convex weights
    codes = est.transform(digits).ravel()
    p = np.bincount(codes, minlength=8) / codes.size
    p = p[p > 0]
    assert stats["perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    q = weights.reshape(-1, 8).astype(np.float64).mean(0)
    q = q[q > 0] / q.sum()
    assert stats["soft_perplexity"] == pytest.approx(np.exp(-(q * np.log(q)).sum()), rel=1e-4)


@pytest.mark.parametrize("bottleneck", ["vq", "vq_affine"])
def test_one_hot_weights_decode_like_codes(digits, bottleneck):
    est = _fit(digits, VQAutoencoder, bottleneck=bottleneck)
    codes = est.transform(digits)
    weights = est.transform_weights(digits)
    np.testing.assert_array_equal(weights, np.eye(8, dtype=np.float32)[codes])
    np.testing.assert_allclose(est.inverse_transform(weights), est.inverse_transform(codes),
                               rtol=1e-5, atol=1e-5)


def test_image_shape_gives_a_conv_autoencoder(digits):
    est = _fit(digits, VQAutoencoder, bottleneck="vq_replace", image_shape=(1, 8, 8),
               n_downsample=1, hidden_size=8)
    codes = est.transform(digits)
    assert est.latent_shape_ == (4, 4) and codes.shape == (len(digits), 16)
    assert est.bits_per_sample_ == pytest.approx(16 * 3)
    assert isinstance(est.net_.module_.encoder.net[0], torch.nn.Conv2d)
    # codes are the latent map in row-major order
    module = est.net_.module_
    with torch.no_grad():
        out = module.bottleneck(module.encoder(torch.as_tensor(est._scale(digits[:5]))))
    np.testing.assert_array_equal(codes[:5], out.codes.reshape(5, -1).numpy())
    weights = est.transform_weights(digits)
    assert weights.shape == (len(digits), 16, 8)
    np.testing.assert_allclose(est.inverse_transform(weights), est.inverse_transform(codes),
                               rtol=1e-5, atol=1e-5)


def test_scq_on_images(digits):
    est = _fit(digits, image_shape=(1, 8, 8), n_downsample=2, hidden_size=8)
    weights = est.transform_weights(digits)
    assert weights.shape == (len(digits), 4, 8)
    np.testing.assert_array_equal(weights.argmax(-1), est.transform(digits))
    assert est.inverse_transform(weights).shape == digits.shape


def test_same_random_state_same_codes(digits):
    for cls, params in [(SCQ, {}), (VQAutoencoder, {"bottleneck": "gumbel"}),
                        (VQAutoencoder, {"bottleneck": "vq_replace_affine"})]:
        a = _fit(digits, cls, **params).transform(digits)
        b = _fit(digits, cls, **params).transform(digits)
        np.testing.assert_array_equal(a, b)
    w1 = _fit(digits, random_state=1).transform_weights(digits)
    w2 = _fit(digits, random_state=2).transform_weights(digits)
    assert not np.allclose(w1, w2)


def test_random_state_parameter_unchanged(digits):
    rng = np.random.RandomState(0)
    est = _fit(digits, random_state=rng)
    assert est.random_state is rng
    assert est.get_params()["device"] == "auto" and est.device_ in ("cpu", "cuda")


def test_pickle_roundtrip(digits):
    est = _fit(digits, VQAutoencoder, bottleneck="vq_replace_affine")
    buffer = io.BytesIO()
    joblib.dump(est, buffer)
    buffer.seek(0)
    loaded = joblib.load(buffer)
    np.testing.assert_array_equal(loaded.transform(digits), est.transform(digits))
    np.testing.assert_allclose(loaded.inverse_transform(est.transform(digits)),
                               est.inverse_transform(est.transform(digits)))
    assert loaded.device_ == est.device_


def test_verbose_prints_the_epoch_log(digits, capsys):
    _fit(digits, VQAutoencoder, max_epochs=2, verbose=0)
    assert capsys.readouterr().out == ""
    _fit(digits, VQAutoencoder, max_epochs=2, verbose=1)
    assert re.search(r"epoch\s+train_loss", capsys.readouterr().out)


def test_bad_inputs(digits):
    est = _fit(digits, VQAutoencoder, max_epochs=1)
    with pytest.raises(NotFittedError):
        VQAutoencoder().transform(digits)
    with pytest.raises(NotFittedError):
        SCQ().transform_weights(digits)
    bad = digits[:5].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        VQAutoencoder(**TINY).fit(bad)
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        est.transform(bad)
    with pytest.raises(ValueError, match="0 sample"):
        VQAutoencoder(**TINY).fit(digits[:0])
    with pytest.raises(ValueError, match="features"):
        est.transform(digits[:, :10])
    with pytest.raises(ValueError, match="out of range"):
        est.inverse_transform(np.full((2, 2), 8))
    with pytest.raises(ValueError, match="columns"):
        est.inverse_transform(np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        est.inverse_transform(np.zeros((2, 2, 5)))
    with pytest.raises(ValueError, match="finite"):
        est.inverse_transform(np.full((2, 2, 8), np.nan))
    with pytest.raises(ValueError, match="image_shape"):
        VQAutoencoder(image_shape=(1, 8, 7), **TINY).fit(digits)
    with pytest.raises(ValueError, match="multiples"):
        VQAutoencoder(image_shape=(1, 8, 8), n_downsample=4, **TINY).fit(digits)
    with pytest.raises(ValueError, match="three positive"):
        VQAutoencoder(image_shape=(64,), **TINY).fit(digits)
    with pytest.raises(ValueError, match="bottleneck"):
        VQAutoencoder(bottleneck="kmeans").fit(digits)
    with pytest.raises(ValueError, match="alpha"):
        SCQ(alpha=0.0).fit(digits)
    rvq = _fit(digits, VQAutoencoder, bottleneck="rvq", max_epochs=1)
    with pytest.raises(ValueError, match="rvq"):
        rvq.transform_weights(digits)
    with pytest.raises(ValueError, match="rvq"):
        rvq.inverse_transform(np.zeros((2, 2, 8)))
    with pytest.raises(ValueError, match="bottleneck_params may not set 'dim'"):
        VQAutoencoder(bottleneck_params={"dim": 3}, **TINY).fit(digits)
    with pytest.raises(ValueError, match="bottleneck_params may not set 'commitment_weight'"):
        SCQ(bottleneck_params={"commitment_weight": 0.5}, **TINY).fit(digits)
    with pytest.raises(ValueError, match="does not take 'temperature'"):
        VQAutoencoder(bottleneck_params={"temperature": 0.5}, **TINY).fit(digits)
    # a bad value in bottleneck_params: the layer's message, naming its parameter
    with pytest.raises(ValueError, match="num_quantizers must be an int >= 1, got 'x'"):
        VQAutoencoder("rvq", bottleneck_params={"num_quantizers": "x"}, **TINY).fit(digits)
    with pytest.raises(ValueError, match="tol must be a real number > 0"):
        SCQ(bottleneck_params={"tol": -1.0}, **TINY).fit(digits)
    # an absurd n_downsample: refused at once (2**n_downsample is never computed)
    with pytest.raises(ValueError, match="n_downsample=1000000000 halves the image"):
        VQAutoencoder(image_shape=(1, 8, 8), n_downsample=10**9, **TINY).fit(digits)


def test_residual_codes_are_the_layers_stage_codes(digits):
    """transform: per latent position, the residual VQ's stage codes next to each other;
    inverse_transform decodes the sum of the stages' codewords."""
    est = _fit(digits, VQAutoencoder, bottleneck="rvq",
               bottleneck_params={"num_quantizers": 3}, max_epochs=1)
    codes = est.transform(digits[:20])
    assert codes.shape == (20, 6) and est.n_stages_ == 3 and est.n_codes_ == 8
    assert est.bits_per_sample_ == pytest.approx(6 * 3)
    module = est.net_.module_
    with torch.no_grad():
        z = module.encoder(torch.as_tensor(est._scale(digits[:20])))
        out = module.bottleneck(z)
        expected = module.decoder(out.quantized).numpy() * est.scale_ + est.offset_
    np.testing.assert_array_equal(codes.reshape(20, 2, 3), out.codes.numpy())
    np.testing.assert_allclose(est.inverse_transform(codes), expected, rtol=1e-5, atol=1e-4)
    stats = est.bottleneck_stats(digits)
    all_codes = est.transform(digits).reshape(-1, 3)
    perplexities = []
    for q in range(3):
        p = np.bincount(all_codes[:, q], minlength=8) / len(all_codes)
        p = p[p > 0]
        perplexities.append(np.exp(-(p * np.log(p)).sum()))
    assert stats["perplexity"] == pytest.approx(np.mean(perplexities))


def test_a_new_catalogue_row_needs_no_estimator_change(digits, monkeypatch):
    """A bottleneck added as one catalogue row (here a 3-stage residual VQ under a new name)
    trains and codes: the estimator asks the layer, never its type."""
    monkeypatch.setitem(CATALOGUE, "rvq3", BottleneckEntry(ResidualVQ, {"num_quantizers": 3},
                                                           "RQVAE (3 stages)", "three stages"))
    from sklearn.utils._param_validation import StrOptions

    # the estimators derive this constraint from the catalogue at import
    monkeypatch.setitem(VQAutoencoder._parameter_constraints, "bottleneck",
                        [StrOptions(set(CATALOGUE))])
    est = _fit(digits, VQAutoencoder, bottleneck="rvq3", max_epochs=1)
    assert est.n_stages_ == 3 and est.transform(digits).shape == (len(digits), 6)
    assert est.inverse_transform(est.transform(digits)).shape == digits.shape


def test_bottleneck_choices_come_from_the_catalogue():
    (options,) = VQAutoencoder._parameter_constraints["bottleneck"]
    assert options.options == set(BOTTLENECKS) == set(CATALOGUE)
    for name, entry in CATALOGUE.items():
        assert f'"{name}"' in VQAutoencoder.__doc__ and entry.table1_row in VQAutoencoder.__doc__


def test_zero_rows(digits):
    """inverse_transform of zero rows gives (0, n_features), as the classical quantizers;
    transform of zero rows is refused with scikit-learn's message, as theirs."""
    from skvq import PQ

    pq = PQ(n_subspaces=2, n_bits=2, random_state=0).fit(digits)
    for est in [_fit(digits, max_epochs=1), _fit(digits, VQAutoencoder, max_epochs=1),
                _fit(digits, VQAutoencoder, bottleneck="rvq", max_epochs=1),
                _fit(digits, image_shape=(1, 8, 8), n_downsample=1, max_epochs=1)]:
        codes = est.transform(digits[:3])[:0]
        rec = est.inverse_transform(codes)
        assert rec.shape == (0, 64) and rec.dtype == digits.dtype
        assert pq.inverse_transform(pq.transform(digits[:3])[:0]).shape == (0, 64)
        if est.n_stages_ == 1:
            weights = est.inverse_transform(np.zeros((0, est.n_latent_positions_, 8)))
            assert weights.shape == (0, 64)
        for method in (est.transform, est.bottleneck_stats, pq.transform):
            with pytest.raises(ValueError, match="0 sample"):
                method(digits[:0])


def test_values_near_the_float64_limit(digits):
    """Finite data of 1e300: the scaling brings them to the network's range (the same codes
    as the same data at unit scale); beyond what float32 can hold after the scaling, a
    ValueError says so (it was 'NaN or infinity', or code 0 for every row)."""
    small = _fit(digits, max_epochs=1)
    big = _fit(digits * 1e300, max_epochs=1)
    varying = digits.std(0) > 0  # constant features keep the scale 1
    np.testing.assert_allclose(big.scale_[varying] / 1e300, small.scale_[varying], rtol=1e-12)
    np.testing.assert_allclose(big.offset_ / 1e300, small.offset_, rtol=1e-12, atol=1e-300)
    agree = (big.transform(digits * 1e300) == small.transform(digits)).mean()
    assert agree > 0.99
    minmax = _fit(digits * 1e300, VQAutoencoder, scaling="minmax", max_epochs=1)
    assert np.all(np.isfinite(minmax.inverse_transform(minmax.transform(digits * 1e300))))
    with pytest.raises(ValueError, match="overflow float32"):
        VQAutoencoder(scaling=None, **TINY).fit(digits * 1e300)
    with pytest.raises(ValueError, match="overflow float32"):
        small.transform(digits * 1e300)


@pytest.mark.parametrize("cls", [SCQ, VQAutoencoder])
@pytest.mark.parametrize("size", [{"codebook_size": 10**9}, {"latent_dim": 10**9},
                                  {"hidden_size": 10**9}, {"n_latents": 10**9},
                                  {"hidden_size": 10**30},
                                  {"hidden_size": 10**6, "image_shape": (1, 8, 8),
                                   "n_downsample": 1}])
def test_oversized_networks_fail_before_allocating(digits, cls, size):
    with pytest.raises(ValueError, match="parameters|cannot build"):
        cls(**{**TINY, **size}).fit(digits)


def test_training_batches_beyond_the_memory_limit_are_refused(digits):
    """A codebook small enough to build but whose distance table for one training batch
    (16 rows x 2 latent vectors x 2e7 codewords, about 10 GB with autograd's copies) would
    not fit: a ValueError naming the parameters, not torch's allocation error."""
    params = {**TINY, "latent_dim": 1, "codebook_size": 2 * 10**7}
    with pytest.raises(ValueError, match="batch_size=16 give training batches.*lower "
                                         "batch_size or codebook_size"):
        VQAutoencoder(**params).fit(digits)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the error without CUDA")
def test_cuda_requested_without_cuda(digits):
    with pytest.raises(ValueError, match="CUDA is not available"):
        VQAutoencoder(device="cuda", **TINY).fit(digits)


@CUDA
@pytest.mark.parametrize("cls", [SCQ, VQAutoencoder])
def test_cuda_fit_and_load_on_cpu(digits, cls, monkeypatch):
    est = _fit(digits, cls, device="cuda")
    assert est.device_ == "cuda"
    assert next(est.net_.module_.parameters()).is_cuda
    codes = est.transform(digits)
    buffer = io.BytesIO()
    joblib.dump(est, buffer)
    buffer.seek(0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(Warning):  # skorch says it maps the CUDA tensors to the CPU
        loaded = joblib.load(buffer)
    assert loaded.device_ == "cpu"
    assert not next(loaded.net_.module_.parameters()).is_cuda
    agree = (loaded.transform(digits) == codes).mean()
    assert agree > 0.99  # CPU and CUDA kernels may differ in the last bits
