"""PTLoss value, gradient and numerical safety, checked against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfdistill.ptloss import PTLoss, pt_loss, pt_loss_from_probabilities


def _logits(n: int, c: int, scale: float = 1.0, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


def _eps(c: int, m: int, scale: float = 0.3, seed: int = 1, dtype=torch.float64) -> torch.Tensor:
    return (torch.rand(c, m, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1) * scale


def _kl_batchmean(s: torch.Tensor, t: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return F.kl_div(
        F.log_softmax(s / temperature, -1),
        F.log_softmax(t / temperature, -1),
        log_target=True,
        reduction="batchmean",
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_epsilon_is_exactly_kl_batchmean(dtype):
    s, t = _logits(16, 7, 2.0, 0, dtype), _logits(16, 7, 2.0, 1, dtype)
    loss = PTLoss(torch.zeros(7, 4, dtype=dtype))(s, t)
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    assert loss.dtype == dtype
    assert torch.allclose(loss, _kl_batchmean(s, t), rtol=tol, atol=tol)


def test_temperature_uses_softened_distributions_and_t_squared():
    s, t = _logits(10, 5, 3.0, 2), _logits(10, 5, 3.0, 3)
    for temperature in (0.5, 2.0, 4.0):
        loss = PTLoss(torch.zeros(3), temperature=temperature)(s, t)
        expected = temperature**2 * _kl_batchmean(s, t, temperature)
        assert torch.allclose(loss, expected, rtol=1e-12, atol=1e-14)


def _series_value(s: np.ndarray, t: np.ndarray, eps: np.ndarray, n_terms: int = 4000) -> np.ndarray:
    """Independent evaluation of L_PT per example from the perturbed Maclaurin series (float64)."""
    ps = np.exp(s - s.max(1, keepdims=True))
    ps /= ps.sum(1, keepdims=True)
    pt = np.exp(t - t.max(1, keepdims=True))
    pt /= pt.sum(1, keepdims=True)
    u = 1.0 - ps
    m_count = eps.shape[1]
    total = np.zeros_like(u)
    power = np.ones_like(u)
    for m in range(1, n_terms + 1):
        power = power * u
        coefficient = 1.0 / m + (eps[:, m - 1] if m <= m_count else 0.0)
        total += coefficient * power
    return (pt * np.log(pt)).sum(1) + (pt * total).sum(1)


def test_value_matches_independent_series_evaluation():
    # p_s not too small (>= ~0.05 here) so that the series converges within the summed terms
    s, t = _logits(12, 6, 0.5, 4), _logits(12, 6, 1.5, 5)
    eps = _eps(6, 5, 0.4, 6)
    assert float(torch.softmax(s, -1).min()) > 0.03
    per_example = PTLoss(eps, reduction="none")(s, t)
    expected = _series_value(s.numpy(), t.numpy(), eps.numpy())
    np.testing.assert_allclose(per_example.numpy(), expected, rtol=1e-10, atol=1e-12)


def test_truncated_form_matches_hand_formula():
    s, t, eps = _logits(9, 4, 1.0, 7), _logits(9, 4, 1.0, 8), _eps(4, 3, 0.2, 9)
    ps, pt = torch.softmax(s, -1), torch.softmax(t, -1)
    u = 1 - ps
    expected = (pt * torch.log(pt)).sum(-1)
    for m in range(1, 4):
        expected = expected + (pt * (1.0 / m + eps[:, m - 1]) * u**m).sum(-1)
    got = pt_loss(s, t, eps, form="truncated", reduction="none")
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-14)
    # the truncated series is not the KL: with eps = 0 the two forms differ
    full0 = pt_loss(s, t, torch.zeros(4, 3), reduction="none")
    trunc0 = pt_loss(s, t, torch.zeros(4, 3), form="truncated", reduction="none")
    assert (full0 - trunc0).abs().max() > 1e-3


def test_reductions_are_consistent():
    s, t, eps = _logits(11, 5, 1.0, 10), _logits(11, 5, 1.0, 11), _eps(5, 3)
    none = PTLoss(eps, reduction="none")(s, t)
    assert none.shape == (11,)
    assert torch.allclose(PTLoss(eps, reduction="sum")(s, t), none.sum())
    assert torch.allclose(PTLoss(eps, reduction="batchmean")(s, t), none.sum() / 11)


def test_vector_epsilon_broadcasts_over_classes():
    s, t = _logits(8, 6, 1.0, 12), _logits(8, 6, 1.0, 13)
    vec = torch.tensor([0.2, -0.1, 0.05], dtype=torch.float64)
    assert torch.allclose(PTLoss(vec)(s, t), PTLoss(vec.expand(6, 3).clone())(s, t), rtol=1e-14)


def _closed_form_gradient(s, t, eps, temperature):
    """Spec: dL/dz = T * W (p_s - q) per example; g, q, W written out by hand; batchmean divides by N."""
    ps, pt = torch.softmax(s / temperature, -1), torch.softmax(t / temperature, -1)
    u = 1 - ps
    g = torch.zeros_like(u)
    for m in range(1, eps.shape[1] + 1):
        g = g + m * eps[:, m - 1] * u ** (m - 1)
    weight = (pt * (1 + ps * g)).sum(-1, keepdim=True)
    q = pt * (1 + ps * g) / weight
    return temperature * weight * (ps - q) / s.shape[0]


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_gradient_matches_closed_form(temperature):
    s, t, eps = _logits(7, 5, 1.5, 14), _logits(7, 5, 1.5, 15), _eps(5, 5, 0.5, 16)
    s.requires_grad_(True)
    PTLoss(eps, temperature=temperature)(s, t).backward()
    expected = _closed_form_gradient(s.detach(), t, eps, temperature)
    assert torch.allclose(s.grad, expected, rtol=1e-11, atol=1e-13)


def test_gradcheck_finite_differences():
    s, t, eps = _logits(4, 5, 1.0, 17), _logits(4, 5, 1.0, 18), _eps(5, 4, 0.5, 19)
    s.requires_grad_(True)
    t.requires_grad_(True)
    for form in ("full", "truncated"):
        for temperature in (1.0, 3.0):
            assert torch.autograd.gradcheck(
                lambda a, b, f=form, tt=temperature: pt_loss(
                    a, b, eps, temperature=tt, form=f, reduction="none"
                ),
                (s, t),
            )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", [50.0, 200.0])
def test_saturated_logits_give_finite_values_and_gradients(dtype, magnitude):
    # one-hot-like teacher and student in both directions: p_s near 0 and near 1
    s = torch.tensor(
        [[magnitude, 0.0, -magnitude], [-magnitude, magnitude, 0.0], [0.0, 0.0, 0.0]], dtype=dtype
    )
    t = torch.tensor(
        [[magnitude, -magnitude, 0.0], [magnitude, -magnitude, 0.0], [-magnitude, 0.0, magnitude]]
    )
    t = t.to(dtype)
    eps = _eps(3, 5, 1.0, 20, dtype)
    for form in ("full", "truncated"):
        student = s.clone().requires_grad_(True)
        loss = PTLoss(eps, form=form)(student, t)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    # eps = 0 still equals the exact KL (which is huge here, ~ 2 * magnitude): no truncation, no overflow
    zero = PTLoss(torch.zeros(5, dtype=dtype))(s, t)
    assert torch.allclose(zero, _kl_batchmean(s, t), rtol=1e-5)
    assert float(zero) > magnitude / 2


def test_module_stores_epsilon_as_buffer_and_follows_dtype():
    eps = _eps(4, 3).float()
    module = PTLoss(eps, temperature=2.0)
    assert "epsilon" in module.state_dict()
    module = module.double()
    assert module.epsilon.dtype == torch.float64
    assert module.num_orders == 3
    assert "temperature=2.0" in repr(module)


def test_bad_input_raises_clear_errors():
    s, t = _logits(4, 5), _logits(4, 5)
    with pytest.raises(ValueError, match="epsilon has 3 rows but the distributions have 5 classes"):
        PTLoss(torch.zeros(3, 2))(s, t)
    with pytest.raises(ValueError, match="same shape"):
        PTLoss(torch.zeros(2))(s, _logits(4, 6))
    bad = s.clone()
    bad[1, 2] = math.nan
    with pytest.raises(ValueError, match="student_logits contains NaN"):
        PTLoss(torch.zeros(2))(bad, t)
    with pytest.raises(ValueError, match="teacher_logits contains NaN"):
        PTLoss(torch.zeros(2))(t, bad)
    with pytest.raises(ValueError, match="reduction"):
        PTLoss(torch.zeros(2), reduction="mean")
    with pytest.raises(ValueError, match="temperature"):
        PTLoss(torch.zeros(2), temperature=0.0)
    with pytest.raises(ValueError, match="epsilon must have shape"):
        PTLoss(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="epsilon contains NaN"):
        PTLoss(torch.tensor([0.1, math.nan]))
    with pytest.raises(ValueError, match=r"student_logits must have shape \(N, C\)"):
        PTLoss(torch.zeros(2))(s[0], t[0])


def test_non_numeric_epsilon_is_a_clear_value_error():
    for bad in ("abc", [0.1, "nan"], [[0.1], [0.1, 0.2]], None):  # YAML 'nan' is a string; ragged rows
        with pytest.raises(ValueError, match=r"epsilon must be numbers: an \(M,\) list, or C lists of M"):
            PTLoss(bad)


def test_numpy_and_zero_dim_tensor_temperatures_are_numbers():
    s, t, eps = _logits(6, 4), _logits(6, 4, seed=3), _eps(4, 3)
    expected = PTLoss(eps, 2.0)(s, t)
    for temperature in (np.float32(2.0), np.float64(2.0), np.int64(2), torch.tensor(2.0)):
        module = PTLoss(eps, temperature)
        assert isinstance(module.temperature, float)
        assert torch.equal(module(s, t), expected)
        assert torch.equal(pt_loss(s, t, eps, temperature=temperature), expected)
    for bad in (True, "2", torch.tensor([2.0, 3.0]), math.inf):
        with pytest.raises(ValueError, match="temperature must be a positive finite number"):
            PTLoss(eps, bad)


def _numpy_pt_loss_from_probs(s, p, eps, temperature, form="full"):
    """Independent float64 evaluation on probability targets: q = p^(1/T) / Z (zeros stay 0, 0 log 0 = 0)."""
    s, p, eps = (np.asarray(a, dtype=np.float64) for a in (s, p, eps))
    with np.errstate(divide="ignore"):
        q = np.where(p > 0, p ** (1.0 / temperature), 0.0)
    q /= q.sum(1, keepdims=True)
    z = s / temperature
    log_ps = z - z.max(1, keepdims=True)
    log_ps -= np.log(np.exp(log_ps).sum(1, keepdims=True))
    u = 1 - np.exp(log_ps)
    entropy = np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0), 1)
    coefficients = eps + (1.0 / np.arange(1, eps.shape[1] + 1) if form == "truncated" else 0.0)
    series = sum(coefficients[:, m] * u ** (m + 1) for m in range(eps.shape[1]))
    cross = -np.sum(q * log_ps, 1) if form == "full" else 0.0
    return temperature**2 * (entropy + cross + np.sum(q * series, 1))


def _sharp_targets(dtype=torch.float64):
    """Rows with exact zeros and entries below 1e-12 (and one ordinary row)."""
    p = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [1 - 2e-13, 1e-13, 1e-13, 0.0, 0.0],
            [0.6, 0.4 - 3e-20, 1e-20, 2e-20, 0.0],
            [0.2, 0.2, 0.2, 0.2, 0.2],
            [0.97, 0.0299999999995, 5e-13, 0.0, 0.0],
        ],
        dtype=dtype,
    )
    return p


@pytest.mark.parametrize("form", ["full", "truncated"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0])
def test_probability_targets_with_zeros_match_an_independent_evaluation(temperature, form):
    p = _sharp_targets()
    s = _logits(5, 5, 2.0, 30)
    eps = _eps(5, 4, 0.3, 31)
    got = pt_loss_from_probabilities(s, p, eps, temperature=temperature, form=form, reduction="none")
    expected = _numpy_pt_loss_from_probs(s.numpy(), p.numpy(), eps.numpy(), temperature, form)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    # the module takes probabilities as teacher_probs=; where p > 0 it equals the logits path with log p
    module = PTLoss(eps, temperature, form=form, reduction="none")
    assert torch.equal(module(s, teacher_probs=p), got)
    positive = p[3:4]
    from_logits = module(s[3:4], torch.log(positive))
    from_probs = module(s[3:4], teacher_probs=positive)
    np.testing.assert_allclose(from_logits.numpy(), from_probs.numpy(), rtol=1e-13)


def test_probability_targets_keep_gradients_finite():
    s = _logits(5, 5, 2.0, 32).requires_grad_(True)
    PTLoss(_eps(5, 3), 4.0)(s, teacher_probs=_sharp_targets()).backward()
    assert torch.isfinite(s.grad).all()


def test_probability_targets_are_checked():
    s = _logits(2, 3)
    with pytest.raises(ValueError, match="teacher_probs has negative entries"):
        PTLoss(torch.zeros(2))(s, teacher_probs=torch.tensor([[1.2, -0.2, 0.0], [0.5, 0.5, 0.0]]))
    with pytest.raises(ValueError, match="teacher_probs rows must sum to 1"):
        PTLoss(torch.zeros(2))(s, teacher_probs=torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="exactly one of teacher_logits and teacher_probs"):
        PTLoss(torch.zeros(2))(s)


@pytest.mark.parametrize("form", ["full", "truncated"])
def test_float16_logits_beyond_the_float16_range_give_the_float64_value(form):
    # gaps of 120000 overflow float16 (max 65504) inside log_softmax: computed in float32 internally
    s16 = torch.tensor([[60000.0, -60000.0, 0.0], [-30000.0, 30000.0, 10.0], [1.0, 2.0, 3.0]]).half()
    t16 = torch.tensor([[-60000.0, 60000.0, 5.0], [30000.0, -30000.0, 0.0], [3.0, 2.0, 1.0]]).half()
    eps = _eps(3, 3, 0.4, 33)
    student = s16.clone().requires_grad_(True)
    loss = PTLoss(eps.float(), form=form)(student, t16)
    loss.backward()
    assert loss.dtype == torch.float32  # the documented dtype for float16 inputs
    assert torch.isfinite(loss) and student.grad.dtype == torch.float16 and torch.isfinite(student.grad).all()
    reference = pt_loss(s16.double(), t16.double(), eps, form=form)  # same values, float64
    assert float(loss.detach()) == pytest.approx(float(reference), rel=1e-6)
    if form == "full":  # the KL of the first two rows is ~ 120000 and 60000: far beyond float16
        kl = _kl_batchmean(s16.double(), t16.double())
        assert float(PTLoss(torch.zeros(3))(s16, t16)) == pytest.approx(float(kl), rel=1e-6)
    bf16 = PTLoss(eps.float(), form=form)(s16.bfloat16(), t16.bfloat16())
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16)


def test_empty_batches_are_refused():
    empty = torch.zeros(0, 4)
    for call in (
        lambda: PTLoss(torch.zeros(2))(empty, empty),
        lambda: PTLoss(torch.zeros(2), reduction="none")(empty, empty),
        lambda: PTLoss(torch.zeros(2))(empty, teacher_probs=empty),
        lambda: pt_loss(empty, empty, torch.zeros(2), validate=False),
    ):
        with pytest.raises(ValueError, match=r"empty batch \(N = 0\)"):
            call()
