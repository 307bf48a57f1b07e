"""The VQ baseline bottlenecks of SCQ's Table 1, against brute force and closed forms."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.cluster import KMeans  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from skvq.neural.layers import _bottleneck  # noqa: E402
from skvq.neural.layers._bottleneck import Bottleneck  # noqa: E402
from skvq.neural.layers._catalogue import BOTTLENECKS, CATALOGUE, make_bottleneck  # noqa: E402
from skvq.neural.layers._fsq import FSQ  # noqa: E402
from skvq.neural.layers._scq_layer import SoftConvexQuantizer  # noqa: E402
from skvq.neural.layers._vq_baselines import (  # noqa: E402
    AffineVQ,
    GumbelVQ,
    ResidualVQ,
    VectorQuantize,
)

ALL_LAYERS = [VectorQuantize, AffineVQ, GumbelVQ, ResidualVQ, SoftConvexQuantizer, FSQ]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    rows = []
    for row in after[5:].numpy():  # each dead codeword is now one of the batch's vectors
        dist = np.abs(z.numpy() - row).sum(1)
        assert dist.min() == 0.0
        rows.append(int(dist.argmin()))
    assert len(set(rows)) == 3  # distinct vectors
    assert layer.n_replaced == 3
    # the batch was quantized before the replacement (vector-quantize-pytorch's order)
    np.testing.assert_array_equal(out.codes.numpy(),
                                  _brute_force_nearest(z.numpy(), before.numpy()))
    # usage averages: decay 0.99 towards the batch's counts, the replaced ones reset
    counts = np.bincount(out.codes.numpy(), minlength=8)
    np.testing.assert_allclose(layer.cluster_size[:5].numpy(),
                               0.99 * 50.0 + 0.01 * counts[:5], rtol=1e-6)
    np.testing.assert_array_equal(layer.cluster_size[5:].numpy(), 1.0)


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
    layer._update_codebook(z, torch.zeros(z.shape[0], dtype=torch.long))
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
        assert out.codes.shape == ((200,) if n_stages == 1 else (200, n_stages))
        stages = layer.stage_codes(out.codes)
        assert len(stages) == layer.n_stages == n_stages
        assert all(c.shape == (200,) and int(c.max()) < 8 for c in stages)
        assert layer.n_codes == 8
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
    lambda: VectorQuantize(4, 4, decay=-0.1),
    lambda: GumbelVQ(4, 4, straight_through=1),
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


# -- every bottleneck: parameters validated once, with the parameter's name ----------------
@pytest.mark.parametrize("cls", ALL_LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name, value, error", [
    ("dim", "4", TypeError), ("dim", 2.5, TypeError), ("dim", None, TypeError),
    ("dim", True, TypeError), ("dim", 0, ValueError), ("dim", 4.0, TypeError),
    ("codebook_size", "8", TypeError), ("codebook_size", -1, ValueError),
    ("codebook_size", np.float64(8), TypeError),
    ("image_fmap", "yes", TypeError), ("image_fmap", 1, TypeError),
])
def test_shared_parameters_are_validated(cls, name, value, error):
    params = {"dim": 4, "codebook_size": 8, name: value}
    with pytest.raises(error, match=f"^{name} must be"):
        cls(**params)


@pytest.mark.parametrize("cls, params", [
    (VectorQuantize, {"commitment_weight": "x"}), (VectorQuantize, {"commitment_weight": None}),
    (VectorQuantize, {"threshold_ema_dead_code": float("nan")}),
    (VectorQuantize, {"decay": float("inf")}), (AffineVQ, {"codebook_steps": 1.5}),
    (AffineVQ, {"codebook_lr": "0.5"}), (GumbelVQ, {"temperature": None}),
    (GumbelVQ, {"kl_weight": float("nan")}), (ResidualVQ, {"num_quantizers": "2"}),
    (ResidualVQ, {"num_quantizers": 2.5}), (SoftConvexQuantizer, {"alpha": "x"}),
    (SoftConvexQuantizer, {"alpha": None}), (SoftConvexQuantizer, {"solver": None}),
    (SoftConvexQuantizer, {"tol": "1e-6"}), (SoftConvexQuantizer, {"max_iter": 2.0}),
    (SoftConvexQuantizer, {"n_steps": True}), (SoftConvexQuantizer, {"codebook_init": 1}),
], ids=lambda x: getattr(x, "__name__", str(x)))
def test_own_parameters_are_validated(cls, params):
    (name,) = params
    with pytest.raises((TypeError, ValueError), match=f"^{name} must be"):
        cls(4, 8, **params)


def test_numpy_integers_and_reals_are_accepted():
    layer = VectorQuantize(np.int64(4), np.int32(8), commitment_weight=np.float32(0.5),
                           decay=1 - 1e-3, image_fmap=np.bool_(False))
    assert (layer.dim, layer.codebook_size, layer.commitment_weight) == (4, 8, 0.5)
    assert type(layer.dim) is int and type(layer.commitment_weight) is float


@pytest.mark.parametrize("cls", ALL_LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("size", [{"codebook_size": 10**9}, {"dim": 10**9},
                                  {"codebook_size": 10**30}])
def test_oversized_layers_fail_before_allocating(cls, size):
    params = {"dim": 4, "codebook_size": 8, **size}
    with pytest.raises(ValueError, match=r"parameters \(.* GB in float32\), above the limit"):
        cls(**params)


def test_residual_vq_size_counts_every_stage(monkeypatch):
    monkeypatch.setattr(_bottleneck, "MAX_PARAMETER_BYTES", 4 * 1000)
    VectorQuantize(10, 100)  # 1,000 values: at the limit
    with pytest.raises(ValueError, match="2 codebooks"):
        ResidualVQ(10, 100, num_quantizers=2)


# -- every bottleneck: input checks in forward ----------------------------------------------
@pytest.mark.parametrize("cls", ALL_LAYERS, ids=lambda c: c.__name__)
def test_bad_inputs_give_clear_errors(cls):
    layer = cls(4, 8)
    cases = [
        (torch.zeros(16, 0), ValueError, "dim=4"),
        (torch.tensor(1.0), ValueError, "0-d"),
        (torch.zeros(0, 4), ValueError, "empty"),
        (torch.zeros(2, 3, 0, 4), ValueError, "empty"),
        (np.zeros((3, 4), dtype=np.float32), TypeError, "torch.Tensor"),
        (torch.zeros(3, 4, dtype=torch.int64), TypeError, "floating"),
        (torch.zeros(3, 4, dtype=torch.float64), TypeError, "dtype"),
        (torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), ValueError, "NaN"),
        (torch.tensor([[0.0, float("inf"), 0.0, 0.0]]), ValueError, "infinity"),
        (torch.full((3, 4), 1e30), ValueError, "overflow torch.float32"),
    ]
    for z, error, match in cases:
        with pytest.raises(error, match=match):
            layer(z)
    fmap = cls(4, 8, image_fmap=True)
    with pytest.raises(ValueError, match=r"\(N, d, H, W\)"):
        fmap(torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="channels"):
        fmap(torch.zeros(2, 3, 5, 5))


def _exact_nearest(z, codebook):
    """Nearest codeword in exact rational arithmetic: at |z| = 1e30 the float64 distances
    ||z - c||^2 all round to the same number."""
    from fractions import Fraction

    def dist(row, c):
        return sum((Fraction(float(a)) - Fraction(float(b))) ** 2 for a, b in zip(row, c))

    return np.array([min(range(len(codebook)), key=lambda j: dist(row, codebook[j]))
                     for row in z])


@pytest.mark.parametrize("cls", [VectorQuantize, AffineVQ, ResidualVQ, GumbelVQ])
def test_large_float64_inputs_are_quantized_exactly(cls):
    """1e30 overflows float32's squared distances but not float64's: the layer works."""
    layer = _spread_codebook(cls(5, 16).double()) if cls is not ResidualVQ else cls(5, 16)
    layer = layer.double().eval()
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(50, 5, generator=gen, dtype=torch.float64) * 1e30
    out = layer(z)
    assert torch.isfinite(out.quantized).all() and torch.isfinite(out.loss)
    codebook = (layer.layers[0].codebook if cls is ResidualVQ
                else layer.codebook_vectors()).detach().numpy()
    first = out.codes[:, 0] if cls is ResidualVQ else out.codes
    np.testing.assert_array_equal(first.numpy(), _exact_nearest(z.numpy(), codebook))


# -- evaluation mode: the output is the codeword, exactly ------------------------------------
@pytest.mark.parametrize("cls", [VectorQuantize, AffineVQ, GumbelVQ, ResidualVQ])
def test_eval_output_is_exactly_the_decoded_codes(cls):
    """vector-quantize-pytorch's test_vq_eval: in evaluation the output is the codeword of the
    code (here exactly, not only close), for every hard-output bottleneck."""
    torch.manual_seed(0)
    layer = cls(16, 32)
    if cls is AffineVQ:
        with torch.no_grad():
            layer.scale.uniform_(0.5, 2.0)
            layer.shift.normal_()
    layer.eval()
    z = torch.randn(4, 50, 16)
    out = layer(z)
    assert torch.equal(out.quantized, layer.decode_codes(out.codes))
    if cls is not ResidualVQ:
        assert torch.equal(out.quantized, layer.codebook_vectors().detach()[out.codes])
    # training mode: the straight-through estimator, the same values up to rounding
    layer.train()
    if cls is GumbelVQ:
        return  # in training Gumbel samples its code
    train = layer(z)
    assert torch.allclose(train.quantized, layer.decode_codes(train.codes), atol=1e-6)


def test_eval_matches_vector_quantize_pytorch():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    peer = vqp.VectorQuantize(dim=16, codebook_size=64, decay=0.8, commitment_weight=1.0)
    layer = VectorQuantize(16, 64, commitment_weight=1.0)
    with torch.no_grad():
        layer.codebook.copy_(torch.randn(64, 16))
        peer.codebook = layer.codebook.detach().clone()
    peer.eval()
    layer.eval()
    x = torch.randn(1, 1024, 16)
    quantized, indices, _ = peer(x)
    out = layer(x)
    assert torch.equal(out.codes, indices)
    assert torch.equal(out.quantized, peer.get_output_from_indices(indices))
    assert torch.allclose(out.quantized, quantized)


def test_residual_vq_matches_vector_quantize_pytorch_in_eval():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    peer = vqp.ResidualVQ(dim=8, num_quantizers=3, codebook_size=32)
    layer = ResidualVQ(8, 32, num_quantizers=3)
    with torch.no_grad():
        for q in range(3):
            codebook = torch.randn(32, 8) / (q + 1)
            layer.layers[q].codebook.copy_(codebook)
            peer.layers[q].codebook = codebook
    peer.eval()
    layer.eval()
    x = torch.randn(2, 100, 8)
    quantized, indices, _ = peer(x)
    out = layer(x)
    assert out.codes.shape == indices.shape == (2, 100, 3)
    assert torch.equal(out.codes, indices)
    assert torch.allclose(out.quantized, quantized, atol=1e-6)
    assert torch.allclose(layer.decode_codes(out.codes), peer.get_output_from_indices(indices),
                          atol=1e-6)


# -- residual VQ: one code per stage, statistics per stage -----------------------------------
def _greedy_residual_codes(z, codebooks):
    """Brute-force residual coding with fixed codebooks (float64)."""
    residual, codes = z.copy(), []
    for codebook in codebooks:
        k = _brute_force_nearest(residual, codebook)
        codes.append(k)
        residual = residual - codebook[k]
    return np.stack(codes, 1)


@pytest.mark.parametrize("n_stages, k", [(8, 128), (8, 1024), (3, 1024)])
def test_residual_vq_many_stages_codes_and_statistics(n_stages, k):
    """The sizes whose combined code (sum k_q K^q) needed a 5.7e17-byte histogram, or
    overflowed int64 (1024**8 = 2**80): codes are per stage, counted per stage."""
    torch.manual_seed(1)
    layer = ResidualVQ(6, k, num_quantizers=n_stages).double()
    with torch.no_grad():
        for q, stage in enumerate(layer.layers):
            stage.codebook.copy_(torch.randn(k, 6, dtype=torch.float64) * 0.5**q)
    z = torch.randn(300, 6, dtype=torch.float64)
    out = layer.eval()(z)
    codebooks = [stage.codebook.detach().numpy() for stage in layer.layers]
    expected = _greedy_residual_codes(z.numpy(), codebooks)
    np.testing.assert_array_equal(out.codes.numpy(), expected)
    rec = sum(c[expected[:, q]] for q, c in enumerate(codebooks))
    np.testing.assert_allclose(out.quantized.detach().numpy(), rec, atol=1e-12)
    perplexities, usages = [], []
    for q in range(n_stages):
        counts = np.bincount(expected[:, q], minlength=k)
        p = counts[counts > 0] / counts.sum()
        perplexities.append(np.exp(-(p * np.log(p)).sum()))
        usages.append((counts > 0).mean())
    assert float(out.perplexity) == pytest.approx(np.mean(perplexities))
    assert float(out.usage) == pytest.approx(np.mean(usages))
    # training: forward and backward at these sizes too
    layer.train()
    zz = z.clone().requires_grad_()
    train = layer(zz)
    (train.quantized.sum() + train.loss).backward()
    assert torch.isfinite(zz.grad).all()


def test_residual_vq_image_fmap_codes_have_a_stage_axis():
    layer = ResidualVQ(4, 8, num_quantizers=3, image_fmap=True).eval()
    z = torch.randn(2, 4, 5, 6)
    out = layer(z)
    assert out.codes.shape == (2, 5, 6, 3)
    assert torch.equal(layer.decode_codes(out.codes), out.quantized)
    flat = ResidualVQ(4, 8, num_quantizers=3).eval()
    flat.load_state_dict(layer.state_dict())
    ref = flat(z.permute(0, 2, 3, 1))
    assert torch.equal(ref.codes, out.codes)


def test_decode_codes_checks_its_input():
    layer = ResidualVQ(4, 8, num_quantizers=2)
    with pytest.raises(ValueError, match="stage axis"):
        layer.decode_codes(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        layer.decode_codes(torch.full((5, 2), 8))
    with pytest.raises(TypeError, match="integer"):
        VectorQuantize(4, 8).decode_codes(torch.zeros(5))


# -- the interface the estimators use -----------------------------------------------------
@pytest.mark.parametrize("cls", [SoftConvexQuantizer, GumbelVQ])
def test_weights_flat_layout_round_trip_on_feature_maps(cls):
    torch.manual_seed(0)
    layer = cls(4, 8, image_fmap=True).double().eval()
    z = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    out = layer(z)
    flat = layer.weights_to_flat(out.weights)
    assert flat.shape == (30, 8)
    # row order is the codes' order: the argmax of each row is that vector's code
    assert torch.equal(flat.argmax(1), out.codes.reshape(-1))
    assert torch.equal(layer.weights_from_flat(flat, out.codes.shape), out.weights)
    assert torch.equal(layer.flat_weights(out), flat)
    np.testing.assert_allclose(layer.decode_weights(out.weights).detach().numpy(),
                               np.einsum("nkhw,kd->ndhw", out.weights.detach().numpy(),
                                         layer.codebook.detach().numpy()), atol=1e-12)


def test_hard_bottlenecks_give_one_hot_weights_and_stages():
    layer = _spread_codebook(VectorQuantize(4, 8)).eval()
    out = layer(torch.randn(3, 7, 4))
    assert layer.n_stages == 1 and layer.has_codebook_weights
    assert layer.code_shape((3, 7)) == (3, 7)
    np.testing.assert_array_equal(layer.flat_weights(out).numpy(),
                                  np.eye(8)[out.codes.reshape(-1).numpy()])
    assert [c.shape for c in layer.stage_codes(out.codes)] == [(3, 7)]
    rvq = ResidualVQ(4, 8, num_quantizers=3).eval()
    out = rvq(torch.randn(3, 7, 4))
    assert rvq.n_stages == 3 and not rvq.has_codebook_weights
    assert rvq.code_shape((3, 7)) == (3, 7, 3) == out.codes.shape
    assert [c.shape for c in rvq.stage_codes(out.codes)] == [(3, 7)] * 3
    with pytest.raises(ValueError, match="3 codebooks"):
        rvq.flat_weights(out)
    with pytest.raises(ValueError, match="3 codebooks"):
        rvq.decode_weights(torch.zeros(3, 8))


# -- the catalogue ---------------------------------------------------------------------------
def test_catalogue_is_the_one_table():
    assert BOTTLENECKS == tuple(CATALOGUE)
    for name, entry in CATALOGUE.items():
        assert issubclass(entry.cls, Bottleneck)
        assert entry.table1_row and entry.description
        layer = make_bottleneck(name, 4, 8, commitment_weight=0.4)
        assert type(layer) is entry.cls
        for key, value in entry.preset.items():
            assert getattr(layer, key) == value
        if hasattr(layer, "commitment_weight"):
            assert layer.commitment_weight == 0.4
    assert make_bottleneck("rvq", 4, 8, num_quantizers=5).n_stages == 5
    assert make_bottleneck("vq_replace", 4, 8, threshold_ema_dead_code=3.0) \
        .threshold_ema_dead_code == 3.0  # params override the preset


def test_make_bottleneck_errors_name_the_problem():
    with pytest.raises(ValueError, match="must be one of 'scq'"):
        make_bottleneck("kmeans", 4, 8)
    with pytest.raises(ValueError, match="'vq' .* does not take 'alpha'.*decay"):
        make_bottleneck("vq", 4, 8, alpha=1.0)


# -- vector-quantize-pytorch's options: parity on the same inputs and codebooks ---------------
def _vqp_pair(peer_kw, ours_kw, k=32, d=8, codebook=None, seed=0):
    """vector-quantize-pytorch's VectorQuantize and ours with the same codebook (and EMA
    sums) copied in."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(seed)
    peer = vqp.VectorQuantize(dim=d, codebook_size=k, **peer_kw)
    ours = VectorQuantize(d, k, **ours_kw)
    if codebook is not None:
        with torch.no_grad():
            ours.codebook.copy_(codebook)
            peer._codebook.embed.copy_(codebook[None])
            if ours.embed_avg is not None:
                ours.embed_avg.copy_(codebook)
                peer._codebook.embed_avg.copy_(codebook[None])
    return peer, ours


def _train_steps_agree(peer, ours, n_steps=3, shape=(2, 150), mask=None, atol=1e-6,
                       exact=False):
    """Training steps on the same batches and seeds: codes equal, outputs, losses, input
    gradients, codebooks, usage averages and EMA sums equal (to ``atol``)."""
    close = (lambda a, b: torch.equal(a, b)) if exact else (
        lambda a, b: torch.allclose(a, b, atol=atol, rtol=0))
    peer.train()
    ours.train()
    d = ours.dim
    for step in range(n_steps):
        x = torch.randn(*shape, d, generator=torch.Generator().manual_seed(100 + step)) * 2
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        kwargs = {} if mask is None else {"mask": mask}
        torch.manual_seed(10 + step)
        quantized, indices, loss = peer(xa, **kwargs)
        torch.manual_seed(10 + step)
        out = ours(xb, **kwargs)
        assert torch.equal(out.codes, indices)
        assert close(out.quantized, quantized)
        assert close(out.loss, loss)
        g = torch.randn(x.shape, generator=torch.Generator().manual_seed(step))
        ((quantized * g).sum() + loss).backward()
        ((out.quantized * g).sum() + out.loss).backward()
        assert close(xb.grad, xa.grad)
        assert close(ours.codebook.detach(), peer.codebook.detach())
        assert close(ours.cluster_size, peer._codebook.cluster_size[0])
        if ours.embed_avg is not None:
            assert close(ours.embed_avg, peer._codebook.embed_avg[0])
    peer.eval()
    ours.eval()
    x = torch.randn(3, 40, d, generator=torch.Generator().manual_seed(7))
    quantized, indices, _ = peer(x)
    out = ours(x)
    assert torch.equal(out.codes, indices)
    assert close(out.quantized, quantized)


def test_ema_and_dead_codes_with_mask_match_vector_quantize_pytorch():
    """EMA codebook (decay, eps), dead-code replacement and a padding mask: bit for bit the
    same codes, outputs, losses, gradients, codebooks, usage averages and EMA sums, and the
    same replacement draws from the same seed."""
    codebook = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    codebook[20:] += 50.0  # never used: replaced
    mask = torch.ones(2, 150, dtype=torch.bool)
    mask[1, 90:] = False
    peer, ours = _vqp_pair(
        dict(decay=0.8, eps=1e-5, commitment_weight=0.5, threshold_ema_dead_code=2.0,
             rotation_trick=False),
        dict(decay=0.8, eps=1e-5, commitment_weight=0.5, threshold_ema_dead_code=2.0,
             ema_update=True), codebook=codebook)
    _train_steps_agree(peer, ours, n_steps=4, mask=mask, exact=True)
    assert ours.n_replaced >= 12


def test_dead_code_replacement_of_the_learned_codebook_matches_vector_quantize_pytorch():
    """The gradient-trained codebook (ema_update=False, vqp's learnable_codebook) with
    dead-code replacement: the same usage averages and replaced codewords (the losses are
    weighted differently: eq. (5) here, commitment_weight * MSE there)."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    codebook = torch.randn(16, 4, generator=torch.Generator().manual_seed(2))
    codebook[10:] -= 40.0
    peer = vqp.VectorQuantize(dim=4, codebook_size=16, decay=0.9, threshold_ema_dead_code=1.5,
                              ema_update=False, learnable_codebook=True, rotation_trick=False)
    ours = VectorQuantize(4, 16, decay=0.9, threshold_ema_dead_code=1.5)
    with torch.no_grad():
        peer._codebook.embed.copy_(codebook[None])
        ours.codebook.copy_(codebook)
    for step in range(3):
        x = torch.randn(1, 60, 4, generator=torch.Generator().manual_seed(step))
        torch.manual_seed(step)
        _, indices, _ = peer(x)
        torch.manual_seed(step)
        out = ours(x)
        assert torch.equal(out.codes, indices)
        assert torch.equal(ours.codebook.detach(), peer.codebook.detach())
        assert torch.equal(ours.cluster_size, peer._codebook.cluster_size[0])
    assert ours.n_replaced >= 6


def test_cosine_similarity_codebook_matches_vector_quantize_pytorch():
    codebook = F.normalize(torch.randn(32, 8, generator=torch.Generator().manual_seed(3)), dim=1)
    peer, ours = _vqp_pair(
        dict(use_cosine_sim=True, decay=0.8, commitment_weight=1.0, rotation_trick=False,
             threshold_ema_dead_code=1.5),
        dict(use_cosine_sim=True, decay=0.8, commitment_weight=1.0, ema_update=True,
             threshold_ema_dead_code=1.5), codebook=codebook)
    _train_steps_agree(peer, ours, atol=1e-6)


def test_rotation_trick_matches_vector_quantize_pytorch():
    codebook = torch.randn(32, 8, generator=torch.Generator().manual_seed(4))
    peer, ours = _vqp_pair(dict(decay=0.8, commitment_weight=0.25, rotation_trick=True),
                           dict(decay=0.8, commitment_weight=0.25, ema_update=True,
                                rotation_trick=True), codebook=codebook)
    _train_steps_agree(peer, ours, atol=1e-6)


@pytest.mark.parametrize("cosine", [False, True])
def test_kmeans_init_matches_vector_quantize_pytorch(cosine):
    """k-means of the first batch from the same start (the same draw from the same seed),
    then EMA steps. vqp divides its k-means sums by Laplace-smoothed counts, a relative
    change of eps / cluster size (5e-5 on a codeword of size 5 alone in its cluster) in the
    first batch's outputs; the codebooks after the first EMA update agree to 1e-6."""
    peer, ours = _vqp_pair(
        dict(decay=0.8, commitment_weight=0.25, rotation_trick=False, kmeans_init=True,
             kmeans_iters=5, use_cosine_sim=cosine),
        dict(decay=0.8, commitment_weight=0.25, ema_update=True, kmeans_init=True,
             kmeans_iters=5, use_cosine_sim=cosine))
    _train_steps_agree(peer, ours, atol=1e-4)


def test_residual_vq_with_ema_dead_codes_and_mask_matches_vector_quantize_pytorch():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    k, d, n_stages = 16, 6, 3
    peer = vqp.ResidualVQ(dim=d, num_quantizers=n_stages, codebook_size=k, decay=0.8,
                          commitment_weight=0.5, rotation_trick=False,
                          threshold_ema_dead_code=1.0)
    ours = ResidualVQ(d, k, num_quantizers=n_stages, decay=0.8, commitment_weight=0.5,
                      ema_update=True, threshold_ema_dead_code=1.0)
    with torch.no_grad():
        for q in range(n_stages):
            codebook = torch.randn(k, d, generator=torch.Generator().manual_seed(q)) / (q + 1)
            codebook[12:] += 30.0  # unused: replaced
            for buf in (ours.layers[q].codebook, ours.layers[q].embed_avg,
                        peer.layers[q]._codebook.embed[0], peer.layers[q]._codebook.embed_avg[0]):
                buf.copy_(codebook)
    mask = torch.ones(2, 100, dtype=torch.bool)
    mask[0, 80:] = False
    for step in range(3):
        x = torch.randn(2, 100, d, generator=torch.Generator().manual_seed(10 + step))
        torch.manual_seed(step)
        quantized, indices, losses = peer(x, mask=mask)
        torch.manual_seed(step)
        out = ours(x, mask=mask)
        assert torch.equal(out.codes, indices)
        assert torch.allclose(out.quantized, quantized, atol=1e-6)
        assert torch.allclose(out.loss, losses.sum(), atol=1e-6)
        for q in range(n_stages):
            assert torch.allclose(ours.layers[q].codebook, peer.layers[q].codebook, atol=1e-6)
    assert sum(layer.n_replaced for layer in ours.layers) > 0


# -- the same options against closed forms and brute force ------------------------------------
def test_ema_update_closed_form(z):
    k, decay, eps = 6, 0.7, 1e-3
    layer = _spread_codebook(VectorQuantize(5, k, ema_update=True, decay=decay, eps=eps,
                                            commitment_weight=0.4).double())
    with torch.no_grad():
        layer.embed_avg.copy_(layer.codebook * 2.0)
        layer.cluster_size.fill_(2.0)
    codebook = layer.codebook.detach().numpy().copy()
    assert not layer.codebook.requires_grad
    zz = z.clone().requires_grad_()
    out = layer.train()(zz)
    codes = _brute_force_nearest(z.numpy(), codebook)
    np.testing.assert_array_equal(out.codes.numpy(), codes)
    counts = np.bincount(codes, minlength=k)
    sums = np.zeros((k, 5))
    np.add.at(sums, codes, z.numpy())
    size = decay * 2.0 + (1 - decay) * counts
    avg = decay * 2.0 * codebook + (1 - decay) * sums
    smoothed = (size + eps) / (size.sum() + k * eps) * size.sum()
    np.testing.assert_allclose(layer.cluster_size.numpy(), size, rtol=1e-12)
    np.testing.assert_allclose(layer.embed_avg.numpy(), avg, rtol=1e-12)
    np.testing.assert_allclose(layer.codebook.detach().numpy(), avg / smoothed[:, None],
                               rtol=1e-12)
    # the loss is the commitment term only, on the codewords before the update
    expected = 0.4 * ((z.numpy() - codebook[codes]) ** 2).mean()
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-12)
    out.loss.backward()
    assert layer.codebook.grad is None


def test_cosine_codes_are_the_most_similar_unit_codewords(z):
    layer = _spread_codebook(VectorQuantize(5, 16, use_cosine_sim=True).double()).eval()
    out = layer(z)
    zn = z.numpy() / np.linalg.norm(z.numpy(), axis=1, keepdims=True)
    raw = layer.codebook.detach().numpy()
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_array_equal(out.codes.numpy(), (zn @ unit.T).argmax(1))
    np.testing.assert_allclose(out.quantized.detach().numpy(), unit[out.codes.numpy()],
                               atol=1e-15)
    assert torch.equal(out.quantized, layer.decode_codes(out.codes))


def test_rotation_trick_output_and_gradient_closed_form(z):
    layer = _spread_codebook(VectorQuantize(5, 8, rotation_trick=True).double()).train()
    zz = z.clone().requires_grad_()
    out = layer(zz)
    g = torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (out.quantized * g).sum().backward()
    zq = layer.codebook.detach().numpy()[out.codes.numpy()]
    np.testing.assert_allclose(out.quantized.detach().numpy(), zq, atol=1e-12)
    for i in range(0, z.shape[0], 37):
        e, c = z.numpy()[i], zq[i]
        u, q = e / np.linalg.norm(e), c / np.linalg.norm(c)
        w = (u + q) / np.linalg.norm(u + q)
        rot = np.eye(5) - 2 * np.outer(w, w) + 2 * np.outer(q, u)
        np.testing.assert_allclose(rot @ rot.T, np.eye(5), atol=1e-12)  # a rotation
        np.testing.assert_allclose(rot @ u, q, atol=1e-12)  # taking u onto q
        scale = np.linalg.norm(c) / np.linalg.norm(e)
        np.testing.assert_allclose(zz.grad.numpy()[i], scale * rot.T @ g.numpy()[i],
                                   atol=1e-12)


def test_kmeans_init_is_lloyd_from_the_drawn_start():
    """Against scikit-learn's Lloyd iterations from the same K batch vectors."""
    x = torch.randn(400, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    layer = VectorQuantize(3, 8, kmeans_init=True, kmeans_iters=4).double()
    with pytest.raises(RuntimeError, match="kmeans_init=True.*not been initialised"):
        layer.eval()(x)
    torch.manual_seed(3)
    start = x[torch.randperm(400)[:8]].numpy()
    torch.manual_seed(3)
    layer.train()(x)
    km = KMeans(8, init=start, n_init=1, max_iter=4, tol=0.0, algorithm="lloyd").fit(x.numpy())
    np.testing.assert_allclose(layer.codebook.detach().numpy(), km.cluster_centers_,
                               rtol=1e-10, atol=1e-12)
    assert bool(layer.initialized) and float(layer.cluster_size.sum()) == 400
    # an initialised state dict initialises a new layer
    other = VectorQuantize(3, 8, kmeans_init=True).double()
    other.load_state_dict(layer.state_dict())
    assert torch.equal(other.eval()(x).codes, layer.eval()(x).codes)


def test_kmeans_init_with_fewer_vectors_than_codewords():
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(7))
    layer = VectorQuantize(3, 8, kmeans_init=True).train()
    layer(x)
    dist = torch.cdist(layer.codebook.detach(), x).min(1).values
    assert float(dist.max()) < 1e-2  # every codeword next to a batch vector


def test_mask_leaves_padded_vectors_out():
    """A masked batch does what the batch of its unmasked vectors does (same seed): same
    codes, outputs, loss, codebook updates; masked outputs 0, codes -1, gradient 0."""
    x = torch.randn(3, 40, 4, generator=torch.Generator().manual_seed(8))
    mask = torch.rand(3, 40, generator=torch.Generator().manual_seed(9)) > 0.3
    for params in [dict(ema_update=True, threshold_ema_dead_code=2.0),
                   dict(threshold_ema_dead_code=2.0, use_cosine_sim=True)]:
        full, part = _masked_and_kept(lambda: VectorQuantize(4, 16, **params), x, mask)
        assert torch.equal(full.codebook, part.codebook)
        assert torch.equal(full.cluster_size, part.cluster_size)


def _masked_and_kept(make, x, mask):
    """Two copies of one layer: one fed ``x`` with ``mask``, one the kept vectors alone (same
    seeds). Asserts the kept positions agree (codes, output, weights, loss, statistics) and
    the padded ones are 0 / -1 without gradient; returns both layers for state checks."""
    torch.manual_seed(0)
    full, part = make().train(), make().train()
    part.load_state_dict(full.state_dict())
    xa = x.clone().requires_grad_()
    torch.manual_seed(1)
    out = full(xa, mask=mask)
    torch.manual_seed(1)
    ref = part(x[mask])
    assert torch.equal(out.codes[mask], ref.codes)
    assert torch.all(out.codes[~mask] == -1)
    assert torch.allclose(out.quantized[mask], ref.quantized, atol=1e-6)
    assert torch.all(out.quantized[~mask] == 0)
    assert torch.allclose(out.loss, ref.loss, atol=1e-6)
    for name in ("quantization_error", "perplexity", "usage"):
        assert torch.allclose(getattr(out, name), getattr(ref, name), atol=1e-6)
    if ref.weights is not None:
        assert torch.allclose(out.weights[mask], ref.weights, atol=1e-6)
        assert torch.all(out.weights[~mask] == 0)
    (out.quantized.sum() + out.loss).backward()
    assert torch.all(xa.grad[~mask] == 0)
    return full, part


def test_mask_on_feature_maps_and_affine_vq():
    z = torch.randn(2, 4, 3, 5)
    mask = torch.ones(2, 3, 5, dtype=torch.bool)
    mask[1, 2] = False
    for layer in [VectorQuantize(4, 8, image_fmap=True), AffineVQ(4, 8, image_fmap=True),
                  ResidualVQ(4, 8, image_fmap=True)]:
        out = layer.train()(z, mask=mask)
        assert torch.all(out.quantized.permute(0, 2, 3, 1)[~mask] == 0)
        assert torch.all(out.codes[~mask] == -1) and torch.all(out.codes[mask] >= 0)


@pytest.mark.parametrize("name", BOTTLENECKS)
def test_every_bottleneck_takes_a_mask(name):
    """The mask is part of the Bottleneck interface: for every bottleneck of the catalogue a
    masked batch gives, at the kept positions, what the batch of the kept vectors gives alone
    (codes, output, soft weights, loss); padded positions: output 0, code -1, weights 0, no
    gradient."""
    x = torch.randn(2, 30, 4, generator=torch.Generator().manual_seed(3))
    mask = torch.rand(2, 30, generator=torch.Generator().manual_seed(4)) > 0.4
    _masked_and_kept(lambda: make_bottleneck(name, 4, 8), x, mask)


@pytest.mark.parametrize("mask, error, match", [
    (torch.ones(3, 7), TypeError, "bool tensor"),
    ([[True] * 7] * 3, TypeError, "bool tensor"),
    (torch.ones(3, 6, dtype=torch.bool), ValueError, r"shape of the vectors' layout \(3, 7\)"),
    (torch.zeros(3, 7, dtype=torch.bool), ValueError, "no vector"),
])
def test_bad_masks(mask, error, match):
    with pytest.raises(error, match=match):
        VectorQuantize(4, 8)(torch.randn(3, 7, 4), mask=mask)


@pytest.mark.parametrize("params", [
    {"eps": 0.0}, {"eps": "1e-5"}, {"ema_update": 1}, {"kmeans_init": "yes"},
    {"kmeans_iters": 0}, {"kmeans_iters": 2.0}, {"use_cosine_sim": None},
    {"rotation_trick": 0},
], ids=str)
def test_new_vq_options_are_validated(params):
    (name,) = params
    with pytest.raises((TypeError, ValueError), match=f"^{name} must be"):
        VectorQuantize(4, 8, **params)
    if name not in ("use_cosine_sim", "rotation_trick"):
        with pytest.raises((TypeError, ValueError), match=f"^{name} must be"):
            ResidualVQ(4, 8, **params)


# -- the kernels --------------------------------------------------------------------------------
def test_codeword_scores_keep_the_ranking_at_large_inputs():
    """2 z.c - |c|^2 is -||z - c||^2 + |z|^2; at |z| = 1e5 in float32 the distances round
    to multiples of 1024 and lose the nearest codeword, the scores do not."""
    from skvq.neural.layers._kernels import codeword_scores, nearest_codeword, squared_distances

    gen = torch.Generator().manual_seed(11)
    codebook = torch.randn(16, 4, generator=gen, dtype=torch.float64)
    z = torch.randn(300, 4, generator=gen, dtype=torch.float64)
    np.testing.assert_allclose(codeword_scores(z, codebook).numpy(),
                               (z.pow(2).sum(1, keepdim=True)
                                - squared_distances(z, codebook)).numpy(), atol=1e-10)
    big = (z * 1e5).float()
    codebook32 = (codebook * 1e-3 + 1.0).float()  # codewords 1e-3 apart
    expected = _brute_force_nearest(big.double().numpy(), codebook32.double().numpy())
    assert np.any(-squared_distances(big, codebook32).argmax(1).numpy() != expected)
    np.testing.assert_array_equal(codeword_scores(big, codebook32).argmax(1).numpy(), expected)
    np.testing.assert_array_equal(nearest_codeword(big, codebook32).numpy(), expected)
    layer = GumbelVQ(4, 16).eval()
    with torch.no_grad():
        layer.codebook.copy_(codebook32)
    out = layer(big)
    np.testing.assert_array_equal(out.codes.numpy(), expected)
    np.testing.assert_array_equal(out.weights.argmax(1).numpy(), expected)


def test_nearest_codeword_unit_norm_is_the_largest_inner_product():
    from skvq.neural.layers._kernels import nearest_codeword

    gen = torch.Generator().manual_seed(12)
    z = F.normalize(torch.randn(500, 6, generator=gen, dtype=torch.float64), dim=1)
    c = F.normalize(torch.randn(40, 6, generator=gen, dtype=torch.float64), dim=1)
    np.testing.assert_array_equal(nearest_codeword(z, c, unit_norm=True).numpy(),
                                  _brute_force_nearest(z.numpy(), c.numpy()))


# -- the same layer on another device (CUDA when present) ---------------------------------
_DEVICE_LAYERS = {
    "vq": lambda: VectorQuantize(8, 32),
    "vq_ema_replace": lambda: VectorQuantize(8, 32, ema_update=True,
                                             threshold_ema_dead_code=1.0),
    "vq_cosine": lambda: VectorQuantize(8, 32, use_cosine_sim=True),
    "affine": lambda: AffineVQ(8, 32),
    "gumbel": lambda: GumbelVQ(8, 32),
    "rvq": lambda: ResidualVQ(8, 32, num_quantizers=3),
    "fsq": lambda: FSQ(8, levels=[8, 5, 5]),
}


def _same_on_device(name, device):
    """Outputs, codes and input gradients of a layer copied to ``device`` equal the CPU's."""
    torch.manual_seed(0)
    cpu_layer = _DEVICE_LAYERS[name]().eval()
    other = _DEVICE_LAYERS[name]().eval()
    other.load_state_dict(cpu_layer.state_dict())
    other = other.to(device)
    z = torch.randn(256, 8)
    z_cpu = z.clone().requires_grad_(True)
    z_dev = z.to(device).requires_grad_(True)
    out_cpu = cpu_layer(z_cpu)
    out_dev = other(z_dev)
    np.testing.assert_array_equal(out_dev.codes.cpu().numpy(), out_cpu.codes.numpy())
    np.testing.assert_allclose(out_dev.quantized.detach().cpu().numpy(),
                               out_cpu.quantized.detach().numpy(), rtol=1e-5, atol=1e-5)
    (out_cpu.quantized.sum() + out_cpu.loss).backward()
    (out_dev.quantized.sum() + out_dev.loss).backward()
    if z_cpu.grad is None:  # eval output without a path to z (FSQ decodes its codes)
        assert z_dev.grad is None
        return
    np.testing.assert_allclose(z_dev.grad.cpu().numpy(), z_cpu.grad.numpy(), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("name", sorted(_DEVICE_LAYERS))
def test_layer_copied_to_another_device_gives_the_same_result_cpu(name):
    """The comparison of the CUDA test, run CPU to CPU (so its logic is tested everywhere)."""
    _same_on_device(name, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(_DEVICE_LAYERS))
def test_layer_on_cuda_matches_cpu(name):
    _same_on_device(name, "cuda")


def test_state_dict_without_initialized_buffer_loads_strictly():
    """A state dict saved before the ``initialized`` buffer existed loads with strict=True,
    as an initialised layer (its codebook was always in use), in VQ, affine and residual VQ."""
    for make in [lambda: VectorQuantize(4, 8), lambda: AffineVQ(4, 8),
                 lambda: ResidualVQ(4, 8, num_quantizers=2)]:
        old = make()
        state = {k: v for k, v in old.state_dict().items() if not k.endswith("initialized")}
        new = make()
        new.load_state_dict(state, strict=True)
        for name, buf in new.named_buffers():
            if name.endswith("initialized"):
                assert bool(buf)
        z = torch.randn(5, 4)
        assert torch.equal(new.eval()(z).codes, old.eval()(z).codes)
