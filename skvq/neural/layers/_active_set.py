r"""A compiled primal active-set solver of soft convex quantization's eq. (8), one row at a time.

For every row ``z`` (length ``d``) of ``Z`` and its reference code ``k`` it solves

.. math::

    \min_{p \in \Delta_K} \|z - C p\|^2 + \lambda \|p - e_k\|^2
    \;=\; 2 \left(\tfrac12 p^\top H p - b^\top p\right) + \|z\|^2 + \lambda,
    \qquad H = C^\top C + \lambda I, \quad b = C^\top z + \lambda e_k,

(``C`` is ``d x K``; the codebook is stored row-wise, ``codebook = C^T``) by the classical
primal active-set method for a strictly convex QP over the probability simplex (Nocedal and
Wright, *Numerical Optimization*, 2nd ed., Alg. 16.3, specialised to the simplex):

* start at the vertex ``p = e_k`` (VQ's answer) with working set ``W = {k}``;
* while the Frank-Wolfe gap :math:`2 (p^\top \nabla - \min_i \nabla_i)` (an upper bound on the
  suboptimality, :math:`\nabla = H p - b`) is above ``tol * (1 + f(p))``, add the coordinate
  with the most negative reduced gradient, solve the equality-constrained problem on ``W``
  (:math:`H_{WW} p_W = b_W - \mu 1`, :math:`1^\top p_W = 1`) with a Cholesky factor of
  :math:`H_{WW}` that grows by one row per added coordinate, and, if that solution leaves the
  simplex, step to the boundary and drop the blocking coordinates (ratio test).

Each iteration costs ``O(K |W| + |W|^2)`` with the Gram matrix :math:`C^\top C` precomputed
(``K x K``); the method ends, exactly, after a number of iterations close to the size of the
optimal support (a few tens at ``d = 64``, ``K = 1024``). Rows are solved in parallel
(numba ``prange``); everything is float64. Pure numpy/numba: no torch here.
"""

import math

import numba
import numpy as np

__all__ = ["active_set_solve", "combine_rows", "support_lists"]

_START_CAPACITY = 64


@numba.njit(cache=True, nogil=True)
def _chol_append(chol, s, col, diag):
    """Grow the lower Cholesky factor of ``H_WW`` (first ``s`` rows valid) by one row."""
    for i in range(s):
        acc = col[i]
        for t in range(i):
            acc -= chol[i, t] * chol[s, t]
        chol[s, i] = acc / chol[i, i]
    acc = diag
    for t in range(s):
        acc -= chol[s, t] * chol[s, t]
    if not acc > 0.0:
        return False
    chol[s, s] = math.sqrt(acc)
    return True


@numba.njit(cache=True, nogil=True)
def _chol_solve(chol, s, rhs, out):
    """``out = H_WW^{-1} rhs`` from its Cholesky factor (first ``s`` entries)."""
    for i in range(s):
        acc = rhs[i]
        for t in range(i):
            acc -= chol[i, t] * out[t]
        out[i] = acc / chol[i, i]
    for i in range(s - 1, -1, -1):
        acc = out[i]
        for t in range(i + 1, s):
            acc -= chol[t, i] * out[t]
        out[i] = acc / chol[i, i]


@numba.njit(cache=True, nogil=True)
def _refactor(chol, work, s, gram, lam, col):
    for q in range(s):
        for t in range(q):
            col[t] = gram[work[q], work[t]]
        if not _chol_append(chol, q, col, gram[work[q], work[q]] + lam):
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _gradient(grad, gram, b, work, pw, s, lam):
    """``grad = H p - b`` for ``p`` supported on ``work[:s]`` with values ``pw[:s]``."""
    k = grad.shape[0]
    for i in range(k):
        grad[i] = -b[i]
    for t in range(s):
        row = gram[work[t]]
        v = pw[t]
        for i in range(k):
            grad[i] += v * row[i]
        grad[work[t]] += lam * v


@numba.njit(cache=True, nogil=True, fastmath=True)
def _dot_rows(codebook, z, b):
    k, d = codebook.shape
    for i in range(k):
        acc = 0.0
        for t in range(d):
            acc += codebook[i, t] * z[t]
        b[i] = acc


@numba.njit(cache=True, nogil=True)
def _objective(z, codebook, work, pw, s, code, lam, resid):
    """``f(p) = |z - C p|^2 + lam |p - e_k|^2`` for ``p`` on ``work[:s]``.

    ``|p - e_k|^2`` is summed as ``sum_{i != k} p_i^2 + (sum_{i != k} p_i)^2`` (on the
    simplex ``1 - p_k = sum_{i != k} p_i``) and the residual is formed explicitly: the
    expanded form ``|z|^2 + lam + p^T (H p - 2 b)`` loses all digits of the progress near the
    optimum at large ``lam``, which stopped rows as stalled.
    """
    d = z.shape[0]
    for t in range(d):
        resid[t] = z[t]
    sq = 0.0
    total = 0.0
    for j in range(s):
        v = pw[j]
        c = codebook[work[j]]
        for t in range(d):
            resid[t] -= v * c[t]
        if work[j] != code:
            sq += v * v
            total += v
    f = 0.0
    for t in range(d):
        f += resid[t] * resid[t]
    return f + lam * (sq + total * total)


@numba.njit(cache=True, nogil=True)
def _solve_row(z, codebook, gram, code, lam, tol, max_iter, n_add, out_p, b, grad, in_w, added,
               chol, work, pw, sol, ones_sol, rhs, col, resid):
    """Solve one row into ``out_p`` (zeroed, length K); returns (n_iter, gap, status).

    status: 0 converged, 1 iteration limit, 2 numerical stall. ``b`` ... ``resid`` are the
    caller's work arrays (``in_w`` all false on entry and on return); the ``|W|``-sized ones
    are replaced by larger local copies if the working set outgrows them.
    """
    k = codebook.shape[0]
    _dot_rows(codebook, z, b)
    b[code] += lam
    cap = work.shape[0]

    work[0] = code
    pw[0] = 1.0
    in_w[code] = True
    s = 1
    chol[0, 0] = math.sqrt(gram[code, code] + lam)
    _gradient(grad, gram, b, work, pw, s, lam)
    n_iter = 0
    status = 1
    gap = np.inf
    batch = n_add
    n_new = 0
    while True:
        pg = 0.0
        f = _objective(z, codebook, work, pw, s, code, lam, resid)
        g_in = np.inf
        for t in range(s):
            g = grad[work[t]]
            pg += pw[t] * g
            g_in = min(g_in, g)
        g_out = np.inf
        for i in range(k):
            if not in_w[i] and grad[i] < g_out:
                g_out = grad[i]
        gap = max(2.0 * (pg - min(g_in, g_out)), 0.0)
        if gap <= tol * (1.0 + max(f, 0.0)) or g_out >= pg:
            # certified, or no coordinate outside W can lower the objective: the point is
            # the exact minimiser on W and KKT holds to the floating-point resolution
            status = 0
            break
        if n_iter >= max_iter:
            break
        n_iter += 1
        # the (up to) `batch` most violating coordinates outside W, most violating first
        n_new = 0
        while n_new < min(batch, k - s):
            best = pg
            j = -1
            for i in range(k):
                if not in_w[i] and grad[i] < best:
                    best = grad[i]
                    j = i
            if j < 0:
                break
            in_w[j] = True
            added[n_new] = j
            n_new += 1
        if s + n_new > cap:  # grow the work arrays
            new_cap = min(k, max(2 * cap, s + n_new))
            chol2 = np.empty((new_cap, new_cap))
            chol2[:cap, :cap] = chol
            chol = chol2
            work2 = np.empty(new_cap, np.int64)
            work2[:cap] = work
            work = work2
            pw2 = np.empty(new_cap)
            pw2[:cap] = pw
            pw = pw2
            sol = np.empty(new_cap)
            ones_sol = np.empty(new_cap)
            rhs = np.empty(new_cap)
            col = np.empty(new_cap)
            cap = new_cap
        failed = False
        for a in range(n_new):
            j = added[a]
            for t in range(s):
                col[t] = gram[work[t], j]
            if not _chol_append(chol, s, col, gram[j, j] + lam):
                failed = True
                break
            work[s] = j
            pw[s] = 0.0
            s += 1
        if failed:
            status = 2
            break
        for _ in range(k + 1):  # solve on W; drop blocking coordinates until feasible
            for t in range(s):
                rhs[t] = b[work[t]]
            _chol_solve(chol, s, rhs, sol)
            for t in range(s):
                rhs[t] = 1.0
            _chol_solve(chol, s, rhs, ones_sol)
            sum_sol = 0.0
            sum_one = 0.0
            for t in range(s):
                sum_sol += sol[t]
                sum_one += ones_sol[t]
            mu = (sum_sol - 1.0) / sum_one
            step = 1.0
            block = -1
            for t in range(s):
                sol[t] -= mu * ones_sol[t]
                if sol[t] <= 0.0:
                    denom = pw[t] - sol[t]
                    a = pw[t] / denom if denom > 0.0 else 0.0
                    if a < step:
                        step = a
                        block = t
            if block < 0:
                for t in range(s):
                    pw[t] = sol[t]
                break
            for t in range(s):
                pw[t] += step * (sol[t] - pw[t])
            kept = 0
            for t in range(s):
                if t != block and pw[t] >= 0.0:
                    work[kept] = work[t]
                    pw[kept] = pw[t]
                    kept += 1
                else:
                    in_w[work[t]] = False
            s = kept
            total = 0.0
            for t in range(s):
                total += pw[t]
            for t in range(s):
                pw[t] /= total
            if not _refactor(chol, work, s, gram, lam, col):
                status = 2
                break
        if status == 2:
            break
        _gradient(grad, gram, b, work, pw, s, lam)
        f_new = _objective(z, codebook, work, pw, s, code, lam, resid)
        if not f_new < f:
            if batch == 1:  # the most violating coordinate cannot enter: rounding
                status = 2
                break
            batch = 1  # retry with the single most violating coordinate
        else:
            batch = n_add
    for t in range(s):
        out_p[work[t]] = pw[t]
    for t in range(s):
        in_w[work[t]] = False
    for t in range(n_new):  # coordinates of an interrupted addition
        in_w[added[t]] = False
    return n_iter, gap, status


@numba.njit(parallel=True, cache=True)
def _solve_rows(z, codebook, gram, codes, lam, tol, max_iter, n_add, n_chunks, out_p, n_iter,
                gaps, status):
    m, k = z.shape[0], codebook.shape[0]
    cap = min(k, _START_CAPACITY)
    for chunk in numba.prange(n_chunks):
        # work arrays once per chunk of rows, not once per row
        b = np.empty(k)
        grad = np.empty(k)
        in_w = np.zeros(k, np.bool_)
        added = np.empty(max(n_add, 1), np.int64)
        chol = np.empty((cap, cap))
        work = np.empty(cap, np.int64)
        pw = np.empty(cap)
        sol = np.empty(cap)
        ones_sol = np.empty(cap)
        rhs = np.empty(cap)
        col = np.empty(cap)
        resid = np.empty(codebook.shape[1])
        for row in range(chunk * m // n_chunks, (chunk + 1) * m // n_chunks):
            it, gap, st = _solve_row(z[row], codebook, gram, codes[row], lam, tol, max_iter,
                                     n_add, out_p[row], b, grad, in_w, added, chol, work, pw,
                                     sol, ones_sol, rhs, col, resid)
            n_iter[row] = it
            gaps[row] = gap
            status[row] = st


def active_set_solve(z, codebook, codes, lam, tol, max_iter, gram=None, n_add=None,
                     dtype=np.float64):
    """Solve eq. (8) for every row of ``z`` (float64 numpy arrays).

    Parameters
    ----------
    z : ndarray of shape (M, d)
    codebook : ndarray of shape (K, d)
    codes : ndarray of int64 of shape (M,)
    lam, tol : float
    max_iter : int
        Active-set iterations (coordinate additions) at most per row.
    gram : ndarray of shape (K, K), default=None
        ``codebook @ codebook.T``; computed when not given.
    n_add : int, default=None
        Coordinates added per iteration (the most violating ones); an iteration that makes
        no progress is retried with one. ``None``: ``d // 16`` clipped to [1, 8]: supports
        grow with ``d``, and adding several codewords at once saves gradient passes only
        when the support is large (at small ``d`` the extra additions are dropped again).
    dtype : {np.float64, np.float32}, default=np.float64
        dtype of the returned weights (the solve itself is float64; float32 halves the
        ``M x K`` output for float32 models).

    Returns
    -------
    weights : ndarray of shape (M, K)
    n_iter : ndarray of int64 of shape (M,)
    gaps : ndarray of shape (M,)
        Frank-Wolfe gap of every row at the returned point (an upper bound on its
        suboptimality in eq. (8)).
    status : ndarray of int64 of shape (M,)
        0 converged, 1 iteration limit, 2 stopped by rounding.
    """
    z = np.ascontiguousarray(z, dtype=np.float64)
    codebook = np.ascontiguousarray(codebook, dtype=np.float64)
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    if gram is None:
        gram = codebook @ codebook.T
    m, k = z.shape[0], codebook.shape[0]
    if n_add is None:
        n_add = min(8, max(1, codebook.shape[1] // 16))
    weights = np.zeros((m, k), dtype=dtype)
    n_iter = np.zeros(m, np.int64)
    gaps = np.zeros(m)
    status = np.zeros(m, np.int64)
    if m:
        _solve_rows(z, codebook, np.ascontiguousarray(gram), codes, float(lam), float(tol),
                    int(max_iter), int(n_add), min(m, 8 * numba.get_num_threads()), weights,
                    n_iter, gaps, status)
    return weights, n_iter, gaps, status


@numba.njit(cache=True)
def _support_lists(weights, width):
    m = weights.shape[0]
    idx = np.zeros((m, width), np.int64)
    vals = np.zeros((m, width), weights.dtype)
    for row in range(m):
        n = 0
        for i in range(weights.shape[1]):
            if weights[row, i] > 0:
                idx[row, n] = i
                vals[row, n] = weights[row, i]
                n += 1
    return idx, vals


def support_lists(weights):
    """Padded supports of the rows of ``weights``: ``idx`` (M, s), ``vals`` (M, s)."""
    width = max(int((weights > 0).sum(1).max()), 1) if weights.shape[0] else 1
    return _support_lists(np.ascontiguousarray(weights), width)


@numba.njit(parallel=True, cache=True)
def _combine_rows(codebook, idx, vals, out):
    for row in numba.prange(idx.shape[0]):
        for t in range(out.shape[1]):
            out[row, t] = 0.0
        for j in range(idx.shape[1]):
            v = vals[row, j]
            if v != 0.0:
                c = codebook[idx[row, j]]
                for t in range(out.shape[1]):
                    out[row, t] += v * c[t]


def combine_rows(codebook, idx, vals):
    """``sum_j vals[m, j] * codebook[idx[m, j]]`` for every row m: (M, d)."""
    out = np.empty((idx.shape[0], codebook.shape[1]), dtype=np.result_type(codebook, vals))
    _combine_rows(np.ascontiguousarray(codebook), idx, vals, out)
    return out
