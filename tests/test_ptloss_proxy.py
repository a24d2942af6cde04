"""Proxy teacher: the argmin of L_PT(p_t, .) over the simplex, checked against generic optimizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from selfdistill.ptloss import PTLoss, convexity_margin, proxy_teacher


def _teacher(n: int, c: int, scale: float = 2.0, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    logits = torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale
    return torch.softmax(logits, -1)


def _eps(*shape: int, scale: float = 0.3, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1) * scale


def _objective(p: np.ndarray, pt: np.ndarray, eps: np.ndarray) -> float:
    """L_PT(p_t, p) without the teacher entropy, written from the spec: sum_k pt_k(-log p_k + sum eps u^m)."""
    u = 1.0 - p
    poly = sum(eps[:, m] * u ** (m + 1) for m in range(eps.shape[1]))
    return float(np.sum(pt * (-np.log(p) + poly)))


def _scipy_bfgs(pt: np.ndarray, eps: np.ndarray) -> np.ndarray:
    def f(z):
        q = np.exp(z - z.max())
        return _objective(q / q.sum(), pt, eps)

    res = minimize(f, np.log(pt), method="BFGS", options={"gtol": 1e-12, "maxiter": 2000})
    q = np.exp(res.x - res.x.max())
    return q / q.sum()


def _scipy_slsqp(pt: np.ndarray, eps: np.ndarray) -> np.ndarray:
    res = minimize(
        _objective,
        pt.copy(),
        args=(pt, eps),
        method="SLSQP",
        bounds=[(1e-12, 1.0)] * len(pt),
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    return res.x / res.x.sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_epsilon_gives_the_teacher(dtype):
    pt = _teacher(20, 6, dtype=dtype)
    q, info = proxy_teacher(pt, torch.zeros(6, 3, dtype=dtype), return_info=True)
    assert torch.equal(q, pt / pt.sum(-1, keepdim=True))
    assert info.all_converged and info.iterations == 0


def test_matches_scipy_bfgs_and_slsqp_on_small_cases():
    pt = _teacher(6, 5, seed=2)
    eps = _eps(5, 5, scale=0.4, seed=3)
    q, info = proxy_teacher(pt, eps, return_info=True)
    assert info.all_converged and info.max_residual < 1e-12
    assert not info.nonconvex.any() and not info.boundary.any()
    for i in range(pt.shape[0]):
        ref = _scipy_bfgs(pt[i].numpy(), eps.numpy())
        np.testing.assert_allclose(q[i].numpy(), ref, atol=1e-7)
        ref2 = _scipy_slsqp(pt[i].numpy(), eps.numpy())
        np.testing.assert_allclose(q[i].numpy(), ref2, atol=1e-5)
        assert _objective(q[i].numpy(), pt[i].numpy(), eps.numpy()) <= _objective(
            ref, pt[i].numpy(), eps.numpy()
        )
    # the perturbation really moved the teacher
    assert (q - pt).abs().max() > 1e-2


def test_is_a_stationary_point_of_the_loss():
    """The PTLoss gradient w.r.t. student logits vanishes when the student predicts the proxy teacher."""
    pt = _teacher(8, 7, seed=4)
    eps = _eps(7, 5, scale=0.3, seed=5)
    q = proxy_teacher(pt, eps)
    student = torch.log(q).clone().requires_grad_(True)
    PTLoss(eps, reduction="sum")(student, torch.log(pt)).backward()
    assert student.grad.abs().max() < 1e-10
    # ... and not at the teacher itself
    student = torch.log(pt).clone().requires_grad_(True)
    PTLoss(eps, reduction="sum")(student, torch.log(pt)).backward()
    assert student.grad.abs().max() > 1e-3


def test_batched_candidates_and_blocks_match_one_by_one():
    pt = _teacher(37, 6, seed=6)
    eps = _eps(4, 6, 3, scale=0.3, seed=7)
    batched, info = proxy_teacher(pt, eps, return_info=True, max_elements=50)  # many tiny blocks
    assert batched.shape == (4, 37, 6) and info.converged.shape == (4, 37)
    for s in range(4):
        single = proxy_teacher(pt, eps[s])
        assert torch.allclose(batched[s], single, atol=1e-12)
    shared = torch.tensor([0.2, -0.1, 0.05], dtype=torch.float64)
    assert torch.allclose(
        proxy_teacher(pt, shared), proxy_teacher(pt, shared.expand(6, 3).clone()), atol=1e-13
    )


def test_float32_agrees_with_float64():
    pt = _teacher(200, 10, scale=4.0, seed=8)
    eps = _eps(10, 5, scale=0.25, seed=9)
    q64 = proxy_teacher(pt, eps)
    q32, info = proxy_teacher(pt.float(), eps.float(), return_info=True)
    assert q32.dtype == torch.float32 and info.all_converged
    assert (q32.double() - q64).abs().max() < 1e-5


def test_teacher_zeros_stay_zero_and_support_matches_scipy():
    pt = torch.tensor([[0.6, 0.3, 0.0, 0.1], [0.0, 0.0, 0.7, 0.3]], dtype=torch.float64)
    eps = _eps(4, 3, scale=0.4, seed=10)
    q, info = proxy_teacher(pt, eps, return_info=True)
    assert info.all_converged and not info.boundary.any()
    assert torch.all(q[pt == 0] == 0)
    for i in range(2):
        support = (pt[i] > 0).numpy()
        ref = _scipy_bfgs(pt[i].numpy()[support], eps.numpy()[support])
        np.testing.assert_allclose(q[i].numpy()[support], ref, atol=1e-7)


def test_nonconvex_problem_is_detected_and_still_descends():
    pt = torch.tensor([[0.6, 0.3, 0.1], [0.45, 0.45, 0.1]], dtype=torch.float64)
    eps = torch.zeros(3, 3, dtype=torch.float64)
    eps[:, 1] = -6.0  # h'' = -12: f'' = 1/p^2 - 12 < 0 for p > 0.29
    assert float(convexity_margin(eps)) < 0
    q, info = proxy_teacher(pt, eps, return_info=True)
    assert info.all_converged and info.max_residual < 1e-10
    assert bool(info.nonconvex.any())
    for i in range(2):
        value = _objective(q[i].numpy(), pt[i].numpy(), eps.numpy())
        assert value <= _objective(pt[i].numpy(), pt[i].numpy(), eps.numpy())
        ref = _scipy_bfgs(pt[i].numpy(), eps.numpy())
        assert value <= _objective(ref, pt[i].numpy(), eps.numpy()) + 1e-9


def test_boundary_case_is_reported_and_warned():
    # eps_1 = -5: the loss wants p_k = 0.2 for both supported classes; the rest of the mass would go to the
    # class the teacher gives 0 (W < 0), i.e. the minimiser over the closed simplex leaves the support
    pt = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)
    eps = torch.tensor([[-5.0], [-5.0], [-5.0]], dtype=torch.float64)
    q, info = proxy_teacher(pt, eps, return_info=True)
    assert bool(info.boundary[0]) and float(info.multiplier[0]) < 0
    assert "1 on the simplex boundary" in str(info)
    with pytest.warns(RuntimeWarning, match="simplex boundary"):
        proxy_teacher(pt, eps)


def test_non_convergence_is_reported():
    pt = _teacher(30, 8, scale=3.0, seed=11)
    eps = _eps(8, 5, scale=0.35, seed=12)
    _, info = proxy_teacher(pt, eps, max_iter=1, tol=1e-14, return_info=True)
    assert info.n_failed > 0 and len(info.failed_indices()) == info.n_failed
    with pytest.warns(RuntimeWarning, match="did not converge"):
        proxy_teacher(pt, eps, max_iter=1, tol=1e-14)


def test_convexity_margin_matches_grid_formula():
    eps = _eps(3, 4, scale=0.8, seed=13)
    p = np.linspace(1e-3, 1.0, 1000)
    u = 1 - p
    second = sum((m + 1) * m * eps.numpy()[:, m, None] * u ** (m - 1) for m in range(1, 4))  # h''(u), (C, P)
    expected = np.min(1 + p**2 * second)
    assert abs(float(convexity_margin(eps)) - expected) < 1e-9
    assert convexity_margin(_eps(5, 3, 4)).shape == (5,)


def test_bad_input_raises_clear_errors():
    pt = _teacher(4, 5)
    with pytest.raises(ValueError, match="teacher_probs rows must sum to 1"):
        proxy_teacher(pt * 1.1, torch.zeros(2))
    with pytest.raises(ValueError, match="teacher_probs has negative entries"):
        proxy_teacher(torch.log(pt), torch.zeros(2))
    bad = pt.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="teacher_probs contains NaN"):
        proxy_teacher(bad, torch.zeros(2))
    with pytest.raises(ValueError, match="epsilon has 3 rows but the distributions have 5 classes"):
        proxy_teacher(pt, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="max_iter"):
        proxy_teacher(pt, torch.zeros(2), max_iter=0)


def _truncated_objective(r: np.ndarray, q: np.ndarray, eps: np.ndarray) -> float:
    """sum_j q_j sum_m (1/m + eps_jm) (1 - r_j)^m: the truncated loss without the teacher entropy."""
    u = 1.0 - r
    return float(np.sum(q * sum((1.0 / (m + 1) + eps[:, m]) * u ** (m + 1) for m in range(eps.shape[1]))))


def _slsqp_truncated(q: np.ndarray, eps: np.ndarray) -> np.ndarray:
    best = None
    on_simplex = [{"type": "eq", "fun": lambda r: r.sum() - 1.0}]
    for start in (q, np.full_like(q, 1.0 / len(q))):
        res = minimize(_truncated_objective, start, args=(q, eps), method="SLSQP",
                       bounds=[(0.0, 1.0)] * len(q), constraints=on_simplex,
                       options={"ftol": 1e-15, "maxiter": 1000})  # fmt: skip
        best = res if best is None or res.fun < best.fun else best
    return np.maximum(best.x, 0) / np.maximum(best.x, 0).sum()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_truncated_form_proxy_matches_slsqp_on_the_closed_simplex(dtype):
    pt = _teacher(10, 5, scale=2.0, seed=20)
    eps = _eps(5, 4, scale=0.3, seed=21)
    q, info = proxy_teacher(pt.to(dtype), eps.to(dtype), form="truncated", return_info=True)
    assert info.all_converged and not info.nonconvex.any() and not info.boundary.any()
    assert bool((q == 0).any())  # without the -log barrier small classes are dropped exactly
    atol = 1e-7 if dtype == torch.float64 else 1e-4
    for i in range(pt.shape[0]):
        ref = _slsqp_truncated(pt[i].numpy(), eps.numpy())
        np.testing.assert_allclose(q[i].double().numpy(), ref, atol=atol)
        if dtype == torch.float64:
            assert _truncated_objective(q[i].numpy(), pt[i].numpy(), eps.numpy()) <= _truncated_objective(
                ref, pt[i].numpy(), eps.numpy()
            ) + 1e-12
    # even eps = 0 moves the truncated proxy (the truncated series is not the KL), towards the argmax
    q0 = proxy_teacher(pt, torch.zeros(5, 4), form="truncated")
    assert (q0 - pt).abs().max() > 1e-2 and torch.equal(q0.argmax(1), pt.argmax(1))


def test_truncated_zero_classes_and_batched_candidates():
    pt = torch.tensor([[0.6, 0.3, 0.0, 0.1], [0.0, 0.0, 0.7, 0.3]], dtype=torch.float64)
    eps = _eps(3, 4, 3, scale=0.3, seed=22)
    batched, info = proxy_teacher(pt, eps, form="truncated", return_info=True, max_elements=5)
    assert info.all_converged and torch.all(batched[:, pt == 0] == 0)
    for s in range(3):
        assert torch.allclose(batched[s], proxy_teacher(pt, eps[s], form="truncated"), atol=1e-12)
        for i in range(2):
            support = (pt[i] > 0).numpy()
            ref = _slsqp_truncated(pt[i].numpy()[support], eps[s].numpy()[support])
            np.testing.assert_allclose(batched[s, i].numpy()[support], ref, atol=1e-7)


@pytest.mark.parametrize("form", ["full", "truncated"])
def test_proxy_at_temperature_is_the_argmin_of_the_tempered_loss_over_student_logits(form):
    """The proxy at T is the student's softened distribution softmax(z*/T) at the minimiser z* of the loss
    trained, T^2 L(softmax(t/T), softmax(z/T)); space="student" is softmax(z*)."""
    t = torch.randn(5, 4, generator=torch.Generator().manual_seed(23), dtype=torch.float64) * 5
    eps = _eps(4, 3, scale=0.3, seed=24)
    temperature = 4.0
    soft = proxy_teacher(torch.softmax(t, -1), eps, temperature=temperature, form=form)
    student = proxy_teacher(torch.softmax(t, -1), eps, temperature=temperature, form=form, space="student")
    for i in range(5):

        def trained(z, i=i):
            return PTLoss(eps, temperature, form=form, reduction="sum")(
                torch.tensor(z)[None], t[i : i + 1]
            ).item()

        res = minimize(trained, t[i].numpy(), method="BFGS", options={"gtol": 1e-10, "maxiter": 5000})
        z = res.x
        r = np.exp(z / temperature - (z / temperature).max())
        atol = 1e-6 if form == "full" else 1e-4  # truncated: zero-mass classes are approached slowly
        np.testing.assert_allclose(soft[i].numpy(), r / r.sum(), atol=atol)
        s = np.exp(z - z.max())
        np.testing.assert_allclose(student[i].numpy(), s / s.sum(), atol=atol)
        assert trained(temperature * np.log(np.maximum(soft[i].numpy(), 1e-300))) <= res.fun + 1e-9


def test_truncated_convexity_margin_matches_grid_formula():
    eps = _eps(3, 4, scale=0.8, seed=25)
    u = np.linspace(0.0, 1.0, 1000)
    c = eps.numpy() + 1.0 / np.arange(1, 5)
    second = sum(m * (m - 1) * c[:, m - 1, None] * u ** (m - 2) for m in range(2, 5))
    assert abs(float(convexity_margin(eps, form="truncated")) - second.min()) < 1e-9
    assert float(convexity_margin(torch.zeros(3, 1), form="truncated")) == 0.0  # M = 1: linear, not strict
    with pytest.raises(ValueError, match="form must be one of"):
        convexity_margin(eps, form="series")


def test_proxy_options_are_checked():
    pt = _teacher(4, 5)
    with pytest.raises(ValueError, match="form must be one of"):
        proxy_teacher(pt, torch.zeros(2), form="series")
    with pytest.raises(ValueError, match="space must be one of"):
        proxy_teacher(pt, torch.zeros(2), space="teacher")
    with pytest.raises(ValueError, match="temperature must be a positive"):
        proxy_teacher(pt, torch.zeros(2), temperature=-1.0)
