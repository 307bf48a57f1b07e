"""Neural quantizers backed by torch and skorch (DeepVQ, SCQ and their baselines).

Nothing here imports torch at import time: each name is loaded from its module on first
access, so ``import skvq.neural`` works without torch and using an estimator without torch
raises an ``ImportError`` that says how to install it.
"""

import importlib

from .._registry import QUANTIZERS

# public name -> module that defines it. The estimators come from the registry
# (skvq._registry), so that a quantizer registered there is importable here with no second list.
_ESTIMATORS = {entry.class_name: entry.module for entry in QUANTIZERS.values() if entry.neural}

# The torch-only building blocks of skvq.neural.layers that are public here.
_LAYERS = dict.fromkeys([
    # soft convex quantization (scq.md): the layer and its solvers
    "SoftConvexQuantizer", "project_simplex", "scq_exact", "scq_relaxed",
    # the VQ bottlenecks SCQ is compared with, and their shared interface
    "VectorQuantize", "AffineVQ", "GumbelVQ", "ResidualVQ", "Bottleneck", "BottleneckOutput",
    # finite scalar quantization (a fixed grid instead of a codebook)
    "FSQ",
    # DeepVQ's B-step
    "binary_penalty_step",
], f"{__name__}.layers")

# DeepVQ's bit packing of its codes.
_HELPERS = dict.fromkeys(["pack_codes", "unpack_codes"], f"{__name__}._deepvq")

_LAZY = {**_ESTIMATORS, **_LAYERS, **_HELPERS}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        from ._torch_utils import import_torch

        import_torch(with_skorch=True)  # a clear ImportError when torch is missing
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
