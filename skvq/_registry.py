"""The quantizers the command line knows, by short name: one place for later issues to extend."""

import importlib.util

from .pq import OPQ, PQ
from .scalar import (
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)


def _l0learn_available():
    return importlib.util.find_spec("l0learn") is not None


# name -> (class, preset parameters, description, availability check or None)
QUANTIZERS = {
    "l1-ls": (L1LeastSquareQuantizer, {},
              "l1 + least-squares refit (Alg. 1; Alg. 2 search for n_values), exact TV solver",
              None),
    "l1": (L1LeastSquareQuantizer, {"refit": False},
           "l1 without least squares (eq. 6 alone), exact TV solver", None),
    "l0-dp": (L0LeastSquareQuantizer, {}, "l0 (eq. 16), exact optimum by dynamic programming",
              None),
    "l0-l0learn": (L0LeastSquareQuantizer, {"solver": "l0learn"},
                   "l0 (eq. 16) with L0Learn, the paper's solver (needs l0learn)",
                   _l0learn_available),
    "kmeans-ls": (KMeansLSQuantizer, {}, "k-means + least squares (Alg. 3)", None),
    "kmeans": (KMeansQuantizer, {}, "k-means scalar quantization, n_init=10 (baseline)", None),
    "gmm": (GaussianMixtureQuantizer, {}, "Gaussian-mixture quantization (baseline)", None),
    "pq": (PQ, {}, "product quantization, k-means per subspace", None),
    "opq": (OPQ, {}, "optimized product quantization (learned rotation, then PQ)", None),
    "kmeans-vq": (PQ, {"n_subspaces": 1}, "k-means vector quantization (PQ with one subspace)",
                  None),
}


def available_quantizers():
    """Names of the quantizers usable here (optional dependencies installed)."""
    return [name for name, (_, _, _, ok) in QUANTIZERS.items() if ok is None or ok()]


def make_quantizer(name, **params):
    """A quantizer from a registry name (``"l0-dp"``) or a class name, with ``params`` set.

    Parameters the class does not have (for example ``random_state`` for a deterministic
    quantizer) are dropped, so that one set of options can build every quantizer.
    """
    if name in QUANTIZERS:
        cls, preset, _, _ = QUANTIZERS[name]
    else:
        matches = [(cls, {}) for cls, *_ in QUANTIZERS.values() if cls.__name__ == name]
        if not matches:
            known = sorted(set(QUANTIZERS) | {c.__name__ for c, *_ in QUANTIZERS.values()})
            raise ValueError(f"Unknown quantizer {name!r}; known: {', '.join(known)}.")
        cls, preset = matches[0]
    accepted = cls().get_params()
    return cls(**{**preset, **{k: v for k, v in params.items() if k in accepted}})
