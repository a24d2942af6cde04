"""Input checks of the kernel engine and estimator: labels whose squares overflow, and check_estimator
with a small fixed epsilon (the documented exact conditions)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.utils.estimator_checks import check_estimator

from selfdistill.kernel import KernelSelfDistillation, kernel_matrix, self_distill
from selfdistill.kernel.estimator import EXPECTED_FAILED_CHECKS_SMALL_EPSILON


def _points(K=12, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0, 1, K))[:, None]
    return x, np.sin(2 * np.pi * x[:, 0])


@pytest.mark.parametrize("scale", [1e200, 1e160, -3e154])
def test_labels_whose_squares_overflow_are_a_one_line_error_naming_y(scale):
    x, y = _points()
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.sum((scale * y) ** 2))  # the premise: float64 overflows
    gram = kernel_matrix(x, kernel="rbf", gamma=10.0)
    with pytest.raises(ValueError, match=r"^y is too large: .*overflows float64.*rescale the labels") as info:
        self_distill(gram, scale * y, 0.1)
    assert "\n" not in str(info.value)
    for kwargs in ({}, {"epsilon": 0.1}, {"epsilon": 0.1, "epsilon_mode": "relative"}, {"alpha": 1.0}):
        with pytest.raises(ValueError, match=r"^y is too large"):
            KernelSelfDistillation(gamma=10.0, **kwargs).fit(x, scale * y)


def test_large_labels_that_do_not_overflow_still_fit_exactly():
    x, y = _points()
    gram = kernel_matrix(x, kernel="rbf", gamma=10.0)
    big = self_distill(gram, 1e150 * y, 0.1 * 1e300 * np.mean(y**2), n_rounds=2)
    ref = self_distill(gram, y, 0.1 * np.mean(y**2), n_rounds=2)
    np.testing.assert_allclose(big.c, ref.c, rtol=1e-9)  # c is invariant to scaling y and eps together


def _check_results(eps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return check_estimator(
            KernelSelfDistillation(epsilon=eps),
            expected_failed_checks=EXPECTED_FAILED_CHECKS_SMALL_EPSILON,
            on_fail=None,
        )


def test_check_estimator_small_fixed_epsilon_fails_exactly_the_documented_checks():
    results = _check_results(0.01)
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    xfailed = {r["check_name"]: r["exception"] for r in results if r["status"] == "xfail"}
    assert failed == set()
    assert set(xfailed) == set(EXPECTED_FAILED_CHECKS_SMALL_EPSILON)
    for exc in xfailed.values():  # each fails for the documented reason, not another one
        assert isinstance(exc, ValueError) and "infeasible" in str(exc) and "epsilon >" in str(exc)


def test_check_estimator_passes_with_a_fixed_epsilon_above_the_documented_bound():
    results = _check_results(0.2)
    assert {r["status"] for r in results} <= {"passed", "skipped"}


def test_chi2_with_the_default_gamma_is_scikit_learns_chi2_kernel():
    from sklearn.metrics.pairwise import chi2_kernel

    X = np.random.default_rng(0).random((7, 3))
    assert np.allclose(kernel_matrix(X, None, "chi2"), chi2_kernel(X))  # gamma=None: the kernel's default
