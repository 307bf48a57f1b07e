"""Compiled (numba) solvers behind the scalar quantizers.

All functions work on the sorted distinct values ``y[0] < y[1] < ... < y[m-1]`` of the data,
with positive weights ``w`` (1 for the paper's choice, the multiplicity otherwise).

- :func:`weighted_tv_denoise`: exact solution of
  ``min_x 1/2 sum_i w_i (y_i - x_i)^2 + sum_j c_j |x_j - x_{j-1}|`` with ``x_{-1} = 0``
  (the anchor at zero comes from the first column of the paper's matrix V), by the
  dynamic-programming algorithm of Johnson (2013), O(m) amortised.
- :func:`kmeans_1d_dp`: exact optimal 1-D k-means (contiguous clusters of sorted values),
  dynamic programming with the divide-and-conquer optimisation, O(k m log m).
- :func:`neg_l2_coordinate_descent`: the paper's coordinate descent for eq. 13 (eq. 15),
  with O(m) sweeps that never build V.
"""

import math

import numpy as np
from numba import njit, prange


# The smallest normal float: a scaled weight is never rounded below it (never to 0).
_TINY = np.finfo(np.float64).tiny


@njit(cache=True)
def _piece_root(A, B, target, left, right):
    """Root of ``A x + B = target`` on the piece ``[left, right]`` of an increasing F'.

    The clamp keeps the knots sorted when rounding puts the root a hair outside its piece.
    A piece's exact slope is a sum of positive weights; where the accumulated one has
    rounded to zero or below, the piece is flat to rounding and its left end is the root.
    """
    if A > 0.0:
        t = (target - B) / A
        if t < left:
            return left
        if t > right:
            return right
        return t
    return left


@njit(cache=True)
def _pow2_scaler(e):
    """``2**e`` as two factors, so that neither over- nor underflows for any float's
    exponent (``2**1073`` alone overflows)."""
    return math.ldexp(1.0, e // 2), math.ldexp(1.0, e - e // 2)


@njit(cache=True)
def _tv_forward_backward(y, w, c, anchor, sy, sw, lo, hi, x):
    """Johnson's DP for weighted 1-D TV denoising with an optional anchor ``x_{-1} = 0``,
    on the box ``[lo, hi]`` that holds the solution.

    ``c[0]`` is the weight of ``|x_0 - 0|`` (used only if ``anchor``); ``c[j]`` for j >= 1
    the weight of ``|x_j - x_{j-1}|``. The problem solved is the one scaled by the powers
    of two ``sy`` (values, and ``c``) and ``sw`` (weights, and ``c``); the scaled solution
    is written to ``x``. The message derivatives are kept on the box only: a clipping
    threshold outside it clips nothing there and adds no knot.
    """
    n = y.shape[0]
    cap = 2 * n + 4
    pos = np.empty(cap)
    da = np.empty(cap)
    db = np.empty(cap)
    tm = np.empty(n)
    tp = np.empty(n)
    # The derivative of the message F_k'(x) is piecewise linear and increasing: leftmost
    # piece (aL, bL), knots pos[l..r] with jumps (da, db), rightmost piece (aR, bR).
    l = n + 1
    r = n  # empty
    wk = max(w[0] * sw[0] * sw[1], _TINY)  # no weight underflows to 0
    aL = wk
    bL = -wk * (y[0] * sy[0] * sy[1])
    aR = aL
    bR = bL
    if anchor:
        lam = c[0] * sy[0] * sy[1] * sw[0] * sw[1]
        r = n + 1
        pos[l] = 0.0
        da[l] = 0.0
        db[l] = 2.0 * lam
        bL -= lam
        bR += lam
    for k in range(n):
        # Left threshold tm: F_k'(tm) = -lam; for the last point the zero of F_{n-1}'.
        # An overflow of c to inf or an underflow to 0 is harmless: no clip, or a free jump.
        lam = c[k + 1] * sy[0] * sy[1] * sw[0] * sw[1] if k < n - 1 else 0.0
        tmk = lo
        if aL * lo + bL < -lam:
            A = aL
            B = bL
            i = l
            at_knot = False
            while i <= r:
                if A * pos[i] + B > -lam:
                    break
                A += da[i]
                B += db[i]
                i += 1
                if i > r:  # past every knot: the rightmost piece, exactly
                    A = aR
                    B = bR
                if A * pos[i - 1] + B >= -lam:  # the root sits in a jump at a knot
                    at_knot = True
                    break
            if at_knot:
                tmk = pos[i - 1]
            else:
                tmk = _piece_root(A, B, -lam, pos[i - 1] if i > l else lo,
                                  pos[i] if i <= r else hi)
            if k < n - 1:
                l = i - 1
                pos[l] = tmk
                da[l] = A
                db[l] = B + lam
                aL = 0.0
                bL = -lam
        if k == n - 1:
            x[k] = tmk
            break
        # Right threshold tp: F_k'(tp) = +lam.
        tpk = hi
        if aR * hi + bR > lam:
            A = aR
            B = bR
            i = r
            at_knot = False
            while i >= l:
                if A * pos[i] + B < lam:
                    break
                A -= da[i]
                B -= db[i]
                i -= 1
                if i < l:  # past every knot (the left threshold's too): leftmost piece
                    A = aL
                    B = bL
                if A * pos[i + 1] + B <= lam:
                    at_knot = True
                    break
            if at_knot:
                tpk = pos[i + 1]
            else:
                tpk = _piece_root(A, B, lam, pos[i] if i >= l else lo,
                                  pos[i + 1] if i < r else hi)
            r = i + 1
            pos[r] = tpk
            da[r] = -A
            db[r] = lam - B
            aR = 0.0
            bR = lam
        tm[k] = tmk
        tp[k] = tpk
        # Add the data term of point k + 1.
        wk = max(w[k + 1] * sw[0] * sw[1], _TINY)
        yk = y[k + 1] * sy[0] * sy[1]
        aL += wk
        bL -= wk * yk
        aR += wk
        bR -= wk * yk
    for k in range(n - 2, -1, -1):
        v = x[k + 1]
        if v > tp[k]:
            v = tp[k]
        elif v < tm[k]:
            v = tm[k]
        x[k] = v


@njit(cache=True)
def _weighted_tv(y, w, c, anchor):
    """Scaling, pinning, the DP on the box (see :func:`weighted_tv_denoise`)."""
    n = y.shape[0]
    x = np.zeros(n)
    ymax = 0.0
    wmax = 0.0
    lo = np.inf
    hi = -np.inf
    for i in range(n):
        ymax = max(ymax, abs(y[i]))
        wmax = max(wmax, w[i])
        lo = min(lo, y[i])
        hi = max(hi, y[i])
    if anchor:
        lo = min(lo, 0.0)
        hi = max(hi, 0.0)
    if hi == lo:  # all values equal (and 0 if anchored): no jump pays off
        x[:] = y
        return x
    ey = math.frexp(ymax)[1]
    ew = math.frexp(wmax)[1]
    sy = _pow2_scaler(-ey)
    sw = _pow2_scaler(-ew)
    lo = lo * sy[0] * sy[1]
    hi = hi * sy[0] * sy[1]
    spread = hi - lo
    # Pinned prefix: |s_p| <= spread * sum_{i >= p} w_i < c_p forces x_p = x_{p-1} = 0.
    # Twice the bound is a margin far above its rounding. x holds the suffix sums here.
    p = 0
    if anchor:
        acc = 0.0
        for i in range(n - 1, -1, -1):
            acc += max(w[i] * sw[0] * sw[1], _TINY)
            x[i] = acc
        while p < n and c[p] * sy[0] * sy[1] * sw[0] * sw[1] > 2.0 * spread * x[p]:
            p += 1
        x[:p] = 0.0
    if p < n:
        _tv_forward_backward(y[p:], w[p:], c[p:], anchor, sy, sw, lo, hi, x[p:])
    gy = _pow2_scaler(ey)
    for i in range(p, n):
        x[i] = min(max(x[i], lo), hi) * gy[0] * gy[1]
    return x


def weighted_tv_denoise(y, w, c, anchor=True):
    """Exact weighted 1-D total-variation denoising.

    Solves ``min_x 1/2 sum_i w_i (y_i - x_i)^2 + sum_{j>=1} c_j |x_j - x_{j-1}|
    + [anchor] c_0 |x_0|``. ``c_j = inf`` forbids the jump (``c_0 = inf`` pins ``x_0`` to 0).

    Parameters
    ----------
    y : ndarray of shape (m,)
        Finite data.
    w : ndarray of shape (m,)
        Positive fidelity weights.
    c : ndarray of shape (m,)
        Non-negative jump weights, ``inf`` allowed (``c[0]`` is the anchor's).
    anchor : bool
        Whether the term ``c_0 |x_0|`` is present.

    Returns
    -------
    x : ndarray of shape (m,)
        The minimiser: finite, within ``[lo, hi] = [min(y, 0), max(y, 0)]`` (without the
        anchor ``[min(y), max(y)]``).

    Notes
    -----
    Johnson's DP keeps the derivative of each message as pieces ``A x + B``, the intercepts
    being running sums of the knots' jumps ``db``. Each step clips F' to ``[-c_j, c_j]``,
    and the original version did so even where the thresholds lay far outside the data:
    a jump weight ``c_j`` that dwarfs the data (``c_j = lambda / (2 d_j)`` with a tiny gap
    ``d_j``: two values 1 ulp apart, or the ~1e-60 weights that weight decay leaves on a
    network's dead inputs, give ``c_j`` up to 1e62) made knots with ``db`` near ``c_j``.
    At the next, ordinary ``c`` those terms cancel in ``B`` with an absolute error near
    ``eps c_j``, far more than that ``c``: the right threshold's scan then walked past the
    knot the left one had just set, into the clipped piece of slope exactly 0, and divided
    by it (``ZeroDivisionError``). Now nothing of the order of a huge ``c`` enters the DP:

    - **Box.** The optimum lies in ``[lo, hi]`` (clipping any ``x`` to it lowers every
      term), so the DP is run on the box only, with the same optimum: a threshold outside
      it clips nothing there and sets no knot. Every knot lies in the box and every
      intercept is of the order of F' on it, at most ``c_0 + (hi - lo) sum(w)``;
      ``c_j = inf`` is simply a step that clips nothing.
    - **Pinning.** The anchor's multiplier is ``s_0 = sum_i w_i (y_i - x_i)``, so
      ``|s_0| <= (hi - lo) sum(w)``; a larger ``c_0`` forces ``x_0 = 0`` (and likewise for
      the next points with the suffix sums), and the rest is solved anchored to it. The
      anchor's jump ``2 c_0`` is therefore never larger than that either.
    - **Scaling.** Values and weights are scaled by powers of two (exact) to
      ``max |y| <= 1``, ``max w <= 1`` (``c`` by both), so no product overflows.
    - **Robust scans.** A scan that has passed every knot uses the end piece's own
      ``(A, B)`` instead of the accumulated one, roots are clamped to their piece (the
      knots stay sorted), and a piece whose accumulated slope rounds to 0 is never
      divided by.
    """
    y = np.ascontiguousarray(y, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    c = np.ascontiguousarray(c, dtype=np.float64)
    if y.shape[0] == 0:
        return np.empty(0)
    return _weighted_tv(y, w, c, bool(anchor))


@njit(cache=True)
def _segment_cost(s1, s2, sw, i, j):
    """Weighted within-segment sum of squares of points i..j-1 (prefix sums)."""
    wt = sw[j] - sw[i]
    t = s1[j] - s1[i]
    # Weights spanning more than float64's 16 digits (squared gradients do) can leave a run's
    # weight lost in the prefix sums: its cost is then that of its (negligible) squares.
    cost = s2[j] - s2[i] - t * t / wt if wt > 0.0 else s2[j] - s2[i]
    return cost if cost > 0.0 else 0.0


@njit(cache=True, nogil=True)
def _dp_argmin(prev, s1, s2, sw, start, tend, j, cur, arg_q):
    """``cur[j] = min_{start <= t <= tend} prev[t] + cost(t, j)``; stores and returns the
    first argmin."""
    a1 = s1[j]
    a2 = s2[j]
    aw = sw[j]
    best = np.inf
    bestt = start
    for t in range(start, tend + 1):
        d1 = a1 - s1[t]
        wt = aw - sw[t]
        c = (a2 - s2[t]) - d1 * d1 / wt if wt > 0.0 else a2 - s2[t]  # see _segment_cost
        v = prev[t] + max(c, 0.0)
        if v < best:
            best = v
            bestt = t
    cur[j] = best
    arg_q[j] = bestt
    return bestt


@njit(cache=True, nogil=True)
def _kmeans_1d_dp(y, w, k):
    m = y.shape[0]
    # Centre for numerical stability of the prefix sums.
    mean = np.sum(w * y) / np.sum(w)
    s1 = np.zeros(m + 1)
    s2 = np.zeros(m + 1)
    sw = np.zeros(m + 1)
    for i in range(m):
        z = y[i] - mean
        s1[i + 1] = s1[i] + w[i] * z
        s2[i + 1] = s2[i] + w[i] * z * z
        sw[i + 1] = sw[i] + w[i]
    prev = np.empty(m + 1)
    cur = np.empty(m + 1)
    # prev[j]: optimal cost of the first j points with q clusters.
    for j in range(m + 1):
        prev[j] = _segment_cost(s1, s2, sw, 0, j) if j > 0 else 0.0
    arg = np.zeros((k, m + 1), dtype=np.int32)
    for j in range(m + 1):
        arg[0, j] = 0
    stack = np.empty((4 * (m + 2), 4), dtype=np.int64)
    for q in range(1, k):
        # cur[j] = min_{t in [q, j-1]} prev[t] + cost(t, j). The argmin is non-decreasing in
        # j (Monge costs), so divide and conquer over j; it is also at least the previous
        # layer's argmin at j (one more cluster never starts the last one earlier), which
        # shrinks the ranges. Only j = m is needed in the last layer, and no layer needs j
        # beyond m - (k - 1 - q) (the remaining clusters need one point each).
        for j in range(m + 1):
            cur[j] = np.inf
        jhi0 = m - (k - 1 - q)
        jlo0 = q + 1 if q < k - 1 else m
        stack[0, 0] = jlo0
        stack[0, 1] = jhi0
        stack[0, 2] = q
        stack[0, 3] = jhi0 - 1
        top = 1
        while top > 0:
            top -= 1
            jlo = stack[top, 0]
            jhi = stack[top, 1]
            tlo = stack[top, 2]
            thi = stack[top, 3]
            if jlo > jhi:
                continue
            jmid = (jlo + jhi) // 2
            start = max(tlo, arg[q - 1, jmid]) if q > 1 else tlo
            bestt = _dp_argmin(prev, s1, s2, sw, start, min(thi, jmid - 1), jmid, cur,
                               arg[q])
            stack[top, 0] = jlo
            stack[top, 1] = jmid - 1
            stack[top, 2] = tlo
            stack[top, 3] = bestt
            top += 1
            stack[top, 0] = jmid + 1
            stack[top, 1] = jhi
            stack[top, 2] = bestt
            stack[top, 3] = thi
            top += 1
        for j in range(m + 1):
            prev[j] = cur[j]
    # Backtrack the cluster starts.
    starts = np.empty(k, dtype=np.int64)
    j = m
    for q in range(k - 1, 0, -1):
        t = arg[q, j]
        starts[q] = t
        j = t
    starts[0] = 0
    return starts


@njit(parallel=True, cache=True)
def _kmeans_1d_dp_groups(values, weights, offsets, k, codebooks, n_values):
    """:func:`kmeans_1d_dp` and the cluster means of every group, groups in parallel.

    Each group's values and weights are divided by powers of two that put their largest
    magnitude in [1, 2) (exact), so that the prefix sums of squares stay finite at any
    scale; the means are scaled back.
    """
    n_groups = offsets.shape[0] - 1
    for g in prange(n_groups):
        lo = offsets[g]
        hi = offsets[g + 1]
        m = hi - lo
        top = 0.0
        wtop = 0.0
        for i in range(lo, hi):
            top = max(top, abs(values[i]))
            wtop = max(wtop, weights[i])
        scale = 1.0 if top == 0.0 else 2.0 ** np.floor(np.log2(top))
        wscale = 2.0 ** np.floor(np.log2(wtop))
        y = values[lo:hi] / scale
        w = weights[lo:hi] / wscale
        kk = min(k, m)
        starts = _kmeans_1d_dp(y, w, kk)
        for c in range(kk):
            end = starts[c + 1] if c + 1 < kk else m
            num = 0.0
            den = 0.0
            for i in range(starts[c], end):
                num += w[i] * y[i]
                den += w[i]
            codebooks[g, c] = (num / den) * scale
        for c in range(kk, k):
            codebooks[g, c] = codebooks[g, kk - 1]
        n_values[g] = kk


def kmeans_1d_dp_groups(values, weights, offsets, k):
    """Optimal weighted 1-D k-means of many groups at once (compiled, groups in parallel).

    Parameters
    ----------
    values, weights : ndarray of shape (total,)
        Each group's sorted distinct values and positive weights, concatenated.
    offsets : ndarray of shape (n_groups + 1,)
        Group ``g`` is ``values[offsets[g]:offsets[g + 1]]`` (at least one value).
    k : int
        Number of clusters per group (fewer where a group has fewer values).

    Returns
    -------
    codebooks : ndarray of shape (n_groups, k)
        Each group's cluster means, sorted, padded with its largest mean.
    n_values : ndarray of shape (n_groups,)
        ``min(k, group size)``.
    """
    n_groups = offsets.size - 1
    codebooks = np.empty((n_groups, int(k)))
    n_values = np.empty(n_groups, dtype=np.int64)
    _kmeans_1d_dp_groups(np.ascontiguousarray(values, dtype=np.float64),
                         np.ascontiguousarray(weights, dtype=np.float64),
                         np.ascontiguousarray(offsets, dtype=np.int64), int(k), codebooks,
                         n_values)
    return codebooks, n_values


def kmeans_1d_dp(y, w, k):
    """Optimal weighted 1-D k-means of sorted distinct values ``y`` (exact, by DP).

    Parameters
    ----------
    y : ndarray of shape (m,)
        Sorted, strictly increasing values.
    w : ndarray of shape (m,)
        Positive weights.
    k : int
        Number of clusters, ``1 <= k <= m``.

    Returns
    -------
    starts : ndarray of shape (k,)
        Index of the first value of each cluster (clusters are contiguous runs).
    """
    y = np.ascontiguousarray(y, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    return _kmeans_1d_dp(y, w, int(k))


@njit(cache=True)
def _box_coordinate_min(curv, g, lam1, bound):
    """argmin over |a| <= bound of curv a^2 - 2 g a + lam1 |a| (curv may be <= 0)."""
    if curv > 0.0:
        if g > 0.5 * lam1:
            a = (g - 0.5 * lam1) / curv
        elif g < -0.5 * lam1:
            a = (g + 0.5 * lam1) / curv
        else:
            a = 0.0
        return min(max(a, -bound), bound)
    # Concave on each side of 0: the minimum is at 0 or at an end of the box.
    best = 0.0
    fbest = 0.0
    for a in (-bound, bound):
        f = curv * a * a - 2.0 * g * a + lam1 * bound
        if f < fbest:
            best = a
            fbest = f
    return best


@njit(cache=True)
def _neg_l2_cd(y, w, d, alpha, lam1, lam2, bounds, max_iter, tol, ymin, ymax):
    """Cyclic coordinate descent on eq. 13 in the paper's variables, O(m) per sweep.

    Objective: sum_i w_i (y_i - (V a)_i)^2 + lam1 ||a||_1 - lam2 ||a||_2^2 with
    (V a)_i = sum_{j <= i} a_j d_j, over the box |a_j| <= bound_j. Returns (alpha, n_sweeps).
    """
    m = y.shape[0]
    W = np.empty(m)  # suffix sums of weights
    acc = 0.0
    for i in range(m - 1, -1, -1):
        acc += w[i]
        W[i] = acc
    Q = d * d * W  # ||V_j||^2 (weighted)
    x = np.empty(m)
    scale = max(abs(ymin), abs(ymax), 1e-300)
    for sweep in range(max_iter):
        acc = 0.0
        for i in range(m):
            acc += alpha[i] * d[i]
            x[i] = acc
        T = 0.0
        max_change = 0.0
        for j in range(m - 1, -1, -1):
            # T = sum_{i >= j} w_i r_i: coordinates < j are unchanged this sweep, and each
            # update of a coordinate > j was folded in below.
            T += w[j] * (y[j] - x[j])
            if Q[j] - lam2 <= 1e-12 * Q[j]:
                # Eq. 15's denominator is not positive: eq. 13 is unbounded along this
                # coordinate, so it keeps its current (l1) value.
                continue
            g = d[j] * T + Q[j] * alpha[j]
            new = _box_coordinate_min(Q[j] - lam2, g, lam1, bounds[j])
            delta = new - alpha[j]
            if delta != 0.0:
                T -= d[j] * delta * W[j]
                alpha[j] = new
                if abs(delta * d[j]) > max_change:
                    max_change = abs(delta * d[j])
        if max_change <= tol * scale:
            return alpha, sweep + 1
    return alpha, max_iter


def neg_l2_coordinate_descent(y, w, d, alpha0, lam1, lam2, max_iter=1000, tol=1e-10):
    """The paper's coordinate descent (eq. 15) for eq. 13, never building V.

    Each step minimises eq. 13 exactly along one coordinate within the box
    ``|alpha_j d_j| <= 2 max|y|`` (no jump of the reconstruction larger than twice the data's
    magnitude, which bounds every jump of the data itself), so the objective never
    increases and the iterates stay bounded. Without the box eq. 13 is unbounded below as
    soon as ``lam2`` exceeds the smallest eigenvalue of ``V^T V`` (tiny when two distinct
    values are close), which is the instability the paper reports. Returns
    ``(alpha, n_sweeps)``; convergence is a largest jump change below ``tol * max|y|``.
    """
    y = np.ascontiguousarray(y, dtype=np.float64)
    w = np.ascontiguousarray(w, dtype=np.float64)
    d = np.ascontiguousarray(d, dtype=np.float64)
    alpha = np.array(alpha0, dtype=np.float64)
    with np.errstate(divide="ignore"):
        bounds = np.where(d != 0, 2.0 * np.max(np.abs(y)) / np.abs(d), 0.0)
    alpha = np.clip(alpha, -bounds, bounds)
    return _neg_l2_cd(y, w, d, alpha, float(lam1), float(lam2), bounds, int(max_iter),
                      float(tol), float(y.min()), float(y.max()))


@njit(cache=True)
def _l1_one(y, w, lam, refit, x):
    """Eq. 6 on one group's sorted values at ``lam`` (and Alg. 1's least-squares refit when
    ``refit``) into ``x``; returns the number of distinct levels.

    The jump weights are ``lam / (2 d_j)`` with ``d_1 = |v_1|`` (the anchor at 0) and
    ``d_j = v_j - v_{j-1}``, as :class:`~skvq.L1LeastSquareQuantizer` documents; the refit
    replaces each run of the solution by the weighted mean of its values, and the values
    before the first jump by 0 (the paper's parametrisation).
    """
    m = y.shape[0]
    c = np.empty(m)
    before = 0.0
    for i in range(m):
        d = abs(y[i] - before)
        c[i] = lam / (2.0 * d) if d > 0.0 else np.inf
        before = y[i]
    xs = _weighted_tv(y, w, c, True)
    if refit:
        first = m
        for i in range(m):
            if xs[i] != (xs[i - 1] if i > 0 else 0.0):
                first = i
                break
        for i in range(first):
            xs[i] = 0.0
        i = first
        while i < m:
            end = i + 1
            while end < m and xs[end] == xs[i]:
                end += 1
            num = 0.0
            den = 0.0
            for t in range(i, end):
                num += w[t] * y[t]
                den += w[t]
            level = num / den
            for t in range(i, end):
                xs[t] = level
            i = end
    levels = np.sort(xs)
    count = 1
    for i in range(1, m):
        if levels[i] != levels[i - 1]:
            count += 1
    for i in range(m):
        x[i] = xs[i]
    return count


@njit(parallel=True, cache=True)
def _l1_groups(values, weights, offsets, lam, active, refit, x, n_levels):
    """:func:`_l1_one` for every active group at its own lambda, groups in parallel."""
    for g in prange(offsets.shape[0] - 1):
        if active[g]:
            lo = offsets[g]
            hi = offsets[g + 1]
            n_levels[g] = _l1_one(values[lo:hi], weights[lo:hi], lam[g], refit, x[lo:hi])


def l1_one(values, weights, lam, refit):
    """Eq. 6 (and the refit) on one group: ``(x, n_levels)``; see :func:`_l1_one`."""
    x = np.empty(values.size)
    count = _l1_one(np.ascontiguousarray(values, dtype=np.float64),
                    np.ascontiguousarray(weights, dtype=np.float64), float(lam), bool(refit),
                    x)
    return x, count


def l1_groups(values, weights, offsets, lam, refit, active=None):
    """Eq. 6 (and the refit) for many groups at once, in parallel: ``(x, n_levels)``; see
    :func:`_l1_one`. Inactive groups are left at 0 with 0 levels."""
    n_groups = offsets.size - 1
    x = np.zeros(values.size)
    n_levels = np.zeros(n_groups, dtype=np.int64)
    active = np.ones(n_groups, dtype=np.bool_) if active is None else active
    _l1_groups(np.ascontiguousarray(values, dtype=np.float64),
               np.ascontiguousarray(weights, dtype=np.float64),
               np.ascontiguousarray(offsets, dtype=np.int64),
               np.ascontiguousarray(lam, dtype=np.float64), active, bool(refit), x, n_levels)
    return x, n_levels
