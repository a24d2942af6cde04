"""Section 4 of Mobahi, Farajtabar, Bartlett (2020): Figures 2 and 3 with their numbers.

Regularizer R(f) = int_0^1 f''(x)^2 dx, spline Green's function (59), x = 0, 0.1, ..., 1 (K = 11), the 11
published noisy labels of sin(2 pi x). Two variants:
  paper    : the 11 points; G is singular (g vanishes at x = 0 and x = 1), feasible for eps > 0.04186.
  interior : x = 0.1, ..., 0.9 with the corresponding 9 labels; G positive definite (kappa about 4471).
For each: figure2.png (Green's function; data and the fit of every round against sin(2 pi x)),
figure3.png (diagonal of B_t per round, eigenvalues ascending), fits.csv, b_diag.csv, rounds.csv
(c_t, test MSE against sin(2 pi x) on 1001 points, ||y_t||^2/K), data.csv and theory.json.
NumPy only (matplotlib for the plots); seconds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfdistill.io import atomic_save_figure, atomic_write_json, atomic_write_text
from selfdistill.kernel import ChainResult, Spectrum, kernel_matrix, self_distill, spline_green

#: the 11 labels of Section 4 (noisy sin(2 pi x) at x = 0, 0.1, ..., 1), as published with a public
#: reimplementation that states they are the paper's values.
PAPER_LABELS = np.array(
    [
        0.38476636465198066,
        1.2333967683416893,
        1.33232242218057,
        0.6920159488889518,
        -0.29756145531871736,
        -0.24189291901377769,
        -0.7964485769175675,
        -0.9616480167034174,
        -0.49672509509916934,
        -0.3469066003991437,
        0.5589512650600734,
    ]
)
PAPER_X = np.linspace(0.0, 1.0, 11)
#: test grid for the MSE against sin(2 pi x)
GRID_SIZE = 1001


def target(x: np.ndarray) -> np.ndarray:
    """The noiseless function of Section 4."""
    return np.sin(2.0 * np.pi * np.asarray(x, dtype=float))


@dataclass(frozen=True)
class Section4Run:
    """One variant: the chain, its fits on the grid, the test MSE per round and the theory report."""

    name: str
    description: str
    x: np.ndarray
    y: np.ndarray
    epsilon: float
    chain: ChainResult
    x_grid: np.ndarray
    fits: np.ndarray  # (T, GRID_SIZE)
    test_mse: np.ndarray  # (T,)
    report: Any  # selfdistill.kernel.theory.TheoryReport

    @property
    def best_round(self) -> int:
        return int(np.argmin(self.test_mse))


def feasible_epsilon_range(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(lo, hi): the spline fit reaches (1/K) sum (f(x_k) - y_k)^2 <= eps only for eps > lo (the labels'
    part in the null space of G, where g vanishes, cannot be fitted), and round 0 is non-trivial only
    for eps < hi = ||y||^2 / K (otherwise f* = 0)."""
    spectrum = Spectrum.from_gram(kernel_matrix(x[:, None], kernel="spline"))
    z = spectrum.rotate(y)
    K = spectrum.n_samples
    return float(np.sum(z[spectrum.null_mask] ** 2)) / K, float(np.sum(y**2)) / K


def run_variant(name: str, description: str, x: np.ndarray, y: np.ndarray, epsilon: float) -> Section4Run:
    """Run the chain to collapse and evaluate every round on a 1001-point grid of [0, 1]."""
    lo, hi = feasible_epsilon_range(x, y)
    if not (np.isfinite(epsilon) and lo < epsilon < hi):
        reason = (
            f"below {lo:.5g}: the kernel vanishes at x = 0 and x = 1, so those labels cannot be fitted and "
            f"alone leave a mean squared residual of {lo:.5g}"
            if epsilon <= lo
            else f"at or above ||y||^2/K = {hi:.5g}: round 0 already collapses to f = 0"
        )
        raise ValueError(
            f"epsilon={epsilon!r} is infeasible for the {description}: {reason}. "
            f"Use {lo:.5g} < epsilon < {hi:.5g}"
        )
    chain = self_distill(kernel_matrix(x[:, None], kernel="spline"), y, epsilon)
    x_grid = np.linspace(0.0, 1.0, GRID_SIZE)
    k_grid = kernel_matrix(x_grid[:, None], x[:, None], kernel="spline")
    fits = np.array(list(chain.staged_predict(k_grid))).reshape(-1, GRID_SIZE)
    test_mse = np.mean((fits - target(x_grid)[None, :]) ** 2, axis=1)
    return Section4Run(name, description, x, y, float(epsilon), chain, x_grid, fits, test_mse, chain.theory())


# ---------------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------------


def _write_csv(path: Path, header: list[str], columns: list[np.ndarray]) -> Path:
    """Atomic CSV write of equal-length numeric columns (full precision)."""
    buffer = io.StringIO()
    np.savetxt(
        buffer, np.column_stack(columns), delimiter=",", header=",".join(header), comments="", fmt="%.17g"
    )
    return atomic_write_text(path, buffer.getvalue())


def write_tables(run: Section4Run, folder: Path) -> dict[str, Path]:
    """data.csv, fits.csv, b_diag.csv, rounds.csv and theory.json."""
    chain = run.chain
    rounds = np.arange(chain.n_rounds)
    names = [f"round_{t}" for t in rounds]
    files = {
        "data": _write_csv(folder / "data.csv", ["x", "y"], [run.x, run.y]),
        "fits": _write_csv(
            folder / "fits.csv", ["x", "sin_2pi_x", *names], [run.x_grid, target(run.x_grid), *run.fits]
        ),
        "b_diag": _write_csv(
            folder / "b_diag.csv",
            ["k", "eigenvalue", *names],
            [np.arange(chain.n_samples), chain.eigenvalues, *chain.b_diag],
        ),
        "rounds": _write_csv(
            folder / "rounds.csv",
            ["round", "c", "alpha_sklearn", "label_mean_square", "test_mse", "train_mse_vs_y0"],
            [
                rounds,
                chain.c,
                chain.c * chain.n_samples,
                chain.mean_square_labels[:-1],
                run.test_mse,
                chain.train_mse,
            ],
        ),
    }
    files["theory"] = folder / "theory.json"
    run.report.to_json(files["theory"])
    return files


def plot_figure2(run: Section4Run, path: Path) -> Path:
    """Left: the Green's function g(x, t) (59) for a few t. Right: data, sin(2 pi x) and every round's fit."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.5, 4.6), layout="constrained")
    ax_g, ax_f = fig.subplots(1, 2, width_ratios=[1, 1.5])
    xs = np.linspace(0.0, 1.0, 401)
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        ax_g.plot(xs, spline_green(xs, t), label=f"t = {t:g}")
    ax_g.set(xlabel="x", ylabel="g(x, t)", title="Green's function (59) of $\\int f''(x)^2 dx$")
    ax_g.legend(fontsize="small")
    ax_g.grid(alpha=0.3)

    colors = colormaps["viridis"](np.linspace(0.0, 0.9, max(run.chain.n_rounds, 1)))
    ax_f.plot(run.x_grid, target(run.x_grid), "k--", lw=1.5, label="sin(2$\\pi$x)")
    for t, (fit, color) in enumerate(zip(run.fits, colors, strict=False)):
        best = " (best)" if t == run.best_round else ""
        ax_f.plot(
            run.x_grid, fit, color=color, lw=1.6, label=f"round {t}: test MSE {run.test_mse[t]:.3f}{best}"
        )
    ax_f.scatter(run.x, run.y, color="crimson", zorder=4, s=28, label="noisy training labels")
    ax_f.set(
        xlabel="x",
        ylabel="$f_t(x)$",
        title=f"Fit per round, {run.description}, $\\epsilon$ = {run.epsilon:g} "
        f"({run.chain.n_rounds} rounds to collapse)",
    )
    ax_f.title.set_fontsize("medium")
    ax_f.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax_f.grid(alpha=0.3)
    fig.suptitle("Figure 2 (Mobahi et al. 2020, Section 4): self-distillation rounds with the spline kernel")
    return atomic_save_figure(fig, path)


def plot_figure3(run: Section4Run, path: Path) -> Path:
    """Diagonal of B_t (45) per round against the eigenvalue index (ascending): bars and log scale."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    chain = run.chain
    b = chain.b_diag
    T, K = b.shape
    colors = colormaps["viridis"](np.linspace(0.0, 0.9, max(T, 1)))
    fig = Figure(figsize=(11.5, 4.2), layout="constrained")
    ax_lin, ax_log = fig.subplots(1, 2)
    k = np.arange(K)
    width = 0.85 / max(T, 1)
    for t in range(T):
        ax_lin.bar(k + (t - (T - 1) / 2) * width, b[t], width=width, color=colors[t], label=f"$B_{{{t}}}$")
        positive = b[t] > 0
        ax_log.semilogy(k[positive], b[t][positive], marker="o", ms=4, color=colors[t], label=f"$B_{{{t}}}$")
    ax_lin.set(
        xlabel="eigenvalue index k (ascending $d_k$)",
        ylabel="$B_t[k, k]$",
        title="diagonal of $B_t$ per round (linear)",
        xticks=k,
    )
    ax_log.set(
        xlabel="eigenvalue index k (ascending $d_k$)",
        ylabel="$B_t[k, k]$ (log scale; zeros omitted)",
        title="small eigenvalues shrink faster every round",
        xticks=k,
    )
    ncols = 2 if T > 5 else 1
    ax_lin.legend(fontsize="x-small", loc="upper left", ncols=ncols)
    ax_log.legend(fontsize="x-small", loc="lower right", ncols=ncols)
    for ax in (ax_lin, ax_log):
        ax.grid(alpha=0.3)
    n_null = int(np.sum(chain.eigenvalues == 0))
    null_note = f"; {n_null} zero eigenvalue(s): $B_t$ = 0 there" if n_null else ""
    fig.suptitle(
        f"Figure 3: diagonal of $B_t$ = prod $A_i$, {run.description}, "
        f"$\\epsilon$ = {run.epsilon:g}{null_note}"
    )
    return atomic_save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------------------


def _summary(run: Section4Run, files: dict[str, Path]) -> dict[str, Any]:
    report = run.report
    return {
        "description": run.description,
        "epsilon": run.epsilon,
        "n_points": int(run.x.size),
        "status": run.chain.status,
        "rounds_until_collapse": run.chain.n_rounds,
        "label_mean_square_after_last_round": float(run.chain.mean_square_labels[-1]),
        "c": [float(v) for v in run.chain.c],
        "test_mse": [float(v) for v in run.test_mse],
        "best_round": run.best_round,
        "kappa_positive_part": report.kappa,
        "zero_eigenvalues": report.n_zero_eigenvalues,
        "t_low": report.t_low,
        "theory_violations": report.violations,
        "files": {key: str(path) for key, path in files.items()},
    }


def section4_runs(epsilon: float = 0.05, interior_epsilon: float = 0.01) -> list[Section4Run]:
    """Both variants computed (seconds, nothing written): the paper's 11 points at ``epsilon`` and the
    interior-only variant (x = 0.1..0.9, G positive definite) at ``interior_epsilon``. Raises ValueError
    naming the feasible range when an epsilon cannot be reached."""
    variants = [
        ("paper", "paper's 11 points (x = 0, 0.1, ..., 1)", PAPER_X, PAPER_LABELS, epsilon),
        (
            "interior",
            "interior 9 points (x = 0.1, ..., 0.9)",
            PAPER_X[1:-1],
            PAPER_LABELS[1:-1],
            interior_epsilon,
        ),
    ]
    return [run_variant(name, desc, x, y, eps) for name, desc, x, y, eps in variants]


def write_section4(runs: list[Section4Run], out_dir: Path) -> dict[str, Any]:
    """PNG/CSV/JSON of each run under out_dir/<variant> plus out_dir/summary.json, every file atomically;
    prints a short summary; returns the summary dict."""
    out_dir = Path(out_dir)
    summary: dict[str, Any] = {}
    lines = [
        "Section 4 (Mobahi et al. 2020): spline kernel (59), test MSE against sin(2 pi x) on 1001 points"
    ]
    for run in runs:
        folder = out_dir / run.name
        files = write_tables(run, folder)
        files["figure2"] = plot_figure2(run, folder / "figure2.png")
        files["figure3"] = plot_figure3(run, folder / "figure3.png")
        summary[run.name] = _summary(run, files)
        mse = " ".join(f"{t}:{m:.3f}" for t, m in enumerate(run.test_mse))
        violations = run.report.violations
        lines.append(
            f"  {run.name:<8} eps={run.epsilon:g}: {run.chain.n_rounds} rounds until collapse; MSE per round "
            f"{mse}; best round {run.best_round}; theory: "
            + ("no violated bound" if not violations else f"{len(violations)} VIOLATED bound(s)")
            + (f", t_low = {run.report.t_low:.2g} (vacuous)" if run.report.t_low < 1 else "")
        )
    atomic_write_json(out_dir / "summary.json", summary)
    print("\n".join(lines))
    return summary


def reproduce_section4(
    out_dir: Path, epsilon: float = 0.05, interior_epsilon: float = 0.01
) -> dict[str, Any]:
    """Figures 2 and 3 of Section 4: :func:`section4_runs` (both variants validated and computed before
    anything is written), then :func:`write_section4` into out_dir; returns the summary dict."""
    return write_section4(section4_runs(epsilon, interior_epsilon), out_dir)
