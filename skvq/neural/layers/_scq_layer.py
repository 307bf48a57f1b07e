r"""Soft convex quantization (SCQ) as a torch bottleneck layer (Gautam et al., 2023).

:class:`SoftConvexQuantizer` is a drop-in replacement for a VQ layer in any torch model: it
maps encoder outputs to convex combinations of its codewords (eq. 8 of the paper), solved in
the forward pass and differentiated in the backward pass. The solvers are in
:mod:`skvq.neural.layers._simplex`.

This module imports torch: import it only from code that already needs torch.
"""

import torch
from torch.nn import functional as F

from ._bottleneck import Bottleneck, FlatQuantization, check_param
from ._kernels import nearest_codeword
from ._simplex import scq_exact, scq_relaxed

__all__ = ["SoftConvexQuantizer"]


class SoftConvexQuantizer(Bottleneck):
    r"""Soft convex quantization: the best convex combination of codewords (SCQ, eq. 8).

    For every input vector ``z`` (a column of the paper's :math:`Z_e^{flattened}`) the layer
    finds convex weights :math:`p^\star` over the ``K`` codewords (the columns of ``C``):

    .. math::

        p^\star = \arg\min_{p \ge 0,\ 1^\top p = 1}
        \|z - C p\|^2 + \lambda \|p - \tilde p\|^2 ,

    where :math:`\tilde p` is the one-hot vector of ``z``'s nearest codeword (Alg. 1, step 2,
    detached), and outputs :math:`C p^\star` (Alg. 1, step 4). Gradients reach both ``z`` and
    the codebook through the optimisation problem. As :math:`\lambda \to \infty` the layer
    becomes VQ (the output tends to the nearest codeword).

    Parameters
    ----------
    dim : int
        Vector length ``d`` (the paper's embedding dimension :math:`\tilde F`).
    codebook_size : int
        Number of codewords ``K``.
    alpha : float, default=1.0
        The paper's regularisation :math:`\lambda > 0` towards the VQ solution.
    solver : {"relaxed", "exact"}, default="relaxed"
        ``"relaxed"``: the paper's scalable relaxation (Alg. 2): the minimiser without the
        simplex constraint, from one ``d x d`` (or ``K x K`` when ``K < d``) linear system per
        batch, projected onto the simplex; its gradient is the exact derivative of that map.
        ``"exact"``: eq. (8) itself, solved for every vector to the duality-gap tolerance
        ``tol``: on CPU (``K <= 4096``) by a compiled primal active-set method that starts at
        VQ's one-hot answer and adds the most violating codewords until the KKT conditions
        hold, on other devices (and for larger ``K``) by the same active-set method batched
        over vectors in torch (see :func:`~skvq.neural.layers._simplex.scq_exact`); its
        gradient is obtained by implicit differentiation of the KKT conditions on the active
        set (no unrolling).
    n_steps : int or None, default=None
        Only with ``solver="relaxed"``. ``None`` projects onto the simplex exactly (every
        weight vector on the simplex); an integer ``m`` uses the paper's ``m`` alternating
        steps ``P <- max(0, P)``, ``P <- P - (1^T P - 1) / K`` instead (Alg. 2, steps 4-5),
        for fidelity with the paper: the weights then sum to one but can be negative.
    tol : float, default=1e-6
        Only with ``solver="exact"``: every vector's solve stops when its duality gap, an
        upper bound on its suboptimality in eq. (8), is at most ``tol * (1 + objective)``.
    max_iter : int or None, default=None
        Only with ``solver="exact"``: iterations (active-set additions) at most per vector;
        ``None``: ``2 K + 10``. Vectors not converged by then keep their best point (still on
        the simplex); see ``last_solver_info``.
    commitment_weight : float, default=0.25
        :math:`\beta` of the training term that the paper's SCQ-VAE is trained with (its
        eq. 5, the VQ-VAE loss): the layer's ``loss`` is
        :math:`(1 - \beta)\,\mathrm{mean}\,(sg[z] - z_q)^2 + \beta\,\mathrm{mean}\,(z - sg[z_q])^2`
        with :math:`z_q = C p^\star`; the first term moves the codebook (through the
        optimisation layer), the second the encoder.
    image_fmap : bool, default=False
        Inputs are ``(N, dim, H, W)`` feature maps instead of ``(..., dim)``.
    codebook_init : {"uniform", "data"}, default="uniform"
        ``"uniform"``: codewords drawn uniformly in ``[-1/K, 1/K]`` (VQ-VAE's reference
        initialisation; the paper's "randomly initialize"). ``"data"``: on the first forward
        pass in training mode the codewords are replaced by ``K`` distinct input vectors of
        that batch drawn at random (with replacement, plus noise of 1e-3 of their spread,
        when the batch holds fewer than ``K``), so that the codebook's convex hull, which
        SCQ reproduces exactly, starts around the data (vector-quantize-pytorch's
        ``kmeans_init`` serves the same purpose for VQ). Draws use torch's global generator.
        A forward pass in evaluation mode before that first training batch raises a
        ``RuntimeError`` (the codebook would be the placeholder); a state dict of an
        initialised layer (``load_state_dict``) initialises it too.

    Attributes
    ----------
    codebook : Parameter of shape (codebook_size, dim)
        The codewords (rows; the paper's ``C`` is its transpose), initialised uniformly in
        ``[-1/K, 1/K]`` as VQ-VAE's reference code and :class:`VectorQuantize`.
    last_solver_info : SCQSolverInfo or None
        Convergence report of the last forward pass with ``solver="exact"``.
    initialized : bool tensor (buffer)
        Whether the codebook has been initialised (always true with ``codebook_init="uniform"``;
        saved with the state dict).

    Notes
    -----
    Costs for ``M`` vectors: both solvers compute the nearest codewords (one ``M x K x d``
    product, as VQ) and the relaxed point (one more ``M x d x K`` product and an ``O(K d^2)``
    factorisation); the exact simplex projection is a few vectorised passes over the
    ``M x K`` matrix (a block-maximum lower bound of the threshold leaves a handful of
    candidates per vector). The backward passes work on the supports only (``|S|`` codewords
    per vector). The exact solver on CPU builds the ``K x K`` Gram matrix once per batch and
    then costs ``O(K d + K |S| n_it)`` per vector, with ``n_it`` about ``|S| / max(1, d / 16)``
    (``d // 16`` codewords enter per iteration, at most 8); on other devices every
    iteration of the batched active-set method costs one ``M x d x K`` product and batched
    ``|S| x |S|`` Cholesky factorisations.

    Inputs are checked as by every :class:`~skvq.neural.layers._bottleneck.Bottleneck`
    (dtype, shape, finite values small enough not to overflow squared distances). The
    weights returned are checked too: they must sum to one. The simplex projection subtracts
    each row's maximum first, so the relaxed solver stays on the simplex up to the overflow
    limit of the inputs; should float arithmetic still fail, a ``ValueError`` says so instead
    of returning weights off the simplex.

    The forward pass returns a :class:`~skvq.neural.layers._bottleneck.BottleneckOutput`:
    ``quantized`` (:math:`C p^\star` in the input's layout), ``codes`` (the hard codes
    ``argmax p``), ``weights`` (:math:`p^\star`, the codeword axis where the vector axis
    was), ``loss``, ``quantization_error``, ``perplexity`` and ``usage``.

    References
    ----------
    T. Gautam, R. Pryzant, Z. Yang, C. Zhu and S. Sojoudi, "Soft Convex Quantization:
    Revisiting Vector Quantization with Convex Optimization", 2023 (arXiv:2310.03004).

    Examples
    --------
    >>> import torch
    >>> from skvq.neural import SoftConvexQuantizer
    >>> layer = SoftConvexQuantizer(dim=8, codebook_size=32, alpha=1.0)
    >>> out = layer(torch.randn(4, 10, 8))
    >>> out.quantized.shape, out.weights.shape, out.codes.shape
    (torch.Size([4, 10, 8]), torch.Size([4, 10, 32]), torch.Size([4, 10]))
    """

    def __init__(self, dim, codebook_size, alpha=1.0, solver="relaxed", n_steps=None, tol=1e-6,
                 max_iter=None, commitment_weight=0.25, image_fmap=False,
                 codebook_init="uniform"):
        super().__init__(dim, codebook_size, image_fmap=image_fmap)
        # alpha is the paper's lambda
        self.alpha = check_param("alpha", alpha, "real", low=0.0, closed="neither")
        self.solver = check_param("solver", solver, "option", options=("relaxed", "exact"))
        self.n_steps = check_param("n_steps", n_steps, "int", low=1, allow_none=True)
        if self.n_steps is not None and self.solver != "relaxed":
            raise ValueError("n_steps (the paper's m alternating projection steps) applies "
                             "only to solver='relaxed'.")
        self.tol = check_param("tol", tol, "real", low=0.0, closed="neither")
        self.max_iter = check_param("max_iter", max_iter, "int", low=1, allow_none=True)
        self.commitment_weight = check_param("commitment_weight", commitment_weight, "real",
                                             low=0.0, high=1.0)
        codebook_init = check_param("codebook_init", codebook_init, "option",
                                    options=("uniform", "data"))
        self.codebook = self._uniform_codebook()
        self.codebook_init = codebook_init
        self.register_buffer("initialized", torch.tensor(codebook_init == "uniform"))
        self.last_solver_info = None

    @torch.no_grad()
    def _init_from_data(self, z):
        k, m = self.codebook_size, z.shape[0]
        if m >= k:
            rows = z[torch.randperm(m, device=z.device)[:k]]
        else:
            rows = z[torch.randint(m, (k,), device=z.device)]
            spread = z.std(0, unbiased=False).clamp_min(1e-12)
            rows = rows + 1e-3 * spread * torch.randn(rows.shape, dtype=z.dtype, device=z.device)
        self.codebook.copy_(rows)
        self.initialized.fill_(True)

    def extra_repr(self):
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, alpha={self.alpha}, "
                f"solver={self.solver!r}, n_steps={self.n_steps}, "
                f"codebook_init={self.codebook_init!r}")

    def _check_weights(self, z, weights):
        """Weights on the simplex (their sum; ``n_steps`` weights may be negative), or a
        ``ValueError``: float rounding can make the solvers' answer meaningless when the
        unconstrained weights reach ``1 / eps``."""
        with torch.no_grad():
            deviation = float((weights.detach().sum(1) - 1.0).abs().amax())
        if deviation <= 1e-3:  # NaN fails too
            return
        raise ValueError(
            f"SoftConvexQuantizer's {self.solver} solver lost precision in "
            f"{weights.dtype}: its weights sum to 1 +- {deviation:.3g} instead of 1, for "
            f"inputs up to {float(z.detach().abs().amax()):.3g} against codewords up to "
            f"{float(self.codebook.detach().abs().amax()):.3g} with alpha={self.alpha:g}. "
            "Scale the inputs towards the codebook's range, use a larger alpha or "
            "solver='exact'" + ("." if weights.dtype == torch.float64
                                else ", or float64 (layer.double())."))

    def _quantize_flat(self, z):
        if not bool(self.initialized):
            if not self.training:
                raise RuntimeError(
                    "SoftConvexQuantizer(codebook_init='data') has not been initialised: its "
                    "codebook is drawn from the first batch in training mode (layer.train()), "
                    "or loaded with the state dict of an initialised layer.")
            self._init_from_data(z.detach())
        codebook = self.codebook
        codes_vq = nearest_codeword(z.detach(), codebook.detach())
        if self.solver == "exact":
            quantized, weights, info = scq_exact(
                z, codebook, self.alpha, codes=codes_vq, tol=self.tol, max_iter=self.max_iter,
                return_info=True)
            self.last_solver_info = info
        else:
            quantized, weights = scq_relaxed(z, codebook, self.alpha, codes=codes_vq,
                                             n_steps=self.n_steps)
        self._check_weights(z, weights)
        codes = weights.detach().argmax(1)
        beta = self.commitment_weight
        loss = ((1.0 - beta) * F.mse_loss(quantized, z.detach())
                + beta * F.mse_loss(z, quantized.detach()))
        return FlatQuantization(quantized, codes, weights, loss)
