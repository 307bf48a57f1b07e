"""skvq: scikit-learn compatible quantizers.

Importing skvq never imports torch: the neural quantizers load it when they are used.
"""

from . import metrics
from ._registry import estimator_names as _estimator_names
from .base import BaseQuantizer, code_dtype
from .ivf import IVFPQNearestNeighbors
from .neighbors import PQNearestNeighbors
from .pq import OPQ, PQ
from .scalar import (
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)

__version__ = "0.1.0.dev0"

# The neural quantizers (from the registry, skvq._registry) and SCQ's layer, which carries the
# paper's name, loaded from skvq.neural (and torch imported) on first access.
_NEURAL = (*_estimator_names(neural=True), "SoftConvexQuantizer")


def __getattr__(name):
    if name in _NEURAL:
        from . import neural

        return getattr(neural, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_NEURAL))

# The neural names are not in __all__: `from skvq import *` must not need torch.
__all__ = [
    "BaseQuantizer",
    "GaussianMixtureQuantizer",
    "IVFPQNearestNeighbors",
    "KMeansLSQuantizer",
    "KMeansQuantizer",
    "L0LeastSquareQuantizer",
    "L1LeastSquareQuantizer",
    "OPQ",
    "PQ",
    "PQNearestNeighbors",
    "code_dtype",
    "metrics",
]
