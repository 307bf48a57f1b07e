"""Collection rules for the doctests of skvq's modules (``--doctest-modules``).

The modules of ``skvq.neural`` other than its lazy ``__init__`` and ``_torch_utils``, every
module of ``skvq.neural.layers``, and ``skvq.nn`` import torch: without torch and skorch (the
l0learn environment of CI) their doctests are not collected, as the tests that need torch skip.
"""

import importlib.util

_HAVE_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "skorch"))

collect_ignore_glob = [] if _HAVE_TORCH else ["skvq/neural/_[!t]*.py", "skvq/neural/layers/*.py",
                                              "skvq/nn.py"]
