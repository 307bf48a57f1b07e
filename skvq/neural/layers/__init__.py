"""Torch-only building blocks of skvq's neural quantizers: bottlenecks, solvers, networks.

Nothing here knows scikit-learn or skorch; the estimators in :mod:`skvq.neural` build on these
modules. Importing this package imports torch.
"""

from ._bottleneck import Bottleneck, BottleneckOutput, FlatQuantization
from ._deepvq_modules import AutoEncoder, binary_penalty_step, frozen_batch_statistics
from ._scq_layer import SoftConvexQuantizer
from ._simplex import project_simplex, scq_exact, scq_relaxed
from ._vq_baselines import AffineVQ, GumbelVQ, ResidualVQ, VectorQuantize

__all__ = [
    "AffineVQ",
    "AutoEncoder",
    "Bottleneck",
    "BottleneckOutput",
    "FlatQuantization",
    "GumbelVQ",
    "ResidualVQ",
    "SoftConvexQuantizer",
    "VectorQuantize",
    "binary_penalty_step",
    "frozen_batch_statistics",
    "project_simplex",
    "scq_exact",
    "scq_relaxed",
]
