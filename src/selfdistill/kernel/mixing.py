"""Ground-truth mixing in the kernel chain (Borup & Andersen, NeurIPS 2021), in the eigenbasis.

Round 0 fits the labels y; round t >= 1 fits the targets u_t = xi_t * f_{t-1}(X) + (1 - xi_t) * y (the
same convention as the neural chain, ``selfdistill.nn.chain``: xi = 1 is Mobahi et al.'s pure
self-distillation, the default). With A_t = diag(a_t), a_t = d / (c_t + d) (eq. 29 of Mobahi et al.), the
training predictions in the eigenbasis are p_t = A_t u_t, so every round is still a filter on z = V^T y::

    h_0 = a_0,     h_t = a_t * (xi_t * h_{t-1} + 1 - xi_t),     f_t(X) = V diag(h_t) z.

Fixed c (scikit-learn alpha = K c) and a constant xi < 1: h_t = h* + (xi a)^t (a - h*) with the fixed
point h* = (1 - xi) a / (1 - xi a) = d / (c / (1 - xi) + d): the rounds converge to plain kernel ridge
with alpha / (1 - xi) (no collapse). ``mixing_filter`` and ``mixing_limit_alpha`` give both in closed form.

Optimal weight per round (``optimal_xi``, ``optimal_mixing_chain``): Borup & Andersen give the weight of
each step in closed form as the minimizer of a quadratic. The criterion implemented here is stated
exactly: with c fixed, the student of round t predicts at reference points R (rows of the raw kernel
k_R = [g(r_i, x_k)])::

    f_t(R) = F u_t,   F = (k_R / K) V diag(1 / (c + d)),   u_t = z + xi (p_{t-1} - z)   (rotated targets)

which is affine in xi: f_t(R) - y_R = b + xi q with b = F z - y_R and q = F (p_{t-1} - z). The squared
error ||b + xi q||^2 is minimized by xi* = -<b, q> / ||q||^2 (summed over outputs; clipped to ``bounds``,
the exact constrained minimizer since the error is convex in xi). Use held-out validation points and
labels as the reference (the practical choice), or the noiseless function at the training inputs (an
oracle, for analysis). The TRAINING error against the noisy labels is no useful criterion: there
b = -(1 - a) z and q = -a (1 - h_{t-1}) z componentwise, so <b, q> = sum_k a_k (1 - a_k)(1 - h_k) z_k^2 > 0
whenever the teacher's filter satisfies h < 1 (round 0, any round of the pure chain), and then xi* < 0: it
pushes the student away from its teacher, towards interpolation. The derivation is this module's own, in
the eigenbasis (the full text of Borup & Andersen was not at hand to compare notation); the tests check it
against brute-force minimization over actual KernelRidge refits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np

from selfdistill.io import from_jsonable, to_jsonable
from selfdistill.kernel.result import ChainResult
from selfdistill.kernel.spectrum import Spectrum

_FORMAT = "selfdistill.kernel.MixedChainResult"
_BASE_FORMAT = "selfdistill.kernel.ChainResult"

XI_HINT = (
    "the teacher's weight in the targets xi * f_{t-1}(X) + (1 - xi) * y of round t >= 1 (1 = the paper's "
    "pure self-distillation, 0 = refit y every round); e.g. xi=0.5"
)


def check_xi(xi: Any) -> float | np.ndarray:
    """Validate xi: one finite number, or one finite number per round t = 1, 2, ... (a 1-D sequence).

    Returns a float or a float array. Any finite value is allowed (Das & Sanghavi 2023 find optimal teacher
    weights above 1 under heavy label noise; Dang, Patil & Rinaldo 2026 negative ones when over-regularized).
    """
    if isinstance(xi, bool) or isinstance(xi, str):
        raise ValueError(f"xi={xi!r} must be a finite number or a sequence of them: {XI_HINT}")
    try:
        arr = np.asarray(xi, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"xi={xi!r} must be a finite number or a sequence of them: {XI_HINT}") from None
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size == 0):
        raise ValueError(
            f"xi must be a number or a 1-D sequence (one per round t >= 1), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"xi={xi!r} is not finite; xi must be a finite number: {XI_HINT}")
    return float(arr) if arr.ndim == 0 else arr


def xi_of_round(xi: float | np.ndarray, t: int) -> float:
    """The weight used for the targets of round t >= 1 (a sequence gives xi_t = xi[t - 1])."""
    if np.ndim(xi) == 0:
        return float(xi)
    if t - 1 >= len(xi):
        raise ValueError(
            f"xi has {len(xi)} per-round value(s) (rounds 1..{len(xi)}) but round {t} was requested; give "
            "one "
            "xi per round t >= 1, or set n_rounds <= len(xi) + 1"
        )
    return float(xi[t - 1])


def is_mixing(xi: float | np.ndarray) -> bool:
    """True unless every round uses xi = 1 (the paper's chain)."""
    return bool(np.any(np.asarray(xi) != 1.0))


def mixing_filter(eigenvalues: np.ndarray, c: float, xi: float, n_rounds: int) -> np.ndarray:
    """Closed form of the filters ``h_0..h_{T-1}`` (shape (T, K)) for fixed c and a constant xi.

    ::

        h_t = a (1 - xi) S_t + (xi a)^t a,    S_t = sum_{i<t} (xi a)^i = (1 - (xi a)^t) / (1 - xi a),
        a = d / (c + d)
    """
    d = np.asarray(eigenvalues, dtype=float)
    a = d / (c + d)
    r = xi * a
    t = np.arange(n_rounds, dtype=float)[:, None]
    rt = r[None, :] ** t
    with np.errstate(divide="ignore", invalid="ignore"):
        geometric = np.where(np.isclose(r, 1.0, rtol=0, atol=1e-15), t, (1.0 - rt) / (1.0 - r[None, :]))
    return a[None, :] * (1.0 - xi) * geometric + rt * a[None, :]


def mixing_limit_alpha(alpha: float, xi: float) -> float:
    """Fixed c (KernelRidge alpha), constant xi < 1: the rounds converge to ``KernelRidge(alpha / (1 - xi))``.

    Per eigenvalue the fixed point of ``h = a (xi h + 1 - xi)`` is
    ``(1 - xi) a / (1 - xi a) = d / (c / (1 - xi) + d)``. Returns ``alpha / (1 - xi)``.
    """
    xi = float(check_xi(xi))
    if not xi < 1.0:
        raise ValueError(
            f"xi={xi:g}: the rounds converge to plain ridge only for xi < 1 (xi = 1 is the paper's chain, "
            "which collapses; xi > 1 may diverge); use xi < 1"
        )
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha={alpha!r} must be a finite number > 0")
    if xi == 0.0:
        return float(alpha)
    return float(alpha) / (1.0 - xi)


@dataclass
class MixedChainResult(ChainResult):
    """A self-distillation chain with ground-truth mixing (``self_distill(..., xi=...)`` with some xi != 1).

    Same fields as :class:`ChainResult`, with two changes of meaning and two additions: ``z`` holds
    ``z_0 = V^T y`` and the rotated training PREDICTIONS of rounds 0..T-1 (as for xi = 1), while the rotated
    TARGETS live in ``targets``; ``b_diag`` is the filter ``h_t`` of :mod:`selfdistill.kernel.mixing`
    (``B_t`` when xi = 1). The paper's bounds (:meth:`theory`) are for xi = 1 only.

    Attributes
    ----------
    xi_rounds : ndarray of shape (T,)
        The weight each round used (``xi_rounds[0] = 0``: round 0 fits y).
    targets : ndarray of shape (T+1, K) or (T+1, K, m)
        The rotated targets ``u_0..u_T`` (``u_0`` is y; those of round T were formed but not fitted, e.g.
        at collapse).
    """

    xi_rounds: np.ndarray | None = None
    targets: np.ndarray | None = None

    def _targets_matrix(self) -> np.ndarray:
        return self.targets if self.targets.ndim == 3 else self.targets[:, :, None]

    @cached_property
    def b_diag(self) -> np.ndarray:
        """The filter per round: h_0 = a_0, h_t = a_t (xi_t h_{t-1} + 1 - xi_t); shape of a_diag."""
        a = self.a_diag
        h = np.empty_like(a)
        for t in range(self.n_rounds):
            h[t] = a[t] if t == 0 else a[t] * (self.xi_rounds[t] * h[t - 1] + 1.0 - self.xi_rounds[t])
        return h

    @property
    def mean_square_labels(self) -> np.ndarray:
        """||u_t||^2 / K of the TARGETS u_t of rounds 0..T (summed over outputs): collapse when <= epsilon."""
        u = self._targets_matrix()
        return np.sum(u * u, axis=(1, 2)) / self.n_samples

    @property
    def fit_residual(self) -> np.ndarray:
        """(1/K) ||f_t(X) - u_t||^2 per round (the residual against the round's own targets)."""
        z = self._z_matrix()
        diff = z[1:] - self._targets_matrix()[:-1]
        return np.sum(diff**2, axis=(1, 2)) / self.n_samples

    @cached_property
    def _dual_coefs(self) -> np.ndarray:
        """w_t = V diag(1/(c_t + d)) u_t / K: f_t(x) = [g(x, x_k)]_k . w_t."""
        self._require_vectors()
        d = self.eigenvalues
        u = self._targets_matrix()[:-1]
        c = self._c_matrix()
        scaled = u / (c[:, None, :] + d[None, :, None])
        return np.einsum("jk,tkm->tjm", self.eigenvectors, scaled) / self.n_samples

    def theory(self, output: int | None = None) -> Any:
        raise ValueError(
            "theory(): the paper's bounds are for the pure chain (xi = 1); this chain mixes ground truth "
            "into "
            "the targets (xi != 1). Run self_distill(..., xi=1.0) for the bounds"
        )

    def __str__(self) -> str:
        xi = self.xi_rounds[1:] if self.xi_rounds is not None else np.array([])
        if xi.size and np.all(xi == xi[0]):
            text = f"{xi[0]:g}"
        elif xi.size:
            text = "per round " + ", ".join(f"{v:.4g}" for v in xi)
        else:
            text = "(one round only)"
        return (
            super().__str__()
            + f"\nground-truth mixing: targets of round t >= 1 are xi f_(t-1)(X) + (1 - xi) y, xi = {text}"
            + "\n(label_mean_square and fit resid refer to each round's mixed targets)"
        )

    def to_dict(self, include_eigenvectors: bool = True) -> dict[str, Any]:
        data = super().to_dict(include_eigenvectors)
        data["format"] = _FORMAT
        data["xi_rounds"] = to_jsonable(self.xi_rounds)
        data["targets"] = to_jsonable(self.targets)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MixedChainResult:
        if data.get("format") != _FORMAT:
            raise ValueError(f"not a MixedChainResult file (format={data.get('format')!r})")
        base = ChainResult.from_dict({**data, "format": _BASE_FORMAT})
        n = base.n_samples
        targets = np.asarray(from_jsonable(data["targets"]), dtype=float).reshape(
            (-1, n) + base.labels.shape[1:]
        )
        values = {f.name: getattr(base, f.name) for f in fields(ChainResult)}
        return cls(
            **values, xi_rounds=np.asarray(from_jsonable(data["xi_rounds"]), dtype=float), targets=targets
        )


# ---- the optimal weight per round -------------------------------------------------------------------------


def optimal_xi(
    baseline_residual: np.ndarray, direction: np.ndarray, bounds: tuple[float, float] = (-np.inf, np.inf)
) -> float:
    """argmin_xi ||b + xi q||^2 over ``bounds``: clip(-<b, q> / ||q||^2) (q = 0: xi = 1, nothing changes)."""
    b = np.asarray(baseline_residual, dtype=float).ravel()
    q = np.asarray(direction, dtype=float).ravel()
    qq = float(q @ q)
    if qq == 0.0:
        return float(np.clip(1.0, *bounds))
    return float(np.clip(-float(b @ q) / qq, *bounds))


def optimal_mixing_chain(
    spectrum: Spectrum,
    y: np.ndarray,
    alpha: float,
    n_rounds: int,
    kernel_ref_train: np.ndarray,
    y_ref: np.ndarray,
    *,
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> MixedChainResult:
    """Fixed-c chain whose ``xi_t`` (t >= 1) minimizes the squared error of round t at reference points.

    One closed form per round (see :mod:`selfdistill.kernel.mixing`).

    Parameters
    ----------
    spectrum : Spectrum
        The eigendecomposition of the training kernel matrix.
    y : ndarray of shape (K,) or (K, m)
        Training labels.
    alpha : float
        scikit-learn ``KernelRidge`` alpha of every round (``c = alpha / K``).
    n_rounds : int
        Rounds to fit (round 0 included).
    kernel_ref_train : ndarray of shape (n_ref, K)
        The RAW matrix ``[g(r_i, x_k)]`` between the reference points and the training points.
    y_ref : ndarray of shape (n_ref,) or (n_ref, m)
        The reference targets (held-out labels, or the noiseless function as an oracle).
    bounds : tuple of float, default=(-inf, inf)
        Range of xi (the error is convex in xi, so clipping gives the constrained minimizer).

    Returns
    -------
    MixedChainResult
        The chain from ``self_distill(spectrum, y, alpha=alpha, xi=xis, n_rounds=n_rounds)``; its
        ``xi_rounds[1:]`` are the chosen weights.
    """
    from selfdistill.kernel.rounds import self_distill

    if not isinstance(spectrum, Spectrum):
        raise ValueError("optimal_mixing_chain needs a Spectrum (Spectrum.from_gram(gram))")
    if int(n_rounds) != n_rounds or isinstance(n_rounds, bool) or n_rounds < 1:
        raise ValueError(f"n_rounds={n_rounds!r} must be a positive integer")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha={alpha!r} must be a finite number > 0 (fixed c = alpha / K)")
    K = spectrum.n_samples
    Y = np.asarray(y, dtype=float).reshape(K, -1)
    k_ref = np.asarray(kernel_ref_train, dtype=float)
    Y_ref = np.asarray(y_ref, dtype=float).reshape(k_ref.shape[0], -1)
    if k_ref.ndim != 2 or k_ref.shape[1] != K or Y_ref.shape[1] != Y.shape[1]:
        raise ValueError(
            f"kernel_ref_train must have shape (n_ref, {K}) and y_ref (n_ref[, {Y.shape[1]}]); got "
            f"{k_ref.shape} and {np.shape(y_ref)}"
        )
    d = spectrum.eigenvalues
    c = float(alpha) / K
    a = (d / (c + d))[:, None]
    Z = spectrum.rotate(Y)
    M = (k_ref @ spectrum.eigenvectors) / K / (c + d)[None, :]  # F = (k_R / K) V diag(1/(c + d))
    b = M @ Z - Y_ref  # the xi = 0 student is ridge on y, the same every round
    p = a * Z
    xis = []
    for _ in range(1, int(n_rounds)):
        xi_t = optimal_xi(b, M @ (p - Z), bounds)
        xis.append(xi_t)
        p = a * (Z + xi_t * (p - Z))
    xi_arg: float | Sequence[float] = xis if xis else 1.0
    return self_distill(spectrum, y, alpha=alpha, xi=xi_arg, n_rounds=int(n_rounds))
