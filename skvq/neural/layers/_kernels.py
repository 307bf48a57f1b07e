"""The one torch kernel for distances to a codebook and the nearest codeword.

Every bottleneck, SCQ's solvers, DeepVQ's DCN/MDCN and any GPU path call these functions,
so that a faster or more exact kernel has one place to go.
"""

import torch

__all__ = ["codeword_scores", "nearest_codeword", "squared_distances"]


def squared_distances(z, codebook):
    """Squared Euclidean distances ``(M, K)`` between the rows of ``z`` (M, d) and ``codebook``.

    Computed as ``|z|^2 - 2 z.c + |c|^2`` (one matrix product) and clipped at zero, where
    rounding of the expanded form could make it negative.
    """
    return torch.addmm(z.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)[None, :],
                       z, codebook.t(), alpha=-2.0).clamp_min(0.0)


def codeword_scores(z, codebook):
    """Scores ``(M, K)`` whose row-wise order is the nearness of each codeword: ``2 z.c - |c|^2``.

    This is ``|z|^2 - ||z - c||^2``: the negated squared distance plus a constant per row,
    so a softmax over codewords (Gumbel VQ's logits) and an argmax give what the negated
    distances would, in exact arithmetic. In floating point they give more: ``|z|^2`` is
    left out, so at large ``|z|`` the scores keep the differences between codewords that
    ``-||z - c||^2`` (a number of the size of ``|z|^2``) would round away. Gradients flow to
    both arguments.
    """
    return torch.addmm(codebook.pow(2).sum(1)[None, :], z, codebook.t(),
                       beta=-1.0, alpha=2.0)


def nearest_codeword(z, codebook, *, unit_norm=False):
    """Index of the nearest row of ``codebook`` (K, d) for every row of ``z`` (M, d).

    ``|z|^2`` is constant per row and left out of the argmin; no gradient flows.

    Parameters
    ----------
    z : Tensor of shape (M, d)
    codebook : Tensor of shape (K, d)
    unit_norm : bool, default=False
        The rows of ``z`` and ``codebook`` are unit vectors (cosine-similarity codebooks):
        the nearest codeword is then the largest inner product (``||z - c||^2 = 2 - 2 z.c``),
        computed without the ``|c|^2`` term, whose rounding around 1 could only blur it.

    Returns
    -------
    codes : Tensor of shape (M,), int64
    """
    with torch.no_grad():
        if unit_norm:
            return (z @ codebook.t()).argmax(1)
        scores = torch.addmm(codebook.pow(2).sum(1)[None, :], z, codebook.t(), alpha=-2.0)
        return scores.argmin(1)
