"""The self-distillation rounds in the eigenbasis (Mobahi, Farajtabar, Bartlett 2020, Section 3).

One eigendecomposition G = V diag(d) V^T (G = Kxx / K), then per round t, on O(K) work:
  c_t = root of e(c) = (1/K) sum_k (c z_k / (c + d_k))^2 - eps                          (20)
        bracketed by (23)-(24), found by brentq on log c;
  A_t = diag(d / (c_t + d)),  z_{t+1} = A_t z_t                                         (29)-(30)
  B_t = prod_{i<=t} A_i                                                                 (45)
  f_t(x) = g_x^T V diag(1 / (c_t + d)) z_t                                              (44)
Collapse (||y_t||^2 <= K eps: f = 0 from then on) and infeasibility (labels' null-space part of G alone
has mean square >= eps) are outcomes reported in the ChainResult, not crashes.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import brentq

from selfdistill.kernel.mixing import MixedChainResult, check_xi, is_mixing, xi_of_round
from selfdistill.kernel.result import ChainResult
from selfdistill.kernel.spectrum import Spectrum


def constraint_residual(c: float, eigenvalues: np.ndarray, z_sq: np.ndarray, n_samples: int) -> float:
    """``(1/K) sum_k (c z_k / (c + d_k))^2``: the mean squared training residual of the ridge fit with
    multiplier c (eq. 20 without the ``- eps``).

    Parameters
    ----------
    c : float
        The multiplier (paper convention; inf gives ``||z||^2 / K``).
    eigenvalues : ndarray of shape (K,)
        d, the eigenvalues of ``G = Kxx / K``.
    z_sq : ndarray of shape (K,)
        ``z_k^2`` (summed over outputs for a shared c).
    n_samples : int
        K.

    Returns
    -------
    float
    """
    if np.isinf(c):
        return float(np.sum(z_sq)) / n_samples
    return float(np.sum(z_sq / (1.0 + eigenvalues / c) ** 2)) / n_samples


# Labels within round-off of the collapse threshold ||y_t||^2 = K eps count as collapsed: c_t -> infinity
# there, and the engine and solve_c must agree on the decision (one comparison, one tolerance).
COLLAPSE_RTOL = 64 * np.finfo(float).eps
# Ground-truth mixing (xi != 1) run until collapse stops as "converged" once the mixed targets change by at
# most this much relative to their size (they converge geometrically to a fixed point that never collapses).
MIXING_RTOL = 1e-13


def is_collapsed(energy, n_samples: int, epsilon):
    """||y_t||^2 <= K eps (up to COLLAPSE_RTOL): the solution of (1) is f = 0 from this round on."""
    return energy <= n_samples * epsilon * (1.0 + COLLAPSE_RTOL)


def solve_c(eigenvalues: np.ndarray, z_sq: np.ndarray, n_samples: int, epsilon: float) -> float:
    """The multiplier ``c > 0`` with ``e(c) = 0`` (eq. 20), for a non-collapsed, feasible problem.

    Parameters
    ----------
    eigenvalues : ndarray of shape (K,)
        d, the eigenvalues of ``G = Kxx / K`` (ascending, exact zeros for the null space).
    z_sq : ndarray of shape (K,)
        ``z_k^2``, the squared rotated labels (summed over outputs for a shared c).
    n_samples : int
        K.
    epsilon : float
        The constraint eps of eq. (1).

    Returns
    -------
    float
        c_t, paper convention (scikit-learn's ``alpha = K c``).

    Notes
    -----
    With a singular G the null-space part of the labels is a constant residual; the bracket (23)-(24)
    then applies to the positive part of the spectrum with ``eps' = eps - null_energy / K``.
    Root-finding is done in ``u = log c`` (``scipy.optimize.brentq``), robust over many orders of magnitude.
    """
    positive = eigenvalues > 0.0
    d = eigenvalues[positive]
    zp = z_sq[positive]
    eps_pos = epsilon - float(np.sum(z_sq[~positive])) / n_samples
    norm_pos = float(np.sqrt(np.sum(zp)))
    root_k_eps = float(np.sqrt(n_samples * eps_pos))
    if eps_pos <= 0.0 or is_collapsed(float(np.sum(z_sq)), n_samples, epsilon):
        raise ValueError("solve_c needs a feasible, non-collapsed problem (check collapse/feasibility first)")
    gap = norm_pos - root_k_eps
    lo = float(d[0]) * root_k_eps / gap  # (23)
    hi = float(d[-1]) * root_k_eps / gap  # (24)

    def e_log(u: float) -> float:
        return float(np.sum(zp / (1.0 + d * np.exp(-u)) ** 2)) / n_samples - eps_pos

    u_lo, u_hi = np.log(lo) - 1e-9, np.log(hi) + 1e-9
    for _ in range(64):  # the bracket is exact in theory; widen only against round-off
        if e_log(u_lo) <= 0.0:
            break
        u_lo -= 1.0
    for _ in range(64):
        if e_log(u_hi) >= 0.0:
            break
        u_hi += 1.0
    f_lo, f_hi = e_log(u_lo), e_log(u_hi)
    if f_lo == 0.0:
        return float(np.exp(u_lo))
    if f_hi == 0.0:
        return float(np.exp(u_hi))
    u = brentq(e_log, u_lo, u_hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500)
    return float(np.exp(u))


FULL_RANK_HINT = (
    "a kernel whose matrix has full rank (for rbf / laplacian: a larger gamma, i.e. a narrower kernel)"
)


def _null_space_cause(null: np.ndarray, n_samples: int) -> str:
    return (
        f"{int(null.sum())} of {n_samples} eigenvalues are zero up to round-off, "
        "d <= K * machine-eps * d_max: the kernel matrix is singular or numerically singular, e.g. a "
        "low-rank kernel, one vanishing at a training point, or a very smooth kernel such as rbf with a "
        "small gamma"
    )


def check_labels(y: Any, n_samples: int) -> np.ndarray:
    """``y`` as a float array of shape (K,) or (K, m) matching the kernel matrix's K points, finite, and
    with a sum of squares that float64 can hold; one-line ValueError otherwise."""
    y = np.asarray(y, dtype=float)
    if y.ndim not in (1, 2) or y.shape[0] != n_samples:
        raise ValueError(
            f"y must have shape ({n_samples},) or ({n_samples}, n_outputs) to match the kernel matrix "
            f"({n_samples} points), got shape {y.shape}"
        )
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinite values; remove or impute them")
    check_label_scale(y)
    return y


def check_label_scale(y: np.ndarray) -> None:
    """One-line ValueError when ||y||^2 overflows float64 (|y| beyond about 1e154): every quantity of the
    chain (||y_t||^2 / K against eps, eq. 20) would be inf or NaN. ``y`` must already be finite."""
    with np.errstate(over="ignore"):
        energy = float(np.sum(np.square(y, dtype=float)))
    if not np.isfinite(energy):
        raise ValueError(
            f"y is too large: the sum of its squares overflows float64 (largest |y| = "
            f"{float(np.max(np.abs(y))):.3g}); rescale the labels, e.g. divide y by its standard deviation "
            "(and an absolute epsilon by its square)"
        )


def _as_epsilon(epsilon, n_outputs: int, per_output_c: bool, name: str = "epsilon"):
    eps = np.asarray(epsilon, dtype=float)
    if eps.ndim == 0:
        eps_value = float(eps)
        if not np.isfinite(eps_value) or eps_value <= 0.0:
            raise ValueError(
                f"{name}={epsilon!r} must be a finite number > 0 (the allowed mean squared training "
                "residual, eq. 1); eps = 0 would interpolate and every round would repeat the same model"
            )
        return eps_value if not per_output_c else np.full(n_outputs, eps_value)
    if not per_output_c or eps.shape != (n_outputs,):
        raise ValueError(
            f"{name} must be a scalar (or, with per_output_c=True, one value per output column: shape "
            f"({n_outputs},)), got shape {eps.shape}"
        )
    if not np.all(np.isfinite(eps)) or np.any(eps <= 0.0):
        raise ValueError(f"{name} must be finite and > 0 for every output, got {eps}")
    return eps.astype(float)


def self_distill(
    gram: np.ndarray | Spectrum,
    y: np.ndarray,
    epsilon: float | np.ndarray | None = None,
    *,
    n_rounds: int | None = None,
    alpha: float | None = None,
    per_output_c: bool = False,
    max_rounds: int = 1000,
    on_infeasible: str = "report",
    symmetry_rtol: float | None = None,
    psd_rtol: float | None = None,
    xi: float | Sequence[float] = 1.0,
) -> ChainResult:
    """Exact multi-round kernel self-distillation (Mobahi et al. 2020) from ONE eigendecomposition.

    Parameters
    ----------
    gram : ndarray of shape (K, K) or Spectrum
        The RAW kernel matrix ``[g(x_j, x_k)]`` (no 1/K), or a precomputed :class:`Spectrum` (reuse one
        eigendecomposition across many epsilons; a :class:`LowRankSpectrum` runs the Nystroem route).
    y : ndarray of shape (K,) or (K, m)
        Labels; m outputs are m regressions with the same regularizer.
    epsilon : float, ndarray of shape (m,) or None, default=None
        The constraint ``(1/K) sum_k (f(x_k) - y_k)^2 <= eps`` of eq. (1). With several outputs and a
        shared c (the default) the constraint is on the sum over outputs,
        ``(1/K) sum_k ||f(x_k) - y_k||^2 <= eps``, so one c_t serves all columns; ``per_output_c=True``
        solves each column with its own c (``epsilon`` may then be one value per column).
    n_rounds : int or None, default=None
        Rounds to fit (round 0 fits y); None runs until collapse (at most ``max_rounds``).
    alpha : float or None, default=None
        Fixed-c mode: every round is plain kernel ridge with ``c = alpha / K``, i.e. what
        ``sklearn.kernel_ridge.KernelRidge(alpha=alpha)`` does on the raw matrix, applied to the previous
        round's predictions. ``epsilon`` is then optional and only used to detect collapse; give
        ``n_rounds`` or ``epsilon``.
    per_output_c : bool, default=False
        One c per output column instead of one shared c per round.
    max_rounds : int, default=1000
        Cap on the number of rounds when ``n_rounds`` is None.
    on_infeasible : {"report", "raise"}, default="report"
        ``"report"``: return a ChainResult with status ``"infeasible"``; ``"raise"``: ValueError.
    symmetry_rtol, psd_rtol : float or None, default=None
        Tolerances of :meth:`Spectrum.from_gram` (None: its defaults); ignored for a Spectrum.
    xi : float or sequence of float, default=1.0
        Ground-truth mixing (Borup & Andersen 2021; :mod:`selfdistill.kernel.mixing`): round t >= 1 fits
        ``xi * f_{t-1}(X) + (1 - xi) * y`` instead of ``f_{t-1}(X)``. 1 is the paper; a sequence gives one
        xi per round t = 1, 2, .... With some xi != 1 the result is a :class:`MixedChainResult`, and a chain
        run until collapse (``n_rounds=None``) also stops, with status ``"converged"``, once the targets
        stop changing.

    Returns
    -------
    ChainResult
        c per round (paper convention ``G = Kxx / K``; ``alpha = K c``), ``z_0..z_T``, the ``B_t``
        diagonals (eq. 45), training predictions, and the status: ``"completed"``, ``"collapsed"``,
        ``"infeasible"``, ``"max_rounds"``, or ``"converged"`` (xi != 1). A :class:`MixedChainResult` when
        some xi != 1.

    Notes
    -----
    Per round t, on O(K) work: c_t is the root of eq. (20), bracketed by (23)-(24);
    ``A_t = diag(d / (c_t + d))`` and ``z_{t+1} = A_t z_t`` (29)-(30); the function of the round is
    ``f_t(x) = g_x^T V diag(1 / (c_t + d)) z_t`` (44).

    Examples
    --------
    >>> import numpy as np
    >>> from selfdistill.kernel import kernel_matrix, self_distill
    >>> x = np.linspace(0, 1, 30)[:, None]
    >>> y = np.sin(2 * np.pi * x[:, 0])
    >>> chain = self_distill(kernel_matrix(x, kernel="rbf", gamma=10.0), y, epsilon=0.05)
    >>> chain.status
    'collapsed'
    >>> bool(np.all(np.diff(chain.c) > 0))  # c_t grows every round: the regularization is amplified
    True
    """
    t_start = time.perf_counter()
    if isinstance(gram, Spectrum):
        spectrum = gram
    else:
        kwargs = {}
        if symmetry_rtol is not None:
            kwargs["symmetry_rtol"] = symmetry_rtol
        if psd_rtol is not None:
            kwargs["psd_rtol"] = psd_rtol
        spectrum = Spectrum.from_gram(gram, **kwargs)
    t_eigh = time.perf_counter()
    K = spectrum.n_samples
    d = spectrum.eigenvalues

    y = check_labels(y, K)
    single_output = y.ndim == 1
    Y = y.reshape(K, -1)
    m = Y.shape[1]
    if on_infeasible not in ("report", "raise"):
        raise ValueError(f"on_infeasible={on_infeasible!r} must be 'report' or 'raise'")
    if n_rounds is not None and (int(n_rounds) != n_rounds or n_rounds < 1):
        raise ValueError(f"n_rounds={n_rounds!r} must be a positive integer or None (until collapse)")
    if int(max_rounds) != max_rounds or max_rounds < 1:
        raise ValueError(f"max_rounds={max_rounds!r} must be a positive integer")

    if alpha is None:
        if epsilon is None:
            raise ValueError("epsilon is required (or pass alpha for fixed-c mode)")
        eps = _as_epsilon(epsilon, m, per_output_c)
        c_fixed = None
    else:
        alpha_value = float(alpha)
        if not np.isfinite(alpha_value) or alpha_value <= 0.0:
            raise ValueError(f"alpha={alpha!r} must be a finite number > 0 (fixed-c mode: c = alpha / K)")
        eps = None if epsilon is None else _as_epsilon(epsilon, m, per_output_c)
        if n_rounds is None and eps is None:
            raise ValueError("fixed-c mode (alpha) needs n_rounds, or epsilon to stop at collapse")
        c_fixed = alpha_value / K

    xi = check_xi(xi)
    mixing = is_mixing(xi)
    limit = int(n_rounds) if n_rounds is not None else int(max_rounds)
    null = spectrum.null_mask
    Z = spectrum.rotate(Y)  # (K, m): the rotated targets of the current round
    Z0 = Z
    zs = [Z]  # z_0 = V^T y, then the rotated training predictions of each round
    targets = [Z]  # mixing: the rotated targets of each round
    xi_used = [0.0]
    cs: list[np.ndarray] = []
    status, stop_round, message = "completed", None, ""
    t = 0
    while True:
        if t == limit:
            if n_rounds is None:
                status, stop_round = "max_rounds", t
                message = f"stopped after max_rounds={max_rounds} rounds without collapse"
                warnings.warn(message + "; raise max_rounds or epsilon", RuntimeWarning, stacklevel=2)
            break
        energy = np.sum(Z * Z, axis=0)  # ||y_t||^2 per output
        if per_output_c:
            c_t = np.full(m, np.inf)
            collapsed = is_collapsed(energy, K, eps) if eps is not None else np.zeros(m, dtype=bool)
            if np.all(collapsed):
                status, stop_round = "collapsed", t
                message = f"collapse at round {t}: ||y_t||^2 <= K eps for every output, f = 0 from here on"
                break
            infeasible_cols = []
            for o in np.flatnonzero(~collapsed):
                if c_fixed is not None:
                    c_t[o] = c_fixed
                    continue
                null_ms = float(np.sum(Z[null, o] ** 2)) / K
                if null_ms >= eps[o]:
                    infeasible_cols.append((o, null_ms))
                    continue
                c_t[o] = solve_c(d, Z[:, o] ** 2, K, float(eps[o]))
            if infeasible_cols:
                status, stop_round = "infeasible", t
                message = "; ".join(
                    f"output {o}: infeasible at round {t}: the labels' component in the null space of G "
                    f"alone has mean square {ms:.6g} >= epsilon={eps[o]:.6g}; use epsilon > {ms:.6g}"
                    for o, ms in infeasible_cols
                ) + f" ({_null_space_cause(null, K)}); or {FULL_RANK_HINT}"
                break
            A = d[:, None] / (c_t[None, :] + d[:, None])  # (K, m); c = inf -> 0
        else:
            total = float(np.sum(energy))
            if eps is not None and is_collapsed(total, K, eps):
                status, stop_round = "collapsed", t
                message = (
                    f"collapse at round {t}: ||y_t||^2/K = {total / K:.6g} <= epsilon={eps:.6g}, "
                    "f = 0 from here on"
                )
                break
            if c_fixed is not None:
                c_scalar = c_fixed
            else:
                null_ms = float(np.sum(Z[null] ** 2)) / K
                if null_ms >= eps:
                    status, stop_round = "infeasible", t
                    message = (
                        f"infeasible at round {t}: the labels' component in the null space of G = Kxx/K "
                        f"({_null_space_cause(null, K)}) alone has mean square {null_ms:.6g} >= "
                        f"epsilon={eps:.6g}; no fit can reach the constraint. Use epsilon > "
                        f"{null_ms:.6g}, or {FULL_RANK_HINT}"
                    )
                    break
                c_scalar = solve_c(d, np.sum(Z * Z, axis=1), K, eps)
            c_t = np.full(m, c_scalar)
            A = (d / (c_scalar + d))[:, None]
        P = A * Z  # rotated training predictions of round t
        zs.append(P)
        cs.append(c_t)
        t += 1
        if not mixing:
            Z = P
            continue
        # the targets of round t; a per-round xi sequence need not cover round T = n_rounds, never fitted
        if np.ndim(xi) == 0 or t - 1 < len(xi) or t < limit:
            xi_used.append(xi_of_round(xi, t))
            Z_next = xi_used[-1] * P + (1.0 - xi_used[-1]) * Z0
        else:
            Z_next = P
        converged = np.max(np.abs(Z_next - Z)) <= MIXING_RTOL * max(float(np.max(np.abs(Z))), 1e-300)
        Z = Z_next
        targets.append(Z)
        if n_rounds is None and converged:
            status, stop_round = "converged", t
            message = f"converged at round {t}: the mixed targets stopped changing (relative {MIXING_RTOL:g})"
            break

    if status == "infeasible" and on_infeasible == "raise":
        raise ValueError(message)
    t_end = time.perf_counter()
    T = len(cs)
    z_arr = np.stack(zs)  # (T+1, K, m)
    c_arr = np.stack(cs) if T else np.zeros((0, m))
    if not per_output_c:
        c_arr = c_arr[:, 0] if T else np.zeros(0)
    if single_output:
        z_arr = z_arr[:, :, 0]
        if per_output_c:
            c_arr = c_arr[:, 0] if T else np.zeros(0)
    eps_out = None if eps is None else (np.asarray(eps, dtype=float) if np.ndim(eps) else float(eps))
    if single_output and eps_out is not None and np.ndim(eps_out):
        eps_out = float(eps_out[0])
    kwargs = {}
    result_type = ChainResult
    if mixing:
        result_type = MixedChainResult
        u_arr = np.stack(targets)
        kwargs = {
            "xi_rounds": np.array(xi_used[:T] if T else [], dtype=float),
            "targets": u_arr[:, :, 0] if single_output else u_arr,
        }
    return result_type(
        eigenvalues=d,
        eigenvectors=spectrum.eigenvectors,
        c=c_arr,
        z=z_arr,
        labels=y.copy(),
        epsilon=eps_out,
        n_samples=K,
        alpha=None if alpha is None else float(alpha),
        per_output_c=bool(per_output_c) and not single_output,
        status=status,
        stop_round=stop_round,
        message=message,
        timings={"eigh_s": t_eigh - t_start, "rounds_s": t_end - t_eigh},
        **kwargs,
    )
