"""Every public estimator, in the configurations the common tests run (one table).

:data:`CONFIGURATIONS` has one row per public estimator class (the classes of
:func:`skvq._registry.estimator_names`, neural ones included): the configurations the common
tests (``test_common.py``, ``test_contract.py``) run. ``test_contract.py`` fails when a
registered estimator has no row, so that a new quantizer cannot skip the contract.

The neural rows are small and fast (hidden layers of 8 units, one or two epochs, small
batches): the common checks fit them dozens of times. Their classes are imported only when
torch and skorch are installed; without them :func:`all_estimators` leaves them out and
:func:`unavailable_estimators` names them, for a test that says they were skipped.
"""

from skvq import (
    OPQ,
    PQ,
    GaussianMixtureQuantizer,
    KMeansLSQuantizer,
    KMeansQuantizer,
    L0LeastSquareQuantizer,
    L1LeastSquareQuantizer,
)
from skvq._registry import estimator_names, public_estimators


def _deepvq():
    from skvq.neural import DeepVQ

    # the second: an untied decoder, decoder fine-tuning, and codes wider than a byte
    return [DeepVQ(n_bits=4, hidden_sizes=(8,), max_epochs=2, b_iter=3, batch_size=16),
            DeepVQ(n_bits=9, hidden_sizes=(8,), tied_weights=False, decoder_hidden=(12,),
                   max_epochs=2, b_iter=2, finetune_epochs=1, batch_size=16)]


def _dcn(name):
    def configurations():
        import skvq.neural

        cls = getattr(skvq.neural, name)
        return [cls(n_bits=2, hidden_sizes=(8,), latent_dim=2, pretrain_epochs=1, max_epochs=1,
                    kmeans_iter=5, batch_size=16)]
    return configurations


_TINY_AUTOENCODER = dict(codebook_size=4, latent_dim=2, n_latents=2, hidden_size=8,
                         max_epochs=1, batch_size=16)


def _scq():
    from skvq.neural import SCQ

    return [SCQ(**_TINY_AUTOENCODER)]


def _vq_autoencoder():
    from skvq.neural import VQAutoencoder

    # one code per latent position, and the residual VQ's stage codes side by side
    return [VQAutoencoder("vq_replace", **_TINY_AUTOENCODER),
            VQAutoencoder("rvq", **_TINY_AUTOENCODER)]


# {class name: () -> list of configured instances}
CONFIGURATIONS = {
    "L1LeastSquareQuantizer": lambda: [
        L1LeastSquareQuantizer(),
        L1LeastSquareQuantizer(n_values=3),
        L1LeastSquareQuantizer(solver="cd", alpha=0.1),
        L1LeastSquareQuantizer(negative_l2=1e-3, refit=False),
        L1LeastSquareQuantizer(weighting="count"),
        L1LeastSquareQuantizer(n_values=3, group_size=2),
    ],
    "L0LeastSquareQuantizer": lambda: [
        L0LeastSquareQuantizer(),
        L0LeastSquareQuantizer(weighting="count"),
        L0LeastSquareQuantizer(n_values=3, weighting="count", group_size=1),
        L0LeastSquareQuantizer(n_values=3, group_size=2),
    ],
    "KMeansLSQuantizer": lambda: [
        KMeansLSQuantizer(n_values=3, n_init=1, group_size=3),
        KMeansLSQuantizer(n_init=2),
        KMeansLSQuantizer(n_init=2, weighting="count"),
    ],
    "KMeansQuantizer": lambda: [KMeansQuantizer(n_init=2)],
    "GaussianMixtureQuantizer": lambda: [GaussianMixtureQuantizer()],
    "PQ": lambda: [PQ(n_subspaces=2, n_bits=2), PQ(n_subspaces=1, n_bits=3, init="random")],
    "OPQ": lambda: [OPQ(n_subspaces=2, n_bits=2, n_iter=3)],
    "DeepVQ": _deepvq,
    "DCN": _dcn("DCN"),
    "MDCN": _dcn("MDCN"),
    "SCQ": _scq,
    "VQAutoencoder": _vq_autoencoder,
}

NEURAL = frozenset(estimator_names(neural=True))


def all_estimators():
    """Instances covering every available public estimator (in registry order) and every
    solver that runs without extras."""
    return [est for cls in public_estimators() for est in CONFIGURATIONS[cls.__name__]()]


def unavailable_estimators():
    """Class names of the registered estimators whose dependencies are missing."""
    available = {cls.__name__ for cls in public_estimators()}
    return [name for name in estimator_names() if name not in available]


def scalar_estimators():
    """The scalar quantizers (one code per entry of X)."""
    return [e for e in all_estimators() if hasattr(e, "weighting")]


def is_neural(estimator):
    return type(estimator).__name__ in NEURAL


# Expected failures of scikit-learn's common checks: {estimator class name: {check: reason}}.
# Add an entry only with the reason the estimator cannot pass.
_KMEANS_ORDER = (
    "k-means++ depends on the order of its input, which skvq keeps as the user gave it (so "
    "that the clustering equals scikit-learn's KMeans with the same random_state); the check "
    "reorders rows when it repeats them. scikit-learn's KMeans is an expected failure of this "
    "check for the same reason."
)
EXPECTED_FAILED_CHECKS = {
    "KMeansQuantizer": {"check_sample_weight_equivalence_on_dense_data": _KMEANS_ORDER},
    "KMeansLSQuantizer": {"check_sample_weight_equivalence_on_dense_data": _KMEANS_ORDER},
}


def expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})
