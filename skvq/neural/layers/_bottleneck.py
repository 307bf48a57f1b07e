"""The interface every quantization bottleneck (SCQ and the VQ baselines) shares.

A bottleneck is a ``torch.nn.Module`` that maps encoder outputs ``z`` to quantized vectors.
``z`` is either ``(..., d)`` (vectors in the last axis) or, for image feature maps,
``(N, d, H, W)`` (channels first, as torch's convolutions give them); the 4-D form is used
when ``image_fmap`` is true (vector-quantize-pytorch's ``accept_image_fmap``).

:class:`Bottleneck` does the reshaping and the usage statistics in one place; a subclass
implements ``_quantize_flat(z)`` on a ``(M, d)`` matrix and ``codebook_vectors()``.

This module imports torch: import it only from code that already needs torch.
"""

from typing import NamedTuple, Optional

import torch
from torch import nn

__all__ = ["Bottleneck", "BottleneckOutput", "FlatQuantization"]


class FlatQuantization(NamedTuple):
    """What ``_quantize_flat`` returns for a ``(M, d)`` input."""

    quantized: torch.Tensor  # (M, d); gradients reach z (and the codebook where they should)
    codes: torch.Tensor  # (M,) int64, the hard code (nearest codeword / argmax of the weights)
    weights: Optional[torch.Tensor]  # (M, K) soft weights (SCQ's P, Gumbel's softmax) or None
    loss: torch.Tensor  # scalar: the bottleneck's own training term (commitment, codebook, ...)


class BottleneckOutput(NamedTuple):
    """What every bottleneck's ``forward`` returns.

    Attributes
    ----------
    quantized : Tensor
        Same shape as the input ``z``.
    codes : Tensor of int64
        ``z``'s shape without the vector axis: ``(...,)`` or ``(N, H, W)``.
    weights : Tensor or None
        Soft weights with the vector axis replaced by ``K``, in the same layout as the input
        (``(..., K)`` or ``(N, K, H, W)``); ``None`` for hard quantizers.
    loss : Tensor
        Scalar training term of the bottleneck, to be added to the reconstruction loss.
    quantization_error : Tensor
        Scalar, mean over vectors of ``||z - quantized||^2 / d`` (detached).
    perplexity : Tensor
        Scalar, ``exp(entropy)`` of the batch's code histogram (detached).
    usage : Tensor
        Scalar, fraction of the ``K`` codewords used by at least one vector of the batch.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    weights: Optional[torch.Tensor]
    loss: torch.Tensor
    quantization_error: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor


class Bottleneck(nn.Module):
    """Base class of quantization bottlenecks: reshaping, statistics, decoding of codes.

    Parameters
    ----------
    dim : int
        Vector length ``d``.
    codebook_size : int
        Number of codewords ``K``.
    image_fmap : bool, default=False
        Inputs are ``(N, d, H, W)`` feature maps instead of ``(..., d)``.
    """

    def __init__(self, dim, codebook_size, image_fmap=False):
        super().__init__()
        if int(dim) < 1 or int(codebook_size) < 1:
            raise ValueError(
                f"dim and codebook_size must be positive, got dim={dim}, "
                f"codebook_size={codebook_size}."
            )
        self.dim = int(dim)
        self.codebook_size = int(codebook_size)
        self.image_fmap = bool(image_fmap)

    # -- to implement ------------------------------------------------------------------
    def _quantize_flat(self, z):  # pragma: no cover - abstract
        raise NotImplementedError

    def codebook_vectors(self):
        """The ``(K, d)`` codewords used to decode hard codes and soft weights.

        The ``codebook`` parameter by default; bottlenecks that derive their codewords
        (affine VQ) or have several codebooks (residual VQ) override it.
        """
        return self.codebook

    @property
    def n_codes(self):
        """Number of distinct hard codes (``codebook_size``; residual VQ overrides it)."""
        return self.codebook_size

    def _uniform_codebook(self):
        """A ``(K, d)`` parameter uniform in ``[-1/K, 1/K]`` (VQ-VAE's reference start)."""
        k = self.codebook_size
        return nn.Parameter(torch.empty(k, self.dim).uniform_(-1.0 / k, 1.0 / k))

    # -- shared --------------------------------------------------------------------------
    def _to_flat(self, z):
        if self.image_fmap:
            if z.ndim != 4:
                raise ValueError(f"image_fmap=True expects (N, d, H, W) input, got {tuple(z.shape)}.")
            n, d, h, w = z.shape
            flat = z.permute(0, 2, 3, 1).reshape(-1, d)
            lead = (n, h, w)
        else:
            d = z.shape[-1]
            flat = z.reshape(-1, d)
            lead = tuple(z.shape[:-1])
        if d != self.dim:
            raise ValueError(f"expected vectors of length dim={self.dim}, got {d}.")
        return flat, lead

    def _from_flat(self, flat, lead):
        last = flat.shape[-1]
        out = flat.reshape(*lead, last)
        if self.image_fmap:
            out = out.permute(0, 3, 1, 2)
        return out

    def forward(self, z):
        flat, lead = self._to_flat(z)
        result = self._quantize_flat(flat)
        with torch.no_grad():
            err = (flat.detach() - result.quantized.detach()).pow(2).mean()
            counts = torch.bincount(result.codes.reshape(-1), minlength=self.codebook_size)
            probs = counts.to(flat.dtype) / max(result.codes.numel(), 1)
            entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
            perplexity = entropy.exp()
            usage = (counts > 0).to(flat.dtype).mean()
        weights = None if result.weights is None else self._from_flat(result.weights, lead)
        return BottleneckOutput(
            quantized=self._from_flat(result.quantized, lead),
            codes=result.codes.reshape(lead),
            weights=weights,
            loss=result.loss,
            quantization_error=err,
            perplexity=perplexity,
            usage=usage,
        )

    def decode_codes(self, codes):
        """Codewords of hard ``codes`` (any shape), in the input layout."""
        vectors = self.codebook_vectors()[codes.reshape(-1).long()]
        return self._from_flat(vectors, tuple(codes.shape))

    def decode_weights(self, weights):
        """Convex/soft combinations ``weights @ codebook`` in the input layout."""
        if self.image_fmap:
            n, k, h, w = weights.shape
            flat = weights.permute(0, 2, 3, 1).reshape(-1, k)
            lead = (n, h, w)
        else:
            flat = weights.reshape(-1, weights.shape[-1])
            lead = tuple(weights.shape[:-1])
        return self._from_flat(flat @ self.codebook_vectors(), lead)
