"""Golden-value tests of the distillation losses (selfdistill.nn.losses).

Golden numbers are typed from closed forms worked out by hand (logits chosen so the softmax is exact) or
computed independently with numpy / torch.nn.functional in the test; never from the code under test.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfdistill.nn.losses import (
    HardLabelCrossEntropyLoss,
    ProbabilityTargetPTLoss,
    SoftCrossEntropyLoss,
    SoftmaxL2Loss,
    TemperatureKLLoss,
    build_loss,
    check_probabilities,
    mix_targets,
)

# Row 1: logits (0, ln 3) -> softmax (1/4, 3/4), one-hot target (1, 0).
# Row 2: logits (0, 0)    -> softmax (1/2, 1/2), soft target (1/4, 3/4).
LOGITS = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], dtype=torch.float64)
TARGETS = torch.tensor([[1.0, 0.0], [0.25, 0.75]], dtype=torch.float64)


def _random_case(n=7, c=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(n, c, generator=g, dtype=dtype) * 2
    teacher = torch.randn(n, c, generator=g, dtype=dtype) * 2
    return student, teacher


def test_l2_golden_value_pins_sum_over_classes_mean_over_batch():
    # row 1: (1/4 - 1)^2 + (3/4)^2 = 9/8 ; row 2: (1/2 - 1/4)^2 + (1/2 - 3/4)^2 = 1/8 ; mean = 5/8.
    # (a mean over all N*C entries would give 5/16; a sum over the batch 5/4.)
    loss = SoftmaxL2Loss()(LOGITS, TARGETS)
    assert loss.item() == pytest.approx(5 / 8, abs=1e-12)


def test_l2_matches_numpy_on_random_inputs():
    s, t = _random_case()
    p = torch.softmax(t, 1)
    s_np = s.numpy()
    soft = np.exp(s_np - s_np.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    expected = np.mean(np.sum((soft - p.numpy()) ** 2, axis=1))
    assert SoftmaxL2Loss()(s, p).item() == pytest.approx(expected, rel=1e-12)


def test_soft_ce_golden_value_and_agrees_with_cross_entropy_on_one_hot():
    # row 1: -ln(1/4) = ln 4 ; row 2: -(1/4 + 3/4) ln(1/2) = ln 2 ; mean = 1.5 ln 2.
    assert SoftCrossEntropyLoss()(LOGITS, TARGETS).item() == pytest.approx(1.5 * math.log(2), abs=1e-12)
    s, _ = _random_case()
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    onehot = F.one_hot(labels, 5).double()
    assert SoftCrossEntropyLoss()(s, onehot).item() == pytest.approx(F.cross_entropy(s, labels).item(),
                                                                     rel=1e-12)


def test_kl_temperature_one_golden_value():
    # row 1: KL((1,0) || (1/4,3/4)) = ln 4 ; row 2: 1/4 ln(1/2) + 3/4 ln(3/2) ; batchmean.
    row2 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    expected = (math.log(4) + row2) / 2
    assert TemperatureKLLoss(1.0)(LOGITS, TARGETS).item() == pytest.approx(expected, abs=1e-12)


def test_kl_temperature_two_golden_value_with_t_squared():
    # T = 2: the one-hot target stays one-hot; the student's softened row 1 is (1, sqrt3)/(1 + sqrt3),
    # so KL = ln(1 + sqrt3). Row 2: q = (sqrt(1/4), sqrt(3/4)) / Z, student (1/2, 1/2).
    r3 = math.sqrt(3.0)
    row1 = math.log(1 + r3)
    q = np.array([0.5, math.sqrt(0.75)])
    q /= q.sum()
    row2 = float(np.sum(q * np.log(q / 0.5)))
    expected = 4.0 * (row1 + row2) / 2
    assert TemperatureKLLoss(2.0)(LOGITS, TARGETS).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 0.5])
def test_kl_agrees_with_torch_kl_div_batchmean_times_t_squared(temperature):
    s, t = _random_case(seed=3)
    reference = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1),
                         reduction="batchmean") * temperature**2
    loss = TemperatureKLLoss(temperature)
    # from probabilities: p^(1/T)/Z == softmax(t / T)
    assert loss(s, torch.softmax(t, 1)).item() == pytest.approx(reference.item(), rel=1e-10)
    # from teacher logits
    assert loss(s, teacher_logits=t).item() == pytest.approx(reference.item(), rel=1e-10)
    # and NOT the 'mean' reduction (a mean over the N*C entries = batchmean / C), the usual Born-Again bug
    wrong = reference / s.shape[1]
    assert abs(loss(s, torch.softmax(t, 1)).item() - wrong.item()) > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kl_with_one_hot_targets_has_no_nan_in_value_or_gradient(temperature):
    s, _ = _random_case(seed=5)
    s = s.clone().requires_grad_(True)
    onehot = F.one_hot(torch.tensor([0, 1, 2, 3, 4, 0, 1]), 5).double()
    value = TemperatureKLLoss(temperature)(s, onehot)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all()
    # with one-hot targets KL = cross-entropy of the softened student, times T^2
    expected = F.cross_entropy(s.detach() / temperature, onehot.argmax(1)) * temperature**2
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)


def test_kl_requires_exactly_one_target_kind():
    s, t = _random_case()
    with pytest.raises(ValueError, match="exactly one"):
        TemperatureKLLoss(2.0)(s)
    with pytest.raises(ValueError, match="exactly one"):
        TemperatureKLLoss(2.0)(s, torch.softmax(t, 1), teacher_logits=t)
    with pytest.raises(ValueError, match="temperature"):
        TemperatureKLLoss(0.0)


def test_hard_label_ce_agrees_with_cross_entropy_on_argmax():
    s, t = _random_case(seed=7)
    p = torch.softmax(t, 1)
    expected = F.cross_entropy(s, t.argmax(1))
    assert HardLabelCrossEntropyLoss()(s, p).item() == pytest.approx(expected.item(), rel=1e-12)
    # golden: row 1 argmax 0 -> ln 4 ; row 2 argmax 1 -> ln 2
    assert HardLabelCrossEntropyLoss()(LOGITS, TARGETS).item() == pytest.approx(1.5 * math.log(2), abs=1e-12)


@pytest.mark.parametrize("loss", [SoftmaxL2Loss(), SoftCrossEntropyLoss(), TemperatureKLLoss(1.0),
                                  TemperatureKLLoss(2.5), HardLabelCrossEntropyLoss()],
                         ids=["l2", "soft_ce", "kl_T1", "kl_T2.5", "hard_ce"])
def test_gradcheck_float64(loss):
    s, t = _random_case(n=4, c=3, seed=11)
    p = torch.softmax(t, 1)
    assert torch.autograd.gradcheck(lambda x: loss(x, p), (s.clone().requires_grad_(True),))


def test_l2_gradient_matches_closed_form():
    # d/ds_j sum_k (sigma_k - p_k)^2 = 2 sigma_j ((sigma_j - p_j) - sum_k sigma_k (sigma_k - p_k)), / N.
    s, t = _random_case(seed=13)
    p = torch.softmax(t, 1)
    x = s.clone().requires_grad_(True)
    SoftmaxL2Loss()(x, p).backward()
    sig = torch.softmax(s, 1)
    d = sig - p
    expected = 2 * sig * (d - (sig * d).sum(1, keepdim=True)) / s.shape[0]
    torch.testing.assert_close(x.grad, expected, rtol=1e-10, atol=1e-12)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="target_probs must have the shape"):
        SoftmaxL2Loss()(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"student_logits must have shape \(N, C\)"):
        SoftCrossEntropyLoss()(torch.zeros(3), torch.zeros(3))


def test_mix_targets_values_and_rows_sum_to_one():
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = torch.tensor([1, 2])
    mixed = mix_targets(teacher, labels, 3, 0.25)
    expected = torch.tensor([[0.175, 0.8, 0.025], [0.025, 0.025, 0.95]])
    torch.testing.assert_close(mixed, expected)
    torch.testing.assert_close(mix_targets(teacher, labels, 3, 1.0), teacher)
    torch.testing.assert_close(mix_targets(teacher, labels, 3, 0.0), F.one_hot(labels, 3).float())


def test_mix_targets_outside_unit_interval_warns_and_keeps_row_sums():
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = torch.tensor([1, 2])
    with pytest.warns(UserWarning, match="outside"):
        mixed = mix_targets(teacher, labels, 3, 1.5)
    torch.testing.assert_close(mixed.sum(1), torch.ones(2))
    torch.testing.assert_close(mixed[0], torch.tensor([1.05, -0.2, 0.15]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mix_targets(teacher, labels, 3, 0.5)  # inside [0, 1]: no warning


def test_mix_targets_rejects_bad_input():
    teacher = torch.tensor([[0.7, 0.2, 0.1]])
    with pytest.raises(ValueError, match="xi must be finite"):
        mix_targets(teacher, torch.tensor([0]), 3, float("nan"))
    with pytest.raises(ValueError, match="rows must sum to 1"):
        mix_targets(teacher * 2, torch.tensor([0]), 3, 0.5)
    with pytest.raises(ValueError, match="num_classes"):
        mix_targets(teacher, torch.tensor([0]), 4, 0.5)
    with pytest.raises(ValueError, match="labels must have shape"):
        mix_targets(teacher, torch.tensor([0, 1]), 3, 0.5)


def test_check_probabilities_catches_nan_and_negative():
    with pytest.raises(ValueError, match="NaN"):
        check_probabilities(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="negative"):
        check_probabilities(torch.tensor([[-0.5, 1.5]]))


def test_build_loss_names_aliases_and_errors():
    assert isinstance(build_loss("l2"), SoftmaxL2Loss)
    assert isinstance(build_loss("soft_ce"), SoftCrossEntropyLoss)
    assert isinstance(build_loss("ce"), SoftCrossEntropyLoss)
    assert isinstance(build_loss("hard_ce"), HardLabelCrossEntropyLoss)
    kl = build_loss("kl", temperature=3.0)
    assert isinstance(kl, TemperatureKLLoss) and kl.temperature == 3.0
    with pytest.raises(ValueError, match="unknown loss name 'mse'.*l2.*soft_ce.*kl.*hard_ce.*ptloss"):
        build_loss("mse")
    with pytest.raises(ValueError, match="does not accept"):
        build_loss("l2", temperature=2.0)


def test_build_loss_ptloss_with_zero_epsilon_equals_kl():
    ptloss = pytest.importorskip("selfdistill.ptloss")
    if not hasattr(ptloss, "PTLoss"):
        pytest.skip("selfdistill.ptloss.PTLoss not available yet")
    s, t = _random_case(n=6, c=4, seed=17)
    p = torch.softmax(t, 1)
    for temperature in (1.0, 2.0):
        loss = build_loss("ptloss", epsilon=torch.zeros(4, 5, dtype=torch.float64), temperature=temperature)
        reference = TemperatureKLLoss(temperature)(s, p)
        assert loss(s, p).item() == pytest.approx(reference.item(), rel=1e-6)
        # with a non-zero perturbation, probabilities in = teacher logits in (softmax(log p) = p)
        eps = 0.1 * torch.randn(4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        wrapped = build_loss("ptloss", epsilon=eps, temperature=temperature)(s, p)
        direct = ptloss.PTLoss(eps, temperature=temperature)(s, t)
        assert wrapped.item() == pytest.approx(direct.item(), rel=1e-9)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_l2_and_kl_vanish_when_the_student_matches_the_targets(temperature):
    _, t = _random_case(seed=19)
    p = torch.softmax(t, 1)
    assert SoftmaxL2Loss()(t, p).item() == pytest.approx(0.0, abs=1e-14)
    assert TemperatureKLLoss(temperature)(t, p).item() == pytest.approx(0.0, abs=1e-12)
    # soft CE at the optimum equals the targets' entropy (KL + entropy decomposition)
    entropy = -(p * p.log()).sum(1).mean()
    assert SoftCrossEntropyLoss()(t, p).item() == pytest.approx(entropy.item(), rel=1e-12)


def _sharp_teacher(n=200, c=10, seed=23):
    """Probabilities with exact zeros and a large share of entries below 1e-12 (a sharp teacher)."""
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 15, 1)
    p[: n // 4, 3:] = 0.0  # exact zeros (rows renormalised below)
    return p / p.sum(1, keepdim=True)


def _numpy_kd(s, p, temperature):
    """T^2 mean_i sum_k q log(q / softmax(s/T)), q = p^(1/T)/Z, 0 log 0 = 0: written out in float64."""
    with np.errstate(divide="ignore"):
        q = np.where(p > 0, p ** (1.0 / temperature), 0.0)
    q /= q.sum(1, keepdims=True)
    z = s / temperature
    log_ps = z - z.max(1, keepdims=True)
    log_ps -= np.log(np.exp(log_ps).sum(1, keepdims=True))
    safe = np.where(q > 0, q, 1.0)
    return temperature**2 * np.mean(np.sum(np.where(q > 0, q * (np.log(safe) - log_ps), 0.0), 1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0])
def test_ptloss_with_zero_epsilon_is_exactly_kd_on_sharp_probability_targets(temperature, dtype):
    from selfdistill.ptloss import PTLoss

    p = _sharp_teacher()
    assert float((p < 1e-12).double().mean()) > 0.2 and bool((p == 0).any())
    s = torch.randn(200, 10, generator=torch.Generator().manual_seed(29), dtype=torch.float64) * 3
    expected = _numpy_kd(s.numpy(), p.numpy(), temperature)
    s, p = s.to(dtype), p.to(dtype)
    kd = TemperatureKLLoss(temperature)(s, p)
    pt = build_loss("ptloss", epsilon=torch.zeros(10, 5, dtype=dtype), temperature=temperature)(s, p)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    assert kd.item() == pytest.approx(expected, rel=rtol)
    assert pt.item() == pytest.approx(expected, rel=rtol)
    assert pt.item() == pytest.approx(kd.item(), rel=rtol)
    for form in ("full", "truncated"):  # and both stay finite with a perturbation
        loss = ProbabilityTargetPTLoss(PTLoss(torch.full((10, 3), 0.2, dtype=dtype), temperature, form=form))
        assert torch.isfinite(loss(s, p))


def test_kd_refuses_an_empty_batch():
    with pytest.raises(ValueError, match="empty batch"):
        TemperatureKLLoss(2.0)(torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="empty batch"):
        build_loss("ptloss", epsilon=torch.zeros(2))(torch.zeros(0, 3), torch.zeros(0, 3))
