"""scikit-learn's common estimator checks over every public estimator (tests/_estimators.py),
neural ones included, and the checks that check_estimator does not run by itself."""

import pytest
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    check_param_validation,
    check_set_output_transform_pandas,
    check_transformer_get_feature_names_out,
    parametrize_with_checks,
)

from _estimators import all_estimators, expected_failed_checks, unavailable_estimators

ESTIMATORS = all_estimators()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _id(estimator):
    params = estimator.get_params()
    default = type(estimator)().get_params()
    changed = {k: v for k, v in params.items() if v != default[k]}
    return f"{type(estimator).__name__}({', '.join(f'{k}={v}' for k, v in changed.items())})"


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# Checks that check_estimator does not run by itself.
EXTRA_CHECKS = [
    check_param_validation,
    check_set_output_transform_pandas,
    check_transformer_get_feature_names_out,
    check_dataframe_column_names_consistency,
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=_id)
@pytest.mark.parametrize("check", EXTRA_CHECKS, ids=lambda c: c.__name__)
def test_extra_checks(estimator, check):
    pytest.importorskip("pandas")
    reason = expected_failed_checks(estimator).get(check.__name__)
    if reason:
        pytest.xfail(reason)
    check(type(estimator).__name__, estimator)


@pytest.mark.parametrize("name", unavailable_estimators() or [None])
def test_unavailable_estimators_are_skipped(name):
    """Without torch and skorch the neural estimators are not checked: say so."""
    if name is None:
        return  # every registered estimator is available and checked above
    pytest.skip(f"{name}: its optional dependencies (torch and skorch for the neural "
                "quantizers) are not installed")
