"""Scalar quantizers: one codebook of values shared by every entry of ``X``."""

from ._clustering import GaussianMixtureQuantizer, KMeansLSQuantizer, KMeansQuantizer
from ._least_squares import L0LeastSquareQuantizer, L1LeastSquareQuantizer

__all__ = [
    "GaussianMixtureQuantizer",
    "KMeansLSQuantizer",
    "KMeansQuantizer",
    "L0LeastSquareQuantizer",
    "L1LeastSquareQuantizer",
]
