"""Shared machinery of the scalar quantizers: one codebook of values for every entry of X, or
one per feature or per group of consecutive features (``group_size``)."""

import math
import numbers

import numpy as np
from numba import njit, prange
from sklearn.base import _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted

from ..base import BaseQuantizer


def _entry_weights(X, sample_weight, importance):
    """Per-entry weights (``sample_weight`` of the row times ``importance``), or None."""
    if sample_weight is None and importance is None:
        return None
    w = np.ones(X.shape) if importance is None else np.array(importance, dtype=np.float64)
    if sample_weight is not None:
        w *= sample_weight[:, None]
    return w


def distinct_values(X, sample_weight, weighting, importance=None):
    """Sorted distinct values of ``X``, their weights, and their order of first appearance.

    ``weighting="unique"`` gives every distinct value weight 1, as the paper does (it works on
    ``unique(w)``), or the mean ``importance`` of its entries; ``weighting="count"`` weights
    each value by the sum of its entries' weights: multiplicity times the ``sample_weight`` of
    the row times the entry's ``importance``, which minimises the (weighted) squared error of
    the whole array. Entries of zero weight are left out, so that integer weights behave
    exactly like repeated rows under both weightings.

    Returns
    -------
    values : ndarray of shape (m,)
        Sorted distinct values.
    weights : ndarray of shape (m,) or None
        Their weights (None: all 1).
    appearance : ndarray of shape (m,)
        ``values[appearance]`` lists the distinct values in the order they first appear in
        ``X`` (row-major). Methods whose result depends on the order of their input
        (k-means' initialisation) use it, so that they see the data as the user gave it.
    """
    values = X.ravel().astype(np.float64, copy=False)
    entry_weight = _entry_weights(X, sample_weight, importance)
    if entry_weight is not None:
        entry_weight = entry_weight.ravel()
        keep = entry_weight > 0
        values, entry_weight = values[keep], entry_weight[keep]
    u, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    appearance = np.argsort(first, kind="stable")
    if weighting == "unique" and importance is None:
        return u, None, appearance
    weights = np.bincount(inverse.ravel(), weights=entry_weight, minlength=u.size)
    if weighting == "unique":
        weights = weights / np.bincount(inverse.ravel(), minlength=u.size)
    return u, weights, appearance


def grouped_distinct_values(X, sample_weight, weighting, importance, group_size):
    """:func:`distinct_values` of every group of ``group_size`` consecutive columns at once.

    Vectorised over the groups (one sort of the transposed block); the order of appearance is
    not computed. Returns ``(values, weights, offsets)``: group ``g``'s sorted distinct values
    are ``values[offsets[g]:offsets[g + 1]]`` and their weights ``weights[...]`` (all 1 where
    the paper's unit weights apply).
    """
    n, p = X.shape
    entry_weight = _entry_weights(X, sample_weight, importance)
    parts = []
    n_full = p // group_size
    bounds = [(0, n_full * group_size, n_full)] if n_full else []
    if p % group_size:
        bounds.append((n_full * group_size, p, 1))
    for start, stop, n_groups in bounds:
        block = np.ascontiguousarray(X[:, start:stop].T, dtype=np.float64)
        block = block.reshape(n_groups, -1)
        if entry_weight is None:
            vals = np.sort(block, axis=1)
            wts = None
        else:
            ew = np.ascontiguousarray(entry_weight[:, start:stop].T).reshape(n_groups, -1)
            order = np.argsort(block, axis=1, kind="stable")
            vals = np.take_along_axis(block, order, axis=1)
            wts = np.take_along_axis(ew, order, axis=1)
        parts.append(_runs(vals, wts, weighting, importance is not None))
    values = np.concatenate([v for v, _, _ in parts])
    weights = np.concatenate([w for _, w, _ in parts])
    counts = np.concatenate([c for _, _, c in parts])
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return values, weights, offsets


def _runs(vals, wts, weighting, has_importance):
    """Distinct values of each row of the row-sorted ``vals`` and their weights."""
    n_groups, length = vals.shape
    new = np.ones(vals.shape, dtype=bool)
    new[:, 1:] = vals[:, 1:] != vals[:, :-1]
    starts = np.flatnonzero(new.ravel())
    values = vals.ravel()[starts]
    group = starts // length
    if wts is None:
        lengths = np.diff(np.append(starts, vals.size)).astype(np.float64)
        weights = np.ones_like(values) if weighting == "unique" else lengths
        return values, weights, np.bincount(group, minlength=n_groups)
    flat_w = wts.ravel()
    weights = np.add.reduceat(flat_w, starts)
    if weighting == "unique":
        if has_importance:
            present = np.add.reduceat((flat_w > 0).astype(np.float64), starts)
            weights = np.divide(weights, present, out=np.zeros_like(weights),
                                where=present > 0)
        else:
            weights = (weights > 0).astype(np.float64)
    keep = weights > 0
    return values[keep], weights[keep], np.bincount(group[keep], minlength=n_groups)


def power_of_two_scales(top):
    """``2**floor(log2(t))`` of each entry ``t`` of ``top`` (>= 0; 1 where it is 0): dividing
    by it is exact and puts the largest magnitude in [1, 2), so that sums of squares neither
    overflow nor underflow."""
    top = np.asarray(top, dtype=np.float64)
    return np.where(top > 0, np.ldexp(1.0, np.frexp(top)[1] - 1), 1.0)


def power_of_two_scale(a):
    """:func:`power_of_two_scales` of ``max|a|`` (1 for an empty or all-zero ``a``)."""
    top = float(np.max(np.abs(a))) if np.size(a) else 0.0
    return float(power_of_two_scales(top if np.isfinite(top) else 0.0))


def segment_means(y, w, starts):
    """Weighted means of the contiguous runs of ``y`` beginning at ``starts`` (sorted)."""
    w = np.ones_like(y) if w is None else w
    sums = np.add.reduceat(w * y, starts)
    weights = np.add.reduceat(w, starts)
    return sums / weights


@njit(parallel=True, cache=True)
def _encode_grouped(X, midpoints, group_size, out):
    """Code of each entry: the number of its group's midpoints below it (binary search)."""
    n, p = X.shape
    n_mid = midpoints.shape[1]
    for i in prange(n):
        for j in range(p):
            mids = midpoints[j // group_size]
            x = X[i, j]
            lo = 0
            hi = n_mid
            while lo < hi:
                mid = (lo + hi) >> 1
                if mids[mid] < x:
                    lo = mid + 1
                else:
                    hi = mid
            out[i, j] = lo


def _midpoints(codebook, n_values):
    """Decision thresholds between consecutive codebook values, ``+inf`` past a group's own
    values; computed as ``a/2 + b/2``, which cannot overflow."""
    mids = 0.5 * codebook[:, :-1] + 0.5 * codebook[:, 1:]
    mids[np.arange(mids.shape[1])[None, :] >= (n_values[:, None] - 1)] = np.inf
    return mids


class ScalarQuantizer(BaseQuantizer):
    """Base of the scalar quantizers: sorted codebooks of values shared by entries of ``X``.

    With ``group_size=None`` one codebook serves every entry of ``X`` (the paper's setting);
    with ``group_size=g`` every group of ``g`` consecutive columns has its own (``g=1``: one
    per feature, as :class:`~sklearn.preprocessing.KBinsDiscretizer` bins each feature; a
    weight matrix's output channels are the columns of its transpose).

    Subclasses implement ``_fit_codebook(values, weights, appearance, penalty_scale)`` on the
    sorted distinct values of one group (``weights`` is ``None`` for the paper's unit
    weights; ``appearance`` gives their order of first appearance in ``X``) and return the
    codebook values. The values they see are divided by a power of two that puts the largest
    magnitude in [1, 2) (and weights likewise), an exact change of units that keeps every
    solver's sums of squares finite from 1e-300 to 1e300; an objective with a penalty in the
    user's units multiplies the penalty by ``penalty_scale``. A subclass with a solver
    compiled over all groups at once overrides ``_fit_groups``.

    ``transform`` codes every entry to the nearest value of its codebook, so a value not seen
    in ``fit`` gets the nearest value too, and re-coding the training data never increases
    its error compared with the assignment the fitting algorithm made.
    """

    _parameter_constraints = {
        "weighting": [StrOptions({"unique", "count"})],
        "group_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
    }

    # Whether _fit_codebook sees weights divided by a power of two (all but the Gaussian
    # mixture, which repeats values by their integer counts).
    _scale_weights = True

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None, importance=None):
        """Learn the codebook(s) from the entries of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data; its entries are quantized as sets of scalars: all of them together
            (``group_size=None``: a weight matrix, an image, or a batch of either, one per
            row), or each group of ``group_size`` consecutive columns on its own.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each row. With ``weighting="count"`` every entry
            counts with its row's weight; with ``weighting="unique"`` a distinct value counts
            once if any entry holding it has positive weight.
        importance : array-like of shape (n_samples, n_features), default=None
            Non-negative weight of each entry in the squared error (Fisher information or
            Hessian diagonal of a network's weights, as SqueezeLLM and coremltools' SKM
            palettizer use). With ``weighting="count"`` a distinct value weighs the sum of
            its entries' importances (times their rows' ``sample_weight``); with
            ``weighting="unique"``, their mean. Entries of zero importance are left out;
            a group (or, without ``group_size``, all of ``X``) whose entries all have zero
            importance (a dead unit's weights, a layer the loss does not use: they get no
            gradient) is fitted with uniform importance instead, as its error does not
            matter to the loss the importance came from.

        Returns
        -------
        self : object
            Fitted quantizer.
        """
        X, sample_weight = self._validate_fit_data(X, sample_weight)
        importance = self._check_importance(importance, X)
        if importance is not None:
            importance = _fill_unimportant_groups(
                importance, sample_weight,
                X.shape[1] if self.group_size is None else self.group_size)
        if self.group_size is None:
            values, weights, appearance = distinct_values(X, sample_weight, self.weighting,
                                                          importance)
            if values.size == 0:
                raise ValueError("Every entry of X has zero weight: nothing to fit.")
            codebook = self._fit_scaled(values, weights, appearance)
            codebooks = codebook[None, :]
            group_n_values = np.array([codebook.size])
        else:
            codebooks, group_n_values = self._fit_groups(X, sample_weight, importance)
        n_values = int(group_n_values.max())
        self.n_values_ = n_values
        self.n_groups_ = int(codebooks.shape[0])
        if self.group_size is None:
            self.codebook_ = codebooks[0].astype(X.dtype)
        else:
            self.codebook_ = codebooks.astype(X.dtype)
            self.group_n_values_ = group_n_values.astype(np.intp)
        per_feature = group_n_values[self._feature_group()]
        self.bits_per_sample_ = float(np.sum(np.log2(per_feature)))
        self.bits_per_code_ = max(1, math.ceil(math.log2(n_values)))
        self.codebook_bits_ = int(self.n_groups_ * n_values * 8 * X.dtype.itemsize)
        self.bits_per_entry_ = float(self.bits_per_code_ + self.codebook_bits_ / X.size)
        return self

    def _check_importance(self, importance, X):
        if importance is None:
            return None
        if hasattr(importance, "to_numpy"):
            importance = importance.to_numpy()
        importance = np.asarray(importance)
        if importance.dtype == object or importance.dtype.kind not in "biuf":
            raise TypeError(f"importance must be an array of numbers, got dtype "
                            f"{importance.dtype}.")
        if importance.shape != X.shape:
            raise ValueError(f"importance must have the shape of X, {X.shape}, got "
                             f"{importance.shape}.")
        importance = importance.astype(np.float64)
        if not np.all(np.isfinite(importance)):
            raise ValueError("importance contains NaN or infinity.")
        if np.any(importance < 0):
            raise ValueError("importance must be non-negative.")
        return importance

    def _feature_group(self):
        """Group index of every feature (all 0 with one shared codebook)."""
        if self.group_size is None:
            return np.zeros(self.n_features_in_, dtype=np.intp)
        return np.arange(self.n_features_in_) // self.group_size

    def _fit_scaled(self, values, weights, appearance):
        """``_fit_codebook`` in exact power-of-two units; the codebook in the data's units."""
        scale = power_of_two_scale(values)
        weight_scale = (power_of_two_scale(weights)
                        if weights is not None and self._scale_weights else 1.0)
        with np.errstate(over="ignore", under="ignore", divide="ignore"):
            # inf (or 0) where the squared scale leaves float64: a penalty given in the
            # user's units is then infinite (or nil) in the solver's.
            penalty_scale = float(np.float64(1.0) / weight_scale / scale / scale)
        codebook = self._fit_codebook(values / scale,
                                      None if weights is None else weights / weight_scale,
                                      appearance, penalty_scale)
        return np.unique(np.asarray(codebook, dtype=np.float64)) * scale

    def _fit_groups(self, X, sample_weight, importance):
        """Codebooks of every group of ``group_size`` columns: ``(codebooks, n_values)``, the
        codebooks as rows padded with their largest value. This default fits group by group;
        quantizers with a solver compiled over all groups override it."""
        return pad_codebooks([self._fit_scaled(*group)
                              for group in self._groups(X, sample_weight, importance)])

    def _groups(self, X, sample_weight, importance):
        """``(values, weights, appearance)`` of each group, as :func:`distinct_values`."""
        for start in range(0, X.shape[1], self.group_size):
            cols = slice(start, start + self.group_size)
            # Never empty: rows of positive sample_weight exist, and fit gives a group without
            # any importance uniform importance.
            yield distinct_values(X[:, cols], sample_weight, self.weighting,
                                  None if importance is None else importance[:, cols])

    def _fit_codebook(self, values, weights, appearance, penalty_scale):
        """Codebook values from the sorted distinct ``values`` (see :func:`distinct_values`)."""
        raise NotImplementedError

    def _n_code_columns(self):
        return self.n_features_in_

    def _code_cardinality(self):
        return self.n_values_

    def _grouped_codebook(self):
        """Codebooks as a 2-D array (one row per group) and each group's number of values."""
        if self.group_size is None:
            return self.codebook_[None, :], np.array([self.n_values_])
        return self.codebook_, self.group_n_values_

    def _encode(self, X):
        codebook, n_values = self._grouped_codebook()
        mids = _midpoints(codebook.astype(np.float64), n_values)
        out = np.empty(X.shape, dtype=self._code_dtype())
        if X.size:
            group_size = X.shape[1] if self.group_size is None else self.group_size
            _encode_grouped(np.ascontiguousarray(X), mids, max(group_size, 1), out)
        return out

    def _decode(self, codes):
        if self.group_size is None:
            return self.codebook_[codes]
        return self.codebook_[self._feature_group()[None, :], codes]

    def _check_codes(self, codes):
        codes = super()._check_codes(codes)
        if self.group_size is not None and codes.size:
            limit = self.group_n_values_[self._feature_group()]
            over = np.flatnonzero(codes.max(axis=0) >= limit)
            if over.size:
                j = int(over[0])
                raise ValueError(
                    f"codes out of range: column {j} belongs to group {j // self.group_size}, "
                    f"whose codebook has {limit[j]} values (codes 0 to {limit[j] - 1}); got "
                    f"{codes[:, j].max()}.")
        return codes

    def get_feature_names_out(self, input_features=None):
        """Names of the code columns: the input feature names (one code per entry).

        Parameters
        ----------
        input_features : array-like of str or None
            Input feature names; defaults to the names seen in ``fit`` or ``x0, x1, ...``.

        Returns
        -------
        feature_names_out : ndarray of str
        """
        check_is_fitted(self)
        return _check_feature_names_in(self, input_features)


def _fill_unimportant_groups(importance, sample_weight, group_size):
    """Uniform importance for the groups of columns where it is zero on every counted row."""
    rows = importance if sample_weight is None else importance[sample_weight > 0]
    starts = np.arange(0, importance.shape[1], group_size)
    dead = np.add.reduceat(rows.sum(axis=0), starts) == 0
    if not np.any(dead):
        return importance
    importance = importance.copy()
    for g in np.flatnonzero(dead):
        importance[:, g * group_size:(g + 1) * group_size] = 1.0
    return importance


def pad_codebooks(codebooks):
    """Stack codebooks of different lengths as rows, each padded with its largest value."""
    n_values = np.array([c.size for c in codebooks])
    out = np.empty((len(codebooks), int(n_values.max())))
    for g, c in enumerate(codebooks):
        out[g, :c.size] = c
        out[g, c.size:] = c[-1]
    return out, n_values
