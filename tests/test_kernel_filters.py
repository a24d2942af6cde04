"""Spectral filters over one Spectrum, each against its naive iteration: KernelRidge (sklearn), boosting
refits, actual gradient descent on the parameters, an ODE solver for the flow, an SVD truncation for the
cut-off; GCV against its definition from the explicit hat matrix, the LOO shortcut against refits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from sklearn.kernel_ridge import KernelRidge
from sklearn.utils.estimator_checks import check_estimator

from selfdistill.kernel import KernelSelfDistillation, Spectrum, kernel_matrix, self_distill
from selfdistill.kernel.filter_estimators import (
    KernelBoosting,
    KernelGradientDescent,
    KernelGradientFlow,
    SpectralCutoff,
    SpectralRidge,
)
from selfdistill.kernel.filters import (
    FilterPath,
    boosting_path,
    cutoff_path,
    geometric_steps,
    gradient_descent_path,
    gradient_flow_path,
    ridge_path,
    self_distillation_path,
)


def _rbf_problem(K=30, m=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(K, 2))
    y = np.sin(3 * X[:, 0]) + 0.3 * rng.normal(size=K)
    if m:
        y = np.column_stack([y, np.cos(2 * X[:, 1]) + 0.3 * rng.normal(size=K)])
    X_test = rng.uniform(-1, 1, size=(11, 2))
    return (
        X,
        y,
        X_test,
        kernel_matrix(X, kernel="rbf", gamma=2.0),
        kernel_matrix(X_test, X, kernel="rbf", gamma=2.0),
    )


def _linear_problem(K=25, p=4, seed=1):
    """A linear kernel Kxx = X X^T: every method is a method on the parameters theta of f(x) = x . theta."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(K, p))
    y = X @ rng.normal(size=p) + 0.5 * rng.normal(size=K)
    X_test = rng.normal(size=(7, p))
    return X, y, X_test


@pytest.mark.parametrize("m", [None, 2])
def test_ridge_path_equals_sklearn_kernel_ridge_and_its_hat_matrix(m):
    X, y, X_test, gram, gram_test = _rbf_problem(m=m)
    alphas = [1e-3, 0.1, 3.0]
    path = ridge_path(gram, y, alphas)
    for s, alpha in enumerate(alphas):
        model = KernelRidge(alpha=alpha, kernel="precomputed").fit(gram, y)
        np.testing.assert_allclose(path.predict(gram_test, step=s), model.predict(gram_test), atol=1e-10)
        np.testing.assert_allclose(path.train_predictions[s], model.predict(gram), atol=1e-10)
        hat = gram @ np.linalg.inv(gram + alpha * np.eye(len(y)))
        assert path.dof[s] == pytest.approx(np.trace(hat), rel=1e-10)
        resid = y - hat @ y
        gcv = np.sum(resid**2) / len(y) / (1 - np.trace(hat) / len(y)) ** 2
        assert path.gcv[s] == pytest.approx(gcv, rel=1e-9)
        np.testing.assert_allclose(
            np.reshape(path.leverages(s), (len(y), -1))[:, 0], np.diag(hat), atol=1e-12
        )
    all_steps = path.test_predictions(gram_test)
    np.testing.assert_allclose(all_steps, np.array(list(path.staged_predict(gram_test))))


def test_loo_shortcut_of_ridge_equals_brute_force_refits():
    X, y, X_test, gram, _ = _rbf_problem(K=20)
    alpha = 0.05
    path = ridge_path(gram, y, [alpha])
    brute = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        model = KernelRidge(alpha=alpha, kernel="precomputed").fit(gram[np.ix_(keep, keep)], y[keep])
        brute.append(y[i] - model.predict(gram[i : i + 1, keep])[0])
    np.testing.assert_allclose(path.loo_residuals(0), brute, rtol=1e-8, atol=1e-10)


def test_gcv_equals_brute_force_leave_one_out_for_a_circulant_kernel():
    """Equispaced points on a circle with a shift-invariant kernel: the hat matrix is circulant, its diagonal
    constant, so GCV is EXACTLY leave-one-out; checked against K actual KernelRidge refits."""
    K = 16
    theta = 2 * np.pi * np.arange(K) / K
    gram = np.exp(2.0 * np.cos(theta[:, None] - theta[None, :]))  # von Mises kernel (positive definite)
    rng = np.random.default_rng(4)
    y = np.sin(theta) + 0.4 * rng.normal(size=K)
    alphas = [0.01, 0.3, 10.0]
    path = ridge_path(gram, y, alphas)
    for s, alpha in enumerate(alphas):
        loo = []
        for i in range(K):
            keep = np.arange(K) != i
            model = KernelRidge(alpha=alpha, kernel="precomputed").fit(gram[np.ix_(keep, keep)], y[keep])
            loo.append((y[i] - model.predict(gram[i : i + 1, keep])[0]) ** 2)
        assert path.gcv[s] == pytest.approx(np.mean(loo), rel=1e-8)


def test_boosting_path_equals_actual_residual_refits_with_kernel_ridge():
    X, y, X_test, gram, gram_test = _rbf_problem(m=2)
    alpha = 2.0
    path = boosting_path(gram, y, alpha, n_steps=6)
    f_train, f_test = np.zeros_like(y), np.zeros((len(X_test),) + y.shape[1:])
    for s in range(6):
        model = KernelRidge(alpha=alpha, kernel="precomputed").fit(gram, y - f_train)
        f_train, f_test = f_train + model.predict(gram), f_test + model.predict(gram_test)
        np.testing.assert_allclose(path.train_predictions[s], f_train, atol=1e-10)
        np.testing.assert_allclose(path.predict(gram_test, step=s), f_test, atol=1e-10)
    # iterated Tikhonov: one alpha per fit
    alphas = [5.0, 1.0, 0.2]
    varied = boosting_path(gram, y, alphas)
    f_test = np.zeros_like(f_test)
    f_train = np.zeros_like(y)
    for a in alphas:
        model = KernelRidge(alpha=a, kernel="precomputed").fit(gram, y - f_train)
        f_train, f_test = f_train + model.predict(gram), f_test + model.predict(gram_test)
    np.testing.assert_allclose(varied.predict(gram_test), f_test, atol=1e-10)


def test_gradient_descent_path_equals_actual_gradient_descent_on_the_parameters():
    X, y, X_test = _linear_problem()
    K = len(y)
    gram, gram_test = X @ X.T, X_test @ X.T
    eta = 0.7 / np.linalg.eigvalsh(gram / K)[-1]
    steps = [1, 2, 5, 17, 60]
    path = gradient_descent_path(gram, y, steps, step_size=eta)
    theta = np.zeros(X.shape[1])
    for t in range(1, 61):
        theta -= eta * X.T @ (X @ theta - y) / K  # gradient of (1/2K) ||X theta - y||^2
        if t in steps:
            s = steps.index(t)
            np.testing.assert_allclose(path.predict(gram_test, step=s), X_test @ theta, atol=1e-10)
            np.testing.assert_allclose(path.train_predictions[s], X @ theta, atol=1e-10)


def test_gradient_descent_on_rbf_kernel_equals_the_functional_iteration_and_the_step_size_is_checked():
    X, y, X_test, gram, gram_test = _rbf_problem()
    K = len(y)
    path = gradient_descent_path(gram, y, [3, 40])  # default eta = 1 / d_max
    eta = 1 / np.linalg.eigvalsh(gram / K)[-1]
    w = np.zeros(K)
    for _ in range(40):
        w += eta * (y - gram @ w) / K  # f = sum_k w_k g(., x_k); RKHS gradient step
    np.testing.assert_allclose(path.predict(gram_test, step=1), gram_test @ w, atol=1e-9)
    assert path.info["step_size"] == pytest.approx(eta)
    with pytest.raises(ValueError, match="step_size"):
        gradient_descent_path(gram, y, [3], step_size=2.5 * eta)
    # eta d in (1, 2): the oscillating branch of (1 - eta d)^t
    over = gradient_descent_path(gram, y, [7], step_size=1.6 * eta)
    w = np.zeros(K)
    for _ in range(7):
        w += 1.6 * eta * (y - gram @ w) / K
    np.testing.assert_allclose(over.predict(gram_test), gram_test @ w, atol=1e-9)


def test_gradient_flow_path_equals_an_ode_solver_on_the_parameters():
    X, y, X_test = _linear_problem()
    K = len(y)
    times = [0.3, 2.0, 9.0]
    path = gradient_flow_path(X @ X.T, y, times)
    sol = solve_ivp(
        lambda _, th: X.T @ (y - X @ th) / K,
        (0, 9.0),
        np.zeros(X.shape[1]),
        t_eval=times,
        rtol=1e-12,
        atol=1e-12,
    )
    for s in range(3):
        np.testing.assert_allclose(path.predict(X_test @ X.T, step=s), X_test @ sol.y[:, s], atol=1e-8)


def test_cutoff_path_equals_least_squares_on_the_leading_singular_directions():
    X, y, X_test, gram, gram_test = _rbf_problem()
    path = cutoff_path(gram, y, [1, 4, 10])
    U, sing, _ = np.linalg.svd(gram)
    for s, n in enumerate([1, 4, 10]):
        truncated_pinv = U[:, :n] @ np.diag(1 / sing[:n]) @ U[:, :n].T
        np.testing.assert_allclose(path.predict(gram_test, step=s), gram_test @ truncated_pinv @ y, atol=1e-8)
        assert path.dof[s] == n
    full = cutoff_path(gram, y)
    assert full.n_steps == np.count_nonzero(Spectrum.from_gram(gram).eigenvalues > 0)


def test_self_distillation_path_is_the_chain():
    X, y, X_test, gram, gram_test = _rbf_problem(m=2)
    chain = self_distill(gram, y, 0.05, per_output_c=True, n_rounds=3)
    path = FilterPath.from_chain(chain)
    assert path.filters.shape == (3, len(y), 2)
    for t in range(3):
        np.testing.assert_allclose(
            path.predict(gram_test, step=t), chain.predict(gram_test, round=t), atol=1e-10
        )
    np.testing.assert_allclose(path.dof, chain.effective_basis)
    np.testing.assert_allclose(path.train_mse, chain.train_mse, rtol=1e-10)
    mixed = self_distillation_path(gram, y[:, 0], alpha=0.2, xi=0.5, n_rounds=3)
    np.testing.assert_allclose(mixed.train_predictions, mixed.info["chain"].train_predictions, atol=1e-12)


def test_path_reports_print_save_plot(tmp_path):
    _, y, _, gram, _ = _rbf_problem()
    path = gradient_descent_path(gram, y, geometric_steps(500, 10))
    text = str(path)
    assert "gradient_descent" in text and "GCV" in text and len(text.splitlines()) == path.n_steps + 2
    rows = path.to_csv(tmp_path / "gd.csv").read_text().splitlines()
    assert rows[0] == "step,steps,dof,train_mse,gcv" and len(rows) == path.n_steps + 1
    assert path.plot_filters().axes and path.plot_dof().axes
    assert np.all(np.diff(path.dof) > 0) and np.all(np.diff(path.train_mse) < 0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda g, y: ridge_path(g, y, [0.1, -1]), "alphas"),
        (lambda g, y: boosting_path(g, y, 1.0), "n_steps"),
        (lambda g, y: gradient_descent_path(g, y, [1.5]), "steps"),
        (lambda g, y: gradient_flow_path(g, y, [np.inf]), "times"),
        (lambda g, y: cutoff_path(g, y, [0]), "n_components"),
        (lambda g, y: ridge_path(g, y[:-1], [1.0]), "y must have shape"),
    ],
)
def test_bad_path_arguments_name_the_parameter(bad, match):
    _, y, _, gram, _ = _rbf_problem()
    with pytest.raises(ValueError, match=match):
        bad(gram, y)


ESTIMATORS = [
    (SpectralRidge, dict(alpha=0.1), lambda g, y: ridge_path(g, y, [0.1])),
    (KernelBoosting, dict(alpha=1.0, n_steps=4), lambda g, y: boosting_path(g, y, 1.0, 4)),
    (KernelGradientDescent, dict(n_steps=30), lambda g, y: gradient_descent_path(g, y, [30])),
    (KernelGradientFlow, dict(time=50.0), lambda g, y: gradient_flow_path(g, y, [50.0])),
    (SpectralCutoff, dict(n_components=6), lambda g, y: cutoff_path(g, y, [6])),
]


@pytest.mark.parametrize("cls, params, path_fn", ESTIMATORS)
def test_estimators_equal_their_paths_and_choose_a_step(cls, params, path_fn):
    X, y, X_test, gram, gram_test = _rbf_problem(K=40)
    est = cls(kernel="rbf", gamma=2.0, **params).fit(X, y)
    np.testing.assert_allclose(est.predict(X_test), path_fn(gram, y).predict(gram_test), atol=1e-10)
    assert est.selection_ is None
    name = next(iter(params))
    for selection in ("gcv", "kfold"):
        auto = cls(kernel="rbf", gamma=2.0, selection=selection, random_state=0, n_folds=4)
        auto.set_params(**({name: "auto"} if cls is not KernelBoosting else {"max_steps": 20}))
        auto.fit(X, y)
        assert auto.selection_.criterion == selection and auto.step_ == auto.selection_.chosen
        np.testing.assert_allclose(
            auto.predict(X_test), auto.path_.predict(gram_test, auto.step_), atol=1e-12
        )
        pre = clone_precomputed = cls(kernel="precomputed", selection=selection, random_state=0, n_folds=4)
        clone_precomputed.set_params(**({name: "auto"} if cls is not KernelBoosting else {"max_steps": 20}))
        pre.fit(gram, y)
        assert pre.step_ == auto.step_
        np.testing.assert_allclose(pre.selection_.scores, auto.selection_.scores, rtol=1e-8)


@pytest.mark.parametrize("cls", [SpectralRidge, KernelGradientDescent])
def test_filter_estimators_pass_sklearn_check_estimator(cls):
    check_estimator(cls())


def test_estimators_share_one_kernel_and_self_distillation_equals_its_path():
    X, y, X_test, gram, gram_test = _rbf_problem()
    sd = KernelSelfDistillation(gamma=2.0, epsilon=0.05, n_rounds=3).fit(X, y)
    path = self_distillation_path(gram, y, 0.05, n_rounds=3)
    np.testing.assert_allclose(sd.predict(X_test), path.predict(gram_test), atol=1e-10)


def test_boosting_on_a_grid_of_fit_counts_equals_the_cumulative_path():
    _, y, X_test, gram, gram_test = _rbf_problem()
    cumulative = boosting_path(gram, y, 3.0, n_steps=50)
    grid = boosting_path(gram, y, 3.0, steps=[1, 7, 50])
    for s, fits in enumerate([1, 7, 50]):
        np.testing.assert_allclose(grid.filters[s], cumulative.filters[fits - 1], rtol=1e-12, atol=1e-15)
        expected = cumulative.predict(gram_test, fits - 1)
        np.testing.assert_allclose(grid.predict(gram_test, s), expected, atol=1e-10)
    with pytest.raises(ValueError, match="steps= needs one alpha"):
        boosting_path(gram, y, [1.0, 2.0], steps=[3])


def test_a_self_distillation_path_prints_its_settings_not_the_whole_chain():
    from selfdistill.kernel import self_distillation_path

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    gram = np.exp(-((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    path = self_distillation_path(gram, X[:, 0] + 0.1 * rng.normal(size=30), epsilon=0.05)
    text = str(path)
    assert text.splitlines()[0].startswith("FilterPath: self_distillation") and "epsilon=0.05" in text
    assert "ChainResult" not in text and len(text.splitlines()) == path.n_steps + 2
