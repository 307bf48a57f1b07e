"""scikit-learn's common estimator checks over every public estimator."""

import pytest
from sklearn.utils.estimator_checks import (
    check_dataframe_column_names_consistency,
    check_param_validation,
    check_set_output_transform_pandas,
    check_transformer_get_feature_names_out,
    parametrize_with_checks,
)

from _estimators import all_estimators, expected_failed_checks

ESTIMATORS = all_estimators()


def _id(estimator):
    params = estimator.get_params()
    changed = {k: v for k, v in params.items() if v != type(estimator)().get_params()[k]}
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
    check(type(estimator).__name__, estimator)
