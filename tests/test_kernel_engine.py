"""The eigenbasis engine (selfdistill.kernel.rounds.self_distill) against independent computations:
a naive refit that solves (c I + G) from scratch every round with c found by bisection on the refit's own
residual, scikit-learn's KernelRidge, and the paper's Section 4 numbers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sklearn.kernel_ridge import KernelRidge

from selfdistill.kernel import ChainResult, Spectrum, kernel_matrix, self_distill, spline_green

# ---- independent reference: refit from scratch, bisection on the refit's residual ---------------------


def naive_residual(G: np.ndarray, Y: np.ndarray, c: float) -> float:
    """(1/K) ||G (cI+G)^{-1} Y - Y||_F^2 by a dense solve."""
    K = G.shape[0]
    pred = G @ np.linalg.solve(c * np.eye(K) + G, Y)
    return float(np.sum((pred - Y) ** 2)) / K


def naive_c(G: np.ndarray, Y: np.ndarray, eps: float) -> float:
    """Bisection in log c over a wide fixed bracket (no use of eigenvalues or bounds (23)-(24))."""
    scale = np.trace(G)
    lo, hi = np.log(1e-10 * scale), np.log(1e10 * scale)
    assert naive_residual(G, Y, np.exp(lo)) < eps < naive_residual(G, Y, np.exp(hi))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if naive_residual(G, Y, np.exp(mid)) < eps:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def naive_chain(gram: np.ndarray, y: np.ndarray, eps: float, n_rounds: int, gram_test: np.ndarray):
    """Per round: collapse check, c by bisection, refit by solve. Returns c, train and test predictions."""
    K = gram.shape[0]
    G = gram / K
    Y = y.reshape(K, -1)
    cs, train, test = [], [], []
    for _ in range(n_rounds):
        if np.sum(Y**2) <= K * eps:
            break
        c = naive_c(G, Y, eps)
        coef = np.linalg.solve(c * np.eye(K) + G, Y)
        cs.append(c)
        train.append(G @ coef)
        test.append(gram_test / K @ coef)
        Y = G @ coef
    return np.array(cs), train, test


@st.composite
def instances(draw):
    K = draw(st.integers(2, 30))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["rbf", "laplacian", "lowrank"]))
    n_out = draw(st.sampled_from([1, 1, 2]))
    X = rng.normal(size=(K + 5, 3))
    if kind == "lowrank":  # singular G: the null-space branch
        F = rng.normal(size=(K + 5, max(1, K // 2)))
        full = F @ F.T
    else:
        gamma = draw(st.floats(0.05, 2.0))
        full = kernel_matrix(X, kernel=kind, gamma=gamma)
    gram, gram_test = full[:K, :K], full[K:, :K]
    y = rng.normal(size=(K, n_out)) if n_out > 1 else rng.normal(size=K)
    spectrum = Spectrum.from_gram(gram)
    null_ms = float(np.sum(spectrum.rotate(y.reshape(K, -1))[spectrum.null_mask] ** 2)) / K
    energy = float(np.sum(y**2)) / K
    assume(energy - null_ms > 0.1 * energy)  # the kernel can fit a fair share of y (else ill-posed)
    frac = draw(st.floats(0.05, 0.95))
    eps = null_ms + frac * (energy - null_ms)  # strictly feasible, not collapsed at round 0
    return gram, gram_test, y, eps


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_engine_equals_naive_refit(instance):
    gram, gram_test, y, eps = instance
    result = self_distill(gram, y, eps, n_rounds=4)
    c_ref, train_ref, test_ref = naive_chain(gram, y, eps, 4, gram_test)
    assert result.n_rounds == len(c_ref)
    np.testing.assert_allclose(result.c, c_ref, rtol=1e-7)
    scale = np.sqrt(np.mean(y**2))
    for t in range(result.n_rounds):
        np.testing.assert_allclose(
            result.train_predictions[t].reshape(len(y), -1), train_ref[t], atol=1e-7 * scale, rtol=1e-6
        )
        np.testing.assert_allclose(
            result.predict(gram_test, round=t).reshape(len(gram_test), -1),
            test_ref[t],
            atol=1e-7 * scale,
            rtol=1e-6,
        )
    # the constraint is active at every fitted round (eq. 20) and ||z_t|| strictly decreases
    np.testing.assert_allclose(result.fit_residual, eps, rtol=1e-8)
    assert np.all(np.diff(result.z_norms) < 0)
    if result.n_rounds < 4:
        assert result.status == "collapsed" and result.collapse_round == result.n_rounds


# ---- collapse ---------------------------------------------------------------------------------------


def _rbf_problem(K=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(K, 2))
    return kernel_matrix(X, kernel="rbf", gamma=1.0), rng.normal(size=K), X


def test_until_collapse_stops_cleanly_and_reports_the_round():
    gram, y, _ = _rbf_problem()
    eps = 0.2 * np.mean(y**2)
    result = self_distill(gram, y, eps)
    T = result.n_rounds
    assert result.status == "collapsed" and result.collapse_round == T and T >= 1
    ms = result.mean_square_labels
    assert ms[T] <= eps < ms[T - 1]  # ||y_T||^2 <= K eps, earlier rounds were not collapsed
    assert np.all(np.isfinite(result.c)) and np.all(np.diff(result.c) > 0)  # c_t increases (observed)
    assert len(result.z) == T + 1 and result.b_diag.shape == (T, len(y))
    assert "collapse at round" in str(result)


def test_collapse_at_round_zero_predicts_zero():
    gram, y, _ = _rbf_problem()
    result = self_distill(gram, y, 2.0 * np.mean(y**2))
    assert result.status == "collapsed" and result.stop_round == 0 and result.n_rounds == 0
    np.testing.assert_array_equal(result.predict(gram[:5]), 0.0)
    assert len(list(result.staged_predict(gram[:5]))) == 1


def test_n_rounds_completed_and_max_rounds_warning():
    gram, y, _ = _rbf_problem()
    eps = 0.01 * np.mean(y**2)
    assert self_distill(gram, y, eps, n_rounds=2).status == "completed"
    with pytest.warns(RuntimeWarning, match="max_rounds"):
        r = self_distill(gram, y, eps, max_rounds=2)
    assert r.status == "max_rounds" and r.n_rounds == 2


def test_reusing_one_spectrum_gives_identical_results():
    gram, y, _ = _rbf_problem()
    spectrum = Spectrum.from_gram(gram)
    for eps in (0.05, 0.2):
        a, b = self_distill(spectrum, y, eps), self_distill(gram, y, eps)
        np.testing.assert_array_equal(a.c, b.c)


# ---- the paper's Section 4 spline example -----------------------------------------------------------

PAPER_LABELS = np.array([
    0.38476636465198066, 1.2333967683416893, 1.33232242218057, 0.6920159488889518, -0.29756145531871736,
    -0.24189291901377769, -0.7964485769175675, -0.9616480167034174, -0.49672509509916934,
    -0.3469066003991437, 0.5589512650600734,
])  # fmt: skip


def test_spline_green_is_symmetric_and_matches_closed_form():
    x = np.linspace(0, 1, 41)
    g = spline_green(x[:, None], x[None, :])
    np.testing.assert_allclose(g, g.T, atol=1e-15)
    X, T = np.meshgrid(x, x, indexing="ij")
    closed = X * (1 - T) * (2 * T - T**2 - X**2) / 6  # valid for x <= t
    below = X <= T
    np.testing.assert_allclose(g[below], closed[below], atol=1e-15)
    np.testing.assert_array_equal(g[0], 0.0)
    np.testing.assert_allclose(g[:, -1], 0.0, atol=1e-16)
    np.testing.assert_allclose(kernel_matrix(x[:, None], kernel="spline"), g)


def test_spline_example_infeasible_below_0_04186():
    x = np.linspace(0, 1, 11)
    gram = spline_green(x[:, None], x[None, :])
    result = self_distill(gram, PAPER_LABELS, 0.03)
    assert result.status == "infeasible" and result.stop_round == 0 and result.n_rounds == 0
    assert "0.0418" in result.message and "epsilon" in result.message
    # the bound: the null space of G is spanned by e_0 and e_10 (the kernel vanishes at x = 0 and 1)
    assert np.isclose((PAPER_LABELS[0] ** 2 + PAPER_LABELS[-1] ** 2) / 11, 0.04186, atol=5e-6)
    with pytest.raises(ValueError, match="infeasible"):
        result.predict(gram)
    with pytest.raises(ValueError, match="infeasible"):
        self_distill(gram, PAPER_LABELS, 0.03, on_infeasible="raise")


def test_spline_example_eps_0_05_matches_reference_numbers():
    x = np.linspace(0, 1, 11)
    gram = spline_green(x[:, None], x[None, :])
    result = self_distill(gram, PAPER_LABELS, 0.05)
    assert result.n_rounds == 4 and result.status == "collapsed"
    xt = np.linspace(0, 1, 1001)
    k_test = spline_green(xt[:, None], x[None, :])
    mse = [np.mean((p - np.sin(2 * np.pi * xt)) ** 2) for p in result.staged_predict(k_test)]
    np.testing.assert_allclose(mse, [0.138, 0.067, 0.159, 0.387], atol=1.5e-3)
    # B_0 and B_1 diagonals from the reference (eigenvalues ascending)
    np.testing.assert_allclose(
        result.b_diag[0], [0, 0, .23, .29, .38, .52, .69, .84, .94, .99, 1.00], atol=0.012
    )  # fmt: skip
    np.testing.assert_allclose(
        result.b_diag[1], [0, 0, .004, .006, .013, .03, .08, .20, .46, .82, .99], atol=0.006
    )  # fmt: skip


# ---- multi-output, fixed-c ---------------------------------------------------------------------------


def test_per_output_c_equals_each_column_alone():
    gram, _, _ = _rbf_problem()
    rng = np.random.default_rng(3)
    Y = rng.normal(size=(20, 3)) * np.array([1.0, 0.5, 2.0])
    eps = 0.15
    multi = self_distill(gram, Y, eps, per_output_c=True)
    k_test = gram[:7]
    for j in range(3):
        single = self_distill(gram, Y[:, j], eps)
        T = single.n_rounds
        np.testing.assert_allclose(multi.c[:T, j], single.c, rtol=1e-12)
        assert np.all(np.isinf(multi.c[T:, j]))  # this output had collapsed: f = 0 (c = inf)
        for t in range(multi.n_rounds):
            expected = single.predict(k_test, round=t) if t < T else np.zeros(7)
            np.testing.assert_allclose(multi.predict(k_test, round=t)[:, j], expected, atol=1e-12)


def test_shared_c_sums_the_constraint_over_outputs():
    gram, _, _ = _rbf_problem()
    Y = np.random.default_rng(4).normal(size=(20, 2))
    eps = 0.3
    result = self_distill(gram, Y, eps, n_rounds=3)
    G = gram / 20
    Yt = Y
    for t in range(result.n_rounds):
        assert np.isclose(naive_residual(G, Yt, result.c[t]), eps, rtol=1e-8)
        Yt = G @ np.linalg.solve(result.c[t] * np.eye(20) + G, Yt)


def test_fixed_c_mode_equals_iterated_sklearn_kernel_ridge():
    gram, y, X = _rbf_problem()
    rng = np.random.default_rng(5)
    X_test = rng.uniform(-1, 1, size=(9, 2))
    k_test = kernel_matrix(X_test, X, kernel="rbf", gamma=1.0)
    alpha = 0.3
    result = self_distill(gram, y, alpha=alpha, n_rounds=4)
    np.testing.assert_allclose(result.c, alpha / 20)
    labels = y
    for t in range(4):
        ridge = KernelRidge(alpha=alpha, kernel="precomputed").fit(gram, labels)
        np.testing.assert_allclose(
            result.predict(k_test, round=t), ridge.predict(k_test), rtol=1e-8, atol=1e-10
        )
        labels = ridge.predict(gram)
        np.testing.assert_allclose(result.train_predictions[t], labels, rtol=1e-8, atol=1e-10)


# ---- bad input -----------------------------------------------------------------------------------------


def test_bad_gram_inputs_name_the_problem():
    gram, y, _ = _rbf_problem()
    bad = gram.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        self_distill(bad, y, 0.1)
    with pytest.raises(ValueError, match="square"):
        self_distill(gram[:, :5], y, 0.1)
    asym = gram.copy()
    asym[0, 1] += 1e-3
    with pytest.raises(ValueError, match=r"not symmetric: max\|K - K\^T\| = 0.001"):
        self_distill(asym, y, 0.1)
    indefinite = gram - 0.5 * np.eye(20)
    d = np.linalg.eigvalsh(indefinite)
    with pytest.raises(ValueError, match="not positive semi-definite") as info:
        self_distill(indefinite, y, 0.1)
    assert f"{d[0] / d[-1]:.3g}" in str(info.value)
    # round-off sized negative eigenvalues are clipped to 0, not rejected
    V = np.linalg.qr(np.random.default_rng(0).normal(size=(20, 20)))[0]
    evals = np.linspace(1, 2, 20)
    evals[0] = -1e-14
    result = self_distill((V * evals) @ V.T, y, 0.1)
    assert result.eigenvalues[0] == 0.0 and result.n_rounds >= 1


def test_bad_labels_and_parameters_name_the_parameter():
    gram, y, _ = _rbf_problem()
    with pytest.raises(ValueError, match=r"y must have shape \(20,\)"):
        self_distill(gram, y[:5], 0.1)
    y_nan = y.copy()
    y_nan[3] = np.inf
    with pytest.raises(ValueError, match="y contains NaN or infinite"):
        self_distill(gram, y_nan, 0.1)
    for eps in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="epsilon"):
            self_distill(gram, y, eps)
    with pytest.raises(ValueError, match="epsilon is required"):
        self_distill(gram, y)
    with pytest.raises(ValueError, match="alpha"):
        self_distill(gram, y, alpha=-1.0, n_rounds=2)
    with pytest.raises(ValueError, match="n_rounds"):
        self_distill(gram, y, alpha=1.0)
    with pytest.raises(ValueError, match="n_rounds"):
        self_distill(gram, y, 0.1, n_rounds=0)


# ---- result object -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["single", "per_output", "shared_multi", "infeasible", "collapsed0", "alpha"]
)
def test_json_round_trip(tmp_path, case):
    gram, y, _ = _rbf_problem()
    Y = np.column_stack([y, 0.3 * y[::-1]])
    x = np.linspace(0, 1, 11)
    result = {
        "single": lambda: self_distill(gram, y, 0.2),
        "per_output": lambda: self_distill(gram, Y, 0.1, per_output_c=True),
        "shared_multi": lambda: self_distill(gram, Y, 0.2),
        "infeasible": lambda: self_distill(spline_green(x[:, None], x[None, :]), PAPER_LABELS, 0.03),
        "collapsed0": lambda: self_distill(gram, y, 100.0),
        "alpha": lambda: self_distill(gram, y, alpha=0.5, n_rounds=3),
    }[case]()
    path = result.to_json(tmp_path / "r.json")
    back = ChainResult.from_json(path)
    for name in ("eigenvalues", "eigenvectors", "c", "z", "labels"):
        np.testing.assert_array_equal(getattr(back, name), getattr(result, name))
    for name in ("epsilon", "alpha", "per_output_c", "status", "stop_round", "message", "n_samples"):
        np.testing.assert_equal(getattr(back, name), getattr(result, name))
    assert str(back) == str(result)
    if not result.infeasible:
        np.testing.assert_allclose(back.predict(gram[:3]), result.predict(gram[:3]), rtol=1e-13, atol=1e-15)
    small = ChainResult.from_json(result.to_json(tmp_path / "s.json", include_eigenvectors=False))
    assert small.eigenvectors is None and np.array_equal(small.c, result.c)


def test_table_csv_and_plots(tmp_path):
    x = np.linspace(0, 1, 11)
    gram = spline_green(x[:, None], x[None, :])
    result = self_distill(gram, PAPER_LABELS, 0.05)
    rows = result.table()
    assert [r["round"] for r in rows] == [0, 1, 2, 3]
    np.testing.assert_allclose([r["alpha_sklearn"] for r in rows], 11 * result.c)
    np.testing.assert_allclose([r["effective_basis"] for r in rows], result.b_diag.sum(axis=1))
    text = str(result)
    assert "c_t" in text and "MSE vs y0" in text and len(text.splitlines()) == 3 + 4 + 1
    csv_text = result.to_csv(tmp_path / "rounds.csv").read_text().splitlines()
    assert csv_text[0].startswith("round,c,") and len(csv_text) == 5
    xt = np.linspace(0, 1, 101)
    figs = [
        result.plot_c(), result.plot_norms(), result.plot_b_diag(),
        result.plot_fits(x, xt, spline_green(xt[:, None], x[None, :]), truth=np.sin(2 * np.pi * xt)),
    ]  # fmt: skip
    for i, fig in enumerate(figs):
        fig.savefig(tmp_path / f"f{i}.png")
        assert (tmp_path / f"f{i}.png").stat().st_size > 1000


def test_theory_calls_compare_with_theory_with_the_agreed_keywords(monkeypatch):
    import types

    captured = {}
    fake = types.ModuleType("selfdistill.kernel.theory")

    def compare_with_theory(**kwargs):
        captured.update(kwargs)
        return "report"

    fake.compare_with_theory = compare_with_theory
    monkeypatch.setitem(sys.modules, "selfdistill.kernel.theory", fake)
    gram, y, _ = _rbf_problem()
    result = self_distill(gram, y, 0.2)
    assert result.theory() == "report"
    assert set(captured) == {"eigenvalues", "z_norms", "c", "b_diag", "epsilon", "n_samples"}
    np.testing.assert_allclose(
        captured["z_norms"], [np.linalg.norm(result.z[t]) for t in range(len(result.z))]
    )
    assert captured["b_diag"].shape == (result.n_rounds, 20) and captured["n_samples"] == 20
    assert captured["epsilon"] == 0.2
    with pytest.raises(ValueError, match="epsilon-constrained"):
        self_distill(gram, y, alpha=1.0, n_rounds=2).theory()


def test_kernel_package_imports_without_torch():
    code = textwrap.dedent(
        """
        import importlib.abc
        import sys

        class BlockTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError(f"torch is blocked in this test ({name})")
                return None

        sys.meta_path.insert(0, BlockTorch())  # any attempt to import torch now raises ImportError
        import numpy as np
        from selfdistill.kernel import KernelSelfDistillation, self_distill
        import selfdistill.experiments.kernel_run
        X = np.linspace(0, 1, 8)[:, None]
        est = KernelSelfDistillation(epsilon=0.1, epsilon_mode="relative", n_rounds=2)
        est.fit(X, np.sin(6 * X[:, 0]))
        assert est.n_rounds_ == 2
        assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_interior_spline_variant_matches_reference_numbers():
    """x = 0.1..0.9 (G positive definite, kappa 4471), eps = 0.01: 10 rounds, best at round 3."""
    x = np.linspace(0, 1, 11)[1:-1]
    result = self_distill(spline_green(x[:, None], x[None, :]), PAPER_LABELS[1:-1], 0.01)
    assert result.n_rounds == 10 and result.status == "collapsed"
    assert result.eigenvalues[-1] / result.eigenvalues[0] == pytest.approx(4471, rel=1e-3)
    xt = np.linspace(0, 1, 1001)
    k_test = spline_green(xt[:, None], x[None, :])
    mse = [np.mean((p - np.sin(2 * np.pi * xt)) ** 2) for p in result.staged_predict(k_test)]
    np.testing.assert_allclose(mse[:5], [0.138, 0.096, 0.068, 0.063, 0.087], atol=1.5e-3)
    assert mse[-1] == pytest.approx(0.50, abs=0.005) and int(np.argmin(mse)) == 3


# ---- review fixes ----------------------------------------------------------------------------------------


def test_train_mse_needs_no_eigenvectors(tmp_path):
    """After a reload without eigenvectors the table still shows the fit to y_0 (V is orthogonal, so
    ||V z_{t+1} - y_0|| = ||z_{t+1} - z_0||); golden values from an explicit solve per round."""
    gram, y, _ = _rbf_problem()
    result = self_distill(gram, y, 0.05)
    assert result.n_rounds >= 2
    result.to_json(tmp_path / "r.json", include_eigenvectors=False)
    reloaded = ChainResult.from_json(tmp_path / "r.json")
    K = len(y)
    G = gram / K
    labels, expected = y, []
    for c in result.c:
        labels = G @ np.linalg.solve(c * np.eye(K) + G, labels)  # (17) at the training points
        expected.append(np.mean((labels - y) ** 2))
    np.testing.assert_allclose(reloaded.train_mse, expected, rtol=1e-9)
    assert "nan" not in str(reloaded)


def test_infeasible_message_explains_numerically_singular_rbf():
    x = np.linspace(0, 1, 40)[:, None]
    y = np.sin(2 * np.pi * x[:, 0]) + 0.3 * np.random.default_rng(0).normal(size=40)
    gram = kernel_matrix(x, kernel="rbf", gamma=1.0)  # positive definite, but rank ~10 in floating point
    result = self_distill(gram, y, 0.02)  # the labels' part in the 30 round-off directions: mean square 0.029
    assert result.status == "infeasible"
    assert "numerically singular" in result.message and "larger gamma" in result.message
    assert "epsilon >" in result.message


def test_plot_c_draws_one_line_per_distinct_c():
    gram, y, _ = _rbf_problem()
    Y = np.column_stack([y, 0.5 * y + 0.1])
    shared = self_distill(gram, Y, 0.05)
    assert len(shared.plot_c().axes[0].get_lines()) == 1  # one shared c, not one copy per output
    per = self_distill(gram, Y, 0.05, per_output_c=True)
    labels = [line.get_label() for line in per.plot_c().axes[0].get_lines()]
    assert labels == ["output 0", "output 1"]
