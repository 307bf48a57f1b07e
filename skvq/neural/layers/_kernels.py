"""The one torch kernel for distances to a codebook and the nearest codeword.

Every bottleneck, SCQ's solvers, DeepVQ's DCN/MDCN and any GPU path call these two functions,
so that a faster or more exact kernel has one place to go.
"""

import torch

__all__ = ["nearest_codeword", "squared_distances"]


def squared_distances(z, codebook):
    """Squared Euclidean distances ``(M, K)`` between the rows of ``z`` (M, d) and ``codebook``.

    Computed as ``|z|^2 - 2 z.c + |c|^2`` (one matrix product) and clipped at zero, where
    rounding of the expanded form could make it negative.
    """
    return torch.addmm(z.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1)[None, :],
                       z, codebook.t(), alpha=-2.0).clamp_min(0.0)


def nearest_codeword(z, codebook):
    """Index of the nearest row of ``codebook`` (K, d) for every row of ``z`` (M, d).

    ``|z|^2`` is constant per row and left out of the argmin; no gradient flows.
    """
    with torch.no_grad():
        scores = torch.addmm(codebook.pow(2).sum(1)[None, :], z, codebook.t(), alpha=-2.0)
        return scores.argmin(1)
