"""Quantize the weights of a torch model with skvq's scalar quantizers.

:func:`quantize_model` fits a scalar quantizer (:class:`~skvq.L0LeastSquareQuantizer`,
:class:`~skvq.KMeansQuantizer`, ...) on the weight of every chosen layer, per tensor, per
output channel or per group of output channels, and replaces the layer by a quantized one
that stores bit-packed codes and its codebooks and decodes its weight in ``forward``
(:class:`QuantizedLinear`, :class:`QuantizedConv1d`, :class:`QuantizedConv2d`,
:class:`QuantizedConv3d`, :class:`QuantizedEmbedding`). :func:`fisher_importance` computes
the diagonal empirical Fisher information of the weights, which :func:`quantize_model` can use
to weight each entry's squared error (as SqueezeLLM does). :func:`load_quantized_state_dict`
rebuilds a quantized model from its ``state_dict`` without fitting anything.

This module imports torch; ``import skvq`` does not import it.

**Storage layout.** The weight is viewed as a matrix whose rows are packed independently
with the bit layout of :mod:`skvq.packing` (little-endian bit stream per row,
``ceil(n_columns * n_bits / 8)`` bytes per row):

- ``Linear`` ``(out, in)`` and ``ConvNd`` ``(out, in / groups, *kernel)``: the matrix
  ``(out, fan_in)``, one row per output channel. Codebook group ``g`` holds output channels
  ``g * group_size`` to ``(g + 1) * group_size - 1``.
- ``Embedding`` ``(num_embeddings, embedding_dim)``: the weight as it is, one row per
  embedding; the "channels" are the embedding dimensions (its columns), and group ``g``
  holds dimensions ``g * group_size`` to ``(g + 1) * group_size - 1``. Rows stay
  independent, so a lookup decodes only the rows it reads.

The codebooks are one ``(n_groups, n_values)`` float buffer, each row sorted and padded on
the right by its largest value; codes are ``n_bits = max(1, ceil(log2(n_values)))`` bits wide.
"""

import copy
import math
import numbers
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import clone
from torch import nn

from .packing import pack_codes, packed_row_bytes
from .scalar._base import ScalarQuantizer

__all__ = [
    "LayerReport",
    "QuantizationReport",
    "QuantizedConv1d",
    "QuantizedConv2d",
    "QuantizedConv3d",
    "QuantizedEmbedding",
    "QuantizedLinear",
    "fisher_importance",
    "load_quantized_state_dict",
    "quantize_model",
    "unpack_codes_torch",
]

# Version of the layout saved in a quantized layer's ``_extra_state`` entry.
_FORMAT_VERSION = 1
_MAX_BITS = 16
_GRANULARITIES = ("tensor", "channel", "group")


# ---------------------------------------------------------------------------------------------
# Torch-side unpacking: the counterpart of skvq.packing.unpack_codes.
# ---------------------------------------------------------------------------------------------
def _check_int(value, name, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
    return int(value)


def _bits_for(n_values):
    """Code width for ``n_values`` codebook values: ``max(1, ceil(log2(n_values)))``."""
    return max(1, math.ceil(math.log2(n_values)))


def unpack_codes_torch(packed, n_bits, n_columns):
    """Unpack bit-packed codes with torch, on the device ``packed`` lives on.

    The inverse of :func:`skvq.packing.pack_codes` (the same layout as
    :func:`skvq.packing.unpack_codes`): each row of ``packed`` is a little-endian bit stream
    in which bit ``b`` of code ``j`` is bit ``j * n_bits + b``.

    Parameters
    ----------
    packed : torch.Tensor of shape (n_rows, ceil(n_columns * n_bits / 8)), dtype uint8
        Packed codes (a numpy array is converted).
    n_bits : int
        Code width, 1 to 16.
    n_columns : int
        Number of codes per row.

    Returns
    -------
    codes : torch.Tensor of shape (n_rows, n_columns), dtype int64
        On the device of ``packed``; int64 because that is torch's index dtype.

    Notes
    -----
    A code of at most 16 bits starting at bit ``p`` lies within the three bytes
    ``p // 8`` to ``p // 8 + 2``: the codes are three gathers of whole columns of bytes,
    a shift and a mask, with no loop over rows or codes.

    Examples
    --------
    >>> import numpy as np
    >>> from skvq.packing import pack_codes
    >>> from skvq.nn import unpack_codes_torch
    >>> packed = pack_codes(np.array([[1, 2, 3, 15, 0]]), 4)
    >>> unpack_codes_torch(torch.from_numpy(packed), 4, 5)
    tensor([[ 1,  2,  3, 15,  0]])
    """
    if isinstance(n_bits, bool) or not isinstance(n_bits, numbers.Integral) \
            or not 1 <= n_bits <= _MAX_BITS:
        raise ValueError(f"n_bits must be an int in [1, {_MAX_BITS}], got {n_bits!r}.")
    n_columns = _check_int(n_columns, "n_columns", 0)
    packed = torch.as_tensor(packed)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed codes must be uint8, got dtype {packed.dtype}.")
    n_bytes = packed_row_bytes(n_columns, n_bits)
    if packed.ndim != 2 or packed.shape[1] != n_bytes:
        raise ValueError(f"packed codes must have shape (n_rows, {n_bytes}) for "
                         f"n_columns={n_columns} and n_bits={n_bits}, got "
                         f"{tuple(packed.shape)}.")
    device = packed.device
    if n_columns == 0:
        return torch.zeros((packed.shape[0], 0), dtype=torch.int64, device=device)
    if 8 % n_bits == 0:  # codes never straddle bytes: shifts of each byte, no gather
        per_byte = 8 // n_bits
        shifts = torch.arange(per_byte, device=device, dtype=torch.uint8) * n_bits
        codes = (packed[:, :, None] >> shifts) & ((1 << n_bits) - 1)
        return codes.reshape(packed.shape[0], -1)[:, :n_columns].to(torch.int64)
    if n_bits == 16:  # two whole bytes, little-endian
        pairs = packed.reshape(packed.shape[0], n_columns, 2).to(torch.int64)
        return pairs[:, :, 0] | (pairs[:, :, 1] << 8)
    start = torch.arange(n_columns, device=device, dtype=torch.int64) * n_bits
    byte, shift = start >> 3, (start & 7).to(torch.int32)
    # Two zero bytes on the right: byte + 1 and byte + 2 stay in range for the last codes.
    wide = F.pad(packed, (0, 2)).to(torch.int32)
    word = wide[:, byte] | (wide[:, byte + 1] << 8) | (wide[:, byte + 2] << 16)
    return ((word >> shift) & ((1 << n_bits) - 1)).to(torch.int64)


# ---------------------------------------------------------------------------------------------
# Quantized layers
# ---------------------------------------------------------------------------------------------
def _tensor_key(t):
    try:
        version = t._version
    except RuntimeError:  # inference tensors have no version counter
        version = None
    return t.data_ptr(), version


class _QuantizedLayer(nn.Module):
    """Packed codes + codebooks of one weight, decoded on the fly; the shared machinery.

    Subclasses set ``_channel_axis`` (0: the channels are the rows of the packed matrix,
    1: its columns) and call ``_init_quantized`` with the weight's shape.
    """

    _channel_axis = 0

    def _init_quantized(self, weight_shape, n_values, group_size, codebook_dtype, cache,
                        device, dtype):
        weight_shape = tuple(int(s) for s in weight_shape)
        n_values = _check_int(n_values, "n_values", 1)
        if n_values > 2**_MAX_BITS:
            raise ValueError(f"n_values={n_values}: codes are at most {_MAX_BITS} bits wide "
                             f"({2**_MAX_BITS} values).")
        self.weight_shape = weight_shape
        self.n_rows = weight_shape[0]
        self.n_columns = int(np.prod(weight_shape[1:], dtype=np.int64))
        self.group_size = None if group_size is None else _check_int(group_size,
                                                                     "group_size", 1)
        self.cache = bool(cache)
        self._cache = None
        self._cache_key = None
        n_bits = _bits_for(n_values)
        factory = {"device": device}
        self.register_buffer("packed_weight", torch.zeros(
            (self.n_rows, packed_row_bytes(self.n_columns, n_bits)), dtype=torch.uint8,
            **factory))
        self.register_buffer("codebook", torch.zeros(
            (self._n_groups_for(self.group_size), n_values),
            dtype=codebook_dtype or torch.float32, **factory))
        # Carries the dtype of the decoded weight (the original weight's dtype) through
        # .half(), .double(), .to(dtype) independently of the codebook's storage dtype.
        self.register_buffer("_dtype_anchor", torch.empty(
            0, dtype=dtype or torch.get_default_dtype(), **factory), persistent=False)

    # -- shape bookkeeping --------------------------------------------------------------------
    @property
    def n_channels(self):
        """Number of channels the codebook groups are taken over."""
        return self.n_rows if self._channel_axis == 0 else self.n_columns

    def _n_groups_for(self, group_size):
        return 1 if group_size is None else -(-self.n_channels // group_size)

    @property
    def n_values(self):
        """Number of codebook values per group (the largest group's count)."""
        return int(self.codebook.shape[1])

    @property
    def n_groups(self):
        """Number of codebooks."""
        return int(self.codebook.shape[0])

    @property
    def n_bits(self):
        """Width of one code in bits: ``max(1, ceil(log2(n_values)))``."""
        return _bits_for(self.n_values)

    @property
    def granularity(self):
        """``"tensor"``, ``"channel"`` or ``"group"``."""
        if self.group_size is None:
            return "tensor"
        return "channel" if self.group_size == 1 else "group"

    @property
    def weight_dtype(self):
        """Dtype of the decoded weight (that of the original weight, following ``.half()``,
        ``.double()`` and ``.to(dtype)``)."""
        return self._dtype_anchor.dtype

    # -- decoding -----------------------------------------------------------------------------
    def _group_offsets(self, channels=None):
        """Offset of each channel's codebook in the flattened codebook buffer."""
        device = self.codebook.device
        if channels is None:
            channels = torch.arange(self.n_channels, device=device)
        if self.group_size is None:
            return torch.zeros_like(channels)
        return (channels // self.group_size) * self.n_values

    def _lookup(self, codes, offsets):
        """Codebook values of ``codes`` (rows x columns); ``offsets`` (one per row, shape
        (n, 1), or one per column, shape (1, n)) locate each channel's codebook. One
        ``torch.gather`` against each channel's codebook row (several times faster on the
        CPU than indexing the flattened table)."""
        book = self.codebook.to(self.weight_dtype)
        groups = offsets.reshape(-1) // self.n_values
        if offsets.shape[1] == 1 and offsets.shape[0] == codes.shape[0]:  # one per row
            return torch.gather(book.index_select(0, groups), 1, codes)
        return torch.gather(book.index_select(0, groups).T, 0, codes)  # one per column

    def _decode(self):
        codes = unpack_codes_torch(self.packed_weight, self.n_bits, self.n_columns)
        offsets = self._group_offsets()
        offsets = offsets[:, None] if self._channel_axis == 0 else offsets[None, :]
        return self._lookup(codes, offsets).reshape(self.weight_shape)

    def dequantize(self):
        """The decoded weight, of the original weight's shape, in :attr:`weight_dtype`.

        Uses (and fills) the cache when ``cache`` is true.

        Returns
        -------
        weight : torch.Tensor
        """
        if not self.cache or self.codebook.requires_grad:
            self.clear_cache()
            return self._decode()
        key = (_tensor_key(self.packed_weight), _tensor_key(self.codebook), self.weight_dtype,
               self.codebook.device, torch.is_inference_mode_enabled())
        if self._cache is None or self._cache_key != key:
            self._cache = self._decode()
            self._cache_key = key
        return self._cache

    @property
    def weight(self):
        """The decoded weight (read-only view of :meth:`dequantize`), so that code reading
        ``module.weight`` (``nn.MultiheadAttention``'s ``out_proj``) keeps working."""
        return self.dequantize()

    def clear_cache(self):
        """Drop the cached decoded weight (if any)."""
        self._cache = None
        self._cache_key = None

    # -- torch hooks: the cache never outlives a move, a cast or a load ---------------------
    def _apply(self, fn, recurse=True):
        self.clear_cache()
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = super().__getstate__()
        state["_cache"] = None
        state["_cache_key"] = None
        return state

    def get_extra_state(self):
        # A tensor (not a dict), so that the state_dict holds tensors only (safetensors,
        # torch.load(weights_only=True)).
        return torch.tensor([_FORMAT_VERSION, self.group_size or 0], dtype=torch.int64)

    def set_extra_state(self, state):
        self.group_size = self._parse_extra_state(state)

    @staticmethod
    def _parse_extra_state(state, prefix=""):
        state = torch.as_tensor(state).reshape(-1).tolist()
        if len(state) != 2 or state[0] != _FORMAT_VERSION:
            raise RuntimeError(f"{prefix}_extra_state: unknown quantized layer format {state}; "
                               f"this version of skvq reads format {_FORMAT_VERSION}.")
        return int(state[1]) or None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The codebook size (hence the code width) and the grouping come from the checkpoint:
        # a layer built with other quantization settings takes the checkpoint's shapes.
        self.clear_cache()
        packed = state_dict.get(prefix + "packed_weight")
        codebook = state_dict.get(prefix + "codebook")
        extra = state_dict.get(prefix + "_extra_state")
        group_size = self.group_size
        if extra is not None:
            group_size = self._parse_extra_state(extra, prefix)
        if packed is not None and codebook is not None:
            if codebook.ndim != 2 or not 1 <= codebook.shape[1] <= 2**_MAX_BITS:
                error_msgs.append(f"{prefix}codebook: expected shape (n_groups, n_values) "
                                  f"with n_values <= {2**_MAX_BITS}, got "
                                  f"{tuple(codebook.shape)}.")
                return
            n_values = int(codebook.shape[1])
            expected_packed = (self.n_rows, packed_row_bytes(self.n_columns,
                                                             _bits_for(n_values)))
            expected_groups = self._n_groups_for(group_size)
            if tuple(packed.shape) != expected_packed or codebook.shape[0] != expected_groups:
                error_msgs.append(
                    f"{prefix}: the checkpoint's packed_weight {tuple(packed.shape)} and "
                    f"codebook {tuple(codebook.shape)} do not fit a weight of shape "
                    f"{self.weight_shape} with group_size={group_size}: expected "
                    f"packed_weight {expected_packed} and {expected_groups} codebook(s).")
                return
            if tuple(codebook.shape) != tuple(self.codebook.shape):
                self.packed_weight = torch.zeros(expected_packed, dtype=torch.uint8,
                                                 device=self.packed_weight.device)
                self.codebook = torch.zeros(tuple(codebook.shape), dtype=self.codebook.dtype,
                                            device=self.codebook.device)
            self.group_size = group_size
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    # -- construction from codes ---------------------------------------------------------------
    def _set_codes(self, codes, codebook):
        codes = np.asarray(codes)
        if codes.dtype == object or codes.dtype.kind not in "iu":
            raise TypeError(f"codes must be integers, got dtype {codes.dtype}.")
        if codes.shape != self.weight_shape:
            raise ValueError(f"codes must have the weight's shape {self.weight_shape}, got "
                             f"{codes.shape}.")
        codebook = torch.as_tensor(codebook).detach().cpu()
        if codebook.ndim == 1:
            codebook = codebook[None, :]
        if tuple(codebook.shape) != tuple(self.codebook.shape):
            raise ValueError(f"codebook must have shape {tuple(self.codebook.shape)} "
                             f"(n_groups, n_values), got {tuple(codebook.shape)}.")
        if not bool(torch.isfinite(codebook).all()):
            raise ValueError("codebook contains NaN or infinity.")
        codes = codes.reshape(self.n_rows, self.n_columns)
        if codes.size and (codes.min() < 0 or codes.max() >= self.n_values):
            raise ValueError(f"codes must be in [0, {self.n_values - 1}], got values in "
                             f"[{codes.min()}, {codes.max()}].")
        with torch.no_grad():
            self.packed_weight.copy_(torch.from_numpy(pack_codes(codes, self.n_bits)))
            self.codebook.copy_(codebook)
        self.clear_cache()

    @classmethod
    def from_codes(cls, module, codes, codebook, group_size=None, *, cache=False,
                   codebook_dtype=torch.float32):
        """A quantized copy of ``module`` whose weight is ``codebook`` looked up at ``codes``.

        Parameters
        ----------
        module : torch.nn.Module
            The float layer (its hyper-parameters, bias, device and weight dtype are copied).
        codes : array-like of int, of the weight's shape
            Index of each weight entry in its group's codebook.
        codebook : array-like of shape (n_groups, n_values) or (n_values,)
            One row per group of ``group_size`` channels (see the module docstring for what
            a channel is); a 1-D codebook is one group.
        group_size : int or None, default=None
            Channels per codebook; None: one codebook for the whole weight.
        cache : bool, default=False
            Keep the decoded weight between calls.
        codebook_dtype : torch.dtype, default=torch.float32
            Storage dtype of the codebook.

        Returns
        -------
        layer : cls
            On the device of ``module``'s weight.
        """
        codebook = torch.as_tensor(codebook)
        n_values = int(codebook.shape[-1])
        layer = cls._like(module, n_values=n_values, group_size=group_size, cache=cache,
                          codebook_dtype=codebook_dtype)
        layer._set_codes(codes, codebook)
        return layer.to(module.weight.device)

    def _quantization_repr(self):
        text = f"granularity={self.granularity}"
        if self.granularity == "group":
            text += f", group_size={self.group_size}"
        text += f", n_groups={self.n_groups}, n_values={self.n_values}, n_bits={self.n_bits}"
        if self.cache:
            text += ", cache=True"
        return text

    def _copy_bias(self, module):
        if getattr(module, "bias", None) is not None:
            with torch.no_grad():
                self.bias.copy_(module.bias.detach())
            self.bias.requires_grad_(module.bias.requires_grad)


class QuantizedLinear(_QuantizedLayer):
    """A ``torch.nn.Linear`` whose weight is stored as bit-packed codes and codebooks.

    Usually built by :func:`quantize_model`. ``forward`` decodes the weight (unpack + one
    gather, on the module's device, in :attr:`weight_dtype`) and applies
    ``torch.nn.functional.linear``.

    Parameters
    ----------
    in_features, out_features : int
        As ``torch.nn.Linear``.
    bias : bool, default=True
        Whether the layer has a bias (a float ``Parameter``, left trainable).
    n_values : int, default=16
        Codebook values per group; codes are ``max(1, ceil(log2(n_values)))`` bits.
    group_size : int or None, default=None
        Output channels per codebook: None one codebook for the tensor, 1 one per output
        channel, ``g`` one per ``g`` consecutive output channels.
    codebook_dtype : torch.dtype, default=torch.float32
        Storage dtype of the codebooks.
    cache : bool, default=False
        Keep the decoded weight between forward calls (see Notes).
    device, dtype : optional
        Device of the buffers; dtype of the decoded weight (default: torch's default dtype).

    Attributes
    ----------
    packed_weight : torch.Tensor of shape (out_features, ceil(in_features * n_bits / 8))
        uint8 buffer: the codes of each output channel, packed as :mod:`skvq.packing`.
    codebook : torch.Tensor of shape (n_groups, n_values)
        Float buffer, each row sorted (padded on the right by its largest value).
    bias : torch.nn.Parameter or None

    Notes
    -----
    **Cache.** With ``cache=True`` the decoded weight is kept (as a plain attribute: it is
    neither in ``state_dict`` nor pickled) and reused while ``packed_weight`` and
    ``codebook`` are unchanged: ``.to()``, ``.half()``, ``load_state_dict`` and in-place edits
    of either buffer invalidate it. It trades the memory saving for speed; it is bypassed
    while the codebook requires grad.

    Examples
    --------
    >>> import torch
    >>> from skvq.nn import QuantizedLinear
    >>> linear = torch.nn.Linear(3, 2)
    >>> codes = torch.tensor([[0, 1, 1], [1, 0, 0]])
    >>> layer = QuantizedLinear.from_codes(linear, codes, [[-1.0, 1.0]])
    >>> layer.weight
    tensor([[-1.,  1.,  1.],
            [ 1., -1., -1.]])
    >>> layer  # doctest: +NORMALIZE_WHITESPACE
    QuantizedLinear(in_features=3, out_features=2, bias=True, granularity=tensor,
                    n_groups=1, n_values=2, n_bits=1)
    """

    def __init__(self, in_features, out_features, bias=True, *, n_values=16, group_size=None,
                 codebook_dtype=torch.float32, cache=False, device=None, dtype=None):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._init_quantized((out_features, in_features), n_values, group_size,
                             codebook_dtype, cache, device, dtype)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, device=device,
                                                 dtype=self.weight_dtype))
        else:
            self.register_parameter("bias", None)

    @classmethod
    def _like(cls, module, **kwargs):
        layer = cls(module.in_features, module.out_features, module.bias is not None,
                    dtype=module.weight.dtype, **kwargs)
        layer._copy_bias(module)
        return layer

    def forward(self, input):
        return F.linear(input, self.dequantize(), self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self._quantization_repr()}")


def _ntuple(value, n):
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return (int(value),) * n
    return tuple(int(v) for v in value)


class _QuantizedConvNd(_QuantizedLayer):
    _n_dims = None
    _conv = None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", *, n_values=16,
                 group_size=None, codebook_dtype=torch.float32, cache=False, device=None,
                 dtype=None):
        super().__init__()
        n = self._n_dims
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be 'zeros', 'reflect', 'replicate' or "
                             f"'circular', got {padding_mode!r}.")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _ntuple(kernel_size, n)
        self.stride = _ntuple(stride, n)
        self.padding = _ntuple(padding, n)
        self.dilation = _ntuple(dilation, n)
        self.groups = int(groups)
        self.padding_mode = padding_mode
        if self.in_channels % self.groups:
            raise ValueError("in_channels must be divisible by groups.")
        self._init_quantized((out_channels, in_channels // groups) + self.kernel_size,
                             n_values, group_size, codebook_dtype, cache, device, dtype)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels, device=device,
                                                 dtype=self.weight_dtype))
        else:
            self.register_parameter("bias", None)

    @classmethod
    def _like(cls, module, **kwargs):
        layer = cls(module.in_channels, module.out_channels, module.kernel_size,
                    module.stride, module.padding, module.dilation, module.groups,
                    module.bias is not None, module.padding_mode, dtype=module.weight.dtype,
                    **kwargs)
        layer._copy_bias(module)
        return layer

    def _reversed_padding(self):
        """Padding for ``F.pad`` (last dimension first), as ``nn.ConvNd`` computes it."""
        if isinstance(self.padding, str):
            padding = [0] * (2 * self._n_dims)
            if self.padding == "same":
                for i, (d, k) in enumerate(zip(self.dilation, self.kernel_size)):
                    total = d * (k - 1)
                    j = 2 * (self._n_dims - 1 - i)
                    padding[j], padding[j + 1] = total // 2, total - total // 2
            return padding
        return [p for p in reversed(self.padding) for _ in range(2)]

    def forward(self, input):
        conv = type(self)._conv
        weight = self.dequantize()
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding(), mode=self.padding_mode)
            return conv(input, weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return conv(input, weight, self.bias, self.stride, self.padding, self.dilation,
                    self.groups)

    def extra_repr(self):
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,) * self._n_dims:
            text += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._n_dims:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return f"{text}, {self._quantization_repr()}"


_CONV_DOC = """A ``torch.nn.Conv{n}d`` whose weight is stored as bit-packed codes and codebooks.

    Usually built by :func:`quantize_model`. The weight ``(out, in / groups, *kernel)`` is
    stored as the matrix ``(out, fan_in)``, one packed row per output channel. ``forward``
    decodes it and applies ``torch.nn.functional.conv{n}d`` (``padding_mode`` other than
    ``"zeros"`` pads first, as ``torch.nn.Conv{n}d`` does).

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding
        As ``torch.nn.Conv{n}d``.
    dilation, groups, bias, padding_mode
        As ``torch.nn.Conv{n}d``.
    n_values, group_size, codebook_dtype, cache, device, dtype
        As :class:`QuantizedLinear`; ``group_size`` counts output channels.

    Attributes
    ----------
    packed_weight : torch.Tensor of shape (out_channels, ceil(fan_in * n_bits / 8)), uint8
    codebook : torch.Tensor of shape (n_groups, n_values)
    bias : torch.nn.Parameter or None
    """


class QuantizedConv1d(_QuantizedConvNd):
    __doc__ = _CONV_DOC.format(n=1)
    _n_dims = 1
    _conv = F.conv1d


class QuantizedConv2d(_QuantizedConvNd):
    __doc__ = _CONV_DOC.format(n=2)
    _n_dims = 2
    _conv = F.conv2d


class QuantizedConv3d(_QuantizedConvNd):
    __doc__ = _CONV_DOC.format(n=3)
    _n_dims = 3
    _conv = F.conv3d


class QuantizedEmbedding(_QuantizedLayer):
    """A ``torch.nn.Embedding`` whose weight is stored as bit-packed codes and codebooks.

    Usually built by :func:`quantize_model`. One packed row per embedding, so a lookup
    decodes only the rows it reads (unless ``cache=True``, which decodes and keeps the whole
    table). The channels of the codebook groups are the embedding dimensions (the columns of
    the weight): ``group_size=1`` gives one codebook per dimension.

    Parameters
    ----------
    num_embeddings, embedding_dim, padding_idx, max_norm, norm_type : see nn.Embedding
        As ``torch.nn.Embedding``.
    scale_grad_by_freq, sparse : bool
        As ``torch.nn.Embedding`` (no effect here, see Notes).
    n_values, group_size, codebook_dtype, cache, device, dtype
        As :class:`QuantizedLinear`; ``group_size`` counts embedding dimensions.

    Notes
    -----
    The weight has no gradient, so ``scale_grad_by_freq`` and ``sparse`` have no effect;
    they are kept for the ``repr`` and for rebuilding the float layer's hyper-parameters.
    ``padding_idx``'s row is quantized like any other (``nn.Embedding`` only excludes it
    from the gradient); it decodes to zeros only if its codebook holds 0.
    With ``max_norm`` the looked-up rows are rescaled in the output as ``nn.Embedding``
    rescales them (``max_norm / (norm + 1e-7)`` when their norm exceeds ``max_norm``), but
    the stored weight is not modified in place.
    """

    _channel_axis = 1

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, *, n_values=16,
                 group_size=None, codebook_dtype=torch.float32, cache=False, device=None,
                 dtype=None):
        super().__init__()
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if padding_idx is not None:
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError("padding_idx must be within num_embeddings.")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        self._init_quantized((num_embeddings, embedding_dim), n_values, group_size,
                             codebook_dtype, cache, device, dtype)

    @classmethod
    def _like(cls, module, **kwargs):
        return cls(module.num_embeddings, module.embedding_dim, module.padding_idx,
                   module.max_norm, module.norm_type, module.scale_grad_by_freq,
                   module.sparse, dtype=module.weight.dtype, **kwargs)

    def forward(self, input):
        if self.cache:
            rows = F.embedding(input, self.dequantize())
        else:
            # index_select, not indexing: out-of-range and negative indices raise, as in
            # F.embedding, without a device synchronisation.
            packed = self.packed_weight.index_select(0, input.reshape(-1))
            codes = unpack_codes_torch(packed, self.n_bits, self.n_columns)
            rows = self._lookup(codes, self._group_offsets()[None, :])
            rows = rows.reshape(*input.shape, self.embedding_dim)
        if self.max_norm is not None:
            norms = torch.linalg.vector_norm(rows, ord=self.norm_type, dim=-1, keepdim=True)
            scale = torch.where(norms > self.max_norm, self.max_norm / (norms + 1e-7),
                                torch.ones_like(norms))
            rows = rows * scale
        return rows

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            text += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            text += f", norm_type={self.norm_type}"
        return f"{text}, {self._quantization_repr()}"


# Float layer type -> quantized layer type, most specific first.
_QUANTIZED_TYPES = (
    (nn.Linear, QuantizedLinear),
    (nn.Conv1d, QuantizedConv1d),
    (nn.Conv2d, QuantizedConv2d),
    (nn.Conv3d, QuantizedConv3d),
    (nn.Embedding, QuantizedEmbedding),
)


def _quantized_type(module):
    for float_type, quantized_type in _QUANTIZED_TYPES:
        if isinstance(module, float_type):
            return float_type, quantized_type
    return None, None


def _supported_names():
    return ", ".join(f"nn.{t.__name__}" for t, _ in _QUANTIZED_TYPES)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerReport:
    """What :func:`quantize_model` did to one layer.

    Attributes
    ----------
    name : str
        Qualified module name (``model.get_submodule(name)``).
    module_type : str
        Type of the float layer (``"Linear"``, ``"Conv2d"``, ``"Embedding"``, ...).
    shape : tuple of int
        Shape of its weight.
    granularity : str
        ``"tensor"``, ``"channel"`` or ``"group"``.
    group_size : int or None
        Channels per codebook (None for one per tensor).
    n_groups : int
        Number of codebooks.
    n_values : int
        Values per codebook (the largest group's count).
    n_bits : int
        Bits per code.
    n_weights : int
        Number of weight entries.
    bits_per_weight : float
        Storage of the weight per entry, in bits: packed codes (with each row's byte padding)
        plus codebooks in their storage dtype, divided by ``n_weights``.
    weight_mse : float
        Mean squared error of the decoded weight (as the layer decodes it, after rounding the
        codebook to its storage dtype).
    relative_mse : float
        ``weight_mse / mean(weight ** 2)``.
    weight_rms : float
        Root mean square of the float weight.
    bytes_before : int
        Weight and bias of the float layer, in their dtype.
    bytes_after : int
        Packed codes, codebooks and bias of the quantized layer.
    fit_time_s : float
        Seconds spent fitting the quantizer and coding the weight.
    """

    name: str
    module_type: str
    shape: tuple
    granularity: str
    group_size: object
    n_groups: int
    n_values: int
    n_bits: int
    n_weights: int
    bits_per_weight: float
    weight_mse: float
    relative_mse: float
    weight_rms: float
    bytes_before: int
    bytes_after: int
    fit_time_s: float


class QuantizationReport(Sequence):
    """Per-layer records of :func:`quantize_model`, with totals.

    A read-only sequence of :class:`LayerReport`, indexable by position or by layer name.
    Reports of successive calls (mixed precision: one call per set of layers) add up with
    ``+``.

    Parameters
    ----------
    records : iterable of LayerReport

    Examples
    --------
    >>> from skvq.nn import QuantizationReport
    >>> report = QuantizationReport([])
    >>> len(report), report.summary()["n_layers"]
    (0, 0)
    """

    def __init__(self, records=()):
        self._records = list(records)

    def __len__(self):
        return len(self._records)

    def __getitem__(self, key):
        if isinstance(key, str):
            for record in self._records:
                if record.name == key:
                    return record
            raise KeyError(key)
        if isinstance(key, slice):
            return QuantizationReport(self._records[key])
        return self._records[key]

    def __add__(self, other):
        if not isinstance(other, QuantizationReport):
            return NotImplemented
        return QuantizationReport(self._records + other._records)

    def __eq__(self, other):
        return isinstance(other, QuantizationReport) and self._records == other._records

    @property
    def names(self):
        """Names of the quantized layers, in order."""
        return [r.name for r in self._records]

    def to_pandas(self):
        """The records as a ``pandas.DataFrame``, one row per layer (needs pandas).

        Returns
        -------
        df : pandas.DataFrame
        """
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("QuantizationReport.to_pandas needs pandas "
                              "(pip install pandas).") from exc
        columns = list(LayerReport.__dataclass_fields__)
        return pd.DataFrame([asdict(r) for r in self._records], columns=columns)

    def summary(self):
        """Totals over the quantized layers.

        Returns
        -------
        summary : dict
            ``n_layers``, ``n_weights``, ``bytes_before``, ``bytes_after``,
            ``compression_ratio`` (before / after), ``bits_per_weight`` (codes and codebooks
            of all layers over all their weights), ``mse`` (over all weight entries),
            ``relative_mse`` (total squared error over total squared weight) and
            ``fit_time_s``. Only the quantized layers count; other parameters are not
            included in the bytes.
        """
        n_weights = sum(r.n_weights for r in self._records)
        before = sum(r.bytes_before for r in self._records)
        after = sum(r.bytes_after for r in self._records)
        weight_bits = sum(r.bits_per_weight * r.n_weights for r in self._records)
        sse = sum(r.weight_mse * r.n_weights for r in self._records)
        power = sum(r.weight_rms ** 2 * r.n_weights for r in self._records)
        return {
            "n_layers": len(self._records),
            "n_weights": n_weights,
            "bytes_before": before,
            "bytes_after": after,
            "compression_ratio": before / after if after else float("nan"),
            "bits_per_weight": weight_bits / n_weights if n_weights else float("nan"),
            "mse": sse / n_weights if n_weights else float("nan"),
            "relative_mse": sse / power if power else float("nan"),
            "fit_time_s": sum(r.fit_time_s for r in self._records),
        }

    def __str__(self):
        header = ("name", "type", "shape", "granularity", "groups", "values", "bits/w",
                  "rel. MSE", "KiB before", "KiB after", "time (s)")
        rows = [(r.name or "<model>", r.module_type, "x".join(map(str, r.shape)),
                 r.granularity, str(r.n_groups), str(r.n_values), f"{r.bits_per_weight:.3f}",
                 f"{r.relative_mse:.3e}", f"{r.bytes_before / 1024:.1f}",
                 f"{r.bytes_after / 1024:.1f}", f"{r.fit_time_s:.2f}")
                for r in self._records]
        widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                 for row in [header] + rows]
        s = self.summary()
        lines.append(
            f"Total: {s['n_layers']} layers, {s['n_weights']} weights, "
            f"{s['bytes_before'] / 1024:.1f} KiB -> {s['bytes_after'] / 1024:.1f} KiB "
            f"({s['compression_ratio']:.2f}x), {s['bits_per_weight']:.3f} bits/weight, "
            f"MSE {s['mse']:.3e} (relative {s['relative_mse']:.3e}), "
            f"{s['fit_time_s']:.2f} s")
        return "\n".join(lines)

    __repr__ = __str__


# ---------------------------------------------------------------------------------------------
# Selecting modules
# ---------------------------------------------------------------------------------------------
def _check_module_types(module_types):
    if isinstance(module_types, type):
        module_types = (module_types,)
    module_types = tuple(module_types)
    if not module_types:
        raise ValueError("module_types is empty.")
    for t in module_types:
        if not (isinstance(t, type) and _quantized_type_of_class(t)):
            raise TypeError(f"module_types: {t!r} is not supported; supported layer types "
                            f"are {_supported_names()} (and their subclasses).")
    return module_types


def _quantized_type_of_class(cls):
    return any(issubclass(cls, float_type) for float_type, _ in _QUANTIZED_TYPES)


def _name_matcher(patterns, argument):
    """A predicate on module names from None, a str / compiled regex (full match, or equal
    names), a callable, or a list of these (any of them)."""
    if patterns is None:
        return None
    if not isinstance(patterns, (list, tuple, set, frozenset)):
        patterns = [patterns]
    tests = []
    for p in patterns:
        if isinstance(p, str):
            regex = re.compile(p)
            tests.append(lambda name, p=p, r=regex: name == p or r.fullmatch(name) is not None)
        elif isinstance(p, re.Pattern):
            tests.append(lambda name, r=p: r.fullmatch(name) is not None)
        elif callable(p):
            tests.append(lambda name, f=p: bool(f(name)))
        else:
            raise TypeError(f"{argument} must be a module name, a regular expression, a "
                            f"callable on names, or a list of these; got {p!r}.")
    return lambda name: any(t(name) for t in tests)


def _select_modules(model, module_types, include, exclude):
    """``[(name, module, all_names)]`` of the chosen layers, each module object once (a module
    reachable under several names is listed under its first name, with all of them)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    module_types = _check_module_types(module_types)
    include_test = _name_matcher(include, "include")
    exclude_test = _name_matcher(exclude, "exclude")
    names = {}
    order = []
    for name, module in model.named_modules(remove_duplicate=False):
        if id(module) not in names:
            names[id(module)] = []
            order.append(module)
        names[id(module)].append(name)
    chosen = []
    for module in order:
        if not isinstance(module, module_types):
            continue
        all_names = names[id(module)]
        if include_test is not None and not any(include_test(n) for n in all_names):
            continue
        if exclude_test is not None and any(exclude_test(n) for n in all_names):
            continue
        chosen.append((all_names[0], module, all_names))
    return chosen


def _weight_matrix(module, weight):
    """The matrix the quantizer is fitted on: columns are the channels of the groups."""
    if isinstance(module, nn.Embedding):
        return weight
    return weight.reshape(weight.shape[0], -1).T


def _codes_to_weight_layout(module, codes, shape):
    if isinstance(module, nn.Embedding):
        return codes
    return np.ascontiguousarray(codes.T).reshape(shape)


# ---------------------------------------------------------------------------------------------
# quantize_model
# ---------------------------------------------------------------------------------------------
def _check_quantizer(quantizer):
    if isinstance(quantizer, type):
        raise TypeError(f"quantizer must be an instance, got the class {quantizer.__name__}; "
                        f"use for example {quantizer.__name__}(n_values=16, "
                        "weighting='count').")
    if not isinstance(quantizer, ScalarQuantizer):
        raise TypeError(f"quantizer must be a skvq scalar quantizer (L0LeastSquareQuantizer, "
                        f"L1LeastSquareQuantizer, KMeansLSQuantizer, KMeansQuantizer, "
                        f"GaussianMixtureQuantizer), got {type(quantizer).__name__}.")


def _check_granularity(granularity, group_size):
    if granularity not in _GRANULARITIES:
        raise ValueError(f"granularity must be one of {_GRANULARITIES}, got {granularity!r}.")
    if granularity == "group":
        if group_size is None:
            raise ValueError("granularity='group' needs group_size (output channels per "
                             "codebook), an int >= 1.")
        return _check_int(group_size, "group_size", 1)
    if group_size is not None:
        raise ValueError(f"group_size={group_size!r} is only used with granularity='group'; "
                         f"got granularity={granularity!r}.")
    return None if granularity == "tensor" else 1


def _check_importance(importance, chosen):
    if importance is None:
        return {}
    if not hasattr(importance, "items"):
        raise TypeError("importance must be a dict {module name: tensor of its weight's "
                        f"shape}}, got {type(importance).__name__}.")
    known = {}
    for name, module, all_names in chosen:
        for n in all_names:
            known[n] = (name, module)
    unknown = sorted(set(importance) - set(known))
    if unknown:
        raise ValueError(f"importance has entries for modules that are not quantized: "
                         f"{unknown}; quantized modules: {[c[0] for c in chosen]}.")
    checked = {}
    for key, value in importance.items():
        name, module = known[key]
        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu", torch.float64).numpy()
        value = np.asarray(value, dtype=np.float64)
        shape = tuple(module.weight.shape)
        if value.shape != shape:
            raise ValueError(f"importance[{key!r}] has shape {value.shape}; the weight of "
                             f"{key!r} has shape {shape}.")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"importance[{key!r}] contains NaN or infinity.")
        if np.any(value < 0):
            raise ValueError(f"importance[{key!r}] has negative entries; importances are "
                             "non-negative weights of the squared error.")
        checked[name] = value
    return checked


def _tensor_bytes(t):
    return 0 if t is None else t.numel() * t.element_size()


def quantize_model(model, quantizer, *, granularity="channel", group_size=None,
                   module_types=(nn.Linear,), include=None, exclude=None, importance=None,
                   codebook_dtype=torch.float32, cache=False, inplace=False):
    """Quantize the weights of a torch model's layers with a skvq scalar quantizer.

    Every chosen layer's weight is fitted by a clone of ``quantizer`` (per tensor, per output
    channel or per group of output channels), coded, and the layer is replaced by its
    quantized counterpart (:class:`QuantizedLinear`, :class:`QuantizedConv2d`,
    :class:`QuantizedEmbedding`, ...), which stores bit-packed codes and codebooks and decodes
    its weight in ``forward``.

    Parameters
    ----------
    model : torch.nn.Module
        The float model (any device; weights in any float dtype).
    quantizer : skvq scalar quantizer instance
        :class:`~skvq.L0LeastSquareQuantizer`, :class:`~skvq.L1LeastSquareQuantizer`,
        :class:`~skvq.KMeansLSQuantizer`, :class:`~skvq.KMeansQuantizer` or
        :class:`~skvq.GaussianMixtureQuantizer`. It is cloned for each layer with its
        ``group_size`` set from ``granularity`` (its own ``group_size`` is ignored). Use
        ``weighting="count"``: the codebook then minimises the squared error of the weight
        (``"unique"``, the paper's default, weighs each distinct value once).
    granularity : {"tensor", "channel", "group"}, default="channel"
        One codebook per weight tensor, per output channel, or per ``group_size``
        consecutive output channels (embedding dimensions for ``nn.Embedding``).
    group_size : int, default=None
        Channels per codebook; required with ``granularity="group"`` and only then.
    module_types : tuple of types, default=(torch.nn.Linear,)
        Layer types to quantize, among ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d``,
        ``nn.Conv3d``, ``nn.Embedding`` and their subclasses.
    include, exclude : str, re.Pattern, callable, list of these, or None
        Select layers by qualified name (as in ``model.named_modules()``): a string matches
        a name equal to it or matched in full as a regular expression (``"encoder\\..*"``),
        a callable receives the name and returns a bool. A layer is quantized when its type
        is in ``module_types``, ``include`` is None or matches it, and ``exclude`` does not.
    importance : dict of str to tensor, default=None
        Per-entry weights of the squared error for some layers (name -> non-negative tensor
        of the weight's shape), for example from :func:`fisher_importance`. Layers without
        an entry are fitted with uniform importance.
    codebook_dtype : torch.dtype, default=torch.float32
        Storage dtype of the codebooks (``torch.float16`` halves their overhead).
    cache : bool, default=False
        Quantized layers keep their decoded weight between forward calls (see
        :class:`QuantizedLinear`).
    inplace : bool, default=False
        Modify ``model`` itself; otherwise a deep copy is quantized and ``model`` is left
        unchanged.

    Returns
    -------
    model : torch.nn.Module
        The quantized model (``model`` itself when ``inplace=True``; the quantized layer when
        ``model`` is itself a chosen layer).
    report : QuantizationReport
        One :class:`LayerReport` per quantized layer, with totals (``report.summary()``,
        ``print(report)``, ``report.to_pandas()``).

    Raises
    ------
    TypeError
        ``quantizer`` is not a skvq scalar quantizer instance, or a module type is not
        supported.
    ValueError
        Unknown ``granularity``; ``group_size`` missing, invalid or given without
        ``granularity="group"``; no layer matched; ``importance`` for an unknown layer, of
        the wrong shape, negative or not finite; a weight with NaN or infinity (the message
        names the layer); a fit with more than 65,536 values.

    See Also
    --------
    fisher_importance : Diagonal Fisher information of the weights, for ``importance``.
    load_quantized_state_dict : Rebuild a quantized model from its ``state_dict``.

    Notes
    -----
    **Layout.** ``nn.Linear`` ``(out, in)`` and ``nn.ConvNd`` ``(out, in / groups, *kernel)``
    weights are fitted as ``W.reshape(out, -1).T``, of shape ``(fan_in, out)``: the columns
    are the output channels, so the quantizer's ``group_size`` counts output channels.
    ``nn.Embedding`` weights ``(num_embeddings, embedding_dim)`` are fitted as they are: the
    channels are the embedding dimensions (the weight has no output-channel axis; a
    codebook per dimension is what per-channel quantization of a feature table means).
    ``importance`` is laid out the same way. Weights are fitted in float64 when they are
    float64 and in float32 otherwise, on the CPU.

    **Codebook overhead.** Each codebook costs ``n_values`` entries of ``codebook_dtype``:
    per channel, 16 float32 values add ``512 / fan_in`` bits per weight (2 bits for
    ``fan_in=256``, 0.125 for 4096). ``granularity="group"`` and ``codebook_dtype=float16``
    trade accuracy for less; ``report`` counts it in ``bits_per_weight`` and the bytes.

    **No layer matched** raises ``ValueError``: quantizing nothing is almost always a wrong
    ``include`` or ``module_types``, and a silent no-op would hide it.

    **Shared modules.** A module reachable under several names (weight tying by module
    reuse) is quantized once, reported under its first name, and replaced under every name.
    Parameters shared between distinct modules are quantized separately.

    **Mixed precision.** Call :func:`quantize_model` once per setting with disjoint
    ``include``; quantized layers are never chosen again, and the reports add up with ``+``.

    **Saving and loading.** ``torch.save(model)`` pickles the quantized model (load it with
    ``torch.load(path, weights_only=False)``). Its ``state_dict`` holds tensors only:
    ``<layer>.packed_weight`` (uint8), ``<layer>.codebook``, ``<layer>.bias`` and
    ``<layer>._extra_state`` (format version and group size); it loads into a model
    quantized by this function with any quantizer (the codebook size and grouping are taken
    from the checkpoint), or, without fitting anything, into a float model of the same
    architecture with :func:`load_quantized_state_dict`.

    Examples
    --------
    >>> import torch
    >>> from skvq import L0LeastSquareQuantizer
    >>> from skvq.nn import quantize_model
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.ReLU(),
    ...                             torch.nn.Linear(64, 10))
    >>> quantizer = L0LeastSquareQuantizer(n_values=16, weighting="count")
    >>> qmodel, report = quantize_model(model, quantizer)
    >>> qmodel[0]  # doctest: +NORMALIZE_WHITESPACE
    QuantizedLinear(in_features=256, out_features=64, bias=True, granularity=channel,
                    n_groups=64, n_values=16, n_bits=4)
    >>> report.names, [r.n_bits for r in report]
    (['0', '2'], [4, 4])
    >>> round(report.summary()["bits_per_weight"], 3)  # 4-bit codes + float32 codebooks
    6.226
    >>> x = torch.randn(5, 256)
    >>> bool(torch.allclose(qmodel(x), model(x), atol=0.1))
    True

    One codebook per 8 output channels, stored in float16, costs less:

    >>> _, report = quantize_model(model, quantizer, granularity="group", group_size=8,
    ...                            codebook_dtype=torch.float16)
    >>> round(report.summary()["bits_per_weight"], 3)
    4.15
    >>> print(report)  # doctest: +SKIP
    name  type    shape   granularity  groups  values  bits/w  rel. MSE   KiB before  ...
    0     Linear  64x256  group        8       16      4.125   3.744e-03  64.2        ...
    2     Linear  10x64   group        2       16      4.800   3.344e-03  2.5         ...
    Total: 2 layers, 17024 weights, 66.8 KiB -> 8.9 KiB (7.49x), 4.150 bits/weight, ...
    """
    _check_quantizer(quantizer)
    layer_group_size = _check_granularity(granularity, group_size)
    if not (isinstance(codebook_dtype, torch.dtype) and codebook_dtype.is_floating_point):
        raise TypeError(f"codebook_dtype must be a floating torch.dtype, got "
                        f"{codebook_dtype!r}.")
    _check_module_types(module_types)  # before copying a model only to fail
    if not inplace:
        model = copy.deepcopy(model)
    chosen = _select_modules(model, module_types, include, exclude)
    if not chosen:
        candidates = [n for n, m in model.named_modules() if _quantized_type(m)[0]]
        raise ValueError(
            f"No layer of model matched module_types={_check_module_types(module_types)}, "
            f"include={include!r}, exclude={exclude!r}. Layers that could be quantized: "
            f"{candidates[:20]}{' ...' if len(candidates) > 20 else ''}.")
    importance = _check_importance(importance, chosen)
    for name, module, _ in chosen:
        if not bool(torch.isfinite(module.weight.detach()).all()):
            raise ValueError(f"The weight of layer {name!r} ({type(module).__name__}) "
                             "contains NaN or infinity.")
        if type(module).forward is not _quantized_type(module)[0].forward:
            warnings.warn(f"Layer {name!r} is a {type(module).__name__}, which overrides "
                          f"forward; its quantized replacement runs the forward of "
                          f"{_quantized_type(module)[0].__name__}.", UserWarning, stacklevel=2)

    records = []
    replacements = []
    for name, module, all_names in chosen:
        layer, record = _quantize_layer(name, module, quantizer, layer_group_size,
                                        importance.get(name), codebook_dtype, cache)
        records.append(record)
        replacements.append((all_names, layer))
    for all_names, layer in replacements:
        for name in all_names:
            if name == "":
                model = layer
            else:
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, layer)
    return model, QuantizationReport(records)


def _quantize_layer(name, module, quantizer, group_size, importance, codebook_dtype, cache):
    weight = module.weight.detach()
    fit_dtype = np.float64 if weight.dtype == torch.float64 else np.float32
    W = weight.to("cpu", torch.float64).numpy().astype(fit_dtype)
    X = _weight_matrix(module, W)
    fit_kwargs = {}
    if importance is not None:
        fit_kwargs["importance"] = _weight_matrix(module, importance)
    estimator = clone(quantizer).set_params(group_size=group_size)
    start = time.perf_counter()
    try:
        codes = estimator.fit(X, **fit_kwargs).transform(X)
    except ValueError as exc:  # say which of a model's many layers failed
        raise ValueError(f"Layer {name!r} ({type(module).__name__}): {exc}") from exc
    fit_time = time.perf_counter() - start
    if estimator.n_values_ > 2**_MAX_BITS:
        raise ValueError(f"Layer {name!r}: the quantizer fitted {estimator.n_values_} values; "
                         f"codes are at most {_MAX_BITS} bits ({2**_MAX_BITS} values). Set "
                         "n_values.")
    # One row per group; the columns past n_values_ (if any) only repeat each row's largest
    # value, and no code points at them.
    codebook = np.asarray(estimator.codebook_).reshape(estimator.n_groups_, -1)
    codebook = codebook[:, :estimator.n_values_]
    codes = _codes_to_weight_layout(module, codes, W.shape)
    _, quantized_type = _quantized_type(module)
    layer = quantized_type.from_codes(module, codes, torch.from_numpy(codebook),
                                      group_size, cache=cache,
                                      codebook_dtype=codebook_dtype)

    decoded = layer._decode().detach().to("cpu", torch.float64).numpy()
    reference = weight.to("cpu", torch.float64).numpy()
    mse = float(np.mean((decoded - reference) ** 2))
    power = float(np.mean(reference ** 2))
    bias = getattr(module, "bias", None)
    weight_bytes = _tensor_bytes(layer.packed_weight) + _tensor_bytes(layer.codebook)
    record = LayerReport(
        name=name, module_type=type(module).__name__, shape=tuple(weight.shape),
        granularity=layer.granularity, group_size=group_size, n_groups=layer.n_groups,
        n_values=layer.n_values, n_bits=layer.n_bits, n_weights=weight.numel(),
        bits_per_weight=8.0 * weight_bytes / weight.numel(), weight_mse=mse,
        relative_mse=mse / power if power else (0.0 if mse == 0 else float("inf")),
        weight_rms=math.sqrt(power),
        bytes_before=_tensor_bytes(weight) + _tensor_bytes(bias),
        bytes_after=weight_bytes + _tensor_bytes(bias), fit_time_s=fit_time)
    return layer, record


# ---------------------------------------------------------------------------------------------
# Reloading
# ---------------------------------------------------------------------------------------------
def load_quantized_state_dict(model, state_dict, *, strict=True, cache=False, inplace=False):
    """Load a quantized model's ``state_dict`` into a float model of the same architecture.

    Every supported layer of ``model`` whose name has a ``packed_weight`` entry in
    ``state_dict`` is replaced by an empty quantized layer shaped from the checkpoint
    (codebook size, grouping and dtype), then ``model.load_state_dict(state_dict)`` fills
    every tensor. Nothing is fitted, so this is the fast way to reload a saved quantized
    model (``torch.save(qmodel.state_dict(), path)``).

    Parameters
    ----------
    model : torch.nn.Module
        A float model of the architecture that was quantized (its weights are ignored for
        the quantized layers and overwritten for the others).
    state_dict : dict
        The quantized model's ``state_dict()`` (``torch.load(path, weights_only=True)``
        reads it).
    strict : bool, default=True
        Passed to ``load_state_dict``.
    cache : bool, default=False
        ``cache`` of the quantized layers.
    inplace : bool, default=False
        Modify ``model`` itself rather than a deep copy.

    Returns
    -------
    model : torch.nn.Module
        The quantized model.

    Examples
    --------
    >>> import io, torch
    >>> from skvq import L0LeastSquareQuantizer
    >>> from skvq.nn import load_quantized_state_dict, quantize_model
    >>> def build():
    ...     return torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Linear(8, 2))
    >>> qmodel, _ = quantize_model(build(), L0LeastSquareQuantizer(4, weighting="count"))
    >>> buffer = io.BytesIO()
    >>> torch.save(qmodel.state_dict(), buffer)
    >>> _ = buffer.seek(0)
    >>> reloaded = load_quantized_state_dict(build(), torch.load(buffer, weights_only=True))
    >>> x = torch.randn(3, 16)
    >>> torch.equal(reloaded(x), qmodel(x))
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not inplace:
        model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        if prefix + "packed_weight" not in state_dict:
            continue
        float_type, quantized_type = _quantized_type(module)
        if float_type is None:
            if isinstance(module, _QuantizedLayer):
                continue
            raise ValueError(f"state_dict quantizes {name!r}, which is a "
                             f"{type(module).__name__}; supported: {_supported_names()}.")
        codebook = state_dict[prefix + "codebook"]
        extra = state_dict.get(prefix + "_extra_state")
        group_size = None
        if extra is not None:
            group_size = quantized_type._parse_extra_state(extra, prefix)
        layer = quantized_type._like(module, n_values=int(codebook.shape[-1]),
                                     group_size=group_size, cache=cache,
                                     codebook_dtype=codebook.dtype)
        layer = layer.to(module.weight.device)
        if name == "":
            model = layer
        else:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
    model.load_state_dict(state_dict, strict=strict)
    return model


# ---------------------------------------------------------------------------------------------
# Fisher information
# ---------------------------------------------------------------------------------------------
def fisher_importance(model, loss_fn, batches, *, module_types=(nn.Linear,), include=None,
                      exclude=None, reduction="mean"):
    """Diagonal empirical Fisher information of the weights of chosen layers.

    For each batch, the gradient of ``loss_fn(model, batch)`` with respect to each chosen
    weight is squared entry by entry; the squares are summed or averaged over the batches.
    This is SqueezeLLM's sensitivity (the diagonal of the empirical Fisher), ready for
    ``quantize_model(..., importance=...)``.

    Parameters
    ----------
    model : torch.nn.Module
        The float model; its mode (``train``/``eval``) is left as it is: call
        ``model.eval()`` first so that dropout does not make the gradients random.
    loss_fn : callable
        ``loss_fn(model, batch) -> scalar tensor``: runs the model on one batch and returns
        its loss. For example ``lambda m, b: F.cross_entropy(m(b[0]), b[1])`` for batches
        ``(inputs, targets)``, or ``lambda m, b: m(**b).loss`` for a transformers model.
    batches : iterable
        The batches, each passed to ``loss_fn`` as it is. With batches of one sample, the
        result is the empirical Fisher of the samples (the squared per-sample gradients);
        with larger batches, that of the batch-mean losses.
    module_types, include, exclude
        Which layers, as in :func:`quantize_model`.
    reduction : {"mean", "sum"}, default="mean"
        Average or sum the squared gradients over the batches (a scale factor, which does
        not change the codebooks :func:`quantize_model` fits).

    Returns
    -------
    importance : dict of str to torch.Tensor
        Layer name -> float32 tensor of its weight's shape, on the weight's device.

    Notes
    -----
    Gradients are taken with ``torch.autograd.grad`` for the chosen weights only: the
    ``.grad`` of the model's parameters is left untouched, and weights with
    ``requires_grad=False`` get a gradient here all the same.

    References
    ----------
    S. Kim et al., "SqueezeLLM: Dense-and-Sparse Quantization", ICML 2024, eq. 4.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from skvq.nn import fisher_importance
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(),
    ...                             torch.nn.Linear(3, 2))
    >>> batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    >>> fisher = fisher_importance(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]),
    ...                            batches)
    >>> {name: tuple(f.shape) for name, f in fisher.items()}
    {'0': (3, 4), '2': (2, 3)}
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be a callable loss_fn(model, batch) -> scalar loss.")
    chosen = _select_modules(model, module_types, include, exclude)
    if not chosen:
        raise ValueError(f"No layer of model matched module_types={module_types}, "
                         f"include={include!r}, exclude={exclude!r}.")
    weights = [module.weight for _, module, _ in chosen]
    flags = [w.requires_grad for w in weights]
    totals = [torch.zeros(w.shape, dtype=torch.float32, device=w.device) for w in weights]
    n_batches = 0
    try:
        for w in weights:
            w.requires_grad_(True)
        for batch in batches:
            loss = loss_fn(model, batch)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError("loss_fn must return a scalar tensor, got "
                                 f"{type(loss).__name__} of shape "
                                 f"{getattr(loss, 'shape', None)}.")
            grads = torch.autograd.grad(loss.reshape(()), weights, allow_unused=True)
            for total, grad in zip(totals, grads):
                if grad is not None:
                    total.add_(grad.detach().float() ** 2)
            n_batches += 1
    finally:
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
    if n_batches == 0:
        raise ValueError("batches is empty.")
    if reduction == "mean":
        for total in totals:
            total.div_(n_batches)
    return {name: total for (name, _, _), total in zip(chosen, totals)}
