"""Torch-only building blocks of skvq's neural quantizers: bottlenecks, solvers, networks.

Nothing here knows scikit-learn or skorch; the estimators in :mod:`skvq.neural` build on these
modules. The bottlenecks share one interface (:class:`Bottleneck`) and are named in one table
(:data:`CATALOGUE`, from which :data:`BOTTLENECKS` and :func:`make_bottleneck` derive).
Importing this package imports torch.
"""

from ._bottleneck import Bottleneck, BottleneckOutput, FlatQuantization
from ._catalogue import BOTTLENECKS, CATALOGUE, make_bottleneck
from ._deepvq_modules import AutoEncoder, binary_penalty_step, frozen_batch_statistics
from ._fsq import FSQ, fsq_levels
from ._scq_layer import SoftConvexQuantizer
from ._simplex import project_simplex, scq_exact, scq_relaxed
from ._vq_baselines import AffineVQ, GumbelVQ, ResidualVQ, VectorQuantize

__all__ = [
    "BOTTLENECKS",
    "CATALOGUE",
    "AffineVQ",
    "AutoEncoder",
    "Bottleneck",
    "BottleneckOutput",
    "FSQ",
    "FlatQuantization",
    "GumbelVQ",
    "ResidualVQ",
    "SoftConvexQuantizer",
    "VectorQuantize",
    "binary_penalty_step",
    "fsq_levels",
    "frozen_batch_statistics",
    "make_bottleneck",
    "project_simplex",
    "scq_exact",
    "scq_relaxed",
]
