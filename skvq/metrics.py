"""Rate and distortion of fitted quantizers, and a rate-distortion scorer for model search.

Every skvq quantizer exposes its rate as ``bits_per_sample_`` (bits per row of ``X``) and its
distortion through ``inverse_transform(transform(X))``. ``GridSearchCV`` with the default
``score`` (negative MSE) always prefers the longest code or the smallest regularisation, so
searches over ``alpha`` or the code length use :func:`make_rate_distortion_scorer`, which
minimises the Lagrangian cost ``D + rate_weight * R`` with ``D`` the MSE relative to the
variance of the data and ``R`` the rate in bits per feature.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "bits_per_sample",
    "make_rate_distortion_scorer",
    "rate_distortion_cost",
    "reconstruction_mse",
]


def reconstruction_mse(quantizer, X):
    """Mean squared reconstruction error per entry of ``X``.

    Parameters
    ----------
    quantizer : fitted skvq quantizer
    X : array-like of shape (n_samples, n_features)

    Returns
    -------
    mse : float
        ``mean((X - quantizer.inverse_transform(quantizer.transform(X))) ** 2)``.
    """
    return -float(quantizer.score(X))


def bits_per_sample(quantizer):
    """Rate of a fitted quantizer in bits per sample (row of ``X``).

    Parameters
    ----------
    quantizer : fitted skvq quantizer

    Returns
    -------
    rate : float
        ``quantizer.bits_per_sample_``.
    """
    check_is_fitted(quantizer, "bits_per_sample_")
    return float(quantizer.bits_per_sample_)


def rate_distortion_cost(quantizer, X, rate_weight=0.01):
    """Lagrangian rate-distortion cost ``D / var(X) + rate_weight * R``.

    Parameters
    ----------
    quantizer : fitted skvq quantizer
    X : array-like of shape (n_samples, n_features)
        Evaluation data.
    rate_weight : float, default=0.01
        Price of one bit per feature, in units of relative MSE. At high rate a scalar
        quantizer's MSE falls by a factor 4 per bit, so the optimum sits where the relative
        MSE is about ``rate_weight / (2 ln 2)`` (0.0072, about 21 dB, at the default).

    Returns
    -------
    cost : float
        Lower is better.
    """
    check_is_fitted(quantizer)
    X = validate_data(quantizer, X, dtype=[np.float64, np.float32], reset=False)
    mse = -float(quantizer.score(X))
    variance = float(np.mean((X - X.mean(axis=0)) ** 2))
    if variance == 0.0:
        variance = 1.0
    bits_per_feature = bits_per_sample(quantizer) / quantizer.n_features_in_
    return mse / variance + rate_weight * bits_per_feature


def make_rate_distortion_scorer(rate_weight=0.01):
    """Scorer for ``GridSearchCV``: minus the rate-distortion cost.

    Parameters
    ----------
    rate_weight : float, default=0.01
        Price of one bit per feature in units of relative MSE
        (see :func:`rate_distortion_cost`).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y=None)``; higher is better. ``estimator`` may be a
        quantizer or a :class:`~sklearn.pipeline.Pipeline` ending in one (the earlier steps
        transform ``X`` first).

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skvq import L0LeastSquareQuantizer
    >>> from skvq.metrics import make_rate_distortion_scorer
    >>> X = load_digits().data
    >>> search = GridSearchCV(L0LeastSquareQuantizer(weighting="count"),
    ...                       {"n_values": [2, 4, 8, 16]},
    ...                       scoring=make_rate_distortion_scorer(0.05)).fit(X)
    >>> search.best_params_
    {'n_values': 4}
    """
    if not rate_weight >= 0:
        raise ValueError(f"rate_weight must be non-negative, got {rate_weight!r}.")

    def rate_distortion_scorer(estimator, X, y=None):
        quantizer = estimator
        if hasattr(estimator, "steps"):  # Pipeline: transform through the earlier steps
            for _, step in estimator.steps[:-1]:
                if step is not None and step != "passthrough":
                    X = step.transform(X)
            quantizer = estimator.steps[-1][1]
        return -rate_distortion_cost(quantizer, X, rate_weight)

    return rate_distortion_scorer
