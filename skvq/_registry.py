"""The quantizers the command line knows, by short name: one place for later issues to extend.

A class is given either directly or as ``"module:Name"`` (the neural quantizers), imported
only when that quantizer is built, so that listing and the classical quantizers never import
torch.
"""

import importlib
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


def _torch_available():
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "skorch"))


def resolve_class(cls):
    """The class of a registry entry (imports ``"module:Name"`` entries)."""
    if isinstance(cls, str):
        module, name = cls.split(":")
        return getattr(importlib.import_module(module), name)
    return cls


def class_name(cls):
    """The class name of a registry entry, without importing it."""
    return cls.split(":")[1] if isinstance(cls, str) else cls.__name__


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
    "deepvq": ("skvq.neural._deepvq:DeepVQ", {},
               "L-bit binary code from one forward pass (W-step / penalty B-step)",
               _torch_available),
    "dcn": ("skvq.neural._deepvq:DCN", {},
            "deep clustering network: k-means in a learned latent space (DeepVQ's eq. 9)",
            _torch_available),
    "mdcn": ("skvq.neural._deepvq:MDCN", {}, "DCN decoding from the centroids (DeepVQ's eq. 10)",
             _torch_available),
    "scq": ("skvq.neural._autoencoder:SCQ", {"alpha": 0.01, "max_epochs": 10},
            "autoencoder with a soft convex quantization bottleneck (SCQ's Alg. 2)",
            _torch_available),
    "vq-vae": ("skvq.neural._autoencoder:VQAutoencoder", {"bottleneck": "vq", "max_epochs": 10},
               "the same autoencoder with VQ-VAE's nearest-codeword bottleneck",
               _torch_available),
}


# Trained networks: minutes, not seconds, so `skvq compare` runs them only when named.
NEURAL = ("deepvq", "dcn", "mdcn", "scq", "vq-vae")


def available_quantizers(include_neural=True):
    """Names of the quantizers usable here (optional dependencies installed)."""
    return [name for name, (_, _, _, ok) in QUANTIZERS.items()
            if (ok is None or ok()) and (include_neural or name not in NEURAL)]


def make_quantizer(name, **params):
    """A quantizer from a registry name (``"l0-dp"``) or a class name, with ``params`` set.

    Parameters the class does not have (for example ``random_state`` for a deterministic
    quantizer) are dropped, so that one set of options can build every quantizer.
    """
    if name in QUANTIZERS:
        cls, preset, _, available = QUANTIZERS[name]
    else:
        matches = [(cls, {}, ok) for cls, _, _, ok in QUANTIZERS.values()
                   if class_name(cls) == name]
        if not matches:
            known = sorted(set(QUANTIZERS) | {class_name(c) for c, *_ in QUANTIZERS.values()})
            raise ValueError(f"Unknown quantizer {name!r}; known: {', '.join(known)}.")
        cls, preset, available = matches[0]
    if available is not None and not available():
        raise ValueError(f"Quantizer {name!r} needs an optional dependency that is not "
                         "installed (see `skvq list` and the installation guide).")
    cls = resolve_class(cls)
    accepted = cls().get_params()
    return cls(**{**preset, **{k: v for k, v in params.items() if k in accepted}})
