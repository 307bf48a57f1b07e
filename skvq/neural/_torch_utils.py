"""Shared pieces of the torch-backed quantizers: lazy import, device resolution, seeding
(used by :class:`skvq.neural._base.TorchQuantizer`).

Importing this module does not import torch; :func:`import_torch` does, and raises an
``ImportError`` that says how to install it when it is missing.
"""

import numbers

import numpy as np

__all__ = ["import_torch", "resolve_device", "seed_everything", "torch_generator_seed"]

_INSTALL_HINT = (
    "skvq's neural quantizers need PyTorch and skorch. Install them with "
    "`pip install torch` (a CPU build: `pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu`) and then `pip install 'skvq[torch]'`."
)


def import_torch(with_skorch=False):
    """Import torch (and skorch) or raise an ``ImportError`` that says how to install them.

    Parameters
    ----------
    with_skorch : bool, default=False
        Also import skorch and return it.

    Returns
    -------
    torch : module
        ``torch``, or ``(torch, skorch)`` when ``with_skorch`` is true.
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError(_INSTALL_HINT) from exc
    if not with_skorch:
        return torch
    try:
        import skorch
    except ImportError as exc:  # pragma: no cover
        raise ImportError(_INSTALL_HINT) from exc
    return torch, skorch


def resolve_device(device):
    """Resolve a ``device`` parameter to a concrete torch device string.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"} or str or torch.device
        ``"auto"`` gives ``"cuda"`` when CUDA is available and ``"cpu"`` otherwise. An
        explicit CUDA device on a machine without CUDA raises ``ValueError``.

    Returns
    -------
    device : str
        For example ``"cpu"``, ``"cuda"`` or ``"cuda:1"``. The estimator stores it in a
        fitted attribute (``device_``); the ``device`` parameter itself never changes.
    """
    torch = import_torch()
    if device is None or (isinstance(device, str) and device == "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    name = str(device)
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'."
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                "machine; use device='auto' or device='cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA "
                "device(s)."
            )
    elif dev.type != "cpu":
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu' or 'cuda'.")
    return name


def torch_generator_seed(random_state):
    """A 63-bit integer seed for torch drawn from a scikit-learn ``random_state``.

    Parameters
    ----------
    random_state : int, RandomState instance or None
        As scikit-learn's ``random_state``: an int gives the same seed every time, ``None``
        a fresh one.

    Returns
    -------
    seed : int
    """
    from sklearn.utils import check_random_state

    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        rng = np.random.RandomState(int(random_state) % (2**32))
    else:
        rng = check_random_state(random_state)
    return int(rng.randint(0, 2**31 - 1)) * (2**31) + int(rng.randint(0, 2**31 - 1))


def seed_everything(random_state):
    """Seed torch's global generators (CPU and CUDA) from ``random_state``; return the seed.

    skorch draws its shuffling and initialisation from torch's global generator, so the
    neural estimators call this at the start of ``fit`` to make two fits with the same
    seed give the same codes (on the same device and torch build).
    """
    torch = import_torch()
    seed = torch_generator_seed(random_state)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed

