"""selfdistill.kernel.plots: the kernel chain's figures live in one plotting module; ChainResult.plot_*
delegate to it; save_chain_plots writes atomically; dead code (theory.condition_number) is gone."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np

from selfdistill.kernel import kernel_matrix, plots, result, self_distill, spline_green, theory


def _chain():
    x = np.linspace(0.05, 0.95, 12)
    y = np.sin(2 * np.pi * x)
    return x, self_distill(spline_green(x[:, None], x[None, :]), y, 0.02)


def test_plots_take_a_chain_result_and_draw_its_numbers():
    x, chain = _chain()
    assert chain.n_rounds >= 2
    (line,) = plots.plot_c(chain).axes[0].get_lines()
    np.testing.assert_array_equal(line.get_ydata(), chain.c)
    norms = plots.plot_norms(chain).axes[0].get_lines()
    np.testing.assert_allclose(norms[0].get_ydata(), [np.mean(z**2) for z in chain.z])  # ||z_t|| = ||y_t||
    assert norms[1].get_ydata()[0] == chain.epsilon
    b_lines = plots.plot_b_diag(chain).axes[0].get_lines()
    assert len(b_lines) == chain.n_rounds
    d = chain.eigenvalues
    np.testing.assert_allclose(b_lines[1].get_ydata(), d / (chain.c[0] + d) * d / (chain.c[1] + d))  # (45)
    xt = np.linspace(0, 1, 50)
    fit_lines = plots.plot_fits(chain, x, xt, spline_green(xt[:, None], x[None, :])).axes[0].get_lines()
    assert len(fit_lines) == chain.n_rounds


def test_chain_result_plot_methods_are_delegations():
    _, chain = _chain()
    for name in ("plot_c", "plot_norms", "plot_b_diag"):
        mine = getattr(chain, name)().axes[0].get_lines()[0].get_ydata()
        theirs = getattr(plots, name)(chain).axes[0].get_lines()[0].get_ydata()
        np.testing.assert_array_equal(mine, theirs)
    source = inspect.getsource(result)
    assert "matplotlib" not in source and "semilogy" not in source  # no plotting code left in result.py


def test_save_chain_plots_writes_pngs_atomically(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (15, 1))
    chain = self_distill(kernel_matrix(x, kernel="rbf", gamma=5.0), np.sin(6 * x[:, 0]), 0.05)
    paths = plots.save_chain_plots(
        chain, tmp_path / "p", x_train=x, kernel=lambda a, b: kernel_matrix(a, b, kernel="rbf", gamma=5.0)
    )
    assert [p.name for p in paths] == ["c.png", "norms.png", "b_diag.png", "fits.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(p.name for p in paths)  # no temps
    two_d = rng.uniform(0, 1, (15, 2))
    chain2 = self_distill(kernel_matrix(two_d, kernel="rbf"), two_d[:, 0], 0.01)
    names = [p.name for p in plots.save_chain_plots(chain2, tmp_path / "q", x_train=two_d, kernel=None)]
    assert names == ["c.png", "norms.png", "b_diag.png"]  # no fits.png for 2-D inputs


def test_dead_theory_condition_number_is_removed():
    assert not hasattr(theory, "condition_number")


def test_importing_the_kernel_package_imports_neither_matplotlib_nor_torch():
    code = "import sys, selfdistill.kernel; print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
