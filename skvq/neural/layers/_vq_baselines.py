"""The VQ bottlenecks SCQ is compared with in its paper's Table 1 (Gautam et al., 2023).

Every class here is a :class:`~skvq.neural.layers._bottleneck.Bottleneck`: it takes encoder outputs
``z`` of shape ``(..., dim)`` (or ``(N, dim, H, W)`` feature maps with ``image_fmap=True``)
and returns a :class:`~skvq.neural.layers._bottleneck.BottleneckOutput`, exactly as
``SoftConvexQuantizer`` does, so that one autoencoder can be trained with any of them.

The Table 1 row each configuration stands for is in the catalogue of bottlenecks,
:mod:`skvq.neural.layers._catalogue` (``make_bottleneck("vq_replace", ...)`` and so on).

Names and parameter names follow lucidrains' vector-quantize-pytorch where it has the same
concept (``codebook_size``, ``dim``, ``commitment_weight``, ``threshold_ema_dead_code``,
``decay``, ``num_quantizers``); ``image_fmap`` is its ``accept_image_fmap``.

This module imports torch: import it only from code that already needs torch.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._bottleneck import Bottleneck, FlatQuantization, check_param
from ._kernels import nearest_codeword, squared_distances

__all__ = ["AffineVQ", "GumbelVQ", "ResidualVQ", "VectorQuantize"]


class VectorQuantize(Bottleneck):
    r"""VQ-VAE's vector quantizer: nearest codeword, straight-through gradient, eq. (5).

    Forward (SCQ paper, eq. 1): ``k = argmin_j ||z - c_j||`` and ``z_q = c_k``. In training
    the decoder receives ``z + sg[z_q - z]`` (the straight-through estimator, STE): ``z_q``
    in the forward pass (up to rounding), the identity in the backward pass. In evaluation
    (``eval()``) the output is the codeword ``c_k`` itself, exactly, as in
    vector-quantize-pytorch. The bottleneck's loss is eq. (5)'s
    codebook and commitment terms, as means over entries:

    .. math:: (1 - \beta)\, \| sg[z_e] - z_q \|^2 + \beta\, \| z_e - sg[z_q] \|^2

    With ``threshold_ema_dead_code > 0`` dead codewords are replaced in training (the
    "VQVAE + Rep" row of Table 1; Zeghidour et al., 2021; Dhariwal et al., 2020): an
    exponential moving average (decay ``decay``) of each codeword's use per batch is kept,
    and every codeword whose average falls below the threshold is reset to an encoder output
    drawn at random from the current batch.

    Parameters
    ----------
    dim : int
        Vector length (the paper's embedding dimension :math:`\tilde F`).
    codebook_size : int
        Number of codewords ``K``.
    commitment_weight : float, default=0.25
        :math:`\beta` of eq. (5); the codebook term has weight :math:`1 - \beta`.
    threshold_ema_dead_code : float, default=0.0
        Replace codewords used fewer than this many times per batch on (exponential)
        average; 0 never replaces.
    decay : float, default=0.99
        Decay of the usage average.
    image_fmap : bool, default=False
        Inputs are ``(N, dim, H, W)`` feature maps.

    Attributes
    ----------
    codebook : Parameter of shape (codebook_size, dim)
        The codewords, initialised uniformly in ``[-1/K, 1/K]`` as VQ-VAE's reference code.
    cluster_size : Tensor of shape (codebook_size,)
        Usage average (buffer), maintained when dead codes are replaced.
    n_replaced : int
        Number of codeword replacements so far.
    """

    def __init__(self, dim, codebook_size, commitment_weight=0.25, threshold_ema_dead_code=0.0,
                 decay=0.99, image_fmap=False):
        super().__init__(dim, codebook_size, image_fmap=image_fmap)
        self.commitment_weight = check_param("commitment_weight", commitment_weight, "real",
                                             low=0.0, high=1.0)
        self.threshold_ema_dead_code = check_param(
            "threshold_ema_dead_code", threshold_ema_dead_code, "real", low=0.0)
        self.decay = check_param("decay", decay, "real", low=0.0, high=1.0, closed="left")
        self.codebook = self._uniform_codebook()
        self.register_buffer("cluster_size", torch.zeros(self.codebook_size))
        self.n_replaced = 0

    def _codebook_parameters(self):
        return [self.codebook]

    def _replace_dead_codes(self, z, codes):
        """Usage average update, then dead codewords reset to random rows of ``z``."""
        with torch.no_grad():
            counts = torch.bincount(codes, minlength=self.codebook_size).to(self.cluster_size)
            self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
            dead = self.cluster_size < self.threshold_ema_dead_code
            n_dead = int(dead.sum())
            if n_dead == 0:
                return False
            rows = torch.randint(0, z.shape[0], (n_dead,), device=z.device)
            self._set_codewords(dead, z.detach()[rows])
            self.cluster_size[dead] = self.threshold_ema_dead_code
            self.n_replaced += n_dead
            return True

    def _set_codewords(self, mask, vectors):
        self.codebook.data[mask] = vectors.to(self.codebook.dtype)

    def _quantize_flat(self, z):
        codebook = self.codebook_vectors()
        codes = nearest_codeword(z.detach(), codebook.detach())
        if self.training and self.threshold_ema_dead_code > 0:
            if self._replace_dead_codes(z, codes):
                codebook = self.codebook_vectors()
                codes = nearest_codeword(z.detach(), codebook.detach())
        z_q = codebook[codes]
        beta = self.commitment_weight
        loss = ((1.0 - beta) * F.mse_loss(z_q, z.detach())
                + beta * F.mse_loss(z, z_q.detach()))
        return FlatQuantization(_straight_through(self, z, z_q), codes, None, loss)


class AffineVQ(VectorQuantize):
    r"""VQ with an affine reparametrized codebook and alternating optimization (Huh et al.).

    The codewords are ``c_k = s * b_k + t``: a base codebook ``b`` (K, d) and one scale
    ``s`` and shift ``t`` (d,) shared by every codeword, so that a gradient step computed
    from the codewords in use moves the unused ones too (Huh et al.'s remedy for the
    "internal codebook covariate shift"). Their alternating optimization updates the
    codebook in its own step: in training, before quantizing, ``codebook_steps`` gradient
    steps of size ``codebook_lr`` are taken on ``(b, s, t)`` against the codebook term of
    eq. (5) for the current batch's assignments, and the batch is then quantized with the
    updated codebook; the outer optimizer trains only the encoder and decoder (the returned
    loss is the commitment term ``beta ||z - sg[z_q]||^2``, and the STE passes no gradient to
    the codebook).

    The codebook step is preconditioned so that ``codebook_lr=1`` moves each used base
    codeword to the mean of its batch vectors (a k-means step) and the shift to the mean
    residual; Huh et al.'s reference implementation (vqtorch) uses an inner Adam optimizer
    and running statistics instead, so this is an approximation of their method.

    Parameters
    ----------
    dim, codebook_size, commitment_weight, threshold_ema_dead_code, decay, image_fmap
        As :class:`VectorQuantize` (``threshold_ema_dead_code > 0`` gives Table 1's
        "VQVAE + Rep + Affine + OPT").
    codebook_lr : float, default=0.5
        Step size of the codebook's own update, in ``(0, 1]``.
    codebook_steps : int, default=1
        Codebook steps per training batch.

    References
    ----------
    M. Huh, B. Cheung, P. Agrawal and P. Isola, "Straightening out the straight-through
    estimator: overcoming optimization challenges in vector quantized networks", ICML 2023.
    """

    def __init__(self, dim, codebook_size, commitment_weight=0.25, threshold_ema_dead_code=0.0,
                 decay=0.99, codebook_lr=0.5, codebook_steps=1, image_fmap=False):
        super().__init__(dim, codebook_size, commitment_weight=commitment_weight,
                         threshold_ema_dead_code=threshold_ema_dead_code, decay=decay,
                         image_fmap=image_fmap)
        self.codebook_lr = check_param("codebook_lr", codebook_lr, "real", low=0.0, high=1.0,
                                       closed="right")
        self.codebook_steps = check_param("codebook_steps", codebook_steps, "int", low=1)
        self.scale = nn.Parameter(torch.ones(self.dim))
        self.shift = nn.Parameter(torch.zeros(self.dim))

    def codebook_vectors(self):
        return self.codebook * self.scale + self.shift

    def _set_codewords(self, mask, vectors):
        # b_k = (c_k - t) / s gives exactly the requested codeword.
        scale = torch.where(self.scale.abs() > 1e-6, self.scale, torch.full_like(self.scale, 1e-6))
        self.codebook.data[mask] = ((vectors - self.shift) / scale).to(self.codebook.dtype)

    def _codebook_step(self, z, codes):
        """One preconditioned gradient step of ``(b, s, t)`` on the codebook term."""
        with torch.no_grad():
            k = self.codebook_size
            counts = torch.bincount(codes, minlength=k).to(z.dtype)
            sums = torch.zeros(k, self.dim, dtype=z.dtype, device=z.device)
            sums.index_add_(0, codes, z)
            used = counts > 0
            n_used = int(used.sum())
            if n_used == 0:
                return
            means = sums[used] / counts[used, None]
            residual = self.codebook_vectors()[used] - means  # (c_k - mean of its vectors)
            base = self.codebook[used]
            lr = self.codebook_lr
            # Shared affine parameters first (their step moves unused codewords too), then
            # the used base codewords the rest of the way.
            self.shift.sub_(lr * residual.mean(0))
            denom = (base * base).mean(0).clamp_min(1e-8)
            self.scale.sub_(lr * (residual * base).mean(0) / denom * 0.5)
            residual = self.codebook_vectors()[used] - means
            scale = torch.where(self.scale.abs() > 1e-6, self.scale,
                                torch.full_like(self.scale, 1e-6))
            self.codebook.data[used] -= lr * residual / scale

    def _quantize_flat(self, z):
        if self.training:
            if self.threshold_ema_dead_code > 0:
                self._replace_dead_codes(z, nearest_codeword(z.detach(),
                                                             self.codebook_vectors().detach()))
            for _ in range(self.codebook_steps):
                codes = nearest_codeword(z.detach(), self.codebook_vectors().detach())
                self._codebook_step(z.detach(), codes)
        codebook = self.codebook_vectors().detach()
        codes = nearest_codeword(z.detach(), codebook)
        z_q = codebook[codes]
        loss = self.commitment_weight * F.mse_loss(z, z_q)
        return FlatQuantization(_straight_through(self, z, z_q), codes, None, loss)


class GumbelVQ(Bottleneck):
    r"""Gumbel-softmax quantization (Jang et al., 2017; Maddison et al., 2017).

    The logits of codeword ``k`` for a vector ``z`` are ``-||z - c_k||^2``. In training a
    code is sampled with the Gumbel-max trick (SCQ paper, eq. 6) and relaxed by the softmax
    of ``(logits + G) / temperature``; with ``straight_through=True`` the forward pass uses
    the one-hot sample and the backward pass the softmax's gradient. The quantized vector is
    ``weights @ codebook``. In evaluation no noise is drawn: the code is the most likely
    codeword (the nearest one) and ``weights`` are ``softmax(logits / temperature)``. The
    loss is ``kl_weight`` times the KL divergence of the code distribution from the uniform
    prior (as in DALL-E's dVAE), averaged over vectors.

    Parameters
    ----------
    dim, codebook_size, image_fmap
        As :class:`VectorQuantize`.
    temperature : float, default=1.0
        Softmax temperature ``tau``; as ``tau -> 0`` the relaxed sample tends to the one-hot
        Gumbel-max sample.
    straight_through : bool, default=True
        Hard one-hot sample forward, soft gradient backward.
    kl_weight : float, default=5e-4
        Weight of the KL term.
    """

    def __init__(self, dim, codebook_size, temperature=1.0, straight_through=True,
                 kl_weight=5e-4, image_fmap=False):
        super().__init__(dim, codebook_size, image_fmap=image_fmap)
        self.temperature = check_param("temperature", temperature, "real", low=0.0,
                                       closed="neither")
        self.straight_through = check_param("straight_through", straight_through, "bool")
        self.kl_weight = check_param("kl_weight", kl_weight, "real", low=0.0)
        self.codebook = self._uniform_codebook()

    def logits(self, z):
        """``-||z - c_k||^2`` for every row of ``z`` (M, d) and codeword (M, K)."""
        return -squared_distances(z, self.codebook)

    def _quantize_flat(self, z):
        logits = self.logits(z)
        if self.training:
            weights = F.gumbel_softmax(logits, tau=self.temperature, hard=self.straight_through)
            codes = weights.detach().argmax(dim=1)
        else:
            weights = torch.softmax(logits / self.temperature, dim=1)
            # The kernel's argmin leaves out |z|^2, whose rounding in the logits can hide
            # the nearest codeword when |z| is large against the codewords' spacing.
            codes = nearest_codeword(z.detach(), self.codebook.detach())
        log_q = torch.log_softmax(logits, dim=1)
        kl = (log_q.exp() * (log_q + math.log(self.codebook_size))).sum(1).mean()
        quantized = weights @ self.codebook
        if not self.training:
            quantized = self.codebook[codes]
        return FlatQuantization(quantized, codes, weights, self.kl_weight * kl)


class ResidualVQ(Bottleneck):
    r"""Residual vector quantization (RQ-VAE, Lee et al., 2022).

    ``num_quantizers`` :class:`VectorQuantize` stages, each quantizing what the previous
    ones left: ``r_0 = z``, ``k_q = argmin_j ||r_{q-1} - c^{(q)}_j||``,
    ``r_q = r_{q-1} - c^{(q)}_{k_q}``, and ``z_q = sum_q c^{(q)}_{k_q}``. In training the
    decoder receives ``z + sg[z_q - z]`` (one straight-through estimator for the sum), in
    evaluation ``z_q`` itself; the loss is the sum of the stages' eq. (5) terms on their
    residuals.

    The codes of a vector are its ``num_quantizers`` stage codes ``(k_1, ..., k_Q)``, in a
    trailing axis of ``codes`` (``(..., Q)``, as vector-quantize-pytorch's ``indices``), each
    in ``[0, K)``: a vector costs ``Q log2(K)`` bits. ``perplexity`` and ``usage`` are
    averaged over the stages, each counted against its own ``K`` codewords.

    Parameters
    ----------
    dim, codebook_size, commitment_weight, threshold_ema_dead_code, decay, image_fmap
        As :class:`VectorQuantize`, for every stage.
    num_quantizers : int, default=2
        Number of stages ``Q``.
    """

    def __init__(self, dim, codebook_size, num_quantizers=2, commitment_weight=0.25,
                 threshold_ema_dead_code=0.0, decay=0.99, image_fmap=False):
        num_quantizers = check_param("num_quantizers", num_quantizers, "int", low=1)
        super().__init__(dim, codebook_size, image_fmap=image_fmap, n_codebooks=num_quantizers)
        self.num_quantizers = num_quantizers
        self.layers = nn.ModuleList(
            VectorQuantize(dim, codebook_size, commitment_weight=commitment_weight,
                           threshold_ema_dead_code=threshold_ema_dead_code, decay=decay)
            for _ in range(self.num_quantizers))

    @property
    def n_stages(self):
        return self.num_quantizers

    def codebook_vectors(self):
        raise NotImplementedError(
            "ResidualVQ has one codebook per stage (layers[q].codebook); its codes are "
            "decoded by decode_codes.")

    def _quantize_flat(self, z):
        z_q = torch.zeros_like(z)
        loss = z.new_zeros(())
        stage_codes = []
        for q, layer in enumerate(self.layers):
            # The first stage's commitment term reaches the encoder; later stages see a
            # residual of detached codewords, so their terms train their own codebooks and,
            # through r_{q-1}, the encoder as well.
            stage_in = z - z_q.detach() if q else z
            out = layer._quantize_flat(stage_in)
            loss = loss + out.loss
            z_q = z_q + layer.codebook[out.codes].detach()
            stage_codes.append(out.codes)
        codes = torch.stack(stage_codes, dim=1).reshape(self.code_shape((z.shape[0],)))
        if not self.training:
            # The codewords themselves (with their gradient), summed as decode_codes does.
            z_q = self._sum_codewords(codes)
        return FlatQuantization(_straight_through(self, z, z_q), codes, None, loss)

    def _sum_codewords(self, codes):
        """``sum_q c^{(q)}_{k_q}`` for ``(M, Q)`` codes, stages added in order."""
        codes = codes.reshape(-1, self.num_quantizers)
        out = self.layers[0].codebook[codes[:, 0]]
        for q in range(1, self.num_quantizers):
            out = out + self.layers[q].codebook[codes[:, q]]
        return out

    def decode_codes(self, codes):
        self._check_codes(codes)
        lead = tuple(codes.shape) if self.n_stages == 1 else tuple(codes.shape[:-1])
        flat = codes.reshape(-1, self.num_quantizers).long()
        return self._from_flat(self._sum_codewords(flat), lead)


def _straight_through(layer, z, z_q):
    """What a hard quantizer outputs: in training ``z + sg[z_q - z]`` (the straight-through
    estimator: ``z_q`` forward, the identity backward), in evaluation ``z_q`` exactly (the
    STE's sum is ``z_q`` only up to rounding)."""
    return z + (z_q - z).detach() if layer.training else z_q
