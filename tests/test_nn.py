"""skvq.nn: quantized torch layers against independent references.

References: the estimator's own ``inverse_transform`` on the documented layout; separate fits
of ``L0LeastSquareQuantizer`` on each channel (brute-force loop); a numpy decode of the
packed buffers with :mod:`skvq.packing`; float models whose weights were replaced by hand;
the closed form of a one-value weighted codebook; hand-written gradients.
"""

import copy
import io
import math
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from skvq import (  # noqa: E402
    PQ,
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)
from skvq.nn import (  # noqa: E402
    QuantizationReport,
    QuantizedConv1d,
    QuantizedConv2d,
    QuantizedConv3d,
    QuantizedEmbedding,
    QuantizedLinear,
    fisher_importance,
    load_quantized_state_dict,
    quantize_model,
    unpack_codes_torch,
)
from skvq.packing import pack_codes, unpack_codes  # noqa: E402

GROUP_SIZE = {"tensor": None, "channel": 1, "group": 3}


def l0(n_values=4):
    return L0LeastSquareQuantizer(n_values=n_values, weighting="count")


def seeded(build, seed=0):
    torch.manual_seed(seed)
    return build()


def reference_weight(layer):
    """Decode a quantized layer's buffers with numpy and skvq.packing (no torch decoding)."""
    packed = layer.packed_weight.cpu().numpy()
    codebook = layer.codebook.to(torch.float64).cpu().numpy()
    n_values = codebook.shape[1]
    n_bits = max(1, math.ceil(math.log2(n_values)))
    shape = tuple(layer.weight_shape)
    n_columns = int(np.prod(shape[1:]))
    codes = unpack_codes(packed, n_bits, n_columns).astype(np.intp)
    group_size = layer.group_size
    if isinstance(layer, QuantizedEmbedding):
        group = np.arange(n_columns) // (group_size or n_columns)
        weight = codebook[group[None, :], codes]
    else:
        group = np.arange(shape[0]) // (group_size or shape[0])
        weight = codebook[group[:, None], codes]
    return weight.reshape(shape)


def with_weights(model, qmodel, names):
    """A copy of the float ``model`` whose chosen weights are replaced by hand with the
    numpy-decoded weights of ``qmodel``."""
    ref = copy.deepcopy(model)
    for name in names:
        module = ref.get_submodule(name)
        decoded = reference_weight(qmodel.get_submodule(name))
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(decoded).to(module.weight.dtype))
    return ref


def conv_net():
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 5))


def embedding_net():
    return nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 3))


# ---------------------------------------------------------------------------------------------
# unpack_codes_torch
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_bits", range(1, 17))
def test_unpack_codes_torch_matches_numpy(n_bits):
    rng = np.random.default_rng(n_bits)
    codes = rng.integers(0, 2**n_bits, size=(7, 37))
    codes[0, :] = 2**n_bits - 1  # every bit set
    packed = pack_codes(codes, n_bits)
    out = unpack_codes_torch(torch.from_numpy(packed), n_bits, 37)
    assert out.dtype == torch.int64
    np.testing.assert_array_equal(out.numpy(), unpack_codes(packed, n_bits, 37))
    np.testing.assert_array_equal(out.numpy(), codes)


def test_unpack_codes_torch_edge_cases_and_errors():
    empty = unpack_codes_torch(torch.zeros((3, 0), dtype=torch.uint8), 5, 0)
    assert empty.shape == (3, 0)
    packed = torch.from_numpy(pack_codes(np.array([[1, 0, 1]]), 1))
    np.testing.assert_array_equal(unpack_codes_torch(packed.numpy(), 1, 3), [[1, 0, 1]])
    with pytest.raises(TypeError, match="uint8"):
        unpack_codes_torch(packed.to(torch.int32), 1, 3)
    with pytest.raises(ValueError, match="shape"):
        unpack_codes_torch(packed, 1, 9)
    for n_bits in (0, 17, 2.0, True):
        with pytest.raises(ValueError, match="n_bits"):
            unpack_codes_torch(packed, n_bits, 3)


# ---------------------------------------------------------------------------------------------
# Decoding against the estimator and separate fits
# ---------------------------------------------------------------------------------------------
def layout(module, W):
    """The documented fitting layout: (fan_in, out) for Linear/Conv, as is for Embedding."""
    return W if isinstance(module, nn.Embedding) else W.reshape(W.shape[0], -1).T


def from_layout(module, X, shape):
    return X if isinstance(module, nn.Embedding) else X.T.reshape(shape)


LAYERS = {
    "linear": lambda: nn.Linear(12, 7),
    "conv1d": lambda: nn.Conv1d(4, 5, 3),
    "conv2d": lambda: nn.Conv2d(3, 7, (2, 3), groups=1),
    "conv3d": lambda: nn.Conv3d(2, 4, 2),
    "embedding": lambda: nn.Embedding(9, 7),
}
QUANTIZED = {"linear": QuantizedLinear, "conv1d": QuantizedConv1d, "conv2d": QuantizedConv2d,
             "conv3d": QuantizedConv3d, "embedding": QuantizedEmbedding}


@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_decoded_weight_equals_inverse_transform(kind, granularity):
    module = seeded(LAYERS[kind])
    qlayer, report = quantize_model(module, l0(4), granularity=granularity,
                                    group_size=GROUP_SIZE[granularity] if granularity == "group"
                                    else None, module_types=(type(module),))
    assert type(qlayer) is QUANTIZED[kind]
    W = module.weight.detach().numpy()
    X = layout(module, W)
    est = l0(4).set_params(group_size=GROUP_SIZE[granularity]).fit(X)
    expected = from_layout(module, est.inverse_transform(est.transform(X)), W.shape)
    np.testing.assert_array_equal(qlayer.weight.detach().numpy(), expected)
    np.testing.assert_array_equal(reference_weight(qlayer), expected)
    assert report[0].n_groups == est.n_groups_ and report[0].n_values == est.n_values_
    assert report[0].weight_mse == pytest.approx(np.mean((expected - W) ** 2.0), rel=1e-6)


@pytest.mark.parametrize("granularity", ["channel", "group"])
def test_per_channel_equals_separate_fits(granularity):
    linear = seeded(lambda: nn.Linear(24, 7))
    group_size = GROUP_SIZE[granularity]
    qlinear, _ = quantize_model(linear, l0(4), granularity=granularity,
                                group_size=group_size if granularity == "group" else None)
    W = linear.weight.detach().numpy()
    expected = np.empty_like(W)
    for start in range(0, W.shape[0], group_size):  # one fit per group of output channels
        block = W[start:start + group_size]
        est = l0(4).fit(block.reshape(-1, 1))
        expected[start:start + group_size] = est.inverse_transform(
            est.transform(block.reshape(-1, 1))).reshape(block.shape)
    np.testing.assert_allclose(qlinear.weight.detach().numpy(), expected, rtol=1e-6)


def test_embedding_channels_are_dimensions():
    emb = seeded(lambda: nn.Embedding(30, 4))
    qemb, _ = quantize_model(emb, l0(3), module_types=(nn.Embedding,))
    W = emb.weight.detach().numpy()
    for d in range(4):  # one codebook per embedding dimension
        est = l0(3).fit(W[:, [d]])
        np.testing.assert_allclose(qemb.weight.detach().numpy()[:, d],
                                   est.inverse_transform(est.transform(W[:, [d]]))[:, 0],
                                   rtol=1e-6)


@pytest.mark.parametrize("quantizer", [
    L0LeastSquareQuantizer(n_values=4, weighting="count"),
    L1LeastSquareQuantizer(n_values=4, weighting="count"),
    KMeansLSQuantizer(n_values=4, weighting="count", random_state=0),
    KMeansQuantizer(n_values=4, weighting="count", n_init=2, random_state=0),
    GaussianMixtureQuantizer(n_values=4, weighting="count", random_state=0),
], ids=lambda q: type(q).__name__)
def test_every_scalar_quantizer(quantizer):
    linear = seeded(lambda: nn.Linear(16, 3))
    qlinear, report = quantize_model(linear, quantizer, granularity="tensor")
    est = clone_fit(quantizer, linear.weight.detach().numpy().T)
    np.testing.assert_allclose(np.unique(qlinear.weight.detach().numpy()),
                               np.unique(est.codebook_), rtol=1e-6)
    assert report[0].n_values <= 4


def clone_fit(quantizer, X):
    from sklearn.base import clone

    return clone(quantizer).fit(X)


# ---------------------------------------------------------------------------------------------
# Models, packing, dtypes, devices
# ---------------------------------------------------------------------------------------------
def test_model_outputs_equal_reference_model():
    model = seeded(conv_net)
    qmodel, report = quantize_model(model, l0(8), module_types=(nn.Linear, nn.Conv2d))
    assert report.names == ["0", "2", "4"]
    assert isinstance(qmodel[0], QuantizedConv2d) and isinstance(qmodel[4], QuantizedLinear)
    ref = with_weights(model, qmodel, report.names)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(qmodel(x), ref(x), rtol=1e-6, atol=1e-6)
    # the float model is left untouched (inplace=False)
    assert isinstance(model[0], nn.Conv2d)


def test_embedding_model_outputs_and_lookup_of_rows():
    model = seeded(embedding_net)
    qmodel, _ = quantize_model(model, l0(4), granularity="group", group_size=4,
                               module_types=(nn.Embedding, nn.Linear))
    ref = with_weights(model, qmodel, ["0", "1"])
    idx = torch.tensor([[0, 19, 3], [3, 3, 7]])
    torch.testing.assert_close(qmodel(idx), ref(idx), rtol=1e-6, atol=1e-6)
    with pytest.raises(IndexError):
        qmodel[0](torch.tensor([20]))


@pytest.mark.parametrize("padding_mode,padding,groups", [
    ("zeros", "same", 1), ("reflect", 1, 2), ("circular", (1, 2), 1), ("replicate", "same", 2)])
def test_conv_hyper_parameters(padding_mode, padding, groups):
    conv = seeded(lambda: nn.Conv2d(4, 6, (3, 2), stride=1, padding=padding, dilation=(1, 2),
                                    groups=groups, padding_mode=padding_mode))
    qconv, _ = quantize_model(conv, l0(4), module_types=(nn.Conv2d,))
    ref = with_weights(nn.Sequential(conv), nn.Sequential(qconv), ["0"])[0]
    x = torch.randn(2, 4, 7, 8)
    torch.testing.assert_close(qconv(x), ref(x), rtol=1e-5, atol=1e-6)
    assert qconv.padding_mode == padding_mode and qconv.groups == groups


def test_embedding_hyper_parameters():
    emb = seeded(lambda: nn.Embedding(12, 5, padding_idx=0, max_norm=1.0))
    qemb, _ = quantize_model(emb, l0(8), module_types=(nn.Embedding,))
    assert qemb.padding_idx == 0 and qemb.max_norm == 1.0
    ref = nn.Embedding(12, 5, padding_idx=0, max_norm=1.0)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(reference_weight(qemb)))
    idx = torch.tensor([0, 4, 11, 4])
    for cache in (False, True):
        qemb.cache = cache
        torch.testing.assert_close(qemb(idx), ref(idx))
    assert "padding_idx=0" in repr(qemb)


@pytest.mark.parametrize("n_values", [2, 3, 5, 16, 17, 200, 256, 257, 5000, 65536])
def test_packed_bytes(n_values):
    rng = np.random.default_rng(n_values)
    linear = nn.Linear(13, 3)
    codes = rng.integers(0, n_values, size=(3, 13))
    codebook = np.sort(rng.normal(size=(1, n_values)), axis=1)
    layer = QuantizedLinear.from_codes(linear, codes, torch.tensor(codebook))
    n_bits = max(1, math.ceil(math.log2(n_values)))
    assert layer.n_bits == n_bits
    assert layer.packed_weight.dtype == torch.uint8
    assert layer.packed_weight.shape == (3, math.ceil(13 * n_bits / 8))
    np.testing.assert_array_equal(layer.packed_weight.numpy(), pack_codes(codes, n_bits))
    np.testing.assert_allclose(layer.weight.detach().numpy(),
                               codebook[0][codes].astype(np.float32))


def test_report_fields_and_totals():
    model = seeded(embedding_net)
    qmodel, report = quantize_model(model, l0(4), module_types=(nn.Embedding, nn.Linear))
    assert len(report) == 2 and isinstance(report, QuantizationReport)
    emb, lin = report["0"], report["1"]
    assert emb.module_type == "Embedding" and emb.shape == (20, 8) and emb.n_groups == 8
    assert lin.module_type == "Linear" and lin.n_groups == 3 and lin.granularity == "channel"
    # bytes: packed codes (ceil per row) + float32 codebooks + bias
    assert lin.bytes_before == (3 * 8 + 3) * 4
    assert lin.bytes_after == 3 * math.ceil(8 * 2 / 8) + 3 * 4 * 4 + 3 * 4
    assert lin.bits_per_weight == pytest.approx(8 * (3 * 2 + 3 * 4 * 4) / 24)
    assert emb.bytes_after == 20 * math.ceil(8 * 2 / 8) + 8 * 4 * 4
    W = model[1].weight.detach().double().numpy()
    err = np.mean((reference_weight(qmodel[1]) - W) ** 2)
    assert lin.weight_mse == pytest.approx(err, rel=1e-6)
    assert lin.relative_mse == pytest.approx(err / np.mean(W ** 2), rel=1e-6)
    s = report.summary()
    assert s["bytes_before"] == emb.bytes_before + lin.bytes_before
    assert s["compression_ratio"] == pytest.approx(s["bytes_before"] / s["bytes_after"])
    assert s["mse"] == pytest.approx((emb.weight_mse * 160 + lin.weight_mse * 24) / 184)
    assert "Total: 2 layers" in str(report)
    df = report.to_pandas()
    assert list(df["name"]) == ["0", "1"] and "bits_per_weight" in df
    assert len(report + report) == 4 and report[:1].names == ["0"]
    with pytest.raises(KeyError):
        report["nope"]


def test_codebook_dtype_float16():
    linear = seeded(lambda: nn.Linear(32, 4))
    q32, r32 = quantize_model(linear, l0(4))
    q16, r16 = quantize_model(linear, l0(4), codebook_dtype=torch.float16)
    assert q16.codebook.dtype == torch.float16 and q16.weight.dtype == torch.float32
    assert r32[0].bytes_after - r16[0].bytes_after == 4 * 4 * 2
    torch.testing.assert_close(q16.codebook, q32.codebook.half())
    assert r16[0].weight_mse == pytest.approx(
        np.mean((reference_weight(q16) - linear.weight.detach().double().numpy()) ** 2))


def test_dtype_follows_module_casts():
    model = seeded(conv_net)
    qmodel, _ = quantize_model(model, l0(8), module_types=(nn.Linear, nn.Conv2d), cache=True)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    out32 = qmodel(x.float())
    qmodel.double()
    assert qmodel[0].weight.dtype == torch.float64 and qmodel[0].codebook.dtype == torch.float64
    ref = with_weights(model, qmodel, ["0", "2", "4"]).double()
    torch.testing.assert_close(qmodel(x), ref(x))
    torch.testing.assert_close(qmodel(x).float(), out32, rtol=1e-5, atol=1e-6)
    qmodel.to(torch.bfloat16)
    assert qmodel(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_float64_model_is_fitted_in_float64():
    linear = seeded(lambda: nn.Linear(10, 3)).double()
    qlinear, _ = quantize_model(linear, l0(4), codebook_dtype=torch.float64)
    assert qlinear.weight.dtype == torch.float64 and qlinear.bias.dtype == torch.float64
    W = linear.weight.detach().numpy()
    est = l0(4).set_params(group_size=1).fit(W.T)
    expected = est.inverse_transform(est.transform(W.T)).T
    np.testing.assert_array_equal(qlinear.weight.detach().numpy(), expected)
    # the default float32 codebook decodes to float64 weights holding float32 values
    q32, _ = quantize_model(linear, l0(4))
    assert q32.codebook.dtype == torch.float32 and q32.weight.dtype == torch.float64
    np.testing.assert_array_equal(q32.weight.detach().numpy(),
                                  expected.astype(np.float32).astype(np.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    model = seeded(conv_net)
    qmodel, _ = quantize_model(model.cuda(), l0(8), module_types=(nn.Linear, nn.Conv2d))
    assert qmodel[0].packed_weight.is_cuda
    x = torch.randn(2, 3, 6, 6)
    expected = with_weights(model.cpu(), qmodel, ["0", "2", "4"])(x)
    torch.testing.assert_close(qmodel(x.cuda()).cpu(), expected, rtol=1e-5, atol=1e-5)
    qmodel.half()
    assert qmodel(x.cuda().half()).dtype == torch.float16
    packed = torch.from_numpy(pack_codes(np.arange(60).reshape(3, 20) % 7, 3)).cuda()
    np.testing.assert_array_equal(unpack_codes_torch(packed, 3, 20).cpu().numpy(),
                                  np.arange(60).reshape(3, 20) % 7)


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------
def test_cache_gives_the_same_output_and_is_invalidated():
    linear = seeded(lambda: nn.Linear(16, 4))
    plain, _ = quantize_model(linear, l0(4))
    cached, _ = quantize_model(linear, l0(4), cache=True)
    x = torch.randn(3, 16)
    torch.testing.assert_close(cached(x), plain(x), rtol=0, atol=0)
    first = cached._cache
    assert first is not None
    cached(x)
    assert cached._cache is first  # reused
    with torch.no_grad():
        cached.codebook.mul_(2)  # in-place edit: the cache notices
    torch.testing.assert_close(cached(x) - cached.bias, 2 * (plain(x) - plain.bias))
    cached.double()  # .to() drops the cache
    assert cached._cache is None
    assert cached(x.double()).dtype == torch.float64
    cached.float().load_state_dict(plain.state_dict())  # a load drops it too
    torch.testing.assert_close(cached(x), plain(x), rtol=0, atol=0)
    assert "cache=True" in repr(cached)


# ---------------------------------------------------------------------------------------------
# Saving and reloading
# ---------------------------------------------------------------------------------------------
def saved(obj, **load_kwargs):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, **load_kwargs)


def test_state_dict_round_trip():
    model = seeded(conv_net)
    qmodel, _ = quantize_model(model, l0(8), granularity="group", group_size=4,
                               module_types=(nn.Linear, nn.Conv2d),
                               codebook_dtype=torch.float16)
    state = saved(qmodel.state_dict(), weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["0.packed_weight"].dtype == torch.uint8
    x = torch.randn(2, 3, 6, 6)
    expected = qmodel(x)

    # into a model quantized with other settings: the checkpoint's shapes win
    other, _ = quantize_model(seeded(conv_net, 1), l0(2), granularity="tensor",
                              module_types=(nn.Linear, nn.Conv2d))
    other.load_state_dict(state)
    assert other[0].n_values == 8 and other[0].group_size == 4
    torch.testing.assert_close(other(x), expected, rtol=0, atol=0)

    # into a float model of the same architecture, without fitting
    fresh = load_quantized_state_dict(seeded(conv_net, 2), state)
    assert isinstance(fresh[2], QuantizedConv2d) and fresh[2].codebook.dtype == torch.float16
    torch.testing.assert_close(fresh(x), expected, rtol=0, atol=0)


def test_constructed_layer_takes_a_checkpoint():
    linear = seeded(lambda: nn.Linear(8, 5))
    q, _ = quantize_model(linear, l0(8), granularity="group", group_size=2)
    layer = QuantizedLinear(8, 5, n_values=2)  # an empty layer, like nn.Linear(8, 5)
    assert layer.packed_weight.shape == (5, 1) and layer.granularity == "tensor"
    layer.load_state_dict(q.state_dict())
    assert (layer.n_groups, layer.n_values, layer.n_bits, layer.group_size) == (3, 8, 3, 2)
    x = torch.randn(2, 8)
    torch.testing.assert_close(layer(x), q(x), rtol=0, atol=0)
    assert "group_size=2" in repr(layer)


def test_state_dict_with_inconsistent_shapes_is_refused():
    linear = seeded(lambda: nn.Linear(8, 4))
    q, _ = quantize_model(linear, l0(4))
    state = q.state_dict()
    state["codebook"] = state["codebook"][:2]
    with pytest.raises(RuntimeError, match="do not fit"):
        quantize_model(linear, l0(4))[0].load_state_dict(state)


def test_torch_save_whole_model():
    model = seeded(embedding_net)
    qmodel, _ = quantize_model(model, l0(4), module_types=(nn.Embedding, nn.Linear),
                               cache=True)
    idx = torch.tensor([1, 2, 3])
    expected = qmodel(idx)
    assert qmodel[1]._cache is not None
    loaded = saved(qmodel, weights_only=False)
    assert loaded[1]._cache is None  # the cache is not pickled
    torch.testing.assert_close(loaded(idx), expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.encoder(x))


@pytest.mark.parametrize("include,exclude,expected", [
    (None, None, ["encoder.0", "encoder.1", "head"]),
    ("head", None, ["head"]),
    (r"encoder\..*", None, ["encoder.0", "encoder.1"]),
    (re.compile(r"encoder\.\d"), "encoder.1", ["encoder.0"]),
    (None, lambda name: name.startswith("enc"), ["head"]),
    (["head", "encoder.1"], None, ["encoder.1", "head"]),
])
def test_include_exclude(include, exclude, expected):
    model = seeded(Net)
    qmodel, report = quantize_model(model, l0(2), include=include, exclude=exclude)
    assert report.names == expected
    for name, module in qmodel.named_modules():
        if name in ("encoder.0", "encoder.1", "head"):
            assert isinstance(module, QuantizedLinear) == (name in expected)


def test_no_match_raises():
    with pytest.raises(ValueError, match="No layer"):
        quantize_model(seeded(Net), l0(2), include="decoder")
    with pytest.raises(ValueError, match="No layer"):
        quantize_model(seeded(Net), l0(2), module_types=(nn.Embedding,))


def test_inplace_and_second_call_for_mixed_precision():
    model = seeded(Net)
    x = torch.randn(4, 6)
    q, r1 = quantize_model(model, l0(2), include="head", inplace=True)
    assert q is model and isinstance(model.head, QuantizedLinear)
    q, r2 = quantize_model(model, l0(4), inplace=True)  # the head is not chosen again
    assert r2.names == ["encoder.0", "encoder.1"] and model.head.n_values == 2
    assert (r1 + r2).names == ["head", "encoder.0", "encoder.1"]
    assert q(x).shape == (4, 2)


def test_shared_module_is_quantized_once():
    shared = nn.Linear(5, 5)
    model = seeded(lambda: nn.Sequential(shared, nn.ReLU(), shared))
    qmodel, report = quantize_model(model, l0(4))
    assert report.names == ["0"]
    assert qmodel[0] is qmodel[2] and isinstance(qmodel[2], QuantizedLinear)


def test_multihead_attention_out_proj_reads_the_decoded_weight():
    layer = seeded(lambda: nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0,
                                                      batch_first=True)).eval()
    qlayer, report = quantize_model(layer, l0(8))
    assert "self_attn.out_proj" in report.names
    ref = with_weights(layer, qlayer, report.names)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(qlayer(x), ref(x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Importance and Fisher information
# ---------------------------------------------------------------------------------------------
def test_importance_one_value_is_the_weighted_mean():
    linear = seeded(lambda: nn.Linear(6, 4))
    W = linear.weight.detach().double().numpy()
    imp = np.random.default_rng(0).uniform(0.1, 5.0, size=W.shape)
    q, _ = quantize_model(linear, l0(1), granularity="tensor",
                          importance={"": torch.from_numpy(imp)})
    assert q.codebook.shape == (1, 1)
    assert q.codebook.item() == pytest.approx(np.sum(imp * W) / np.sum(imp), rel=1e-5)
    q, _ = quantize_model(linear, l0(1), granularity="channel", importance={"": imp})
    np.testing.assert_allclose(q.codebook[:, 0].numpy(),
                               np.sum(imp * W, axis=1) / np.sum(imp, axis=1), rtol=1e-5)


def test_importance_moves_the_codebook_toward_important_entries():
    linear = seeded(lambda: nn.Linear(32, 2))
    W = linear.weight.detach().numpy()
    imp = np.ones(W.shape)
    imp[0, 5] = 1e4
    plain, _ = quantize_model(linear, l0(3), granularity="tensor")
    weighted, _ = quantize_model(linear, l0(3), granularity="tensor", importance={"": imp})
    err = lambda q: abs(float(q.weight[0, 5]) - W[0, 5])  # noqa: E731
    assert err(weighted) < 1e-3 * max(err(plain), 1e-9) or err(weighted) < 1e-6
    # the importance-weighted error is what got smaller
    wse = lambda q: np.sum(imp * (q.weight.detach().numpy() - W) ** 2)  # noqa: E731
    assert wse(weighted) < wse(plain)


def test_fisher_importance_equals_hand_gradients():
    linear = seeded(lambda: nn.Linear(3, 2))
    rng = np.random.default_rng(0)
    batches = [(torch.tensor(rng.normal(size=(4, 3)), dtype=torch.float32),
                torch.tensor(rng.normal(size=(4, 2)), dtype=torch.float32)) for _ in range(3)]
    before = [p.requires_grad for p in linear.parameters()]
    linear.weight.requires_grad_(False)  # frozen weights get a gradient all the same

    def loss_fn(model, batch):
        x, y = batch
        return ((model(x) - y) ** 2).sum()

    fisher = fisher_importance(linear, loss_fn, batches)
    W = linear.weight.detach().double().numpy()
    b = linear.bias.detach().double().numpy()
    expected = np.zeros_like(W)
    for x, y in batches:
        x, y = x.double().numpy(), y.double().numpy()
        grad = 2 * (x @ W.T + b - y).T @ x  # d/dW sum (Wx + b - y)^2
        expected += grad ** 2
    np.testing.assert_allclose(fisher[""].numpy(), expected / 3, rtol=1e-5)
    summed = fisher_importance(linear, loss_fn, batches, reduction="sum")
    np.testing.assert_allclose(summed[""].numpy(), expected, rtol=1e-5)
    assert not linear.weight.requires_grad and linear.weight.grad is None
    assert before == [True, True]


def test_fisher_importance_feeds_quantize_model():
    model = seeded(Net)
    batches = [(torch.randn(5, 6), torch.randint(0, 2, (5,))) for _ in range(2)]
    fisher = fisher_importance(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batches,
                               exclude="head")
    assert sorted(fisher) == ["encoder.0", "encoder.1"]
    assert all(f.shape == (6, 6) and bool((f >= 0).all()) for f in fisher.values())
    q, report = quantize_model(model, l0(4), importance=fisher)
    assert report.names == ["encoder.0", "encoder.1", "head"]


def test_fisher_importance_errors():
    model = seeded(Net)
    with pytest.raises(ValueError, match="empty"):
        fisher_importance(model, lambda m, b: m(b).sum(), [])
    with pytest.raises(ValueError, match="scalar"):
        fisher_importance(model, lambda m, b: m(b), [torch.randn(2, 6)])
    with pytest.raises(ValueError, match="reduction"):
        fisher_importance(model, lambda m, b: m(b).sum(), [torch.randn(2, 6)], reduction="max")
    assert all(p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_bad_quantizers():
    model = seeded(Net)
    for bad in (PQ(2, 2), L0LeastSquareQuantizer, "l0", None):
        with pytest.raises(TypeError, match="quantizer"):
            quantize_model(model, bad)


def test_bad_granularity_and_group_size():
    model = seeded(Net)
    with pytest.raises(ValueError, match="granularity"):
        quantize_model(model, l0(), granularity="row")
    with pytest.raises(ValueError, match="group_size"):
        quantize_model(model, l0(), granularity="group")
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="group_size"):
            quantize_model(model, l0(), granularity="group", group_size=bad)
    with pytest.raises(ValueError, match="only used with granularity='group'"):
        quantize_model(model, l0(), granularity="channel", group_size=4)
    with pytest.raises(TypeError, match="not supported"):
        quantize_model(model, l0(), module_types=(nn.LSTM,))
    with pytest.raises(TypeError, match="include"):
        quantize_model(model, l0(), include=3)


def test_bad_importance():
    model = seeded(Net)
    with pytest.raises(ValueError, match="shape"):
        quantize_model(model, l0(), importance={"head": torch.ones(6, 2)})
    with pytest.raises(ValueError, match="negative"):
        quantize_model(model, l0(), importance={"head": -torch.ones(2, 6)})
    nan = torch.ones(2, 6)
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        quantize_model(model, l0(), importance={"head": nan})
    with pytest.raises(ValueError, match="not quantized"):
        quantize_model(model, l0(), include="head", importance={"encoder.0": torch.ones(6, 6)})
    with pytest.raises(TypeError, match="dict"):
        quantize_model(model, l0(), importance=[torch.ones(2, 6)])
    # A layer the loss does not use gets an all-zero importance: fitted as without one.
    zero, _ = quantize_model(model, l0(), importance={"head": torch.zeros(2, 6)})
    plain, _ = quantize_model(model, l0())
    assert torch.equal(zero.head.dequantize(), plain.head.dequantize())


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_name_the_layer(value):
    model = seeded(Net)
    with torch.no_grad():
        model.encoder[1].weight[2, 3] = value
    with pytest.raises(ValueError, match=r"'encoder\.1'.*NaN or infinity"):
        quantize_model(model, l0())


def test_from_codes_errors():
    linear = nn.Linear(4, 2)
    with pytest.raises(ValueError, match="shape"):
        QuantizedLinear.from_codes(linear, np.zeros((4, 2), dtype=int), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        QuantizedLinear.from_codes(linear, np.full((2, 4), 2), [0.0, 1.0])
    with pytest.raises(TypeError, match="integers"):
        QuantizedLinear.from_codes(linear, np.zeros((2, 4)), [0.0, 1.0])
    with pytest.raises(ValueError, match="codebook"):
        QuantizedLinear.from_codes(linear, np.zeros((2, 4), dtype=int), [[0.0, 1.0]] * 3,
                                   group_size=1)


def test_overridden_forward_warns():
    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.warns(UserWarning, match="overrides forward"):
        quantize_model(seeded(lambda: nn.Sequential(Scaled(4, 2))), l0(2))


# ---------------------------------------------------------------------------------------------
# A real small model
# ---------------------------------------------------------------------------------------------
def test_digits_mlp_keeps_its_accuracy():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=generator)
    train, test = order[:1200], order[1200:]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: threads only add overhead
    try:
        for _ in range(20):
            for batch in torch.split(train[torch.randperm(len(train), generator=generator)],
                                     100):
                optimizer.zero_grad()
                F.cross_entropy(model(X[batch]), y[batch]).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(n_threads)
    model.eval()

    def accuracy(m):
        with torch.no_grad():
            return 100.0 * float((m(X[test]).argmax(1) == y[test]).float().mean())

    float_accuracy = accuracy(model)
    assert float_accuracy > 93.0
    qmodel, report = quantize_model(model, l0(16), granularity="channel")
    assert [r.n_bits for r in report] == [4, 4]
    assert report.summary()["compression_ratio"] > 2.0
    assert accuracy(qmodel) >= float_accuracy - 1.0


@pytest.mark.parametrize("dim", [1, 5])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_embedding_lookups_of_any_number_of_rows(dim, granularity):
    """Rows read one at a time or many at once decode as the whole table does."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(12, dim)
    qemb, _ = quantize_model(emb, L0LeastSquareQuantizer(n_values=4, weighting="count"),
                             module_types=(torch.nn.Embedding,), granularity=granularity)
    table = qemb.dequantize()
    for index in (torch.tensor([3]), torch.tensor([[0, 11], [5, 5]]), torch.arange(12)):
        assert torch.equal(qemb(index), table[index])
