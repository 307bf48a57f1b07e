"""Torch pieces of DeepVQ, DCN and MDCN: the auto-encoders and the B-step of DeepVQ.

This module imports torch: import it only from code that already needs torch
(:mod:`skvq.neural._deepvq` does, and is itself loaded lazily).
"""

import contextlib

import torch
from torch import nn
from torch.nn import functional as F_

from ._kernels import nearest_codeword

__all__ = ["AutoEncoder", "ClusteredAutoEncoder", "binary_penalty_step",
           "frozen_batch_statistics"]


class AutoEncoder(nn.Module):
    """Fully connected auto-encoder with a mirrored (optionally weight-tied) decoder.

    Encoder: ``Linear -> tanh -> BatchNorm`` for every hidden size, then a ``Linear`` to the
    code layer of width ``n_code`` followed by ``tanh`` (DeepVQ: ``f(x)`` in ``(-1, 1)^L``)
    or nothing (DCN's real-valued latent space). Decoder: the mirror image,
    ``Linear -> tanh -> BatchNorm (-> Dropout)`` per hidden size and a linear output layer.

    Parameters
    ----------
    n_features : int
        Input width ``D``.
    hidden_sizes : tuple of int
        Encoder hidden widths (DeepVQ's paper: ``(500, 255)``).
    n_code : int
        Code width (``L`` for DeepVQ, the latent dimension for DCN).
    code_activation : {"tanh", None}
        Activation of the code layer.
    tied : bool
        Decoder layer ``k`` uses the transpose of the mirrored encoder weight (own biases).
    decoder_hidden : tuple of int or None
        Decoder hidden widths from the code outwards; ``None`` mirrors the encoder.
        Only allowed when ``tied`` is false (tied weights fix the widths).
    dropout : float
        Dropout rate after each decoder hidden layer.
    batch_norm : bool
        Batch normalisation after every hidden ``tanh``.
    """

    def __init__(self, n_features, hidden_sizes, n_code, code_activation="tanh", tied=True,
                 decoder_hidden=None, dropout=0.0, batch_norm=True):
        super().__init__()
        hidden_sizes = tuple(int(h) for h in hidden_sizes)
        enc_sizes = (int(n_features),) + hidden_sizes + (int(n_code),)
        self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(enc_sizes[:-1], enc_sizes[1:]))
        self.enc_bn = nn.ModuleList(
            nn.BatchNorm1d(h) if batch_norm else nn.Identity() for h in hidden_sizes)
        self.code_activation = code_activation
        self.tied = bool(tied)
        if decoder_hidden is None:
            decoder_hidden = hidden_sizes[::-1]
        decoder_hidden = tuple(int(h) for h in decoder_hidden)
        if self.tied and decoder_hidden != hidden_sizes[::-1]:
            raise ValueError("tied weights need the mirrored decoder (decoder_hidden=None).")
        dec_sizes = (int(n_code),) + decoder_hidden + (int(n_features),)
        if self.tied:
            self.dec = None
            self.dec_bias = nn.ParameterList(
                nn.Parameter(torch.zeros(b)) for b in dec_sizes[1:])
        else:
            self.dec = nn.ModuleList(
                nn.Linear(a, b) for a, b in zip(dec_sizes[:-1], dec_sizes[1:]))
        self.dec_bn = nn.ModuleList(
            nn.BatchNorm1d(h) if batch_norm else nn.Identity() for h in decoder_hidden)
        self.dec_drop = nn.Dropout(float(dropout)) if dropout > 0 else nn.Identity()

    def encode(self, x):
        """Continuous code ``f(x)`` (before the sign)."""
        h = x
        for layer, bn in zip(self.enc[:-1], self.enc_bn):
            h = bn(torch.tanh(layer(h)))
        h = self.enc[-1](h)
        return torch.tanh(h) if self.code_activation == "tanh" else h

    def decode(self, b):
        """Reconstruction ``g(b)``."""
        h = b
        n_layers = len(self.dec_bn) + 1
        for k in range(n_layers):
            if self.tied:
                weight = self.enc[n_layers - 1 - k].weight  # (out_enc, in_enc)
                h = F_.linear(h, weight.t(), self.dec_bias[k])
            else:
                h = self.dec[k](h)
            if k < n_layers - 1:
                h = self.dec_drop(self.dec_bn[k](torch.tanh(h)))
        return h

    def forward(self, x):
        f = self.encode(x)
        if self.code_activation == "tanh":
            f = torch.where(f >= 0, 1.0, -1.0).to(f.dtype)
        return self.decode(f)


class ClusteredAutoEncoder(AutoEncoder):
    """DCN's network: an :class:`AutoEncoder` with a real-valued latent space (no code
    activation, untied decoder) and ``n_clusters`` latent centroids held as buffers.

    The centroids ``C`` (``centroids``) and the number of latent vectors assigned to each so
    far (``cluster_counts``, the denominators of DCN's incremental update) are buffers, not
    parameters: no optimizer touches them, and they travel with the weights in
    ``state_dict``, so checkpoints and ``load_state_dict`` restore them.

    Parameters
    ----------
    n_features : int
        Input width ``D``.
    hidden_sizes : tuple of int
        Encoder hidden widths.
    latent_dim : int
        Width of the latent space ``f(x)``.
    n_clusters : int
        Number of latent centroids ``K``.
    **kwargs
        Further arguments of :class:`AutoEncoder` (``decoder_hidden``, ``dropout``,
        ``batch_norm``).
    """

    def __init__(self, n_features, hidden_sizes, latent_dim, n_clusters, **kwargs):
        super().__init__(n_features, hidden_sizes, latent_dim, code_activation=None,
                         tied=False, **kwargs)
        self.register_buffer("centroids", torch.zeros(int(n_clusters), int(latent_dim)))
        self.register_buffer("cluster_counts", torch.zeros(int(n_clusters)))

    def assign(self, f):
        """Index of the nearest centroid of each latent vector ``f`` (no gradient)."""
        return nearest_codeword(f, self.centroids)

    def forward(self, x):
        """The quantizer's reconstruction ``g(c_s)``, ``s`` the nearest centroid to ``f(x)``."""
        return self.decode(self.centroids[self.assign(self.encode(x))])


@contextlib.contextmanager
def frozen_batch_statistics(module):
    """Run ``module`` without changing its state: dropout off, BatchNorm buffers restored.

    BatchNorm layers keep normalising with the batch's statistics (training mode), as in
    the W-step, but their running averages are put back afterwards, so that the B-step's
    extra forward passes do not count as extra training batches.
    """
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    drops = [(m, m.training) for m in module.modules() if isinstance(m, nn.Dropout)]
    for m, _ in drops:
        m.eval()
    try:
        yield
    finally:
        for m, mean, var, n in saved:
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(n)
        for m, training in drops:
            m.train(training)


def binary_penalty_step(objective, B0, *, rho=1e-4, rho_growth=3.0, n_iter=10, step_size=0.3,
                        penalty="squared"):
    """DeepVQ's B-step: minimise ``h(B)`` over binary ``B`` by the exact penalty method.

    Solves the penalty problem (8) of Le Tan et al. (2018), after Yuan and Ghanem (2017),

    .. math::

        \\min_{B, V}\\; h(B) + \\rho\\,(\\langle B, V\\rangle - NL)^2
        \\quad\\text{s.t.}\\quad -1 \\le B \\le 1,\\; \\|V\\|_F^2 \\le NL,

    whose binary solutions are those of (6)-(7), by alternating ``V`` and ``B``:

    - **V-step** (closed form): over the ball, ``<B, V>`` is largest, and the penalty
      smallest, at ``V = sqrt(NL) B / ||B||_F``. Since ``||B||_F^2 <= NL`` in the box,
      ``<B, V> = sqrt(NL) ||B||_F <= NL`` with equality exactly when ``B`` is binary.
    - **B-step**: one projected gradient step on ``h(B) + rho (<B, V> - NL)^2`` with ``V``
      fixed, projection onto the box by clipping.

    With ``V`` parallel to ``B`` the penalty's gradient pushes ``B`` radially outwards,
    harder as ``rho`` grows (``rho`` is multiplied by ``rho_growth`` after every
    iteration), so the entries reach the faces of the box.

    ``penalty="squared"`` is eq. (8) as printed, ``rho (<B, V> - NL)^2``. Its gradient
    ``2 rho (<B, V> - NL) V`` vanishes at binary ``B``, so an entry that ``h`` pulls inwards
    is pushed back only once it has left the face: with finitely many iterations a few
    entries can end inside the box. ``penalty="linear"`` is Yuan and Ghanem's exact penalty
    ``rho (NL - <B, V>)`` (non-negative on the feasible set, the same minimisers): its
    gradient ``-rho V`` keeps pushing outwards at binary ``B``, so once ``rho`` exceeds the
    gradient of ``h`` the entries stay on the faces and ``B`` ends exactly binary by
    itself. Entries still inside the box after ``n_iter`` iterations are rounded to their
    sign (``0 -> +1``) and counted in the returned ``n_rounded``.

    Parameters
    ----------
    objective : callable
        ``h``: maps a tensor of shape (N, L) to a scalar tensor, differentiable in ``B``.
        DeepVQ uses ``h(B) = ||g(B) - X||_F^2 + gamma ||f(X) - B||_F^2`` (eq. 6).
    B0 : Tensor of shape (N, L)
        Starting point (DeepVQ: the encoder's output ``f(X)``, in the box). Not modified.
    rho : float, default=1e-4
        Initial penalty ``rho`` of eq. (8) (the paper uses 0.05; see :class:`DeepVQ`).
    rho_growth : float, default=3.0
        Factor applied to ``rho`` after each iteration (>= 1).
    n_iter : int, default=10
        Alternations of V and B (the paper runs 10 per batch).
    step_size : float, default=0.3
        Gradient step on ``B``.
    penalty : {"squared", "linear"}, default="squared"
        ``rho (<B, V> - NL)^2`` (eq. 8) or ``rho (NL - <B, V>)`` (Yuan and Ghanem).

    Returns
    -------
    B : Tensor of shape (N, L)
        Exactly binary, entries in ``{-1, +1}``, detached.
    n_rounded : int
        Entries that were rounded at the end instead of reaching the box's faces.
    """
    B = B0.detach().clamp(-1.0, 1.0).clone()
    nl = float(B.numel())
    sqrt_nl = nl ** 0.5
    rho_t = float(rho)
    for _ in range(int(n_iter)):
        norm = torch.linalg.vector_norm(B)
        if float(norm) > 0:
            V = (sqrt_nl / norm) * B  # V-step, closed form
        else:
            V = torch.ones_like(B)
        B.requires_grad_(True)
        with torch.enable_grad():
            gap = nl - torch.sum(B * V)  # >= 0, and 0 exactly when B is binary
            value = objective(B) + rho_t * (gap ** 2 if penalty == "squared" else gap)
            (grad,) = torch.autograd.grad(value, B)
        with torch.no_grad():
            B = (B - step_size * grad).clamp_(-1.0, 1.0)
        rho_t *= float(rho_growth)
    B = B.detach()
    n_rounded = int(torch.count_nonzero(B.abs() < 1.0))
    return torch.where(B >= 0, 1.0, -1.0).to(B.dtype), n_rounded

