"""The kernel engine past one dense matrix: the Nystroem route, Dask, the torch backend, the size guard,
the blocked products. Golden values come from independent computations: the exact route on the
explicitly formed low-rank matrix k(X, C) pinv(K_mm) k(C, X), closed-form ridge leverage scores, least
squares projections, and the NumPy backend for the torch one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import selfdistill.kernel.memory as memory
from selfdistill.kernel import KernelSelfDistillation, Spectrum, kernel_matrix, self_distill
from selfdistill.kernel.backends import blocked_kernel_matrix, numpy_kernel_fn
from selfdistill.kernel.lowrank import LowRankSpectrum, leverage_scores, nystroem_spectrum, select_centers
from selfdistill.kernel.memory import KernelSizeError, check_exact_route_fits


def _data(K=120, p=3, seed=0, n_test=25):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(K, p))
    y = np.sin(X[:, 0]) + 0.5 * np.cos(X[:, 1]) + 0.1 * rng.normal(size=K)
    return X, y, rng.normal(size=(n_test, p))


def _low_rank_matrices(X, X_test, C, gamma):
    """Independent: the Nystroem kernel k(X, C) pinv(K_mm) k(C, X) formed explicitly (and test-by-train)."""
    K_mm = kernel_matrix(C, C, "rbf", gamma=gamma)
    pinv = np.linalg.pinv(K_mm, rcond=len(C) * np.finfo(float).eps, hermitian=True)
    K_nm = kernel_matrix(X, C, "rbf", gamma=gamma)
    K_tm = kernel_matrix(X_test, C, "rbf", gamma=gamma)
    return K_nm @ pinv @ K_nm.T, K_tm @ pinv @ K_nm.T


CHAIN = dict(kernel="rbf", gamma=0.5, epsilon=0.05, epsilon_mode="relative", n_rounds=6)


# ---- Nystroem: exactness ----------------------------------------------------------------------------------


@pytest.mark.parametrize("selection", ["uniform", "leverage"])
def test_nystroem_with_every_point_a_centre_is_the_exact_route(selection):
    X, y, X_test = _data()
    exact = KernelSelfDistillation(**CHAIN).fit(X, y)
    nys = KernelSelfDistillation(
        **CHAIN, solver="nystroem", n_components=len(X), center_selection=selection, random_state=1
    ).fit(X, y)
    assert nys.n_rounds_ == exact.n_rounds_ >= 3
    np.testing.assert_allclose(nys.c_, exact.c_, rtol=1e-9)
    for t in range(exact.n_rounds_):
        np.testing.assert_allclose(nys.predict(X_test, round=t), exact.predict(X_test, round=t), atol=1e-9)
    np.testing.assert_allclose(nys.result_.train_mse, exact.result_.train_mse, rtol=1e-9)
    assert nys.result_.eigenvalues.size == len(X)  # full rank: no null direction
    np.testing.assert_allclose(nys.result_.eigenvalues, exact.result_.eigenvalues, rtol=1e-9, atol=1e-14)


def test_nystroem_is_the_exact_chain_of_the_low_rank_kernel():
    """m < K: c_t, predictions and the theory report equal the exact route on the explicit low-rank matrix."""
    X, y, X_test = _data(K=150)
    nys = KernelSelfDistillation(**CHAIN, solver="nystroem", n_components=40, random_state=0).fit(X, y)
    gram, test_gram = _low_rank_matrices(X, X_test, nys.centers_, CHAIN["gamma"])
    ref = KernelSelfDistillation(**{**CHAIN, "kernel": "precomputed", "epsilon": nys.epsilon_}).set_params(
        epsilon_mode="absolute"
    )
    ref.fit(gram, y)
    assert nys.n_rounds_ == ref.n_rounds_ >= 3
    np.testing.assert_allclose(nys.c_, ref.c_, rtol=1e-8)
    preds = list(nys.staged_predict(X_test))
    for t, expected in enumerate(ref.staged_predict(test_gram)):
        np.testing.assert_allclose(preds[t], expected, atol=1e-8)
    theory, ref_theory = nys.result_.theory(), ref.result_.theory()
    np.testing.assert_allclose(theory.c_upper, ref_theory.c_upper, rtol=1e-8)
    np.testing.assert_allclose(theory.r_observed, ref_theory.r_observed, rtol=1e-8)
    assert isinstance(nys.result_.eigenvectors, type(None)) and nys.X_fit_ is None


def test_nystroem_multi_output_per_output_c_and_fixed_alpha():
    X, y, X_test = _data(K=100)
    Y = np.column_stack([y, np.cos(X[:, 2])])
    for kwargs in ({"per_output_c": True}, {"alpha": 0.5, "epsilon": None, "n_rounds": 3}):
        params = {**CHAIN, **kwargs}
        nys = KernelSelfDistillation(**params, solver="nystroem", n_components=30, random_state=2).fit(X, Y)
        gram, test_gram = _low_rank_matrices(X, X_test, nys.centers_, CHAIN["gamma"])
        ref = self_distill(gram, Y, nys.epsilon_, n_rounds=params["n_rounds"], alpha=params.get("alpha"),
                           per_output_c=params.get("per_output_c", False))  # fmt: skip
        np.testing.assert_allclose(nys.c_, ref.c, rtol=1e-8)
        np.testing.assert_allclose(nys.predict(X_test), ref.predict(test_gram), atol=1e-8)


def test_nystroem_infeasible_epsilon_names_the_smallest_feasible_one():
    X, y, _ = _data(K=150)
    m = 12
    spectrum = nystroem_spectrum(X, y, numpy_kernel_fn("rbf", 0.5, 3, 1, None), m, random_state=0)
    # independent: the labels' part outside the span of the columns of K_nm, by least squares
    K_nm = kernel_matrix(X, spectrum.centers, "rbf", gamma=0.5)
    coef, *_ = np.linalg.lstsq(K_nm, y, rcond=None)
    outside = float(np.mean((y - K_nm @ coef) ** 2))
    assert outside > 1e-3
    np.testing.assert_allclose(spectrum.null_mean_square[0], outside, rtol=1e-8)
    est = KernelSelfDistillation("rbf", gamma=0.5, epsilon=0.9 * outside, solver="nystroem", n_components=m,
                                 random_state=0)  # fmt: skip
    with pytest.raises(ValueError, match=r"smallest feasible") as err:
        est.fit(X, y)
    message = str(err.value)
    assert "\n" not in message and f"epsilon > {outside:.6g}" in message and "n_components" in message
    est.set_params(epsilon=1.01 * outside).fit(X, y)  # just above: feasible
    assert est.n_rounds_ >= 1
    np.testing.assert_allclose(est.result_.fit_residual[0], 1.01 * outside, rtol=1e-9)  # eq. (20) holds


def test_nystroem_default_epsilon_is_feasible_and_pass_in_many_blocks(monkeypatch):
    X, y, X_test = _data(K=200)
    kwargs = dict(kernel="rbf", gamma=0.5, solver="nystroem", n_components=25, random_state=0, n_rounds=3)
    one_block = KernelSelfDistillation(**kwargs).fit(X, y)
    monkeypatch.setattr(memory, "BLOCK_BYTES", 2 * 25 * 8 * 7)  # 7 rows per block
    many_blocks = KernelSelfDistillation(**kwargs).fit(X, y)
    np.testing.assert_allclose(many_blocks.c_, one_block.c_, rtol=1e-11)
    np.testing.assert_allclose(many_blocks.predict(X_test), one_block.predict(X_test), atol=1e-11)


def test_lowrank_spectrum_serves_only_its_labels_and_engine_accepts_it():
    X, y, _ = _data(K=60)
    spectrum = nystroem_spectrum(X, y, numpy_kernel_fn("rbf", 0.5, 3, 1, None), 20, random_state=0)
    assert isinstance(spectrum, LowRankSpectrum) and spectrum.has_null_direction and spectrum.rank == 20
    result = self_distill(spectrum, y, 0.1 * np.mean(y**2), n_rounds=2)
    assert result.n_rounds == 2 and result.z.shape == (3, 21)
    with pytest.raises(ValueError, match="only the labels it was built with"):
        self_distill(spectrum, y + 1.0, 0.5, n_rounds=2)


# ---- centre selection ------------------------------------------------------------------------------------


def test_leverage_scores_with_every_point_in_the_sketch_are_exact_ridge_leverage_scores():
    X, _, _ = _data(K=80)
    fn = numpy_kernel_fn("rbf", 0.5, 3, 1, None)
    scores, ridge = leverage_scores(X, fn, np.arange(len(X)), ridge=0.7)
    gram = kernel_matrix(X, kernel="rbf", gamma=0.5)
    exact = np.diagonal(gram @ np.linalg.inv(gram + 0.7 * np.eye(len(X))))
    np.testing.assert_allclose(scores, exact, rtol=1e-8)
    sketch = np.arange(0, 80, 4)
    _, default_ridge = leverage_scores(X, fn, sketch)
    mu = np.linalg.eigvalsh(gram[np.ix_(sketch, sketch)]) * 80 / 20  # the sketch's top eigenvalues of K
    np.testing.assert_allclose(np.sum(mu / (mu + default_ridge)), 10.0, rtol=1e-6)  # d_eff = |S| / 2


def test_centre_selection_is_reproducible_and_leverage_prefers_isolated_points():
    rng = np.random.default_rng(0)
    crowd = rng.normal(scale=0.05, size=(190, 2))
    isolated = rng.uniform(3, 6, size=(10, 2))
    X = np.vstack([crowd, isolated])
    fn = numpy_kernel_fn("rbf", 1.0, 3, 1, None)
    a = select_centers(X, fn, 20, "leverage", random_state=5)
    np.testing.assert_array_equal(a, select_centers(X, fn, 20, "leverage", random_state=5))
    assert len(np.unique(a)) == 20
    uniform_hits = np.mean([np.sum(select_centers(X, fn, 20, "uniform", s) >= 190) for s in range(10)])
    leverage_hits = np.mean([np.sum(select_centers(X, fn, 20, "leverage", s) >= 190) for s in range(10)])
    assert uniform_hits < 2 and leverage_hits > 7  # 10 isolated points of 200


# ---- Dask -------------------------------------------------------------------------------------------------


def test_dask_array_on_a_two_worker_cluster_equals_in_memory():
    da = pytest.importorskip("dask.array")
    distributed = pytest.importorskip("dask.distributed")
    X, y, X_test = _data(K=300)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        for selection in ("uniform", "leverage"):
            kwargs = dict(CHAIN, epsilon=0.2, solver="nystroem", n_components=30, random_state=3,
                          center_selection=selection)  # fmt: skip
            in_memory = KernelSelfDistillation(**kwargs).fit(X, y)
            on_dask = KernelSelfDistillation(**kwargs).fit(da.from_array(X, chunks=(64, 3)), y)
            np.testing.assert_array_equal(on_dask.centers_, in_memory.centers_)
            np.testing.assert_allclose(on_dask.c_, in_memory.c_, rtol=1e-10)
            lazy = on_dask.predict(da.from_array(X_test, chunks=(10, 3)))
            assert isinstance(lazy, da.Array)
            np.testing.assert_allclose(lazy.compute(), in_memory.predict(X_test), atol=1e-10)


def test_dask_array_needs_the_nystroem_solver():
    da = pytest.importorskip("dask.array")
    X, y, _ = _data(K=40)
    with pytest.raises(ValueError, match="solver='nystroem'"):
        KernelSelfDistillation().fit(da.from_array(X, chunks=(10, 3)), y)
    bad = X.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        KernelSelfDistillation(solver="nystroem", n_components=5).fit(da.from_array(bad, chunks=(10, 3)), y)


# ---- torch backend ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernel, params",
    [("rbf", {"gamma": 0.5}), ("laplacian", {}), ("polynomial", {"degree": 2}), ("chi2", {"gamma": 1.0})],
)
def test_torch_backend_float64_equals_numpy(kernel, params):
    """Kernels evaluated in torch (rbf, laplacian, polynomial) and on the CPU fallback (chi2); a torch
    tensor X selects the torch backend. Default epsilon: polynomial and chi2 matrices are singular here."""
    torch = pytest.importorskip("torch")
    X, y, X_test = _data(K=150)
    X, X_test = (np.abs(X), np.abs(X_test)) if kernel == "chi2" else (X, X_test)
    chain = dict(kernel=kernel, n_rounds=4, **params)
    ref = KernelSelfDistillation(**chain).fit(X, y)
    scale = np.max(np.abs(ref.predict(X_test)))
    f64 = KernelSelfDistillation(**chain).fit(torch.as_tensor(X), torch.as_tensor(y))  # chosen by type
    assert f64.result_.eigenvalues.dtype == np.float64 and f64.n_rounds_ == ref.n_rounds_ >= 2
    np.testing.assert_allclose(f64.epsilon_, ref.epsilon_, rtol=1e-10)
    np.testing.assert_allclose(f64.c_, ref.c_, rtol=1e-9)
    np.testing.assert_allclose(f64.predict(torch.as_tensor(X_test)), ref.predict(X_test), atol=1e-8 * scale)


@pytest.mark.parametrize("kernel", ["rbf", "laplacian"])
def test_torch_backend_float32_agrees_to_the_documented_tolerance(kernel):
    pytest.importorskip("torch")
    X, y, X_test = _data(K=150)
    chain = dict(kernel=kernel, gamma=0.5, epsilon=0.1, epsilon_mode="relative", n_rounds=4)
    ref = KernelSelfDistillation(**chain).fit(X, y)
    scale = np.max(np.abs(ref.predict(X_test)))
    f32 = KernelSelfDistillation(**chain, backend="torch", dtype="float32", device="cpu").fit(X, y)
    np.testing.assert_allclose(f32.c_, ref.c_, rtol=1e-3)
    np.testing.assert_allclose(f32.predict(X_test), ref.predict(X_test), atol=1e-3 * scale)


def test_numpy_float32_and_backend_errors():
    X, y, X_test = _data(K=100)
    ref = KernelSelfDistillation(**CHAIN).fit(X, y)
    f32 = KernelSelfDistillation(**CHAIN, dtype="float32").fit(X, y)
    np.testing.assert_allclose(f32.c_, ref.c_, rtol=1e-3)
    with pytest.raises(ValueError, match="backend="):
        KernelSelfDistillation(backend="jax").fit(X, y)
    with pytest.raises(ValueError, match="device="):
        KernelSelfDistillation(backend="numpy", device="cuda").fit(X, y)
    with pytest.raises(ValueError, match="dtype="):
        KernelSelfDistillation(dtype="float16").fit(X, y)


# ---- size guard and blocked products ---------------------------------------------------------------------


def test_size_guard_refuses_in_one_line_naming_nystroem(monkeypatch):
    X, y, _ = _data(K=400)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 2 * 400**2 * 8)  # under 2 copies + block
    with pytest.raises(KernelSizeError) as err:
        KernelSelfDistillation().fit(X, y)
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert "solver='nystroem'" in message and "n_components=" in message and "K=400" in message
    pytest.importorskip("torch")
    with pytest.raises(KernelSizeError, match="solver='nystroem'"):
        KernelSelfDistillation(backend="torch").fit(X, y)


def test_size_guard_with_real_memory_before_any_allocation():
    """10^6 points: 16 TB of K x K matrices. The guard must answer (ValueError, not numpy's MemoryError)."""
    X = np.linspace(0.0, 1.0, 1_000_000)[:, None]
    with pytest.raises(KernelSizeError, match=r"n_components=\d+"):
        KernelSelfDistillation(epsilon=0.1).fit(X, np.sin(X[:, 0]))


def test_check_exact_route_fits_arithmetic():
    check_exact_route_fits(1000, copies=2, available=10**9)  # 16 MB + block: fits
    with pytest.raises(KernelSizeError, match=r"n_components=5000 \(about 1.37 GiB\)"):
        check_exact_route_fits(100_000, copies=2, available=8 * 2**30)
    assert memory.suggest_n_components(300, 8 * 2**30) == 200  # below K
    assert memory.largest_exact_k(16 * 2**30, copies=2) == pytest.approx(32_000, rel=0.1)


def test_blocked_kernel_matrix_and_blocked_spectrum_equal_unblocked(monkeypatch):
    X, y, _ = _data(K=90)
    fn = numpy_kernel_fn("rbf", 0.3, 3, 1, None)
    full = kernel_matrix(X, kernel="rbf", gamma=0.3)
    reference = Spectrum.from_gram(full.copy())
    monkeypatch.setattr(memory, "BLOCK_BYTES", 90 * 8 * 4)  # 4 rows per block, 6 x 6 square blocks
    np.testing.assert_allclose(blocked_kernel_matrix(fn, X), full, rtol=1e-14, atol=1e-15)
    own = full.copy()
    blocked = Spectrum.from_gram(own, overwrite_gram=True)
    np.testing.assert_array_equal(blocked.eigenvalues, reference.eigenvalues)
    np.testing.assert_array_equal(np.abs(blocked.eigenvectors), np.abs(reference.eigenvectors))
    asym = full.copy()
    asym[3, 50] += 1e-3
    with pytest.raises(ValueError, match="not symmetric"):
        Spectrum.from_gram(asym)


def test_nystroem_parameter_errors():
    X, y, _ = _data(K=30)
    with pytest.raises(ValueError, match="n_components"):
        KernelSelfDistillation(solver="nystroem").fit(X, y)
    with pytest.raises(ValueError, match="precomputed"):
        KernelSelfDistillation("precomputed", solver="nystroem", n_components=5).fit(X @ X.T, y)
    with pytest.raises(ValueError, match="solver="):
        KernelSelfDistillation(solver="svd").fit(X, y)
    with pytest.raises(ValueError, match="center_selection"):
        KernelSelfDistillation(solver="nystroem", n_components=5, center_selection="kmeans").fit(X, y)
    with pytest.warns(RuntimeWarning, match="every training point"):
        KernelSelfDistillation(solver="nystroem", n_components=50, n_rounds=1).fit(X, y)


def test_kernel_package_imports_without_dask():
    code = textwrap.dedent(
        """
        import sys
        import selfdistill.kernel
        assert not any(n == "dask" or n.startswith("dask.") for n in sys.modules), "dask imported"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_check_estimator_nystroem():
    from sklearn.utils.estimator_checks import check_estimator

    check_estimator(KernelSelfDistillation(solver="nystroem", n_components=8, random_state=0))


def test_kernel_cli_nystroem(tmp_path, monkeypatch, capsys):
    import json

    from selfdistill import cli
    from selfdistill.kernel import ChainResult

    monkeypatch.setattr(cli, "SUBCOMMANDS", {"kernel": cli.SUBCOMMANDS["kernel"]})
    X, y, X_test = _data(K=200)
    data = tmp_path / "d.npz"
    np.savez(data, X=X, y=y, X_test=X_test, y_test=np.sin(X_test[:, 0]))
    out = tmp_path / "out"
    argv = ["kernel", "--data", str(data), "--gamma", "0.5", "--epsilon", "0.2", "--epsilon-mode",
            "relative", "--solver", "nystroem", "--n-components", "30", "--center-selection", "leverage",
            "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    expected = KernelSelfDistillation(
        "rbf", gamma=0.5, epsilon=0.2, epsilon_mode="relative", solver="nystroem", n_components=30,
        center_selection="leverage", random_state=0,
    ).fit(X, y)  # fmt: skip
    np.testing.assert_allclose(ChainResult.from_json(out / "result.json").c, expected.c_, rtol=1e-12)
    with np.load(out / "nystroem.npz") as saved:
        np.testing.assert_array_equal(saved["centers"], expected.centers_)
        np.testing.assert_allclose(saved["center_coefs"], expected.center_coefs_, rtol=1e-12)
    assert (out / "theory.txt").stat().st_size > 0 and (out / "b_diag.png").stat().st_size > 0
    assert json.loads((out / "run.json").read_text())["status"] == expected.result_.status
    capsys.readouterr()
    no_m = [a for i, a in enumerate(argv) if a != "--n-components" and argv[i - 1] != "--n-components"]
    assert cli.main(no_m) == 2  # --solver nystroem without --n-components
    assert "--n-components" in capsys.readouterr().err
