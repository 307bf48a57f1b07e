"""Neural quantizers backed by torch and skorch (DeepVQ, SCQ and their baselines).

Nothing here imports torch at import time: each name is loaded from its module on first
access, so ``import skvq.neural`` works without torch and using an estimator without torch
raises an ``ImportError`` that says how to install it.
"""

import importlib

# public name -> submodule that defines it
_LAZY = {
    # DeepVQ (deepvq.md) and its Table 1 baselines
    "DeepVQ": "_deepvq",
    "DCN": "_deepvq",
    "MDCN": "_deepvq",
    "pack_codes": "_deepvq",
    "unpack_codes": "_deepvq",
    "binary_penalty_step": "layers",
    # soft convex quantization (scq.md): the layer, its solvers, the estimators
    "SoftConvexQuantizer": "layers",
    "project_simplex": "layers",
    "scq_exact": "layers",
    "scq_relaxed": "layers",
    "SCQ": "_autoencoder",
    "VQAutoencoder": "_autoencoder",
    # the VQ bottlenecks SCQ is compared with, and their shared interface
    "VectorQuantize": "layers",
    "AffineVQ": "layers",
    "GumbelVQ": "layers",
    "ResidualVQ": "layers",
    "Bottleneck": "layers",
    "BottleneckOutput": "layers",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        from ._torch_utils import import_torch

        import_torch(with_skorch=True)  # a clear ImportError when torch is missing
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
