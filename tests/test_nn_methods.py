"""Distillation methods as objects (selfdistill.nn.methods): one registry, each method a loss plus a target
transform; losses checked against independent computations (torch's own KL, the closed-form smoothing)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfdistill.nn.methods import DistillationMethod, build_method, method_kinds, register_method


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    teacher = torch.softmax(torch.randn(6, 5, generator=generator, dtype=torch.float64), dim=1)
    return student, teacher


def _kl(target, student_logits, temperature=1.0):
    """batchmean KL(target || softmax(s / T)) * T^2 with torch's kl_div (an independent implementation)."""
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_q, target, reduction="batchmean") * temperature**2


def test_the_registry_holds_the_four_kinds():
    assert method_kinds()[:4] == ("kl", "kd", "label_smoothing", "ptloss")
    with pytest.raises(ValueError, match="unknown distillation method 'dkd'; known: kl, kd"):
        build_method("dkd")
    with pytest.raises(ValueError, match="method 'kd': .*temperature"):
        build_method("kd")
    with pytest.raises(ValueError, match="already registered"):
        register_method("kl", "again")(lambda: None)


def test_kl_and_temperature_kd(batch):
    student, teacher = batch
    kl = build_method("kl")
    assert (kl.name, kl.description) == ("kl", "KL(p_t || p_s), T = 1")
    assert kl.targets(teacher) is teacher
    assert kl.loss(student, teacher) == pytest.approx(float(_kl(teacher, student)), rel=1e-10)
    kd = build_method("kd", temperature=4)
    assert kd.name == "kd_T4"
    softened = torch.softmax(torch.log(teacher) / 4, dim=1)  # the teacher's softmax at T = 4
    expected = float(_kl(softened, student, 4.0))
    assert kd.loss(student, kd.targets(teacher)) == pytest.approx(expected, rel=1e-9)


def test_label_smoothing_transforms_the_targets(batch):
    student, teacher = batch
    ls = build_method("label_smoothing", smoothing=0.1)
    assert ls.name == "ls_0.1" and "(1 - 0.1) p_t + 0.1 / C" in ls.description
    expected = 0.9 * teacher + 0.1 / 5
    assert torch.allclose(ls.targets(teacher), expected, rtol=0, atol=1e-15)
    assert ls.loss(student, ls.targets(teacher)) == pytest.approx(float(_kl(expected, student)), rel=1e-10)
    with pytest.raises(ValueError, match="label smoothing must be in"):
        build_method("label_smoothing", smoothing=1.0)


def test_ptloss_with_zero_epsilon_is_kl_and_a_chosen_candidate_changes_it(batch):
    """PTLoss at eps = 0 is KL(p_t || p_s) (the spec); a (1, M) candidate row is shared by every class."""
    student, teacher = batch
    student, teacher = student.float(), teacher.float()
    zero = build_method("ptloss", epsilon=torch.zeros(1, 3), name="ptloss_selected", label="selected eps")
    assert isinstance(zero, DistillationMethod)
    assert (zero.name, zero.description) == ("ptloss_selected", "PTLoss, selected eps")
    assert zero.loss(student, teacher) == pytest.approx(float(_kl(teacher, student)), rel=1e-4)
    moved = build_method("ptloss", epsilon=torch.full((1, 3), 0.2))
    assert float(moved.loss(student, teacher)) != pytest.approx(float(zero.loss(student, teacher)), rel=1e-3)
