"""ChainResult: everything a self-distillation chain computed, as an object you can print, plot, save.

Conventions (Mobahi, Farajtabar, Bartlett 2020): G = Kxx / K = V diag(d) V^T with d ascending; c in the
paper's convention (scikit-learn's KernelRidge alpha = K c); round t fits y_t (y_0 = labels) and its
training predictions are y_{t+1} = V z_{t+1}.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from selfdistill.io import atomic_write_json, atomic_write_text, from_jsonable, to_jsonable

_FORMAT = "selfdistill.kernel.ChainResult"
_VERSION = 1


def check_test_kernel(kernel_test_train: Any, n_samples: int) -> np.ndarray:
    """The raw test-by-train matrix [g(x_test, x_train)] as floats, of shape (n_test, K) and finite;
    one-line ValueError otherwise (every result that predicts from a kernel matrix checks it so)."""
    k = np.asarray(kernel_test_train, dtype=float)
    if k.ndim != 2 or k.shape[1] != n_samples:
        raise ValueError(
            f"kernel_test_train must be the raw matrix [g(x_test, x_train)] of shape "
            f"(n_test, {n_samples}), got shape {k.shape}"
        )
    if not np.all(np.isfinite(k)):
        raise ValueError("kernel_test_train contains NaN or infinite values")
    return k


def _from_json_array(value: Any) -> np.ndarray:
    return np.asarray(from_jsonable(value), dtype=float)


@dataclass
class ChainResult:
    """Result of :func:`self_distill`: T fitted (non-collapsed) rounds 0..T-1, to print, plot and save.

    ``print(result)`` shows the per-round table (c_t, ``||y_t||^2 / K``, the training error against the
    original labels, the fit residual, ``tr B_t``); :meth:`theory` puts the paper's bounds beside it.

    Attributes
    ----------
    eigenvalues : ndarray of shape (K,)
        d, the eigenvalues of ``G = Kxx / K``, ascending. (Nystroem route: the r positive eigenvalues of
        the approximated kernel, preceded by one 0 that stands for its null space.)
    eigenvectors : ndarray of shape (K, K) or None
        V; None if not saved (then no :meth:`predict`) and for the Nystroem route.
    c : ndarray of shape (T,) or (T, m)
        c_t per round (paper convention, scikit-learn's ``alpha = K c``); one column per output with
        ``per_output_c`` (inf: that output collapsed).
    z : ndarray of shape (T+1, K) or (T+1, K, m)
        Rotated labels ``z_0..z_T`` (``z_t = V^T y_t``; ``z_T`` are the rotated predictions of the last
        round).
    labels : ndarray of shape (K,) or (K, m)
        y_0, the original labels.
    epsilon : float, ndarray or None
        The constraint eps (None in pure fixed-c mode).
    n_samples : int
        K.
    alpha : float or None
        Fixed-c mode: ``KernelRidge`` alpha of every round (``c = alpha / K``).
    per_output_c : bool
        One c per output column.
    status : str
        ``"completed"`` (n_rounds reached), ``"collapsed"`` (``||y_T||^2 <= K eps`` at round
        ``stop_round``), ``"infeasible"`` (no c reaches eps at round ``stop_round``), ``"max_rounds"``,
        ``"converged"`` (ground-truth mixing, :class:`MixedChainResult`).
    stop_round : int or None
        The round at which the chain stopped (collapse, infeasibility), else None.
    message : str
        Why the chain stopped, in words (e.g. the smallest feasible epsilon).
    timings : dict of str to float
        Seconds spent (eigendecomposition, rounds, ...).

    See Also
    --------
    KernelSelfDistillation : the estimator whose ``result_`` this is.
    selfdistill.kernel.theory.compare_with_theory : what :meth:`theory` returns.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray | None
    c: np.ndarray
    z: np.ndarray
    labels: np.ndarray
    epsilon: float | np.ndarray | None
    n_samples: int
    alpha: float | None = None
    per_output_c: bool = False
    status: str = "completed"
    stop_round: int | None = None
    message: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    # ---- basic quantities -------------------------------------------------------------------------
    @property
    def n_rounds(self) -> int:
        """Number of fitted, non-collapsed rounds T."""
        return int(self.c.shape[0])

    @property
    def collapsed(self) -> bool:
        return self.status == "collapsed"

    @property
    def infeasible(self) -> bool:
        return self.status == "infeasible"

    @property
    def collapse_round(self) -> int | None:
        """Round at which ||y_t||^2 <= K eps was detected (None if the chain did not collapse)."""
        return self.stop_round if self.collapsed else None

    @property
    def n_outputs(self) -> int:
        return 1 if self.labels.ndim == 1 else int(self.labels.shape[1])

    def _c_matrix(self) -> np.ndarray:
        """c as (T, m) (a shared c is repeated over outputs)."""
        c = np.asarray(self.c, dtype=float)
        if c.ndim == 1:
            return np.repeat(c[:, None], self.n_outputs, axis=1)
        return c

    def _z_matrix(self) -> np.ndarray:
        """z as (T+1, K, m)."""
        return self.z if self.z.ndim == 3 else self.z[:, :, None]

    @cached_property
    def a_diag(self) -> np.ndarray:
        """A_t diagonals d / (c_t + d) (eq. 29), shape (T, K) for a shared c, (T, K, m) per output."""
        d = self.eigenvalues
        if self.per_output_c:
            c = self._c_matrix()
            return d[None, :, None] / (c[:, None, :] + d[None, :, None])
        return d[None, :] / (np.asarray(self.c)[:, None] + d[None, :])

    @cached_property
    def b_diag(self) -> np.ndarray:
        """B_t = prod_{i<=t} A_i diagonals (eq. 45), same shape as a_diag."""
        if self.n_rounds == 0:
            return self.a_diag
        return np.cumprod(self.a_diag, axis=0)

    @property
    def z_norms(self) -> np.ndarray:
        """||z_t|| = ||y_t|| for t = 0..T (Frobenius over outputs)."""
        z = self._z_matrix()
        return np.sqrt(np.sum(z * z, axis=(1, 2)))

    @property
    def mean_square_labels(self) -> np.ndarray:
        """||y_t||^2 / K for t = 0..T (summed over outputs): collapse when <= epsilon."""
        return self.z_norms**2 / self.n_samples

    @property
    def effective_basis(self) -> np.ndarray:
        """Number of effective basis functions per round: trace of B_t (mean over outputs if per output)."""
        b = self.b_diag
        s = b.sum(axis=1)
        return s.mean(axis=1) if s.ndim == 2 else s

    @cached_property
    def train_predictions(self) -> np.ndarray:
        """Training predictions of each round, f_t(x_k) = y_{t+1} = V z_{t+1}; shape (T, K[, m])."""
        self._require_vectors()
        z = self.z[1:]
        if z.ndim == 2:
            return z @ self.eigenvectors.T
        return np.einsum("jk,tkm->tjm", self.eigenvectors, z)

    @property
    def train_mse(self) -> np.ndarray:
        """(1/K) ||f_t(x) - y_0||^2 (summed over outputs) per round: the fit to the ORIGINAL labels.
        V is orthogonal, so this is (1/K) ||z_{t+1} - z_0||^2: no eigenvectors needed (works after a reload
        saved without them)."""
        z = self._z_matrix()
        diff = z[1:] - z[:1]
        return np.sum(diff**2, axis=(1, 2)) / self.n_samples

    @property
    def fit_residual(self) -> np.ndarray:
        """(1/K) ||f_t(x) - y_t||^2 per round: equals epsilon at every round with a shared c (eq. 20)."""
        z = self._z_matrix()
        diff = z[1:] - z[:-1]
        return np.sum(diff**2, axis=tuple(range(1, diff.ndim))) / self.n_samples

    # ---- prediction -------------------------------------------------------------------------------
    def _require_vectors(self) -> None:
        if self.eigenvectors is None:
            raise ValueError("this ChainResult was saved without eigenvectors; predictions need them")

    def _check_round(self, round: int | None) -> int:
        if self.infeasible and self.n_rounds == 0:
            raise ValueError(f"no model to predict with: {self.message}")
        if round is None:
            return self.n_rounds - 1
        if int(round) != round or not -self.n_rounds <= round < self.n_rounds:
            raise ValueError(f"round={round!r} out of range: this chain fitted rounds 0..{self.n_rounds - 1}")
        return int(round) % self.n_rounds

    @cached_property
    def _dual_coefs(self) -> np.ndarray:
        """Per round, w_t = V diag(1/(c_t + d)) z_t / K so that f_t(x) = [g(x, x_k)]_k . w_t (eq. 44)."""
        self._require_vectors()
        d = self.eigenvalues
        z = self._z_matrix()[:-1]  # (T, K, m)
        c = self._c_matrix()  # (T, m)
        scaled = z / (c[:, None, :] + d[None, :, None])  # c = inf -> 0
        return np.einsum("jk,tkm->tjm", self.eigenvectors, scaled) / self.n_samples

    def _shape_out(self, pred: np.ndarray) -> np.ndarray:
        return pred[:, 0] if self.labels.ndim == 1 else pred

    def _check_test_kernel(self, kernel_test_train: np.ndarray) -> np.ndarray:
        return check_test_kernel(kernel_test_train, self.n_samples)

    def predict(self, kernel_test_train: np.ndarray, round: int | None = None) -> np.ndarray:
        """f_t at new points, eq. (44) in its stable form ``g_x^T V diag(1/(c_t + d)) z_t``.

        Parameters
        ----------
        kernel_test_train : ndarray of shape (n_test, K)
            The RAW matrix ``[g(x_test, x_train)]`` (no 1/K).
        round : int or None, default=None
            Which round (default: the last fitted one; negative counts from the end).

        Returns
        -------
        ndarray of shape (n_test,) or (n_test, m)
            A chain that collapsed at round 0 predicts 0 (the solution ``f* = 0``).
        """
        k = self._check_test_kernel(kernel_test_train)
        if self.n_rounds == 0:
            self._check_round(None)
            return self._shape_out(np.zeros((k.shape[0], self.n_outputs)))
        t = self._check_round(round)
        return self._shape_out(k @ self._dual_coefs[t])

    def staged_predict(self, kernel_test_train: np.ndarray) -> Iterator[np.ndarray]:
        """Predictions of every fitted round, round 0 first (one zero array if it collapsed at round 0)."""
        k = self._check_test_kernel(kernel_test_train)
        if self.n_rounds == 0:
            yield self.predict(k)
            return
        for t in range(self.n_rounds):
            yield self._shape_out(k @ self._dual_coefs[t])

    # ---- reporting --------------------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """One row per fitted round: c_t, ||y_t||^2/K, train MSE vs y_0, fit residual, trace(B_t)."""
        rows = []
        c = self._c_matrix()
        ms = self.mean_square_labels
        train_mse = self.train_mse
        resid = self.fit_residual
        eff = self.effective_basis
        for t in range(self.n_rounds):
            rows.append(
                {
                    "round": t,
                    "c": c[t].tolist() if self.per_output_c else float(c[t, 0]),
                    "alpha_sklearn": (c[t] * self.n_samples).tolist()
                    if self.per_output_c
                    else float(c[t, 0] * self.n_samples),
                    "label_mean_square": float(ms[t]),
                    "train_mse_vs_y0": float(train_mse[t]),
                    "fit_residual": float(resid[t]),
                    "effective_basis": float(eff[t]),
                }
            )
        return rows

    def __str__(self) -> str:
        head = (
            f"ChainResult: K={self.n_samples}, outputs={self.n_outputs}, "
            + (f"epsilon={_fmt_eps(self.epsilon)}, " if self.epsilon is not None else "")
            + (f"alpha={self.alpha:g} (c = alpha/K), " if self.alpha is not None else "")
            + f"kappa={_kappa(self.eigenvalues):.3g}, rounds={self.n_rounds}, status={self.status}"
        )
        lines = [head, "c in the paper's convention (G = Kxx/K); sklearn KernelRidge alpha = K c"]
        cw = 19 if self.per_output_c else 12  # per output: "min..max" of the outputs' c_t
        cols = (
            f"{'round':>5}  {'c_t':>{cw}}  {'||y_t||^2/K':>12}  {'MSE vs y0':>12}  {'fit resid':>12}  "
            f"{'tr B_t':>9}"
        )
        lines.append(cols)
        for row in self.table():
            c = row["c"]
            c_txt = f"{c:12.5g}" if not isinstance(c, list) else f"{min(c):.3g}..{max(c):.3g}".rjust(cw)
            lines.append(
                f"{row['round']:>5}  {c_txt}  {row['label_mean_square']:12.5g}  "
                f"{row['train_mse_vs_y0']:12.5g}  {row['fit_residual']:12.5g}  {row['effective_basis']:9.4g}"
            )
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"ChainResult(K={self.n_samples}, rounds={self.n_rounds}, status={self.status!r}, "
            f"stop_round={self.stop_round})"
        )

    def theory(self, output: int | None = None) -> Any:
        """The paper's bounds beside what happened (:func:`selfdistill.kernel.theory.compare_with_theory`).

        Parameters
        ----------
        output : int or None, default=None
            With ``per_output_c`` every output column is its own chain (its own c_t and eps): pass
            ``output=j`` for column j's rounds up to its collapse. A shared c has one theory for all outputs.

        Returns
        -------
        selfdistill.kernel.theory.TheoryReport
        """
        if self.epsilon is None or self.alpha is not None:
            raise ValueError(
                "theory() needs an epsilon-constrained chain (c_t must solve eq. 20); this chain used a "
                "fixed c (alpha), for which the paper's bounds do not apply"
            )
        from selfdistill.kernel.theory import compare_with_theory

        if not self.per_output_c:
            if output is not None:
                raise ValueError(
                    "output= is for per_output_c chains; a shared c has one theory for all outputs"
                )
            return compare_with_theory(
                eigenvalues=self.eigenvalues,
                z_norms=self.z_norms,
                c=np.asarray(self.c, dtype=float),
                b_diag=self.b_diag,
                epsilon=float(self.epsilon),
                n_samples=self.n_samples,
            )
        m = self.n_outputs
        if output is None and m == 1:
            output = 0
        if output is None or isinstance(output, bool) or not isinstance(output, (int, np.integer)):
            raise ValueError(
                f"per_output_c: each of the {m} outputs is its own chain; call theory(output=j), "
                f"j in 0..{m - 1}"
            )
        if not 0 <= output < m:
            raise ValueError(f"output={output} is out of range; this chain has outputs 0..{m - 1}")
        c = self._c_matrix()[:, output]
        finite = np.isfinite(c)  # c = inf from the round where this output collapsed
        n_fit = c.size if finite.all() else int(np.argmax(~finite))
        z = self._z_matrix()[: n_fit + 1, :, output]
        b_diag = self.b_diag[:n_fit, :, output] if n_fit else np.empty((0, self.n_samples))
        return compare_with_theory(
            eigenvalues=self.eigenvalues,
            z_norms=np.sqrt(np.sum(z * z, axis=1)),
            c=c[:n_fit],
            b_diag=b_diag,
            epsilon=float(np.broadcast_to(np.asarray(self.epsilon, dtype=float), (m,))[output]),
            n_samples=self.n_samples,
        )

    # ---- persistence ------------------------------------------------------------------------------
    def to_dict(self, include_eigenvectors: bool = True) -> dict[str, Any]:
        """Everything as plain JSON-ready Python (the per-round table included, as ``"summary"``)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "n_samples": self.n_samples,
            "status": self.status,
            "stop_round": self.stop_round,
            "message": self.message,
            "epsilon": to_jsonable(self.epsilon),
            "alpha": self.alpha,
            "per_output_c": self.per_output_c,
            "eigenvalues": to_jsonable(self.eigenvalues),
            "eigenvectors": to_jsonable(self.eigenvectors) if include_eigenvectors else None,
            "c": to_jsonable(self.c),
            "z": to_jsonable(self.z),
            "labels": to_jsonable(self.labels),
            "timings": to_jsonable(self.timings),
            "summary": to_jsonable(self.table()),
        }

    def to_json(self, path: str | os.PathLike, include_eigenvectors: bool = True) -> Path:
        """Write plain JSON (atomically: temp file then os.replace). Eigenvectors are K^2 numbers; leave
        them out (include_eigenvectors=False) to save space, at the cost of predict()."""
        return atomic_write_json(path, self.to_dict(include_eigenvectors), indent=None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChainResult:
        """The inverse of :meth:`to_dict`."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a ChainResult file (format={data.get('format')!r})")
        eps = data["epsilon"]
        if isinstance(eps, list):
            eps = _from_json_array(eps)
        elif eps is not None:
            eps = float(eps)
        n = int(data["n_samples"])
        z = _from_json_array(data["z"])
        c = _from_json_array(data["c"])
        labels = _from_json_array(data["labels"])
        if c.size == 0:  # empty lists lose their trailing shape
            c = c.reshape((0,) + ((labels.shape[1],) if data["per_output_c"] else ()))
        return cls(
            eigenvalues=_from_json_array(data["eigenvalues"]),
            eigenvectors=None if data["eigenvectors"] is None else _from_json_array(data["eigenvectors"]),
            c=c,
            z=z.reshape((-1, np.size(data["eigenvalues"])) + labels.shape[1:]),  # Nystroem: r (+1), not K
            labels=labels,
            epsilon=eps,
            n_samples=n,
            alpha=data["alpha"],
            per_output_c=bool(data["per_output_c"]),
            status=data["status"],
            stop_round=data["stop_round"],
            message=data["message"],
            timings=dict(data.get("timings") or {}),
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ChainResult:
        """Reload a chain written by :meth:`to_json`."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def to_csv(self, path: str | os.PathLike) -> Path:
        """The per-round table as CSV (atomic write)."""
        import csv
        import io

        rows = self.table()
        fields = [
            "round",
            "c",
            "alpha_sklearn",
            "label_mean_square",
            "train_mse_vs_y0",
            "fit_residual",
            "effective_basis",
        ]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            cells = {
                k: " ".join(f"{v:.17g}" for v in row[k]) if isinstance(row[k], list) else row[k]
                for k in fields
            }
            writer.writerow(cells)
        return atomic_write_text(path, buffer.getvalue())

    # ---- plots: drawn by selfdistill.kernel.plots -----------------------------------------------------
    def plot_c(self, ax: Any = None) -> Any:
        """c_t per round (log scale): :func:`selfdistill.kernel.plots.plot_c`."""
        return _plots().plot_c(self, ax=ax)

    def plot_norms(self, ax: Any = None) -> Any:
        """||y_t||^2 / K per round with epsilon: :func:`selfdistill.kernel.plots.plot_norms`."""
        return _plots().plot_norms(self, ax=ax)

    def plot_b_diag(self, rounds: Sequence[int] | None = None, ax: Any = None) -> Any:
        """Diagonal of B_t (eq. 45) per round: :func:`selfdistill.kernel.plots.plot_b_diag`."""
        return _plots().plot_b_diag(self, rounds=rounds, ax=ax)

    def plot_fits(
        self, x_train: np.ndarray, x_plot: np.ndarray, kernel_plot_train: np.ndarray, **kwargs: Any
    ) -> Any:
        """1-D inputs, every round's fit: :func:`selfdistill.kernel.plots.plot_fits` (truth, rounds, ax)."""
        return _plots().plot_fits(self, x_train, x_plot, kernel_plot_train, **kwargs)


def _plots() -> Any:
    from selfdistill.kernel import plots

    return plots


def _fmt_eps(eps: Any) -> str:
    return f"{eps:g}" if np.ndim(eps) == 0 else "[" + ", ".join(f"{e:g}" for e in np.ravel(eps)) + "]"


def _kappa(d: np.ndarray) -> float:
    return float(d[-1] / d[0]) if d.size and d[0] > 0 else float("inf")
