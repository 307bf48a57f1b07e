"""The one base of skvq's neural quantizers, :class:`TorchQuantizer`.

A new neural estimator is one file with one class that subclasses :class:`TorchQuantizer`;
this module holds everything such estimators share, so that none of them has to copy it from
a sibling. Read the class docstring first: it is the guide.

This module imports torch and skorch: :mod:`skvq.neural` loads the estimators lazily.
"""

import itertools
import numbers

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from skorch.callbacks import ProgressBar

from ..base import BaseQuantizer
from ._torch_utils import resolve_device, seed_everything

__all__ = ["OPTIMIZERS", "SCALINGS", "TorchQuantizer", "check_image_shape"]

# The one optimizer table: name -> (torch class, fixed keyword arguments). SGD carries the
# momentum 0.9 of DeepVQ's paper (its alpha); a plain SGD step without momentum trains these
# networks far more slowly for no benefit.
OPTIMIZERS = {
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
    "sgd": (torch.optim.SGD, {"momentum": 0.9}),
}

# The values of ``scaling``: what maps X into the space the network works in.
SCALINGS = ("standard", "minmax", "global")


def check_image_shape(image_shape, n_features, multiple_of=1):
    """Validate an ``image_shape=(C, H, W)`` parameter against the data's width.

    Parameters
    ----------
    image_shape : tuple of int
        Channels, height and width; rows of ``X`` are images flattened in C, H, W order.
    n_features : int
        Columns of ``X``; must equal ``C * H * W``.
    multiple_of : int, default=1
        ``H`` and ``W`` must be multiples of this (``2**n_downsample`` for a network that
        halves the image that many times).

    Returns
    -------
    image_shape : tuple of int
    """
    try:
        shape = tuple(image_shape)
    except TypeError:
        shape = None
    if (shape is None or len(shape) != 3
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
                       for s in shape)):
        raise ValueError(f"image_shape must be three positive ints (C, H, W), got "
                         f"{image_shape!r}.")
    shape = tuple(int(s) for s in shape)
    if shape[0] * shape[1] * shape[2] != n_features:
        raise ValueError(f"image_shape={shape} holds {shape[0] * shape[1] * shape[2]} values "
                         f"but X has n_features={n_features}.")
    if shape[1] % multiple_of or shape[2] % multiple_of:
        raise ValueError(f"image height and width ({shape[1]}, {shape[2]}) must be multiples "
                         f"of {multiple_of}.")
    return shape


class TorchQuantizer(BaseQuantizer):
    """Base class of the neural quantizers: one constraint set, scaling, device, seed, net.

    A neural quantizer is a plain scikit-learn estimator (composition, not inheritance): it
    builds a torch module and a skorch ``NeuralNet`` around it inside ``fit`` and keeps the
    net as ``net_``. Everything that is the same for every such estimator lives here.

    **Adding a neural estimator** is one file with one subclass:

    1. ``__init__`` stores the estimator's own parameters and the shared ones below (all of
       them: scikit-learn's ``check_param_validation`` wants one constraint per parameter),
       and ``_parameter_constraints = {**TorchQuantizer._parameter_constraints, ...}`` adds
       the estimator's own constraints. Size parameters that are sequences (hidden widths)
       go through :meth:`_check_sizes`.
    2. ``fit`` (decorated with ``@_fit_context``) calls, in this order:

       - ``Xs = self._start_fit(X)``: validates ``X`` (finite, 2-D, at least
         ``_min_fit_samples`` rows), resolves ``device`` into ``device_``, fits the scaling
         (``offset_``, ``scale_``) and returns the scaled training data as float32 numpy,
         refusing values that are finite in float64 but overflow float32 once scaled;
       - ``module = self._build_module(build, name=value, ...)``: ``build()`` returns the
         torch module; it is first built on torch's ``meta`` device (no memory) to count
         its weights, and a network beyond ``_max_n_weights`` is refused with an error that
         names the largest of the size parameters passed as keywords; then torch is seeded
         from ``random_state`` and the real module is built;
       - ``net = self._make_net(NetClass, module, n_samples=len(Xs), **net_params)``: the
         skorch net with the shared settings (optimizer from :data:`OPTIMIZERS`, ``lr``,
         ``weight_decay``, ``batch_size``, ``max_epochs``, shuffling, ``device_``, the
         epoch log or progress bar of ``verbose``, ``drop_last`` for batch normalisation).
         ``NetClass`` is ``skorch.NeuralNet`` or a subclass whose ``__init__`` takes the
         method's settings as keyword parameters (skorch's ``get_params`` then sees them,
         and ``net_.partial_fit``, ``set_params`` and checkpoints keep working); learned
         state other than weights (centroids, counts) belongs in module buffers, so that
         ``state_dict``, ``save_params`` and skorch's ``Checkpoint`` carry it;
       - ``net.partial_fit(Xs)`` (or ``net.fit``), then ``self.net_ = net``,
         ``self._record_history(net)`` (sets ``history_`` and ``n_iter_``) and the
         estimator's own fitted attributes (``bits_per_sample_`` at least).
    3. The contract's hooks of :class:`skvq.base.BaseQuantizer`: ``_n_code_columns``,
       ``_code_cardinality``, ``_encode(X)`` and ``_decode(codes)``, each on one batch.
       ``_encode`` turns raw rows into a tensor with :meth:`_to_tensor` (scaling, float32
       check, device) and checks the network's output with :meth:`_check_finite`;
       ``_decode`` maps the network's output back with :meth:`_unscale`. ``transform``,
       ``inverse_transform`` and ``score`` call them batch by batch (batches bounded by
       ``_bytes_per_row`` and scikit-learn's ``working_memory``); :meth:`_forward_batches`
       does the same for a module function inside ``fit``.
    4. A network with batch normalisation sets ``_min_fit_samples = 2``; a convolutional
       one on images takes an ``image_shape=(C, H, W)`` parameter checked by
       :func:`check_image_shape` (rows of ``X`` are flattened images).

    ``TinyBinaryQuantizer`` in ``tests/test_neural_base.py`` follows these steps in about
    60 lines and passes scikit-learn's common checks; :class:`~skvq.neural.DeepVQ`,
    :class:`~skvq.neural.DCN` and :class:`~skvq.neural.SCQ` are the full-size examples.
    A new estimator also gets a row in the one table of the common tests
    (``tests/_estimators.py``): a registered estimator without one fails
    ``tests/test_contract.py``.

    The parameters and attributes below are those every neural quantizer shares (its own
    docstring repeats them with its defaults).

    Parameters
    ----------
    scaling : {"standard", "minmax", "global"} or None
        How ``X`` is mapped into the space the network works in (undone on output):
        ``"standard"``: zero mean and unit variance per feature; ``"minmax"``: each feature's
        training range to ``[-1, 1]``; ``"global"``: one affine map for all features, the
        training data's overall range to ``[-1, 1]`` (DeepVQ's paper; a per-feature map
        would weight the error of nearly constant features up); ``None``: no scaling. The
        default of every neural estimator is ``"global"``.
    optimizer : {"adam", "adamw", "sgd"}
        torch optimizer (:data:`OPTIMIZERS`; ``"sgd"`` has momentum 0.9).
    lr : float > 0
        Learning rate.
    weight_decay : float >= 0
        The optimizer's weight decay.
    batch_size : int >= 1
        Mini-batch size. A network with batch normalisation needs at least 2 rows per batch:
        ``batch_size=1`` is refused for it, and a last batch of one row is dropped (skorch's
        ``iterator_train__drop_last``).
    max_epochs : int >= 0
        Epochs of the estimator's main training stage. 0 trains nothing in that stage: the
        codes come from the initialised network (after the estimator's own initialisation
        stages, such as pre-training, when it has them). The same rule for every estimator.
    device : "auto", "cpu", "cuda", "cuda:<i>" or torch.device
        ``"auto"`` is CUDA when available, else the CPU; an explicit CUDA device on a machine
        without one raises ``ValueError``. Resolved in ``fit`` into ``device_``; the
        parameter itself never changes.
    random_state : int, RandomState instance or None
        Seeds torch's generators at the start of the network's construction: the same seed
        gives the same codes on the same device and torch build.
    verbose : int
        0: silent; 1: skorch's epoch log; 2 or more: a progress bar per epoch as well.

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained net; ``net_.module_`` the torch module. It works in the scaled space:
        continue training with ``net_.partial_fit(((X - offset_) / scale_).astype("float32"))``.
    device_ : str
        The resolved device.
    offset_, scale_ : ndarray of shape (n_features_in,)
        The scaling: the network sees ``(X - offset_) / scale_``.
    history_ : list of dict
        skorch's history, one dict per epoch (``train_loss``, ``dur``, ...).
    n_iter_ : int
        Epochs recorded in ``history_``.
    """

    _parameter_constraints = {
        "scaling": [StrOptions(set(SCALINGS)), None],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # Rows ``fit`` needs at least (2 for networks with batch normalisation).
    _min_fit_samples = 1
    # Largest network (weights and buffers) ``fit`` builds: 2**30 float32 values are 4 GiB,
    # and training holds several times that (gradients, optimizer state). A size parameter
    # of 10**9 is a typo or a misunderstanding, refused before anything is allocated.
    _max_n_weights = 2**30

    # -- fit, step 1: data, device, scaling --------------------------------------------------
    def _start_fit(self, X):
        """Validate ``X``, resolve ``device_``, fit the scaling; return scaled float32 data."""
        X, _ = self._validate_fit_data(X)
        if X.shape[0] < self._min_fit_samples:
            raise ValueError(
                f"n_samples={X.shape[0]}: {type(self).__name__} needs at least "
                f"{self._min_fit_samples} samples (batch normalisation needs 2 per batch).")
        self.device_ = resolve_device(self.device)
        self._fit_dtype = X.dtype
        self._fit_scaling(X)
        return self._scale(X)

    def _fit_scaling(self, X):
        """``offset_`` and ``scale_`` (per feature) for the ``scaling`` parameter, finite
        even for data near the float64 limit; a constant feature gets ``scale_ = 1``."""
        n_features = X.shape[1]
        if self.scaling is None:
            self.offset_, self.scale_ = np.zeros(n_features), np.ones(n_features)
            return
        with np.errstate(over="ignore", invalid="ignore"):
            if self.scaling == "standard":
                offset = X.mean(0, dtype=np.float64)
                std = X.std(0, dtype=np.float64)
                if not (np.all(np.isfinite(offset)) and np.all(np.isfinite(std))):
                    # sums of squares overflowed: the same statistics of X / max|X|
                    peak = np.max(np.abs(X), axis=0).astype(np.float64)
                    peak = np.where(peak > 0, peak, 1.0)
                    Y = X / peak
                    offset = Y.mean(0, dtype=np.float64) * peak
                    std = Y.std(0, dtype=np.float64) * peak
                scale = std
            else:
                axis = 0 if self.scaling == "minmax" else None
                low = np.min(X, axis=axis).astype(np.float64)
                high = np.max(X, axis=axis).astype(np.float64)
                # halves first: high - low overflows for data spanning the float64 range,
                # and halving is exact, so this equals (high + low) / 2 and (high - low) / 2
                offset = np.broadcast_to(high / 2 + low / 2, (n_features,)).copy()
                scale = np.broadcast_to(high / 2 - low / 2, (n_features,)).copy()
        self.offset_ = offset
        self.scale_ = np.where(scale > 0, scale, 1.0)

    def _scale(self, X):
        """``(X - offset_) / scale_`` as a fresh float32 array; ValueError when a finite
        value overflows float32 (the network works in float32)."""
        X64 = np.asarray(X, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            Y = (X64 - self.offset_) / self.scale_
            if not np.all(np.isfinite(Y)):
                # X - offset_ overflows for data spanning the float64 range; halving is
                # exact, so this is the same map where the plain one is finite
                Y = (X64 / 2 - self.offset_ / 2) / (self.scale_ / 2)
            Xs = Y.astype(np.float32)
        if not np.all(np.isfinite(Xs)):
            peak = float(np.max(np.abs(X64)))
            raise ValueError(
                f"X has values (|x| up to {peak:.3g}) that overflow float32 after the "
                f"scaling (scaling={self.scaling!r}), and the network computes in float32; "
                "bring X to a moderate range, or use a scaling fitted on data of this range.")
        return Xs

    def _unscale(self, Y):
        """Network outputs (tensor or array) back to the units and dtype of the fitted ``X``."""
        if isinstance(Y, torch.Tensor):
            Y = Y.detach().cpu().numpy()
        return (np.asarray(Y, dtype=np.float64) * self.scale_ + self.offset_).astype(
            self._fit_dtype)

    # -- fit, step 2: the network ------------------------------------------------------------
    def _check_sizes(self, name, value):
        """A sequence of positive ints (hidden widths), as a tuple; ValueError naming it."""
        try:
            sizes = tuple(value)
        except TypeError:
            sizes = None
        if sizes is None or not all(
                isinstance(h, numbers.Integral) and not isinstance(h, bool) and h >= 1
                for h in sizes):
            raise ValueError(f"{name} must be a sequence of positive ints, got {value!r}.")
        return tuple(int(h) for h in sizes)

    def _build_module(self, build, **size_params):
        """Build ``build()`` after refusing networks beyond ``_max_n_weights``; seeds torch.

        Parameters
        ----------
        build : callable
            Returns the torch module; called once on the ``meta`` device (to count weights
            and buffers without allocating them) and once for real, after seeding.
        **size_params : int or tuple of int
            The estimator's parameters that set the network's size, by name: the error
            names the largest of them.
        """
        def largest(value):
            if isinstance(value, (tuple, list)):
                return max((int(v) for v in value), default=0)
            return 0 if value is None else int(value)

        name, value = max(size_params.items(), key=lambda kv: largest(kv[1]),
                          default=("the size parameters", None))
        cap = self._max_n_weights

        def refuse(n_weights):
            size = f"{n_weights:,} weights" if n_weights is not None else "too many weights"
            raise ValueError(
                f"{name}={value!r} gives a network of {size} (parameters and buffers), beyond "
                f"the {cap:,} that {type(self).__name__} builds ({4 * cap / 2**30:.0f} GiB in "
                f"float32, several times that in training); lower {name}.")

        if size_params and largest(value) > cap:
            refuse(None)
        try:
            with torch.device("meta"):
                meta = build()
        except ValueError:
            # a layer's own message about its parameters (the layers' InvalidParameterError
            # is a TypeError too, which would otherwise read as a size problem)
            raise
        except (RuntimeError, OverflowError, TypeError, MemoryError):
            refuse(None)
        n_weights = sum(t.numel() for t in itertools.chain(meta.parameters(), meta.buffers()))
        if n_weights > cap:
            refuse(n_weights)
        seed_everything(self.random_state)
        return build()

    def _torch_generator(self):
        """A ``torch.Generator`` on ``device_`` seeded from torch's global generator (itself
        seeded from ``random_state``): for the estimator's own random draws (k-means)."""
        seed = int(torch.randint(0, 2**62, (1,)).item())
        generator = torch.Generator(device=self.device_)
        generator.manual_seed(seed)
        return generator

    def _make_net(self, net_class, module, *, n_samples, max_epochs=None, lr=None,
                  **net_params):
        """The skorch net with the shared settings; ``net_params`` are ``net_class``'s own.

        Parameters
        ----------
        net_class : type
            ``skorch.NeuralNet`` or a subclass.
        module : torch.nn.Module
        n_samples : int
            Training rows (for ``drop_last`` with batch normalisation).
        max_epochs, lr : optional
            Override the parameters of the same name (for an extra training stage).
        **net_params
            Keyword parameters of ``net_class`` (the method's settings) and skorch's own.
        """
        optimizer, fixed = OPTIMIZERS[self.optimizer]
        kwargs = {f"optimizer__{key}": value for key, value in fixed.items()}
        kwargs["optimizer__weight_decay"] = self.weight_decay
        batch_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                         for m in module.modules())
        if batch_norm:
            if self.batch_size < 2 and n_samples > 1:
                raise ValueError(
                    f"batch_size={self.batch_size}: {type(self).__name__}'s network has batch "
                    "normalisation, which needs at least 2 rows per batch.")
            # A last batch of one row breaks batch normalisation in training mode: drop it,
            # unless the data are smaller than a batch.
            if n_samples % self.batch_size == 1 and n_samples > self.batch_size:
                kwargs["iterator_train__drop_last"] = True
        callbacks = [("progress_bar", ProgressBar())] if self.verbose >= 2 else []
        kwargs.update(net_params)
        return net_class(
            module=module, criterion=torch.nn.MSELoss, optimizer=optimizer,
            lr=self.lr if lr is None else lr,
            max_epochs=self.max_epochs if max_epochs is None else max_epochs,
            batch_size=self.batch_size, iterator_train__shuffle=True, train_split=None,
            device=self.device_, callbacks=callbacks, verbose=int(self.verbose >= 1),
            **kwargs)

    def _record_history(self, net):
        """``history_`` (skorch's history without the per-batch rows) and ``n_iter_``."""
        self.history_ = [{key: value for key, value in row.items() if key != "batches"}
                         for row in net.history]
        self.n_iter_ = len(self.history_)

    # -- numpy <-> torch ---------------------------------------------------------------------
    def _to_tensor(self, X):
        """Raw rows of ``X`` as a scaled float32 tensor on ``device_``."""
        return torch.as_tensor(self._scale(X), device=self.device_)

    def _forward_batches(self, fn, Xs):
        """``fn`` on scaled rows ``Xs`` (numpy) batch by batch, without gradient; the
        concatenated output stays on ``device_``. The caller sets train or eval mode."""
        out = []
        with torch.no_grad():
            for rows in self._row_batches(Xs.shape[0]):
                out.append(fn(torch.as_tensor(Xs[rows], device=self.device_)))
        return torch.cat(out) if out else fn(torch.as_tensor(Xs[:0], device=self.device_))

    @staticmethod
    def _check_finite(tensor, what="the network's output"):
        """ValueError when ``tensor`` has NaN or infinity (inputs far outside the training
        range can overflow inside the network; a NaN would otherwise become code 0)."""
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{what} is not finite for some rows of X (NaN or infinity inside the "
                "network): these rows lie far outside the range the network was trained on.")

    # -- the contract's batching -------------------------------------------------------------
    def _bytes_per_row(self):
        # activations of every layer, forward only, float32, with slack for temporaries
        widths = sum(m.out_features for m in self.net_.module_.modules()
                     if isinstance(m, torch.nn.Linear))
        return 4 * 4 * (self.n_features_in_ + 2 * widths)

    # -- pickling ----------------------------------------------------------------------------
    def __setstate__(self, state):
        super().__setstate__(state)
        # skorch loads a CUDA-trained net on the CPU when CUDA is missing: follow the net.
        if "net_" in state:
            self.device_ = str(self.net_.device)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
