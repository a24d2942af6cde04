r"""The proxy teacher of the truncated PTLoss form: a separable problem over the closed simplex.

For the truncated form (:mod:`selfdistill.ptloss.loss`) the part of the loss that depends on the student's
distribution :math:`r` is :math:`F(r) = \sum_j q_j H_j(1 - r_j)` with
:math:`H_j(u) = \sum_{m=1}^{M} c_{j,m} u^m` and :math:`c_{j,m} = 1/m + \epsilon_{j,m}` (:math:`q`: the
softened teacher). There is no :math:`-\log r` barrier: :math:`F` is finite on the closed simplex and its
minimiser can put exactly zero mass on a class. With :math:`G_j = H_j'` the KKT conditions of
:math:`\min F` subject to :math:`\sum_j r_j = 1,\ r \ge 0` are

.. math::

    q_j G_j(1 - r_j) = \lambda \ \text{ where } r_j > 0, \qquad
    q_j G_j(1) \le \lambda \ \text{ where } r_j = 0.

When every ``H_j`` is convex on [0, 1] (``H_j'' >= 0``: :func:`truncated_convexity_margin`) ``G_j`` is
non-decreasing, each ``r_j(lam)`` is non-increasing in ``lam``, and the minimiser is found by solving the
one-dimensional equation ``sum_j r_j(lam) = 1`` (the dual, a "water-filling" problem): a bracketed Newton
iteration on ``lam`` (bisection when the Newton step leaves the bracket) around bracketed Newton solves of
``q_j G_j(1 - r_j) = lam`` per class, warm-started, vectorised over candidates, examples and classes.
Classes the teacher gives probability 0 keep ``r_j = 0`` (the minimiser on the teacher's support; a
negative ``lam`` would move mass onto them, reported as ``boundary``).

Convergence is measured by the projected-gradient residual ``max_j |r_j - P(r - grad F(r) / lam)_j|``
(``P``: Euclidean projection onto the simplex), which is zero exactly at a KKT point. Without convexity the
result is a KKT point only (``nonconvex`` is reported), and the dual iteration may fail to converge.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_INNER_ITERATIONS = 60


def _coefficients(eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(G, G', B)`` Horner coefficients for candidates ``eps`` (S, C|1, M), each ``(S, 1, C|1, D)``; ``B``
    (S, 1, C|1) bounds ``|G|`` on [0, 1]."""
    m = torch.arange(1, eps.shape[-1] + 1, dtype=eps.dtype, device=eps.device)
    c = (eps + 1.0 / m).unsqueeze(1)  # (S, 1, C|1, M)
    g = c * m  # G(u) = sum_i g[i] u^i
    gp = g[..., 1:] * m[:-1]  # G'(u) = sum_i gp[i] u^i
    return g, gp, g.abs().sum(-1)


def _horner(u: Tensor, coefficients: Tensor) -> Tensor:
    if coefficients.shape[-1] == 0:
        return torch.zeros_like(u)
    acc = coefficients[..., -1].expand_as(u)
    for i in range(coefficients.shape[-1] - 2, -1, -1):
        acc = torch.addcmul(coefficients[..., i], acc, u)
    return acc


def truncated_convexity_margin(eps: Tensor, num_points: int = 1000) -> Tensor:
    """``min_{j, u in [0, 1]} H_j''(u)`` per candidate (``eps``: (S, C|1, M)) on a grid: 1 at ``eps = 0``
    (M >= 2), 0 for M = 1 (a linear objective: the proxy is an argmax, not unique under ties); positive
    means every ``H_j`` is strictly convex, so the proxy is unique.

    Examples
    --------
    >>> import torch
    >>> from selfdistill.ptloss.truncated import truncated_convexity_margin
    >>> truncated_convexity_margin(torch.zeros(1, 1, 5)).tolist()     # H'' = 1 + 2u + 3u^2 + ... >= 1
    [1.0]
    """
    if eps.shape[-1] < 2:
        return torch.zeros(eps.shape[0], dtype=eps.dtype, device=eps.device)
    u = torch.linspace(0.0, 1.0, num_points, dtype=eps.dtype, device=eps.device)
    _, gp, _ = _coefficients(eps)  # (S, 1, C, D)
    gp = gp.squeeze(1).unsqueeze(-2)  # (S, C, 1, D)
    values = _horner(u.expand(*gp.shape[:-2], num_points), gp)  # (S, C, P)
    return values.amin(dim=(-1, -2))


def simplex_projection(v: Tensor) -> Tensor:
    """Euclidean projection of each row (last axis) onto the probability simplex (Duchi et al. 2008).

    Examples
    --------
    >>> import torch
    >>> from selfdistill.ptloss.truncated import simplex_projection
    >>> simplex_projection(torch.tensor([[0.5, 0.5, 0.5], [2.0, 0.0, 0.0]]))
    tensor([[0.3333, 0.3333, 0.3333],
            [1.0000, 0.0000, 0.0000]])
    """
    sorted_v, _ = torch.sort(v, dim=-1, descending=True)
    cumulative = sorted_v.cumsum(-1) - 1
    k = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    count = (sorted_v - cumulative / k > 0).sum(-1, keepdim=True).clamp_min(1)
    threshold = cumulative.gather(-1, count - 1) / count.to(v.dtype)
    return (v - threshold).clamp_min(0)


def _class_solutions(q: Tensor, lam: Tensor, r: Tensor, g: Tensor, gp: Tensor, tol: float) -> Tensor:
    """``r_j(lam)``: the root of ``q_j G_j(1 - r) = lam`` in [0, 1] (``r = 0`` when ``q_j G_j(1) <= lam``,
    ``r = 1`` when ``q_j G_j(0) >= lam``), by bracketed Newton from ``r`` (warm start)."""
    one = torch.ones((), dtype=q.dtype, device=q.device)
    lam = lam.unsqueeze(-1)
    at_zero = q * _horner(one.expand_as(r), g) <= lam  # f(0) <= 0 with f(r) = q G(1 - r) - lam decreasing
    at_one = q * _horner(torch.zeros_like(r), g) >= lam
    low, high = torch.zeros_like(r), torch.ones_like(r)
    r = r.clamp(0.0, 1.0)
    active = ~(at_zero | at_one)
    rounding = tol * lam.abs()  # |f| below this is rounding noise of q G - lam: r is as good as it gets
    previous = torch.full_like(r, math.inf)
    for _ in range(_INNER_ITERATIONS):
        u = 1 - r
        qg = q * _horner(u, g)
        f = qg - lam
        slope = -q * _horner(u, gp)  # df/dr
        low = torch.where(f > 0, r, low)  # root lies above r
        high = torch.where(f <= 0, r, high)
        step = torch.where(slope < 0, f / slope, torch.zeros_like(f))
        trial = r - step
        bad = (slope >= 0) | (trial < low) | (trial > high) | ~torch.isfinite(trial)
        bad |= f.abs() > 0.5 * previous  # Newton stalls (non-convex terms): bisect, the bracket halves
        previous = f.abs()
        new = torch.where(bad, 0.5 * (low + high), trial)
        moved = (new - r).abs()
        r = torch.where(active, new, r)
        noise = torch.maximum(rounding, tol * qg.abs())
        active &= (moved > tol * torch.clamp(r, min=tol)) & (f.abs() > noise)
        if not bool(active.any()):
            break
    r = torch.where(at_zero, torch.zeros_like(r), r)
    return torch.where(at_one & ~at_zero, torch.ones_like(r), r)


def solve_truncated_block(
    pt: Tensor, eps: Tensor, max_iter: int, tol: float
) -> tuple[Tensor, dict[str, Tensor], int]:
    """Truncated-form proxy teachers for teacher rows ``pt`` (N, C) and candidates ``eps`` (S, C|1, M)
    -> ``(r (S, N, C), info, iterations)``, ``info`` as in :mod:`selfdistill.ptloss.proxy`."""
    g, gp, bound = _coefficients(eps)
    q = pt.unsqueeze(0).expand(eps.shape[0], *pt.shape)  # (S, N, C)
    support = q > 0
    scale = (q * bound).amax(-1)  # |q_j G_j| <= scale on [0, 1]
    low = -scale - 1e-30  # every r_j = 1 there (sum = |support| >= 1) ...
    high = scale + 1e-30  # ... and every r_j = 0 here
    r = q.clone()
    lam = (q * q * _horner(1 - q, g)).sum(-1)  # sum_j r_j q_j G_j(1 - r_j) at r = q: the KKT value of lam
    inner_tol = 8 * torch.finfo(pt.dtype).eps
    iterations = 0
    previous = torch.full_like(lam, math.inf)
    while iterations < max_iter:
        iterations += 1
        r = _class_solutions(q, lam, r, g, gp, inner_tol)
        r = torch.where(support, r, torch.zeros_like(r))
        excess = r.sum(-1) - 1
        low = torch.where(excess > 0, lam, low)  # sum r_j(lam) is non-increasing in lam
        high = torch.where(excess <= 0, lam, high)
        u = 1 - r
        free = support & (r > 0) & (r < 1)
        curvature = q * _horner(u, gp)  # -d r_j / d lam = 1 / (q_j G_j'(u_j)) on free classes
        inverse = torch.where(free & (curvature > 0), 1 / curvature, torch.zeros_like(curvature)).sum(-1)
        newton = lam + excess / inverse
        bad = (inverse <= 0) | ~torch.isfinite(newton) | (newton <= low) | (newton >= high)
        bad |= excess.abs() > 0.5 * previous  # Newton is not converging here: bisect (halves the bracket)
        previous = excess.abs()
        new = torch.where(bad, 0.5 * (low + high), newton)
        done = excess.abs() <= tol * 0.1
        width = 4 * torch.finfo(pt.dtype).eps * torch.maximum(high.abs(), low.abs())
        collapsed = (high - low) <= width  # sum_j r_j(lam) jumps over 1 here (non-convex rows)
        if bool((done | collapsed).all()):
            break
        lam = torch.where(done, lam, new)
    total = r.sum(-1, keepdim=True)
    p = r / total.clamp_min(torch.finfo(pt.dtype).tiny)
    u = 1 - p
    gradient_scale = (p * q * _horner(u, g)).sum(-1)  # = lam at a KKT point (sum_j p_j q_j G_j = lam)
    normalised = q * _horner(u, g) / gradient_scale.abs().unsqueeze(-1)  # -grad F / |lam|
    projected = simplex_projection(torch.where(support, p + normalised - 1, torch.full_like(p, -1.0)))
    residual = (p - projected).abs().amax(-1)
    residual = torch.where(torch.isfinite(residual) & (total.squeeze(-1) > 0), residual, math.inf)
    second = q * _horner(u, gp)  # q_j H_j''(u_j)
    nonconvex = ((second <= 0) & support & (p > 0)).any(-1)
    info = {
        "converged": residual <= tol,
        "residual": residual,
        "multiplier": gradient_scale,
        "nonconvex": nonconvex,
        "boundary": (gradient_scale < 0) & (~support).any(-1),
    }
    return p, info, iterations
