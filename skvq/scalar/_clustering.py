"""Clustering-based scalar quantizers: k-means, k-means + least squares (Alg. 3), GMM."""

from numbers import Integral, Real

import numpy as np
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_random_state

from ..base import check_n_values
from ._base import ScalarQuantizer

_KMEANS_PARAMS = {
    "n_values": [Interval(Integral, 1, None, closed="left")],
    "n_init": [Interval(Integral, 1, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0, None, closed="left")],
    "random_state": ["random_state"],
}


class KMeansQuantizer(ScalarQuantizer):
    """Scalar quantization by k-means on the distinct values (the paper's baseline).

    scikit-learn's :class:`~sklearn.cluster.KMeans` (Lloyd, k-means++ initialisation,
    ``n_init`` restarts) on the sorted distinct values of ``X``; the codebook is the set of
    cluster centres.

    Read more in the :ref:`User Guide <scalar>`.

    Parameters
    ----------
    n_values : int, default=8
        Number of clusters (codebook values). Capped, with a ``UserWarning``, at the number of
        distinct values in the data.
    n_init : int, default=10
        Number of k-means restarts; the paper's (and scikit-learn's classic) default of 10.
    max_iter : int, default=300
        Maximum Lloyd iterations per restart.
    tol : float, default=1e-4
        Relative tolerance of k-means' convergence test.
    random_state : int, RandomState instance or None, default=None
        Seeds k-means' initialisation; an int gives the same codebook at every fit.
    weighting : {"unique", "count"}, default="unique"
        ``"unique"``: every distinct value counts once, as in the paper.
        ``"count"``: each value counts with its multiplicity (and ``sample_weight``).
    group_size : int or None, default=None
        ``None``: one codebook for every entry of ``X`` (the paper's setting). An int ``g``:
        one codebook per group of ``g`` consecutive columns (the last group may be smaller),
        each fitted on its group's entries alone; ``1`` gives one codebook per feature, as
        :class:`~sklearn.preprocessing.KBinsDiscretizer` bins each feature (a weight matrix's
        output channels are the columns of its transpose). Groups are fitted one after the
        other (scikit-learn once per group).

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
    n_iter_ : int
        Lloyd iterations of the best restart.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    KMeansLSQuantizer : The same clustering, values refitted by least squares (Alg. 3).
    L0LeastSquareQuantizer : The exact optimum of the same objective.

    Examples
    --------
    >>> import numpy as np
    >>> from skvq import KMeansQuantizer
    >>> X = np.array([[1.0, 1.1, 5.0, 5.2, 9.0, 9.1]])
    >>> KMeansQuantizer(n_values=3, random_state=0).fit(X).codebook_
    array([1.05, 5.1 , 9.05])
    """

    _parameter_constraints = {**ScalarQuantizer._parameter_constraints, **_KMEANS_PARAMS}

    def __init__(self, n_values=8, *, n_init=10, max_iter=300, tol=1e-4, random_state=None,
                 weighting="unique", group_size=None):
        self.n_values = n_values
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.weighting = weighting
        self.group_size = group_size

    def _kmeans(self, values, weights, appearance, n_values):
        """k-means on the distinct values, fed in their order of appearance in ``X``.

        k-means++ depends on the order of its input: in that order, on data without repeated
        values, the clustering is exactly scikit-learn's ``KMeans`` with the same
        ``random_state`` on the entries of ``X``. Returns the labels of the sorted values.
        """
        km = KMeans(n_clusters=n_values, n_init=self.n_init, max_iter=self.max_iter,
                    tol=self.tol, random_state=check_random_state(self.random_state))
        km.fit(values[appearance].reshape(-1, 1),
               sample_weight=None if weights is None else weights[appearance])
        self.n_iter_ = int(km.n_iter_)
        labels = np.empty_like(km.labels_)
        labels[appearance] = km.labels_
        return km.cluster_centers_.ravel(), labels

    def _fit_codebook(self, values, weights, appearance, penalty_scale):
        n_values = check_n_values(self.n_values, values.size)
        return self._kmeans(values, weights, appearance, n_values)[0]


class KMeansLSQuantizer(KMeansQuantizer):
    r"""Scalar quantization by k-means-based least squares (the paper's Alg. 3).

    k-means on the distinct values gives the assignment matrix ``E`` (eq. 18); the values
    are then the least-squares solution of eq. 19, :math:`\min_\alpha \|v - E V^*\alpha\|^2`
    (eq. 20).

    Read more in the :ref:`User Guide <scalar>`.

    Parameters
    ----------
    n_values : int, default=8
        The paper's ``l``: number of clusters (codebook values). Capped, with a
        ``UserWarning``, at the number of distinct values in the data.
    n_init : int, default=10
        Number of k-means restarts.
    max_iter : int, default=300
        Maximum Lloyd iterations per restart.
    tol : float, default=1e-4
        Relative tolerance of k-means' convergence test.
    random_state : int, RandomState instance or None, default=None
        Seeds k-means' initialisation; an int gives the same codebook at every fit.
    weighting : {"unique", "count"}, default="unique"
        ``"unique"``: every distinct value counts once, as in the paper.
        ``"count"``: each value counts with its multiplicity (and ``sample_weight``).
    group_size : int or None, default=None
        ``None``: one codebook for every entry of ``X`` (the paper's setting). An int ``g``:
        one codebook per group of ``g`` consecutive columns (the last group may be smaller),
        each fitted on its group's entries alone; ``1`` gives one codebook per feature, as
        :class:`~sklearn.preprocessing.KBinsDiscretizer` bins each feature (a weight matrix's
        output channels are the columns of its transpose). Groups are fitted one after the
        other (scikit-learn once per group).

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
    n_iter_ : int
        Lloyd iterations of the best restart.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    KMeansQuantizer : The same clustering with k-means' own centres.
    L0LeastSquareQuantizer : The exact optimum of the same objective.

    Notes
    -----
    :math:`E V^*` spans the same space as the cluster indicator vectors whatever the base
    value ``v = mean(w_hat)`` the paper fills :math:`V^*` with, so eq. 20's solution is the
    vector of (weighted) cluster means of the final k-means assignment. It is computed in
    that form, which also works when ``mean(w_hat) = 0`` (centred weights), where the
    paper's literal :math:`\hat V^*` is the zero matrix. k-means' centres are the means of
    the assignment before its last update, so the refit never increases the error.

    Examples
    --------
    >>> import numpy as np
    >>> from skvq import KMeansLSQuantizer
    >>> X = np.array([[1.0, 1.1, 5.0, 5.2, 9.0, 9.1]])
    >>> KMeansLSQuantizer(n_values=3, random_state=0).fit(X).codebook_
    array([1.05, 5.1 , 9.05])
    """

    def _fit_codebook(self, values, weights, appearance, penalty_scale):
        n_values = check_n_values(self.n_values, values.size)
        centers, labels = self._kmeans(values, weights, appearance, n_values)
        w = np.ones_like(values) if weights is None else weights
        n_clusters = centers.size
        sums = np.bincount(labels, weights=w * values, minlength=n_clusters)
        counts = np.bincount(labels, weights=w, minlength=n_clusters)
        return sums[counts > 0] / counts[counts > 0]


class GaussianMixtureQuantizer(ScalarQuantizer):
    """Scalar quantization by a 1-D Gaussian mixture (the paper's baseline).

    A :class:`~sklearn.mixture.GaussianMixture` with ``n_values`` components is fitted to the
    values; the codebook is the set of component means. Entries are coded to the nearest
    mean (the MSE-optimal rule for a fixed codebook), not by posterior probability.

    Read more in the :ref:`User Guide <scalar>`.

    Parameters
    ----------
    n_values : int, default=8
        Number of components (codebook values). Capped, with a ``UserWarning``, at the number
        of distinct values in the data.
    n_init : int, default=1
        Number of EM restarts.
    max_iter : int, default=100
        EM iterations per restart.
    tol : float, default=1e-3
        EM convergence threshold on the lower bound.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation; an int gives the same codebook at every fit.
    weighting : {"unique", "count"}, default="unique"
        ``"unique"``: the mixture is fitted to the distinct values, as the paper does.
        ``"count"``: to every entry (``GaussianMixture`` has no sample weights, so ``fit``
        accepts no ``sample_weight``).
    group_size : int or None, default=None
        ``None``: one codebook for every entry of ``X`` (the paper's setting). An int ``g``:
        one codebook per group of ``g`` consecutive columns (the last group may be smaller),
        each fitted on its group's entries alone; ``1`` gives one codebook per feature, as
        :class:`~sklearn.preprocessing.KBinsDiscretizer` bins each feature (a weight matrix's
        output channels are the columns of its transpose). Groups are fitted one after the
        other (scikit-learn once per group).

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
    n_iter_ : int
        EM iterations of the best restart.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen in ``fit``, when ``X`` has string column names.

    See Also
    --------
    KMeansQuantizer : The k-means baseline.

    Examples
    --------
    >>> import numpy as np
    >>> from skvq import GaussianMixtureQuantizer
    >>> X = np.array([[1.0, 1.1, 5.0, 5.2, 9.0, 9.1]])
    >>> GaussianMixtureQuantizer(n_values=3, random_state=0).fit(X).codebook_.round(2)
    array([1.05, 5.1 , 9.05])
    """

    _parameter_constraints = {
        **ScalarQuantizer._parameter_constraints,
        **_KMEANS_PARAMS,
        "tol": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, n_values=8, *, n_init=1, max_iter=100, tol=1e-3, random_state=None,
                 weighting="unique", group_size=None):
        self.n_values = n_values
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.weighting = weighting
        self.group_size = group_size

    # GaussianMixture has no sample weights: "count" repeats each value by its (integer)
    # multiplicity, so the weights must stay counts.
    _scale_weights = False

    def fit(self, X, y=None, importance=None):
        """Fit the mixture to the entries of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data; its entries are quantized as one set of scalars.
        y : None
            Ignored.
        importance : None
            Not supported: scikit-learn's ``GaussianMixture`` takes no sample weights. Given,
            it raises a ``TypeError`` that names the quantizers that do.

        Returns
        -------
        self : object
            Fitted quantizer.
        """
        if importance is not None:
            raise TypeError(
                "GaussianMixtureQuantizer cannot weight entries by importance (scikit-learn's "
                "GaussianMixture takes no sample weights); use L0LeastSquareQuantizer, "
                "KMeansLSQuantizer or KMeansQuantizer.")
        return super().fit(X, y)

    def _fit_codebook(self, values, weights, appearance, penalty_scale):
        n_values = check_n_values(self.n_values, values.size)
        values, weights = values[appearance], None if weights is None else weights[appearance]
        data = values if weights is None else np.repeat(values, weights.astype(np.int64))
        gmm = GaussianMixture(n_components=n_values, n_init=self.n_init,
                              max_iter=self.max_iter, tol=self.tol,
                              random_state=check_random_state(self.random_state))
        gmm.fit(data.reshape(-1, 1))
        self.n_iter_ = int(gmm.n_iter_)
        return gmm.means_.ravel()
