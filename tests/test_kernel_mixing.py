"""Ground-truth mixing xi in the kernel chain: against naive KernelRidge refits, the closed-form limit
KernelRidge(alpha / (1 - xi)), brute-force root finding for the eps-constrained chain, brute-force
minimization for the optimal xi."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from sklearn.kernel_ridge import KernelRidge

from selfdistill.kernel import ChainResult, KernelSelfDistillation, Spectrum, kernel_matrix, self_distill
from selfdistill.kernel.mixing import (
    MixedChainResult,
    mixing_filter,
    mixing_limit_alpha,
    optimal_mixing_chain,
    optimal_xi,
)


def _problem(K=24, m=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(K, 2))
    y = np.sin(3 * X[:, 0]) + 0.3 * rng.normal(size=K)
    if m:
        y = np.column_stack([y] + [np.cos(j * X[:, 1]) + 0.3 * rng.normal(size=K) for j in range(1, m)])
    X_test = rng.uniform(-1, 1, size=(9, 2))
    return kernel_matrix(X, kernel="rbf", gamma=1.5), kernel_matrix(X_test, X, kernel="rbf", gamma=1.5), y


def _naive_mixed_refits(gram, gram_test, y, alphas, xis):
    """Round t: KernelRidge(alphas[t]) on xi_t * (previous training predictions) + (1 - xi_t) * y."""
    targets, train, test = y, [], []
    for t, alpha in enumerate(alphas):
        model = KernelRidge(alpha=alpha, kernel="precomputed").fit(gram, targets)
        train.append(model.predict(gram))
        test.append(model.predict(gram_test))
        if t + 1 < len(alphas):
            targets = xis[t] * train[-1] + (1 - xis[t]) * y
    return np.array(train), np.array(test)


@pytest.mark.parametrize("m", [None, 3])
@pytest.mark.parametrize("xi", [0.6, [0.3, 0.9, -0.2, 1.4]])
def test_fixed_alpha_mixing_equals_naive_kernel_ridge_refits(m, xi):
    gram, gram_test, y = _problem(m=m)
    chain = self_distill(gram, y, alpha=0.2, xi=xi, n_rounds=5)
    xis = [xi] * 4 if np.ndim(xi) == 0 else xi
    train, test = _naive_mixed_refits(gram, gram_test, y, [0.2] * 5, xis)
    assert isinstance(chain, MixedChainResult) and chain.n_rounds == 5
    np.testing.assert_allclose(chain.train_predictions, train, atol=1e-11)
    np.testing.assert_allclose(np.array(list(chain.staged_predict(gram_test))), test, atol=1e-11)
    np.testing.assert_allclose(chain.xi_rounds, [0.0] + list(xis))
    # the fit residual is against each round's own mixed targets
    targets = [y] + [xis[t] * train[t] + (1 - xis[t]) * y for t in range(4)]
    resid = [np.sum((train[t] - targets[t]) ** 2) / len(y) for t in range(5)]
    np.testing.assert_allclose(chain.fit_residual, resid, rtol=1e-9)
    np.testing.assert_allclose(chain.train_mse, [np.sum((p - y) ** 2) / len(y) for p in train], rtol=1e-9)


def test_fixed_alpha_rounds_converge_to_ridge_with_alpha_over_one_minus_xi():
    gram, gram_test, y = _problem()
    alpha, xi = 0.3, 0.6
    assert mixing_limit_alpha(alpha, xi) == pytest.approx(0.75)
    limit = KernelRidge(alpha=alpha / (1 - xi), kernel="precomputed").fit(gram, y)
    chain = self_distill(gram, y, alpha=alpha, xi=xi, n_rounds=400)
    np.testing.assert_allclose(chain.predict(gram_test), limit.predict(gram_test), atol=1e-12)
    np.testing.assert_allclose(chain.train_predictions[-1], limit.predict(gram), atol=1e-12)
    # the closed form per round equals the iteration, and its last row the ridge filter d / (d + c / (1 - xi))
    d, c = chain.eigenvalues, alpha / len(y)
    closed = mixing_filter(d, c, xi, 400)
    np.testing.assert_allclose(closed, chain.b_diag, atol=1e-14)
    np.testing.assert_allclose(closed[-1], d / (d + c / (1 - xi)), atol=1e-14)
    # run "until collapse": mixing never collapses, the chain stops once the targets stop changing
    converged = self_distill(gram, y, 0.01, alpha=alpha, xi=xi)
    assert converged.status == "converged" and converged.n_rounds < 400
    np.testing.assert_allclose(converged.predict(gram_test), limit.predict(gram_test), atol=1e-10)


def _brute_force_c(gram, targets, eps):
    """Bisection in log c with explicit solves (no eigendecomposition): (1/K)||G(cI+G)^-1 u - u||^2 = eps."""
    K = len(targets)
    G = gram / K

    def resid(c):
        pred = G @ np.linalg.solve(c * np.eye(K) + G, targets)
        return np.sum((pred - targets) ** 2) / K - eps

    lo, hi = 1e-12, 1e6
    for _ in range(200):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if resid(mid) < 0 else (lo, mid)
    return np.sqrt(lo * hi)


def test_epsilon_constrained_mixing_equals_naive_root_finding_refits():
    gram, gram_test, y = _problem(K=15)
    eps, xi = 0.02, 0.5
    chain = self_distill(gram, y, eps, xi=xi, n_rounds=4)
    targets = y
    K = len(y)
    for t in range(4):
        c = _brute_force_c(gram, targets, eps)
        assert chain.c[t] == pytest.approx(c, rel=1e-8)
        model = KernelRidge(alpha=K * c, kernel="precomputed").fit(gram, targets)
        np.testing.assert_allclose(chain.predict(gram_test, round=t), model.predict(gram_test), atol=1e-7)
        targets = xi * model.predict(gram) + (1 - xi) * y
    np.testing.assert_allclose(chain.fit_residual, eps, rtol=1e-9)


def test_xi_one_is_the_paper_chain_and_the_estimator_passes_xi():
    gram, gram_test, y = _problem()
    plain = self_distill(gram, y, 0.05, n_rounds=3)
    ones = self_distill(gram, y, 0.05, n_rounds=3, xi=[1.0, 1.0])
    assert type(plain) is ChainResult and type(ones) is ChainResult
    np.testing.assert_array_equal(plain.c, ones.c)
    est = KernelSelfDistillation(kernel="precomputed", alpha=0.2, n_rounds=3, xi=0.4).fit(gram, y)
    engine = self_distill(gram, y, alpha=0.2, n_rounds=3, xi=0.4)
    np.testing.assert_allclose(est.predict(gram_test), engine.predict(gram_test), rtol=1e-12)
    assert isinstance(est.result_, MixedChainResult)


def test_mixed_chain_json_round_trip_and_the_plain_loader_refuses_it(tmp_path):
    gram, gram_test, y = _problem(m=2)
    chain = self_distill(gram, y, 0.05, xi=[0.5, 0.7], n_rounds=3)
    back = MixedChainResult.from_json(chain.to_json(tmp_path / "mixed.json"))
    np.testing.assert_allclose(back.predict(gram_test), chain.predict(gram_test), rtol=1e-12)
    np.testing.assert_array_equal(back.xi_rounds, chain.xi_rounds)
    np.testing.assert_array_equal(back.b_diag, chain.b_diag)
    with pytest.raises(ValueError, match="not a ChainResult file"):
        ChainResult.from_json(tmp_path / "mixed.json")
    with pytest.raises(ValueError, match="xi = 1"):
        chain.theory()
    text = str(chain)
    assert "ground-truth mixing" in text and "0.5, 0.7" in text


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), [0.5, float("nan")], "half", True, [[0.5]]])
def test_bad_xi_is_a_one_line_error_naming_xi(bad):
    gram, _, y = _problem()
    with pytest.raises(ValueError, match="xi") as info:
        self_distill(gram, y, 0.05, n_rounds=3, xi=bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="xi"):
        KernelSelfDistillation(kernel="precomputed", epsilon=0.05, xi=bad).fit(gram, y)
    with pytest.raises(ValueError, match="n_rounds <= len"):
        self_distill(gram, y, alpha=0.1, n_rounds=4, xi=[0.5])
    with pytest.raises(ValueError, match="xi < 1"):
        mixing_limit_alpha(1.0, 1.0)


def test_optimal_xi_is_the_brute_force_minimizer_of_the_validation_error():
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, size=(30, 1))
    f = np.sin(3 * X[:, 0])
    y = f + 0.5 * rng.normal(size=30)
    X_val = rng.uniform(-1, 1, size=(40, 1))
    y_val = np.sin(3 * X_val[:, 0]) + 0.5 * rng.normal(size=40)
    gram = kernel_matrix(X, kernel="rbf", gamma=2.0)
    k_val = kernel_matrix(X_val, X, kernel="rbf", gamma=2.0)
    alpha = 0.05
    chain = optimal_mixing_chain(Spectrum.from_gram(gram), y, alpha, 4, k_val, y_val)
    # brute force: per round, minimize the validation error of actual KernelRidge refits over xi (Brent)

    def val_error(xi, prev):
        model = KernelRidge(alpha=alpha, kernel="precomputed").fit(gram, xi * prev + (1 - xi) * y)
        return np.sum((model.predict(k_val) - y_val) ** 2)

    prev = KernelRidge(alpha=alpha, kernel="precomputed").fit(gram, y).predict(gram)
    for t in range(1, 4):
        best = minimize_scalar(val_error, bracket=(-1.0, 2.0), args=(prev,), tol=1e-12)
        assert chain.xi_rounds[t] == pytest.approx(best.x, rel=1e-5, abs=1e-6)
        assert val_error(chain.xi_rounds[t], prev) <= best.fun * (1 + 1e-12)
        xi = chain.xi_rounds[t]
        prev = (
            KernelRidge(alpha=alpha, kernel="precomputed").fit(gram, xi * prev + (1 - xi) * y).predict(gram)
        )
    # with the training points and noisy labels as reference, a teacher with h < 1 gives xi* < 0 (module doc)
    train_ref = optimal_mixing_chain(Spectrum.from_gram(gram), y, alpha, 2, gram, y)
    assert train_ref.xi_rounds[1] < 0
    # bounds clip to the constrained minimizer of a convex quadratic
    bounded = optimal_mixing_chain(Spectrum.from_gram(gram), y, alpha, 3, gram, y, bounds=(0.0, 1.0))
    np.testing.assert_array_equal(bounded.xi_rounds[1:], 0.0)
    assert optimal_xi(np.ones(3), np.zeros(3)) == 1.0
