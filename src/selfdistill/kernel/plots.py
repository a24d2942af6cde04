"""Plots of a kernel self-distillation chain (a ``ChainResult``): matplotlib Figures, no GUI backend.

Mobahi, Farajtabar, Bartlett (2020): c_t per round (the multiplier of eq. 20, paper convention G = Kxx/K),
the label energy ||y_t||^2 / K against the collapse threshold eps, the diagonal of B_t (eq. 45) and, for
1-D inputs, the fitted function of every round (eq. 44). Each ``plot_*`` function draws into ``ax`` when
given, else into a new Figure, and returns the Figure; ``save_chain_plots`` writes them atomically.
matplotlib is imported lazily, so ``import selfdistill.kernel`` does not import it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from selfdistill.io import atomic_save_figure

if TYPE_CHECKING:
    from selfdistill.kernel.result import ChainResult

__all__ = ["plot_b_diag", "plot_c", "plot_fits", "plot_norms", "save_chain_plots"]


def plot_c(result: ChainResult, ax: Any = None) -> Any:
    """c_t per round (log scale); one line per output with ``per_output_c``."""
    fig, ax = _axes(ax)
    c = np.asarray(result.c, dtype=float)  # (T,) shared c, or (T, m) one c per output
    lines = ax.semilogy(np.arange(result.n_rounds), c, marker="o")
    if c.ndim == 2:
        for j, line in enumerate(lines):
            line.set_label(f"output {j}")
        ax.legend(fontsize="small")
    _integer_rounds(ax)
    ax.set_ylabel("c_t (paper convention)")
    ax.set_title("regularization multiplier per round")
    return fig


def plot_norms(result: ChainResult, ax: Any = None) -> Any:
    """||y_t||^2 / K per round with the collapse threshold epsilon."""
    fig, ax = _axes(ax)
    ax.semilogy(np.arange(result.n_rounds + 1), result.mean_square_labels, marker="o", label="||y_t||^2 / K")
    if result.epsilon is not None and np.ndim(result.epsilon) == 0:
        ax.axhline(float(result.epsilon), color="k", ls="--", label="epsilon (collapse)")
    _integer_rounds(ax)
    ax.legend()
    ax.set_title("label energy per round")
    return fig


def plot_b_diag(result: ChainResult, rounds: Sequence[int] | None = None, ax: Any = None) -> Any:
    """B_t diagonal (eq. 45) against the eigenvalue index (ascending eigenvalues), one line per round."""
    fig, ax = _axes(ax)
    b = result.b_diag if result.b_diag.ndim == 2 else result.b_diag.mean(axis=2)
    for t in range(result.n_rounds) if rounds is None else rounds:
        ax.plot(np.arange(b.shape[1]), b[t], marker=".", label=f"t={t}")  # Nystroem: r (+1) entries
    ax.set_xlabel("eigenvalue index k (ascending d_k)")
    ax.set_ylabel("B_t[k, k]")
    ax.set_title("diagonal of B_t (eq. 45): small eigenvalues shrink faster")
    if result.n_rounds:
        ax.legend(fontsize="small")
    return fig


def plot_fits(
    result: ChainResult,
    x_train: np.ndarray,
    x_plot: np.ndarray,
    kernel_plot_train: np.ndarray,
    *,
    truth: np.ndarray | None = None,
    rounds: Sequence[int] | None = None,
    ax: Any = None,
) -> Any:
    """1-D inputs: the fitted function of each round (eq. 44) on x_plot, from the raw kernel
    [g(x_plot, x_train)]; the labels y_0 as points and, if given, the noiseless ``truth`` on x_plot."""
    fig, ax = _axes(ax)
    order = np.argsort(np.ravel(x_plot))
    xp = np.ravel(x_plot)[order]
    y0 = result.labels if result.labels.ndim == 1 else result.labels[:, 0]
    ax.scatter(np.ravel(x_train), y0, color="k", zorder=3, label="labels y_0")
    if truth is not None:
        ax.plot(xp, np.ravel(truth)[order], "k--", label="truth")
    for t in range(result.n_rounds) if rounds is None else rounds:
        pred = result.predict(kernel_plot_train, round=t)
        pred = pred if pred.ndim == 1 else pred[:, 0]
        ax.plot(xp, pred[order], label=f"round {t}")
    ax.set_xlabel("x")
    ax.legend(fontsize="small")
    outputs = "" if result.n_outputs == 1 else f" (output 0 of {result.n_outputs})"
    ax.set_title("self-distillation rounds" + outputs)
    return fig


def save_chain_plots(
    result: ChainResult,
    folder: str | os.PathLike[str],
    *,
    x_train: np.ndarray | None = None,
    kernel: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    grid_size: int = 400,
) -> list[Path]:
    """Write c.png, norms.png, b_diag.png and, for 1-D inputs ``x_train`` (n, 1) with a ``kernel``
    function (x_plot, x_train) -> raw matrix, fits.png on a grid of ``grid_size`` points over their range.
    Every file is written atomically; returns the paths written (none for a chain without a fitted round)."""
    folder = Path(folder)
    if result.n_rounds == 0:
        return []
    paths = []
    for name, make in (("c.png", plot_c), ("norms.png", plot_norms), ("b_diag.png", plot_b_diag)):
        paths.append(atomic_save_figure(make(result), folder / name))
    if x_train is not None and kernel is not None and np.ndim(x_train) == 2 and np.shape(x_train)[1] == 1:
        grid = np.linspace(np.min(x_train), np.max(x_train), grid_size)[:, None]
        fig = plot_fits(result, x_train[:, 0], grid[:, 0], kernel(grid, x_train))
        paths.append(atomic_save_figure(fig, folder / "fits.png"))
    return paths


def _integer_rounds(ax: Any) -> None:
    """Rounds are integers: no 0.25 ticks on the round axis."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round t")


def _axes(ax: Any) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    return fig, fig.add_subplot()
