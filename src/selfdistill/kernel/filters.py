"""One spectral engine, many filters: each method is a filter h(d) on ``z = V^T y`` over ONE ``Spectrum``.

With ``G = Kxx / K = V diag(d) V^T`` (Mobahi et al. 2020 convention; scikit-learn's KernelRidge
``alpha = K c``), a spectral filter h with ``h(0) = 0`` gives the training predictions and the function::

    f(X) = V diag(h) z,      f(x) = [g(x, x_k)]_k . V diag(h / d) z / K      (0 where d = 0).

The filters, per eigenvalue d (step = the method's own hyperparameter, the "round")::

    ridge                 d / (d + c)                        c = alpha / K (a grid of alphas)
    self-distillation     prod_{i<=t} d / (d + c_i)          eq. (45); with ground-truth mixing xi the
                                                             recursion of selfdistill.kernel.mixing
                                                             (self_distillation_path; rounds t)
    boosting / iterated   1 - prod_{i<=s} c_i / (d + c_i)    L2-boosting with a KernelRidge(alpha) base
      Tikhonov                                               learner refitting the residuals, s ridge fits
                                                             (Buehlmann & Yu 2003; iterated Tikhonov)
    gradient descent      1 - (1 - eta d)^t                  t steps of gradient descent on
                                                             (1/2K) sum_k (f(x_k) - y_k)^2 in the RKHS
                                                             from f = 0, step eta < 2 / d_max
                                                             (Yao, Rosasco & Caponnetto 2007)
    gradient flow         1 - exp(-s d)                      the same at continuous time s
    spectral cut-off      1{d >= tau}                        keep the n largest eigen-directions
                                                             (truncated kernel PCA regression)

Each path function returns a :class:`FilterPath`: the filter per eigenvalue and step, the effective degrees
of freedom ``tr(h)`` per step, training and test predictions, the GCV score per step, a table, plots and
CSV. The estimators of :mod:`selfdistill.kernel.filter_estimators` wrap these paths in the scikit-learn
API.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from selfdistill.io import atomic_write_csv
from selfdistill.kernel.result import ChainResult, check_test_kernel
from selfdistill.kernel.rounds import check_labels
from selfdistill.kernel.spectrum import Spectrum

#: the filters of this module, by the name FilterPath.method carries.
FILTER_NAMES = ("ridge", "self_distillation", "boosting", "gradient_descent", "gradient_flow", "cutoff")


# ---- the filters, per eigenvalue --------------------------------------------------------------------------


def ridge_filter(d: np.ndarray, c: float) -> np.ndarray:
    """d / (d + c): kernel ridge with multiplier c (paper convention; KernelRidge alpha = K c)."""
    d = np.asarray(d, dtype=float)
    return d / (d + c)


def boosting_filter(d: np.ndarray, cs: Sequence[float]) -> np.ndarray:
    """1 - prod_i c_i / (d + c_i) for each prefix of cs: shape (len(cs), K). Computed as
    -expm1(-sum log1p(d / c_i)), accurate for small d (where the filter is about d sum_i 1/c_i)."""
    d = np.asarray(d, dtype=float)
    logs = np.cumsum(np.log1p(d[None, :] / np.asarray(cs, dtype=float)[:, None]), axis=0)
    return -np.expm1(-logs)


def gradient_descent_filter(d: np.ndarray, step_size: float, steps: Sequence[int]) -> np.ndarray:
    """1 - (1 - eta d)^t for each t in steps: shape (len(steps), K) (accurate for small eta d)."""
    d = np.asarray(d, dtype=float)
    t = np.asarray(steps, dtype=float)[:, None]
    base = 1.0 - step_size * d[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        smooth = -np.expm1(t * np.log1p(-step_size * d[None, :]))
    return np.where(base > 0.0, smooth, 1.0 - base**t)


def gradient_flow_filter(d: np.ndarray, times: Sequence[float]) -> np.ndarray:
    """1 - exp(-s d) for each time s: shape (len(times), K)."""
    d = np.asarray(d, dtype=float)
    return -np.expm1(-np.asarray(times, dtype=float)[:, None] * d[None, :])


def cutoff_filter(d: np.ndarray, n_components: Sequence[int]) -> np.ndarray:
    """1 on the n largest positive eigenvalues (d ascending), 0 elsewhere, for each n: (len(n), K)."""
    d = np.asarray(d, dtype=float)
    rank_from_top = np.empty(d.size, dtype=int)
    rank_from_top[np.argsort(-d, kind="stable")] = np.arange(d.size)
    n = np.asarray(n_components, dtype=int)[:, None]
    return ((rank_from_top[None, :] < n) & (d[None, :] > 0.0)).astype(float)


# ---- the path of one method over one spectrum -----------------------------------------------------------


@dataclass
class FilterPath:
    """A spectral method over one Spectrum: ``filters[s, k] = h_s(d_k)`` for each step s.

    Made by the path functions (:func:`ridge_path`, :func:`self_distillation_path`, :func:`boosting_path`,
    :func:`gradient_descent_path`, :func:`gradient_flow_path`, :func:`cutoff_path`) or from a chain
    (:meth:`from_chain`). It prints its per-step table (parameter, ``tr h``, train MSE, GCV), plots the
    filters (:meth:`plot_filters`) and the effective degrees of freedom (:meth:`plot_dof`), predicts at new
    points and saves CSV.

    Attributes
    ----------
    method : str
        One of ``FILTER_NAMES``: ``"ridge"``, ``"self_distillation"``, ``"boosting"``,
        ``"gradient_descent"``, ``"gradient_flow"``, ``"cutoff"``.
    param_name : str
        Name of the method's hyperparameter (``"alpha"``, ``"n_fits"``, ``"steps"``, ``"time"``,
        ``"n_components"``, ``"round"``).
    params : ndarray of shape (S,)
        Its value at each step.
    filters : ndarray of shape (S, K) or (S, K, m)
        ``h_s(d_k)``; one filter per output (the second shape) for self-distillation with
        ``per_output_c``.
    spectrum : Spectrum
        The eigendecomposition the path was computed on.
    labels : ndarray of shape (K,) or (K, m)
        y.
    info : dict
        The fixed settings (step size, base alpha, c per round, epsilon, xi, ...).
    """

    method: str
    param_name: str
    params: np.ndarray
    filters: np.ndarray
    spectrum: Spectrum
    labels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    # ---- sizes and rotated quantities -----------------------------------------------------------------
    @property
    def n_steps(self) -> int:
        return int(self.filters.shape[0])

    @property
    def n_samples(self) -> int:
        return self.spectrum.n_samples

    @property
    def n_outputs(self) -> int:
        return 1 if self.labels.ndim == 1 else int(self.labels.shape[1])

    @cached_property
    def _z(self) -> np.ndarray:
        """z = V^T y as (K, m)."""
        return self.spectrum.rotate(self.labels.reshape(self.n_samples, -1))

    def _h(self) -> np.ndarray:
        """filters as (S, K, m)."""
        h = self.filters
        return h[:, :, None] if h.ndim == 2 else h

    def _shape_out(self, pred: np.ndarray) -> np.ndarray:
        return pred[..., 0] if self.labels.ndim == 1 else pred

    # ---- what every method reports --------------------------------------------------------------------
    @property
    def dof(self) -> np.ndarray:
        """Effective degrees of freedom tr(h) per step, (S,) (mean over outputs for per-output filters)."""
        s = self.filters.sum(axis=1)
        return s.mean(axis=1) if s.ndim == 2 else s

    @cached_property
    def train_predictions(self) -> np.ndarray:
        """f_s(X) = V diag(h_s) z per step: (S, K[, m])."""
        pred = np.einsum("jk,skm->sjm", self.spectrum.eigenvectors, self._h() * self._z[None])
        return self._shape_out(pred)

    @property
    def residual_sum_of_squares(self) -> np.ndarray:
        """||f_s(X) - y||^2 per step and output, (S, m), from z alone: sum_k (1 - h_k)^2 z_k^2."""
        return np.sum(((1.0 - self._h()) * self._z[None]) ** 2, axis=1)

    @property
    def train_mse(self) -> np.ndarray:
        """(1/K) ||f_s(X) - y||^2 per step (summed over outputs)."""
        return self.residual_sum_of_squares.sum(axis=1) / self.n_samples

    @property
    def gcv(self) -> np.ndarray:
        """Generalized cross-validation per step (Craven & Wahba 1979; Golub, Heath & Wahba 1979), (S,).

        ::

            GCV_s = sum over outputs of (1/K) ||f_s(X) - y||^2 / (1 - tr(h_s) / K)^2   (inf where tr(h) >= K)

        No refits: the trace of the filter is the trace of the smoother matrix ``V diag(h) V^T``. For the
        eps-constrained self-distillation chain c_t depends on the labels, so the smoother is not linear in y
        and GCV is the plug-in value with the c_t found on the data.
        """
        K = self.n_samples
        h = self._h()
        trace = h.sum(axis=1)  # (S, m)
        rss = self.residual_sum_of_squares
        with np.errstate(divide="ignore", invalid="ignore"):
            per_output = np.where(trace < K, rss / K / (1.0 - trace / K) ** 2, np.inf)
        return per_output.sum(axis=1)

    def leverages(self, step: int | None = None) -> np.ndarray:
        """Diagonal of the smoother matrix S = V diag(h_s) V^T: sum_k V_ik^2 h_k; shape (K,) for one output,
        (K, m) with one filter per output, (K, 1) for a filter shared by m outputs."""
        h = self._h()[self._check_step(step)]  # (K, m)
        return self._shape_out((self.spectrum.eigenvectors**2) @ h)

    def loo_residuals(self, step: int | None = None) -> np.ndarray:
        """The leave-one-out shortcut (y_i - f(x_i)) / (1 - S_ii), (K[, m]). EXACT for kernel ridge (the
        refit without point i with the same alpha); for other filters only an approximation."""
        s = self._check_step(step)
        resid = self.labels - self.train_predictions[s]
        return resid / (1.0 - self.leverages(s))

    # ---- prediction -----------------------------------------------------------------------------------
    def _check_step(self, step: int | None) -> int:
        if self.n_steps == 0:
            raise ValueError("this path has no steps")
        if step is None:
            return self.n_steps - 1
        if isinstance(step, bool) or int(step) != step or not -self.n_steps <= step < self.n_steps:
            raise ValueError(f"step={step!r} out of range: this path has steps 0..{self.n_steps - 1}")
        return int(step) % self.n_steps

    @cached_property
    def _dual(self) -> np.ndarray:
        """(S, K, m) weights w_s = V diag(h_s / d) z / K so that f_s(x) = [g(x, x_k)]_k . w_s."""
        d = self.spectrum.eigenvalues
        inv = np.divide(1.0, d, out=np.zeros_like(d), where=d > 0.0)
        scaled = self._h() * (inv[:, None] * self._z)[None]
        return np.einsum("jk,skm->sjm", self.spectrum.eigenvectors, scaled) / self.n_samples

    def _check_test_kernel(self, kernel_test_train: np.ndarray) -> np.ndarray:
        return check_test_kernel(kernel_test_train, self.n_samples)

    def predict(self, kernel_test_train: np.ndarray, step: int | None = None) -> np.ndarray:
        """f_s at new points.

        Parameters
        ----------
        kernel_test_train : ndarray of shape (n_test, K)
            The RAW matrix ``[g(x_test, x_train)]`` (no 1/K).
        step : int or None, default=None
            Which step (default: the last; negative counts from the end).

        Returns
        -------
        ndarray of shape (n_test,) or (n_test, m)
        """
        k = self._check_test_kernel(kernel_test_train)
        return self._shape_out(k @ self._dual[self._check_step(step)])

    def test_predictions(self, kernel_test_train: np.ndarray) -> np.ndarray:
        """Predictions of every step at once: (S, n_test[, m])."""
        k = self._check_test_kernel(kernel_test_train)
        return self._shape_out(np.einsum("nj,sjm->snm", k, self._dual))

    def staged_predict(self, kernel_test_train: np.ndarray) -> Iterator[np.ndarray]:
        """Predictions of every step in turn, step 0 first (from the raw test-by-train kernel matrix)."""
        k = self._check_test_kernel(kernel_test_train)
        for s in range(self.n_steps):
            yield self._shape_out(k @ self._dual[s])

    # ---- reporting --------------------------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """One row per step: the parameter, tr(h), train MSE against y, GCV."""
        dof, mse, gcv = self.dof, self.train_mse, self.gcv
        return [
            {
                "step": s,
                self.param_name: float(self.params[s]),
                "dof": float(dof[s]),
                "train_mse": float(mse[s]),
                "gcv": float(gcv[s]),
            }
            for s in range(self.n_steps)
        ]

    def __str__(self) -> str:
        settings = ", ".join(
            f"{k}={_fmt(v)}"
            for k, v in self.info.items()
            if isinstance(v, int | float | str | np.number) and not isinstance(v, bool)
        )  # scalar settings only: info["chain"] (a ChainResult) is not one, though np.ndim says 0
        lines = [
            f"FilterPath: {self.method}, K={self.n_samples}, outputs={self.n_outputs}, steps={self.n_steps}"
            + (f", {settings}" if settings else ""),
            f"{'step':>5}  {self.param_name:>14}  {'tr h (dof)':>10}  {'train MSE':>12}  {'GCV':>12}",
        ]
        for row in self.table():
            lines.append(
                f"{row['step']:>5}  {row[self.param_name]:14.6g}  {row['dof']:10.4g}  "
                f"{row['train_mse']:12.5g}  "
                f"{row['gcv']:12.5g}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"FilterPath(method={self.method!r}, K={self.n_samples}, steps={self.n_steps})"

    def to_csv(self, path: str | os.PathLike) -> Path:
        """The per-step table as CSV (atomic write)."""
        return atomic_write_csv(path, self.table(), ["step", self.param_name, "dof", "train_mse", "gcv"])

    def plot_filters(self, steps: Sequence[int] | None = None, ax: Any = None) -> Any:
        """h_s(d_k) against the eigenvalue d_k (log scale), one line per step (at most 8 by default)."""
        fig, ax = _axes(ax)
        d = self.spectrum.eigenvalues
        pos = d > 0
        h = self.filters if self.filters.ndim == 2 else self.filters.mean(axis=2)
        if steps is None:
            steps = np.unique(np.linspace(0, self.n_steps - 1, min(self.n_steps, 8)).round().astype(int))
        for s in steps:
            ax.semilogx(d[pos], h[s][pos], marker=".", label=f"{self.param_name}={_fmt(self.params[s])}")
        ax.set_xlabel("eigenvalue d_k of G = Kxx / K")
        ax.set_ylabel("filter h(d_k)")
        ax.set_title(f"{self.method}: spectral filter per step")
        ax.legend(fontsize="small")
        return fig

    def plot_dof(self, ax: Any = None) -> Any:
        """Effective degrees of freedom tr(h) per step."""
        fig, ax = _axes(ax)
        ax.plot(np.arange(self.n_steps), self.dof, marker="o")
        ax.set_xlabel("step")
        ax.set_ylabel("tr(h) (effective degrees of freedom)")
        ax.set_title(f"{self.method}: effective degrees of freedom")
        return fig

    # ---- from a self-distillation chain -------------------------------------------------------------------
    @classmethod
    def from_chain(cls, chain: ChainResult, spectrum: Spectrum | None = None) -> FilterPath:
        """The chain's rounds as a path: filters = ``B_t`` (eq. 45), or the mixing filter when xi != 1.

        Parameters
        ----------
        chain : ChainResult
            A fitted chain (:func:`self_distill`, ``KernelSelfDistillation.result_``).
        spectrum : Spectrum or None, default=None
            The Spectrum the chain was fitted on (default: rebuilt from the chain's eigenvalues and
            eigenvectors, which must have been kept).

        Returns
        -------
        FilterPath
            ``method="self_distillation"``, one step per round.
        """
        if spectrum is None:
            if chain.eigenvectors is None:
                raise ValueError("this ChainResult was saved without eigenvectors; pass its Spectrum")
            spectrum = Spectrum(chain.eigenvalues, chain.eigenvectors, chain.n_samples)
        info: dict[str, Any] = {"status": chain.status}
        if chain.epsilon is not None:
            info["epsilon"] = chain.epsilon
        if chain.alpha is not None:
            info["alpha"] = chain.alpha
        xi_rounds = getattr(chain, "xi_rounds", None)
        if xi_rounds is not None:
            info["xi_rounds"] = np.asarray(xi_rounds)
        info["c"] = np.asarray(chain.c)
        return cls(
            method="self_distillation",
            param_name="round",
            params=np.arange(chain.n_rounds, dtype=float),
            filters=np.asarray(chain.b_diag, dtype=float).reshape((chain.n_rounds,) + chain.b_diag.shape[1:]),
            spectrum=spectrum,
            labels=np.asarray(chain.labels, dtype=float),
            info=info,
        )


# ---- path functions (one per method) ---------------------------------------------------------------------


def _prepare(gram: np.ndarray | Spectrum, y: np.ndarray) -> tuple[Spectrum, np.ndarray]:
    spectrum = gram if isinstance(gram, Spectrum) else Spectrum.from_gram(gram)
    return spectrum, check_labels(y, spectrum.n_samples)


def _positive_grid(values: Any, name: str, *, integer: bool = False) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(
            f"{name} must be a positive number or a non-empty 1-D sequence of them, got {values!r}"
        )
    if integer and np.any(arr != np.round(arr)):
        raise ValueError(f"{name} must be positive integers, got {values!r}")
    return arr


def ridge_path(gram: np.ndarray | Spectrum, y: np.ndarray, alphas: Any) -> FilterPath:
    """Kernel ridge for each alpha: filter ``d / (d + c)`` with ``c = alpha / K``.

    Parameters
    ----------
    gram : ndarray of shape (K, K) or Spectrum
        The RAW kernel matrix ``[g(x_j, x_k)]``, or its :class:`Spectrum` (one eigendecomposition for all
        paths).
    y : ndarray of shape (K,) or (K, m)
        Labels.
    alphas : float or sequence of float
        scikit-learn ``KernelRidge`` alphas (``alpha = K c``), one step each.

    Returns
    -------
    FilterPath
    """
    spectrum, y = _prepare(gram, y)
    alphas = _positive_grid(alphas, "alphas")
    c = alphas / spectrum.n_samples
    filters = spectrum.eigenvalues[None, :] / (spectrum.eigenvalues[None, :] + c[:, None])
    return FilterPath("ridge", "alpha", alphas, filters, spectrum, y)


def boosting_path(
    gram: np.ndarray | Spectrum,
    y: np.ndarray,
    alpha: Any,
    n_steps: int | None = None,
    *,
    steps: Any = None,
) -> FilterPath:
    """L2-boosting with a ``KernelRidge(alpha)`` base learner refitting the residuals.

    ``f_1 = ridge(y)``, ``f_s = f_{s-1} + ridge(y - f_{s-1}(X))``. Step s (0-based) is s + 1 ridge fits:
    filter ``1 - prod_{i<=s} c_i / (d + c_i)`` with ``c_i = alpha_i / K``.

    Parameters
    ----------
    gram : ndarray of shape (K, K) or Spectrum
        The RAW kernel matrix, or its :class:`Spectrum`.
    y : ndarray of shape (K,) or (K, m)
        Labels.
    alpha : float or sequence of float
        One value (then ``n_steps`` fits, reported after each) or one per fit (iterated Tikhonov,
        ``n_steps = len(alpha)``).
    n_steps : int or None, default=None
        Number of ridge fits with one alpha.
    steps : sequence of int or None, default=None
        With one alpha and no ``n_steps``: report only these numbers of fits (any positive integers, e.g. a
        log grid up to 1e8: the filter ``1 - (c / (d + c))^s`` is closed form) instead of 1..n_steps.

    Returns
    -------
    FilterPath
        ``param_name="n_fits"``.
    """
    spectrum, y = _prepare(gram, y)
    alphas = _positive_grid(alpha, "alpha")
    if steps is not None:
        if alphas.size != 1 or n_steps is not None:
            raise ValueError("steps= needs one alpha and no n_steps (it replaces the fits 1..n_steps)")
        fits = _positive_grid(steps, "steps", integer=True)
        c = alphas[0] / spectrum.n_samples
        filters = -np.expm1(-fits[:, None] * np.log1p(spectrum.eigenvalues[None, :] / c))
        return FilterPath("boosting", "n_fits", fits, filters, spectrum, y, {"alpha": float(alphas[0])})
    if alphas.size == 1:
        if n_steps is None or isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 1:
            raise ValueError(f"n_steps={n_steps!r} must be a positive integer (the number of ridge fits)")
        alphas = np.full(int(n_steps), alphas[0])
    elif n_steps is not None and n_steps != alphas.size:
        raise ValueError(f"n_steps={n_steps} but {alphas.size} alphas were given; give one or the other")
    filters = boosting_filter(spectrum.eigenvalues, alphas / spectrum.n_samples)
    info = {"alpha": float(alphas[0])} if np.all(alphas == alphas[0]) else {"alphas": alphas}
    fits = np.arange(1, alphas.size + 1, dtype=float)
    return FilterPath("boosting", "n_fits", fits, filters, spectrum, y, info)


def default_step_size(spectrum: Spectrum) -> float:
    """eta = 1 / d_max: every eigen-direction moves monotonically towards the fit (1 - eta d in [0, 1))."""
    d_max = float(spectrum.eigenvalues[-1])
    if d_max <= 0.0:
        raise ValueError("the kernel matrix is zero: gradient descent cannot move")
    return 1.0 / d_max


def gradient_descent_path(
    gram: np.ndarray | Spectrum, y: np.ndarray, steps: Any, step_size: float | None = None
) -> FilterPath:
    """Gradient descent on ``(1/2K) sum_k (f(x_k) - y_k)^2`` in the RKHS from f = 0 (kernel Landweber).

    ``f_{t+1}(X) = f_t(X) + eta G (y - f_t(X))``; filter ``1 - (1 - eta d)^t`` after t steps.

    Parameters
    ----------
    gram : ndarray of shape (K, K) or Spectrum
        The RAW kernel matrix, or its :class:`Spectrum`.
    y : ndarray of shape (K,) or (K, m)
        Labels.
    steps : int or sequence of int
        The step counts to report (positive integers; closed form, so large counts cost nothing).
    step_size : float or None, default=None
        eta in G-units (``G = Kxx / K``): default ``1 / d_max``; it must satisfy ``0 < eta < 2 / d_max``
        (otherwise the iteration diverges).

    Returns
    -------
    FilterPath
        ``param_name="steps"``.
    """
    spectrum, y = _prepare(gram, y)
    steps = _positive_grid(steps, "steps", integer=True)
    eta = default_step_size(spectrum) if step_size is None else float(step_size)
    limit = 2.0 / float(spectrum.eigenvalues[-1])
    if not (np.isfinite(eta) and 0.0 < eta < limit):
        raise ValueError(
            f"step_size={step_size!r} must be in (0, 2 / d_max) = (0, {limit:.6g}) (G = Kxx / K), else "
            "gradient "
            "descent diverges; use step_size=None (1 / d_max)"
        )
    filters = gradient_descent_filter(spectrum.eigenvalues, eta, steps)
    return FilterPath("gradient_descent", "steps", steps, filters, spectrum, y, {"step_size": eta})


def gradient_flow_path(gram: np.ndarray | Spectrum, y: np.ndarray, times: Any) -> FilterPath:
    """Gradient flow ``df/ds = G (y - f)`` from f = 0: filter ``1 - exp(-s d)``.

    The continuous-time limit of gradient descent (``s = eta t``).

    Parameters
    ----------
    gram : ndarray of shape (K, K) or Spectrum
        The RAW kernel matrix, or its :class:`Spectrum`.
    y : ndarray of shape (K,) or (K, m)
        Labels.
    times : float or sequence of float
        The times s to report (G-units, positive).

    Returns
    -------
    FilterPath
        ``param_name="time"``.
    """
    spectrum, y = _prepare(gram, y)
    times = _positive_grid(times, "times")
    return FilterPath(
        "gradient_flow", "time", times, gradient_flow_filter(spectrum.eigenvalues, times), spectrum, y
    )


def cutoff_path(gram: np.ndarray | Spectrum, y: np.ndarray, n_components: Any = None) -> FilterPath:
    """Spectral cut-off: least squares on the n leading eigen-directions of G.

    Filter ``1{d >= tau}``, tau the n-th largest eigenvalue (truncated kernel PCA regression).

    Parameters
    ----------
    gram : ndarray of shape (K, K) or Spectrum
        The RAW kernel matrix, or its :class:`Spectrum`.
    y : ndarray of shape (K,) or (K, m)
        Labels.
    n_components : int, sequence of int or None, default=None
        The values of n (default 1..rank of G); n above the rank keeps all.

    Returns
    -------
    FilterPath
        ``param_name="n_components"``.
    """
    spectrum, y = _prepare(gram, y)
    rank = int(np.count_nonzero(spectrum.eigenvalues > 0))
    if n_components is None:
        n_components = np.arange(1, max(rank, 1) + 1)
    n = _positive_grid(n_components, "n_components", integer=True)
    filters = cutoff_filter(spectrum.eigenvalues, n)
    return FilterPath("cutoff", "n_components", n, filters, spectrum, y, {"rank": rank})


def self_distillation_path(
    gram: np.ndarray | Spectrum, y: np.ndarray, epsilon: Any = None, **kwargs: Any
) -> FilterPath:
    """The self-distillation chain as a path over its rounds: filter ``B_t`` (eq. 45), or the mixing filter.

    Parameters
    ----------
    gram : ndarray of shape (K, K) or Spectrum
        The RAW kernel matrix, or its :class:`Spectrum`.
    y : ndarray of shape (K,) or (K, m)
        Labels.
    epsilon : float or None, default=None
        The constraint of eq. (1), as in :func:`self_distill`.
    **kwargs
        Passed to :func:`self_distill` (``n_rounds``, ``alpha``, ``xi``, ``per_output_c``, ...).

    Returns
    -------
    FilterPath
        ``param_name="round"``; ``info["chain"]`` holds the :class:`ChainResult`. An infeasible chain
        raises ValueError.
    """
    from selfdistill.kernel.rounds import self_distill

    spectrum, y = _prepare(gram, y)
    chain = self_distill(spectrum, y, epsilon, **kwargs)
    if chain.infeasible and chain.n_rounds == 0:
        raise ValueError(chain.message)
    path = FilterPath.from_chain(chain, spectrum)
    path.info["chain"] = chain
    return path


def geometric_steps(max_steps: int, n: int = 40) -> np.ndarray:
    """About n distinct integers from 1 to max_steps, evenly spaced in log scale (a grid of step counts)."""
    if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"max_steps={max_steps!r} must be a positive integer")
    return np.unique(np.round(np.geomspace(1, int(max_steps), n)).astype(int)).astype(float)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float | np.floating) else str(value)


def _axes(ax: Any) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    return fig, fig.add_subplot()
