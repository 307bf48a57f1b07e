r"""Batched solvers of soft convex quantization's eq. (8) and their gradients.

Soft convex quantization (SCQ; Gautam et al., 2023) replaces every encoder output ``z``
(a row of ``Z``, length ``d``) by ``C p`` where ``C`` is the ``d x K`` codebook matrix (in
this module the codebook is stored row-wise as ``codebook = C^T`` of shape ``(K, d)``) and
``p`` solves eq. (8) of the paper for that row:

.. math::

    p^\star = \arg\min_{p \in \Delta_K} f(p), \qquad
    f(p) = \|z - C p\|^2 + \lambda \|p - \tilde p\|^2,

with :math:`\Delta_K = \{p \ge 0, 1^\top p = 1\}` the probability simplex and
:math:`\tilde p = e_k` the one-hot vector of ``z``'s nearest codeword ``k`` (Alg. 1, step 2).

Two maps are implemented, both batched over all rows at once:

* :func:`scq_relaxed` (Alg. 2): the minimiser :math:`p_u` of :math:`f` without the simplex
  constraint, from the linear system :math:`(C^\top C + \lambda I) p_u = C^\top z + \lambda
  e_k`, solved once per batch in its ``d x d`` form
  :math:`p_u = e_k + C^\top (C C^\top + \lambda I_d)^{-1} (z - c_k)` (push-through / Woodbury
  identity; the ``K x K`` form is used when ``K < d``), then projected onto the simplex,
  exactly (:func:`project_simplex`) or with the paper's ``m`` alternating steps. The gradient
  is the exact derivative of this map (not of eq. 8).
* :func:`scq_exact`: the solution of eq. (8) itself to a certified tolerance, by the primal
  active-set method (exact, finite; from VQ's one-hot point it adds the most violating
  codewords until the KKT conditions hold, certified by the Frank-Wolfe gap). On CPU it runs
  the compiled, one-row-per-thread version of :mod:`skvq.neural.layers._active_set`; on
  other devices the same algorithm batched over rows in torch
  (:func:`_solve_active_set_torch`: every row carries its own working set, padded to the
  widest). A semismooth Newton method on the ``d``-dimensional dual (below), warm-started at
  the relaxed solution, is kept as ``method="newton"``: it needs many iterations when
  :math:`\|C\|_2^2 / \lambda` is large. The gradient is obtained by implicit
  differentiation of the KKT conditions of eq. (8) on the active set (no unrolling),
  whichever method found the solution.

The dual used by the Newton method. With a multiplier :math:`\nu \in R^d` for the residual
``y = z - C p``, eq. (8) has the dual (to be maximised, concave, smooth)

.. math::

    g(\nu) = -\|\nu\|^2 + 2 \nu^\top z - \lambda\,(p_\nu^\top a_\nu + \tau_\nu) + \lambda,
    \qquad a_\nu = e_k + C^\top \nu / \lambda, \quad p_\nu = \Pi_\Delta(a_\nu),

where :math:`\Pi_\Delta` is the Euclidean projection onto the simplex and :math:`\tau_\nu`
its threshold (:math:`p_\nu = \max(a_\nu - \tau_\nu, 0)`). Every dual point gives a feasible
primal point :math:`p_\nu` and the duality gap has the closed form
:math:`f(p_\nu) - g(\nu) = \|z - C p_\nu - \nu\|^2`, so the stopping rule certifies
:math:`f(p) - f(p^\star) \le \|z - C p - \nu\|^2 \le \mathrm{tol}\,(1 + f(p))`. The relaxed
solution is the dual point :math:`\nu_u = \lambda (C C^\top + \lambda I)^{-1}(z - c_k)`, which
is where the Newton method starts. The (generalised) Hessian of :math:`-g/2` is
:math:`I_d + U U^\top / \lambda` with :math:`U = C_S (I - 1 1^\top / |S|)` on the support ``S``
of :math:`p_\nu`; it is inverted with Woodbury through an ``|S| x |S|`` system (or directly,
``d x d``, when ``|S| > d``). Steps are damped by Armijo backtracking on :math:`-g`.

This module imports torch: import it only from code that already needs torch.

References
----------
T. Gautam, R. Pryzant, Z. Yang, C. Zhu and S. Sojoudi, "Soft Convex Quantization: Revisiting
Vector Quantization with Convex Optimization", 2023 (arXiv:2310.03004).

J. Duchi, S. Shalev-Shwartz, Y. Singer and T. Chandra, "Efficient projections onto the
l1-ball for learning in high dimensions", ICML 2008.

C. Michelot, "A finite algorithm for finding the projection of a point onto the canonical
simplex of R^n", J. Optim. Theory Appl. 50, 1986. L. Condat, "Fast projection onto the
simplex and the l1 ball", Math. Program. 158, 2016.
"""

from typing import NamedTuple

import numba
import numpy as np
import torch

from ._kernels import nearest_codeword

__all__ = [
    "SCQSolverInfo",
    "project_simplex",
    "project_simplex_sort",
    "nearest_codes",
    "scq_alternating_projection",
    "scq_exact",
    "scq_objective",
    "scq_relaxed",
    "woodbury_factor",
]

# largest number of gathered support entries (rows x support x d) held at once
_GATHER_BUDGET = 1 << 23
# block length of the threshold's lower bound in the simplex projection
_BLOCK = 32
# largest codebook for the CPU active-set solver (its K x K float64 Gram matrix: 128 MiB)
_ACTIVE_SET_MAX_K = 4096
# largest rows x K block of reduced gradients of the torch active-set solver (512 MiB float64)
_TORCH_ACTIVE_SET_BUDGET = 1 << 26


class SCQSolverInfo(NamedTuple):
    """Convergence report of :func:`scq_exact`.

    Attributes
    ----------
    n_iter : int
        Iterations run (the largest over the rows): additions of codewords for the
        active-set methods, Newton steps for the Newton method.
    max_gap : float
        Largest duality gap over the rows at the point the solver returned (an upper bound
        on :math:`f(p) - f(p^\\star)` for every row): the Frank-Wolfe gap
        :math:`2 (p^\\top g - \\min_i g_i)` for the active-set methods,
        :math:`\\|z - C p - \\nu\\|^2` for the Newton method.
    n_unconverged : int
        Rows not certified: their gap is above ``tol * (1 + f(p))`` after ``max_iter``
        iterations, or they stopped at the floating-point resolution (no decrease of the
        objective, a failed factorisation, a stalled line search).
    """

    n_iter: int
    max_gap: float
    n_unconverged: int


# ------------------------------------------------------------------------------------------
# projection onto the probability simplex
# ------------------------------------------------------------------------------------------
def project_simplex_sort(v):
    """Euclidean projection of every row of ``v`` onto the probability simplex, by sorting.

    The O(K log K) algorithm of Duchi et al. (2008), kept as the simple reference of
    :func:`project_simplex`.

    Parameters
    ----------
    v : Tensor of shape (M, K)

    Returns
    -------
    p : Tensor of shape (M, K)
        ``max(v - tau, 0)`` with ``tau`` chosen so that every row sums to one.
    tau : Tensor of shape (M, 1)
    """
    k = v.shape[-1]
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(-1) - 1.0
    ind = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    cond = u - css / ind > 0
    rho = (cond * ind).amax(-1, keepdim=True).clamp_min(1)
    tau = css.gather(-1, rho.long() - 1) / rho
    return (v - tau).clamp_min(0.0), tau


def _simplex_threshold(v):
    """Threshold ``tau`` of the simplex projection of every row of ``v`` (Michelot/Condat).

    Newton's method on the convex, decreasing, piecewise-linear ``t -> sum(max(v - t, 0)) - 1``
    started left of its root, at ``max(mean(v) - 1/K, max(v) - 1)``: every step
    ``t <- (sum_{v > t} v - 1) / #{v > t}`` stays left of the root and shrinks the candidate
    support, and the iteration ends, exactly, when the support stops changing (at most ``K``
    steps; a handful in practice because the start already excludes every entry below
    ``max(v) - 1``).
    """
    k = v.shape[-1]
    vmax = v.amax(-1, keepdim=True)
    tau = torch.maximum((v.sum(-1, keepdim=True) - 1.0) / k, vmax - 1.0)
    count = None
    for _ in range(k + 1):
        mask = v > tau
        new_count = mask.sum(-1, keepdim=True)
        if count is not None and torch.equal(new_count, count):
            break
        count = new_count
        tau = (torch.where(mask, v, 0.0).sum(-1, keepdim=True) - 1.0) / count
    return tau


def _threshold_lower_bound(v):
    """A lower bound of every row's projection threshold, from its block maxima.

    The threshold of any subset of a row's entries is at most the row's threshold (the
    function ``t -> sum(max(v - t, 0))`` only grows when entries are added), so the exact
    threshold of the maxima of blocks of ``_BLOCK`` consecutive entries is a lower bound;
    it is tight in practice, because the support is made of the few largest entries.
    """
    m, k = v.shape
    n_blocks = -(-k // _BLOCK)
    pad = n_blocks * _BLOCK - k
    if pad:
        v = torch.nn.functional.pad(v, (0, pad), value=float("-inf"))
    return _simplex_threshold(v.reshape(m, n_blocks, _BLOCK).amax(-1))


def _project_compact(v):
    """Exact simplex projection of every row of ``v`` (M, K), returned on its support.

    Returns ``tau`` (M, 1), ``idx`` (M, s) column indices, ``valid`` (M, s) and ``p_s``
    (M, s) with ``p[m, idx[m, j]] = p_s[m, j]`` where ``valid[m, j]`` and 0 elsewhere.
    Entries at or below a lower bound of the threshold cannot be in the support, so only the
    few candidates above it are compacted (row-major, columns ascending) and Michelot's
    iteration is run on those, from the lower bound (exact, finite).

    The projection commutes with adding a constant to a row, so every row is first shifted
    by its maximum (``tau`` is returned in ``v``'s coordinates): the threshold is then found
    among entries of magnitude about 1, exact for subtraction of nearby floats, instead of
    by sums of entries of ``v``'s magnitude, where the ``- 1`` of the threshold's formula is
    lost beyond ``1 / eps`` (about 1e7 in float32) and the weights came out as NaN.
    """
    with torch.no_grad():
        m = v.shape[0]
        shift = v.amax(-1, keepdim=True)
        v = v - shift
        tau = _threshold_lower_bound(v)
        nz = (v > tau).nonzero()
        rows, cols = nz[:, 0], nz[:, 1]
        count = torch.bincount(rows, minlength=m)
        width = max(int(count.max()), 1) if m else 1
        pos = torch.arange(rows.shape[0], device=v.device) - (torch.cumsum(count, 0) - count)[rows]
        idx = torch.zeros(m, width, dtype=torch.long, device=v.device)
        valid = torch.zeros(m, width, dtype=torch.bool, device=v.device)
        vals = torch.zeros(m, width, dtype=v.dtype, device=v.device)
        idx[rows, pos] = cols
        valid[rows, pos] = True
        vals[rows, pos] = v[rows, cols]
        count = None
        for _ in range(width + 1):
            mask = valid & (vals > tau)
            new_count = mask.sum(-1, keepdim=True)
            if count is not None and torch.equal(new_count, count):
                break
            count = new_count
            tau = (torch.where(mask, vals, 0.0).sum(-1, keepdim=True) - 1.0) / count
        p_s = (vals - tau).clamp_min(0.0) * valid
        p_s = p_s / p_s.sum(-1, keepdim=True)
        return tau + shift, idx, p_s > 0, p_s


def _densify(idx, valid, p_s, k):
    out = p_s.new_zeros(p_s.shape[0], k)
    return out.scatter_add_(1, idx, p_s * valid)


def project_simplex(v, return_tau=False):
    """Exact Euclidean projection of every row of ``v`` onto the probability simplex.

    Solves ``min ||p - v||^2`` s.t. ``p >= 0``, ``sum(p) = 1`` for every row, batched: a
    lower bound of the threshold from block maxima discards all but a few entries a row,
    and Michelot's finite algorithm (a Newton method on the threshold, see Condat, 2016)
    finds the exact threshold among the rest. The result is renormalised so that every row
    sums to one to the floating-point resolution. Differentiable in ``v`` (the threshold's
    derivative on the support included).

    Parameters
    ----------
    v : Tensor of shape (M, K)
    return_tau : bool, default=False
        Also return the threshold ``tau`` (``p = max(v - tau, 0)``).

    Returns
    -------
    p : Tensor of shape (M, K)
    tau : Tensor of shape (M, 1)
        Only when ``return_tau`` is true.
    """
    if v.ndim != 2 or v.shape[1] == 0:
        raise ValueError("project_simplex expects a (M, K) tensor with K >= 1, got shape "
                         f"{tuple(v.shape)}.")
    tau, idx, valid, _ = _project_compact(v.detach())
    mask = _densify(idx, valid, valid.to(v.dtype), v.shape[1]) > 0
    count = mask.sum(-1, keepdim=True)
    # shifted by the row maxima as in _project_compact (the projection and its Jacobian do
    # not change), so that large rows keep their "- 1"
    v = v - v.detach().amax(-1, keepdim=True)
    # tau as a function of v on the support, so that autograd sees the full Jacobian
    tau_v = (torch.where(mask, v, 0.0).sum(-1, keepdim=True) - 1.0) / count
    p = torch.where(mask, v - tau_v, 0.0)
    p = p / p.sum(-1, keepdim=True).detach()
    return (p, tau) if return_tau else p


# ------------------------------------------------------------------------------------------
# sparse products over the supports
# ------------------------------------------------------------------------------------------
def _coo(idx, valid, coef, k, transpose=False):
    m, s = idx.shape
    rows = torch.arange(m, device=idx.device).unsqueeze(1).expand(m, s)[valid]
    cols, vals = idx[valid], coef[valid]
    if transpose:
        return torch.sparse_coo_tensor(torch.stack([cols, rows]), vals, (k, m),
                                       check_invariants=False)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (m, k), is_coalesced=True,
                                   check_invariants=False)


def _combine(codebook, idx, valid, coef):
    """``sum_j coef[m, j] * codebook[idx[m, j]]`` over the valid j of every row m: (M, d)."""
    return torch.sparse.mm(_coo(idx, valid, coef, codebook.shape[0]), codebook)


def _scatter_outer(grad, idx, valid, coef, vec):
    """``grad[idx[m, j]] += coef[m, j] * vec[m]`` over the valid (m, j), in place."""
    return grad.add_(torch.sparse.mm(_coo(idx, valid, coef, grad.shape[0], True), vec))


def _row_chunks(m, s, d):
    step = max(1, _GATHER_BUDGET // max(1, s * max(s, d)))
    for start in range(0, m, step):
        yield slice(start, min(m, start + step))


def _project_rows(codebook, idx, valid, vec):
    """``codebook[idx[m, j]] . vec[m]`` for every valid (m, j), 0 elsewhere: (M, s)."""
    out = vec.new_empty(idx.shape)
    for sl in _row_chunks(idx.shape[0], idx.shape[1], codebook.shape[1]):
        out[sl] = torch.einsum("msd,md->ms", codebook[idx[sl]], vec[sl])
    return out * valid


# ------------------------------------------------------------------------------------------
# the relaxed solver (Alg. 2)
# ------------------------------------------------------------------------------------------
def woodbury_factor(codebook, alpha):
    r"""``B = C^T (C C^T + lambda I_d)^{-1}`` (K, d), differentiable in ``codebook``.

    ``B = (C^T C + lambda I_K)^{-1} C^T`` too (push-through identity); the ``d x d`` system is
    solved when ``d <= K`` and the ``K x K`` one otherwise, so the cost is
    ``O(K d min(K, d))``.
    """
    k, d = codebook.shape
    if d <= k:
        gram = codebook.t() @ codebook
        gram = gram + alpha * torch.eye(d, dtype=codebook.dtype, device=codebook.device)
        return torch.linalg.solve(gram, codebook.t()).t()
    gram = codebook @ codebook.t()
    gram = gram + alpha * torch.eye(k, dtype=codebook.dtype, device=codebook.device)
    return torch.linalg.solve(gram, codebook)


def _unconstrained(z, codebook, factor, codes):
    """``p_u = e_k + B (z - c_k)`` for every row (the relaxed linear system's solution)."""
    y = z - codebook[codes]
    a = y @ factor.t()
    a[torch.arange(z.shape[0], device=z.device), codes] += 1.0
    return y, a


def _flat_support(idx, valid, coef):
    """Row-major lists ``rows, cols, values`` of the valid entries of a padded support."""
    m, s = idx.shape
    rows = torch.arange(m, device=idx.device).unsqueeze(1).expand(m, s)[valid]
    return rows, idx[valid], coef[valid]


def _sparse(rows, cols, vals, shape, transpose=False):
    if transpose:
        return torch.sparse_coo_tensor(torch.stack([cols, rows]), vals, shape[::-1],
                                       check_invariants=False)
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, shape, is_coalesced=True,
                                   check_invariants=False)


class _RelaxedSCQ(torch.autograd.Function):
    """Alg. 2 with the exact simplex projection; analytic, support-sparse backward."""

    @staticmethod
    def forward(ctx, z, codebook, factor, codes):
        ctx.set_materialize_grads(False)
        m, k = z.shape[0], codebook.shape[0]
        y, a = _unconstrained(z, codebook, factor, codes)
        _, idx, valid, p_s = _project_compact(a)
        rows, cols, vals = _flat_support(idx, valid, p_s)
        quantized = torch.sparse.mm(_sparse(rows, cols, vals, (m, k)), codebook)
        weights = z.new_zeros(m, k)
        weights[rows, cols] = vals
        ctx.save_for_backward(codebook, factor, y, codes, rows, cols, vals)
        return quantized, weights

    @staticmethod
    def backward(ctx, grad_q, grad_p):
        codebook, factor, y, codes, rows, cols, vals = ctx.saved_tensors
        m, k = y.shape[0], codebook.shape[0]
        g = torch.zeros_like(vals)
        if grad_p is not None:
            g = g + grad_p[rows, cols]
        if grad_q is not None:
            g = g + (codebook.index_select(0, cols) * grad_q.index_select(0, rows)).sum(1)
        # Jacobian of the projection on its support: I - 1 1^T / |S|
        n_s = torch.bincount(rows, minlength=m).to(g.dtype)
        g_a = g - (torch.zeros(m, dtype=g.dtype, device=g.device).index_add_(0, rows, g)
                   / n_s.clamp_min(1))[rows]
        grad_y = torch.sparse.mm(_sparse(rows, cols, g_a, (m, k)), factor)
        grad_z = grad_factor = grad_codebook = None
        if ctx.needs_input_grad[0]:
            grad_z = grad_y
        if ctx.needs_input_grad[2]:
            grad_factor = torch.sparse.mm(_sparse(rows, cols, g_a, (m, k), True), y)
        if ctx.needs_input_grad[1]:
            grad_codebook = torch.zeros_like(codebook)
            grad_codebook.index_add_(0, codes, -grad_y)
            if grad_q is not None:
                grad_codebook += torch.sparse.mm(_sparse(rows, cols, vals, (m, k), True), grad_q)
        return grad_z, grad_codebook, grad_factor, None


def scq_alternating_projection(a, n_steps):
    """The paper's approximate projection (Alg. 2, steps 4-5), ``n_steps`` times.

    Each step clips to the nonnegative orthant, ``P <- max(0, P)``, and then shifts every
    column onto the hyperplane ``1^T p = 1``, ``p <- p - (1^T p - 1) / K``. The result sums to
    one but can have negative entries (it is not on the simplex in general).
    """
    k = a.shape[-1]
    p = a
    for _ in range(int(n_steps)):
        p = p.clamp_min(0.0)
        p = p - (p.sum(-1, keepdim=True) - 1.0) / k
    return p


def nearest_codes(z, codebook):
    """Index of the nearest codeword (row of ``codebook``) of every row of ``z`` (eq. 1)."""
    return nearest_codeword(z, codebook)


def _check_solver_inputs(z, codebook, alpha, codes):
    if z.ndim != 2 or codebook.ndim != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"expected z of shape (M, d) and codebook of shape (K, d), got {tuple(z.shape)} "
            f"and {tuple(codebook.shape)}."
        )
    if not float(alpha) > 0 or float(alpha) == float("inf"):
        raise ValueError(f"alpha (the paper's lambda) must be positive and finite, got {alpha}.")
    if codes is None:
        codes = nearest_codes(z.detach(), codebook.detach())
    return codes


def scq_relaxed(z, codebook, alpha=1.0, codes=None, n_steps=None):
    r"""Soft convex quantization by the relaxation of Alg. 2 (linear solve, then projection).

    Parameters
    ----------
    z : Tensor of shape (M, d)
        Encoder outputs (the columns of the paper's :math:`Z_e^{flattened}`).
    codebook : Tensor of shape (K, d)
        Codewords (the columns of the paper's :math:`C`).
    alpha : float, default=1.0
        The paper's regularisation :math:`\lambda > 0`.
    codes : Tensor of int64 of shape (M,), default=None
        Index ``k`` of :math:`\tilde p = e_k`; ``None`` uses the nearest codewords (Alg. 2,
        step 2).
    n_steps : int, default=None
        ``None`` projects onto the simplex exactly; an integer ``m`` runs the paper's ``m``
        alternating steps instead (steps 4-5; the weights then sum to one but may be
        negative).

    Returns
    -------
    quantized : Tensor of shape (M, d)
        ``C P`` (Alg. 2, step 7).
    weights : Tensor of shape (M, K)
        ``P`` (one row per vector).
    """
    codes = _check_solver_inputs(z, codebook, alpha, codes)
    factor = woodbury_factor(codebook, float(alpha))
    if n_steps is None:
        return _RelaxedSCQ.apply(z, codebook, factor, codes)
    _, a = _unconstrained(z, codebook, factor, codes)
    p = scq_alternating_projection(a, n_steps)
    return p @ codebook, p


# ------------------------------------------------------------------------------------------
# the exact solver of eq. (8)
# ------------------------------------------------------------------------------------------
def scq_objective(z, codebook, weights, codes, alpha):
    """Eq. (8)'s objective ``||z - C p||^2 + lambda ||p - e_k||^2`` of every row: (M,)."""
    resid = z - weights @ codebook
    ref = weights.clone()
    ref[torch.arange(z.shape[0], device=z.device), codes] -= 1.0
    return resid.pow(2).sum(1) + alpha * ref.pow(2).sum(1)


def _inv_hessian_apply(u_mat, rhs, lam):
    """``(I_d + U U^T / lam)^{-1} rhs`` for batched U (m, d, s), rhs (m, d)."""
    d, s = u_mat.shape[1:]
    if s <= d:
        small = u_mat.transpose(1, 2) @ u_mat
        small.diagonal(dim1=1, dim2=2).add_(lam)
        chol, _ = torch.linalg.cholesky_ex(small)
        sol = torch.cholesky_solve(u_mat.transpose(1, 2) @ rhs.unsqueeze(-1), chol)
        return rhs - (u_mat @ sol).squeeze(-1)
    big = (u_mat @ u_mat.transpose(1, 2)) / lam
    big.diagonal(dim1=1, dim2=2).add_(1.0)
    chol, _ = torch.linalg.cholesky_ex(big)
    return torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)


def _widen(t, width, fill):
    if t.shape[1] >= width:
        return t
    return torch.cat([t, t.new_full((t.shape[0], width - t.shape[1]), fill)], dim=1)


class _DualState:
    """Scaled dual point ``u = nu / lam``, ``a = e_k + C^T u``, and its primal point."""

    fields = ("u", "a", "tau", "idx", "valid", "p_s", "cp", "pk", "phi")

    def __init__(self, u, a, z, codebook, codes, lam):
        self.u, self.a = u, a
        self.tau, self.idx, self.valid, self.p_s = _project_compact(a)
        self.cp = _combine(codebook, self.idx, self.valid, self.p_s)
        self.pk = (self.p_s * (self.idx == codes.unsqueeze(1))).sum(1)
        nu = lam * u
        # -g/2 = |nu|^2/2 - nu.z + lam/2 (p^T a + tau - 1) with p^T a = p_k + (C p).u
        pta = self.pk + (self.cp * u).sum(1)
        self.phi = (0.5 * nu.pow(2).sum(1) - (nu * z).sum(1)
                    + 0.5 * lam * (pta + self.tau[:, 0] - 1.0))

    def take(self, keep):
        new = object.__new__(_DualState)
        for name in self.fields:
            setattr(new, name, getattr(self, name)[keep])
        return new

    def put(self, rows, other):
        """Overwrite ``rows`` with the rows of ``other`` (padded supports widened)."""
        width = max(self.idx.shape[1], other.idx.shape[1])
        for name, fill in (("idx", 0), ("valid", False), ("p_s", 0.0)):
            mine = _widen(getattr(self, name), width, fill)
            mine[rows] = _widen(getattr(other, name), width, fill)
            setattr(self, name, mine)
        for name in ("u", "a", "tau", "cp", "pk", "phi"):
            getattr(self, name)[rows] = getattr(other, name)


def _solve_exact(z, codebook, codes, lam, tol, max_iter, factor):
    """Semismooth dual Newton for eq. (8); returns the weights P (M, K) and a report."""
    m_all, d = z.shape
    k = codebook.shape[0]
    eps = torch.finfo(z.dtype).eps
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    y, a = _unconstrained(z, codebook, factor, codes)
    u = y @ torch.linalg.inv(codebook.t() @ codebook + lam * eye)  # relaxed dual point
    weights = torch.zeros_like(a)
    best_f = torch.full((m_all,), float("inf"), dtype=z.dtype, device=z.device)
    gaps = torch.full((m_all,), float("inf"), dtype=z.dtype, device=z.device)
    active = torch.arange(m_all, device=z.device)
    zz, kk = z, codes
    state = _DualState(u, a, zz, codebook, kk, lam)
    n_iter, n_stalled, n_left = 0, 0, 0
    for it in range(max_iter + 1):
        resid = zz - state.cp
        f = resid.pow(2).sum(1) + lam * (state.p_s.pow(2).sum(1) - 2.0 * state.pk + 1.0)
        r = resid - lam * state.u
        better = f < best_f[active]
        if bool(better.any()):
            sel = active[better]
            weights[sel] = _densify(state.idx[better], state.valid[better],
                                    state.p_s[better], k)
            best_f[sel] = f[better]
        # g(nu) = f(p_nu) - |r|^2, so best_f - g(nu) bounds the kept point's suboptimality
        cert = torch.minimum(gaps[active], best_f[active] - f + r.pow(2).sum(1))
        gaps[active] = cert
        keep = cert > tol * (1.0 + best_f[active])
        if it == max_iter or not bool(keep.any()):
            n_left = int(keep.sum())
            break
        n_iter = it + 1
        active, zz, kk, r = active[keep], zz[keep], kk[keep], r[keep]
        state = state.take(keep)
        # Newton direction: (I + U U^T / lam) dnu = r with U = C_S (I - 1 1^T / |S|)
        dnu = torch.empty_like(r)
        n_s = state.valid.sum(1, keepdim=True).to(z.dtype)
        for sl in _row_chunks(r.shape[0], state.idx.shape[1], d):
            valid = state.valid[sl].unsqueeze(-1)
            cs = codebook[state.idx[sl]] * valid
            centred = (cs - cs.sum(1, keepdim=True) / n_s[sl].unsqueeze(-1)) * valid
            dnu[sl] = _inv_hessian_apply(centred.transpose(1, 2), r[sl], lam)
        slope = (r * dnu).sum(1)
        du = dnu / lam
        b = du @ codebook.t()
        slack = 16.0 * eps * ((lam * state.u).pow(2).sum(1) + zz.pow(2).sum(1) + lam)
        step = torch.ones(r.shape[0], dtype=z.dtype, device=z.device)
        pending = torch.arange(r.shape[0], device=z.device)
        for _ in range(30):  # Armijo backtracking on -g/2
            t = step[pending].unsqueeze(1)
            trial = _DualState(state.u[pending] + t * du[pending],
                               state.a[pending] + t * b[pending],
                               zz[pending], codebook, kk[pending], lam)
            ok = trial.phi <= (state.phi[pending] - 1e-4 * t[:, 0] * slope[pending]
                               + slack[pending])
            if bool(ok.any()):
                state.put(pending[ok], trial.take(ok))
            pending = pending[~ok]
            if pending.numel() == 0:
                break
            step[pending] *= 0.5
        if pending.numel():  # no decrease at the floating-point resolution: stop these rows
            n_stalled += int(pending.numel())
            keep = torch.ones(r.shape[0], dtype=torch.bool, device=z.device)
            keep[pending] = False
            active, zz, kk = active[keep], zz[keep], kk[keep]
            state = state.take(keep)
            if active.numel() == 0:
                break
    info = SCQSolverInfo(n_iter=n_iter, max_gap=float(gaps.max()) if m_all else 0.0,
                         n_unconverged=n_left + n_stalled)
    return weights, info


def _inv_restricted(cs, x, lam):
    """``(C_S^T C_S + lam I)^{-1} x`` for batched cs (m, s, d) (zero rows on padding)."""
    s, d = cs.shape[1:]
    if s <= d:
        h = cs @ cs.transpose(1, 2)
        h.diagonal(dim1=1, dim2=2).add_(lam)
        chol, _ = torch.linalg.cholesky_ex(h)
        return torch.cholesky_solve(x, chol)
    small = cs.transpose(1, 2) @ cs
    small.diagonal(dim1=1, dim2=2).add_(lam)
    chol, _ = torch.linalg.cholesky_ex(small)
    inner = torch.cholesky_solve(cs.transpose(1, 2) @ x, chol)
    return (x - cs @ inner) / lam


def _better_of_relaxed(z, codebook, factor, codes, lam, weights):
    """Rows of ``weights`` replaced by the relaxed solution where that has a lower objective."""
    _, a = _unconstrained(z, codebook, factor, codes)
    relaxed = project_simplex(a)
    worse = scq_objective(z, codebook, relaxed, codes, lam) < scq_objective(
        z, codebook, weights, codes, lam)
    weights[worse] = relaxed[worse]
    return weights


def _compact(weights):
    """Support of every row of dense weights: idx, valid, p_s (padded)."""
    mask = weights > 0
    count = mask.sum(1)
    width = max(int(count.max()), 1) if weights.shape[0] else 1
    p_s, idx = torch.topk(weights, width, dim=1)
    valid = p_s > 0
    order = torch.argsort(torch.where(valid, idx, weights.shape[1]), dim=1)
    idx, p_s = idx.gather(1, order), p_s.gather(1, order)
    return idx, p_s > 0, p_s


def _solve_active_set(z, codebook, codes, lam, tol, max_iter, out_dtype):
    """The compiled primal active-set solver (CPU) on float64 ``z`` and ``codebook``.

    Returns the weights P (M, K) in float64 when ``out_dtype`` is float64 and in float32
    otherwise (the dense output is the solver's largest array), their supports (``idx``,
    ``valid``, ``p_s``), ``C P`` (M, d, float64) and a report.
    """
    from ._active_set import active_set_solve, combine_rows, support_lists

    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        cb = codebook.numpy()
        weights, n_iter, gaps, status = active_set_solve(
            z.numpy(), cb, codes.cpu().numpy(), lam, tol, max_iter,
            dtype=np.float64 if out_dtype == torch.float64 else np.float32)
        idx, vals = support_lists(weights)
        quantized = combine_rows(cb, idx, vals)
    finally:
        numba.set_num_threads(previous)
    m = weights.shape[0]
    info = SCQSolverInfo(n_iter=int(n_iter.max()) if m else 0,
                         max_gap=float(gaps.max()) if m else 0.0,
                         n_unconverged=int((status != 0).sum()))
    vals = torch.from_numpy(vals)
    support = (torch.from_numpy(idx), vals > 0, vals)
    return torch.from_numpy(weights), support, torch.from_numpy(quantized), info


# ------------------------------------------------------------------------------------------
# the batched primal active-set method in torch (any device)
# ------------------------------------------------------------------------------------------
def _default_n_add(d):
    """Codewords added per active-set iteration: ``d // 16`` clipped to [1, 8] (see
    :func:`skvq.neural.layers._active_set.active_set_solve`)."""
    return min(8, max(1, d // 16))


def _sorted_sets(idx, valid, pw, k):
    """Working sets with their members first, by ascending codeword, trimmed to the widest.

    The ascending order within a row is what :func:`_combine`'s coalesced sparse matrix
    assumes; padding slots get index 0, ``valid`` false and weight 0.
    """
    key, order = torch.sort(torch.where(valid, idx, k), dim=1)
    width = max(int(valid.sum(1).max()), 1) if idx.shape[0] else 1
    order = order[:, :width]
    valid = valid.gather(1, order)
    idx = torch.where(valid, key[:, :width], 0)
    return idx, valid, pw.gather(1, order) * valid


def _kkt_point(z, codebook, codes, idx, valid, pw, lam):
    """Reduced gradient ``H p - b`` (M, K) and objective ``f(p)`` (M,) of every row.

    ``f = 2 (p^T H p / 2 - b^T p) + |z|^2 + lam`` with ``H = C^T C + lam I`` and
    ``b = C^T z + lam e_k``; both are computed from the residual ``C p - z`` (one
    ``M x d x K`` product), not from ``H``, so that no ``K x K`` Gram matrix is formed.
    """
    resid = _combine(codebook, idx, valid, pw) - z
    grad = resid @ codebook.t()
    grad.scatter_add_(1, idx, lam * pw)
    grad[torch.arange(z.shape[0], device=z.device), codes] -= lam
    # |p - e_k|^2 = sum_{i != k} p_i^2 + (1 - p_k)^2 with 1 - p_k = sum_{i != k} p_i on the
    # simplex: no cancellation, which lam |p - e_k|^2 would suffer at large lam
    others = pw * (idx != codes.unsqueeze(1))
    f = resid.pow(2).sum(1) + lam * (others.pow(2).sum(1) + others.sum(1).pow(2))
    return grad, f


def _solve_on_sets(codebook, z, codes, idx, valid, pw, lam):
    """The inner loop of the active-set method for a batch of rows (all on their own sets).

    For every row: solve eq. (8) restricted to its working set ``W`` with the constraint
    ``1^T p_W = 1`` only (``H_WW p_W = b_W - mu 1``; ``H_WW = C_W^T C_W + lam I`` by a batched
    Cholesky factorisation); if that point leaves the simplex, step from the current
    (feasible) point towards it up to the first coordinate that reaches zero, drop that one
    (and any driven below zero by rounding) and solve again, until the solution is feasible.
    Every pass removes a coordinate, so a row needs at most ``|W|`` passes.

    Returns the new ``pw`` and ``valid`` and a bool (M,) of rows whose factorisation failed
    (those keep their current point).
    """
    n, width = idx.shape
    pw, valid = pw.clone(), valid.clone()
    failed = torch.zeros(n, dtype=torch.bool, device=idx.device)
    cs = codebook[idx]
    gram = cs @ cs.transpose(1, 2)
    b = torch.einsum("nwd,nd->nw", cs, z) + lam * (idx == codes.unsqueeze(1)).to(z.dtype)
    eye = lam * torch.eye(width, dtype=z.dtype, device=z.device)
    slots = torch.arange(width, device=idx.device)
    pending = torch.arange(n, device=idx.device)
    for _ in range(width + 1):
        member = valid[pending].to(z.dtype)
        # off-set slots become lam * I blocks with zero right-hand sides: their solution is 0
        h = gram[pending] * (member.unsqueeze(2) * member.unsqueeze(1)) + eye
        chol, status = torch.linalg.cholesky_ex(h)
        sol = torch.cholesky_solve(torch.stack([b[pending] * member, member], dim=-1), chol)
        h_b, h_1 = sol[..., 0], sol[..., 1]
        mu = (h_b.sum(1, keepdim=True) - 1.0) / h_1.sum(1, keepdim=True)
        x = (h_b - mu * h_1) * member
        ok = status == 0
        current = pw[pending]
        blocking = valid[pending] & (x <= 0.0)
        denom = current - x  # >= 0 on blocking coordinates
        ratio = torch.where(blocking & (denom > 0), current / denom.clamp_min(1e-300), 0.0)
        ratio = torch.where(blocking, ratio, float("inf"))
        step, block = ratio.min(1, keepdim=True)
        has_block = blocking.any(1)
        done = ok & ~has_block
        pw[pending[done]] = x[done]
        moved = ok & has_block
        new = current + step.clamp_max(1.0) * (x - current)
        keep = valid[pending] & (slots != block) & (new >= 0.0)
        new = new * keep
        new = new / new.sum(1, keepdim=True)
        pw[pending[moved]] = new[moved]
        valid[pending[moved]] = keep[moved]
        failed[pending[~ok]] = True
        pending = pending[moved]
        if pending.numel() == 0:
            break
    return pw, valid, failed


def _solve_active_set_torch(z, codebook, codes, lam, tol, max_iter, out_dtype, n_add=None):
    """The primal active-set method of :mod:`._active_set`, batched over rows, in torch.

    Rows are solved in blocks whose ``rows x K`` reduced gradients hold at most
    ``_TORCH_ACTIVE_SET_BUDGET`` entries (the rows are independent); see
    :func:`_active_set_block` for the method. ``z`` and ``codebook`` in the working dtype
    (float64); returns the weights (M, K) in ``out_dtype``, their supports (``idx``,
    ``valid``, ``p_s``, working dtype), ``C P`` (M, d, working dtype) and a
    :class:`SCQSolverInfo`.
    """
    m, k = z.shape[0], codebook.shape[0]
    step = max(1, _TORCH_ACTIVE_SET_BUDGET // k)
    if m <= step:
        return _active_set_block(z, codebook, codes, lam, tol, max_iter, out_dtype, n_add)
    parts = [_active_set_block(z[s:s + step], codebook, codes[s:s + step], lam, tol, max_iter,
                               out_dtype, n_add) for s in range(0, m, step)]
    width = max(part[1][0].shape[1] for part in parts)
    support = tuple(torch.cat([_widen(part[1][i], width, fill) for part in parts])
                    for i, fill in enumerate((0, False, 0.0)))
    info = SCQSolverInfo(n_iter=max(part[3].n_iter for part in parts),
                         max_gap=max(part[3].max_gap for part in parts),
                         n_unconverged=sum(part[3].n_unconverged for part in parts))
    return (torch.cat([part[0] for part in parts]), support,
            torch.cat([part[2] for part in parts]), info)


def _active_set_block(z, codebook, codes, lam, tol, max_iter, out_dtype, n_add=None):
    """The primal active-set method of :mod:`._active_set` on a block of rows, in torch.

    Every row carries its own working set (padded to the widest). An iteration computes the
    reduced gradients of all unfinished rows at once (one ``M x d x K`` product), certifies
    the rows whose Frank-Wolfe gap ``2 (p^T g - min_i g_i)`` (an upper bound on
    ``f(p) - f(p*)``) is at most ``tol * (1 + f(p))`` or outside whose working set no
    coordinate has a reduced gradient below ``p^T g`` (dual feasibility off the set, with
    ``p`` the exact minimiser on it), adds the (up to) ``n_add`` most violating coordinates
    to every other row and runs :func:`_solve_on_sets`. As in the compiled version, an
    iteration that does not lower a row's objective is retried with one coordinate, and a
    second one stops that row (status 2: rounding); a failed factorisation stops it too.
    Returns what :func:`_solve_active_set_torch` returns.
    """
    m, d = z.shape
    k = codebook.shape[0]
    dev, dtype = z.device, z.dtype
    n_add = min(_default_n_add(d) if n_add is None else int(n_add), k)
    n_iter = torch.zeros(m, dtype=torch.long, device=dev)
    gaps = torch.zeros(m, dtype=dtype, device=dev)
    status = torch.zeros(m, dtype=torch.long, device=dev)
    finished = []  # (rows, idx, valid, pw) of the rows as they finish
    active = torch.arange(m, device=dev)
    zz, kk = z, codes
    idx = codes.unsqueeze(1).clone()  # VQ's one-hot answer: W = {k}, p = e_k
    valid = torch.ones(m, 1, dtype=torch.bool, device=dev)
    pw = torch.ones(m, 1, dtype=dtype, device=dev)
    batch = torch.full((m,), n_add, dtype=torch.long, device=dev)
    prev_f = torch.full((m,), float("inf"), dtype=dtype, device=dev)
    ranks = torch.arange(n_add, device=dev)
    for it in range(max_iter + 1):
        if active.numel() == 0:
            break
        grad, f = _kkt_point(zz, codebook, kk, idx, valid, pw, lam)
        g_set = grad.gather(1, idx)
        pg = (pw * g_set).sum(1)
        g_in = torch.where(valid, g_set, float("inf")).amin(1)
        in_set = torch.zeros(active.numel(), k + 1, dtype=torch.bool, device=dev)
        in_set.scatter_(1, torch.where(valid, idx, k), True)
        g_free = grad.masked_fill(in_set[:, :k], float("inf"))
        g_out = g_free.amin(1)
        gap = (2.0 * (pg - torch.minimum(g_in, g_out))).clamp_min(0.0)
        converged = (gap <= tol * (1.0 + f.clamp_min(0.0))) | (g_out >= pg)
        no_progress = ~converged & ~(f < prev_f)
        stalled = no_progress & (batch == 1)
        stop = converged | stalled | (it == max_iter)
        gaps[active] = gap
        status[active] = torch.where(converged, 0, torch.where(stalled, 2, 1))
        if bool(stop.any()):
            finished.append((active[stop], idx[stop], valid[stop], pw[stop]))
            go = ~stop
            active, zz, kk, idx, valid, pw = (active[go], zz[go], kk[go], idx[go], valid[go],
                                              pw[go])
            g_free, pg, f, no_progress = g_free[go], pg[go], f[go], no_progress[go]
            if active.numel() == 0:
                break
        n_iter[active] += 1
        batch = torch.where(no_progress, 1, n_add)
        prev_f = f
        # the (up to) `batch` most violating coordinates outside W, i.e. below p^T g
        low, cand = torch.topk(g_free, n_add, dim=1, largest=False)
        take = (ranks < batch.unsqueeze(1)) & (low < pg.unsqueeze(1))
        idx, valid, pw = _sorted_sets(torch.cat([idx, cand], 1), torch.cat([valid, take], 1),
                                      torch.cat([pw, torch.zeros_like(low)], 1), k)
        failed = torch.zeros(active.numel(), dtype=torch.bool, device=dev)
        for sl in _row_chunks(active.numel(), idx.shape[1], d):
            pw[sl], valid[sl], failed[sl] = _solve_on_sets(codebook, zz[sl], kk[sl], idx[sl],
                                                           valid[sl], pw[sl], lam)
        if bool(failed.any()):  # a factorisation failed: keep the last point, status 2
            status[active[failed]] = 2
            finished.append((active[failed], idx[failed], valid[failed], pw[failed]))
            go = ~failed
            active, zz, kk, idx, valid, pw = (active[go], zz[go], kk[go], idx[go], valid[go],
                                              pw[go])
            batch, prev_f = batch[go], prev_f[go]
        idx, valid, pw = _sorted_sets(idx, valid, pw, k)
    width = max([1] + [int(v.sum(1).max()) for _, _, v, _ in finished if v.shape[0]])
    sup_idx = torch.zeros(m, width, dtype=torch.long, device=dev)
    sup_p = torch.zeros(m, width, dtype=dtype, device=dev)
    for rows, idx_f, valid_f, pw_f in finished:
        idx_f, valid_f, pw_f = _sorted_sets(idx_f, valid_f & (pw_f > 0), pw_f, k)
        sup_idx[rows, :idx_f.shape[1]] = idx_f
        sup_p[rows, :idx_f.shape[1]] = pw_f
    sup_p = sup_p / sup_p.sum(1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    sup_valid = sup_p > 0
    weights = torch.zeros(m, k, dtype=out_dtype, device=dev)
    weights.scatter_add_(1, sup_idx, sup_p.to(out_dtype))
    quantized = _combine(codebook, sup_idx, sup_valid, sup_p)
    info = SCQSolverInfo(n_iter=int(n_iter.max()) if m else 0,
                         max_gap=float(gaps.max()) if m else 0.0,
                         n_unconverged=int((status != 0).sum()))
    return weights, (sup_idx, sup_valid, sup_p), quantized, info


_METHODS = ("auto", "active-set", "active-set-torch", "newton")


def _resolve_method(method, z, codebook):
    """The method :func:`scq_exact` runs: ``method`` checked, ``"auto"`` resolved.

    ``"auto"`` is the compiled active-set method for CPU tensors with ``K <= 4096`` (fastest
    there, one thread per row) and the batched torch active-set method otherwise (CUDA and
    other devices, or a ``K x K`` Gram matrix too large to build).
    """
    if not isinstance(method, str) or method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}, "
                         f"got {method!r}.")
    cpu = z.device.type == "cpu" and codebook.device.type == "cpu"
    if method == "auto":
        method = ("active-set" if cpu and codebook.shape[0] <= _ACTIVE_SET_MAX_K
                  else "active-set-torch")
    if method == "active-set" and not cpu:
        raise ValueError("method='active-set' (compiled) runs on CPU tensors only; use "
                         "'active-set-torch' (or 'auto') for tensors on another device.")
    return method


class _ExactSCQ(torch.autograd.Function):
    """Eq. (8) solved to tolerance; backward by implicit differentiation of its KKT system."""

    @staticmethod
    def forward(ctx, z, codebook, factor, codes, lam, tol, max_iter, info_box, method):
        ctx.set_materialize_grads(False)
        # both solvers run in float64 (Newton's line search compares dual values that differ
        # by less than float32 resolves near the optimum) and P is cast back
        work = torch.float64 if z.dtype != torch.float64 else z.dtype
        if method in ("active-set", "active-set-torch"):
            solve = _solve_active_set if method == "active-set" else _solve_active_set_torch
            weights, support, quantized, info = solve(
                z.detach().to(work), codebook.detach().to(work), codes, lam, tol, max_iter,
                z.dtype)
            if info.n_unconverged:  # keep the relaxed point where it is better
                weights = _better_of_relaxed(z.to(work), codebook.to(work), factor.to(work),
                                             codes, lam, weights.to(work))
                support = None
        else:
            weights, info = _solve_exact(z.to(work), codebook.to(work), codes, lam, tol,
                                         max_iter, factor.to(work))
            support = None
        weights = weights.to(z.dtype)
        info_box.append(info)
        if support is None:
            idx, valid, p_s = _compact(weights)
            quantized = _combine(codebook, idx, valid, p_s)
        else:
            idx, valid, p_s = support[0], support[1], support[2].to(z.dtype)
            quantized = quantized.to(z.dtype)
        ctx.lam = lam
        ctx.save_for_backward(z, codebook, quantized, idx, valid, p_s)
        return quantized, weights

    @staticmethod
    def backward(ctx, grad_q, grad_p):
        z, codebook, quantized, idx, valid, p_s = ctx.saved_tensors
        lam = ctx.lam
        g_s = torch.zeros_like(p_s)
        if grad_p is not None:
            g_s = g_s + grad_p.gather(1, idx)
        if grad_q is not None:
            g_s = g_s + _project_rows(codebook, idx, valid, grad_q)
        g_s = g_s * valid
        # KKT on the support S: dp_S = Q (dq - dH p)_S with H = C_S^T C_S + lam I and
        # Q = H^-1 - H^-1 1 1^T H^-1 / (1^T H^-1 1); the VJP needs w = Q g
        w_s = torch.empty_like(g_s)
        ones = valid.to(g_s.dtype)
        for sl in _row_chunks(g_s.shape[0], idx.shape[1], z.shape[1]):
            cs = codebook[idx[sl]] * valid[sl].unsqueeze(-1)
            sol = _inv_restricted(cs, torch.stack([g_s[sl], ones[sl]], dim=-1), lam)
            hg, h1 = sol[..., 0], sol[..., 1]
            coef = (ones[sl] * hg).sum(1, keepdim=True) / (ones[sl] * h1).sum(1, keepdim=True)
            w_s[sl] = (hg - coef * h1) * valid[sl]
        cw = _combine(codebook, idx, valid, w_s)
        grad_z = cw if ctx.needs_input_grad[0] else None
        grad_codebook = None
        if ctx.needs_input_grad[1]:
            # d/dC of w^T (C^T z - C^T C p) and of the output C p itself
            grad_codebook = _scatter_outer(torch.zeros_like(codebook), idx, valid, w_s,
                                           z - quantized)
            upstream = -cw if grad_q is None else grad_q - cw
            _scatter_outer(grad_codebook, idx, valid, p_s, upstream)
        return grad_z, grad_codebook, None, None, None, None, None, None, None


def scq_exact(z, codebook, alpha=1.0, codes=None, tol=1e-6, max_iter=None, return_info=False,
              method="auto"):
    r"""Soft convex quantization by eq. (8), solved for every row to a certified tolerance.

    Parameters
    ----------
    z : Tensor of shape (M, d)
        Encoder outputs.
    codebook : Tensor of shape (K, d)
        Codewords.
    alpha : float, default=1.0
        The paper's :math:`\lambda > 0`.
    codes : Tensor of int64 of shape (M,), default=None
        Index ``k`` of :math:`\tilde p = e_k`; ``None`` uses the nearest codewords.
    tol : float, default=1e-6
        Every row stops when its duality gap, an upper bound on
        :math:`f(p) - f(p^\star)`, is at most ``tol * (1 + f(p))``: the Frank-Wolfe gap
        :math:`2 (p^\top g - \min_i g_i)` (:math:`g = H p - b`) for the active-set methods,
        :math:`\|z - C p - \nu\|^2` for the Newton method. The active-set methods also stop
        a row, converged, when no codeword outside its working set has a reduced gradient
        below :math:`p^\top g` (the KKT conditions hold to the floating-point resolution).
    max_iter : int, default=None
        Iterations at most per row: additions of codewords for the active-set methods
        (``None``: ``2 K + 10``), Newton steps for the Newton method (``None``: 100).
    return_info : bool, default=False
        Also return a :class:`SCQSolverInfo`.
    method : {"auto", "active-set", "active-set-torch", "newton"}, default="auto"
        ``"active-set"``: the compiled primal active-set method of
        :mod:`skvq.neural.layers._active_set` (CPU tensors only; it builds the ``K x K``
        Gram matrix in float64), which starts at VQ's one-hot point and adds the most
        violating codewords (``d // 16`` per iteration, between 1 and 8), so its cost grows
        with the size of the optimal supports. ``"active-set-torch"``: the same algorithm
        batched over rows in torch, on any device (no Gram matrix; one ``M x d x K`` product
        and batched ``|W| x |W|`` Cholesky factorisations per iteration). ``"newton"``: the
        batched semismooth Newton method on the ``d``-dimensional dual (above), in torch on
        any device; its iterations grow with :math:`\|C\|_2^2 / \lambda` (slow on badly
        conditioned problems). ``"auto"``: ``"active-set"`` for CPU tensors with
        ``K <= 4096``, ``"active-set-torch"`` otherwise.

    Returns
    -------
    quantized : Tensor of shape (M, d)
        ``C P*``; differentiable in ``z`` and ``codebook`` (implicit differentiation).
    weights : Tensor of shape (M, K)
        ``P*``, every row on the simplex. The objective is never above that of the relaxed
        solution: the Newton method starts there and returns its best iterate; rows the
        active-set methods leave unconverged fall back to the relaxed point where that is
        better.
    info : SCQSolverInfo
        Only when ``return_info`` is true.
    """
    codes = _check_solver_inputs(z, codebook, alpha, codes)
    if not float(tol) > 0:
        raise ValueError(f"tol must be positive, got {tol}.")
    method = _resolve_method(method, z, codebook)
    if max_iter is None:
        max_iter = 100 if method == "newton" else 2 * codebook.shape[0] + 10
    if int(max_iter) < 0:
        raise ValueError(f"max_iter must be non-negative, got {max_iter}.")
    lam = float(alpha)
    with torch.no_grad():
        factor = woodbury_factor(codebook.detach(), lam)
    box = []
    quantized, weights = _ExactSCQ.apply(z, codebook, factor, codes, lam, float(tol),
                                         int(max_iter), box, method)
    if return_info:
        return quantized, weights, box[0]
    return quantized, weights
