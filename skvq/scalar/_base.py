"""Shared machinery of the scalar quantizers: one codebook of values for every entry of X."""

import math

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted

from ..base import BaseQuantizer


def distinct_values(X, sample_weight, weighting):
    """Sorted distinct values of ``X``, their weights, and their order of first appearance.

    ``weighting="unique"`` gives every distinct value weight 1, as the paper does (it works on
    ``unique(w)``); ``weighting="count"`` weights each value by its multiplicity (times the
    ``sample_weight`` of its row), which minimises the squared error of the whole array.
    Entries of rows with zero ``sample_weight`` are left out, so that integer weights behave
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
    entry_weight = None
    if sample_weight is not None:
        entry_weight = np.repeat(sample_weight, X.shape[1])
        keep = entry_weight > 0
        values, entry_weight = values[keep], entry_weight[keep]
    u, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    appearance = np.argsort(first, kind="stable")
    if weighting == "unique":
        return u, None, appearance
    weights = np.bincount(inverse.ravel(), weights=entry_weight, minlength=u.size)
    return u, weights, appearance


def segment_means(y, w, starts):
    """Weighted means of the contiguous runs of ``y`` beginning at ``starts`` (sorted)."""
    w = np.ones_like(y) if w is None else w
    sums = np.add.reduceat(w * y, starts)
    weights = np.add.reduceat(w, starts)
    return sums / weights


class ScalarQuantizer(BaseQuantizer):
    """Base of the scalar quantizers: one sorted codebook shared by every entry of ``X``.

    Subclasses implement ``_fit_codebook(values, weights, appearance)`` on the sorted
    distinct values (``weights`` is ``None`` for the paper's unit weights; ``appearance``
    gives their order of first appearance in ``X``) and return the codebook values.
    ``transform`` codes every entry to its nearest codebook value, so a value not seen in
    ``fit`` gets the nearest value too, and re-coding the training data never increases its
    error compared with the assignment the fitting algorithm made.
    """

    _parameter_constraints = {"weighting": [StrOptions({"unique", "count"})]}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Learn the codebook from every entry of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data; its entries are quantized as one set of scalars (a weight matrix, an
            image, or a batch of either, one per row).
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each row. With ``weighting="count"`` every entry
            counts with its row's weight; with ``weighting="unique"`` a distinct value counts
            once if any entry holding it has positive weight.

        Returns
        -------
        self : object
            Fitted quantizer.
        """
        X, sample_weight = self._validate_fit_data(X, sample_weight)
        values, weights, appearance = distinct_values(X, sample_weight, self.weighting)
        codebook = self._fit_codebook(values, weights, appearance)
        codebook = np.unique(np.asarray(codebook, dtype=np.float64))
        self.codebook_ = codebook.astype(X.dtype)
        self.n_values_ = int(codebook.size)
        self.bits_per_sample_ = float(self.n_features_in_ * math.log2(self.n_values_))
        return self

    def _fit_codebook(self, values, weights, appearance):
        """Codebook values from the sorted distinct ``values`` (see :func:`distinct_values`)."""
        raise NotImplementedError

    def _n_code_columns(self):
        return self.n_features_in_

    def _code_cardinality(self):
        return self.n_values_

    def _encode(self, X):
        codebook = self.codebook_.astype(np.float64)
        midpoints = 0.5 * (codebook[1:] + codebook[:-1])
        return np.searchsorted(midpoints, X).astype(self._code_dtype(), copy=False)

    def _decode(self, codes):
        return self.codebook_[codes]

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

