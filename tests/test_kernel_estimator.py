"""KernelSelfDistillation: the scikit-learn API on top of the engine (selfdistill.kernel.estimator)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import r2_score
from sklearn.utils.estimator_checks import check_estimator

from selfdistill.kernel import KernelSelfDistillation, kernel_matrix, self_distill, spline_green
from selfdistill.kernel.estimator import EXPECTED_FAILED_CHECKS_PRECOMPUTED, CollapseWarning

PAPER_LABELS = np.array([
    0.38476636465198066, 1.2333967683416893, 1.33232242218057, 0.6920159488889518, -0.29756145531871736,
    -0.24189291901377769, -0.7964485769175675, -0.9616480167034174, -0.49672509509916934,
    -0.3469066003991437, 0.5589512650600734,
])  # fmt: skip


def _data(K=25, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(K, 2))
    y = np.sin(3 * X[:, 0]) + 0.1 * rng.normal(size=K)
    X_test = rng.uniform(-1, 1, size=(10, 2))
    return X, y, X_test


def test_documented_precomputed_usage_on_the_paper_example():
    x = np.linspace(0, 1, 11)
    Kxx = spline_green(x[:, None], x[None, :])
    xt = np.linspace(0, 1, 1001)
    Ktx = spline_green(xt[:, None], x[None, :])
    est = KernelSelfDistillation(kernel="precomputed", epsilon=0.05, n_rounds=None)
    est.fit(Kxx, PAPER_LABELS)
    assert isinstance(est.c_, np.ndarray) and est.c_.shape == (4,) and est.n_rounds_ == 4
    # c in the paper's convention: the fitted round-0 residual (1/K)||G (cI+G)^{-1} y - y||^2 equals eps
    G = Kxx / 11
    pred0 = G @ np.linalg.solve(est.c_[0] * np.eye(11) + G, PAPER_LABELS)
    assert np.isclose(np.mean((pred0 - PAPER_LABELS) ** 2), 0.05, rtol=1e-9)
    staged = list(est.staged_predict(Ktx))
    assert len(staged) == 4 and all(p.shape == (1001,) for p in staged)
    np.testing.assert_allclose(staged[0], est.predict(Ktx, round=0))
    np.testing.assert_allclose(staged[-1], est.predict(Ktx))
    mse = [np.mean((p - np.sin(2 * np.pi * xt)) ** 2) for p in staged]
    np.testing.assert_allclose(mse, [0.138, 0.067, 0.159, 0.387], atol=1.5e-3)
    assert est.result_.status == "collapsed"


def test_named_kernel_equals_precomputed_and_engine():
    X, y, X_test = _data()
    est = KernelSelfDistillation(kernel="rbf", gamma=0.7, epsilon=0.05, n_rounds=3).fit(X, y)
    Kxx, Ktx = kernel_matrix(X, kernel="rbf", gamma=0.7), kernel_matrix(X_test, X, kernel="rbf", gamma=0.7)
    pre = KernelSelfDistillation(kernel="precomputed", epsilon=0.05, n_rounds=3).fit(Kxx, y)
    np.testing.assert_allclose(est.c_, pre.c_, rtol=1e-12)
    np.testing.assert_allclose(est.predict(X_test), pre.predict(Ktx), rtol=1e-10, atol=1e-12)
    engine = self_distill(Kxx, y, 0.05, n_rounds=3)
    np.testing.assert_allclose(est.c_, engine.c, rtol=1e-12)
    assert est.score(X_test, np.sin(3 * X_test[:, 0])) == pytest.approx(
        r2_score(np.sin(3 * X_test[:, 0]), est.predict(X_test))
    )


def test_kernel_params_are_used():
    X, y, X_test = _data()
    for kernel, params in [
        ("polynomial", dict(degree=4, coef0=0.5, gamma=0.3)),
        ("laplacian", dict(gamma=2.0)),
    ]:
        est = KernelSelfDistillation(kernel=kernel, epsilon=0.1, n_rounds=2, **params).fit(X, y)
        ref = self_distill(kernel_matrix(X, kernel=kernel, **params), y, 0.1, n_rounds=2)
        np.testing.assert_allclose(est.c_, ref.c, rtol=1e-12)

    def my_kernel(a, b, scale=1.0):
        return float(np.exp(-scale * np.sum(np.abs(a - b))))

    est = KernelSelfDistillation(kernel=my_kernel, kernel_params={"scale": 2.0}, epsilon=0.05, n_rounds=2)
    est.fit(X, y)
    ref = KernelSelfDistillation(kernel="laplacian", gamma=2.0, epsilon=0.05, n_rounds=2).fit(X, y)
    np.testing.assert_allclose(est.predict(X_test), ref.predict(X_test), rtol=1e-10)


def test_relative_epsilon_and_default():
    X, y, _ = _data()
    rel = KernelSelfDistillation(epsilon=0.2, epsilon_mode="relative", n_rounds=2).fit(X, y)
    assert rel.epsilon_ == pytest.approx(0.2 * np.mean(y**2))
    np.testing.assert_allclose(rel.result_.fit_residual, 0.2 * np.mean(y**2), rtol=1e-9)
    default = KernelSelfDistillation().fit(X, y)  # epsilon=None: 10% of mean(y^2), until collapse
    assert default.epsilon_ == pytest.approx(0.1 * np.mean(y**2))
    assert default.result_.status == "collapsed" and default.n_rounds_ >= 1


def test_fixed_c_mode_matches_kernel_ridge():
    X, y, X_test = _data()
    est = KernelSelfDistillation(kernel="rbf", gamma=0.5, alpha=0.2, n_rounds=3).fit(X, y)
    labels = y
    for t in range(3):
        ridge = KernelRidge(alpha=0.2, kernel="rbf", gamma=0.5).fit(X, labels)
        np.testing.assert_allclose(est.predict(X_test, round=t), ridge.predict(X_test), rtol=1e-8, atol=1e-10)
        labels = ridge.predict(X)


def test_multi_output_shared_and_per_output():
    X, y, X_test = _data()
    Y = np.column_stack([y, np.cos(2 * X[:, 1])])
    shared = KernelSelfDistillation(epsilon=0.05, n_rounds=2).fit(X, Y)
    assert shared.c_.shape == (2,) and shared.predict(X_test).shape == (10, 2)
    per = KernelSelfDistillation(epsilon=0.05, n_rounds=2, per_output_c=True).fit(X, Y)
    assert per.c_.shape == (2, 2)
    for j in range(2):
        single = KernelSelfDistillation(epsilon=0.05, n_rounds=2).fit(X, Y[:, j])
        np.testing.assert_allclose(per.c_[:, j], single.c_, rtol=1e-12)
        np.testing.assert_allclose(per.predict(X_test)[:, j], single.predict(X_test), rtol=1e-10, atol=1e-12)


def test_collapse_at_round_zero_warns_and_predicts_zero():
    X, y, X_test = _data()
    est = KernelSelfDistillation(epsilon=10.0)
    with pytest.warns(CollapseWarning, match="smaller epsilon"):
        est.fit(X, y)
    assert est.n_rounds_ == 0 and est.c_.shape == (0,)
    np.testing.assert_array_equal(est.predict(X_test), 0.0)
    assert [p.shape for p in est.staged_predict(X_test)] == [(10,)]


def test_infeasible_spline_raises_with_the_smallest_feasible_epsilon():
    x = np.linspace(0, 1, 11)[:, None]
    with pytest.raises(ValueError, match=r"epsilon > 0\.0418"):
        KernelSelfDistillation(kernel="spline", epsilon=0.03).fit(x, PAPER_LABELS)
    est = KernelSelfDistillation(kernel="spline", epsilon=0.05).fit(x, PAPER_LABELS)
    assert est.n_rounds_ == 4


def test_bad_input_errors_name_the_parameter():
    X, y, X_test = _data()
    for eps in (0.0, -0.1, np.inf):
        with pytest.raises(ValueError, match="epsilon"):
            KernelSelfDistillation(epsilon=eps).fit(X, y)
    with pytest.raises(ValueError, match="epsilon_mode"):
        KernelSelfDistillation(epsilon=0.1, epsilon_mode="percent").fit(X, y)
    with pytest.raises(ValueError, match="kernel='nope' is unknown"):
        KernelSelfDistillation(kernel="nope").fit(X, y)
    with pytest.raises(ValueError, match="precomputed"):
        KernelSelfDistillation(kernel="precomputed").fit(X, y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        KernelSelfDistillation().fit(X, y[:-1])
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        KernelSelfDistillation().fit(X_nan, y)
    with pytest.raises(ValueError, match="spline"):
        KernelSelfDistillation(kernel="spline").fit(X, y)  # 2 features
    with pytest.raises(ValueError, match=r"rescale the inputs to \[0, 1\]"):
        KernelSelfDistillation(kernel="spline").fit(X[:, :1] + 2, y)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        KernelSelfDistillation(kernel="precomputed").fit(kernel_matrix(X) - np.eye(len(X)), y)
    asym = kernel_matrix(X)
    asym[0, 1] += 0.01
    with pytest.raises(ValueError, match="not symmetric"):
        KernelSelfDistillation(kernel="precomputed").fit(asym, y)
    est = KernelSelfDistillation(epsilon=0.05, n_rounds=2).fit(X, y)
    with pytest.raises(ValueError, match=r"round=5 out of range: this chain fitted rounds 0\.\.1"):
        est.predict(X_test, round=5)
    with pytest.raises(ValueError, match="features"):
        est.predict(X_test[:, :1])


CHECK_WARNINGS = [
    "ignore::sklearn.exceptions.SkipTestWarning",  # pandas / array-API checks not installed here
    "ignore:stopped after max_rounds:RuntimeWarning",  # check_regressors_train sets alpha=0.01 (fixed c)
]


@pytest.mark.filterwarnings(*CHECK_WARNINGS)
def test_check_estimator_default():
    check_estimator(KernelSelfDistillation())


@pytest.mark.filterwarnings(*CHECK_WARNINGS)
def test_check_estimator_precomputed_with_documented_expected_failures():
    results = check_estimator(
        KernelSelfDistillation(kernel="precomputed"),
        expected_failed_checks=EXPECTED_FAILED_CHECKS_PRECOMPUTED,
        on_fail=None,
    )
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert not failed
    xfailed = {r["check_name"] for r in results if r["status"] == "xfail"}
    assert xfailed == set(EXPECTED_FAILED_CHECKS_PRECOMPUTED)


# ---- review fixes ----------------------------------------------------------------------------------------


def test_nan_inf_and_length_errors_are_one_line_and_name_the_array():
    X, y, X_test = _data()
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"^X contains 1 NaN or infinite value\(s\) \(rows 3") as info:
        KernelSelfDistillation().fit(X_nan, y)
    assert "\n" not in str(info.value)
    y_inf = y.copy()
    y_inf[[2, 7]] = np.inf
    with pytest.raises(ValueError, match=r"^y contains 2 NaN or infinite value\(s\) \(rows 2, 7"):
        KernelSelfDistillation().fit(X, y_inf)
    with pytest.raises(ValueError, match="X has 25 rows but y has 24"):
        KernelSelfDistillation().fit(X, y[:-1])
    est = KernelSelfDistillation(epsilon=0.05, n_rounds=2).fit(X, y)
    X_test = X_test.copy()
    X_test[0, 0] = -np.inf
    with pytest.raises(ValueError, match=r"^X contains 1 NaN") as info:
        est.predict(X_test)
    assert "\n" not in str(info.value)


def test_precomputed_predict_shape_error_explains_the_test_matrix():
    x = np.linspace(0, 1, 11)
    est = KernelSelfDistillation(kernel="precomputed", epsilon=0.05).fit(
        spline_green(x[:, None], x[None, :]), PAPER_LABELS
    )
    with pytest.raises(ValueError, match=r"raw test-by-train matrix .* shape \(n_test, 11\)"):
        est.predict(spline_green(x[:, None], x[None, :5]))


def test_gamma_must_be_positive_for_distance_kernels():
    X, y, _ = _data()
    for kernel in ("rbf", "laplacian"):
        with pytest.raises(ValueError, match=f"gamma=-1.0 must be > 0 for kernel='{kernel}'"):
            KernelSelfDistillation(kernel=kernel, gamma=-1.0).fit(X, y)


def test_fixed_c_with_n_rounds_and_no_epsilon_fits_exactly_n_rounds():
    """alpha + n_rounds, epsilon=None: n_rounds plain KernelRidge refits; the default epsilon must not stop
    the chain early (here it would: alpha is large, the labels shrink below 10% of mean(y^2) at round 1)."""
    x = np.linspace(0.05, 0.95, 15)[:, None]
    y = np.sin(2 * np.pi * x[:, 0])
    est = KernelSelfDistillation(kernel="spline", alpha=0.5, n_rounds=3).fit(x, y)
    assert est.n_rounds_ == 3 and est.epsilon_ is None and est.result_.status == "completed"
    gram = spline_green(x, x.T)
    labels = y
    for t in range(3):
        ridge = KernelRidge(alpha=0.5, kernel="precomputed").fit(gram, labels)
        np.testing.assert_allclose(est.predict(x, round=t), ridge.predict(gram), rtol=1e-8, atol=1e-12)
        labels = ridge.predict(gram)
