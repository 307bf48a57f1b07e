"""Collection rules for the doctests of skvq's modules (``--doctest-modules``).

The modules of ``skvq.neural`` other than its lazy ``__init__`` and ``_torch_utils``, every
module of ``skvq.neural.layers``, and ``skvq.nn`` import torch: without torch and skorch (the
l0learn environment of CI) their doctests are not collected, as the tests that need torch skip.
"""

import importlib.util
import os

# numba's parallel kernels and torch's / scikit-learn's OpenMP pools share two cores in one
# test process; spin-waiting OpenMP threads then made the common checks five times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

_HAVE_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "skorch"))

collect_ignore_glob = [] if _HAVE_TORCH else ["skvq/neural/_[!t]*.py", "skvq/neural/layers/*.py",
                                              "skvq/nn.py"]
