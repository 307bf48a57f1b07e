"""skvq: scikit-learn compatible quantizers.

Importing skvq never imports torch: the neural quantizers load it when they are used.
"""

from . import metrics
from .base import BaseQuantizer, code_dtype
from .pq import OPQ, PQ
from .scalar import (
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "BaseQuantizer",
    "GaussianMixtureQuantizer",
    "KMeansLSQuantizer",
    "KMeansQuantizer",
    "L0LeastSquareQuantizer",
    "L1LeastSquareQuantizer",
    "OPQ",
    "PQ",
    "code_dtype",
    "metrics",
]
