"""Finite scalar quantization: against vector-quantize-pytorch's FSQ, brute force and the
FSQ paper's recommended levels."""

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skvq.neural.layers import FSQ, fsq_levels, make_bottleneck  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pair(levels, dim, preserve_symmetry=False, image=False):
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    peer = vqp.FSQ(levels=list(levels), dim=dim, preserve_symmetry=preserve_symmetry)
    ours = FSQ(dim, levels=levels, preserve_symmetry=preserve_symmetry, image_fmap=image)
    if ours.has_projections:
        ours.load_state_dict({k: v for k, v in peer.state_dict().items()
                              if k.startswith("project")})
    return peer, ours


CASES = [((8, 5, 5, 5), 16, False), ((8, 6, 5), 3, False), ((7, 5, 5, 5, 5), 32, False),
         ((3, 4), 2, False), ((2, 3, 4, 5), 10, True), ((4, 4), 2, True)]


@pytest.mark.parametrize("levels, dim, symmetric", CASES)
def test_matches_vector_quantize_pytorch(levels, dim, symmetric):
    """Same projections copied in: training outputs and input gradients bit for bit, the same
    indices; in evaluation the decoded code, equal to vqp's output to float rounding."""
    peer, ours = _pair(levels, dim, symmetric)
    x = torch.randn(4, 200, dim, generator=torch.Generator().manual_seed(1)) * 3
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    quantized, indices = peer(xa)
    out = ours.train()(xb)
    assert torch.equal(out.codes, indices.long())
    assert torch.equal(out.quantized, quantized)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    (quantized * g).sum().backward()
    (out.quantized * g).sum().backward()
    assert torch.equal(xb.grad, xa.grad)
    assert float(out.loss) == 0.0
    ev = ours.eval()(x)
    assert torch.equal(ev.codes, out.codes)
    assert torch.allclose(ev.quantized, quantized, atol=1e-6)
    assert torch.equal(ev.quantized, ours.decode_codes(ev.codes))
    assert torch.allclose(ours.decode_codes(ev.codes), peer.indices_to_codes(indices), atol=1e-6)
    assert torch.allclose(ours.implicit_codebook, peer.implicit_codebook)
    assert ours.codebook_size == peer.codebook_size == math.prod(levels)


def test_feature_maps_match_vector_quantize_pytorch():
    peer, ours = _pair((8, 5, 5, 5), 6, image=True)
    x = torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(3))
    quantized, indices = peer(x)
    out = ours.train()(x)
    assert out.codes.shape == (2, 5, 7)
    assert torch.equal(out.codes, indices.long())
    assert torch.equal(out.quantized, quantized)


def _bound(h, levels):
    """The paper's bound (Appendix A.1) in float64 numpy."""
    levels = np.asarray(levels, np.float64)
    half_l = (levels - 1) * (1 + 1e-3) / 2
    offset = np.where(levels % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half_l)
    return np.tanh(h + shift) * half_l - offset


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (3, 4, 7), (6,)])
def test_codes_are_the_nearest_grid_point_by_brute_force(levels):
    """No projections (dim = len(levels)): the code is the nearest of all prod(levels) grid
    points to the bounded vector, searched over the whole implicit codebook."""
    n = len(levels)
    layer = FSQ(n, levels=levels).double().eval()
    assert not layer.has_projections and layer.codebook_dim == n
    h = torch.randn(500, n, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2
    out = layer(h)
    half_width = np.floor(np.asarray(levels) / 2)
    target = _bound(h.numpy(), levels) / half_width
    grid = layer.implicit_codebook.numpy()
    dist = ((target[:, None, :] - grid[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(out.codes.numpy(), dist.argmin(1))
    np.testing.assert_array_equal(out.quantized.numpy(), grid[out.codes.numpy()])
    # the grid: every combination of per-dimension levels once, first dimension fastest
    per_dim = [(np.arange(L) - np.floor(L / 2)) / np.floor(L / 2) for L in levels]
    expected = np.array([p[::-1] for p in itertools.product(*per_dim[::-1])])
    np.testing.assert_allclose(grid, expected)


def test_codes_and_indices_round_trip():
    layer = FSQ(10, levels=(8, 6, 5, 3))
    grid = layer.implicit_codebook
    assert grid.shape == (720, 4)
    assert torch.equal(layer.codes_to_indices(grid), torch.arange(720))
    level_index = layer.indices_to_level_indices(torch.arange(720))
    np.testing.assert_array_equal(
        level_index.numpy(), np.stack(np.unravel_index(np.arange(720), (3, 5, 6, 8))[::-1], 1))
    with pytest.raises(ValueError, match="codebook_dim=4"):
        layer.codes_to_indices(torch.zeros(3, 5))


def test_straight_through_gradient_closed_form():
    levels = (8, 5)
    layer = FSQ(2, levels=levels).double().train()
    h = torch.randn(300, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    hh = h.clone().requires_grad_()
    out = layer(hh)
    g = torch.randn(h.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    (out.quantized * g).sum().backward()
    lv = np.asarray(levels, np.float64)
    half_l = (lv - 1) * (1 + 1e-3) / 2
    shift = np.arctanh(np.where(lv % 2 == 0, 0.5, 0.0) / half_l)
    derivative = (1 - np.tanh(h.numpy() + shift) ** 2) * half_l / np.floor(lv / 2)
    np.testing.assert_allclose(hh.grad.numpy(), g.numpy() * derivative, rtol=1e-12)
    # forward: the grid point (up to the rounding of the straight-through sum)
    np.testing.assert_allclose(out.quantized.detach().numpy(),
                               layer.implicit_codebook.numpy()[out.codes.numpy()], atol=1e-15)


def test_eval_output_is_exactly_the_decoded_code_with_projections():
    torch.manual_seed(0)
    layer = FSQ(16, levels=(8, 5, 5, 5)).eval()
    z = torch.randn(4, 50, 16)
    out = layer(z)
    assert torch.equal(out.quantized, layer.decode_codes(out.codes))
    train = layer.train()(z)
    assert torch.equal(train.codes, out.codes)
    assert torch.allclose(train.quantized, out.quantized, atol=1e-6)
    # the projections learn from the reconstruction loss
    (train.quantized.sum()).backward()
    assert layer.project_in.weight.grad.abs().sum() > 0
    assert layer.project_out.weight.grad.abs().sum() > 0
    # soft-weight interface: one-hot weights decode to the same vectors
    w = layer.flat_weights(out)
    assert w.shape == (200, 1000)
    assert torch.allclose(layer.decode_weights(w.float().reshape(4, 50, 1000)), out.quantized,
                          atol=1e-6)


def test_statistics_count_the_implicit_codebook():
    layer = FSQ(3, levels=(3, 3, 3)).double().eval()
    z = torch.randn(400, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out = layer(z)
    counts = np.bincount(out.codes.numpy(), minlength=27)
    p = counts[counts > 0] / counts.sum()
    assert float(out.perplexity) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert float(out.usage) == pytest.approx((counts > 0).mean())


# -- the levels rule ----------------------------------------------------------------------------
def test_levels_rule_gives_the_papers_recommended_levels():
    """Mentzer et al. (2023): the levels recommended for about 2^8 to 2^16 codes."""
    paper = {240: (8, 6, 5), 1000: (8, 5, 5, 5), 4375: (7, 5, 5, 5, 5),
             15360: (8, 8, 8, 6, 5), 64000: (8, 8, 8, 5, 5, 5)}
    for size, levels in paper.items():
        assert fsq_levels(size) == levels


def _factorisations(k, low=3, high=8):
    """Every multiset of levels in [low, high] with product k (brute force)."""
    if k == 1:
        yield ()
        return
    for f in range(low, high + 1):
        if k % f == 0:
            for rest in _factorisations(k // f, f, high):
                yield (f, *rest)


def test_levels_rule_against_brute_force():
    for k in range(2, 2000):
        options = [tuple(sorted(f, reverse=True)) for f in _factorisations(k)]
        if not options:
            with pytest.raises(ValueError, match=f"codebook_size={k}.*pass levels"):
                fsq_levels(k)
            continue
        expected = min(options, key=lambda f: (len(f), f))
        assert fsq_levels(k) == expected
        assert math.prod(fsq_levels(k)) == k


def test_catalogue_row_and_codebook_size_rule():
    layer = make_bottleneck("fsq", 8, 64, commitment_weight=0.3)
    assert isinstance(layer, FSQ) and layer.levels == (8, 8) and layer.n_codes == 64
    layer = make_bottleneck("fsq", 8, 1000, levels=[5, 5, 5, 8])
    assert layer.levels == (5, 5, 5, 8)
    assert FSQ(4, levels=(8, 6, 5)).codebook_size == 240


@pytest.mark.parametrize("params, error, match", [
    ({}, TypeError, "needs codebook_size or levels"),
    ({"codebook_size": 22}, ValueError, "22 is not a product of levels between 3 and 8"),
    ({"codebook_size": 2}, ValueError, "pass levels"),
    ({"codebook_size": 64, "levels": [8, 5]}, ValueError,
     r"levels=\[8, 5\] give 40 codes, but codebook_size=64"),
    ({"levels": [8, 2]}, ValueError, "preserve_symmetry=True"),
    ({"levels": [8, 1], "preserve_symmetry": True}, ValueError, r"levels must be >= 2"),
    ({"levels": []}, TypeError, "non-empty"),
    ({"levels": 8}, TypeError, "list or tuple"),
    ({"levels": "85"}, TypeError, "list or tuple"),
    ({"levels": [8, 5.0]}, TypeError, "levels must hold ints"),
    ({"levels": [[8, 5]]}, TypeError, "1-d"),
    ({"levels": [8, True]}, TypeError, "levels must hold ints"),
    ({"levels": [8], "preserve_symmetry": 1}, TypeError, "^preserve_symmetry must be"),
    ({"levels": [8], "projection_has_bias": "no"}, TypeError, "^projection_has_bias must be"),
    ({"codebook_size": "64"}, TypeError, "^codebook_size must be"),
    ({"codebook_size": 64, "dim": 0}, ValueError, "^dim must be"),
], ids=str)
def test_bad_parameters(params, error, match):
    params = {"dim": 4, **params}
    with pytest.raises(error, match=match):
        FSQ(**params)


def test_numpy_levels_and_large_level_counts():
    layer = FSQ(3, levels=np.array([8, 5, 3]))
    assert layer.levels == (8, 5, 3) and all(type(v) is int for v in layer.levels)
    # a level count whose stretched bound passes its last level is clipped to it
    layer = FSQ(1, levels=(2001,)).double().eval()
    out = layer(torch.tensor([[-50.0], [50.0], [0.0]], dtype=torch.float64))
    assert out.codes.tolist() == [0, 2000, 1000]


def test_vq_autoencoder_with_fsq():
    from sklearn.datasets import load_digits

    from skvq.neural import VQAutoencoder

    X = load_digits().data[:200]
    est = VQAutoencoder("fsq", codebook_size=240, latent_dim=4, n_latents=2, hidden_size=16,
                        max_epochs=2, batch_size=32, random_state=0).fit(X)
    bottleneck = est.net_.module_.bottleneck
    assert bottleneck.levels == (8, 6, 5) and est.n_codes_ == 240
    codes = est.transform(X)
    assert codes.shape == (200, 2) and codes.dtype == np.uint8 and codes.max() < 240
    with torch.no_grad():
        z = est.net_.module_.encoder(torch.as_tensor(est._scale(X), dtype=torch.float32))
        np.testing.assert_array_equal(codes, bottleneck(z).codes.numpy())
    assert est.inverse_transform(codes).shape == X.shape
    est = VQAutoencoder("fsq", codebook_size=1000, latent_dim=4, n_latents=2, hidden_size=16,
                        max_epochs=1, random_state=0,
                        bottleneck_params={"levels": [8, 5, 5, 5]}).fit(X)
    assert est.net_.module_.bottleneck.levels == (8, 5, 5, 5)
    with pytest.raises(ValueError, match="give 1000 codes, but codebook_size=64"):
        VQAutoencoder("fsq", codebook_size=64, max_epochs=1,
                      bottleneck_params={"levels": [8, 5, 5, 5]}).fit(X)


def test_layer_without_projections_has_a_dtype():
    layer = FSQ(3, levels=(3, 3, 3))
    assert not list(layer.parameters())
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.zeros(2, 3, dtype=torch.float64))
    out = layer.double().eval()(torch.zeros(2, 3, dtype=torch.float64))
    assert out.quantized.dtype == torch.float64
    assert layer.decode_codes(out.codes).dtype == torch.float64
    assert layer.state_dict() == {}  # nothing to save: the grid is fixed
