"""Every public skvq quantizer, named once.

Each entry of :data:`QUANTIZERS` is a short name (what ``skvq quantize --method`` takes) with
the estimator class, the preset parameters of that name, a description, an availability
check, whether the estimator is a trained network, and how ``skvq compare`` sets it to a given
rate. Everything else that names the quantizers is derived from this table:

- the lazy imports of the neural estimators (``skvq.__getattr__``, ``skvq.neural.__getattr__``);
- the command line's method list (``skvq list``, ``skvq compare``, ``skvq quantize``) and its
  rate matching;
- the list of public estimators (:func:`public_estimators`), for the common tests.

``tests/test_registry.py`` fails when one of them, or ``doc/api.rst``, disagrees with the table.

A class is given either directly or as ``"module:Name"`` (the neural quantizers), imported
only when that quantizer is built, so that listing and the classical quantizers never import
torch.
"""

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .pq import OPQ, PQ
from .scalar import (
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)

__all__ = ["QUANTIZERS", "Quantizer", "available_quantizers", "estimator_names", "lookup",
           "make_quantizer", "parameter_names", "public_estimators"]


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a module without a spec
        return False


def _l0learn_available():
    return _installed("l0learn")


def _torch_available():
    return _installed("torch") and _installed("skorch")


def resolve_class(cls):
    """The class of a registry entry (imports ``"module:Name"`` entries)."""
    if isinstance(cls, str):
        module, name = cls.split(":")
        return getattr(importlib.import_module(module), name)
    return cls


def class_name(cls):
    """The class name of a registry entry, without importing it."""
    return cls.split(":")[1] if isinstance(cls, str) else cls.__name__


@dataclass(frozen=True)
class Quantizer:
    """One registry entry: a public estimator under a short name, with its presets.

    Parameters
    ----------
    name : str
        The short name (``"l0-dp"``), unique in the registry.
    estimator : type or str
        The estimator class, or ``"module:Name"`` for a class imported only when used (the
        neural quantizers, so that the registry never imports torch).
    description : str
        One line for ``skvq list``.
    preset : dict
        Parameters that this name sets (``"l1"`` is ``L1LeastSquareQuantizer(refit=False)``).
    neural : bool
        A trained network (torch and skorch, minutes rather than seconds): ``skvq compare``
        runs it only when named.
    available : callable or None
        Returns whether the optional dependencies are installed; None when there are none.
    rate_params : callable or None
        ``rate_params(bits_per_row, n_samples, n_features)`` gives the parameters that make
        the quantizer spend about ``bits_per_row`` bits on a row of ``n_features`` entries (what
        ``skvq compare`` uses to put vector and neural quantizers at the scalar quantizers'
        rate) or, for one codebook of ``2**n_bits`` codewords, the largest that ``n_samples``
        rows can fit; None when the common options (``n_values``) already set the rate.
    """

    name: str
    estimator: object
    description: str
    preset: dict = field(default_factory=dict)
    neural: bool = False
    available: Optional[Callable[[], bool]] = None
    rate_params: Optional[Callable[[float, int, int], dict]] = None

    @property
    def class_name(self):
        """The estimator's class name, without importing it."""
        return class_name(self.estimator)

    @property
    def module(self):
        """The module that defines the estimator, without importing it."""
        if isinstance(self.estimator, str):
            return self.estimator.split(":")[0]
        return self.estimator.__module__

    def is_available(self):
        """Whether the optional dependencies of this quantizer are installed."""
        return self.available is None or self.available()

    def resolve(self):
        """The estimator class (imports it, and torch for a neural quantizer)."""
        return resolve_class(self.estimator)


def _codebook_bits(n_samples, n_bits=8):
    # a codebook of 2**n_bits vectors is learned from at least as many rows
    return int(max(1, min(n_bits, np.floor(np.log2(max(n_samples, 2))))))


def _pq_rate(bits_per_row, n_samples, n_features):
    n_bits = _codebook_bits(n_samples)
    return {"n_bits": n_bits,
            "n_subspaces": int(np.clip(round(bits_per_row / n_bits), 1, n_features))}


def _one_codebook_rate(bits_per_row, n_samples, n_features):
    # one codebook of 2**n_bits codewords (8 by default): its size, not the rate, is the limit
    return {"n_bits": _codebook_bits(n_samples)}


def _deepvq_rate(bits_per_row, n_samples, n_features):
    return {"n_bits": max(1, int(round(bits_per_row)))}


def _autoencoder_rate(bits_per_row, n_samples, n_features):
    # n_latents codes of log2(codebook_size) = 6 bits each
    return {"n_latents": max(1, int(round(bits_per_row / 6))), "codebook_size": 64}


_ENTRIES = (
    Quantizer("l1-ls", L1LeastSquareQuantizer,
              "l1 + least-squares refit (Alg. 1; Alg. 2 search for n_values), exact TV solver"),
    Quantizer("l1", L1LeastSquareQuantizer,
              "l1 without least squares (eq. 6 alone), exact TV solver", {"refit": False}),
    Quantizer("l0-dp", L0LeastSquareQuantizer,
              "l0 (eq. 16), exact optimum by dynamic programming"),
    Quantizer("l0-l0learn", L0LeastSquareQuantizer,
              "l0 (eq. 16) with L0Learn, the paper's solver (needs l0learn)",
              {"solver": "l0learn"}, available=_l0learn_available),
    Quantizer("kmeans-ls", KMeansLSQuantizer, "k-means + least squares (Alg. 3)"),
    Quantizer("kmeans", KMeansQuantizer, "k-means scalar quantization, n_init=10 (baseline)"),
    Quantizer("gmm", GaussianMixtureQuantizer, "Gaussian-mixture quantization (baseline)"),
    Quantizer("pq", PQ, "product quantization, k-means per subspace", rate_params=_pq_rate),
    Quantizer("opq", OPQ, "optimized product quantization (learned rotation, then PQ)",
              rate_params=_pq_rate),
    Quantizer("kmeans-vq", PQ, "k-means vector quantization (PQ with one subspace)",
              {"n_subspaces": 1}, rate_params=_one_codebook_rate),
    Quantizer("deepvq", "skvq.neural._deepvq:DeepVQ",
              "L-bit binary code from one forward pass (W-step / penalty B-step)",
              neural=True, available=_torch_available, rate_params=_deepvq_rate),
    Quantizer("dcn", "skvq.neural._deepvq:DCN",
              "deep clustering network: k-means in a learned latent space (DeepVQ's eq. 9)",
              neural=True, available=_torch_available, rate_params=_one_codebook_rate),
    Quantizer("mdcn", "skvq.neural._deepvq:MDCN",
              "DCN decoding from the centroids (DeepVQ's eq. 10)",
              neural=True, available=_torch_available, rate_params=_one_codebook_rate),
    Quantizer("scq", "skvq.neural._autoencoder:SCQ",
              "autoencoder with a soft convex quantization bottleneck (SCQ's Alg. 2)",
              {"alpha": 0.01, "max_epochs": 10}, neural=True, available=_torch_available,
              rate_params=_autoencoder_rate),
    Quantizer("vq-vae", "skvq.neural._autoencoder:VQAutoencoder",
              "the same autoencoder with VQ-VAE's nearest-codeword bottleneck",
              {"bottleneck": "vq", "max_epochs": 10}, neural=True, available=_torch_available,
              rate_params=_autoencoder_rate),
)

#: name -> :class:`Quantizer`, in the order ``skvq list`` shows them.
QUANTIZERS = {entry.name: entry for entry in _ENTRIES}


def estimator_names(neural=None):
    """Class names of the public estimators, each once, without importing any.

    Parameters
    ----------
    neural : bool or None, default=None
        True: the neural estimators only; False: the classical ones only; None: all.

    Returns
    -------
    names : list of str
        In registry order.
    """
    names = []
    for entry in QUANTIZERS.values():
        if (neural is None or entry.neural == neural) and entry.class_name not in names:
            names.append(entry.class_name)
    return names


def public_estimators(neural=None, available_only=True):
    """Every public estimator class, each once (the table the common tests run over).

    Parameters
    ----------
    neural : bool or None, default=None
        True: the neural estimators only; False: the classical ones only; None: all.
    available_only : bool, default=True
        Leave out the estimators whose optional dependencies are missing (torch and skorch for
        the neural ones). With False, a missing dependency raises ``ImportError``.

    Returns
    -------
    classes : list of type
        In registry order. Resolving a neural estimator imports torch.
    """
    classes = []
    for entry in QUANTIZERS.values():
        if neural is not None and entry.neural != neural:
            continue
        # an estimator is available when any of its names is (a preset may need more)
        if available_only and not any(e.is_available() for e in QUANTIZERS.values()
                                      if e.class_name == entry.class_name):
            continue
        cls = entry.resolve()
        if cls not in classes:
            classes.append(cls)
    return classes


def available_quantizers(include_neural=True):
    """Names of the quantizers usable here (optional dependencies installed)."""
    return [name for name, entry in QUANTIZERS.items()
            if entry.is_available() and (include_neural or not entry.neural)]


def lookup(name):
    """The registry entry of a short name (``"l0-dp"``) or of a class name (its first entry).

    Raises ``ValueError`` for a name that is neither.
    """
    if name in QUANTIZERS:
        return QUANTIZERS[name]
    for entry in QUANTIZERS.values():
        if entry.class_name == name:
            return entry
    known = sorted(set(QUANTIZERS) | set(estimator_names()))
    raise ValueError(f"Unknown quantizer {name!r}; known: {', '.join(known)}.")


def _resolve_entry(name):
    entry = lookup(name)
    by_short_name = name in QUANTIZERS
    if not entry.is_available():
        raise ValueError(f"Quantizer {name!r} needs an optional dependency that is not "
                         "installed (see `skvq list` and the installation guide).")
    return entry.resolve(), (entry.preset if by_short_name else {})


def parameter_names(name):
    """The parameters that the quantizer ``name`` (a short name or a class name) takes.

    Raises ``ValueError`` for an unknown or unavailable quantizer; imports torch for a neural
    one.
    """
    cls, _ = _resolve_entry(name)
    return sorted(cls._get_param_names())


def make_quantizer(name, **params):
    """A quantizer from a registry name (``"l0-dp"``) or a class name, with ``params`` set.

    A class name gives the class's defaults; a registry name gives its presets, which
    ``params`` override. Parameters the class does not have (for example ``random_state`` for
    a deterministic quantizer) are dropped, so that one set of options can build every
    quantizer; check names that a user typed with :func:`parameter_names` first.
    """
    cls, preset = _resolve_entry(name)
    accepted = set(cls._get_param_names())
    return cls(**{**preset, **{k: v for k, v in params.items() if k in accepted}})
