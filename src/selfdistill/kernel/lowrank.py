"""The Nystroem route: the exact self-distillation chain of a rank-m approximation of the kernel.

m centres C are drawn from the training points (uniformly, or by approximate ridge leverage scores,
``leverage_scores``). The approximated kernel is k~(x, x') = k(x, C) K_mm^+ k(C, x') = phi(x)^T phi(x')
with phi(x) = T^T k(C, x), T = U_r diag(lambda_r^(-1/2)) from K_mm = U diag(lambda) U^T (eigenvalues
below m * machine-eps * lambda_max are dropped: rank r). For the training points Phi = K_nm T (K x r) and
G~ = Phi Phi^T / K. Its nonzero eigenvalues are those of Phi^T Phi / K = W diag(s) W^T (r x r), with
eigenvectors U~ = Phi W diag(1 / sqrt(K s)), never formed. Hence::

    z = U~^T y = diag(1 / sqrt(K s)) W^T (Phi^T y),

and the rest of the labels, ||y||^2 - ||z||^2, lies in the null space of G~: the labels' part outside
the span of k(., C). It is a constant residual in eq. (20), carried by ONE aggregated null direction
(eigenvalue 0) when r < K. The engine (selfdistill.kernel.rounds) only sees d and z, so ``self_distill``
on a ``LowRankSpectrum`` is the EXACT chain of the approximated kernel (c_t, A_t, B_t, ||z_t||, collapse,
infeasibility, the theory report), each round on O(r) numbers. Predictions, eq. (44)::

    f_t(x) = g~_x^T U~ diag(1 / (c_t + s)) z_t = k(x, C) T W diag(sqrt(s / K) / (c_t + s)) z_t,

i.e. m coefficients per round and output (``LowRankSpectrum.center_coefficients``).

One pass over X in row blocks gives Phi^T Phi, Phi^T y and ||y||^2 (``nystroem_spectrum``); with a
dask.array X the pass is Dask's blocked matrix products, run by whatever scheduler or cluster the
caller's Dask client points at. Memory: O(m^2 + block); no K x m or K x K matrix exists at any time.
The numerics follow scikit-learn's Nystroem (features K_nm T, then their Gram matrix), which loses less
to the conditioning of K_mm than forming K_mn K_nm first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
from sklearn.utils import check_random_state

import selfdistill.kernel.memory as memory
from selfdistill.kernel.backends import is_dask_array
from selfdistill.kernel.spectrum import PSD_RTOL, Spectrum

KernelFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
CENTER_SELECTIONS = ("uniform", "leverage")
#: rows per sub-block when evaluating the kernel's diagonal k(x_i, x_i) (leverage scores).
_DIAGONAL_BLOCK = 256


def _import_dask() -> tuple[Any, Any]:
    try:
        import dask
        import dask.array as da
    except ImportError:
        raise ValueError(
            "a dask.array X needs Dask: pip install 'selfdistill[dask]' (dask[array], distributed)"
        ) from None
    return dask, da


def take_rows(X: Any, index: np.ndarray) -> np.ndarray:
    """X[index] as a NumPy array (computed for a dask.array; index sorted)."""
    rows = X[np.sort(index)]
    return np.asarray(rows.compute() if is_dask_array(rows) else rows, dtype=float)


def _checked_kernel(kernel_fn: KernelFn, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    A = np.asarray(A, dtype=float)
    if not np.all(np.isfinite(A)):
        raise ValueError("X contains NaN or infinite values; remove those samples or impute the values")
    k = np.asarray(kernel_fn(A, B), dtype=float)
    if not np.all(np.isfinite(k)):
        raise ValueError("the kernel has NaN or infinite values on X; check the inputs and kernel parameters")
    return k


def nystroem_rows(n_cols: int) -> int:
    """Rows per block of the Nystroem pass: half of memory.BLOCK_BYTES per block of n_cols columns (the
    kernel block, its features and the kernel's temporaries are a few such blocks)."""
    return memory.row_block(n_cols, 8, memory.BLOCK_BYTES // 2)


def kernel_diagonal(kernel_fn: KernelFn, X_rows: np.ndarray) -> np.ndarray:
    """[k(x_i, x_i)] for the given rows, in sub-blocks of _DIAGONAL_BLOCK rows (never len(X)^2)."""
    out = np.empty(len(X_rows))
    for start in range(0, len(X_rows), _DIAGONAL_BLOCK):
        part = X_rows[start : start + _DIAGONAL_BLOCK]
        out[start : start + len(part)] = np.diagonal(_checked_kernel(kernel_fn, part, part))
    return out


# ---- centre selection ------------------------------------------------------------------------------------


def sketch_ridge(K_SS: np.ndarray, n_samples: int) -> float:
    """The ridge lambda at which the sketch's estimate of the effective dimension is half the sketch size:
    sum_j mu_j / (mu_j + lambda) = s / 2 with mu_j = (K / s) eig_j(K_SS) (the sketch's estimate of the
    top eigenvalues of the full kernel matrix). Points are then scored by what they add beyond the
    directions the sketch resolves. Bisection on log lambda, within [1e-12 mu_max, mu_max]."""
    s = K_SS.shape[0]
    mu = np.clip(scipy.linalg.eigvalsh(K_SS, check_finite=False), 0.0, None) * (n_samples / s)
    mu_max = float(mu[-1])
    if mu_max <= 0.0:
        return 0.0
    lo, hi = np.log(1e-12 * mu_max), np.log(mu_max)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        d_eff = float(np.sum(mu / (mu + np.exp(mid))))
        lo, hi = (mid, hi) if d_eff > s / 2 else (lo, mid)
    return float(np.exp(0.5 * (lo + hi)))


def leverage_scores(
    X: Any, kernel_fn: KernelFn, sketch: np.ndarray, ridge: float | None = None
) -> tuple[np.ndarray, float]:
    """Approximate ridge leverage scores of every training point from a sketch S.

    The estimator of Musco & Musco (2017) with an unweighted column sample (Alaoui & Mahoney 2015)::

        l_i = (k(x_i, x_i) - k(x_i, S) (K_SS + lambda I)^{-1} k(S, x_i)) / lambda

    the residual variance of x_i under a ridge Nystroem approximation on S, over lambda; with S every
    point it is exactly ``[K (K + lambda I)^{-1}]_ii``. One pass over X in row blocks (Dask for a
    ``dask.array``).

    Parameters
    ----------
    X : ndarray or dask.array of shape (K, p)
        Training inputs.
    kernel_fn : callable
        ``kernel_fn(A, B)`` returns the raw kernel block ``[g(a_i, b_j)]``.
    sketch : ndarray of int
        Row indices of the sketch S.
    ridge : float or None, default=None
        lambda; default ``sketch_ridge`` (the sketch's effective dimension at lambda is half its size).

    Returns
    -------
    scores : ndarray of shape (K,)
        The approximate leverage scores (positive).
    ridge : float
        The lambda used.
    """
    n = int(X.shape[0])
    C = take_rows(X, sketch)
    K_SS = _checked_kernel(kernel_fn, C, C)
    K_SS = (K_SS + K_SS.T) / 2.0
    if ridge is None:
        ridge = sketch_ridge(K_SS, n)
    if not ridge > 0.0:
        raise ValueError(f"ridge={ridge!r}: leverage scores need a positive ridge (is the kernel zero on X?)")
    L = scipy.linalg.cholesky(K_SS + ridge * np.eye(len(C)), lower=True)

    def block_scores(rows: np.ndarray) -> np.ndarray:
        k = _checked_kernel(kernel_fn, rows, C)
        A = scipy.linalg.solve_triangular(L, k.T, lower=True, check_finite=False)
        return (kernel_diagonal(kernel_fn, rows) - np.sum(A * A, axis=0)) / ridge

    if is_dask_array(X):
        _import_dask()
        Xd = X.rechunk({1: -1})
        scores = Xd.map_blocks(block_scores, drop_axis=1, dtype=float, chunks=(Xd.chunks[0],)).compute()
    else:
        step = nystroem_rows(len(C))
        scores = np.concatenate([block_scores(X[s : s + step]) for s in range(0, n, step)])
    return np.maximum(scores, np.finfo(float).tiny), float(ridge)


def select_centers(
    X: Any, kernel_fn: KernelFn, n_components: int, method: str, random_state: Any = None
) -> np.ndarray:
    """Sorted indices of the m Nystroem centres.

    ``"uniform"``: m distinct points uniformly at random. ``"leverage"``: a uniform sketch of m points gives
    approximate ridge leverage scores (:func:`leverage_scores`), then m distinct points are drawn with
    probabilities proportional to them (Efraimidis-Spirakis: the m largest ``log(u_i) / l_i``). Both are
    reproducible through ``random_state``.

    Parameters
    ----------
    X : ndarray or dask.array of shape (K, p)
        Training inputs.
    kernel_fn : callable
        ``kernel_fn(A, B)`` returns the raw kernel block.
    n_components : int
        m.
    method : {"uniform", "leverage"}
        How to draw them.
    random_state : int, RandomState or None, default=None
        Seed.

    Returns
    -------
    ndarray of int of shape (m,)
    """
    if method not in CENTER_SELECTIONS:
        raise ValueError(f"center_selection={method!r} must be one of {CENTER_SELECTIONS}")
    rng = check_random_state(random_state)
    n = int(X.shape[0])
    m = int(n_components)
    uniform = np.sort(rng.choice(n, size=m, replace=False))
    if method == "uniform" or m == n:
        return uniform
    scores, _ = leverage_scores(X, kernel_fn, uniform)
    with np.errstate(divide="ignore"):
        keys = np.log(rng.random_sample(n)) / scores
    return np.sort(np.argpartition(-keys, m - 1)[:m])


# ---- the spectrum of the approximated kernel ---------------------------------------------------------------


@dataclass(frozen=True)
class LowRankSpectrum(Spectrum):
    """Spectrum of the Nystroem-approximated ``G~ = Phi Phi^T / K``, as the engine sees it.

    Made by :func:`nystroem_spectrum`; :func:`self_distill` on it is the exact chain of the approximated
    kernel (see :mod:`selfdistill.kernel.lowrank`).

    Attributes
    ----------
    eigenvalues : ndarray of shape (r,) or (r + 1,)
        The r positive eigenvalues s of ``G~`` (ascending), preceded by one 0 that stands for the K - r
        dimensional null space when r < K.
    eigenvectors : None
        ``U~`` is K x r and never formed.
    n_samples : int
        K.
    centers : ndarray of shape (m, p)
        The centre points C.
    center_indices : ndarray of int of shape (m,)
        The centres' rows in X.
    to_eigenbasis : ndarray of shape (m, r)
        ``T W``, so that ``phi(x)^T W = k(x, C) T W``.
    labels : ndarray of shape (K, n_outputs)
        The labels it was built with (:meth:`rotate` serves only those).
    labels_rotated : ndarray
        Their z (the pass over X computed them).
    null_mean_square : ndarray of shape (n_outputs,)
        ``(||y||^2 - ||z||^2) / K``, the labels' mean square outside the span of the centres: a residual
        no round can reduce (eps must exceed it).
    timings : dict of str to float
        Seconds for the centre selection, the pass over X and the eigendecomposition.
    """

    centers: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    center_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    to_eigenbasis: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))
    labels_rotated: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))
    null_mean_square: np.ndarray = field(default_factory=lambda: np.zeros(1))
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return int(self.centers.shape[0])

    @property
    def rank(self) -> int:
        """r: the number of positive eigenvalues of G~."""
        return int(np.count_nonzero(self.eigenvalues))

    @property
    def has_null_direction(self) -> bool:
        return self.eigenvalues.size > self.rank

    def rotate(self, y: np.ndarray) -> np.ndarray:
        """z for the labels this spectrum was built with (the aggregated null direction first)."""
        y = np.asarray(y, dtype=float)
        Y = y.reshape(y.shape[0], -1)
        if Y.shape != self.labels.shape or not np.array_equal(Y, self.labels):
            raise ValueError(
                "a Nystroem spectrum rotates only the labels it was built with (their part in the "
                "eigenbasis came from the pass over X); call nystroem_spectrum(X, y, ...) for other labels"
            )
        return self.labels_rotated[:, 0] if y.ndim == 1 else self.labels_rotated

    def unrotate(self, z: np.ndarray) -> np.ndarray:
        raise ValueError("a Nystroem spectrum has no K x K eigenvectors; predict through center_coefficients")

    def center_coefficients(self, c: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Per round t, a_t (m, n_outputs) with f_t(x) = k(x, C) a_t (eq. 44 on the approximated kernel).

        c: (T,) or (T, n_outputs) c_t (inf: that output collapsed, coefficient 0); z: (T+1, len(d)[, n_out])
        as in ChainResult. Equals ``from_eigenbasis(z_t / (c_t + d))``."""
        z = np.asarray(z, dtype=float)
        z = z if z.ndim == 3 else z[:, :, None]
        c = np.asarray(c, dtype=float)
        c = np.repeat(c[:, None], z.shape[2], axis=1) if c.ndim == 1 else c
        d = self.eigenvalues
        return self.from_eigenbasis(z[: c.shape[0]] / (c[:, None, :] + d[None, :, None]))

    def from_eigenbasis(self, w: np.ndarray) -> np.ndarray:
        """Centre coefficients a (T, m, n_out) of predictors given in the eigenbasis of G~: f(x) = g~_x^T U~ w
        (the exact route's f(x) = g_x^T V w; eq. 44 has w = diag(1 / (c_t + d)) z_t, and any spectral filter
        is some w). g~_x^T U~ = k(x, C) T W diag(sqrt(s / K)), so a = to_eigenbasis diag(sqrt(s / K)) w; the
        null direction contributes nothing (g~_x is orthogonal to it). w: (T, len(d), n_out)."""
        positive = self.eigenvalues > 0.0
        s = self.eigenvalues[positive]
        scaled = np.asarray(w, dtype=float)[:, positive, :] * np.sqrt(s / self.n_samples)[None, :, None]
        return np.einsum("mr,tro->tmo", self.to_eigenbasis, scaled)


def _feature_map(C: np.ndarray, kernel_fn: KernelFn, psd_rtol: float) -> np.ndarray:
    """T = U_r diag(lambda_r^(-1/2)) from K_mm = U diag(lambda) U^T; lambda <= m eps lambda_max dropped."""
    K_mm = _checked_kernel(kernel_fn, C, C)
    asym = float(np.max(np.abs(K_mm - K_mm.T)))
    scale = float(np.max(np.abs(K_mm)))
    if asym > 1e-8 * max(scale, np.finfo(float).tiny):
        raise ValueError(
            f"the kernel is not symmetric on the centres (max|K - K^T| = {asym:.3g}); use a symmetric kernel"
        )
    lam, U = scipy.linalg.eigh((K_mm + K_mm.T) / 2.0, check_finite=False)
    lam_max = float(lam[-1])
    if lam_max <= 0.0:
        raise ValueError(
            "the kernel matrix of the centres has no positive eigenvalue: the kernel is zero on X"
        )
    if lam[0] < -psd_rtol * lam_max:
        raise ValueError(
            f"the kernel is not positive semi-definite on the centres (eigenvalue {lam[0]:.3g}, relative "
            f"{lam[0] / lam_max:.3g}); use a positive semi-definite kernel"
        )
    keep = lam > lam_max * len(C) * np.finfo(float).eps
    return U[:, keep] / np.sqrt(lam[keep])


def _one_pass(
    X: Any, Y: np.ndarray, C: np.ndarray, T: np.ndarray, kernel_fn: KernelFn
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Phi^T Phi, Phi^T Y, ||Y||^2 per column) with Phi = K_nm T, in row blocks (Dask for a dask.array)."""

    def features(rows: np.ndarray, T: np.ndarray) -> np.ndarray:
        return _checked_kernel(kernel_fn, rows, C) @ T

    r, n_out = T.shape[1], Y.shape[1]
    if is_dask_array(X):
        dask, da = _import_dask()
        Xd = X.rechunk({1: -1})
        Phi = Xd.map_blocks(features, dask.delayed(T), dtype=float, chunks=(Xd.chunks[0], (r,)))
        Yd = da.from_array(Y, chunks=(Xd.chunks[0], (n_out,)))
        F, P, yy = dask.compute(Phi.T @ Phi, Phi.T @ Yd, (Yd * Yd).sum(axis=0))
        return np.asarray(F), np.asarray(P), np.asarray(yy)
    F = np.zeros((r, r))
    P = np.zeros((r, n_out))
    yy = np.zeros(n_out)
    step = nystroem_rows(max(len(C), r))
    for start in range(0, X.shape[0], step):
        Phi_b = features(X[start : start + step], T)
        Y_b = Y[start : start + step]
        F += Phi_b.T @ Phi_b  # one syrk per block
        P += Phi_b.T @ Y_b
        yy += np.sum(Y_b * Y_b, axis=0)
    return F, P, yy


def nystroem_spectrum(
    X: Any,
    y: np.ndarray,
    kernel_fn: KernelFn,
    n_components: int,
    *,
    center_selection: str = "uniform",
    random_state: Any = None,
    psd_rtol: float = PSD_RTOL,
) -> LowRankSpectrum:
    """The spectrum of the rank-m Nystroem approximation of ``G = Kxx / K``, from one pass over X.

    Memory ``O(m^2 + block)``: no K x m or K x K matrix is formed. ``KernelSelfDistillation(solver=
    "nystroem", n_components=m)`` calls this; call it directly to reuse one approximation for many
    epsilons.

    Parameters
    ----------
    X : ndarray or dask.array of shape (K, p)
        Training inputs (a ``dask.array`` with any row chunks: the pass then runs on Dask).
    y : ndarray of shape (K,) or (K, n_outputs)
        Labels (in memory).
    kernel_fn : callable
        ``kernel_fn(A, B)`` returns the raw kernel block ``[g(a_i, b_j)]``.
    n_components : int
        m <= K, the number of centres.
    center_selection : {"uniform", "leverage"}, default="uniform"
        How the centres are drawn (:func:`selfdistill.kernel.lowrank.select_centers`).
    random_state : int, RandomState or None, default=None
        Seed of the centre selection.
    psd_rtol : float, default=1e-6
        Negative eigenvalues of ``K_mm`` down to ``-psd_rtol * lambda_max`` are round-off.

    Returns
    -------
    LowRankSpectrum
        Pass it to :func:`self_distill`; predictions through
        :meth:`LowRankSpectrum.center_coefficients`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.metrics.pairwise import rbf_kernel
    >>> from selfdistill.kernel import nystroem_spectrum, self_distill
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-1, 1, size=(500, 3))
    >>> y = np.sin(2 * X[:, 0])
    >>> spectrum = nystroem_spectrum(X, y, lambda A, B: rbf_kernel(A, B, gamma=1.0), 50, random_state=0)
    >>> chain = self_distill(spectrum, y, 0.05)
    >>> spectrum.rank <= 50
    True
    """
    t0 = time.perf_counter()
    if len(X.shape) != 2 or np.isnan(X.shape[0]):
        raise ValueError(
            f"X must be 2-D (n_samples, n_features) with known row chunks, got shape {X.shape} (a dask.array "
            "with unknown chunk sizes: call X.compute_chunk_sizes() first)"
        )
    n = int(X.shape[0])
    y = np.asarray(y, dtype=float)
    Y = y.reshape(n, -1) if y.ndim in (1, 2) and y.shape[0] == n else None
    if Y is None:
        raise ValueError(f"y must have shape ({n},) or ({n}, n_outputs) to match X, got shape {y.shape}")
    m = int(n_components)
    if not 1 <= m <= n:
        raise ValueError(f"n_components={n_components!r} must be between 1 and the number of samples ({n})")
    index = select_centers(X, kernel_fn, m, center_selection, random_state)
    C = take_rows(X, index)
    t_select = time.perf_counter()
    T = _feature_map(C, kernel_fn, psd_rtol)
    F, P, yy = _one_pass(X, Y, C, T, kernel_fn)
    t_pass = time.perf_counter()
    s, W = scipy.linalg.eigh((F + F.T) / (2.0 * n), check_finite=False)
    keep = s > max(float(s[-1]), 0.0) * n * np.finfo(float).eps  # the exact route's null tolerance
    s, W = s[keep], W[:, keep]
    z = (W.T @ P) / np.sqrt(n * s)[:, None]
    null_energy = np.maximum(yy - np.sum(z * z, axis=0), 0.0)
    if s.size < n:  # G~ has a null space: one direction carries the labels' part in it
        eigenvalues = np.concatenate([[0.0], s])
        z = np.vstack([np.sqrt(null_energy)[None, :], z])
    else:
        eigenvalues = s
    t_end = time.perf_counter()
    return LowRankSpectrum(
        eigenvalues=eigenvalues,
        eigenvectors=None,
        n_samples=n,
        centers=C,
        center_indices=index,
        to_eigenbasis=T @ W,
        labels=Y.copy(),
        labels_rotated=z,
        null_mean_square=null_energy / n,
        timings={
            "nystroem_select_s": t_select - t0,
            "nystroem_pass_s": t_pass - t_select,
            "nystroem_eigh_s": t_end - t_pass,
        },
    )


def infeasible_message(
    spectrum: LowRankSpectrum, epsilon: Any, per_output_c: bool, relative: bool = False
) -> str:
    """One line: the labels' part outside the span of the centres alone exceeds eps; the smallest
    feasible eps (like the exact route's message for a singular kernel), also relative to mean(y^2) when
    the user gave a relative epsilon."""
    null = spectrum.null_mean_square
    energy = np.sum(spectrum.labels**2, axis=0) / spectrum.n_samples
    if not per_output_c:
        null, energy = np.array([np.sum(null)]), np.array([np.sum(energy)])

    def values(v: np.ndarray) -> str:
        return f"{v[0]:.6g}" if v.size == 1 else "[" + ", ".join(f"{x:.6g}" for x in v) + "] (per output)"

    eps = np.ravel(np.asarray(epsilon, dtype=float))
    hint = f"epsilon > {values(null)}"
    if relative:
        hint = f"epsilon > {values(null / np.where(energy > 0, energy, 1.0))} with epsilon_mode='relative'"
    return (
        f"infeasible: the labels' part outside the span of the {spectrum.n_components} Nystroem centres "
        f"(rank {spectrum.rank} of K={spectrum.n_samples}) has mean square {values(null)} >= epsilon="
        f"{values(eps)}, a residual no round can reduce; use {hint} (the smallest feasible), or more "
        "n_components"
    )


def predict_rows(X: Any, centers: np.ndarray, coefficients: np.ndarray, kernel_fn: KernelFn) -> Any:
    """k(X, C) @ coefficients in row blocks: (n, n_out) NumPy, or a lazy dask.array for a dask.array X."""
    coefficients = np.asarray(coefficients, dtype=float)

    def block(rows: np.ndarray, coefs: np.ndarray) -> np.ndarray:
        return _checked_kernel(kernel_fn, rows, centers) @ coefs

    if is_dask_array(X):
        dask, _ = _import_dask()
        Xd = X.rechunk({1: -1})
        return Xd.map_blocks(
            block, dask.delayed(coefficients), dtype=float, chunks=(Xd.chunks[0], (coefficients.shape[1],))
        )
    X = np.asarray(X, dtype=float)
    step = nystroem_rows(len(centers))
    out = np.empty((X.shape[0], coefficients.shape[1]))
    for start in range(0, X.shape[0], step):
        out[start : start + step] = block(X[start : start + step], coefficients)
    return out
