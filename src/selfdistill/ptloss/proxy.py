r"""The proxy teacher of PTLoss: the distribution a PTLoss-trained student is pulled toward.

For one example with teacher distribution :math:`p_t` the proxy teacher is

.. math::

    p_{\mathrm{px}} = \arg\min_{p \in \Delta} L_{\mathrm{PT}}(p_t, p)
        = \arg\min_{p \in \Delta} \sum_j p_{t,j} f_j(p_j), \qquad
    f_j(p) = -\log p + h_j(1 - p), \quad h_j(u) = \sum_{m=1}^{M} \epsilon_{j,m} u^m

(the teacher-entropy part of :math:`L_{\mathrm{PT}}` does not depend on :math:`p`). The objective is
*separable*, so its Hessian in :math:`p` is diagonal,
:math:`H_{jj} = p_{t,j} f_j''(p_j) = p_{t,j} (1/p_j^2 + h_j''(1 - p_j))`. Its stationary points satisfy
:math:`p_{t,j} (1/p_j + g_j(p_j)) = W` with :math:`g_j(p) = h_j'(1 - p)`, i.e. the fixed point of the
project spec

.. math::

    p_j = \frac{p_{t,j} \bigl(1 + p_j g_j(p_j)\bigr)}{W}, \qquad
    W = \sum_k p_{t,k} \bigl(1 + p_k g_k(p_k)\bigr),

and ``eps = 0`` gives :math:`p_{\mathrm{px}} = p_t`.

Method: equality-constrained Newton (Boyd & Vandenberghe, Convex Optimization, Sec. 10.2) from a feasible
start (one fixed-point step from ``p_t``). With a diagonal Hessian the KKT system is solved in O(C) per
example: ``dp_j = H_jj^{-1} (v_j - nu)`` with ``v = -grad`` and ``nu = sum H^{-1} v / sum H^{-1}`` (so ``sum
dp = 0``). The variables are the ratios ``w_j = p_j / p_t,j``: tiny probabilities keep full relative precision
and classes with ``p_t,j = 0`` stay at 0. A fraction-to-boundary rule keeps ``p > 0``. Candidates certified
convex on a grid (:func:`~selfdistill.ptloss.convexity_margin`) take full Newton steps while the steps keep
shrinking; otherwise a backtracking (Armijo) line search on the objective is used, with the exact Hessian
where its restriction to ``sum dp = 0`` is positive definite and a floored positive curvature elsewhere (a
descent direction either way). Everything is batched over examples and over candidate perturbations, in blocks
of bounded size. Convergence: the fixed-point residual ``max_j |p_j - p_t,j (1 + p_j g_j) / W| <= tol`` of
every row, checked once the relative Newton steps are below ``sqrt(tol)`` (quadratic convergence: the next
error is about the square of the last step).

Reported per example (``return_info=True``): convergence, that residual, ``W`` (the KKT multiplier),
``nonconvex`` (some ``H_jj <= 0`` at the solution: only a local minimum is certified) and ``boundary``
(``W <= 0`` while the teacher gives some class probability 0: the minimiser over the closed simplex would
move mass onto those classes; the returned point is the minimiser on the teacher's support).

**The proxy of the loss actually trained (temperature and form).** At temperature ``T`` the student's
logits ``z`` are trained with ``T^2 L(q, r)``, where ``q = softmax(t / T) = p_t^(1/T) / Z`` is the softened
teacher and ``r = softmax(z / T)`` the student's softened distribution. As ``z`` ranges over ``R^C``, ``r``
ranges over the open simplex and ``T^2 > 0`` does not move a minimiser, so the minimiser of the trained
loss is ``r* = argmin_r L(q, r)``: the proxy teacher at ``(T, form)`` is the proxy of the *softened*
teacher for that form.

- ``form="full"``: the problem above with ``p_t`` replaced by ``q``.
- ``form="truncated"``: ``argmin_r sum_j q_j H_j(1 - r_j)``, ``H_j(u) = sum_{m<=M} (1/m + eps_{j,m}) u^m``;
  without the ``-log r`` barrier the minimiser may put exactly zero mass on a class, and even ``eps = 0``
  moves it (the truncated series is not the KL). Solved in :mod:`selfdistill.ptloss.truncated`.

``space="softened"`` (default) returns ``r*``, the distribution the loss compares, i.e. the target of the
student's tempered softmax: the distilled risk of the tempered loss (the bound of the spec, Menon et al. 2021,
Prop. 3, with the tempered log-loss) has the bias term ``||r* - p*||``, which is what the search estimates.
``space="student"`` returns the student's own ``T = 1`` prediction at that optimum, ``softmax(T log r*) =
r*^T / Z``; at ``eps = 0`` it is the teacher itself at every ``T`` (a temperature alone does not change the
optimum of an unconstrained student).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from selfdistill.ptloss.loss import FORMS, as_epsilon, positive_int, positive_real, soften_probabilities
from selfdistill.ptloss.truncated import solve_truncated_block, truncated_convexity_margin

SPACES = ("softened", "student")

_CURVATURE_FLOOR = 1e-3  # H_jj is kept >= this fraction of its eps = 0 value (p_t / p^2)
_FRACTION_TO_BOUNDARY = 0.99
_ARMIJO = 1e-4
_MAX_HALVINGS = 40
_START_FLOOR = 0.1  # the fixed-point start keeps w = p / p_t >= this before normalisation
_CONVEXITY_MARGIN = 1e-2  # candidates with a larger margin take full Newton steps (line search otherwise)


@dataclass
class ProxySolveInfo:
    """Diagnostics of a batched proxy-teacher solve (:func:`~selfdistill.ptloss.proxy_teacher` with
    ``return_info=True``); tensors have the batch shape ``(N,)`` or ``(S, N)``.

    Attributes
    ----------
    converged : Tensor of bool
        The example's residual is at most ``tol``.
    residual : Tensor
        Full form: the fixed-point residual ``max_j |p_j - q_j (1 + p_j g_j) / W|``; truncated form: the
        projected-gradient residual (:mod:`selfdistill.ptloss.truncated`); ``inf`` where a solve failed.
    multiplier : Tensor
        The KKT multiplier (``W`` of the full form).
    nonconvex : Tensor of bool
        The problem is not convex at the solution (only a local minimum is certified).
    boundary : Tensor of bool
        The minimiser over the closed simplex would move mass onto classes the teacher gives probability 0;
        the returned point is the minimiser on the teacher's support.
    iterations : int
        The most Newton iterations any block took.
    """

    converged: Tensor
    residual: Tensor
    multiplier: Tensor
    nonconvex: Tensor
    boundary: Tensor
    iterations: int

    @property
    def n_failed(self) -> int:
        """Number of examples (times candidates) that did not converge."""
        return int((~self.converged).sum())

    @property
    def all_converged(self) -> bool:
        """Whether every example (of every candidate) converged."""
        return bool(self.converged.all())

    @property
    def max_residual(self) -> float:
        """The largest residual (0 for an empty batch)."""
        return float(self.residual.max()) if self.residual.numel() else 0.0

    def failed_indices(self) -> Tensor:
        """Indices (rows of ``nonzero``) of the examples that did not converge."""
        return (~self.converged).nonzero()

    def __str__(self) -> str:
        total = self.converged.numel()
        return (
            f"ProxySolveInfo: {total - self.n_failed}/{total} converged in <= {self.iterations} Newton "
            "iterations, "
            f"max fixed-point residual {self.max_residual:.2e}, {int(self.nonconvex.sum())} non-convex, "
            f"{int(self.boundary.sum())} on the simplex boundary"
        )


def check_probabilities(probs: Tensor, name: str = "teacher_probs", *, atol: float = 1e-4) -> Tensor:
    """Validate an ``(N, C)`` array of probability rows and return it renormalised as a float tensor."""
    probs = torch.as_tensor(probs)
    if not probs.is_floating_point():
        raise ValueError(f"{name} must be floating point probabilities, got dtype {probs.dtype}")
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, C) with C >= 2 classes, got {tuple(probs.shape)}")
    if not torch.isfinite(probs).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if (probs < 0).any():
        raise ValueError(
            f"{name} has negative entries: pass probabilities (softmax of the logits), not logits"
        )
    sums = probs.sum(-1)
    worst = float((sums - 1).abs().max()) if probs.shape[0] else 0.0
    if worst > atol:
        raise ValueError(
            f"{name} rows must sum to 1 (largest deviation {worst:.3g} > tolerance {atol:g}): pass softmax "
            "probabilities, not logits or unnormalised scores"
        )
    return probs / sums.unsqueeze(-1)


class _Coefficients:
    """Horner coefficients of h, g = h' and h'' for a block of candidates, each a list of ``(S, 1, C|1)``."""

    def __init__(self, eps: Tensor) -> None:  # eps: (S, C|1, M)
        eps = eps.unsqueeze(1)
        m = torch.arange(1, eps.shape[-1] + 1, dtype=eps.dtype, device=eps.device)
        self.h = [eps[..., i].contiguous() for i in range(eps.shape[-1])]  # h(u) = u * sum_i h[i] u^i
        self.g = [(eps[..., i] * m[i]).contiguous() for i in range(eps.shape[-1])]
        self.k = [(eps[..., i] * m[i] * (m[i] - 1)).contiguous() for i in range(1, eps.shape[-1])]


def _horner_into(out: Tensor, u: Tensor, coefficients: list[Tensor]) -> Tensor:
    """``out = sum_i c_i u^i`` (Horner, in place); an empty list gives zeros."""
    if not coefficients:
        return out.zero_()
    if len(coefficients) == 1:
        return out.copy_(coefficients[0].expand_as(out))
    torch.addcmul(coefficients[-2], coefficients[-1], u, out=out)
    for c in reversed(coefficients[:-2]):
        torch.addcmul(c, out, u, out=out)
    return out


def _objective(pt: Tensor, w: Tensor, u: Tensor, coef: _Coefficients, buf: Tensor) -> Tensor:
    """``sum_j p_t,j (-log p_j + h_j(1 - p_j))`` per row, up to the constant ``-sum p_t log p_t``."""
    _horner_into(buf, u, coef.h).mul_(u).sub_(torch.log(w))
    return buf.mul_(pt).sum(-1)


def convexity_margin(epsilon: Tensor, num_points: int = 1000, *, form: str = "full") -> Tensor:
    r"""A convexity certificate of the proxy-teacher problem per candidate, on a grid of ``num_points``.

    ``form="full"``: :math:`\min_{j, p}\, p^2 f_j''(p) = 1 + p^2 h_j''(1 - p)` over :math:`p \in (0, 1]`.
    ``form="truncated"``: :math:`\min_{j, u} H_j''(u)` over :math:`u \in [0, 1]`
    (:mod:`selfdistill.ptloss.truncated`). Both are 1 at ``eps = 0`` (M >= 2 for the truncated form) and do
    not depend on the temperature. Positive means every per-class term is (numerically) convex, so the
    problem is convex and its minimiser unique.

    Parameters
    ----------
    epsilon : Tensor, shape (M,), (C, M), or (S, C, M) / (S, 1, M) for S candidates
        The perturbation(s).
    num_points : int, default 1000
        Grid points per class.
    form : {"full", "truncated"}, default "full"

    Returns
    -------
    Tensor
        A scalar tensor for one perturbation, shape ``(S,)`` for candidates.

    Examples
    --------
    >>> import torch
    >>> from selfdistill.ptloss import convexity_margin
    >>> convexity_margin(torch.zeros(5)).item()
    1.0
    >>> convexity_margin(torch.tensor([0.0, -2.0])).item() < 0     # 1 + p^2 h'' = 1 - 4 p^2 < 0 for p > 1/2
    True
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    eps = as_epsilon(epsilon)
    batched = eps.ndim == 3
    eps3 = eps if batched else eps.unsqueeze(0)
    if form == "truncated":
        margin = truncated_convexity_margin(eps3, num_points)
        return margin if batched else margin[0]
    p = torch.linspace(1.0 / num_points, 1.0, num_points, dtype=eps3.dtype, device=eps3.device)
    u = (1 - p).view(1, -1, 1).expand(eps3.shape[0], -1, eps3.shape[1])  # (S, P, C|1)
    coef = _Coefficients(eps3)
    curvature = _horner_into(torch.empty_like(u), u, coef.k)  # (S, P, C)
    margin = (1 + (p * p).view(1, -1, 1) * curvature).amin(dim=(-1, -2))
    return margin if batched else margin[0]


def _safeguard_curvature(c: Tensor, a2: Tensor, pt: Tensor) -> Tensor:
    """``c = p_t H_jj`` kept as is in rows where the Hessian restricted to ``sum dp = 0`` is positive
    definite,
    floored at ``_CURVATURE_FLOOR * (p_t / p)^2`` elsewhere (a descent direction either way).

    For a diagonal Hessian that restriction is PD iff all ``H_jj > 0``, or exactly one ``H_jj < 0`` and
    ``sum_j 1 / H_jj < 0`` (inertia of the bordered KKT matrix); the exact step then converges quadratically.
    """
    nonpositive = (c <= 0).to(c.dtype).sum(-1, keepdim=True)
    inverse_sum = (pt / c).sum(-1, keepdim=True)
    exact = (nonpositive == 0) | ((nonpositive == 1) & (inverse_sum < 0))
    return torch.where(exact, c, torch.maximum(c, a2 * _CURVATURE_FLOOR))


def _fixed_point_residual(pt: Tensor, p: Tensor, coef: _Coefficients, buf: Tensor) -> tuple[Tensor, Tensor]:
    """``max_j |p_j - p_t,j (1 + p_j g_j) / W|`` per row and ``W = sum_k p_t,k (1 + p_k g_k)``."""
    one = torch.ones((), dtype=p.dtype, device=p.device)
    pg1 = torch.addcmul(one, p, _horner_into(buf, torch.sub(one, p), coef.g), out=buf)  # 1 + p g
    pg1.mul_(pt)
    multiplier = pg1.sum(-1)
    residual = pg1.div_(multiplier.unsqueeze(-1)).sub_(p).abs_().amax(-1)
    return torch.nan_to_num(residual, nan=math.inf), multiplier


def _solve_block(
    pt: Tensor, eps: Tensor, max_iter: int, tol: float, convex: bool
) -> tuple[Tensor, dict[str, Tensor], int]:
    """Newton solve for teacher rows ``pt`` (N, C) and candidates ``eps`` (S, C|1, M) -> p (S, N, C).

    Variables are the ratios ``w = p / p_t`` (so relative changes of tiny probabilities are resolved and
    classes with ``p_t = 0`` stay at 0). With ``convex=True`` full Newton steps are taken while the step
    sizes shrink; otherwise (or once they stop shrinking) a backtracking line search on the objective is used.
    Rows are checked against ``tol`` (fixed-point residual) once every relative step is ``<= sqrt(tol)``
    (Newton: the next error is about the square of the last step).
    """
    slack = 64 * torch.finfo(pt.dtype).eps
    step_tol = math.sqrt(tol)
    rounding = 16 * torch.finfo(pt.dtype).eps
    coef = _Coefficients(eps)
    pt = pt.unsqueeze(0)
    pt2 = pt * pt
    support = (pt > 0).to(pt.dtype) if pt.numel() and bool(pt.amin() == 0) else None
    shape = (eps.shape[0], pt.shape[1], pt.shape[2])
    rows = shape[:-1]
    one = torch.ones((), dtype=pt.dtype, device=pt.device)
    u = torch.sub(one, pt).expand(shape).clone()
    v, e, a, d, tmp = (torch.empty(shape, dtype=pt.dtype, device=pt.device) for _ in range(5))
    # start: one fixed-point step from p = p_t, w_j = (1 + p_j g_j) / W (kept positive), then u = 1 - p
    w = torch.addcmul(one, pt, _horner_into(v, u, coef.g)).clamp_min_(_START_FLOOR)
    w /= torch.mul(pt, w, out=tmp).sum(-1, keepdim=True)
    torch.addcmul(one, pt, w, value=-1, out=u)
    stuck = torch.zeros(rows, dtype=torch.bool, device=pt.device)
    line_search = not convex
    obj = _objective(pt, w, u, coef, tmp) if line_search else None
    previous = torch.full(rows, math.inf, dtype=pt.dtype, device=pt.device)
    residual = multiplier = None
    iterations = 0
    eps_is_zero = not bool(eps.abs().amax() > 0)  # then the proxy teacher is the teacher
    while not eps_is_zero and iterations < max_iter:
        iterations += 1
        _horner_into(v, u, coef.g)  # g
        _horner_into(e, u, coef.k)  # h''
        torch.reciprocal(w, out=a)  # p_t / p
        torch.addcmul(a, pt, v, out=v)  # v = -dF/dp = p_t / p + p_t g
        torch.mul(a, a, out=d)
        torch.addcmul(d, pt2, e, out=e)  # p_t * H_jj = (p_t / p)^2 + p_t^2 h''
        if line_search:  # exact Newton where the reduced Hessian is positive definite, else floored
            e = _safeguard_curvature(e, d, pt)
        e.reciprocal_()  # e = 1 / (p_t H_jj)
        torch.mul(pt, e, out=d)  # d = H^{-1}, 0 where p_t = 0
        nu = torch.mul(d, v, out=tmp).sum(-1, keepdim=True) / d.sum(-1, keepdim=True)  # sum(d) != 0
        v.sub_(nu)  # r = v - nu;  dp = d r (sums to 0),  dw = dp / p_t = e r
        if support is not None:
            e.mul_(support)  # classes with p_t = 0 keep p = 0 (their w must not move)
        e.mul_(v)  # dw
        torch.mul(e, a, out=tmp)  # dw / w = dp / p (aminmax is slower than amin + amax on CPU)
        shrink = tmp.amin(-1).neg_()
        relative = torch.maximum(shrink, tmp.amax(-1))
        alpha = (_FRACTION_TO_BOUNDARY / shrink.clamp_min(_FRACTION_TO_BOUNDARY)).clamp_max(1.0)
        if not line_search and bool(((alpha * relative > previous) & (previous > step_tol)).any()):
            line_search = True  # steps stopped shrinking: globalise from here on
            obj = _objective(pt, w, u, coef, tmp)
        if line_search:
            decrement2 = torch.mul(d, v, out=tmp).mul_(v).sum(-1)  # -grad . dp = sum d r^2 >= 0
            for _ in range(_MAX_HALVINGS):
                torch.addcmul(w, alpha.unsqueeze(-1), e, out=a)  # trial w (a is free now)
                torch.addcmul(one, pt, a, value=-1, out=u)  # trial u
                trial_obj = _objective(pt, a, u, coef, tmp)
                ok = trial_obj <= obj - _ARMIJO * alpha * decrement2 + slack * (1 + obj.abs())
                ok |= alpha * relative <= step_tol  # tiny steps: rounding decides the test, take them
                if bool(ok.all()):
                    break
                alpha = torch.where(ok, alpha, alpha * 0.5)
            alpha = torch.where(ok, alpha, torch.zeros_like(alpha))  # no acceptable step: stay
            stuck = ~ok
            obj = torch.where(ok, trial_obj, obj)
        w.addcmul_(alpha.unsqueeze(-1), e)
        torch.addcmul(one, pt, w, value=-1, out=u)  # u = 1 - p
        previous = alpha * relative
        residual = None
        if bool((stuck | (previous <= step_tol)).all()):
            w /= torch.mul(pt, w, out=tmp).sum(-1, keepdim=True)  # remove the rounding drift of sum(p)
            torch.addcmul(one, pt, w, value=-1, out=u)
            residual, multiplier = _fixed_point_residual(pt, pt * w, coef, tmp)
            done = stuck | (residual <= tol)
            if bool(done.all()) or bool((done | (previous <= rounding)).all()):
                break  # converged, or the remaining rows only move at rounding level (tol below precision)
    p = pt * w
    if residual is None:  # (otherwise already evaluated at this very point)
        residual, multiplier = _fixed_point_residual(pt, p, coef, tmp)
    p /= p.sum(-1, keepdim=True)  # sum(p) = 1 is kept by every step up to rounding
    if convex:  # certified: p_t H_jj = (p_t / p)^2 (1 + p^2 h'') > 0 everywhere
        nonconvex = torch.zeros(rows, dtype=torch.bool, device=pt.device)
    else:  # (float reductions: boolean ones are slow on CPU); entries with p_t = 0 give 1 / w^2 > 0
        curvature = torch.addcmul(
            torch.reciprocal(w).square_(), pt2, _horner_into(e, torch.sub(one, p), coef.k)
        )
        nonconvex = curvature.amin(-1) <= 0
    info = {
        "converged": residual <= tol,  # residual is +inf where p is not finite
        "residual": residual,
        "multiplier": multiplier,
        "nonconvex": nonconvex,
        "boundary": (multiplier <= 0) & (pt.amin(-1) == 0),
    }
    return p, info, iterations


def default_tolerance(dtype: torch.dtype) -> float:
    """Default fixed-point residual tolerance: ``1e-5`` in float32 (floor ~3e-7), ``1e-12`` in float64."""
    return 1e-12 if dtype == torch.float64 else 1e-5


def _block_sizes(n_cand: int, n_examples: int, n_classes: int, max_elements: int) -> tuple[int, int]:
    rows = max(1, max_elements // max(n_classes, 1))
    ex_block = min(n_examples, rows) if n_examples else 1
    cand_block = max(1, min(n_cand, rows // max(ex_block, 1)))
    return cand_block, ex_block


def iter_proxy_blocks(
    teacher_probs: Tensor,
    epsilon: Tensor,
    *,
    max_iter: int = 100,
    tol: float | None = None,
    max_elements: int = 1 << 19,
    form: str = "full",
) -> Iterator[tuple[slice, slice, Tensor, dict[str, Tensor], int]]:
    """Solve block by block: yields ``(candidate_slice, example_slice, p (s, n, C), info, iterations)``.

    ``teacher_probs`` is an already-validated (and, for ``T != 1``, already softened) ``(N, C)`` tensor and
    ``epsilon`` an ``(S, C|1, M)`` tensor of the same dtype and device. Memory stays bounded by
    ``max_elements`` entries per work tensor.
    """
    if tol is None:
        tol = default_tolerance(teacher_probs.dtype)
    n_cand = epsilon.shape[0]
    n_examples, n_classes = teacher_probs.shape
    cand_block, ex_block = _block_sizes(n_cand, n_examples, n_classes, max_elements)
    convex = convexity_margin(epsilon) > _CONVEXITY_MARGIN if form == "full" else None
    for s0 in range(0, n_cand, cand_block):
        cand = slice(s0, min(s0 + cand_block, n_cand))
        block_convex = convex is not None and bool(convex[cand].all())
        for n0 in range(0, max(n_examples, 1), ex_block):
            ex = slice(n0, min(n0 + ex_block, n_examples))
            if form == "full":
                p, info, its = _solve_block(teacher_probs[ex], epsilon[cand], max_iter, tol, block_convex)
            else:
                p, info, its = solve_truncated_block(teacher_probs[ex], epsilon[cand], max_iter, tol)
            yield cand, ex, p, info, its


def to_space(proxy: Tensor, temperature: float, space: str) -> Tensor:
    """A proxy teacher ``r*`` (softened space) in ``space``: itself for ``"softened"``, the student's
    ``T = 1`` prediction ``softmax(T log r*) = r*^T / Z`` for ``"student"`` (zeros stay zero)."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if space == "softened" or temperature == 1.0:
        return proxy
    return torch.softmax(torch.log(proxy) * temperature, dim=-1)


def proxy_teacher(
    teacher_probs: Tensor,
    epsilon: Tensor,
    *,
    temperature: float = 1.0,
    form: str = "full",
    space: str = "softened",
    max_iter: int = 100,
    tol: float | None = None,
    return_info: bool = False,
    max_elements: int = 1 << 19,
    prob_atol: float = 1e-4,
) -> Tensor | tuple[Tensor, ProxySolveInfo]:
    r"""The proxy teachers of PTLoss: the distributions a student trained with it is pulled toward.

    For each example, the minimiser over the probability simplex of the loss the student trains with
    (:mod:`selfdistill.ptloss.proxy`),

    .. math::

        r^* = \arg\min_{r \in \Delta} L_{\mathrm{form}}(q, r), \qquad q = \frac{p_t^{1/T}}{Z},

    solved for all examples (and all candidate perturbations) at once, batched, by Newton's method. For
    the full form it is the fixed point :math:`r_j = q_j (1 + r_j g_j(r_j)) / W`; ``epsilon = 0`` gives the
    softened teacher :math:`q` itself.

    Parameters
    ----------
    teacher_probs : Tensor, shape (N, C)
        The teacher's ``T = 1`` probabilities (rows sum to 1 within ``prob_atol``).
    epsilon : Tensor, shape (M,), (C, M), or (S, C, M) / (S, 1, M)
        One perturbation, or S candidates solved together.
    temperature : float, default 1.0
        The temperature of the loss trained; the teacher is softened to :math:`q = p_t^{1/T} / Z`.
    form : {"full", "truncated"}, default "full"
        The PTLoss form trained (:class:`~selfdistill.ptloss.PTLoss`).
    space : {"softened", "student"}, default "softened"
        ``"softened"``: :math:`r^*`, the target of the student's tempered softmax (what the loss compares,
        and what the search scores); ``"student"``: the student's own ``T = 1`` prediction at that optimum,
        :math:`\mathrm{softmax}(T \log r^*)`.
    max_iter : int, default 100
        Newton iterations at most.
    tol : float or None
        An example has converged when its residual is at most ``tol`` (full form: the fixed-point residual
        :math:`\max_j |r_j - q_j (1 + r_j g_j) / W|`; truncated form: the projected-gradient residual of
        :mod:`selfdistill.ptloss.truncated`). Default: 1e-5 in float32, 1e-12 in float64.
    return_info : bool, default False
        Also return a :class:`~selfdistill.ptloss.ProxySolveInfo`; without it, a ``RuntimeWarning`` says when
        some examples did not converge or sit on the simplex boundary.
    max_elements : int, default 2**19
        Bound on the entries of each work tensor (memory): larger inputs are solved block by block.
    prob_atol : float, default 1e-4
        Tolerance on the row sums of ``teacher_probs``.

    Returns
    -------
    Tensor, shape (N, C) or (S, N, C)
        The proxy teachers (rows on the simplex), in the dtype of ``teacher_probs``.
    ProxySolveInfo
        Only with ``return_info=True``.

    Examples
    --------
    >>> import torch
    >>> from selfdistill.ptloss import proxy_teacher
    >>> p_t = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]], dtype=torch.float64)
    >>> torch.allclose(proxy_teacher(p_t, torch.zeros(5)), p_t)              # eps = 0: the teacher
    True

    A shared first-order perturbation ``c`` (M = 1): ``g_j = c``, so the proxy solves
    ``r_j = p_t,j (1 + c r_j) / W``; ``c < 0`` moves mass away from the most likely class:

    >>> c = -0.5
    >>> r, info = proxy_teacher(p_t, torch.tensor([c]), return_info=True)
    >>> fixed_point = p_t * (1 + c * r) / (p_t * (1 + c * r)).sum(1, keepdim=True)
    >>> torch.allclose(r, fixed_point), info.all_converged, bool(r[0, 0] < p_t[0, 0])
    (True, True, True)

    Candidates are solved together, and the temperature softens the teacher first:

    >>> candidates = 0.1 * torch.randn(20, 3, 5, generator=torch.Generator().manual_seed(0))
    >>> proxy_teacher(p_t, candidates.double(), temperature=2.0).shape
    torch.Size([20, 2, 3])
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    temperature = positive_real(temperature, "temperature")
    pt = check_probabilities(teacher_probs, "teacher_probs", atol=prob_atol)
    pt = soften_probabilities(pt, temperature)  # the target the tempered loss compares
    eps = as_epsilon(epsilon, pt.shape[1]).to(dtype=pt.dtype, device=pt.device)
    max_iter = positive_int(max_iter, "max_iter")
    if tol is not None and not (tol > 0):
        raise ValueError(f"tol must be positive, got {tol!r}")
    batched = eps.ndim == 3
    eps3 = eps if batched else eps.unsqueeze(0)
    n_cand, (n_examples, n_classes) = eps3.shape[0], pt.shape
    out = torch.empty(n_cand, n_examples, n_classes, dtype=pt.dtype, device=pt.device)
    fields = {
        "converged": torch.empty(n_cand, n_examples, dtype=torch.bool, device=pt.device),
        "residual": torch.empty(n_cand, n_examples, dtype=pt.dtype, device=pt.device),
        "multiplier": torch.empty(n_cand, n_examples, dtype=pt.dtype, device=pt.device),
        "nonconvex": torch.empty(n_cand, n_examples, dtype=torch.bool, device=pt.device),
        "boundary": torch.empty(n_cand, n_examples, dtype=torch.bool, device=pt.device),
    }
    iterations = 0
    for cand, ex, p, info, its in iter_proxy_blocks(
        pt, eps3, max_iter=max_iter, tol=tol, max_elements=max_elements, form=form
    ):
        out[cand, ex] = to_space(p, temperature, space)
        for key, value in info.items():
            fields[key][cand, ex] = value
        iterations = max(iterations, its)
    if not batched:
        out = out[0]
        fields = {key: value[0] for key, value in fields.items()}
    result = ProxySolveInfo(iterations=iterations, **fields)
    if return_info:
        return out, result
    if not result.all_converged or bool(result.boundary.any()):
        warnings.warn(
            f"proxy_teacher: {result.n_failed} example(s) did not converge and "
            f"{int(result.boundary.sum())} sit "
            "on the simplex boundary (large negative epsilon?); pass return_info=True to inspect",
            RuntimeWarning,
            stacklevel=2,
        )
    return out
