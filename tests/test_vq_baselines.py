"""The VQ baseline bottlenecks of SCQ's Table 1, against brute force and closed forms."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.cluster import KMeans  # noqa: E402

from skvq.neural.layers._vq_baselines import (  # noqa: E402
    AffineVQ,
    GumbelVQ,
    ResidualVQ,
    VectorQuantize,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny networks: one thread avoids the cost of waking idle threads on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _brute_force_nearest(z, codebook):
    """Nearest codeword by an explicit distance for every (vector, codeword) pair."""
    z, codebook = np.asarray(z, np.float64), np.asarray(codebook, np.float64)
    dist = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    return dist.argmin(1)


@pytest.fixture
def z():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(200, 5, generator=gen, dtype=torch.float64)


def _spread_codebook(layer, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.codebook.copy_(torch.randn(layer.codebook.shape, generator=gen))
    return layer


@pytest.mark.parametrize("cls", [VectorQuantize, AffineVQ])
def test_vq_forward_is_brute_force_nearest_codeword(cls, z):
    layer = _spread_codebook(cls(5, 16).double()).eval()
    out = layer(z)
    codebook = layer.codebook_vectors().detach().numpy()
    expected = _brute_force_nearest(z.numpy(), codebook)
    np.testing.assert_array_equal(out.codes.numpy(), expected)
    np.testing.assert_allclose(out.quantized.detach().numpy(), codebook[expected], atol=1e-12)
    np.testing.assert_allclose(layer.decode_codes(out.codes).detach().numpy(), codebook[expected])
    err = ((z.numpy() - codebook[expected]) ** 2).mean()
    assert float(out.quantization_error) == pytest.approx(err)


def test_image_feature_maps_match_flat_vectors(z):
    layer = _spread_codebook(VectorQuantize(5, 16).double()).eval()
    fmap_layer = VectorQuantize(5, 16, image_fmap=True).double().eval()
    fmap_layer.load_state_dict(layer.state_dict())
    fmap = z.reshape(2, 10, 10, 5).permute(0, 3, 1, 2)  # (N, d, H, W)
    out = fmap_layer(fmap)
    flat = layer(z)
    assert out.codes.shape == (2, 10, 10)
    np.testing.assert_array_equal(out.codes.reshape(-1).numpy(), flat.codes.numpy())
    np.testing.assert_allclose(out.quantized.permute(0, 2, 3, 1).reshape(-1, 5).detach(),
                               flat.quantized.detach())


def test_perplexity_and_usage_from_the_code_histogram(z):
    layer = _spread_codebook(VectorQuantize(5, 16).double()).eval()
    out = layer(z)
    counts = np.bincount(out.codes.numpy(), minlength=16)
    p = counts[counts > 0] / counts.sum()
    assert float(out.perplexity) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert float(out.usage) == pytest.approx((counts > 0).mean())


def test_straight_through_gradient_and_eq5_loss(z):
    beta = 0.3
    layer = _spread_codebook(VectorQuantize(5, 8, commitment_weight=beta).double())
    zz = z.clone().requires_grad_(True)
    out = layer(zz)
    w = torch.randn(z.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ((out.quantized * w).sum() + out.loss).backward()
    codebook = layer.codebook.detach().numpy()
    codes = out.codes.numpy()
    zq = codebook[codes]
    m, d = z.shape
    # STE: the decoder's gradient passes unchanged; eq. (5)'s commitment term adds
    # beta * 2 (z - z_q) / (M d) for the mean over entries.
    expected_z = w.numpy() + beta * 2.0 * (z.numpy() - zq) / (m * d)
    np.testing.assert_allclose(zz.grad.numpy(), expected_z, atol=1e-12)
    # The codebook learns only from the (1 - beta) codebook term.
    expected_c = np.zeros_like(codebook)
    np.add.at(expected_c, codes, (1 - beta) * 2.0 * (zq - z.numpy()) / (m * d))
    np.testing.assert_allclose(layer.codebook.grad.numpy(), expected_c, atol=1e-12)
    sq = ((zq - z.numpy()) ** 2).mean()
    expected_loss = (1 - beta) * sq + beta * sq
    assert float(out.loss.detach()) == pytest.approx(expected_loss)


def test_dead_code_replacement_replaces_unused_codes(z):
    layer = VectorQuantize(5, 8, threshold_ema_dead_code=1.0).double()
    with torch.no_grad():
        layer.codebook.copy_(torch.randn(8, 5, generator=torch.Generator().manual_seed(1)))
        layer.codebook[5:] += 1e3  # far from every vector: never used
        layer.cluster_size.fill_(50.0)  # the near codewords count as well used
        layer.cluster_size[5:] = 0.0
    before = layer.codebook.detach().clone()
    layer.eval()
    layer(z)
    assert layer.n_replaced == 0  # never in evaluation
    layer.train()
    out = layer(z)
    after = layer.codebook.detach()
    np.testing.assert_array_equal(after[:5].numpy(), before[:5].numpy())
    for row in after[5:].numpy():  # each dead codeword is now one of the batch's vectors
        assert np.min(np.abs(z.numpy() - row).sum(1)) == 0.0
    assert layer.n_replaced == 3
    # and the batch is quantized with the new codebook
    expected = _brute_force_nearest(z.numpy(), after.numpy())
    np.testing.assert_array_equal(out.codes.numpy(), expected)
    assert np.all(layer.cluster_size[5:].numpy() >= 1.0)


def test_plain_vq_never_replaces(z):
    layer = _spread_codebook(VectorQuantize(5, 8).double()).train()
    before = layer.codebook.detach().clone()
    layer(z)
    np.testing.assert_array_equal(layer.codebook.detach().numpy(), before.numpy())


def test_affine_codebook_and_alternating_step(z):
    layer = AffineVQ(5, 8, codebook_lr=1.0).double()
    _spread_codebook(layer)
    with torch.no_grad():
        layer.scale.fill_(2.0)
        layer.shift.fill_(0.5)
    np.testing.assert_allclose(layer.codebook_vectors().detach().numpy(),
                               layer.codebook.detach().numpy() * 2.0 + 0.5)
    layer.eval()
    err_before = float(layer(z).quantization_error)
    layer.train()
    zz = z.clone().requires_grad_(True)
    out = layer(zz)
    # The codebook moved in its own step: with codebook_lr=1 each used codeword is the mean
    # of the vectors it had, so the batch's quantization error cannot increase.
    assert float(out.quantization_error) <= err_before + 1e-12
    # The outer loss reaches the encoder only (the codebook has its own step).
    (out.quantized.sum() + out.loss).backward()
    assert layer.codebook.grad is None and layer.scale.grad is None
    assert zz.grad is not None


def test_affine_replacement_gives_the_batch_vector(z):
    layer = AffineVQ(5, 8, threshold_ema_dead_code=1.0).double()
    with torch.no_grad():
        layer.scale.fill_(3.0)
        layer.shift.fill_(-1.0)
    layer.train()
    before = layer.codebook_vectors().detach().numpy()
    layer._replace_dead_codes(z, torch.zeros(z.shape[0], dtype=torch.long))
    rows = layer.codebook_vectors().detach().numpy()
    np.testing.assert_array_equal(rows[0], before[0])  # the one codeword in use stays
    for row in rows[1:]:  # every unused codeword is now one of the batch's vectors
        assert np.min(np.abs(z.numpy() - row).max(1)) < 1e-12


def test_gumbel_codes_are_one_hot_as_temperature_goes_to_zero(z):
    torch.manual_seed(0)
    sharpness = []
    for tau in [1.0, 0.1, 1e-4]:
        layer = _spread_codebook(GumbelVQ(5, 8, temperature=tau, straight_through=False)
                                 .double()).train()
        out = layer(z)
        w = out.weights.detach().numpy()
        np.testing.assert_allclose(w.sum(1), 1.0)
        np.testing.assert_array_equal(w.argmax(1), out.codes.numpy())
        sharpness.append(w.max(1).mean())
    assert sharpness[0] < sharpness[1] < sharpness[2]
    assert sharpness[2] > 1 - 1e-6  # one-hot in the limit
    np.testing.assert_allclose(out.quantized.detach().numpy(),
                               layer.codebook.detach().numpy()[out.codes.numpy()], atol=1e-5)


def test_gumbel_straight_through_and_eval(z):
    torch.manual_seed(0)
    layer = _spread_codebook(GumbelVQ(5, 8).double()).train()
    zz = z.clone().requires_grad_(True)
    out = layer(zz)
    w = out.weights.detach().numpy()
    assert set(np.unique(w)) <= {0.0, 1.0}
    np.testing.assert_array_equal(w.sum(1), 1.0)
    (out.quantized.sum() + out.loss).backward()  # the softmax's gradient reaches z
    assert np.abs(zz.grad.numpy()).sum() > 0
    layer.eval()
    out = layer(z)  # no noise: the most likely code is the nearest codeword
    expected = _brute_force_nearest(z.numpy(), layer.codebook.detach().numpy())
    np.testing.assert_array_equal(out.codes.numpy(), expected)


def _greedy_rvq(z, n_stages, k):
    """Residual VQ with every stage's codebook fitted by k-means on the residuals."""
    residual = z.copy()
    codebooks, errors = [], []
    for q in range(n_stages):
        km = KMeans(k, n_init=1, random_state=q).fit(residual)
        codebooks.append(km.cluster_centers_)
        residual = residual - km.cluster_centers_[_brute_force_nearest(residual,
                                                                       km.cluster_centers_)]
        errors.append((residual**2).mean())
    return codebooks, errors


def test_residual_vq_error_decreases_with_stages(z):
    zn = z.numpy()
    codebooks, reference_errors = _greedy_rvq(zn, 3, 8)
    errors = []
    for n_stages in [1, 2, 3]:
        layer = ResidualVQ(5, 8, num_quantizers=n_stages).double().eval()
        with torch.no_grad():
            for stage, codebook in zip(layer.layers, codebooks):
                stage.codebook.copy_(torch.from_numpy(codebook))
        out = layer(z)
        errors.append(float(out.quantization_error))
        np.testing.assert_allclose(layer.decode_codes(out.codes).detach().numpy(),
                                   out.quantized.detach().numpy(), atol=1e-12)
        stages = layer.stage_codes(out.codes)
        assert all(int(c.max()) < 8 for c in stages)
        assert int(out.codes.max()) < layer.n_codes == 8**n_stages
    np.testing.assert_allclose(errors, reference_errors, rtol=1e-10)
    assert errors[0] > errors[1] > errors[2]


def test_residual_vq_gradients(z):
    layer = ResidualVQ(5, 8, num_quantizers=2).double()
    for i, stage in enumerate(layer.layers):
        _spread_codebook(stage, seed=i)
    zz = z.clone().requires_grad_(True)
    out = layer(zz)
    w = torch.ones_like(z)
    (out.quantized * w).sum().backward()
    np.testing.assert_allclose(zz.grad.numpy(), 1.0)  # one straight-through estimator
    out = layer(z)
    out.loss.backward()
    assert all(stage.codebook.grad.abs().sum() > 0 for stage in layer.layers)


@pytest.mark.parametrize("make", [
    lambda: VectorQuantize(0, 4),
    lambda: VectorQuantize(4, 0),
    lambda: VectorQuantize(4, 4, commitment_weight=2.0),
    lambda: VectorQuantize(4, 4, threshold_ema_dead_code=-1),
    lambda: VectorQuantize(4, 4, decay=1.0),
    lambda: AffineVQ(4, 4, codebook_lr=0.0),
    lambda: AffineVQ(4, 4, codebook_steps=0),
    lambda: GumbelVQ(4, 4, temperature=0.0),
    lambda: GumbelVQ(4, 4, kl_weight=-1.0),
    lambda: ResidualVQ(4, 4, num_quantizers=0),
])
def test_bad_parameters(make):
    with pytest.raises(ValueError):
        make()


def test_bad_input_shapes():
    with pytest.raises(ValueError, match="dim=4"):
        VectorQuantize(4, 8)(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="image_fmap"):
        VectorQuantize(4, 8, image_fmap=True)(torch.zeros(3, 4))
