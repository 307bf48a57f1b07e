"""The quantizer contract shared by every skvq estimator.

Every quantizer is a scikit-learn transformer:

- ``fit(X)`` learns a codebook;
- ``transform(X)`` returns integer codes in the smallest unsigned dtype that holds them;
- ``inverse_transform(codes)`` maps codes back to reconstructions in the fitted float dtype;
- ``score(X)`` is the negative mean squared reconstruction error per entry;
- ``bits_per_sample_`` is the rate, in bits per sample (row of ``X``), the same attribute on
  every estimator so that :mod:`skvq.metrics` can trade rate against distortion.

Subclasses implement ``fit`` (validating with ``_validate_fit_data``, which returns
float32/float64, finite, 2-D data and checked ``sample_weight``) and four private hooks:

``_n_code_columns()``
    the number of code columns (``n_features_in_`` for a scalar quantizer, the number of
    subspaces for a product quantizer);
``_encode(X)``
    codes for one batch of rows;
``_decode(codes)``
    reconstructions for one batch of codes (already checked for shape and range);
``_code_cardinality()``
    the number of distinct code values per code column.

``transform`` and ``inverse_transform`` call the hooks batch by batch, with batches sized
by scikit-learn's ``working_memory`` setting, so that memory stays bounded however many
rows are coded, and so that a row's code never depends on the other rows of the call
(which is what lets dask-ml's ``ParallelPostFit`` or joblib split the work).

``fit`` on a dask array trains on a uniform random sample of at most
``skvq.distributed.FIT_SAMPLES`` (100,000) rows, drawn chunk by chunk with the estimator's
``random_state`` (:func:`skvq.distributed.fit_sample` for another size or a faster draw from a
few chunks). ``transform``, ``inverse_transform`` and ``score`` also take dask arrays: the first two
return dask arrays built lazily block by block (:mod:`skvq.distributed`), ``score`` computes
its float. dask is never imported by skvq: an object can only be a dask array if the user
already imported ``dask.array``.
"""

import numbers
import sys

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._chunking import get_chunk_n_rows
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["BaseQuantizer", "code_dtype"]


def code_dtype(n_codes):
    """Smallest unsigned integer dtype that holds the codes ``0`` to ``n_codes - 1``.

    Parameters
    ----------
    n_codes : int
        Number of distinct code values (codebook size), at least 1.

    Returns
    -------
    dtype : numpy.dtype
        ``uint8`` up to 256 codes, ``uint16`` up to 65,536, ``uint32`` up to 2**32,
        ``uint64`` beyond.

    Examples
    --------
    >>> from skvq.base import code_dtype
    >>> code_dtype(256), code_dtype(257)
    (dtype('uint8'), dtype('uint16'))
    """
    n_codes = int(n_codes)
    if n_codes < 1:
        raise ValueError(f"n_codes must be at least 1, got {n_codes}.")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_codes - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def _is_dask_array(X):
    """Whether ``X`` is a dask array, without importing dask (it is one only if the user
    imported ``dask.array``)."""
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(X, dask_array.Array)


def _n_rows_per_batch(bytes_per_row):
    """Rows per batch so that one batch stays within ``working_memory`` (sklearn config)."""
    return max(1, get_chunk_n_rows(row_bytes=max(1, int(bytes_per_row))))


class BaseQuantizer(TransformerMixin, BaseEstimator):
    """Base class of skvq quantizers: validation, batching, code checks and scoring.

    Not meant to be instantiated. See the module docstring for the hooks a subclass
    implements.
    """

    # Bytes of temporary memory one row of ``X`` costs in ``_encode``/``_decode``; subclasses
    # whose encoder builds a distance table per row override this so batches stay bounded.
    def _bytes_per_row(self):
        return 8 * max(self.n_features_in_, 1) * 4

    def _row_batches(self, n_rows):
        """``slice`` objects covering ``n_rows`` rows in batches of bounded memory: the one
        batching rule of transform, inverse_transform, score and the subclasses' extras."""
        step = _n_rows_per_batch(self._bytes_per_row())
        for start in range(0, n_rows, step):
            yield slice(start, min(start + step, n_rows))

    # -- fit ------------------------------------------------------------------------------
    def _validate_fit_data(self, X, sample_weight=None):
        if _is_dask_array(X):
            # fit on a dask array: a uniform random sample of at most FIT_SAMPLES rows, one
            # pass over the chunks, never the whole array in one process
            from .distributed import FIT_SAMPLES, sample_rows

            if sample_weight is not None:
                raise TypeError("sample_weight is not supported with a dask array X: draw "
                                "the training rows with skvq.distributed.sample_rows and fit "
                                "on them with their weights.")
            X = sample_rows(X, FIT_SAMPLES, random_state=getattr(self, "random_state", None))
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        return X, sample_weight

    # -- transform ------------------------------------------------------------------------
    def transform(self, X):
        """Encode ``X`` into integer codes.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
            Data to encode.

        Returns
        -------
        codes : ndarray or dask array of shape (n_samples, n_code_columns)
            Codes in the smallest unsigned integer dtype that holds them. For a dask array
            ``X``, a dask array with ``X``'s row chunks, built lazily (see
            :mod:`skvq.distributed`).
        """
        check_is_fitted(self)
        if _is_dask_array(X):
            from .distributed import _dask_transform

            return _dask_transform(self, X)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self._transform(X)

    def _transform(self, X):
        """Encode validated ``X`` batch by batch (no validation: for internal callers)."""
        n_samples = X.shape[0]
        codes = np.empty((n_samples, self._n_code_columns()), dtype=self._code_dtype())
        for rows in self._row_batches(n_samples):
            codes[rows] = self._encode(X[rows])
        return codes

    def fit_transform(self, X, y=None, **fit_params):
        """Fit to ``X``, then return its codes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : None
            Ignored.
        **fit_params : dict
            Passed to ``fit`` (for example ``sample_weight``).

        Returns
        -------
        codes : ndarray of shape (n_samples, n_code_columns)
            Codes of the training data.
        """
        self.fit(X, y, **fit_params)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self._transform(X)

    # -- inverse_transform ----------------------------------------------------------------
    def inverse_transform(self, X):
        """Reconstruct data from codes.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_code_columns)
            Integer codes, as returned by ``transform``.

        Returns
        -------
        X_rec : ndarray or dask array of shape (n_samples, n_features)
            Reconstructions, in the floating dtype the quantizer was fitted on. For a dask
            array of codes, a dask array built lazily; the code range is then checked when
            the blocks are computed.
        """
        check_is_fitted(self)
        if _is_dask_array(X):
            from .distributed import _dask_inverse_transform

            return _dask_inverse_transform(self, X)
        codes = self._check_codes(X)
        return self._inverse_transform(codes)

    def _inverse_transform(self, codes):
        n_samples = codes.shape[0]
        out = None
        for rows in self._row_batches(n_samples):
            rec = self._decode(codes[rows].astype(np.intp, copy=False))
            if out is None:
                out = np.empty((n_samples,) + rec.shape[1:], dtype=rec.dtype)
            out[rows] = rec
        if out is None:  # zero rows
            out = self._decode(codes.astype(np.intp))
        return out

    def _check_codes(self, codes):
        """Validate codes: 2-D, integral, the fitted number of columns, within range."""
        if hasattr(codes, "to_numpy"):  # pandas output of set_output
            codes = codes.to_numpy()
        codes = np.asarray(codes)
        if codes.dtype == object or codes.dtype.kind not in "biuf":
            raise TypeError(
                f"codes must be an array of integers, got an array of dtype {codes.dtype}."
            )
        if codes.ndim != 2:
            raise ValueError(
                f"codes must be a 2-D array of shape (n_samples, {self._n_code_columns()}), "
                f"got an array of shape {codes.shape}."
            )
        n_columns = self._n_code_columns()
        if codes.shape[1] != n_columns:
            raise ValueError(
                f"codes have {codes.shape[1]} columns, but {type(self).__name__} was fitted "
                f"with {n_columns} code columns."
            )
        if codes.dtype.kind == "f":
            if not np.all(np.isfinite(codes)) or np.any(codes != np.round(codes)):
                raise ValueError("codes must be whole numbers; got non-integral or non-finite values.")
        if codes.dtype.kind == "b":
            codes = codes.astype(np.uint8)
        if codes.size:
            cardinality = self._code_cardinality()
            low, high = codes.min(), codes.max()
            if low < 0 or high >= cardinality:
                raise ValueError(
                    f"codes out of range: expected integers in [0, {cardinality - 1}], "
                    f"got values in [{low}, {high}]."
                )
        # Cast to intp batch by batch in _inverse_transform: memory stays bounded.
        return codes

    # -- scoring --------------------------------------------------------------------------
    def score(self, X, y=None):
        """Negative mean squared reconstruction error per entry of ``X``.

        Higher is better, so that ``GridSearchCV`` can use it directly; to trade distortion
        against rate (searches over ``alpha`` or the code length), use
        :func:`skvq.metrics.make_rate_distortion_scorer`.

        Parameters
        ----------
        X : array-like or dask array of shape (n_samples, n_features)
            Data to encode and reconstruct. A dask array is scored block by block (its
            blocks are computed).
        y : None
            Ignored.

        Returns
        -------
        score : float
            ``-mean((X - inverse_transform(transform(X))) ** 2)``.
        """
        check_is_fitted(self)
        if _is_dask_array(X):
            from .distributed import _dask_score

            return _dask_score(self, X)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return -self._mse(X)

    def _mse(self, X):
        """Mean squared reconstruction error of validated ``X``, computed batch by batch."""
        if X.size == 0:
            raise ValueError("Cannot score an empty array.")
        total = 0.0
        for rows in self._row_batches(X.shape[0]):
            batch = X[rows]
            rec = self._decode(self._encode(batch).astype(np.intp))
            total += float(np.sum((batch.astype(np.float64) - rec) ** 2))
        return total / X.size

    # -- names and tags -------------------------------------------------------------------
    def get_feature_names_out(self, input_features=None):
        """Names of the code columns: ``"<classname>0"``, ``"<classname>1"``, ...

        Parameters
        ----------
        input_features : array-like of str or None
            Only checked against the names seen in ``fit``.

        Returns
        -------
        feature_names_out : ndarray of str
        """
        from sklearn.utils.validation import _check_feature_names_in

        check_is_fitted(self)
        _check_feature_names_in(self, input_features, generate_names=False)
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self._n_code_columns())], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []
        return tags

    # -- helpers for subclasses -----------------------------------------------------------
    def _code_dtype(self):
        return code_dtype(self._code_cardinality())

    def _n_code_columns(self):
        raise NotImplementedError

    def _code_cardinality(self):
        raise NotImplementedError

    def _encode(self, X):
        raise NotImplementedError

    def _decode(self, codes):
        raise NotImplementedError


def _check_sample_weight(sample_weight, X):
    """Validate ``sample_weight``: finite, non-negative, one per row, not all zero."""
    from sklearn.utils.validation import _check_sample_weight as sk_check

    sample_weight = sk_check(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    if not np.any(sample_weight > 0):
        raise ValueError("sample_weight must have at least one positive entry.")
    return sample_weight


def check_n_values(n_values, n_distinct, name="n_values"):
    """Number of codebook values to use: ``min(n_values, n_distinct)``, with a warning.

    A quantizer asked for more values than the data has distinct values keeps every
    distinct value (a lossless codebook) rather than inventing values or failing.
    """
    import warnings

    if not isinstance(n_values, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(n_values).__name__}.")
    if n_values > n_distinct:
        warnings.warn(
            f"{name}={n_values} is larger than the number of distinct values in the data "
            f"({n_distinct}); the codebook holds those {n_distinct} values.",
            UserWarning,
            stacklevel=5,  # the user's call to fit
        )
        return n_distinct
    return int(n_values)
