"""The interface every quantization bottleneck (SCQ and the VQ baselines) shares.

A bottleneck is a ``torch.nn.Module`` that maps encoder outputs ``z`` to quantized vectors.
``z`` is either ``(..., d)`` (vectors in the last axis) or, for image feature maps,
``(N, d, H, W)`` (channels first, as torch's convolutions give them); the 4-D form is used
when ``image_fmap`` is true (vector-quantize-pytorch's ``accept_image_fmap``).

:class:`Bottleneck` does the reshaping, the input checks and the usage statistics in one
place, and says what an estimator needs to know about a bottleneck without testing its type:
how many stages its codes have (``n_stages``, ``stage_codes``, ``code_shape``), whether it
has weights over one codebook (``has_codebook_weights``, ``flat_weights``), and how to move
weights between the flat ``(M, K)`` layout and the input's layout (``weights_to_flat``,
``weights_from_flat``). A subclass implements ``_quantize_flat(z)`` on a ``(M, d)`` matrix
and, when its codewords are not the ``codebook`` parameter, ``codebook_vectors()``.

:func:`check_param` validates the constructor parameters of every bottleneck, and
:func:`check_parameter_memory` refuses layers whose parameters cannot reasonably be
allocated, so that a typo such as ``codebook_size=10**9`` fails at once with a message.

This module imports torch: import it only from code that already needs torch.
"""

import math
import numbers
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import nn

__all__ = ["MAX_PARAMETER_BYTES", "Bottleneck", "BottleneckOutput", "FlatQuantization",
           "InvalidParameterError", "check_param", "check_parameter_memory"]

# Parameters of one layer or network beyond this many bytes (2**30 float32 values, the
# neural estimators' limit too) are refused before they are allocated. The largest
# codebooks in use (2**18 codewords of 256 floats) hold 0.27 GB, and training holds several
# times the parameters (gradients, optimizer state): a request beyond 4 GiB is almost always
# a wrong argument (10**9 where 10**3 was meant), which would otherwise stall the machine for
# minutes before torch gives up. Code that really needs larger layers can raise it.
MAX_PARAMETER_BYTES = 2**32


class InvalidParameterError(ValueError, TypeError):
    """A constructor parameter of a bottleneck has the wrong type or value.

    Both a ``ValueError`` and a ``TypeError``, as scikit-learn's own
    ``InvalidParameterError``: callers may catch either.
    """


_INTERVAL = {"both": "[]", "left": "[)", "right": "(]", "neither": "()"}


def _interval_text(low, high, closed):
    left, right = _INTERVAL[closed]
    if high is None:
        return f"{'>=' if left == '[' else '>'} {low:g}"
    if low is None:
        return f"{'<=' if right == ']' else '<'} {high:g}"
    return f"in {left}{low:g}, {high:g}{right}"


def check_param(name, value, kind, *, low=None, high=None, closed="both", options=None,
                allow_none=False):
    """Validate one constructor parameter and return it converted (``int``, ``float``, ...).

    Parameters
    ----------
    name : str
        The parameter's name, quoted in the error message.
    value : object
        The value given.
    kind : {"int", "real", "bool", "option"}
        ``"int"``: an integer (Python or NumPy; not a bool, not a float, not a string);
        ``"real"``: a finite real number (ints accepted); ``"bool"``: ``True`` or ``False``;
        ``"option"``: one of ``options``.
    low, high : float or None
        Bounds of ``"int"`` and ``"real"`` values.
    closed : {"both", "left", "right", "neither"}, default="both"
        Which bounds are included.
    options : tuple or None
        The allowed values of an ``"option"``.
    allow_none : bool, default=False
        ``None`` is allowed (and returned as is).

    Returns
    -------
    value : int, float, bool, object or None

    Raises
    ------
    InvalidParameterError
        A ``ValueError`` and ``TypeError`` whose message names the parameter, says what was
        expected and what was given.
    """
    if value is None and allow_none:
        return None
    none_text = " or None" if allow_none else ""
    if kind == "option":
        if not any(isinstance(value, type(opt)) and value == opt for opt in options):
            raise InvalidParameterError(
                f"{name} must be one of {', '.join(repr(o) for o in options)}{none_text}, "
                f"got {value!r}.")
        return value
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise InvalidParameterError(
                f"{name} must be a bool{none_text}, got {value!r} ({type(value).__name__}).")
        return bool(value)
    if kind == "int":
        ok_type = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        what = "an int"
    elif kind == "real":
        ok_type = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        what = "a real number"
    else:  # pragma: no cover - a programming error
        raise ValueError(f"unknown kind {kind!r}")
    if low is not None or high is not None:
        what += f" {_interval_text(low, high, closed)}"
    if not ok_type:
        raise InvalidParameterError(
            f"{name} must be {what}{none_text}, got {value!r} ({type(value).__name__}).")
    value = int(value) if kind == "int" else float(value)
    low_ok = low is None or (value >= low if closed in ("both", "left") else value > low)
    high_ok = high is None or (value <= high if closed in ("both", "right") else value < high)
    if not (math.isfinite(value) and low_ok and high_ok):
        raise InvalidParameterError(f"{name} must be {what}{none_text}, got {value!r}.")
    return value


def _gb(n_bytes):
    return f"{n_bytes / 1e9:.3g} GB"


def check_parameter_memory(n_values, owner, detail, bytes_per_value=4):
    """Refuse a layer whose parameters would exceed :data:`MAX_PARAMETER_BYTES`.

    Parameters
    ----------
    n_values : int
        Number of parameter entries the layer (or network) would allocate.
    owner : str
        The layer's or estimator's name, for the message.
    detail : str
        The size parameters that give ``n_values`` (``"codebook_size=..., dim=..."``).
    bytes_per_value : int, default=4
        float32 parameters.

    Raises
    ------
    ValueError
        With the estimate and the limit, before anything is allocated.
    """
    n_bytes = int(n_values) * int(bytes_per_value)
    if n_bytes > MAX_PARAMETER_BYTES:
        raise ValueError(
            f"{owner} with {detail} would hold {int(n_values):.3g} parameters "
            f"({_gb(n_bytes)} in float32), above the limit of {_gb(MAX_PARAMETER_BYTES)} "
            "for one layer or network; check the size parameters (the limit is "
            "skvq.neural.layers._bottleneck.MAX_PARAMETER_BYTES).")


class FlatQuantization(NamedTuple):
    """What ``_quantize_flat`` returns for a ``(M, d)`` input."""

    quantized: torch.Tensor  # (M, d); gradients reach z (and the codebook where they should)
    codes: torch.Tensor  # (M,) int64 (or (M, n_stages)): nearest codeword / argmax of weights
    weights: Optional[torch.Tensor]  # (M, K) soft weights (SCQ's P, Gumbel's softmax) or None
    loss: torch.Tensor  # scalar: the bottleneck's own training term (commitment, codebook, ...)


class BottleneckOutput(NamedTuple):
    """What every bottleneck's ``forward`` returns.

    Attributes
    ----------
    quantized : Tensor
        Same shape as the input ``z``. In evaluation mode (``module.eval()``) the exact
        codeword (or convex combination) of every vector; in training mode the hard
        quantizers return it through the straight-through estimator, ``z + sg[z_q - z]``,
        equal to it up to rounding.
    codes : Tensor of int64
        ``z``'s shape without the vector axis: ``(...,)`` or ``(N, H, W)``; bottlenecks with
        several stages (``n_stages > 1``, residual VQ) add a trailing stage axis.
    weights : Tensor or None
        Soft weights with the vector axis replaced by ``K``, in the same layout as the input
        (``(..., K)`` or ``(N, K, H, W)``); ``None`` for hard quantizers.
    loss : Tensor
        Scalar training term of the bottleneck, to be added to the reconstruction loss.
    quantization_error : Tensor
        Scalar, mean over vectors of ``||z - quantized||^2 / d`` (detached).
    perplexity : Tensor
        Scalar, ``exp(entropy)`` of the batch's code histogram (detached); the mean over
        stages, each against its own ``K`` codewords, for several stages.
    usage : Tensor
        Scalar, fraction of the ``K`` codewords used by at least one vector of the batch
        (mean over stages).
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    weights: Optional[torch.Tensor]
    loss: torch.Tensor
    quantization_error: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor


class Bottleneck(nn.Module):
    """Base class of quantization bottlenecks: reshaping, checks, statistics, decoding.

    Parameters
    ----------
    dim : int
        Vector length ``d``.
    codebook_size : int
        Number of codewords ``K`` (per stage).
    image_fmap : bool, default=False
        Inputs are ``(N, d, H, W)`` feature maps instead of ``(..., d)``.
    n_codebooks : int, default=1
        Codebooks of ``K x d`` values the subclass allocates (residual VQ: one per stage),
        for the check of the parameters' memory (:func:`check_parameter_memory`).

    Notes
    -----
    ``forward`` checks its input before quantizing: a floating-point tensor of the layer's
    dtype and device, at least one vector of length ``dim``, finite, and small enough that
    squared distances do not overflow the dtype (``|z| <= sqrt(finfo.max / (4 d))``, about
    ``1.15e18`` for float32 at ``d = 64``); each failure raises a ``TypeError`` or
    ``ValueError`` that says what was expected.
    """

    def __init__(self, dim, codebook_size, image_fmap=False, n_codebooks=1):
        super().__init__()
        self.dim = check_param("dim", dim, "int", low=1)
        self.codebook_size = check_param("codebook_size", codebook_size, "int", low=1)
        self.image_fmap = check_param("image_fmap", image_fmap, "bool")
        check_parameter_memory(
            self.codebook_size * self.dim * n_codebooks, type(self).__name__,
            f"codebook_size={self.codebook_size}, dim={self.dim}"
            + (f" and {n_codebooks} codebooks" if n_codebooks > 1 else ""))

    # -- to implement ------------------------------------------------------------------
    def _quantize_flat(self, z):  # pragma: no cover - abstract
        raise NotImplementedError

    def codebook_vectors(self):
        """The ``(K, d)`` codewords used to decode hard codes and soft weights.

        The ``codebook`` parameter by default; bottlenecks that derive their codewords
        (affine VQ) or have several codebooks (residual VQ) override it.
        """
        return self.codebook

    def _uniform_codebook(self):
        """A ``(K, d)`` parameter uniform in ``[-1/K, 1/K]`` (VQ-VAE's reference start)."""
        k = self.codebook_size
        return nn.Parameter(torch.empty(k, self.dim).uniform_(-1.0 / k, 1.0 / k))

    # -- what the bottleneck can do --------------------------------------------------------
    @property
    def n_codes(self):
        """Number of values each entry of ``codes`` takes (``codebook_size``)."""
        return self.codebook_size

    @property
    def n_stages(self):
        """Codes per vector: 1, or the number of stages of a multi-stage quantizer."""
        return 1

    @property
    def has_codebook_weights(self):
        """Whether a vector's quantization is a weighting of one codebook's ``K`` codewords
        (soft weights, or the one-hot rows of the codes), which :meth:`decode_weights`
        decodes. False for multi-stage quantizers."""
        return self.n_stages == 1

    def code_shape(self, lead):
        """Shape of the codes of vectors laid out as ``lead`` (``z``'s shape without the
        vector axis): ``lead``, plus a trailing stage axis when ``n_stages > 1``."""
        lead = tuple(lead)
        return lead if self.n_stages == 1 else (*lead, self.n_stages)

    def stage_codes(self, codes):
        """The codes of each stage: a list of ``n_stages`` tensors of the vectors' layout."""
        return [codes] if self.n_stages == 1 else list(codes.unbind(-1))

    def weights_to_flat(self, weights):
        """Soft weights in the input layout (``(..., K)`` or ``(N, K, H, W)``) as ``(M, K)``
        rows, in the order of ``codes`` flattened."""
        if self.image_fmap:
            return weights.permute(0, 2, 3, 1).reshape(-1, weights.shape[1])
        return weights.reshape(-1, weights.shape[-1])

    def weights_from_flat(self, flat, lead):
        """``(M, K)`` rows of weights in the input layout of vectors laid out as ``lead``."""
        return self._from_flat(flat, tuple(lead))

    def flat_weights(self, output):
        """``(M, K)`` weights of a forward pass: its soft weights, or the one-hot rows of its
        hard codes for hard quantizers.

        Raises
        ------
        ValueError
            For a bottleneck without weights over one codebook (``has_codebook_weights``).
        """
        self._require_codebook_weights()
        if output.weights is not None:
            return self.weights_to_flat(output.weights)
        return nn.functional.one_hot(output.codes.reshape(-1), self.codebook_size)

    def _require_codebook_weights(self):
        if not self.has_codebook_weights:
            raise ValueError(
                f"{type(self).__name__} has {self.n_stages} codebooks (stages), so no weights "
                "over one codebook; use its codes (decode_codes).")

    # -- shared --------------------------------------------------------------------------
    def _parameter_dtype_device(self):
        for param in self.parameters():
            if param.is_floating_point():
                return param.dtype, param.device
        return None, None

    def _check_input(self, z):
        """Type, dtype, device and shape of ``z`` (the vector axis not yet moved)."""
        name = type(self).__name__
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"{name} expects a torch.Tensor, got {type(z).__name__}.")
        if not torch.is_floating_point(z):
            raise TypeError(f"{name} expects floating-point input, got {z.dtype}.")
        dtype, device = self._parameter_dtype_device()
        if dtype is not None and z.dtype != dtype:
            raise TypeError(f"{name}: input dtype {z.dtype} differs from the layer's {dtype}; "
                            "convert one of them (e.g. layer.double() or z.float()).")
        if device is not None and z.device != device:
            raise ValueError(f"{name}: input on {z.device}, the layer's parameters on "
                             f"{device}; move one of them (layer.to(z.device)).")
        if self.image_fmap:
            if z.ndim != 4:
                raise ValueError(f"{name} with image_fmap=True expects (N, d, H, W) input "
                                 f"with d=dim={self.dim}, got shape {tuple(z.shape)}.")
            d = z.shape[1]
        else:
            if z.ndim == 0:
                raise ValueError(f"{name} expects input of shape (..., dim={self.dim}), got a "
                                 "0-d tensor.")
            d = z.shape[-1]
        if d != self.dim:
            axis = "channels (axis 1)" if self.image_fmap else "the last axis"
            raise ValueError(f"{name} expected vectors of length dim={self.dim} in {axis}, "
                             f"got shape {tuple(z.shape)}.")
        if z.numel() == 0:
            raise ValueError(f"{name} received an empty batch (0 vectors), shape "
                             f"{tuple(z.shape)}.")

    def _check_values(self, flat):
        """Finite values whose squared distances do not overflow the dtype."""
        name = type(self).__name__
        with torch.no_grad():
            amax = float(flat.detach().abs().amax())  # NaN or inf propagate
        if not math.isfinite(amax):
            raise ValueError(f"{name} input contains NaN or infinity.")
        finfo = torch.finfo(flat.dtype)
        limit = math.sqrt(finfo.max / (4.0 * self.dim))
        if amax > limit:
            raise ValueError(
                f"{name} input has values up to {amax:.3g}: they overflow {flat.dtype} in "
                f"squared distances (above {finfo.max:.3g}); values must stay below "
                f"{limit:.3g} in absolute value at dim={self.dim}. Scale the input down, or "
                "compute in float64 (layer.double() and a float64 input).")

    def _to_flat(self, z):
        self._check_input(z)
        if self.image_fmap:
            n, d, h, w = z.shape
            flat = z.permute(0, 2, 3, 1).reshape(-1, d)
            lead = (n, h, w)
        else:
            flat = z.reshape(-1, z.shape[-1])
            lead = tuple(z.shape[:-1])
        self._check_values(flat)
        return flat, lead

    def _from_flat(self, flat, lead):
        last = flat.shape[-1]
        out = flat.reshape(*lead, last)
        if self.image_fmap:
            out = out.permute(0, 3, 1, 2)
        return out

    def _code_statistics(self, codes, dtype):
        """Perplexity and usage of ``(M,)`` or ``(M, n_stages)`` codes, averaged over stages;
        each stage is counted against its own ``K`` codewords (``O(K)`` memory a stage)."""
        perplexities, usages = [], []
        for stage in self.stage_codes(codes):
            counts = torch.bincount(stage.reshape(-1), minlength=self.codebook_size)
            probs = counts.to(dtype) / max(stage.numel(), 1)
            entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
            perplexities.append(entropy.exp())
            usages.append((counts > 0).to(dtype).mean())
        if len(perplexities) == 1:
            return perplexities[0], usages[0]
        return torch.stack(perplexities).mean(), torch.stack(usages).mean()

    def forward(self, z, mask=None):
        """Quantize ``z``.

        Parameters
        ----------
        z : Tensor
            ``(..., d)`` vectors, or ``(N, d, H, W)`` feature maps with ``image_fmap=True``.
        mask : bool Tensor or None, default=None
            ``z``'s layout without the vector axis (``(...)`` or ``(N, H, W)``), ``False`` at
            padded positions (vector-quantize-pytorch's ``mask``). Only the unmasked vectors
            are quantized: they alone make the loss, the statistics and any codebook update
            (EMA, dead codes, k-means start); masked positions get ``quantized`` 0 (no
            gradient), code -1 in every stage and soft weights 0. Every bottleneck takes it.

        Returns
        -------
        BottleneckOutput
        """
        flat, lead = self._to_flat(z)
        keep = None if mask is None else self._check_mask(mask, lead, z.device)
        rows = flat if keep is None else flat[keep]
        result = self._quantize_flat(rows)
        with torch.no_grad():
            err = (rows.detach() - result.quantized.detach()).pow(2).mean()
            perplexity, usage = self._code_statistics(result.codes, flat.dtype)
        quantized, codes, weights = result.quantized, result.codes, result.weights
        if keep is not None:
            index = (keep.nonzero().squeeze(1),)
            quantized = flat.new_zeros(flat.shape).index_put(index, quantized)
            codes = codes.new_full((flat.shape[0], *codes.shape[1:]), -1).index_put(index, codes)
            if weights is not None:
                weights = weights.new_zeros((flat.shape[0], weights.shape[1])).index_put(
                    index, weights)
        return BottleneckOutput(
            quantized=self._from_flat(quantized, lead),
            codes=codes.reshape(self.code_shape(lead)),
            weights=None if weights is None else self._from_flat(weights, lead),
            loss=result.loss,
            quantization_error=err,
            perplexity=perplexity,
            usage=usage,
        )

    def _check_mask(self, mask, lead, device):
        """The flat ``(M,)`` mask of ``forward(z, mask)``, checked."""
        name = type(self).__name__
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"{name}: mask must be a bool tensor (False at padded positions), "
                            f"got {getattr(mask, 'dtype', type(mask).__name__)}.")
        if tuple(mask.shape) != tuple(lead):
            raise ValueError(f"{name}: mask must have the shape of the vectors' layout "
                             f"{tuple(lead)} (the input's shape without the vector axis), got "
                             f"{tuple(mask.shape)}.")
        if mask.device != device:
            raise ValueError(f"{name}: mask on {mask.device}, input on {device}.")
        keep = mask.reshape(-1)
        if not bool(keep.any()):
            raise ValueError(f"{name}: mask selects no vector (every position is padding).")
        return keep

    def _check_codes(self, codes):
        if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex():
            raise TypeError(f"codes must be an integer tensor, got "
                            f"{getattr(codes, 'dtype', type(codes).__name__)}.")
        if self.n_stages > 1 and (codes.ndim == 0 or codes.shape[-1] != self.n_stages):
            raise ValueError(f"codes of {type(self).__name__} need a trailing stage axis of "
                             f"length n_stages={self.n_stages}, got shape {tuple(codes.shape)}.")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must be in [0, {self.codebook_size - 1}], got values in "
                             f"[{int(codes.min())}, {int(codes.max())}].")

    def decode_codes(self, codes):
        """Codewords of hard ``codes`` (the shape ``forward`` gives them), in the input layout."""
        self._check_codes(codes)
        vectors = self.codebook_vectors()[codes.reshape(-1).long()]
        return self._from_flat(vectors, tuple(codes.shape))

    def decode_weights(self, weights):
        """Convex/soft combinations ``weights @ codebook`` in the input layout."""
        self._require_codebook_weights()
        if self.image_fmap:
            lead = (weights.shape[0], *weights.shape[2:])
        else:
            lead = tuple(weights.shape[:-1])
        return self._from_flat(self.weights_to_flat(weights) @ self.codebook_vectors(), lead)
