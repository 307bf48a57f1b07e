"""The catalogue of bottlenecks: one table from names to layers.

Every quantization bottleneck that an estimator can be built with (``VQAutoencoder``'s
``bottleneck`` parameter, SCQ's Table 1 analog) is one row of :data:`CATALOGUE`: its name, its
class, the preset keyword arguments that make the configuration, the row of the SCQ paper's
Table 1 it stands for and a one-line description. :data:`BOTTLENECKS` (the names) and
:func:`make_bottleneck` are derived from it, and so are the estimators' parameter checks and
docstrings. A new bottleneck is one module with a
:class:`~skvq.neural.layers._bottleneck.Bottleneck` subclass plus one row here.

This module imports torch: import it only from code that already needs torch.
"""

import inspect
from typing import NamedTuple

from ._fsq import FSQ
from ._scq_layer import SoftConvexQuantizer
from ._vq_baselines import AffineVQ, GumbelVQ, ResidualVQ, VectorQuantize

__all__ = ["BOTTLENECKS", "CATALOGUE", "BottleneckEntry", "make_bottleneck"]

# Usage threshold of the dead-code replacement rows ("+ Rep"): a codeword used less than
# once per batch on average is reset (vector-quantize-pytorch's examples use 1 to 2).
_DEAD_CODE_THRESHOLD = 1.0


class BottleneckEntry(NamedTuple):
    """One row of the catalogue."""

    cls: type  # a Bottleneck subclass, called as cls(dim, codebook_size, image_fmap=..., ...)
    preset: dict  # keyword arguments that make this configuration
    table1_row: str  # the row of the SCQ paper's Table 1 (Gautam et al., 2023)
    description: str  # one line, for docstrings and listings


CATALOGUE = {
    "scq": BottleneckEntry(
        SoftConvexQuantizer, {}, "SCQVAE",
        "soft convex quantization, a convex combination of codewords (eq. 8); the SCQ "
        "estimator spells out its parameters"),
    "vq": BottleneckEntry(
        VectorQuantize, {}, "VQVAE",
        "VQ-VAE: nearest codeword, straight-through estimator, loss eq. (5)"),
    "vq_replace": BottleneckEntry(
        VectorQuantize, {"threshold_ema_dead_code": _DEAD_CODE_THRESHOLD}, "VQVAE + Rep",
        "VQ-VAE with dead codewords replaced by encoder outputs"),
    "vq_affine": BottleneckEntry(
        AffineVQ, {}, "VQVAE + Affine + OPT",
        "affine reparametrized codebook and alternating optimization (Huh et al., 2023)"),
    "vq_replace_affine": BottleneckEntry(
        AffineVQ, {"threshold_ema_dead_code": _DEAD_CODE_THRESHOLD},
        "VQVAE + Rep + Affine + OPT", "affine VQ with dead-code replacement"),
    "gumbel": BottleneckEntry(
        GumbelVQ, {}, "Gumbel-VQVAE", "Gumbel-softmax sampling of the code"),
    "rvq": BottleneckEntry(
        ResidualVQ, {}, "RQVAE",
        "residual VQ, num_quantizers stages (2 by default), one code column per stage"),
    "fsq": BottleneckEntry(
        FSQ, {}, "FSQ (not in the paper's Table 1; Mentzer et al., 2023)",
        "finite scalar quantization, a fixed grid of prod(levels) = codebook_size codes; "
        "levels from codebook_size by skvq.neural.layers.fsq_levels (the fewest levels "
        "between 3 and 8: 64 gives (8, 8), 1000 the paper's (8, 5, 5, 5)) unless "
        "bottleneck_params gives them; no codebook loss, so commitment_weight is unused"),
}

BOTTLENECKS = tuple(CATALOGUE)


def _keyword_parameters(cls):
    return [name for name, p in inspect.signature(cls).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def make_bottleneck(name, dim, codebook_size, image_fmap=False, commitment_weight=0.25,
                    **params):
    """A bottleneck module by name (one row of :data:`CATALOGUE`).

    Parameters
    ----------
    name : str
        One of :data:`BOTTLENECKS`: ``"scq"``, ``"vq"``, ``"vq_replace"``, ``"vq_affine"``,
        ``"vq_replace_affine"``, ``"gumbel"``, ``"rvq"``, ``"fsq"``.
    dim : int
        Latent vector length.
    codebook_size : int
        Codewords ``K`` (per stage for ``"rvq"``; ``prod(levels)`` for ``"fsq"``).
    image_fmap : bool, default=False
        The bottleneck receives ``(N, dim, H, W)`` feature maps.
    commitment_weight : float, default=0.25
        :math:`\\beta` of eq. (5), passed to the bottlenecks that take it (all but
        ``"gumbel"`` and ``"fsq"``; SCQ's layer uses it for the same two terms on ``C P*``).
    **params
        Further keyword arguments of the bottleneck's constructor (``alpha`` and ``solver``
        for SCQ, ``temperature`` for Gumbel, ``num_quantizers`` for RVQ, ``levels`` for FSQ,
        ``ema_update`` or ``kmeans_init`` for the VQ rows, ...); they override
        the row's preset.

    Returns
    -------
    bottleneck : Bottleneck

    Raises
    ------
    ValueError
        For an unknown name, or a keyword argument the bottleneck does not take.
    """
    if not isinstance(name, str) or name not in CATALOGUE:
        raise ValueError(f"bottleneck must be one of {', '.join(map(repr, BOTTLENECKS))}, "
                         f"got {name!r}.")
    entry = CATALOGUE[name]
    accepted = _keyword_parameters(entry.cls)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        allowed = [p for p in accepted if p not in ("dim", "codebook_size", "image_fmap")]
        raise ValueError(f"bottleneck {name!r} ({entry.cls.__name__}) does not take "
                         f"{', '.join(map(repr, unknown))}; it takes {', '.join(allowed)}.")
    kwargs = dict(entry.preset)
    if "commitment_weight" in accepted:
        kwargs["commitment_weight"] = commitment_weight
    kwargs.update(params)
    return entry.cls(dim, codebook_size, image_fmap=image_fmap, **kwargs)
