"""Neural quantizers backed by torch and skorch (DeepVQ, SCQ and their baselines).

Nothing here imports torch at import time: each name is loaded from its module on first
access, so ``import skvq.neural`` works without torch and using an estimator without torch
raises an ``ImportError`` that says how to install it.
"""

import importlib

# public name -> submodule that defines it
_LAZY = {}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
