"""DeepVQ (Le Tan et al., 2018) and its Table 1 baselines DCN and MDCN, as skvq quantizers.

Each estimator is a :class:`skvq.neural._base.TorchQuantizer` (a plain scikit-learn
estimator) that builds a skorch ``NeuralNet`` in ``fit`` and keeps it as ``net_``; the
method's settings are parameters of that net too (``net_.get_params()``), so
``net_.partial_fit`` continues training after ``fit``. This module imports torch
and skorch; :mod:`skvq.neural` loads it lazily.
"""

import numbers
import warnings

import numpy as np
import torch
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from skorch import NeuralNet
from skorch.dataset import unpack_data

from .. import packing
from ..base import BaseQuantizer
from ._base import TorchQuantizer
from .layers._deepvq_modules import (
    AutoEncoder,
    ClusteredAutoEncoder,
    binary_penalty_step,
    frozen_batch_statistics,
)
from .layers._kmeans_torch import kmeans

__all__ = ["DCN", "DeepVQ", "MDCN", "binary_penalty_step", "pack_codes", "unpack_codes"]


# -- packed codes -----------------------------------------------------------------------------
def pack_codes(bits):
    """Pack rows of bits into bytes: :func:`skvq.packing.pack_codes` with 1-bit codes.

    Parameters
    ----------
    bits : array-like of shape (n_samples, n_bits)
        Entries in ``{0, 1}``, as returned by :meth:`DeepVQ.transform`.

    Returns
    -------
    packed : ndarray of shape (n_samples, ceil(n_bits / 8)), dtype uint8
        Bit ``j`` of a row is bit ``j % 8`` (least significant first) of byte ``j // 8``,
        the layout of every packed code in skvq (:mod:`skvq.packing`); the unused high bits
        of the last byte are 0.

    Examples
    --------
    >>> import numpy as np
    >>> from skvq.neural._deepvq import pack_codes, unpack_codes
    >>> bits = np.array([[1, 0, 1, 1, 0, 0, 0, 0, 1, 1]], dtype=np.uint8)
    >>> pack_codes(bits)
    array([[13,  3]], dtype=uint8)
    >>> unpack_codes(pack_codes(bits), 10)
    array([[1, 0, 1, 1, 0, 0, 0, 0, 1, 1]], dtype=uint8)
    """
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"bits must be a 2-D array, got shape {bits.shape}.")
    if bits.size and (bits.min() < 0 or bits.max() > 1):
        raise ValueError("bits must contain only 0 and 1.")
    return packing.pack_codes(bits.astype(np.uint8), 1)


def unpack_codes(packed, n_bits):
    """Inverse of :func:`pack_codes`: ``(n, ceil(n_bits / 8))`` bytes to ``(n, n_bits)`` bits.

    Parameters
    ----------
    packed : array-like of shape (n_samples, ceil(n_bits / 8)), integers in [0, 255]
    n_bits : int

    Returns
    -------
    bits : ndarray of shape (n_samples, n_bits), dtype uint8
    """
    packed = np.asarray(packed)
    n_bytes = packing.packed_row_bytes(n_bits, 1)
    if packed.ndim != 2 or packed.shape[1] != n_bytes:
        raise ValueError(f"packed codes must have shape (n_samples, {n_bytes}) for "
                         f"n_bits={n_bits}, got {packed.shape}.")
    return packing.unpack_codes(packed.astype(np.uint8), 1, int(n_bits))


# -- the skorch nets ---------------------------------------------------------------------------
def _batch_tensor(net, batch):
    Xi, _ = unpack_data(batch)
    if isinstance(Xi, torch.Tensor):
        return Xi.to(net.device)
    return torch.as_tensor(Xi, device=net.device)


class _DeepVQNet(NeuralNet):
    """skorch net whose training step is DeepVQ's alternation: B-step (eq. 6-8), W-step (eq. 5).

    The method's settings are this net's own parameters (:class:`DeepVQ` documents them), so
    that ``get_params``, ``set_params``, ``partial_fit`` and pickling see them. The epoch
    index (for ``warmup_epochs``) is the length of the net's history, so ``partial_fit``
    after ``fit`` continues with B-steps.
    """

    def __init__(self, *args, gamma=1.0, rho=1e-4, rho_growth=3.0, b_iter=10, b_step_size=0.3,
                 penalty="squared", warmup_epochs=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.gamma = gamma
        self.rho = rho
        self.rho_growth = rho_growth
        self.b_iter = b_iter
        self.b_step_size = b_step_size
        self.penalty = penalty
        self.warmup_epochs = warmup_epochs

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        x = _batch_tensor(self, batch)
        module = self.module_
        n = x.shape[0]
        epoch = len(self.history) - 1
        gamma = float(self.gamma)
        if epoch < self.warmup_epochs:
            # Optional warm-up: stochastic bits, P(b = 1) = (1 + f) / 2, straight-through
            # gradient to the encoder (not the paper's method; see DeepVQ's Notes).
            f = module.encode(x)
            u = torch.rand_like(f)
            b = torch.where(u < (1.0 + f) / 2.0, 1.0, -1.0).to(f.dtype)
            rec = module.decode(f + (b - f).detach())
            loss = torch.sum((rec - x) ** 2) / n
            n_rounded = 0
        else:
            with frozen_batch_statistics(module):
                with torch.no_grad():
                    f0 = module.encode(x)

                def h(B):  # eq. (6), W fixed
                    return torch.sum((module.decode(B) - x) ** 2) + gamma * torch.sum((f0 - B) ** 2)

                B, n_rounded = binary_penalty_step(
                    h, f0, rho=float(self.rho), rho_growth=float(self.rho_growth),
                    n_iter=int(self.b_iter), step_size=float(self.b_step_size),
                    penalty=self.penalty)
            # W-step, eq. (5) with B fixed; per-sample sums averaged over the batch.
            f = module.encode(x)
            rec = module.decode(B)
            loss = (torch.sum((rec - x) ** 2) + gamma * torch.sum((f - B) ** 2)) / n
        loss.backward()
        self.history.record_batch("n_rounded", n_rounded)
        return {"loss": loss, "y_pred": rec}


class _DCNNet(NeuralNet):
    """skorch net for DCN (eq. 9) and MDCN (eq. 10) on a :class:`ClusteredAutoEncoder`.

    Parameters of its own: ``lam`` (``lambda``), ``reconstruct_from`` (``"latent"``: DCN's
    ``g(f(x))``; ``"centroid"``: MDCN's ``g(c_s)``) and ``clustering`` (False: plain
    reconstruction, the pre-training before k-means; True: the joint training). The
    centroids and their counts are the module's buffers, updated in place.
    """

    def __init__(self, *args, lam=1.0, reconstruct_from="latent", clustering=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.lam = lam
        self.reconstruct_from = reconstruct_from
        self.clustering = clustering

    def train_step_single(self, batch, **fit_params):
        self._set_training(True)
        x = _batch_tensor(self, batch)
        module = self.module_
        n = x.shape[0]
        f = module.encode(x)
        if not self.clustering:
            rec = module.decode(f)
            loss = torch.sum((rec - x) ** 2) / n
        else:
            C, counts = module.centroids, module.cluster_counts
            s = module.assign(f.detach())  # assignment step, W fixed
            c = C[s]
            rec = module.decode(f if self.reconstruct_from == "latent" else c)
            loss = (torch.sum((rec - x) ** 2)
                    + 0.5 * float(self.lam) * torch.sum((f - c) ** 2)) / n
            with torch.no_grad():
                # DCN's centroid update: c_k <- c_k - (1 / count_k) (c_k - f(x_i)), applied
                # to the batch at once (the mean of the batch's points of cluster k).
                k = C.shape[0]
                n_k = torch.bincount(s, minlength=k).to(C.dtype)
                sums = torch.zeros_like(C).index_add_(0, s, f.detach())
                counts += n_k
                hit = n_k > 0
                C[hit] += (sums[hit] - n_k[hit, None] * C[hit]) / counts[hit, None]
        loss.backward()
        return {"loss": loss, "y_pred": rec}


# -- DeepVQ ---------------------------------------------------------------------------------
class DeepVQ(TorchQuantizer):
    """DeepVQ: a binary auto-encoder whose encoder outputs the L-bit code (Le Tan et al., 2018).

    An encoder network ``f`` maps a vector to ``L`` numbers in ``(-1, 1)``; the code is
    ``sign(f(x))``, stored as ``L`` bits; a decoder network ``g`` maps the code back. No
    codebook of ``2**L`` codewords is stored or searched, so encoding costs one forward pass
    whatever ``L``. Training follows the paper's alternating optimisation of

    .. math::

        \\min_{W_1, W_2, B}\\; \\|g(B) - X\\|_F^2 + \\gamma \\|f(X) - B\\|_F^2
        \\quad \\text{s.t.}\\quad B \\in \\{-1, 1\\}^{N \\times L}  \\qquad (4)

    on every mini-batch: the **B-step** (eq. 6-8) solves for binary ``B`` with the networks
    fixed by the exact penalty method of Yuan and Ghanem (:func:`binary_penalty_step`), then
    the **W-step** (eq. 5) takes one optimizer step on the networks' weights with ``B`` fixed.

    The defaults are the settings tuned on the paper's MNIST experiment (Table 1): 90 epochs
    of Adam at ``lr=1e-3``, the first 60% with stochastic bits (``warmup_epochs="auto"``),
    dropout 0.1 in the decoder, and a B-step that starts from a small penalty
    (``rho=1e-4``, ``rho_growth=3``, ``b_step_size=0.3``). On 8,000 MNIST images they give
    a lower test error than the paper's Table 1 at every code length it reports, in a few
    minutes per code length on one CPU thread (``doc/benchmarks/bench_deepvq_table1.md``).
    The paper's own schedule is ``optimizer="sgd", lr=1e-5, max_epochs=3,
    pretrain_epochs=1, warmup_epochs=0, dropout=0.0, rho=0.05``.

    Read more in the :ref:`User Guide <deepvq>`.

    Parameters
    ----------
    n_bits : int, default=16
        Code length ``L`` (bits per vector).
    hidden_sizes : tuple of int, default=(500, 255)
        Encoder hidden widths (the paper's 500, 255); each hidden layer is
        ``Linear -> tanh -> BatchNorm``, the code layer ``Linear -> tanh``.
    tied_weights : bool, default=True
        Decoder mirrored from the encoder with the transposed encoder weights (the paper);
        False gives the decoder its own weights.
    decoder_hidden : tuple of int or None, default=None
        Decoder hidden widths from the code outwards (needs ``tied_weights=False``); None
        mirrors the encoder. A wider decoder is one of the documented improvements.
    dropout : float, default=0.1
        Dropout rate after each decoder hidden layer (an improvement, not in the paper;
        0 is the paper's network).
    gamma : float, default=1.0
        ``gamma`` of eq. (4)-(6): weight of ``||f(X) - B||^2`` (the paper uses 1).
    rho : float, default=1e-4
        Initial penalty ``rho`` of eq. (8) in each B-step. The paper's 0.05 binarises ``B``
        in the first iteration at batch size 128 (the penalty's gradient grows with
        ``N * L``), which reduces the B-step to rounding ``f(X)`` after one gradient step; a
        small start lets the first iterations lower ``h(B)`` before the penalty binarises.
    rho_growth : float, default=3.0
        ``rho`` is multiplied by this after every inner iteration of a B-step, so that ``B``
        ends binary (the schedule the paper leaves open).
    b_iter : int, default=10
        Inner iterations (alternations of ``V`` and ``B``) per B-step, per batch (paper: 10).
    b_step_size : float, default=0.3
        Projected-gradient step on ``B`` in the B-step (``h`` summed over the batch, as in
        eq. 6).
    penalty : {"squared", "linear"}, default="squared"
        The B-step's penalty on ``<B, V> = NL``: eq. (8)'s ``rho (<B, V> - NL)^2`` or
        Yuan and Ghanem's exact ``rho (NL - <B, V>)``; see :func:`binary_penalty_step`.
    pretrain_epochs : int, default=0
        Epochs of greedy layer-wise pre-training (Bengio et al., 2007) before the
        alternating training, as in the paper: each layer is trained as a one-layer
        auto-encoder on the previous layer's output. 0 skips it.
    warmup_epochs : int or "auto", default="auto"
        The first epochs of ``max_epochs`` that replace the B-step by stochastic bits with
        a straight-through gradient (an improvement, not in the paper); the remaining
        ``max_epochs - warmup_epochs`` alternate B-steps and W-steps. "auto" is 60% of
        ``max_epochs``, rounded down (``(3 * max_epochs) // 5``: 54 of the default 90), so
        it follows ``max_epochs``; an int is used as given and must not exceed
        ``max_epochs`` (``ValueError``); 0 is the paper's method throughout. The value
        used is ``warmup_epochs_``.
    finetune_epochs : int, default=0
        Epochs after the alternating training that fit the decoder alone to the codes used
        at test time, ``sign(f(X))``, with the encoder frozen (an improvement).
    scaling : {"global", "standard", "minmax"} or None, default="global"
        Map of ``X`` into the network's space, undone on output. "global": one affine map
        for all features, the training data's range to ``[-1, 1]`` (the paper normalises
        the data to ``[-1, 1]``; a per-feature map would weight the error of nearly
        constant features up); "standard" and "minmax": per feature (see
        :class:`~skvq.neural._base.TorchQuantizer`); None: none.
    optimizer : {"adam", "adamw", "sgd"}, default="adam"
        W-step optimizer; "sgd" is SGD with momentum 0.9 (the paper, with ``lr=1e-5``).
    lr : float, default=1e-3
        Learning rate of the W-step.
    weight_decay : float, default=0.0
        L2 penalty of the optimizer.
    batch_size : int, default=128
        Mini-batch size (the paper's 128); each batch gets its own B-step. At least 2 (the
        network has batch normalisation); a last batch of one row is dropped.
    max_epochs : int, default=90
        Epochs of training, the warm-up's included (the paper: 3); 0 keeps the initialised
        (or pre-trained) network. Each epoch after the warm-up costs about ``b_iter + 1``
        passes through the decoder per batch, a warm-up epoch one.
    device : "auto", "cpu", "cuda", "cuda:<i>" or torch.device, default="auto"
        "auto" is CUDA when available, else the CPU. The resolved device is ``device_``.
    random_state : int, RandomState instance or None, default=None
        Seeds torch (initialisation, shuffling, stochastic bits).
    verbose : int, default=0
        0: silent; 1: skorch's epoch log; 2: a progress bar per epoch too.

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained net; ``net_.module_`` is the :class:`torch.nn.Module` auto-encoder.
        ``gamma``, ``rho``, ``rho_growth``, ``b_iter``, ``b_step_size``, ``penalty`` and
        ``warmup_epochs`` are its parameters too (``net_.get_params()``), and
        ``net_.partial_fit(Xs)`` on scaled data ``Xs = ((X - offset_) / scale_)`` in
        float32 continues the alternating training.
    device_ : str
        Device the net lives on.
    bits_per_sample_ : float
        ``n_bits``.
    warmup_epochs_ : int
        Warm-up epochs used (``warmup_epochs`` with "auto" resolved); also the net's
        ``warmup_epochs``.
    n_rounded_ : int
        Entries of ``B`` rounded at the end of a B-step because they had not reached the
        faces of the box (0 when the penalty schedule binarises ``B`` by itself).
    history_ : list of dict
        skorch's per-epoch history (``train_loss``: the W-step loss per image, eq. 5, or
        the warm-up's reconstruction loss; ``dur``), then the fine-tuning epochs (their
        ``train_loss`` is the mean squared error per entry).
    n_iter_ : int
        Epochs in ``history_`` (``max_epochs + finetune_epochs``).
    offset_, scale_ : ndarray of shape (n_features_in,)
        The scaling: the network sees ``(X - offset_) / scale_`` (with
        ``scaling="global"`` every entry of each is the same number).
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    DCN : deep clustering network baseline (k-means in a learned latent space).
    skvq.PQ : product quantization.

    Notes
    -----
    Symbols: ``L`` = ``n_bits``, ``gamma`` = ``gamma``, ``rho`` = ``rho``; ``eta`` (the
    learning rate) = ``lr``; the momentum ``alpha`` is 0.9 with ``optimizer="sgd"``.

    Choices the paper leaves open, made here:

    - ``B`` is solved per mini-batch (``N`` = the batch), started from ``f(X)``;
    - the V-step of eq. (8) is solved in closed form (``V = sqrt(NL) B / ||B||``), the
      B-step by one projected gradient step per inner iteration;
      ``rho`` grows geometrically; entries still inside the box at the end are rounded
      (counted in ``n_rounded_``);
    - the code layer has ``tanh`` but no batch normalisation (which would leave the box
      ``[-1, 1]`` that ``B`` lives in); the decoder's output layer is linear;
    - the W-step loss is eq. (5) summed over features and averaged over the batch;
    - in the B-step, batch normalisation uses the batch's statistics but its running
      averages are not updated, and dropout is off.

    Codes: ``transform`` returns ``(n, L)`` bits ``1[f(x) >= 0]`` (``b = 2 * bit - 1``);
    :meth:`pack_codes` packs them into ``ceil(L / 8)`` bytes per row, and
    ``inverse_transform`` accepts either form.

    References
    ----------
    D.-K. Le Tan, H. Le, T. Hoang, T.-T. Do and N.-M. Cheung, "DeepVQ: A Deep Network
    Architecture for Vector Quantization", CVPR Workshops, 2018.

    G. Yuan and B. Ghanem, "An exact penalty method for binary optimization based on MPEC
    formulation", AAAI, 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from skvq.neural import DeepVQ
    >>> X = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
    >>> q = DeepVQ(n_bits=8, hidden_sizes=(32,), max_epochs=5, random_state=0).fit(X)
    >>> bits = q.transform(X)
    >>> bits.shape, bits.dtype, q.pack_codes(bits).shape
    ((200, 8), dtype('uint8'), (200, 1))
    >>> q.inverse_transform(bits).shape
    (200, 16)
    """

    _parameter_constraints = {
        **TorchQuantizer._parameter_constraints,
        "n_bits": [Interval(numbers.Integral, 1, None, closed="left")],
        "hidden_sizes": ["array-like"],
        "tied_weights": ["boolean"],
        "decoder_hidden": ["array-like", None],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "gamma": [Interval(numbers.Real, 0, None, closed="left")],
        "rho": [Interval(numbers.Real, 0, None, closed="neither")],
        "rho_growth": [Interval(numbers.Real, 1, None, closed="left")],
        "b_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "b_step_size": [Interval(numbers.Real, 0, None, closed="neither")],
        "penalty": [StrOptions({"squared", "linear"})],
        "pretrain_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "warmup_epochs": [Interval(numbers.Integral, 0, None, closed="left"),
                          StrOptions({"auto"})],
        "finetune_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
    }

    _min_fit_samples = 2  # batch normalisation

    def __init__(self, n_bits=16, *, hidden_sizes=(500, 255), tied_weights=True,
                 decoder_hidden=None, dropout=0.1, gamma=1.0, rho=1e-4, rho_growth=3.0,
                 b_iter=10, b_step_size=0.3, penalty="squared", pretrain_epochs=0,
                 warmup_epochs="auto", finetune_epochs=0, scaling="global", optimizer="adam",
                 lr=1e-3, weight_decay=0.0, batch_size=128, max_epochs=90, device="auto",
                 random_state=None, verbose=0):
        self.n_bits = n_bits
        self.hidden_sizes = hidden_sizes
        self.tied_weights = tied_weights
        self.decoder_hidden = decoder_hidden
        self.dropout = dropout
        self.gamma = gamma
        self.rho = rho
        self.rho_growth = rho_growth
        self.b_iter = b_iter
        self.b_step_size = b_step_size
        self.penalty = penalty
        self.pretrain_epochs = pretrain_epochs
        self.warmup_epochs = warmup_epochs
        self.finetune_epochs = finetune_epochs
        self.scaling = scaling
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the encoder and decoder by alternating B-steps and W-steps.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training vectors, at least 2.
        y : None
            Ignored.

        Returns
        -------
        self : object
            Fitted quantizer.
        """
        hidden = self._check_sizes("hidden_sizes", self.hidden_sizes)
        decoder_hidden = (None if self.decoder_hidden is None
                          else self._check_sizes("decoder_hidden", self.decoder_hidden))
        if self.tied_weights and decoder_hidden is not None and decoder_hidden != hidden[::-1]:
            raise ValueError("decoder_hidden must be None (the mirrored encoder) when "
                             "tied_weights=True; set tied_weights=False for another decoder.")
        if self.warmup_epochs == "auto":
            # 60% of the epochs, the share tuned on MNIST (54 of 90); integer arithmetic so
            # that 90 gives exactly 54.
            warmup_epochs = (3 * self.max_epochs) // 5
        elif self.warmup_epochs > self.max_epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} is larger than "
                             f"max_epochs={self.max_epochs}; it counts the first epochs of "
                             "max_epochs (use warmup_epochs='auto' for 60% of them).")
        else:
            warmup_epochs = int(self.warmup_epochs)
        Xs = self._start_fit(X)
        module = self._build_module(
            lambda: AutoEncoder(Xs.shape[1], hidden, self.n_bits, code_activation="tanh",
                                tied=self.tied_weights, decoder_hidden=decoder_hidden,
                                dropout=self.dropout),
            hidden_sizes=hidden, decoder_hidden=decoder_hidden, n_bits=self.n_bits)
        if self.pretrain_epochs:
            self._pretrain(module, Xs)
        net = self._make_net(
            _DeepVQNet, module, n_samples=Xs.shape[0], gamma=self.gamma, rho=self.rho,
            rho_growth=self.rho_growth, b_iter=self.b_iter, b_step_size=self.b_step_size,
            penalty=self.penalty, warmup_epochs=warmup_epochs)
        net.initialize()
        if self.max_epochs:
            net.partial_fit(Xs, None)
        n_rounded = sum(sum(b.get("n_rounded", 0) for b in epoch["batches"])
                        for epoch in net.history)
        if self.finetune_epochs:
            self._finetune_decoder(net, Xs)
        net.module_.eval()
        self.net_ = net
        self._record_history(net)
        self.n_rounded_ = int(n_rounded)
        self.warmup_epochs_ = warmup_epochs
        self.bits_per_sample_ = float(self.n_bits)
        return self

    # -- optional training stages ---------------------------------------------------------
    def _plain_net(self, module, max_epochs, n_samples):
        """A skorch net that fits ``module(X)`` to a target by MSE (pre-training and
        fine-tuning stages)."""
        return self._make_net(NeuralNet, module, n_samples=n_samples, max_epochs=max_epochs)

    def _pretrain(self, module, Xs):
        """Greedy layer-wise pre-training: each encoder layer as a one-layer auto-encoder."""
        inputs = Xs
        n_layers = len(module.enc)
        for k in range(n_layers):
            last = k == n_layers - 1
            enc = module.enc[k]
            if module.tied:
                decoder, bias = None, module.dec_bias[n_layers - 1 - k]
            else:
                decoder, bias = module.dec[n_layers - 1 - k], None
                if decoder.weight.shape != enc.weight.t().shape:
                    # a decoder wider than the mirror: pre-train against a throw-away layer
                    decoder = torch.nn.Linear(enc.out_features, enc.in_features)
            layer = _OneLayerAE(enc, None if last else module.enc_bn[k],
                                decoder_bias=bias, decoder=decoder)
            net = self._plain_net(layer, self.pretrain_epochs, inputs.shape[0])
            net.initialize()
            net.module_ = layer.to(self.device_)
            net.initialize_optimizer()
            net.partial_fit(inputs, inputs)
            layer.eval()
            inputs = self._forward_batches(layer.hidden, inputs).cpu().numpy()
        module.to("cpu")

    def _finetune_decoder(self, net, Xs):
        """Fit the decoder to the test-time codes ``sign(f(X))``, encoder frozen."""
        module = net.module_
        module.eval()
        codes = self._forward_batches(
            lambda x: torch.where(module.encode(x) >= 0, 1.0, -1.0), Xs).cpu().numpy()
        dec = _DecoderOnly(module)
        ft = self._plain_net(dec, self.finetune_epochs, Xs.shape[0])
        ft.initialize()
        ft.module_ = dec.to(self.device_)
        ft.initialize_optimizer()
        ft.partial_fit(codes, Xs)
        net.history.extend(ft.history)

    # -- the contract's hooks -------------------------------------------------------------
    def _n_code_columns(self):
        return self.n_bits

    def _code_cardinality(self):
        return 2

    def _bytes_per_row(self):
        widths = sum(self._check_sizes("hidden_sizes", self.hidden_sizes))
        if self.decoder_hidden is not None:
            widths += sum(self._check_sizes("decoder_hidden", self.decoder_hidden))
        return 4 * 4 * (widths + self.n_features_in_ + self.n_bits)

    def _encode(self, X):
        module = self.net_.module_
        module.eval()
        with torch.no_grad():
            f = module.encode(self._to_tensor(X))
        self._check_finite(f, "the encoder's output f(X)")
        return (f >= 0).to(torch.uint8).cpu().numpy()

    def _decode(self, codes):
        module = self.net_.module_
        module.eval()
        b = torch.as_tensor(2.0 * np.asarray(codes, dtype=np.float32) - 1.0, device=self.device_)
        with torch.no_grad():
            rec = module.decode(b)
        return self._unscale(rec)

    # -- packed codes ---------------------------------------------------------------------
    def pack_codes(self, bits):
        """Pack ``(n, n_bits)`` bits into ``(n, ceil(n_bits / 8))`` uint8 bytes.

        Parameters
        ----------
        bits : array-like of shape (n_samples, n_bits)
            Output of :meth:`transform`.

        Returns
        -------
        packed : ndarray of shape (n_samples, ceil(n_bits / 8)), dtype uint8
            See :func:`pack_codes` for the bit order.
        """
        check_is_fitted(self)
        bits = BaseQuantizer._check_codes(self, bits)
        return pack_codes(bits)

    def unpack_codes(self, packed):
        """Unpack bytes from :meth:`pack_codes` into ``(n, n_bits)`` bits (uint8)."""
        check_is_fitted(self)
        return self._check_codes(packed)

    def _check_codes(self, codes):
        """Accept ``(n, n_bits)`` bits or ``(n, ceil(n_bits / 8))`` packed bytes."""
        if hasattr(codes, "to_numpy"):
            codes = codes.to_numpy()
        codes = np.asarray(codes)
        n_bytes = -(-self.n_bits // 8)
        if codes.ndim == 2 and codes.shape[1] == n_bytes and n_bytes != self.n_bits:
            if codes.dtype == object or codes.dtype.kind not in "iu":
                raise TypeError(f"packed codes must be integers (bytes), got dtype {codes.dtype}.")
            if codes.size and (codes.min() < 0 or codes.max() > 255):
                raise ValueError("packed codes out of range: expected bytes in [0, 255], got "
                                 f"values in [{codes.min()}, {codes.max()}].")
            pad = 8 * n_bytes - self.n_bits
            if pad and codes.size and np.any(codes[:, -1].astype(np.uint8)
                                             >> np.uint8(8 - pad)):
                raise ValueError(f"packed codes: the {pad} unused high bits of the last byte "
                                 "must be 0; these are not codes from pack_codes.")
            return unpack_codes(codes, self.n_bits)
        try:
            return super()._check_codes(codes)
        except ValueError as exc:
            if "columns" in str(exc) and n_bytes != self.n_bits:
                raise ValueError(f"codes have {codes.shape[1]} columns; expected {self.n_bits} "
                                 f"bits or {n_bytes} packed bytes per row.") from exc
            raise


class _OneLayerAE(torch.nn.Module):
    """One encoder layer and its mirrored decoder layer, for layer-wise pre-training."""

    def __init__(self, layer, bn, decoder_bias=None, decoder=None):
        super().__init__()
        self.layer, self.bn = layer, bn
        self.decoder_bias, self.decoder = decoder_bias, decoder

    def hidden(self, x):
        h = torch.tanh(self.layer(x))
        return self.bn(h) if self.bn is not None else h

    def forward(self, x):
        h = self.hidden(x)
        if self.decoder is not None:
            return self.decoder(h)
        return torch.nn.functional.linear(h, self.layer.weight.t(), self.decoder_bias)


class _DecoderOnly(torch.nn.Module):
    """The decoder of an :class:`AutoEncoder` with the encoder frozen (for fine-tuning)."""

    def __init__(self, autoencoder):
        super().__init__()
        self.ae = autoencoder
        for p in self.ae.enc.parameters():
            p.requires_grad_(False)

    def forward(self, b):
        return self.ae.decode(b)


# -- DCN and MDCN ----------------------------------------------------------------------------
class DCN(TorchQuantizer):
    """Deep clustering network (Yang et al., 2017) used as a vector quantizer (eq. 9).

    An auto-encoder is trained jointly with k-means in its latent space:

    .. math::

        \\min \\sum_i \\|g(f(x_i)) - x_i\\|^2
        + \\frac{\\lambda}{2}\\|f(x_i) - C s_i\\|^2 \\qquad (9)

    The code of ``x`` is the index of the nearest of the ``K = 2**n_bits`` latent centroids
    to ``f(x)`` and its reconstruction is ``g(c_s)``, so DCN is a VQ whose codewords are the
    decoded centroids (``codebook_``). DeepVQ's paper uses it as a baseline.

    Read more in the :ref:`User Guide <deepvq>`.

    Parameters
    ----------
    n_bits : int, default=8
        Code length ``L``: ``K = 2**n_bits`` clusters (at most ``n_samples``; more are
        reduced with a warning, the rate stays ``n_bits``).
    latent_dim : int, default=10
        Width of the latent space ``f(x)`` (DCN's MNIST setting).
    hidden_sizes : tuple of int, default=(500, 255)
        Encoder hidden widths (DeepVQ's, so that Table 1 compares like with like).
    lam : float, default=1.0
        ``lambda`` of eq. (9)/(10): weight of the clustering term.
    pretrain_epochs : int, default=10
        Epochs of plain auto-encoder training before k-means initialises ``C``.
    kmeans_iter : int, default=20
        Lloyd iterations at most of that initial k-means (greedy k-means++ seeding), run in
        torch on ``device_`` (:func:`skvq.neural.layers._kmeans_torch.kmeans`).
    scaling : {"global", "standard", "minmax"} or None, default="global"
        As :class:`DeepVQ`'s.
    optimizer : {"adam", "adamw", "sgd"}, default="adam"
        "sgd" has momentum 0.9.
    lr : float, default=1e-3
    weight_decay : float, default=0.0
    batch_size : int, default=128
        At least 2 (batch normalisation); a last batch of one row is dropped.
    max_epochs : int, default=10
        Epochs of joint training after the k-means initialisation (0: the k-means
        centroids of the pre-trained network are kept).
    device : "auto", "cpu", "cuda", "cuda:<i>" or torch.device, default="auto"
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the shuffling and the k-means.
    verbose : int, default=0
        0: silent; 1: skorch's epoch log; 2: a progress bar per epoch too.

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained net; ``net_.module_`` is a ``ClusteredAutoEncoder``
        (:mod:`skvq.neural.layers._deepvq_modules`) whose buffers ``centroids`` and
        ``cluster_counts`` hold ``C`` and DCN's counts, so ``state_dict``,
        ``net_.save_params``/``load_params`` and skorch's ``Checkpoint`` carry them.
        ``lam``, ``reconstruct_from`` and ``clustering`` are net parameters, and
        ``net_.partial_fit(Xs)`` on scaled float32 data continues the joint training.
    device_ : str
    centroids_ : ndarray of shape (n_clusters, latent_dim)
        Latent centroids ``C`` (read from ``net_.module_.centroids``).
    codebook_ : ndarray of shape (n_clusters, n_features_in)
        Decoded centroids ``g(c_k)`` in the input's units (computed from ``net_`` when
        read).
    n_clusters_ : int
    bits_per_sample_ : float
        ``n_bits``.
    history_ : list of dict
        skorch's per-epoch history: the pre-training epochs, then the joint ones.
    n_iter_ : int
        Epochs in ``history_`` (``pretrain_epochs + max_epochs``).
    offset_, scale_ : ndarray of shape (n_features_in,)
        The scaling: the network sees ``(X - offset_) / scale_``.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)

    See Also
    --------
    MDCN : DCN trained to reconstruct from the centroids (eq. 10).
    DeepVQ : binary codes straight from the encoder.

    Notes
    -----
    Symbols: ``lambda`` = ``lam``, ``k = 2**L`` = ``2**n_bits``, ``C`` = ``centroids_``.
    Assignments are recomputed per mini-batch with the network fixed; the centroids follow
    DCN's incremental update with per-cluster counts (a batch's points at once), starting
    from the k-means cluster sizes.

    References
    ----------
    B. Yang, X. Fu, N. D. Sidiropoulos and M. Hong, "Towards K-means-friendly spaces:
    simultaneous deep learning and clustering", ICML, 2017.
    """

    _reconstruct_from = "latent"

    _parameter_constraints = {
        **TorchQuantizer._parameter_constraints,
        "n_bits": [Interval(numbers.Integral, 1, 31, closed="both")],
        "latent_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "hidden_sizes": ["array-like"],
        "lam": [Interval(numbers.Real, 0, None, closed="left")],
        "pretrain_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "kmeans_iter": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    _min_fit_samples = 2  # batch normalisation

    def __init__(self, n_bits=8, *, latent_dim=10, hidden_sizes=(500, 255), lam=1.0,
                 pretrain_epochs=10, kmeans_iter=20, scaling="global", optimizer="adam",
                 lr=1e-3, weight_decay=0.0, batch_size=128, max_epochs=10, device="auto",
                 random_state=None, verbose=0):
        self.n_bits = n_bits
        self.latent_dim = latent_dim
        self.hidden_sizes = hidden_sizes
        self.lam = lam
        self.pretrain_epochs = pretrain_epochs
        self.kmeans_iter = kmeans_iter
        self.scaling = scaling
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Pre-train the auto-encoder, run k-means in its latent space, then train jointly.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        self : object
        """
        hidden = self._check_sizes("hidden_sizes", self.hidden_sizes)
        Xs = self._start_fit(X)
        n_clusters = 2**self.n_bits
        if n_clusters > Xs.shape[0]:
            warnings.warn(f"n_bits={self.n_bits} asks for {n_clusters} clusters but there are "
                          f"only n_samples={Xs.shape[0]}; using {Xs.shape[0]}.", UserWarning)
            n_clusters = Xs.shape[0]
        # set now: it bounds the batches of the latent pass below (_bytes_per_row)
        self.n_clusters_ = int(n_clusters)
        module = self._build_module(
            lambda: ClusteredAutoEncoder(Xs.shape[1], hidden, self.latent_dim, n_clusters),
            hidden_sizes=hidden, latent_dim=self.latent_dim)
        net = self._make_net(_DCNNet, module, n_samples=Xs.shape[0],
                             max_epochs=self.pretrain_epochs, lam=self.lam,
                             reconstruct_from=self._reconstruct_from, clustering=False)
        net.initialize()
        if self.pretrain_epochs:
            net.partial_fit(Xs, None)
        module = net.module_
        module.eval()
        latent = self._forward_batches(module.encode, Xs)
        centers, labels, _, _ = kmeans(latent, n_clusters, max_iter=self.kmeans_iter,
                                       generator=self._torch_generator())
        with torch.no_grad():
            module.centroids.copy_(centers)
            # Counts start at the k-means cluster sizes so that the first batches do not
            # overwrite the k-means centroids.
            module.cluster_counts.copy_(torch.bincount(labels, minlength=n_clusters))
        net.set_params(clustering=True, max_epochs=self.max_epochs)
        if self.max_epochs:
            net.partial_fit(Xs, None)
        module.eval()
        self.net_ = net
        self._record_history(net)
        self.bits_per_sample_ = float(self.n_bits)
        return self

    @property
    def centroids_(self):
        return self.net_.module_.centroids.detach().cpu().numpy()

    @property
    def codebook_(self):
        module = self.net_.module_
        module.eval()
        centroids = module.centroids.detach().cpu().numpy()
        return self._unscale(self._forward_batches(module.decode, centroids))

    def _n_code_columns(self):
        return 1

    def _code_cardinality(self):
        return 2**self.n_bits

    def _bytes_per_row(self):
        # the (rows, K) score table of the assignment dominates
        hidden = sum(self._check_sizes("hidden_sizes", self.hidden_sizes))
        return 4 * 4 * (self.n_features_in_ + 2 * hidden + self.latent_dim + self.n_clusters_)

    def _encode(self, X):
        module = self.net_.module_
        module.eval()
        with torch.no_grad():
            f = module.encode(self._to_tensor(X))
            self._check_finite(f, "the encoder's output f(X)")
            codes = module.assign(f)
        return codes.cpu().numpy().astype(self._code_dtype())[:, None]

    def _decode(self, codes):
        codes = np.asarray(codes)[:, 0]
        if codes.size and codes.max() >= self.n_clusters_:
            raise ValueError(f"codes out of range: this model has {self.n_clusters_} "
                             f"clusters, got code {codes.max()}.")
        module = self.net_.module_
        module.eval()
        index = torch.as_tensor(codes, dtype=torch.long, device=self.device_)
        with torch.no_grad():
            rec = module.decode(module.centroids[index])
        return self._unscale(rec)


class MDCN(DCN):
    """Modified DCN (eq. 10 of DeepVQ's paper): reconstruct from the centroid, not from f(x).

    .. math::

        \\min \\sum_i \\|g(C s_i) - x_i\\|^2
        + \\frac{\\lambda}{2}\\|f(x_i) - C s_i\\|^2 \\qquad (10)

    Training then sees the reconstruction the quantizer gives at test time, ``g(c_s)``.
    Parameters, attributes and codes are those of :class:`DCN`.

    Read more in the :ref:`User Guide <deepvq>`.

    See Also
    --------
    DCN, DeepVQ
    """

    _reconstruct_from = "centroid"
