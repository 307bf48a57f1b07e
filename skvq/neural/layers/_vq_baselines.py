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
from ._kernels import codeword_scores, nearest_codeword
from ._kmeans_torch import kmeans

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

    The options below follow vector-quantize-pytorch's ``VectorQuantize`` (same names, same
    updates; its defaults differ: ``decay=0.8``, ``commitment_weight=1``, ``ema_update`` and
    ``rotation_trick`` on):

    - ``ema_update=True``: the codebook is not trained by gradients but by exponential
      moving averages (VQ-VAE's appendix; Razavi et al., 2019): after each training batch,
      ``N_k <- decay N_k + (1 - decay) n_k`` and ``m_k <- decay m_k + (1 - decay) sum of the
      batch vectors coded k``, and ``c_k = m_k / N'_k`` with ``N'`` the Laplace-smoothed
      counts ``(N_k + eps) / (sum N + K eps) sum N``. The loss is then the commitment term
      alone, ``beta ||z_e - sg[z_q]||^2``.
    - ``threshold_ema_dead_code > 0``: dead codewords are replaced in training (the
      "VQVAE + Rep" row of Table 1; Zeghidour et al., 2021; Dhariwal et al., 2020): after
      the batch is quantized, every codeword whose usage average ``N_k`` (kept whenever
      this or ``ema_update`` is on, starting at 1) is below the threshold is reset to a
      distinct vector of the batch drawn at random, and its ``N_k`` to the threshold.
      When there are more dead codewords than vectors, a random subset of them is reset.
    - ``kmeans_init=True``: the codebook is the k-means centroids of the first training
      batch (``kmeans_iters`` Lloyd iterations from ``K`` distinct batch vectors drawn at
      random; spherical k-means with ``use_cosine_sim``), ``N_k`` their cluster sizes.
    - ``use_cosine_sim=True``: inputs and codewords are normalised to unit length and the
      nearest codeword is the most similar one; the output is the unit codeword.
    - ``rotation_trick=True``: the gradient passes the quantizer by the rotation trick
      (Fifty et al., 2024) instead of the STE: the output is ``z`` rotated onto ``z_q`` and
      rescaled to its length, the rotation and the scale treated as constants, so the
      gradient reaching ``z`` is the decoder's gradient rotated back.
    - ``forward(z, mask=...)``: a boolean mask of the vectors' layout, ``False`` at padded
      positions: those neither count in the loss nor update the usage averages, the
      EMA codebook or the k-means initialisation, nor serve as replacements; their output is
      zero and their code -1 (vector-quantize-pytorch's ``mask`` and defaults).

    Random draws (replacements, k-means starts) use torch's global generator, in the order
    vector-quantize-pytorch makes them, so that both give the same codebooks from the same
    seed.

    Parameters
    ----------
    dim : int
        Vector length (the paper's embedding dimension :math:`\tilde F`).
    codebook_size : int
        Number of codewords ``K``.
    commitment_weight : float, default=0.25
        :math:`\beta` of eq. (5); the codebook term has weight :math:`1 - \beta` (none with
        ``ema_update``).
    threshold_ema_dead_code : float, default=0.0
        Replace codewords used fewer than this many times per batch on (exponential)
        average; 0 never replaces.
    decay : float, default=0.99
        Decay of the usage averages (and of the EMA codebook), in ``[0, 1)``.
    eps : float, default=1e-5
        Laplace smoothing of the counts of the EMA codebook (``ema_update``).
    ema_update : bool, default=False
        Codebook updated by moving averages instead of gradients.
    kmeans_init : bool, default=False
        Codebook initialised by k-means on the first training batch. A forward pass in
        evaluation mode before it raises a ``RuntimeError``; a batch of fewer than ``K``
        vectors gives its vectors drawn with replacement, plus noise of 1e-3 of their spread
        (as ``SoftConvexQuantizer(codebook_init="data")``), without k-means.
    kmeans_iters : int, default=10
        Lloyd iterations of ``kmeans_init``.
    use_cosine_sim : bool, default=False
        Cosine-similarity codebook.
    rotation_trick : bool, default=False
        Rotation trick instead of the straight-through estimator.
    image_fmap : bool, default=False
        Inputs are ``(N, dim, H, W)`` feature maps.

    Attributes
    ----------
    codebook : Parameter of shape (codebook_size, dim)
        The codewords (normalised to unit length when used with ``use_cosine_sim``),
        initialised uniformly in ``[-1/K, 1/K]`` as VQ-VAE's reference code; it does not
        require gradients with ``ema_update``.
    cluster_size : Tensor of shape (codebook_size,)
        Usage averages ``N_k`` (buffer), maintained with ``ema_update`` or dead-code
        replacement; start at 1.
    embed_avg : Tensor of shape (codebook_size, dim) or None
        The EMA sums ``m_k`` (buffer), with ``ema_update`` only.
    initialized : bool tensor (buffer)
        Whether the codebook has been initialised (false until the first training batch
        with ``kmeans_init``; saved with the state dict).
    n_replaced : int
        Number of codeword replacements so far.

    References
    ----------
    A. van den Oord, O. Vinyals and K. Kavukcuoglu, "Neural discrete representation
    learning", NeurIPS 2017. A. Razavi, A. van den Oord and O. Vinyals, "Generating diverse
    high-fidelity images with VQ-VAE-2", NeurIPS 2019. C. Fifty, R. G. Junkins, D. Duan et
    al., "Restructuring vector quantization with the rotation trick", ICLR 2025
    (arXiv:2410.06424).
    """

    def __init__(self, dim, codebook_size, commitment_weight=0.25, threshold_ema_dead_code=0.0,
                 decay=0.99, eps=1e-5, ema_update=False, kmeans_init=False, kmeans_iters=10,
                 use_cosine_sim=False, rotation_trick=False, image_fmap=False):
        super().__init__(dim, codebook_size, image_fmap=image_fmap,
                         n_codebooks=2 if check_param("ema_update", ema_update, "bool") else 1)
        self.commitment_weight = check_param("commitment_weight", commitment_weight, "real",
                                             low=0.0, high=1.0)
        self.threshold_ema_dead_code = check_param(
            "threshold_ema_dead_code", threshold_ema_dead_code, "real", low=0.0)
        self.decay = check_param("decay", decay, "real", low=0.0, high=1.0, closed="left")
        self.eps = check_param("eps", eps, "real", low=0.0, closed="neither")
        self.ema_update = check_param("ema_update", ema_update, "bool")
        self.kmeans_init = check_param("kmeans_init", kmeans_init, "bool")
        self.kmeans_iters = check_param("kmeans_iters", kmeans_iters, "int", low=1)
        self.use_cosine_sim = check_param("use_cosine_sim", use_cosine_sim, "bool")
        self.rotation_trick = check_param("rotation_trick", rotation_trick, "bool")
        self.codebook = self._uniform_codebook()
        self.codebook.requires_grad_(not self.ema_update)
        self.register_buffer("cluster_size", torch.ones(self.codebook_size))
        self.register_buffer("embed_avg",
                             self.codebook.detach().clone() if self.ema_update else None)
        self.register_buffer("initialized", torch.tensor(not self.kmeans_init))
        self.n_replaced = 0

    def extra_repr(self):
        options = [f"dim={self.dim}", f"codebook_size={self.codebook_size}"]
        for name in ("threshold_ema_dead_code", "ema_update", "kmeans_init", "use_cosine_sim",
                     "rotation_trick"):
            if getattr(self, name, None):
                options.append(f"{name}={getattr(self, name)}")
        return ", ".join(options)

    def codebook_vectors(self):
        if self.use_cosine_sim:
            return F.normalize(self.codebook, dim=1, eps=1e-6)
        return self.codebook

    # -- the steps of a forward pass -------------------------------------------------------
    def _lookup(self, z):
        """``(x, z_q, codes, loss)``: the vectors as the codebook sees them (unit vectors with
        ``use_cosine_sim``), their codewords (with the codebook's gradient), codes, loss."""
        x = F.normalize(z, dim=1, eps=1e-6) if self.use_cosine_sim else z
        if not bool(self.initialized):
            if not self.training:
                raise RuntimeError(
                    f"{type(self).__name__}(kmeans_init=True) has not been initialised: its "
                    "codebook is the k-means of the first batch in training mode "
                    "(layer.train()), or loaded with the state dict of an initialised layer.")
            self._init_kmeans(x.detach())
        codebook = self.codebook_vectors()
        codes = nearest_codeword(x.detach(), codebook.detach(), unit_norm=self.use_cosine_sim)
        z_q = codebook[codes]
        beta = self.commitment_weight
        loss = beta * F.mse_loss(x, z_q.detach())
        if not self.ema_update:
            loss = loss + (1.0 - beta) * F.mse_loss(z_q, x.detach())
        return x, z_q, codes, loss

    def _output(self, x, z_q):
        """What the decoder receives: ``z_q`` in evaluation, in training ``z_q`` with the
        gradient of the straight-through estimator or of the rotation trick."""
        if not self.training:
            return z_q
        if self.rotation_trick:
            return _rotate_to(x, z_q.detach())
        return _straight_through(self, x, z_q)

    def _quantize_flat(self, z):
        x, z_q, codes, loss = self._lookup(z)
        quantized = self._output(x, z_q)
        if self.training:
            self._update_codebook(x.detach(), codes)
        return FlatQuantization(quantized, codes, None, loss)

    # -- codebook updates (training) ---------------------------------------------------------
    @torch.no_grad()
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # State dicts saved before the ``initialized`` buffer existed (skvq < kmeans_init)
        # come from layers whose codebook was always in use: load them as initialised, so
        # that ``load_state_dict(strict=True)`` keeps working on them.
        key = prefix + "initialized"
        if key not in state_dict and prefix + "codebook" in state_dict:
            state_dict[key] = torch.tensor(True)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _init_kmeans(self, x):
        """Codebook, usage averages (and EMA sums) from k-means of the batch ``x``."""
        k, m = self.codebook_size, x.shape[0]
        cosine = self.use_cosine_sim
        if m >= k:
            # K distinct vectors drawn as vector-quantize-pytorch draws its k-means start
            centers = x[torch.randperm(m, device=x.device)[:k]]
            if cosine:
                # spherical k-means: a Lloyd step, then the means back on the unit sphere
                # (for unit vectors the nearest centre is the most similar one)
                for _ in range(self.kmeans_iters - 1):
                    centers = F.normalize(kmeans(x, k, max_iter=1, init=centers)[0], dim=1,
                                          eps=1e-6)
            elif self.kmeans_iters > 1:
                centers = kmeans(x, k, max_iter=self.kmeans_iters - 1, init=centers)[0]
            # The last Lloyd step here: the usage averages and EMA sums are those of its
            # assignment, as vector-quantize-pytorch's (an empty cluster keeps its centre).
            labels = nearest_codeword(x, centers, unit_norm=cosine)
            counts = torch.bincount(labels, minlength=k)
            sums = torch.zeros_like(centers, dtype=torch.float64).index_add_(0, labels,
                                                                             x.double())
            nonempty = counts > 0
            centers[nonempty] = (sums[nonempty] / counts[nonempty, None]).to(x.dtype)
            if cosine:
                centers = F.normalize(centers, dim=1, eps=1e-6)
        else:
            centers = x[torch.randint(m, (k,), device=x.device)]
            spread = x.std(0, unbiased=False).clamp_min(1e-12) if m > 1 else x.abs() + 1e-12
            centers = centers + 1e-3 * spread * torch.randn(centers.shape, dtype=x.dtype,
                                                            device=x.device)
            if cosine:
                centers = F.normalize(centers, dim=1, eps=1e-6)
            counts = torch.bincount(nearest_codeword(x, centers, unit_norm=cosine),
                                    minlength=k)
        counts = counts.to(self.cluster_size)
        self._set_codewords(torch.ones(k, dtype=torch.bool, device=x.device), centers)
        self.cluster_size.copy_(counts)
        if self.embed_avg is not None:
            self.embed_avg.copy_(self.codebook_vectors() * counts[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update_codebook(self, x, codes):
        """After a training batch: usage averages, the EMA codebook, dead codewords (the
        order of vector-quantize-pytorch's ``update_codebook``)."""
        if not (self.ema_update or self.threshold_ema_dead_code > 0):
            return
        counts = torch.bincount(codes, minlength=self.codebook_size).to(self.cluster_size)
        self.cluster_size.lerp_(counts, 1.0 - self.decay)
        if self.ema_update:
            sums = torch.zeros_like(self.embed_avg).index_add_(0, codes,
                                                               x.to(self.embed_avg.dtype))
            self.embed_avg.lerp_(sums, 1.0 - self.decay)
            total = self.cluster_size.sum()
            smoothed = ((self.cluster_size + self.eps)
                        / (total + self.codebook_size * self.eps) * total)
            self.codebook.copy_(self.embed_avg / smoothed[:, None])
            if self.use_cosine_sim:
                self.codebook.copy_(F.normalize(self.codebook, dim=1, eps=1e-6))
        if self.threshold_ema_dead_code > 0:
            self._expire_codes(x)

    @torch.no_grad()
    def _expire_codes(self, x):
        """Codewords whose usage average is below the threshold reset to distinct random
        vectors of ``x`` (vector-quantize-pytorch's ``expire_codes_``, same draws)."""
        dead = self.cluster_size < self.threshold_ema_dead_code
        n_dead, m = int(dead.sum()), x.shape[0]
        if n_dead == 0 or m == 0:
            return
        if n_dead > m:  # more dead codewords than vectors: reset a random subset now
            chosen = torch.nonzero(dead).flatten()
            chosen = chosen[torch.randperm(n_dead, device=x.device)[:m]]
            dead = torch.zeros_like(dead)
            dead[chosen] = True
            n_dead = m
        rows = x[torch.randperm(m, device=x.device)[:n_dead]]
        self._set_codewords(dead, rows)
        reset = self.threshold_ema_dead_code
        self.cluster_size[dead] = reset
        if self.embed_avg is not None:
            self.embed_avg[dead] = rows.to(self.embed_avg.dtype) * reset
        self.n_replaced += n_dead

    def _set_codewords(self, mask, vectors):
        self.codebook.data[mask] = vectors.to(self.codebook.dtype)


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
        "VQVAE + Rep + Affine + OPT"; here the dead codewords are replaced before the
        codebook step and the quantization of the batch). ``forward`` takes a ``mask`` as
        :class:`VectorQuantize`'s.
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
        zk = z.detach()
        if self.training:
            if self.threshold_ema_dead_code > 0:
                codes = nearest_codeword(z.detach(), self.codebook_vectors().detach())
                self._update_codebook(z.detach(), codes)
            for _ in range(self.codebook_steps):
                self._codebook_step(zk, nearest_codeword(zk, self.codebook_vectors().detach()))
        codebook = self.codebook_vectors().detach()
        codes = nearest_codeword(z.detach(), codebook)
        z_q = codebook[codes]
        loss = self.commitment_weight * F.mse_loss(z, z_q)
        return FlatQuantization(_straight_through(self, z, z_q), codes, None, loss)


class GumbelVQ(Bottleneck):
    r"""Gumbel-softmax quantization (Jang et al., 2017; Maddison et al., 2017).

    The logits of codeword ``k`` for a vector ``z`` are ``-||z - c_k||^2``, computed as
    ``2 z.c_k - |c_k|^2`` (:func:`~skvq.neural.layers._kernels.codeword_scores`: the same
    softmax, without the ``|z|^2`` term whose size would round away the differences between
    codewords at large ``|z|``). In training a
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
        """``-||z - c_k||^2 + |z|^2`` for every row of ``z`` (M, d) and codeword (M, K): the
        logits up to a constant per row, which a softmax ignores."""
        return codeword_scores(z, self.codebook)

    def _quantize_flat(self, z):
        logits = self.logits(z)
        if self.training:
            weights = F.gumbel_softmax(logits, tau=self.temperature, hard=self.straight_through)
            codes = weights.detach().argmax(dim=1)
        else:
            weights = torch.softmax(logits / self.temperature, dim=1)
            codes = logits.detach().argmax(dim=1)  # the nearest codeword
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

    Each stage's codebook is updated after its residuals are quantized (EMA and dead-code
    replacement on that stage's residuals), as in vector-quantize-pytorch's ``ResidualVQ``;
    ``forward`` takes a ``mask`` as :class:`VectorQuantize`'s (masked positions: output 0,
    codes -1 in every stage).

    Parameters
    ----------
    dim, codebook_size, commitment_weight, threshold_ema_dead_code, decay, eps, ema_update
        As :class:`VectorQuantize`, for every stage.
    kmeans_init, kmeans_iters, image_fmap
        As :class:`VectorQuantize`, for every stage (k-means of its first residuals).
    num_quantizers : int, default=2
        Number of stages ``Q``.
    """

    def __init__(self, dim, codebook_size, num_quantizers=2, commitment_weight=0.25,
                 threshold_ema_dead_code=0.0, decay=0.99, eps=1e-5, ema_update=False,
                 kmeans_init=False, kmeans_iters=10, image_fmap=False):
        num_quantizers = check_param("num_quantizers", num_quantizers, "int", low=1)
        ema = check_param("ema_update", ema_update, "bool")
        super().__init__(dim, codebook_size, image_fmap=image_fmap,
                         n_codebooks=num_quantizers * (2 if ema else 1))
        self.num_quantizers = num_quantizers
        self.layers = nn.ModuleList(
            VectorQuantize(dim, codebook_size, commitment_weight=commitment_weight,
                           threshold_ema_dead_code=threshold_ema_dead_code, decay=decay,
                           eps=eps, ema_update=ema, kmeans_init=kmeans_init,
                           kmeans_iters=kmeans_iters)
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
            residual, codewords, codes, stage_loss = layer._lookup(stage_in)
            if self.training:  # after the lookup: the sum uses the codewords it found
                layer._update_codebook(residual.detach(), codes)
            loss = loss + stage_loss
            z_q = z_q + codewords.detach()
            stage_codes.append(codes)
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




def _rotate_to(src, tgt):
    """The rotation trick (Fifty et al., 2024, Sec. 4.2; vector-quantize-pytorch's
    ``rotate_to``): ``src`` rotated onto ``tgt`` and scaled to its length; rotation and scale
    are constants for the gradient, which reaches ``src`` only (``tgt`` is detached).

    With ``u = src / |src|``, ``q = tgt / |tgt|`` and ``w = (u + q) / |u + q|``, the
    rotation is ``R = I - 2 w w^T + 2 q u^T``; ``R src |tgt| / |src| = tgt`` (up to
    rounding).
    """
    norm_src = src.norm(dim=-1, keepdim=True)
    norm_tgt = tgt.norm(dim=-1, keepdim=True)
    u = src / norm_src.clamp_min(1e-6)
    q = tgt / norm_tgt.clamp_min(1e-6)
    w = F.normalize(u + q, dim=1, eps=1e-6).detach()
    e = src[:, None, :]
    rotated = (e - 2 * (e @ w[:, :, None] @ w[:, None, :])
               + 2 * (e @ u.detach()[:, :, None] @ q.detach()[:, None, :]))[:, 0, :]
    return rotated * (norm_tgt / norm_src.clamp_min(1e-6)).detach()






def _straight_through(layer, z, z_q):
    """What a hard quantizer outputs: in training ``z + sg[z_q - z]`` (the straight-through
    estimator: ``z_q`` forward, the identity backward), in evaluation ``z_q`` exactly (the
    STE's sum is ``z_q`` only up to rounding)."""
    return z + (z_q - z).detach() if layer.training else z_q
