"""Autoencoders with a quantization bottleneck: SCQ (Gautam et al., 2023) and its VQ baselines.

:class:`VQAutoencoder` trains an encoder, a quantization bottleneck and a decoder end to end
(the paper's eq. 4: reconstruction loss plus the bottleneck's own loss) and exposes them as
an skvq quantizer: ``transform`` gives the hard codes of every latent position,
``inverse_transform`` decodes them. ``bottleneck`` picks the quantizer among SCQ and the
baselines of the paper's Table 1; :class:`SCQ` is ``VQAutoencoder(bottleneck="scq")`` with
SCQ's parameters spelled out.

The estimators are plain scikit-learn estimators that build a skorch ``NeuralNet`` inside
``fit`` (composition, not inheritance). This module imports torch and skorch: it is loaded
lazily by :mod:`skvq.neural`.
"""

import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch import NeuralNet
from torch import nn

from ._base import TorchQuantizer, check_image_shape
from .layers._catalogue import BOTTLENECKS, CATALOGUE, make_bottleneck

__all__ = ["SCQ", "VQAutoencoder", "make_bottleneck"]


def _perplexity(mass):
    """``exp`` of the entropy of each row of ``mass`` (normalised), averaged over rows."""
    probs = mass / np.maximum(mass.sum(1, keepdims=True), 1e-300)
    probs = np.clip(probs, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(probs > 0, probs * np.log(probs), 0.0).sum(1)
    return float(np.exp(entropy).mean())


# -- torch modules ------------------------------------------------------------------------
class MLPEncoder(nn.Module):
    """``Linear -> ReLU`` twice, then a linear map to ``n_latents`` vectors of ``dim``."""

    def __init__(self, n_features, hidden_size, dim, n_latents):
        super().__init__()
        self.n_latents, self.dim = int(n_latents), int(dim)
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, self.n_latents * self.dim))

    def forward(self, x):
        return self.net(x).reshape(x.shape[0], self.n_latents, self.dim)


class MLPDecoder(nn.Module):
    """The mirror of :class:`MLPEncoder`: ``(N, n_latents, dim) -> (N, n_features)``."""

    def __init__(self, n_features, hidden_size, dim, n_latents):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(int(n_latents) * int(dim), hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, n_features))

    def forward(self, z):
        return self.net(z.reshape(z.shape[0], -1))


class ConvEncoder(nn.Module):
    """``n_downsample`` strided ``4x4`` convolutions (each halves H and W), a ``3x3``
    convolution and a ``1x1`` projection to ``dim`` channels (a small VQ-VAE encoder)."""

    def __init__(self, image_shape, hidden_size, dim, n_downsample):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        channels = self.image_shape[0]
        layers = []
        for _ in range(n_downsample):
            layers += [nn.Conv2d(channels, hidden_size, 4, stride=2, padding=1), nn.ReLU()]
            channels = hidden_size
        layers += [nn.Conv2d(channels, hidden_size, 3, padding=1), nn.ReLU(),
                   nn.Conv2d(hidden_size, dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.reshape(x.shape[0], *self.image_shape))


class ConvDecoder(nn.Module):
    """The mirror of :class:`ConvEncoder`: a ``3x3`` convolution, then ``n_downsample``
    transposed ``4x4`` convolutions back to the image; returns flat images."""

    def __init__(self, image_shape, hidden_size, dim, n_downsample):
        super().__init__()
        image_shape = tuple(int(s) for s in image_shape)
        layers = [nn.Conv2d(dim, hidden_size, 3, padding=1), nn.ReLU()]
        for i in range(n_downsample):
            last = i == n_downsample - 1
            out = image_shape[0] if last else hidden_size
            layers.append(nn.ConvTranspose2d(hidden_size, out, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
        if n_downsample == 0:
            layers.append(nn.Conv2d(hidden_size, image_shape[0], 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        out = self.net(z)
        return out.reshape(out.shape[0], -1)


class QuantizedAutoencoder(nn.Module):
    """Encoder, bottleneck, decoder; ``forward`` returns ``(reconstruction, bottleneck
    loss)``, what :class:`_AutoencoderNet`'s loss expects."""

    def __init__(self, encoder, bottleneck, decoder):
        super().__init__()
        self.encoder = encoder
        self.bottleneck = bottleneck
        self.decoder = decoder

    def forward(self, x):
        out = self.bottleneck(self.encoder(x))
        return self.decoder(out.quantized), out.loss


class _AutoencoderNet(NeuralNet):
    """skorch net whose loss is the reconstruction MSE plus the bottleneck's loss (eq. 4)."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        reconstruction, bottleneck_loss = y_pred
        return super().get_loss(reconstruction, y_true, X=X, training=training) + bottleneck_loss


# -- estimators ---------------------------------------------------------------------------
class _QuantizedAutoencoderBase(TorchQuantizer):
    """Training, coding and decoding shared by :class:`VQAutoencoder` and :class:`SCQ`.

    A :class:`~skvq.neural._base.TorchQuantizer`: the shared parameters (scaling, optimizer,
    device, ...) and their constraints, the scaling, the size checks, the skorch net and
    ``history_``/``n_iter_`` come from the base; this class adds the autoencoder and asks
    its bottleneck (through the :class:`~skvq.neural.layers.Bottleneck` interface, never its
    type) for the codes' layout.
    """

    _parameter_constraints = {
        **TorchQuantizer._parameter_constraints,
        "codebook_size": [Interval(Integral, 1, None, closed="left")],
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "n_latents": [Interval(Integral, 1, None, closed="left")],
        "image_shape": [tuple, list, None],
        "n_downsample": [Interval(Integral, 0, None, closed="left")],
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "commitment_weight": [Interval(Real, 0, 1, closed="both")],
        "bottleneck_params": [dict, None],
    }

    # The parameters that set the bottleneck's size and loss: bottleneck_params may not set
    # them again (the layer's keyword -> the estimator's parameter).
    _OWN_BOTTLENECK_KEYS = {"dim": "latent_dim", "codebook_size": "codebook_size",
                            "image_fmap": "image_shape",
                            "commitment_weight": "commitment_weight"}

    def _bottleneck_spec(self):  # pragma: no cover - abstract
        """``(name, keyword arguments)`` of the bottleneck to build."""
        raise NotImplementedError

    # -- fit ------------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the autoencoder on ``X`` (reconstruction MSE plus the bottleneck's loss).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; with ``image_shape=(C, H, W)`` each row is an image flattened in
            C, H, W order (``n_features = C * H * W``).
        y : None
            Ignored.

        Returns
        -------
        self : object
            Fitted estimator.
        """
        name, params = self._bottleneck_spec()
        for key in params:
            if key in self._OWN_BOTTLENECK_KEYS:
                raise ValueError(
                    f"bottleneck_params may not set {key!r}: it comes from "
                    f"{type(self).__name__}'s {self._OWN_BOTTLENECK_KEYS[key]} parameter.")
        Xs = self._start_fit(X)
        image_shape = self._check_latent_layout(Xs.shape[1])
        sizes = {"hidden_size": self.hidden_size, "latent_dim": self.latent_dim,
                 "codebook_size": self.codebook_size}
        if image_shape is None:
            sizes["n_latents"] = self.n_latents
        module = self._build_module(
            lambda: self._make_module(name, params, Xs.shape[1], image_shape), **sizes)
        self._check_batch_memory(min(self.batch_size, Xs.shape[0]))
        net = self._make_net(_AutoencoderNet, module, n_samples=Xs.shape[0])
        net.initialize()
        if self.max_epochs:
            net.partial_fit(Xs, Xs)
        else:
            self._check_untrained_network_codes(net.module_, Xs[:1], name)
        net.module_.eval()
        bottleneck = net.module_.bottleneck
        self.net_ = net
        self._record_history(net)
        self.n_codes_ = int(bottleneck.n_codes)
        self.n_stages_ = int(bottleneck.n_stages)
        self.bits_per_sample_ = float(self._n_code_columns() * math.log2(self.n_codes_))
        self.bottleneck_name_ = name
        return self

    def _check_latent_layout(self, n_features):
        """``image_shape`` checked against ``X`` (or None); sets ``latent_shape_`` and
        ``n_latent_positions_``."""
        if self.image_shape is None:
            self.n_latent_positions_ = int(self.n_latents)
            self.latent_shape_ = (int(self.n_latents),)
            return None
        shape = check_image_shape(self.image_shape, n_features)
        # compare exponents first: 2**n_downsample of a huge n_downsample is a huge integer
        if self.n_downsample > min(shape[1:]).bit_length():
            raise ValueError(f"n_downsample={self.n_downsample} halves the image more times "
                             f"than its height and width {shape[1:]} allow.")
        shape = check_image_shape(shape, n_features, multiple_of=2**self.n_downsample)
        factor = 2**self.n_downsample
        self.latent_shape_ = (shape[1] // factor, shape[2] // factor)
        self.n_latent_positions_ = self.latent_shape_[0] * self.latent_shape_[1]
        return shape

    def _check_batch_memory(self, n_rows):
        """Refuse training batches whose activations (the distance table of every latent
        vector against every codeword above all) would exceed the base's size limit, before
        torch tries to allocate them."""
        n_bytes = n_rows * self._bytes_per_row()
        cap = 4 * self._max_n_weights
        if n_bytes > cap:
            raise ValueError(
                f"codebook_size={self.codebook_size}, hidden_size={self.hidden_size} and "
                f"batch_size={self.batch_size} give training batches of about "
                f"{n_bytes / 2**30:.3g} GiB of activations ({n_rows} rows of "
                f"{self.n_latent_positions_} latent vectors), beyond the {cap / 2**30:.0f} GiB "
                f"that {type(self).__name__} allows; lower batch_size or codebook_size.")

    def _make_module(self, name, params, n_features, image_shape):
        d, h = int(self.latent_dim), int(self.hidden_size)
        bottleneck = make_bottleneck(name, d, int(self.codebook_size),
                                     image_fmap=image_shape is not None,
                                     commitment_weight=self.commitment_weight, **params)
        if image_shape is None:
            encoder = MLPEncoder(n_features, h, d, self.n_latents)
            decoder = MLPDecoder(n_features, h, d, self.n_latents)
        else:
            encoder = ConvEncoder(image_shape, h, d, int(self.n_downsample))
            decoder = ConvDecoder(image_shape, h, d, int(self.n_downsample))
        return QuantizedAutoencoder(encoder, bottleneck, decoder)

    def _check_untrained_network_codes(self, module, Xs, name):
        """With ``max_epochs=0`` the codes come from the initialised network: refuse, in
        ``fit``, a bottleneck that cannot code before it has seen training data (a codebook
        drawn from the first training batch)."""
        module.eval()
        try:
            with torch.no_grad():
                module.bottleneck(module.encoder(torch.as_tensor(Xs, device=self.device_)))
        except RuntimeError as exc:
            raise ValueError(
                f"max_epochs=0 trains nothing, and the untrained {name!r} bottleneck "
                f"cannot code: {exc}") from exc

    # -- torch helpers --------------------------------------------------------------------
    @property
    def _module(self):
        return self.net_.module_

    def _codes_layout(self, codes):
        """``(N, n_code_columns)`` codes in the bottleneck's layout (``(N, *latent_shape_)``,
        plus the stage axis of a multi-stage bottleneck)."""
        lead = (codes.shape[0], *self.latent_shape_)
        return codes.reshape(self._module.bottleneck.code_shape(lead))

    def _encoder_output(self, X):
        """Encoder output of raw rows ``X`` (eval mode, no gradient), checked finite."""
        module = self._module
        module.eval()
        with torch.no_grad():
            z = module.encoder(self._to_tensor(X))
        self._check_finite(z, "the encoder's output")
        return z

    def _bottleneck_output(self, X):
        """Bottleneck output of validated rows ``X`` (eval mode, no gradient)."""
        z = self._encoder_output(X)
        with torch.no_grad():
            return self._module.bottleneck(z)

    # -- the contract's hooks -------------------------------------------------------------
    def _n_code_columns(self):
        return self.n_latent_positions_ * self.n_stages_

    def _code_cardinality(self):
        return self.n_codes_

    def _bytes_per_row(self):
        hidden = self.hidden_size
        if self.image_shape is not None:
            hidden *= int(np.prod(self.image_shape[1:]))
        positions = self.n_latent_positions_
        return 4 * (4 * self.n_features_in_ + 4 * hidden
                    + 4 * positions * (self.latent_dim + self.codebook_size))

    def _encode(self, X):
        codes = self._bottleneck_output(X).codes.reshape(X.shape[0], -1)
        return codes.cpu().numpy().astype(self._code_dtype())

    def _decode(self, codes):
        if codes.shape[0] == 0:
            return np.empty((0, self.n_features_in_), dtype=self._fit_dtype)
        module = self._module
        module.eval()
        codes = torch.as_tensor(np.asarray(codes, dtype=np.int64), device=self.device_)
        with torch.no_grad():
            latent = module.bottleneck.decode_codes(self._codes_layout(codes))
            return self._unscale(module.decoder(latent))


    # -- soft weights -----------------------------------------------------------------------
    def transform_weights(self, X):
        """Soft weights of every latent position over the codebook.

        For SCQ these are the convex weights ``P*`` of eq. (8) (Algorithm 2's output);
        for Gumbel VQ the softmax of the logits; for the hard VQ bottlenecks the one-hot
        rows of the codes. ``transform(X)`` is their argmax.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        weights : ndarray of shape (n_samples, n_latent_positions, codebook_size)
            float32 weights; ``inverse_transform`` decodes them.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        self._require_codebook_weights()
        bottleneck = self._module.bottleneck
        k = self.n_codes_
        out = np.empty((X.shape[0], self.n_latent_positions_, k), dtype=np.float32)
        for rows in self._row_batches(X.shape[0]):
            w = bottleneck.flat_weights(self._bottleneck_output(X[rows]))
            out[rows] = w.reshape(-1, self.n_latent_positions_, k).float().cpu().numpy()
        return out

    def _require_codebook_weights(self):
        if not self._module.bottleneck.has_codebook_weights:
            raise ValueError(
                f"bottleneck={self.bottleneck_name_!r} has {self.n_stages_} codebooks "
                "(stages), so no weights over one codebook; use transform for its codes.")

    def inverse_transform(self, X):
        """Reconstruct data from hard codes or from soft weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_latent_positions) or \
(n_samples, n_latent_positions, codebook_size)
            Integer codes (``transform``'s output), or soft weights
            (``transform_weights``'s output): each position is decoded as
            ``weights @ codebook``.

        Returns
        -------
        X_rec : ndarray of shape (n_samples, n_features)
            Reconstructions in the dtype of the training data.
        """
        check_is_fitted(self)
        if getattr(X, "ndim", np.ndim(X)) == 3:
            return self._inverse_transform_weights(X)
        return super().inverse_transform(X)

    def _inverse_transform_weights(self, weights):
        weights = np.asarray(weights)
        if weights.dtype.kind not in "biuf":
            raise TypeError(f"weights must be numeric, got dtype {weights.dtype}.")
        expected = (self.n_latent_positions_, self.n_codes_)
        if weights.shape[1:] != expected:
            raise ValueError(f"weights must have shape (n_samples, {expected[0]}, "
                             f"{expected[1]}), got {weights.shape}.")
        if not np.all(np.isfinite(weights)):
            raise ValueError("weights must be finite.")
        self._require_codebook_weights()
        module = self._module
        module.eval()
        bottleneck = module.bottleneck
        out = np.empty((weights.shape[0], self.n_features_in_), dtype=self._fit_dtype)
        with torch.no_grad():
            for rows in self._row_batches(weights.shape[0]):
                w = torch.as_tensor(weights[rows], dtype=torch.float32, device=self.device_)
                lead = (w.shape[0], *self.latent_shape_)
                latent = bottleneck.decode_weights(
                    bottleneck.weights_from_flat(w.reshape(-1, w.shape[-1]), lead))
                out[rows] = self._unscale(module.decoder(latent))
        return out

    # -- evaluation -------------------------------------------------------------------------
    def bottleneck_stats(self, X):
        """The SCQ paper's Table 1 metrics on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data (for example a test set).

        Returns
        -------
        stats : dict
            ``"reconstruction_mse"``: MSE per entry of the autoencoder's output, the
            decoder fed with the bottleneck's output as in training (SCQ's convex
            combinations ``C P*``, the codewords for the hard quantizers);
            ``"code_mse"``: MSE per entry of ``inverse_transform(transform(X))`` (SCQ
            decoded from the argmax of ``P*`` only); ``"quantization_error"``: mean of
            ``||z_e - z_q||^2 / d`` over latent vectors; ``"perplexity"``: ``exp`` of the
            entropy of the hard-code histogram over all of ``X`` (for residual VQ the mean
            over stages, each against its own codebook); ``"soft_perplexity"``: the same
            for the mean of the soft weights over all latent vectors (VQ-VAE's usual
            perplexity with SCQ's ``P*`` or Gumbel's softmax in place of the one-hot codes;
            equal to ``"perplexity"`` for the hard quantizers); ``"usage"``: fraction of
            codewords used at least once by a hard code. All errors are in the scaled
            space the network works in (``scaling``), as the paper's.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        if X.shape[0] == 0:
            raise ValueError("Cannot evaluate an empty array.")
        module = self._module
        module.eval()
        rec_sq = code_sq = q_err = 0.0
        n_vectors = 0
        counts = mass = None
        k = self.n_codes_
        bottleneck = module.bottleneck
        with torch.no_grad():
            for rows in self._row_batches(X.shape[0]):
                xs = self._to_tensor(X[rows])
                z = module.encoder(xs)
                self._check_finite(z, "the encoder's output")
                out = bottleneck(z)
                rec_sq += float((module.decoder(out.quantized) - xs).pow(2).sum())
                code_rec = module.decoder(bottleneck.decode_codes(out.codes))
                code_sq += float((code_rec - xs).pow(2).sum())
                n_vec = xs.shape[0] * self.n_latent_positions_
                q_err += float(out.quantization_error) * n_vec
                n_vectors += n_vec
                batch_counts = np.stack([
                    torch.bincount(c.reshape(-1), minlength=k).cpu().numpy()
                    for c in bottleneck.stage_codes(out.codes)])
                counts = batch_counts if counts is None else counts + batch_counts
                if out.weights is None:
                    batch_mass = batch_counts.astype(np.float64)
                else:
                    w = bottleneck.weights_to_flat(out.weights)
                    batch_mass = w.double().sum(0).cpu().numpy()[None]
                mass = batch_mass if mass is None else mass + batch_mass
        return {
            "reconstruction_mse": rec_sq / X.size,
            "code_mse": code_sq / X.size,
            "quantization_error": q_err / n_vectors,
            "perplexity": _perplexity(counts),
            "soft_perplexity": _perplexity(mass),
            "usage": float((counts > 0).mean()),
        }


_SHARED_DOC = """
    codebook_size : int, default=64
        Number of codewords ``K`` (per stage for ``bottleneck="rvq"``).
    latent_dim : int, default=8
        Length of each latent vector (the paper's embedding dimension :math:`\\tilde F`).
    n_latents : int, default=4
        Latent vectors per sample of the MLP autoencoder (ignored with ``image_shape``).
    image_shape : tuple of int (C, H, W) or None, default=None
        When given, rows of ``X`` are images flattened in C, H, W order and the autoencoder
        is convolutional: ``n_downsample`` stride-2 convolutions give a latent map of
        ``H / 2**n_downsample`` by ``W / 2**n_downsample`` positions, each quantized.
    n_downsample : int, default=2
        Halvings of the image size by the convolutional encoder.
    hidden_size : int, default=32
        Width of the MLP's hidden layers, or channels of the convolutional layers. The
        defaults of the architecture and of training (``hidden_size=32``, ``max_epochs=10``,
        ``batch_size=128``, ``lr=2e-3``) are the configuration of the SCQ Table 1 analog
        (``doc/benchmarks/bench_scq_table1.md``), where they train an MNIST-sized set
        (8,000 images of 28 x 28) in 10 s to 2 min on one CPU core; on a GPU, wider layers
        and more epochs reconstruct better.
    commitment_weight : float, default=0.25
        :math:`\\beta` of eq. (5) (every bottleneck but Gumbel; SCQ applies it to ``C P*``).
    scaling : {"standard", "minmax", "global"} or None, default="global"
        How ``X`` is mapped into the space the network works in (undone on output):
        ``"standard"``: zero mean and unit variance per feature; ``"minmax"``: each
        feature's training range to ``[-1, 1]``; ``"global"``: one affine map for all
        features, the training data's overall range to ``[-1, 1]``; ``None``: no scaling.
        The values and the default of every neural quantizer
        (:class:`~skvq.neural._base.TorchQuantizer`). "global" is the default because
        images are these estimators' data: a per-pixel standardisation blows up pixels
        that are nearly constant over the training set (MNIST's borders) and, in the Table
        1 analog, doubled the test MSE of ``SCQ()`` (40.5e-3 against 18.0e-3 unscaled);
        use "standard" for tabular features of unlike scales.
    max_epochs : int, default=10
        Training epochs. 0 trains nothing: the codes come from the initialised network
        (refused for a bottleneck that draws its codebook from the first training batch,
        ``codebook_init="data"``).
    batch_size : int, default=128
        Mini-batch size.
    lr : float, default=2e-3
        Learning rate.
    optimizer : {"adam", "adamw", "sgd"}, default="adam"
        torch optimizer; ``"sgd"`` has momentum 0.9, as for every neural quantizer.
    weight_decay : float, default=0.0
        The optimizer's weight decay.
    bottleneck_params : dict or None, default=None
        Further keyword arguments of the bottleneck's constructor (see
        :func:`~skvq.neural._autoencoder.make_bottleneck`).
    device : "auto", "cpu", "cuda", "cuda:<i>" or torch.device, default="auto"
        ``"auto"`` is CUDA when available, else the CPU; an explicit CUDA device on a
        machine without one raises ``ValueError``. The resolved device is ``device_``.
    verbose : int, default=0
        0: silent; 1: skorch's epoch log; 2 or more: a progress bar per epoch as well.
    random_state : int, RandomState instance or None, default=None
        Seeds the weight initialisation, the shuffling and the bottleneck's random draws:
        the same seed gives the same codes on the same device and torch build."""

_ATTRIBUTES_DOC = """
    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained network (``net_.module_``: ``encoder``, ``bottleneck``, ``decoder``).
        It works in the scaled space: continue training with
        ``net_.partial_fit(Xs, Xs)``, ``Xs = ((X - offset_) / scale_).astype("float32")``.
    device_ : str
        The device the network lives on.
    history_ : list of dict
        skorch's history, one dict per epoch (``train_loss``, ``dur``, ...).
    n_latent_positions_ : int
        Latent vectors per sample.
    latent_shape_ : tuple of int
        ``(n_latents,)``, or the latent map's ``(H', W')``.
    n_stages_ : int
        Codes per latent position: 1, or ``num_quantizers`` for residual VQ. ``transform``
        gives ``n_latent_positions_ * n_stages_`` code columns, the stages of each position
        next to each other.
    n_codes_ : int
        Values of each code (``codebook_size`` for the catalogue's bottlenecks; the
        bottleneck's ``n_codes``).
    bits_per_sample_ : float
        ``n_latent_positions_ * n_stages_ * log2(n_codes_)``.
    offset_, scale_ : ndarray of shape (n_features_in,)
        The input scaling: the network sees ``(X - offset_) / scale_``.
    n_iter_ : int
        Epochs run (recorded in ``history_``).
    bottleneck_name_ : str
        The bottleneck's name.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names."""


_BOTTLENECK_NAMES = ", ".join(f'"{name}"' for name in BOTTLENECKS)
_BOTTLENECK_ROWS = "\n".join(
    f'        - ``"{name}"`` ({entry.table1_row}): {entry.description}.'
    for name, entry in CATALOGUE.items())


class VQAutoencoder(_QuantizedAutoencoderBase):
    __doc__ = f"""Autoencoder with a vector-quantization bottleneck, trained end to end.

    Encoder ``E``, bottleneck ``Q`` and decoder ``D`` minimise the SCQ paper's eq. (4):
    the reconstruction MSE of ``D(Q(E(x)))`` plus the bottleneck's own loss (eq. 5 for the
    VQ bottlenecks). ``transform`` gives the hard code of every latent position,
    ``inverse_transform`` decodes codes (or soft weights). ``bottleneck`` chooses among the
    quantizers of the paper's Table 1, so that they are compared in one architecture.

    Read more in the :ref:`User Guide <scq>`.

    Parameters
    ----------
    bottleneck : {{{_BOTTLENECK_NAMES}}}, default="vq"
        The quantizer, one row of the catalogue of bottlenecks
        (:mod:`skvq.neural.layers._catalogue`), with the SCQ paper's Table 1 row:

{_BOTTLENECK_ROWS}

        Their parameters beyond the shared ones go in ``bottleneck_params`` (for example
        ``{{"num_quantizers": 4}}`` for ``"rvq"``).{_SHARED_DOC}
{_ATTRIBUTES_DOC}

    See Also
    --------
    SCQ : the same autoencoder with the soft convex quantization bottleneck.

    References
    ----------
    A. van den Oord, O. Vinyals and K. Kavukcuoglu, "Neural discrete representation
    learning", NeurIPS 2017. T. Gautam, R. Pryzant, Z. Yang, C. Zhu and S. Sojoudi, "Soft
    convex quantization: revisiting vector quantization with convex optimization", 2023.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skvq.neural import VQAutoencoder
    >>> X = load_digits().data[:300]
    >>> vq = VQAutoencoder(bottleneck="vq_replace", codebook_size=16, max_epochs=2,
    ...                    random_state=0).fit(X)
    >>> codes = vq.transform(X)
    >>> codes.shape, codes.dtype, vq.bits_per_sample_
    ((300, 4), dtype('uint8'), 16.0)
    >>> vq.inverse_transform(codes).shape
    (300, 64)
    """

    _parameter_constraints = {**_QuantizedAutoencoderBase._parameter_constraints,
                              "bottleneck": [StrOptions(set(BOTTLENECKS))]}

    def __init__(self, bottleneck="vq", *, codebook_size=64, latent_dim=8, n_latents=4,
                 image_shape=None, n_downsample=2, hidden_size=32, commitment_weight=0.25,
                 scaling="global", max_epochs=10, batch_size=128, lr=2e-3, optimizer="adam",
                 weight_decay=0.0, bottleneck_params=None, device="auto", verbose=0,
                 random_state=None):
        self.bottleneck = bottleneck
        self.codebook_size = codebook_size
        self.latent_dim = latent_dim
        self.n_latents = n_latents
        self.image_shape = image_shape
        self.n_downsample = n_downsample
        self.hidden_size = hidden_size
        self.commitment_weight = commitment_weight
        self.scaling = scaling
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.bottleneck_params = bottleneck_params
        self.device = device
        self.verbose = verbose
        self.random_state = random_state

    def _bottleneck_spec(self):
        return self.bottleneck, dict(self.bottleneck_params or {})


class SCQ(_QuantizedAutoencoderBase):
    __doc__ = f"""Soft convex quantization autoencoder (SCQVAE; Gautam et al., 2023).

    ``VQAutoencoder(bottleneck="scq")`` with SCQ's parameters: the bottleneck
    (:class:`~skvq.neural.SoftConvexQuantizer`) replaces each latent vector ``z_e`` by a
    convex combination ``C P*`` of the codewords, ``P*`` solving eq. (8) (exactly by
    default, or by Algorithm 2's relaxation): the least-squares fit of ``z_e`` plus ``alpha`` times the
    distance to the one-hot VQ code, over the probability simplex. Gradients reach the
    whole codebook. ``transform`` gives the hard codes (the argmax of ``P*`` at each latent
    position), ``transform_weights`` the convex weights ``P*``; ``inverse_transform`` decodes
    either.

    Symbols: the paper's :math:`\\lambda` is ``alpha``, :math:`K` is ``codebook_size``,
    :math:`\\tilde F` is ``latent_dim``, :math:`\\tilde H \\times \\tilde W` the latent map
    (``latent_shape_``).

    Read more in the :ref:`User Guide <scq>`.

    Parameters
    ----------
    alpha : float, default=0.003
        Regularisation :math:`\\lambda > 0` of eq. (8) towards the one-hot VQ solution
        (``alpha -> inf`` gives VQ). The default is the lowest test MSE of the exact solver
        at 0.1, 0.01, 0.003 and 0.001 in the pilot runs of the Table 1 analog
        (``doc/benchmarks/bench_scq_alpha.md``; the relaxed solver's best there is 0.001).
    solver : {{"relaxed", "exact"}}, default="exact"
        How eq. (8) is solved (see :class:`~skvq.neural.SoftConvexQuantizer`): "relaxed"
        is Algorithm 2 (a linear solve, then the exact projection onto the simplex;
        ``bottleneck_params={{"n_steps": m}}`` uses the paper's ``m`` alternating projection
        steps instead), "exact" solves eq. (8) itself (on CPU by a compiled active-set
        method, about 4x the relaxation's cost per step at d=64, K=1024; elsewhere by the
        same method batched in torch). "exact" is the default because it gives SCQ its
        quality: in the Table 1 analog it reconstructs markedly better than the relaxation
        and than every VQ baseline (``doc/benchmarks/bench_scq_table1.md``); "relaxed"
        trains several times faster. The codebook starts
        uniform in ``[-1/K, 1/K]``; ``bottleneck_params={{"codebook_init": "data"}}`` draws it
        from the first training batch instead.{_SHARED_DOC}
{_ATTRIBUTES_DOC}

    See Also
    --------
    VQAutoencoder : the same autoencoder with the VQ baselines' bottlenecks.

    Notes
    -----
    The decoder is trained on the convex combinations ``C P*``: reconstructions from the
    soft weights (``inverse_transform(transform_weights(X))``) are what the paper's
    reconstruction MSE measures; reconstructions from the hard codes alone (what
    ``transform`` keeps, ``bits_per_sample_`` bits per row) can be much worse. Both are
    reported by :meth:`bottleneck_stats`.

    References
    ----------
    T. Gautam, R. Pryzant, Z. Yang, C. Zhu and S. Sojoudi, "Soft convex quantization:
    revisiting vector quantization with convex optimization", 2023, arXiv:2310.03004.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from skvq.neural import SCQ
    >>> X = load_digits().data[:300]
    >>> scq = SCQ(codebook_size=16, max_epochs=2, random_state=0).fit(X)
    >>> scq.transform(X).shape, scq.transform_weights(X).shape
    ((300, 4), (300, 4, 16))
    >>> scq.inverse_transform(scq.transform_weights(X)).shape
    (300, 64)
    """

    _parameter_constraints = {
        **_QuantizedAutoencoderBase._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "solver": [StrOptions({"relaxed", "exact"})],
    }

    def __init__(self, alpha=0.003, solver="exact", *, codebook_size=64, latent_dim=8,
                 n_latents=4, image_shape=None, n_downsample=2, hidden_size=32,
                 commitment_weight=0.25, scaling="global", max_epochs=10, batch_size=128,
                 lr=2e-3, optimizer="adam", weight_decay=0.0, bottleneck_params=None,
                 device="auto", verbose=0, random_state=None):
        self.alpha = alpha
        self.solver = solver
        self.codebook_size = codebook_size
        self.latent_dim = latent_dim
        self.n_latents = n_latents
        self.image_shape = image_shape
        self.n_downsample = n_downsample
        self.hidden_size = hidden_size
        self.commitment_weight = commitment_weight
        self.scaling = scaling
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.bottleneck_params = bottleneck_params
        self.device = device
        self.verbose = verbose
        self.random_state = random_state

    def _bottleneck_spec(self):
        params = {"alpha": self.alpha, "solver": self.solver}
        params.update(self.bottleneck_params or {})
        return "scq", params
