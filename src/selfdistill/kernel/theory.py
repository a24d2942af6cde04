"""The bounds of Mobahi, Farajtabar, Bartlett (2020), each a small function with its equation number,
and ``compare_with_theory``: every bound beside what a chain of rounds actually did.

Notation (see docs/specs/self-distillation-theory.md): G = V diag(d) V^T with the 1/K inside,
z_t = V^T y_t, r_t = ||z_t|| / sqrt(K eps), kappa = d_max / d_min over the POSITIVE eigenvalues,
A_t = diag(d / (c_t + d)) (29)-(30), B_t = prod_{i<=t} A_i (45).

NumPy only. Tolerances: a bound "holds" when observed >= lower - tol * scale (resp. <= upper + ...),
``scale = max(|observed|, |bound|)``, tol = RTOL = 1e-9, with two documented widenings for round-off:
r-valued bounds (Prop 3, step form) use scale >= 1 (r is computed to absolute accuracy ~1e-16 r_0), and
the bracket (23)-(24) uses tol = RTOL + 8 u r_t / (r_t - 1) (u = machine epsilon), because
||z_t|| - sqrt(K eps) loses digits as r_t -> 1 (then c_t itself is ill-determined).
Theorem 5 compares logarithms with tolerance RTOL.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selfdistill.io import atomic_write_text, json_text, to_jsonable

#: relative tolerance used to decide whether an observed value violates a bound.
RTOL = 1e-9


# ---------------------------------------------------------------------------------------------------------
# spectrum helpers
# ---------------------------------------------------------------------------------------------------------


def positive_spectrum(eigenvalues: np.ndarray, rank_tol: float | None = None) -> np.ndarray:
    """Ascending positive part of the spectrum: d > rank_tol * d_max.

    rank_tol defaults to K * machine epsilon (numpy.linalg.matrix_rank's convention, the same rule the
    engine uses to call an eigenvalue zero). Raises ValueError when no eigenvalue is positive.
    """
    d = np.sort(np.asarray(eigenvalues, dtype=float).ravel())
    if d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError("eigenvalues must be a non-empty array of finite numbers")
    tol = d.size * np.finfo(float).eps if rank_tol is None else float(rank_tol)
    d_max = d[-1]
    if d_max <= 0.0:
        raise ValueError("eigenvalues: G has no positive eigenvalue; the fit cannot move at all")
    return d[d > tol * d_max]


def _consecutive_distinct(d_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (d_k, d_{k+1}) of consecutive distinct positive eigenvalues, ascending."""
    u = np.unique(d_pos)
    return u[:-1], u[1:]


# ---------------------------------------------------------------------------------------------------------
# the bounds
# ---------------------------------------------------------------------------------------------------------


def c_bracket(
    eigenvalues: np.ndarray, z_norm: float | np.ndarray, n_samples: int, epsilon: float
) -> tuple[Any, Any]:
    """Bracket (23)-(24) on the root c of e(c) (20):

    d_min sqrt(K eps) / (||z|| - sqrt(K eps)) <= c <= d_max sqrt(K eps) / (||z|| - sqrt(K eps)).

    d_min, d_max are the smallest (clipped at 0) and largest of ``eigenvalues`` AS GIVEN: pass the
    positive part only when the labels have no component in the null space of G. Requires
    ||z|| > sqrt(K eps) (otherwise the round collapses and there is no c). Broadcasts over z_norm.
    """
    d = np.clip(np.asarray(eigenvalues, dtype=float), 0.0, None)
    s = math.sqrt(n_samples * epsilon)
    z = np.asarray(z_norm, dtype=float)
    if np.any(z <= s):
        raise ValueError(
            f"z_norm must exceed sqrt(K eps) = {s:.6g} (||y||^2 > K eps), else the round collapses to f = 0"
        )
    gap = z - s
    return d.min() * s / gap, d.max() * s / gap


def _b_of(r0: float, x: float) -> float:
    """b(x) of Prop 3 (125)."""
    return r0 * r0 * x / (r0 - 1.0 + x) ** 2


def _one_minus_a(r0: float, x: float) -> float:
    """1 - a(x) = x (x - 1) / (r0 - 1 + x)^2, computed without cancellation."""
    return x * (x - 1.0) / (r0 - 1.0 + x) ** 2


def _tangent_bound(r0: float, x: float, t: np.ndarray) -> np.ndarray:
    """a(x)^t r0 - b(x) S_t(x), S_t = sum_{i<t} a^i = -expm1(t ln a) / (1 - a) (stable near x = 1)."""
    u = _one_minus_a(r0, x)  # < 1 since a(x) > 0 for r0 > 1, x > 0
    b = _b_of(r0, x)
    if u == 0.0:
        return r0 - b * t
    log_a = math.log1p(-u)
    s_t = -np.expm1(t * log_a) / u
    return r0 * np.exp(t * log_a) - b * s_t


def _check_r0_kappa(r0: float, kappa: float) -> None:
    if not (np.isfinite(r0) and r0 > 1.0):
        raise ValueError(f"r0 = ||y_0|| / sqrt(K eps) must be > 1 (otherwise round 0 collapses), got {r0}")
    if not kappa >= 1.0:
        raise ValueError(f"kappa = d_max / d_min must be >= 1, got {kappa}")


def prop3_bounds(r0: float, kappa: float, t: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prop 3 (125): bounds on r_t while the chain has not collapsed,

    a(kappa)^t r0 - b(kappa) S_t(kappa) <= r_t <= a(1/kappa)^t r0 - b(1/kappa) S_t(1/kappa),
    a(x) = ((r0-1)^2 + x(2 r0 - 1)) / (r0-1+x)^2, b(x) = r0^2 x / (r0-1+x)^2, S_t(x) = sum_{i<t} a(x)^i.

    Each side is the step bound's tangent line at r0 iterated t times (the intercept is MINUS b).
    Vectorized over t (non-negative integers). kappa = inf gives the trivial bounds (-inf, r0).
    """
    _check_r0_kappa(r0, kappa)
    t_arr = np.asarray(t, dtype=float)
    if np.any(t_arr < 0):
        raise ValueError("t must be >= 0")
    if math.isinf(kappa):
        return np.where(t_arr == 0, r0, -np.inf), np.full_like(t_arr, r0)
    return _tangent_bound(r0, kappa, t_arr), _tangent_bound(r0, 1.0 / kappa, t_arr)


def prop3_step_bounds(r_prev: float | np.ndarray, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """Step form of Prop 3: r(r-1)/(r-1+kappa) <= r_next <= r(r-1)/(r-1+1/kappa), r = r_{t-1} > 1.

    Follows from (23)-(24) and ||z_{t+1}|| = ||A_t z_t|| (29)-(30). kappa = inf gives (0, r).
    """
    r = np.asarray(r_prev, dtype=float)
    if np.any(r <= 1.0):
        raise ValueError("r_prev must be > 1 (the previous round must not have collapsed)")
    if not kappa >= 1.0:
        raise ValueError(f"kappa must be >= 1, got {kappa}")
    if math.isinf(kappa):
        return np.zeros_like(r), r.copy()
    return r * (r - 1.0) / (r - 1.0 + kappa), r * (r - 1.0) / (r - 1.0 + 1.0 / kappa)


def t_low(r0: float, kappa: float) -> float:
    """Prop 4 (142): at least t_low = (r0 - 1) / kappa rounds before collapse."""
    _check_r0_kappa(r0, kappa)
    return (r0 - 1.0) / kappa


def t_log(r0: float, kappa: float) -> float:
    """Where the Prop 3 lower bound reaches 1 (exact solution of the iterated tangent line):

    t_log = ln[(kappa - 1 + r0^2) / (r0 (kappa - 1 + r0))] / ln a(kappa) >= t_low (limit r0 - 1 at kappa = 1).
    """
    _check_r0_kappa(r0, kappa)
    if math.isinf(kappa):
        return 0.0
    v = kappa - 1.0
    if v == 0.0:
        return r0 - 1.0
    numerator = math.log1p(v * (1.0 - r0) / (r0 * (v + r0)))
    denominator = math.log1p(-_one_minus_a(r0, kappa))
    return numerator / denominator


def theorem5_ratio_bound(
    d_k: float | np.ndarray, d_j: float | np.ndarray, d_min: float, r0: float, t: float | np.ndarray
) -> np.ndarray:
    """Theorem 5: for d_k > d_j and 1 <= t <= t_low,

    B_{t-1}[k,k] / B_{t-1}[j,j] >= ((r0 - 1 + d_min/d_j) / (r0 - 1 + d_min/d_k))^t.
    """
    d_k = np.asarray(d_k, dtype=float)
    d_j = np.asarray(d_j, dtype=float)
    if np.any(d_j <= 0) or d_min <= 0:
        raise ValueError("Theorem 5 needs positive eigenvalues d_j and d_min")
    if not r0 > 1.0:
        raise ValueError(f"r0 must be > 1, got {r0}")
    # log of the ratio as log1p(difference / denominator): accurate when r0 is large (eps -> 0)
    log_ratio = np.log1p((d_min / d_j - d_min / d_k) / (r0 - 1.0 + d_min / d_k))
    return np.exp(np.asarray(t, dtype=float) * log_ratio)


def sparsity_index(eigenvalues: np.ndarray, r0: float, t: float, rank_tol: float | None = None) -> float:
    """Sparsity index (50): S = min_k ((r0 - 1 + d_min/d_k) / (r0 - 1 + d_min/d_{k+1}))^t over consecutive
    distinct positive eigenvalues (ascending). A lower bound (Theorem 5) on the smallest ratio between
    consecutive diagonal entries of B_{t-1}; S = 1 says nothing. 1.0 when all eigenvalues are equal.
    """
    d = positive_spectrum(eigenvalues, rank_tol)
    lo, hi = _consecutive_distinct(d)
    if lo.size == 0:
        return 1.0
    return float(np.min(theorem5_ratio_bound(hi, lo, d[0], r0, t)))


def sparsity_index_at_t_low(eigenvalues: np.ndarray, r0: float, rank_tol: float | None = None) -> float:
    """(51): the sparsity index (50) at t = t_low = (r0 - 1)/kappa (exponent t_low, not t_low + 1)."""
    d = positive_spectrum(eigenvalues, rank_tol)
    return sparsity_index(d, r0, t_low(r0, float(d[-1] / d[0])), rank_tol=0.0)


def theorem6_limit(eigenvalues: np.ndarray, rank_tol: float | None = None) -> float:
    """Theorem 6: (51) decreases in eps, and lim_{eps -> 0} = exp((d_min/kappa) min_k (1/d_k - 1/d_{k+1}))."""
    d = positive_spectrum(eigenvalues, rank_tol)
    lo, hi = _consecutive_distinct(d)
    if lo.size == 0:
        return 1.0
    kappa = d[-1] / d[0]
    return float(np.exp(d[0] / kappa * np.min(1.0 / lo - 1.0 / hi)))


# ---------------------------------------------------------------------------------------------------------
# equivalent kernel and generalization proxies (Appendix B, Section 3.7)
# ---------------------------------------------------------------------------------------------------------


def equivalent_kernel_spectrum(
    b_diag: np.ndarray, c_dagger: float = 1.0, *, one_minus_b: np.ndarray | None = None
) -> np.ndarray:
    """Appendix B: round t equals plain kernel ridge, with regularization c_dagger and a kernel of the same
    eigenvectors and eigenvalues d_dagger_k = c_dagger b_k / (1 - b_k), b_k = B_t[k,k].

    b_k = 0 (null space) gives 0; b_k = 1 (c_t negligible against d_k) gives +inf. Pass ``one_minus_b``
    (e.g. computed as -expm1(-sum_i log1p(c_i/d_k))) to avoid cancellation when b_k is close to 1.
    Works on any shape (a row per round).
    """
    if not c_dagger > 0:
        raise ValueError(f"c_dagger must be > 0, got {c_dagger}")
    b = np.asarray(b_diag, dtype=float)
    if np.any((b < 0) | (b > 1)):
        raise ValueError("b_diag entries must lie in [0, 1] (diagonal of B_t = prod d/(c+d))")
    omb = 1.0 - b if one_minus_b is None else np.asarray(one_minus_b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = c_dagger * b / omb
    out = np.where(b == 0.0, 0.0, out)
    return np.where(omb <= 0.0, np.inf, out)


def rademacher_proxy(d_dagger: np.ndarray, n_samples: int) -> float:
    """Bartlett & Mendelson (2002) Lemma 22, RKHS ball of radius 1: R_K <= (2/K) sqrt(trace[k(x_i, x_j)]).

    With the 1/K inside G (trace of the raw matrix = K sum_k d_dagger_k) this is 2 sqrt(sum d_dagger / K);
    we return sqrt(sum_k d_dagger_k / K) (constant 2 dropped). Compare rounds at a fixed c_dagger.
    """
    d = np.clip(np.asarray(d_dagger, dtype=float), 0.0, None)
    return float(np.sqrt(np.sum(d) / n_samples))


def tail_complexity(d_dagger: np.ndarray, n_samples: int) -> tuple[float, int]:
    """Bartlett, Bousquet, Mendelson (2005) Cor. 6.7 shape: min_h (h/K + sqrt((1/K) sum_{k>h} d_dagger_k)),
    eigenvalues sorted descending, h = 0..K (constants dropped). Returns (value, argmin h).
    """
    d = np.sort(np.clip(np.asarray(d_dagger, dtype=float), 0.0, None))[::-1]
    with np.errstate(invalid="ignore"):
        tails = np.concatenate([np.cumsum(d[::-1])[::-1], [0.0]])  # tails[h] = sum_{k >= h} (0-based)
    values = np.arange(d.size + 1) / n_samples + np.sqrt(tails / n_samples)
    values = np.where(np.isnan(values), np.inf, values)
    h = int(np.argmin(values))
    return float(values[h]), h


# ---------------------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------------------


def _scale(observed: np.ndarray, bound: np.ndarray, floor: float) -> np.ndarray:
    return np.maximum(np.maximum(np.abs(observed), np.abs(np.where(np.isfinite(bound), bound, 0.0))), floor)


def _holds_lower(observed: np.ndarray, lower: np.ndarray, tol: Any = RTOL, floor: float = 0.0) -> np.ndarray:
    return np.asarray(observed >= lower - tol * _scale(observed, lower, floor))


def _holds_upper(observed: np.ndarray, upper: np.ndarray, tol: Any = RTOL, floor: float = 0.0) -> np.ndarray:
    return np.asarray(observed <= upper + tol * _scale(observed, upper, floor))


@dataclass(frozen=True)
class TheoryReport:
    """Every bound of the paper beside the observed chain. Round t = 0..T-1 are the fitted rounds.

    Arrays: ``c_*`` per fitted round (length T); ``r_observed``/``prop3_*`` per label vector y_0..y_T (T+1);
    ``step_*`` on r_t for t = 1..T (T); Theorem 5 / (50) per t' = 1..T - anchor (B_{t'-1} counted from
    the anchor round); ``d_dagger`` (T, K) and the generalization proxies per fitted round.

    When G has zero eigenvalues the labels of round 0 may have a null-space part that the positive-part
    bounds do not cover; the chain is then analysed from round 1 on (``anchor_round`` = 1; r_anchor = r_1,
    B ratios divided by B_0), and round 0 uses the full spectrum (d_min = 0: trivial lower bounds).
    """

    epsilon: float
    n_samples: int
    n_rounds: int
    collapsed: bool
    n_zero_eigenvalues: int
    d_min: float
    d_max: float
    kappa: float
    anchor_round: int
    r_anchor: float
    c_observed: np.ndarray
    c_lower: np.ndarray
    c_upper: np.ndarray
    r_observed: np.ndarray
    prop3_lower: np.ndarray
    prop3_upper: np.ndarray
    step_lower: np.ndarray
    step_upper: np.ndarray
    t_low: float
    t_log: float
    sparsity_bound: np.ndarray
    sparsity_observed: np.ndarray
    theorem5_applies: np.ndarray
    theorem5_worst_log_slack: np.ndarray
    sparsity_at_t_low: float
    theorem6_limit: float
    b_diag_max_deviation: float
    c_dagger: float
    d_dagger: np.ndarray
    rademacher: np.ndarray
    tail_complexity: np.ndarray
    tail_h: np.ndarray
    notes: tuple[str, ...] = field(default=())

    # -- verdicts -------------------------------------------------------------------------------------
    @property
    def guaranteed_rounds(self) -> float:
        """anchor_round + t_low: rounds Prop 4 guarantees in total (nan when r_anchor <= 1)."""
        return self.anchor_round + self.t_low

    @property
    def bracket_held(self) -> np.ndarray:
        r = self.r_observed[:-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            tol = RTOL + 8 * np.finfo(float).eps * np.abs(r / (r - 1.0))
        held = _holds_lower(self.c_observed, self.c_lower, tol) & _holds_upper(
            self.c_observed, self.c_upper, tol
        )
        return held | np.isnan(self.c_lower)  # r_t <= 1 by round-off only: bracket undefined, skipped

    @property
    def prop3_held(self) -> np.ndarray:
        ok = np.ones(self.r_observed.shape, dtype=bool)
        valid = np.isfinite(self.prop3_upper)
        r, lo, hi = self.r_observed[valid], self.prop3_lower[valid], self.prop3_upper[valid]
        ok[valid] = _holds_lower(r, lo, floor=1.0) & _holds_upper(r, hi, floor=1.0)
        return ok

    @property
    def step_held(self) -> np.ndarray:
        r_next = self.r_observed[1:]
        held = _holds_lower(r_next, self.step_lower, floor=1.0) & _holds_upper(
            r_next, self.step_upper, floor=1.0
        )
        return held | np.isnan(self.step_lower)

    @property
    def prop4_checkable(self) -> bool:
        """Prop 4 can be checked when the chain ran to collapse or already ran past the guarantee."""
        return bool(np.isfinite(self.t_low) and (self.collapsed or self.n_rounds >= self.guaranteed_rounds))

    @property
    def prop4_held(self) -> bool | None:
        if not self.prop4_checkable:
            return None
        return bool(self.n_rounds >= self.guaranteed_rounds * (1.0 - RTOL))

    @property
    def theorem5_held(self) -> np.ndarray:
        """Per t': worst log-ratio slack over consecutive pairs >= -RTOL (True where not applicable)."""
        slack = self.theorem5_worst_log_slack
        return ~self.theorem5_applies | ~np.isfinite(slack) | (slack >= -RTOL)

    @property
    def violations(self) -> list[str]:
        """Human-readable list of every violated bound (empty when theory and observation agree)."""
        out: list[str] = []
        for t in np.flatnonzero(self.r_observed[:-1] < 1.0 - RTOL):
            out.append(
                f"round {t} was fitted although r_{t} = {self.r_observed[t]:.9g} < 1 (||y_t||^2 < K eps: "
                "the chain should have collapsed there)"
            )
        for t in np.flatnonzero(~self.bracket_held):
            out.append(
                f"(23)-(24) round {t}: c_t = {self.c_observed[t]:.6g} outside "
                f"[{self.c_lower[t]:.6g}, {self.c_upper[t]:.6g}]"
            )
        for t in np.flatnonzero(~self.prop3_held):
            out.append(
                f"Prop 3 (125) r_{t} = {self.r_observed[t]:.9g} outside "
                f"[{self.prop3_lower[t]:.9g}, {self.prop3_upper[t]:.9g}]"
            )
        for i in np.flatnonzero(~self.step_held):
            out.append(
                f"Prop 3 step form r_{i + 1} = {self.r_observed[i + 1]:.9g} outside "
                f"[{self.step_lower[i]:.9g}, {self.step_upper[i]:.9g}]"
            )
        if self.prop4_held is False:
            out.append(
                f"Prop 4 (142): {self.n_rounds} rounds before collapse < guaranteed "
                f"{self.guaranteed_rounds:.6g}"
            )
        for i in np.flatnonzero(~self.theorem5_held):
            out.append(
                f"Theorem 5 t'={i + 1}: consecutive-pair ratio below its bound (log slack "
                f"{self.theorem5_worst_log_slack[i]:.3g})"
            )
        if self.b_diag_max_deviation > 1e-8:
            out.append(
                f"b_diag differs from prod_i d/(c_i + d) by {self.b_diag_max_deviation:.3g} (relative): "
                "B_t does not match the c_t it was given"
            )
        return out

    # -- output ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON-ready dict (arrays as lists, NaN/inf as None), verdicts included."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data.update(
            guaranteed_rounds=self.guaranteed_rounds,
            bracket_held=self.bracket_held,
            prop3_held=self.prop3_held,
            step_held=self.step_held,
            prop4_checkable=self.prop4_checkable,
            prop4_held=self.prop4_held,
            theorem5_held=self.theorem5_held,
            violations=self.violations,
            rtol=RTOL,
        )
        return to_jsonable(data)

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """JSON text (strict: no NaN); written atomically to ``path`` when given."""
        text = json_text(self.to_dict())
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    def __str__(self) -> str:
        def f(v: float, w: int = 10) -> str:
            return f"{'-':>{w}}" if v is None or not np.isfinite(v) else f"{v:>{w}.4g}"

        head = (
            f"Theory vs observation (Mobahi et al. 2020): K={self.n_samples}, eps={self.epsilon:g}, "
            f"{self.n_rounds} fitted rounds "
            f"({'collapsed' if self.collapsed else 'stopped before collapse'})\n"
            f"positive spectrum: d_min={self.d_min:.4g}, d_max={self.d_max:.4g}, kappa={self.kappa:.4g}; "
            f"{self.n_zero_eigenvalues} zero eigenvalue(s); analysed from round {self.anchor_round} "
            f"(r={self.r_anchor:.6g})\n"
        )
        cols = (
            f"{'t':>3} {'c_t':>10} {'(24) lo':>10} {'(24) hi':>10} {'r_t':>10} {'P3 lo':>10} {'P3 hi':>10} "
            f"{'step lo':>10} {'step hi':>10} {'Rad':>10} {'tail':>10}  ok"
        )
        lines = [head, cols]
        bracket, p3, step = self.bracket_held, self.prop3_held, self.step_held
        for t in range(self.n_rounds + 1):
            fitted = t < self.n_rounds
            ok = p3[t] and (not fitted or bracket[t]) and (t == 0 or step[t - 1])
            lines.append(
                f"{t:>3} "
                + " ".join(
                    f(v)
                    for v in (
                        self.c_observed[t] if fitted else None,
                        self.c_lower[t] if fitted else None,
                        self.c_upper[t] if fitted else None,
                        self.r_observed[t],
                        self.prop3_lower[t],
                        self.prop3_upper[t],
                        self.step_lower[t - 1] if t else None,
                        self.step_upper[t - 1] if t else None,
                        self.rademacher[t] if fitted else None,
                        self.tail_complexity[t] if fitted else None,
                    )
                )
                + f"  {'yes' if ok else 'NO'}"
            )
        verdict = {None: "not checkable (stopped before collapse)", True: "held", False: "VIOLATED"}
        if not np.isfinite(self.t_low):
            verdict[None] = f"not applicable (r <= 1 at round {self.anchor_round}: nothing to bound)"
        lines.append(
            f"Prop 4: t_low={self.t_low:.4g}, t_log={self.t_log:.4g} (from round {self.anchor_round}); "
            f"observed {self.n_rounds} rounds; " + verdict[self.prop4_held]
        )
        if self.sparsity_bound.size:
            lines.append(
                f"{'t' + chr(39):>3} {'S(t) (50)':>12} {'observed':>12} {'applies':>8}  "
                "observed = min_k B_{t'-1}[k+1] / B_{t'-1}[k], t' counted from the anchor round"
            )
            for i, (s, o, a) in enumerate(
                zip(self.sparsity_bound, self.sparsity_observed, self.theorem5_applies, strict=True)
            ):
                lines.append(f"{i + 1:>3} {f(s, 12)} {f(o, 12)} {'yes' if a else 'no':>8}")
        lines.append(
            f"sparsity index at t_low (51): {self.sparsity_at_t_low:.9g}; "
            f"Theorem 6 limit (eps -> 0): {self.theorem6_limit:.9g}"
        )
        lines.extend(f"note: {n}" for n in self.notes)
        v = self.violations
        lines.append("violations: none" if not v else "VIOLATIONS:\n  " + "\n  ".join(v))
        return "\n".join(lines)


def _b_from_chain(d: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """B_t[k,k] = prod_{i<=t} d_k/(c_i + d_k) and 1 - B_t[k,k], both without cancellation (45)."""
    with np.errstate(divide="ignore"):
        ratio = np.where(d[None, :] > 0, c[:, None] / np.where(d > 0, d, 1.0)[None, :], np.inf)
    log_b = -np.cumsum(np.log1p(ratio), axis=0)
    return np.exp(log_b), -np.expm1(log_b)


def compare_with_theory(
    *,
    eigenvalues: np.ndarray,
    z_norms: np.ndarray,
    c: np.ndarray,
    b_diag: np.ndarray,
    epsilon: float,
    n_samples: int,
    c_dagger: float = 1.0,
    rank_tol: float | None = None,
) -> TheoryReport:
    """Every bound of the paper beside an observed chain (``ChainResult.theory()`` calls this).

    Parameters
    ----------
    eigenvalues : ndarray of shape (K,)
        d of G (ascending; zeros and round-off allowed: bounds use ``d > rank_tol * d_max``).
    z_norms : ndarray of shape (T+1,)
        ``||z_t||`` (Frobenius for several outputs) for t = 0..T.
    c : ndarray of shape (T,)
        c_t of the T fitted rounds (one shared c per round).
    b_diag : ndarray of shape (T, K)
        Row t is the diagonal of ``B_t`` (45).
    epsilon : float
        The constraint of eq. (1).
    n_samples : int
        K.
    c_dagger : float, default=1.0
        Scale of the equivalent kernel.
    rank_tol : float or None, default=None
        Eigenvalues at most ``rank_tol * d_max`` count as zero (default ``K * machine-eps``).

    Returns
    -------
    TheoryReport
        Every bound beside what happened, the violations and plain-words notes.

    Notes
    -----
    ``b_diag`` is checked against ``prod_i d / (c_i + d)`` recomputed from c (``b_diag_max_deviation``);
    the equivalent kernel uses the recomputed ``B_t`` and ``1 - B_t`` (no cancellation when ``B_t`` is
    close to 1).
    """
    d_all = np.clip(np.asarray(eigenvalues, dtype=float).ravel(), 0.0, None)
    order = np.argsort(d_all, kind="stable")
    d_all = d_all[order]
    z_norms = np.asarray(z_norms, dtype=float).ravel()
    c = np.asarray(c, dtype=float)
    if c.ndim != 1:
        raise ValueError(
            f"c must be 1-D (one shared c_t per round), got shape {c.shape}; for one c per output column "
            "compare each column's chain separately"
        )
    n_fit = c.size
    K = int(n_samples)
    b = np.asarray(b_diag, dtype=float).reshape(n_fit, -1) if n_fit else np.zeros((0, d_all.size))
    if z_norms.size != n_fit + 1:
        raise ValueError(f"z_norms must have len(c) + 1 = {n_fit + 1} entries (t = 0..T), got {z_norms.size}")
    if b.shape != (n_fit, d_all.size):
        raise ValueError(
            f"b_diag must have shape (len(c), K) = ({n_fit}, {d_all.size}), got {np.shape(b_diag)}"
        )
    if not (epsilon > 0 and np.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon}")
    for name, arr in (("z_norms", z_norms), ("c", c), ("b_diag", b)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or inf")
    b = b[:, order]
    notes: list[str] = []

    s = math.sqrt(K * epsilon)
    r = z_norms / s
    collapsed = bool(r[-1] <= 1.0)

    d_pos = positive_spectrum(d_all, rank_tol)
    n_zero = d_all.size - d_pos.size
    d_min, d_max = float(d_pos[0]), float(d_pos[-1])
    kappa = d_max / d_min
    anchor = 1 if (n_zero and n_fit >= 1) else 0
    if n_zero:
        notes.append(
            f"G has {n_zero} zero eigenvalue(s) (d <= tol * d_max): bounds use the positive part; round 0 "
            "may carry a null-space part of the labels, so the chain is analysed from round 1 on and round 0 "
            "uses d_min = 0 (trivial lower bracket and step bounds)"
        )

    # (23)-(24): bracket per fitted round
    c_lo = np.empty(n_fit)
    c_hi = np.empty(n_fit)
    for t in range(n_fit):
        spectrum = d_all if t < anchor else d_pos
        c_lo[t], c_hi[t] = c_bracket(spectrum, z_norms[t], K, epsilon) if r[t] > 1 else (np.nan, np.nan)

    # Prop 3 from the anchor; step form for every fitted round
    p3_lo = np.full(n_fit + 1, np.nan)
    p3_hi = np.full(n_fit + 1, np.nan)
    p3_lo[:anchor] = p3_hi[:anchor] = r[:anchor]
    r_anchor = float(r[anchor])
    if r_anchor > 1:
        steps = np.arange(n_fit + 1 - anchor)
        p3_lo[anchor:], p3_hi[anchor:] = prop3_bounds(r_anchor, kappa, steps)
        tl, tg = t_low(r_anchor, kappa), t_log(r_anchor, kappa)
    else:
        tl = tg = math.nan
    step_lo = np.empty(n_fit)
    step_hi = np.empty(n_fit)
    for t in range(n_fit):
        kappa_t = math.inf if t < anchor else kappa
        step_lo[t], step_hi[t] = prop3_step_bounds(r[t], kappa_t) if r[t] > 1 else (np.nan, np.nan)
    at_one = np.flatnonzero(r[:n_fit] <= 1)
    if at_one.size:
        notes.append(
            f"round(s) {at_one.tolist()} were fitted at r_t = 1 up to round-off: their bracket and step "
            "bounds are undefined and skipped"
        )

    # Theorem 5 and the sparsity index (50) for t' = 1..T - anchor
    n_th = max(n_fit - anchor, 0)
    lo_pairs, hi_pairs = _consecutive_distinct(d_pos)
    idx_lo = np.searchsorted(d_all, lo_pairs)  # first occurrence of each distinct value
    idx_hi = np.searchsorted(d_all, hi_pairs)
    s_bound = np.full(n_th, np.nan)
    s_obs = np.full(n_th, np.nan)
    applies = np.zeros(n_th, dtype=bool)
    worst = np.full(n_th, np.nan)
    base = b[anchor - 1] if anchor else np.ones(d_all.size)
    for i in range(n_th):
        tp = i + 1
        if not r_anchor > 1:
            break
        applies[i] = tp <= tl
        if lo_pairs.size == 0:
            s_bound[i] = s_obs[i] = 1.0
            worst[i] = 0.0
            continue
        bound = theorem5_ratio_bound(hi_pairs, lo_pairs, d_min, r_anchor, tp)
        s_bound[i] = float(np.min(bound))
        b_rel = b[anchor + tp - 1] / np.where(base > 0, base, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            observed = b_rel[idx_hi] / b_rel[idx_lo]
            slack = np.log(observed) - np.log(bound)
        finite = np.isfinite(slack)
        if finite.any():
            s_obs[i] = float(np.min(observed[finite]))
            worst[i] = float(np.min(slack[finite]))
        if not finite.all():
            notes.append(
                f"Theorem 5 t'={tp}: {int((~finite).sum())} pair(s) skipped (B entries underflow to 0)"
            )
    if r_anchor > 1:
        s_tlow = sparsity_index(d_pos, r_anchor, tl, rank_tol=0.0)
    else:
        s_tlow = math.nan
    limit = theorem6_limit(d_pos, rank_tol=0.0)

    # B_t consistency with c_t, and the equivalent kernel (Appendix B)
    b_rec, omb = _b_from_chain(d_all, c) if n_fit else (np.zeros((0, d_all.size)),) * 2
    dev = np.abs(b - b_rec) / (np.abs(b_rec) + 1e-12) if n_fit else np.zeros(1)
    b_dev = float(dev.max()) if dev.size else 0.0
    d_dag = equivalent_kernel_spectrum(np.clip(b_rec, 0.0, 1.0), c_dagger, one_minus_b=omb)
    rad = np.array([rademacher_proxy(row, K) for row in d_dag])
    tails = [tail_complexity(row, K) for row in d_dag]
    tail_v = np.array([v for v, _ in tails])
    tail_h = np.array([h for _, h in tails], dtype=int)

    # plain words on vacuous bounds
    if np.isfinite(tl) and tl < 1:
        notes.append(
            f"t_low = {tl:.6g} < 1 (kappa = {kappa:.3g}): Prop 4 and Theorem 5 guarantee nothing here "
            "(vacuous)"
        )
    if np.isfinite(s_tlow) and s_tlow - 1.0 < 1e-3 and lo_pairs.size:
        notes.append(f"sparsity index at t_low = 1 + {s_tlow - 1:.2g}: the sparsification bound is vacuous")
    if not r_anchor > 1:
        notes.append(f"r_{anchor} = {r_anchor:.6g} <= 1: the chain collapses there, no bound applies")
    if lo_pairs.size == 0 or kappa < 1.0 + 1e-12:
        notes.append("kappa = 1: Prop 3 is exact (r_t = r_0 - t)")
    if np.isinf(d_dag).any():
        notes.append(
            "some b_k = 1 to machine precision: d_dagger = inf there, proxies infinite (null in JSON)"
        )
    notes.append(
        f"c reported in the paper's convention (G = K_raw/K); scikit-learn KernelRidge alpha = K c. "
        f"Equivalent kernel with c_dagger = {c_dagger:g}; Rademacher proxy sqrt(sum d_dagger / K), tail form "
        "min_h h/K + sqrt(sum_{k>h} d_dagger / K) (constants dropped)"
    )

    return TheoryReport(
        epsilon=float(epsilon),
        n_samples=K,
        n_rounds=n_fit,
        collapsed=collapsed,
        n_zero_eigenvalues=int(n_zero),
        d_min=d_min,
        d_max=d_max,
        kappa=float(kappa),
        anchor_round=anchor,
        r_anchor=r_anchor,
        c_observed=c.copy(),
        c_lower=c_lo,
        c_upper=c_hi,
        r_observed=r,
        prop3_lower=p3_lo,
        prop3_upper=p3_hi,
        step_lower=step_lo,
        step_upper=step_hi,
        t_low=float(tl),
        t_log=float(tg),
        sparsity_bound=s_bound,
        sparsity_observed=s_obs,
        theorem5_applies=applies,
        theorem5_worst_log_slack=worst,
        sparsity_at_t_low=float(s_tlow),
        theorem6_limit=float(limit),
        b_diag_max_deviation=b_dev,
        c_dagger=float(c_dagger),
        d_dagger=d_dag,
        rademacher=rad,
        tail_complexity=tail_v,
        tail_h=tail_h,
        notes=tuple(notes),
    )
