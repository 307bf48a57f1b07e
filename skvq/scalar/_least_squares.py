"""Sparse least-squares scalar quantizers (l1, l1 - l2, l0 and k-means-based least squares).

Reference: "Sparse least squares scalar quantization" (the paper in ``shared/papers``).
Notation: the sorted distinct values of the data are ``v_1 < ... < v_m`` (the paper's
``w_hat``), ``d_1 = v_1`` and ``d_j = v_j - v_{j-1}``; the paper's matrix ``V`` is lower
triangular with ``V_ij = d_j`` for ``j <= i``, so the reconstruction ``w* = V alpha`` is the
cumulative sum of ``beta_j = alpha_j d_j``.
"""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions

from ..base import check_n_values
from ._base import (ScalarQuantizer, grouped_distinct_values, pad_codebooks,
                    power_of_two_scales, segment_means)

# Entries of X sorted at once by the grouped exact solver (memory: a few times 8 bytes each).
_CHUNK_ENTRIES = 2**22

# Dense V costs 8 m^2 bytes: past this many distinct values the dense solvers refuse.
_MAX_DENSE_VALUES = 20_000


def _steps(values):
    """The paper's ``d``: ``d_1 = v_1``, ``d_j = v_j - v_{j-1}``."""
    return np.diff(values, prepend=0.0)


def _dense_v(values, weights):
    """The paper's m x m matrix V, rows scaled by sqrt(weights) (weighted least squares)."""
    m = values.size
    if m > _MAX_DENSE_VALUES:
        raise ValueError(
            f"This solver builds the dense {m} x {m} matrix V ({8 * m * m / 2**30:.1f} GiB); it "
            f"is limited to {_MAX_DENSE_VALUES} distinct values. Use solver='tv' (l1) or "
            "solver='dp' (l0), which never build V."
        )
    V = np.tril(np.ones((m, m))) * _steps(values)[None, :]
    if weights is not None:
        V *= np.sqrt(weights)[:, None]
    return V


def _reconstruct_from_support(values, weights, support):
    """Least-squares refit (Alg. 1, eqs. 7-11) on the columns ``support`` of V.

    ``w* = V* alpha_hat`` is piecewise constant with jumps at the support; its least-squares
    levels are the weighted means of the runs. Before the first support index ``w*`` is
    0 (no column of V reaches there), as in the paper's parametrisation.
    """
    support = np.flatnonzero(support)
    x = np.zeros_like(values)
    if support.size:
        levels = segment_means(values[support[0]:],
                               None if weights is None else weights[support[0]:],
                               support - support[0])
        lengths = np.diff(np.append(support, values.size))
        x[support[0]:] = np.repeat(levels, lengths)
    return x


def _jumps(x):
    """Support of alpha for a reconstruction x: where x changes (x_0 compared with 0)."""
    return np.diff(x, prepend=0.0) != 0


def _l1_objective(values, weights, x, lam):
    """Eq. 6 at the reconstruction x: sum w (v - x)^2 + lam * ||alpha||_1."""
    w = 1.0 if weights is None else weights
    d = _steps(values)
    beta = np.diff(x, prepend=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        penalty = np.where(beta == 0, 0.0, np.abs(beta) / np.abs(d))
    return float(np.sum(w * (values - x) ** 2) + lam * np.sum(penalty))


class L1LeastSquareQuantizer(ScalarQuantizer):
    r"""Scalar quantization by l1-regularised least squares (the paper's Alg. 1, eqs. 6, 13).

    The sorted distinct values ``v`` of ``X`` are reconstructed as ``w* = V alpha`` with a
    sparse ``alpha`` (eq. 6):

    .. math:: \min_\alpha \|v - V\alpha\|_2^2 + \lambda \|\alpha\|_1
              \; [- \lambda_2 \|\alpha\|_2^2 \text{ (eq. 13)}]

    Every zero ``alpha_j`` merges ``v_j`` with ``v_{j-1}``, so the distinct values of ``w*``
    are the codebook. With ``refit=True`` the values are then refitted by least squares on
    the support of ``alpha`` (Alg. 1, eqs. 7-11); ``refit=False`` is the paper's
    "l1 without least square".

    Read more in the :ref:`User Guide <scalar>`.

    Parameters
    ----------
    alpha : float, default=1.0
        The paper's :math:`\lambda` (:math:`\lambda_1` in eq. 13), exactly: the objective is
        ``||v - V alpha||^2 + alpha * ||alpha||_1`` with no ``1/(2m)`` factor. scikit-learn's
        ``Lasso(alpha=a)`` minimises ``1/(2m) ||v - V alpha||^2 + a ||alpha||_1``, so the
        same problem is ``Lasso(alpha=alpha / (2 * m), fit_intercept=False)`` with ``m``
        distinct values. With ``n_values`` set, ``alpha`` is the search's starting point
        (``1`` in units of the data's largest magnitude when ``alpha`` is more than 1e12 off
        that scale). The solver works in units where the data's largest magnitude is in
        [1, 2) (an exact power-of-two change of units) with :math:`\lambda` rescaled, so
        the result is the same for ``X`` and ``c * X`` with ``alpha * c**2``.
    negative_l2 : float, default=0.0
        The paper's :math:`\lambda_2 \ge 0` of eq. 13 (the term :math:`-\lambda_2\|\alpha\|^2`).
        Solved by the paper's coordinate descent (eq. 15), started from the l1 solution.
        Eq. 13 is unbounded below as soon as :math:`\lambda_2` exceeds the smallest
        eigenvalue of :math:`V^TV`, which is tiny whenever two distinct values are close:
        that is the instability the paper reports. The guards: a coordinate whose eq. 15
        denominator :math:`\|V_j\|^2 - \lambda_2` is not positive (eq. 13 is unbounded
        along it) keeps its l1 value; every jump of the reconstruction is restricted to
        :math:`|\alpha_j d_j| \le 2\max_i |v_i|` (a bound every jump of the data itself
        satisfies); each coordinate step is the exact minimiser of eq. 13 along that
        coordinate inside this box. The objective therefore decreases monotonically and the
        iterates stay bounded. The paper's setting is ``negative_l2 = 4e-3 * alpha``.
        The guards bound the result but cannot make eq. 13 well posed: with many close
        distinct values it is non-convex, coordinate descent may stop at ``max_iter`` (with a
        ``ConvergenceWarning``) and the result can have more values and a larger error than
        the l1 solution. For example, on a 256 x 64 Laplace matrix, ``alpha=0.01`` gives 344
        values, 323 with ``negative_l2=1e-5`` and 279 with ``4e-5`` (the paper's effect),
        but ``alpha=0.1, negative_l2=4e-4`` gives 465 values against 146 without.
    refit : bool, default=True
        Least-squares refit on the support of ``alpha`` (Alg. 1, steps 3-6).
    n_values : int or None, default=None
        If set, reach at most this many values by increasing :math:`\lambda` (Alg. 2): the
        search doubles (or halves) :math:`\lambda` from ``alpha`` until it brackets the
        requested count, then bisects until a :math:`\lambda` gives exactly ``n_values``
        values (or the bracket is 1e-12 relative), keeping the smallest :math:`\lambda`
        found with at most ``n_values`` values. The paper's arithmetic schedule
        :math:`\lambda_t = \lambda_0 + (t-1)\Delta\lambda` stops at the first
        :math:`\lambda` on its grid reaching the count; on the weights of
        :ref:`l1_on_weights` both end with the same codebook, the bisection in O(log)
        solves instead of O(:math:`\lambda^*/\Delta\lambda`). As the paper notes,
        the count is not always reachable exactly; ``n_values_`` says what was reached.
    solver : {"tv", "cd"}, default="tv"
        ``"tv"`` solves eq. 6 exactly in O(m) without building ``V`` (see Notes).
        ``"cd"`` is the paper's coordinate descent on the dense m x m ``V``
        (scikit-learn's ``Lasso``), kept as the reference; it needs ``8 m^2`` bytes and is
        limited to 20,000 distinct values.
    weighting : {"unique", "count"}, default="unique"
        ``"unique"``: every distinct value counts once, as in the paper.
        ``"count"``: each value counts with its multiplicity (and ``sample_weight``), which
        minimises the squared error of the whole array.
    group_size : int or None, default=None
        ``None``: one codebook for every entry of ``X`` (the paper's setting). An int ``g``:
        one codebook per group of ``g`` consecutive columns (the last group may be smaller),
        each fitted on its group's entries alone; ``1`` gives one codebook per feature, as
        :class:`~sklearn.preprocessing.KBinsDiscretizer` bins each feature (a weight matrix's
        output channels are the columns of its transpose). Each group has its own
        search for ``n_values`` and its own ``alpha_``.
    max_iter : int, default=10000
        Iteration cap of the iterative solvers (``"cd"``, and eq. 13's coordinate descent).
    tol : float, default=1e-10
        Tolerance of the iterative solvers.

    Attributes
    ----------
    codebook_ : ndarray of shape (`n_values_`,) or (`n_groups_`, `n_values_`)
        Sorted codebook values, in the dtype of the training data; with ``group_size`` set,
        one row per group, a group with fewer values padded with its largest value.
    n_values_ : int
        Number of codebook values (the largest over the groups).
    group_n_values_ : ndarray of shape (`n_groups_`,)
        Number of values of each group's codebook (only with ``group_size`` set).
    n_groups_ : int
        Number of codebooks (1 without ``group_size``).
    bits_per_sample_ : float
        Rate of the codes: ``sum_j log2(n_values of feature j's codebook)`` bits per row
        (``n_features_in_ * log2(n_values_)`` with one codebook).
    bits_per_code_ : int
        Width of one code when bit-packed (:func:`skvq.packing.pack_codes`):
        ``ceil(log2(n_values_))``, at least 1.
    codebook_bits_ : int
        Storage of the codebooks, ``n_groups_ * n_values_`` values in the fitted dtype.
    bits_per_entry_ : float
        The true rate on the training data: ``bits_per_code_`` plus the codebooks' storage
        spread over the entries of ``X``.
    alpha_ : float
        The :math:`\lambda` the codebook was computed with (differs from ``alpha`` when
        ``n_values`` is set).
    n_iter_ : int
        Iterations of the last solve (1 for the direct ``"tv"`` solver).
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    L0LeastSquareQuantizer : Exactly ``n_values`` values by the l0 form (eq. 16).
    KMeansLSQuantizer : k-means followed by least squares (Alg. 3).

    Notes
    -----
    **The fast solver.** With :math:`\beta_j = \alpha_j d_j` (:math:`d_1 = v_1`,
    :math:`d_j = v_j - v_{j-1} > 0`), :math:`x = V\alpha` is the cumulative sum of
    :math:`\beta`, so :math:`\beta_j = x_j - x_{j-1}` (with :math:`x_0 = 0`) and
    :math:`|\alpha_j| = |x_j - x_{j-1}| / |d_j|`. Eq. 6 becomes the weighted 1-D
    total-variation denoising problem

    .. math:: \min_x \sum_i \omega_i (v_i - x_i)^2
              + \lambda \sum_j \frac{|x_j - x_{j-1}|}{|d_j|}, \qquad x_0 = 0,

    a bijective change of variables, so the optimum and the objective are the same. It is
    solved exactly by Johnson's (2013) dynamic programme in O(m) time and memory. When
    :math:`v_1 = 0` the first column of ``V`` is zero and :math:`x_1 = 0` is pinned.

    **Codes.** ``transform`` codes each entry to its nearest codebook value; on the
    training data this never increases the error of the paper's reconstruction ``w*``.
    A zero prefix of ``w*`` (indices before the first non-zero ``alpha``) contributes the
    value 0 to the codebook, as in the paper's parametrisation.

    **On network weights** eq. 6 charges a jump by the inverse of the gap between the
    values it separates, so its codebook covers the sparse tails and merges the dense
    centre: 1.4 to 4.9 times the squared error of :class:`L0LeastSquareQuantizer` at the
    same number of values on trained weights. See :ref:`l1_on_weights`.

    References
    ----------
    Sparse least squares scalar quantization (``shared/papers``), eqs. 6-15, Alg. 1-2.
    N. A. Johnson, "A dynamic programming algorithm for the fused lasso and
    L0-segmentation", J. Comput. Graph. Stat. 22(2), 2013.

    Examples
    --------
    >>> import numpy as np
    >>> from skvq import L1LeastSquareQuantizer
    >>> X = np.array([[0.1, 0.12, 0.5], [0.52, 0.9, 0.93]])
    >>> q = L1LeastSquareQuantizer(n_values=3).fit(X)
    >>> q.n_values_
    3
    >>> q.inverse_transform(q.transform(X)).round(2)
    array([[0.11, 0.11, 0.51],
           [0.51, 0.92, 0.92]])
    """

    _parameter_constraints = {
        **ScalarQuantizer._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "negative_l2": [Interval(Real, 0, None, closed="left")],
        "refit": ["boolean"],
        "n_values": [Interval(Integral, 1, None, closed="left"), None],
        "solver": [StrOptions({"tv", "cd"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, alpha=1.0, *, negative_l2=0.0, refit=True, n_values=None, solver="tv",
                 weighting="unique", group_size=None, max_iter=10000, tol=1e-10):
        self.alpha = alpha
        self.negative_l2 = negative_l2
        self.refit = refit
        self.n_values = n_values
        self.solver = solver
        self.weighting = weighting
        self.group_size = group_size
        self.max_iter = max_iter
        self.tol = tol

    def _solve(self, values, weights, lam, lam2=None):
        """Reconstruction of the distinct values for one lambda (and eq. 13's ``lam2``,
        default ``negative_l2``); sets ``n_iter_``."""
        lam2 = self.negative_l2 if lam2 is None else lam2
        refitted = False
        if self.solver == "tv":
            from ._solvers import l1_one

            # The compiled solver of the grouped fit, on one group: both give the same
            # result for a group (the refit is done there unless eq. 13 comes first).
            refitted = self.refit and lam2 <= 0
            w = np.ones_like(values) if weights is None else weights
            x, _ = l1_one(values, w, lam, refitted)
            self.n_iter_ = 1
        else:
            from sklearn.linear_model import Lasso

            V = _dense_v(values, weights)
            target = values if weights is None else values * np.sqrt(weights)
            lasso = Lasso(alpha=lam / (2.0 * values.size), fit_intercept=False,
                          max_iter=self.max_iter, tol=self.tol)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                lasso.fit(V, target)
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                warnings.warn(
                    f"Coordinate descent did not converge in max_iter={self.max_iter} "
                    "iterations; increase max_iter or use solver='tv'.",
                    ConvergenceWarning,
                )
            x = np.cumsum(lasso.coef_ * _steps(values))
            self.n_iter_ = int(lasso.n_iter_)
        if lam2 > 0:
            x = self._solve_negative_l2(values, weights, lam, lam2, x)
        if self.refit and not refitted:
            x = _reconstruct_from_support(values, weights, _jumps(x))
        return x

    def _solve_negative_l2(self, values, weights, lam, lam2, x_l1):
        from ._solvers import neg_l2_coordinate_descent

        d = _steps(values)
        w = np.ones_like(values) if weights is None else weights
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha0 = np.where(d != 0, np.diff(x_l1, prepend=0.0) / d, 0.0)
        alpha, n_iter = neg_l2_coordinate_descent(
            values, w, d, alpha0, lam, lam2, self.max_iter, self.tol)
        self.n_iter_ = int(n_iter)
        if n_iter >= self.max_iter:
            warnings.warn(f"Coordinate descent on eq. 13 did not converge in "
                          f"max_iter={self.max_iter} sweeps.", ConvergenceWarning)
        return np.cumsum(alpha * d)

    def _fit_codebook(self, values, weights, appearance, penalty_scale):
        # The solves work in units where the data's largest magnitude is in [1, 2): there
        # the user's lambda is lambda * penalty_scale (eq. 6 scales as the squared data).
        lam2 = self.negative_l2 * penalty_scale
        if self.n_values is None:
            self.alpha_ = float(self.alpha)
            return self._solve(values, weights, self.alpha_ * penalty_scale, lam2)
        target = check_n_values(self.n_values, values.size)
        if target == values.size:  # every value kept: the lossless codebook, lambda -> 0
            self.alpha_ = 0.0
            self.n_iter_ = 0
            return values
        lam, x = self._search_lambda(values, weights, target,
                                     float(self.alpha) * penalty_scale, lam2)
        with np.errstate(over="ignore", divide="ignore"):
            self.alpha_ = float(np.float64(lam) / penalty_scale)
        return x

    def _fit_groups(self, X, sample_weight, importance):
        if self.solver == "tv" and self.negative_l2 == 0:
            return self._fit_groups_compiled(X, sample_weight, importance)
        codebooks, alphas, n_iters = [], [], []
        for group in self._groups(X, sample_weight, importance):
            codebooks.append(self._fit_scaled(*group))
            alphas.append(self.alpha_)
            n_iters.append(self.n_iter_)
        self.alpha_ = np.array(alphas)
        self.n_iter_ = int(max(n_iters))
        return pad_codebooks(codebooks)

    def _fit_groups_compiled(self, X, sample_weight, importance):
        """Every group at once: each step of Alg. 2's search is one compiled pass over the
        groups still searching, in the same units and with the same decisions as fitting
        each group alone."""
        from ._solvers import l1_groups

        values, weights, offsets = grouped_distinct_values(
            X, sample_weight, self.weighting, importance, self.group_size)
        sizes = np.diff(offsets)
        group = np.repeat(np.arange(sizes.size), sizes)
        scale = power_of_two_scales(np.maximum.reduceat(np.abs(values), offsets[:-1]))
        weight_scale = power_of_two_scales(np.maximum.reduceat(weights, offsets[:-1]))
        v, w = values / scale[group], weights / weight_scale[group]
        with np.errstate(over="ignore", under="ignore", divide="ignore"):
            penalty = 1.0 / weight_scale / scale / scale
        self.n_iter_ = 1
        if self.n_values is None:
            self.alpha_ = np.full(sizes.size, float(self.alpha))
            x, _ = l1_groups(v, w, offsets, self.alpha * penalty, self.refit)
        else:
            short = int(np.sum(sizes < self.n_values))
            if short:
                warnings.warn(
                    f"n_values={self.n_values} is larger than the number of distinct values "
                    f"in {short} of {sizes.size} groups; their codebooks hold those values.",
                    UserWarning, stacklevel=4)
            target = np.minimum(self.n_values, sizes)
            lam, x = _search_lambda_groups(v, w, offsets, group, target,
                                           float(self.alpha) * penalty, self.refit)
            lossless = target == sizes  # every value kept, lambda -> 0
            x[lossless[group]] = v[lossless[group]]
            lam[lossless] = 0.0
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                self.alpha_ = np.where(lossless, 0.0, lam / penalty)
        codebooks = [np.unique(x[offsets[g]:offsets[g + 1]]) * scale[g]
                     for g in range(sizes.size)]
        return pad_codebooks(codebooks)

    def _search_lambda(self, values, weights, target, lam, lam2):
        """Alg. 2's search: the smallest lambda (from ``lam``) giving at most ``target``
        values; returns ``(lambda, reconstruction)``."""
        # The data's largest magnitude is in [1, 2) here, so lambda = 1 is on its scale; an
        # alpha given for data of another scale would cost the bracketing hundreds of steps.
        if not 1e-12 <= lam <= 1e12:
            lam = 1.0

        def solve(lam):
            return self._solve(values, weights, lam, lam2)

        def count(x):
            return np.unique(x).size

        x = solve(lam)
        # Bracket: lo gives too many values, hi gives few enough.
        if count(x) > target:
            lo = lam
            while True:
                lam *= 2.0
                x = solve(lam)
                if count(x) <= target:
                    hi, x_hi = lam, x
                    break
                lo = lam
        else:
            hi, x_hi = lam, x
            lo = None
            for _ in range(64):
                lam /= 2.0
                x = solve(lam)
                if count(x) > target:
                    lo = lam
                    break
                hi, x_hi = lam, x
            if lo is None:  # every lambda tried reaches the target (e.g. target == m)
                return hi, x_hi
        for _ in range(60):
            if count(x_hi) == target or hi - lo <= 1e-12 * hi:
                break
            mid = 0.5 * (lo + hi)
            x = solve(mid)
            if count(x) <= target:
                hi, x_hi = mid, x
            else:
                lo = mid
        return hi, x_hi


def _search_lambda_groups(values, weights, offsets, group, target, lam, refit):
    """:meth:`L1LeastSquareQuantizer._search_lambda` for many groups at once: the same
    bracketing and bisection per group, each step one compiled pass over the groups it
    concerns. Returns each group's lambda and the reconstructions at it."""
    from ._solvers import l1_groups

    def solve(lam, active):
        return l1_groups(values, weights, offsets, lam, refit, active)

    lam = np.where((lam >= 1e-12) & (lam <= 1e12), lam, 1.0)
    x, count = solve(lam, None)
    n_groups = target.size
    lo, hi = np.full(n_groups, np.nan), lam.copy()
    x_hi, count_hi = x.copy(), count.copy()

    def keep(mask, x_new, count_new):
        x_hi[mask[group]] = x_new[mask[group]]
        count_hi[mask] = count_new[mask]

    # Bracket: groups with too many values double lambda until they have few enough ...
    active = count > target
    lo[active] = lam[active]
    while active.any():
        lam = np.where(active, lam * 2.0, lam)
        x, count = solve(lam, active)
        done = active & (count <= target)
        hi[done] = lam[done]
        keep(done, x, count)
        active &= ~done
        lo[active] = lam[active]
    # ... the others halve it (64 times at most) until they have too many.
    active = ~np.isfinite(lo)
    for _ in range(64):
        if not active.any():
            break
        lam = np.where(active, lam / 2.0, lam)
        x, count = solve(lam, active)
        crossed = active & (count > target)
        lo[crossed] = lam[crossed]
        ok = active & ~crossed
        hi[ok] = lam[ok]
        keep(ok, x, count)
        active = ok
    # Bisection to the smallest lambda reaching the target (groups bracketed only).
    active = np.isfinite(lo)
    for _ in range(60):
        active &= (count_hi != target) & ~(hi - np.where(active, lo, 0.0) <= 1e-12 * hi)
        if not active.any():
            break
        mid = np.where(active, 0.5 * (lo + hi), hi)
        x, count = solve(mid, active)
        good = active & (count <= target)
        hi[good] = mid[good]
        keep(good, x, count)
        bad = active & ~good
        lo[bad] = mid[bad]
    return hi, x_hi


class L0LeastSquareQuantizer(ScalarQuantizer):
    r"""Scalar quantization with at most ``n_values`` values by l0-constrained least squares.

    The paper's eq. 16:

    .. math:: \min_\alpha \|v - V^*\alpha\|_2^2 \quad \text{s.t.} \quad
              \|\alpha\|_0 \le l

    on the sorted distinct values ``v``, with ``l = n_values`` counted as distinct values of
    the reconstruction (eq. 1's :math:`o(w^*) \le l`). Any reconstruction with ``l``
    distinct values is piecewise constant on ``l`` runs of the sorted values, and its best
    levels are the run means, so eq. 16 is exactly optimal 1-D k-means over ``v``.

    Read more in the :ref:`User Guide <scalar>`.

    Parameters
    ----------
    n_values : int, default=8
        The paper's ``l``: the number of codebook values. ``solver="dp"`` always returns
        exactly ``min(n_values, m)`` values for ``m`` distinct values in the data (with a
        ``UserWarning`` when ``n_values > m``); ``solver="l0learn"`` may return fewer.
    solver : {"dp", "l0learn"}, default="dp"
        ``"dp"``: the exact global optimum, by dynamic programming over the sorted values
        (divide-and-conquer optimisation, O(l m log m) time, ``4 l m`` bytes).
        ``"l0learn"``: the paper's solver, L0Learn's coordinate descent with local
        combinatorial search on the dense ``V`` (needs the ``l0`` extra: CPython <= 3.10 and
        numpy < 2; limited to 20,000 distinct values). Along L0Learn's regularisation path
        the solution with the lowest error among those with at most ``n_values`` values,
        refitted by least squares, is kept; it is never better than ``"dp"``.
    weighting : {"unique", "count"}, default="unique"
        ``"unique"``: every distinct value counts once, as in the paper.
        ``"count"``: each value counts with its multiplicity (and ``sample_weight``).
    group_size : int or None, default=None
        ``None``: one codebook for every entry of ``X`` (the paper's setting). An int ``g``:
        one codebook per group of ``g`` consecutive columns (the last group may be smaller),
        each fitted on its group's entries alone; ``1`` gives one codebook per feature, as
        :class:`~sklearn.preprocessing.KBinsDiscretizer` bins each feature (a weight matrix's
        output channels are the columns of its transpose). With ``solver="dp"`` every
        group is solved exactly in one compiled pass over all groups (in parallel).

    Attributes
    ----------
    codebook_ : ndarray of shape (`n_values_`,) or (`n_groups_`, `n_values_`)
        Sorted codebook values, in the dtype of the training data; with ``group_size`` set,
        one row per group, a group with fewer values padded with its largest value.
    n_values_ : int
        Number of codebook values (the largest over the groups).
    group_n_values_ : ndarray of shape (`n_groups_`,)
        Number of values of each group's codebook (only with ``group_size`` set).
    n_groups_ : int
        Number of codebooks (1 without ``group_size``).
    bits_per_sample_ : float
        Rate of the codes: ``sum_j log2(n_values of feature j's codebook)`` bits per row
        (``n_features_in_ * log2(n_values_)`` with one codebook).
    bits_per_code_ : int
        Width of one code when bit-packed (:func:`skvq.packing.pack_codes`):
        ``ceil(log2(n_values_))``, at least 1.
    codebook_bits_ : int
        Storage of the codebooks, ``n_groups_ * n_values_`` values in the fitted dtype.
    bits_per_entry_ : float
        The true rate on the training data: ``bits_per_code_`` plus the codebooks' storage
        spread over the entries of ``X``.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    KMeansLSQuantizer : k-means followed by least squares (Alg. 3), a heuristic for the
        same objective.
    L1LeastSquareQuantizer : The convex l1 relaxation (eq. 6).

    Notes
    -----
    The dynamic programme: with ``D[q][j]`` the optimal cost of the first ``j`` values in
    ``q`` runs, ``D[q][j] = min_t D[q-1][t] + SSE(t..j-1)``; the within-run sums of squares
    come from prefix sums, and the optimal ``t`` is non-decreasing in ``j``, which the
    divide-and-conquer optimisation exploits (Wang & Song, 2011, Ckmeans.1d.dp).

    References
    ----------
    Sparse least squares scalar quantization (``shared/papers``), eq. 16.
    H. Wang and M. Song, "Ckmeans.1d.dp: optimal k-means clustering in one dimension by
    dynamic programming", The R Journal 3(2), 2011.
    H. Hazimeh and R. Mazumder, "Fast best subset selection: coordinate descent and local
    combinatorial optimization algorithms", Operations Research 68(5), 2020 (L0Learn).

    Examples
    --------
    >>> import numpy as np
    >>> from skvq import L0LeastSquareQuantizer
    >>> X = np.array([[1.0, 1.1, 5.0, 5.2, 9.0, 9.1]])
    >>> q = L0LeastSquareQuantizer(n_values=3).fit(X)
    >>> q.codebook_
    array([1.05, 5.1 , 9.05])
    >>> q.transform(X)
    array([[0, 0, 1, 1, 2, 2]], dtype=uint8)
    """

    _parameter_constraints = {
        **ScalarQuantizer._parameter_constraints,
        "n_values": [Interval(Integral, 1, None, closed="left")],
        "solver": [StrOptions({"dp", "l0learn"})],
    }

    def __init__(self, n_values=8, *, solver="dp", weighting="unique", group_size=None):
        self.n_values = n_values
        self.solver = solver
        self.weighting = weighting
        self.group_size = group_size

    def _fit_groups(self, X, sample_weight, importance):
        if self.solver != "dp":
            return super()._fit_groups(X, sample_weight, importance)
        from ._solvers import kmeans_1d_dp_groups

        # Chunks of whole groups of about _CHUNK_ENTRIES entries: the sorted copies stay
        # bounded (a few times the chunk) however large X is.
        n_rows = max(X.shape[0], 1)
        step = max(1, _CHUNK_ENTRIES // (n_rows * self.group_size)) * self.group_size
        codebooks, n_values = [], []
        for start in range(0, X.shape[1], step):
            cols = slice(start, start + step)
            values, weights, offsets = grouped_distinct_values(
                X[:, cols], sample_weight, self.weighting,
                None if importance is None else importance[:, cols], self.group_size)
            books, counts = kmeans_1d_dp_groups(values, weights, offsets, self.n_values)
            codebooks.append(books)
            n_values.append(counts)
        n_values = np.concatenate(n_values)
        short = int(np.sum(n_values < self.n_values))
        if short:
            warnings.warn(
                f"n_values={self.n_values} is larger than the number of distinct values in "
                f"{short} of {n_values.size} groups; their codebooks hold those values.",
                UserWarning, stacklevel=4)
        return np.concatenate(codebooks)[:, :n_values.max()], n_values

    def _fit_codebook(self, values, weights, appearance, penalty_scale):
        n_values = check_n_values(self.n_values, values.size)
        if self.solver == "dp":
            from ._solvers import kmeans_1d_dp

            w = np.ones_like(values) if weights is None else weights
            return segment_means(values, weights, kmeans_1d_dp(values, w, n_values))
        return _l0learn_reconstruction(values, weights, n_values)


def _import_l0learn():
    try:
        import l0learn
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "solver='l0learn' needs the l0learn package (pip install 'skvq[l0]'); it has "
            "wheels for CPython <= 3.10 only and needs numpy < 2."
        ) from exc
    return l0learn


def _l0learn_reconstruction(values, weights, n_values):
    """Best refitted solution with at most ``n_values`` values on L0Learn's path (eq. 16)."""
    l0learn = _import_l0learn()
    V = _dense_v(values, weights)
    target = values if weights is None else values * np.sqrt(weights)
    w = 1.0 if weights is None else weights
    best_x = np.zeros_like(values)
    best_err = float(np.sum(w * values**2))
    if values.size >= 2:
        path = l0learn.fit(V, target, penalty="L0", max_support_size=n_values,
                           intercept=False)
        coefs = path.coeff(gamma=path.gamma[0], include_intercept=False).toarray()
        for coef in coefs.T:
            x = _reconstruct_from_support(values, weights, coef != 0)
            err = float(np.sum(w * (values - x) ** 2))
            if np.unique(x).size <= n_values and err < best_err:
                best_x, best_err = x, err
    else:
        best_x = values.copy()
    return best_x
