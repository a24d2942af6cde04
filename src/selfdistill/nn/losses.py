"""Distillation losses on probability targets, with pinned normalizations.

Every loss is an ``nn.Module`` whose ``forward(student_logits, target_probs)`` takes student logits
``(N, C)`` and one probability distribution per row ``(N, C)`` (one-hot labels at round 0, the teacher's
softmax in later rounds, Mobahi et al. 2020, Section 5) and returns a scalar averaged over the batch
(``batchmean``: sum over classes, mean over examples; never a mean over the N*C entries, the
normalization bug common in Born-Again reimplementations).

- :class:`SoftmaxL2Loss` (``"l2"``): the paper's main loss, ``mean_i sum_k (softmax(s_i)_k - p_ik)^2``.
- :class:`SoftCrossEntropyLoss` (``"soft_ce"``, alias ``"ce"``): ``-mean_i sum_k p_ik log softmax(s_i)_k``.
- :class:`TemperatureKLLoss` (``"kl"``): Hinton et al. 2015, ``T^2 * mean_i KL(q_i || softmax(s_i / T))``
  with the softened target ``q = p^(1/T) / Z`` (= ``softmax(teacher_logits / T)`` when ``p`` is the
  teacher's softmax).
- :class:`HardLabelCrossEntropyLoss` (``"hard_ce"``): cross-entropy on ``argmax p`` (Appendix D.3).
- ``"ptloss"``: PTLoss (Zhang et al. 2024) from :mod:`selfdistill.ptloss` on the probability targets
  (:class:`ProbabilityTargetPTLoss`; ``epsilon = 0`` equals ``"kl"`` at the same temperature).

:func:`mix_targets` builds ``xi * teacher + (1 - xi) * onehot(labels)`` (Borup & Andersen 2021; Das &
Sanghavi 2023 for xi > 1).

Targets are treated as constants (the teacher is frozen): pass them detached.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfdistill.ptloss.loss import soften_probabilities
from selfdistill.ptloss.proxy import check_probabilities  # the package's one probability-rows contract

__all__ = [
    "LOSS_NAMES",
    "PROBABILITY_TARGET_LOSSES",
    "HardLabelCrossEntropyLoss",
    "SoftCrossEntropyLoss",
    "SoftmaxL2Loss",
    "TemperatureKLLoss",
    "build_loss",
    "check_loss_fits",
    "check_probabilities",
    "mix_targets",
]

LOSS_NAMES = ("l2", "soft_ce", "ce", "kl", "hard_ce", "ptloss")
# losses that take the logarithm of their targets, so they need probability rows (no negative entry):
# mixed targets xi * teacher + (1 - xi) * labels have negative entries for xi outside [0, 1]
PROBABILITY_TARGET_LOSSES = ("kl", "ptloss")


def _check_pair(student_logits: Tensor, target_probs: Tensor) -> None:
    """Shape checks only (no device synchronization)."""
    if student_logits.ndim != 2:
        raise ValueError(f"student_logits must have shape (N, C), got {tuple(student_logits.shape)}")
    if target_probs.shape != student_logits.shape:
        raise ValueError(f"target_probs must have the shape of student_logits {tuple(student_logits.shape)}, "
                         f"got {tuple(target_probs.shape)}")


class SoftmaxL2Loss(nn.Module):
    """Squared L2 distance between the student's softmax and the targets (the paper's main loss, Sec. 5):
    ``L = (1/N) sum_i sum_k (softmax(s_i)_k - p_ik)^2`` (sum over classes, mean over the batch)."""

    def forward(self, student_logits: Tensor, target_probs: Tensor) -> Tensor:
        _check_pair(student_logits, target_probs)
        diff = torch.softmax(student_logits, dim=1) - target_probs
        return diff.pow(2).sum(dim=1).mean()


class SoftCrossEntropyLoss(nn.Module):
    """Cross-entropy with soft targets: ``L = -(1/N) sum_i sum_k p_ik log softmax(s_i)_k``. Equals
    ``F.cross_entropy`` for one-hot targets; linear in ``p`` (so mixed targets with xi > 1 are fine)."""

    def forward(self, student_logits: Tensor, target_probs: Tensor) -> Tensor:
        _check_pair(student_logits, target_probs)
        return -(target_probs * torch.log_softmax(student_logits, dim=1)).sum(dim=1).mean()


class TemperatureKLLoss(nn.Module):
    """Temperature distillation (Hinton, Vinyals, Dean 2015):
    ``L = T^2 * (1/N) sum_i KL(q_i || softmax(s_i / T))``, reduction ``batchmean``, times ``T^2`` so the
    gradient scale does not shrink with T.

    The softened target is ``q = p^(1/T) / sum_k p_k^(1/T)``, computed as ``softmax(log(p) / T)`` where
    ``log 0 = -inf`` gives ``q = 0``; it equals ``softmax(teacher_logits / T)`` when ``p`` is the
    teacher's softmax. Zero entries (one-hot targets) contribute ``0 log 0 = 0`` via ``torch.xlogy``, so
    there is no NaN. Teacher logits can be passed directly with ``teacher_logits=`` instead of ``p``.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def soften(self, target_probs: Tensor) -> Tensor:
        """``p^(1/T) / Z`` row-wise (identity for T = 1), exact zeros kept, no floor: the same function
        (:func:`selfdistill.ptloss.loss.soften_probabilities`) as PTLoss's probability targets, so PTLoss
        with ``epsilon = 0`` equals this loss on the same targets."""
        return soften_probabilities(target_probs, self.temperature)

    def forward(self, student_logits: Tensor, target_probs: Tensor | None = None, *,
                teacher_logits: Tensor | None = None) -> Tensor:
        if (target_probs is None) == (teacher_logits is None):
            raise ValueError("pass exactly one of target_probs and teacher_logits")
        t = self.temperature
        if teacher_logits is not None:
            _check_pair(student_logits, teacher_logits)
            q = torch.softmax(teacher_logits / t, dim=1)
        else:
            _check_pair(student_logits, target_probs)
            q = self.soften(target_probs)
        if student_logits.shape[0] == 0:
            raise ValueError("student_logits is an empty batch (N = 0): the loss needs at least one example")
        log_p_student = torch.log_softmax(student_logits / t, dim=1)
        kl = (torch.xlogy(q, q) - q * log_p_student).sum(dim=1).mean()
        return kl * (t * t)


class HardLabelCrossEntropyLoss(nn.Module):
    """Cross-entropy on hard labels ``argmax_k p_ik`` (Appendix D.3: the teacher's argmax as labels),
    mean over the batch."""

    def forward(self, student_logits: Tensor, target_probs: Tensor) -> Tensor:
        _check_pair(student_logits, target_probs)
        return F.cross_entropy(student_logits, target_probs.argmax(dim=1))


class ProbabilityTargetPTLoss(nn.Module):
    """PTLoss (:class:`selfdistill.ptloss.PTLoss`) on probability targets: ``ptloss(student_logits,
    teacher_probs=p)``, softened as ``p^(1/T) / Z`` exactly like :class:`TemperatureKLLoss` (zeros stay
    zero, ``0 log 0 = 0``, no floor), so ``epsilon = 0`` gives the temperature-KD value on the same targets.
    """

    def __init__(self, ptloss: nn.Module):
        super().__init__()
        self.ptloss = ptloss

    def forward(self, student_logits: Tensor, target_probs: Tensor) -> Tensor:
        _check_pair(student_logits, target_probs)
        return self.ptloss(student_logits, teacher_probs=target_probs)


def mix_targets(teacher_probs: Tensor, labels: Tensor, num_classes: int, xi: float, *,
                validate: bool = True) -> Tensor:
    """``xi * teacher_probs + (1 - xi) * onehot(labels)`` (Borup & Andersen 2021).

    ``xi = 1`` is pure self-distillation, ``xi = 0`` the original labels. Any finite ``xi`` is accepted;
    outside [0, 1] (Das & Sanghavi 2023: xi > 1 can help under heavy label noise) a warning says the rows
    may have negative entries: they still sum to 1, and the L2 and soft-CE losses remain well defined, but
    KL and PTLoss need non-negative targets.

    ``validate=True`` checks that the teacher rows are distributions (a device synchronization); pass
    ``validate=False`` inside a training step once the teacher's outputs are known to be softmax outputs.
    """
    if not math.isfinite(xi):
        raise ValueError(f"xi must be finite, got {xi!r}")
    if validate:
        check_probabilities(teacher_probs, name="teacher_probs")
    if labels.ndim != 1 or labels.shape[0] != teacher_probs.shape[0]:
        raise ValueError(f"labels must have shape ({teacher_probs.shape[0]},), got {tuple(labels.shape)}")
    if teacher_probs.shape[1] != num_classes:
        raise ValueError(f"teacher_probs has {teacher_probs.shape[1]} columns but num_classes={num_classes}")
    if not 0.0 <= xi <= 1.0:
        warnings.warn(f"mix_targets: xi={xi} is outside [0, 1]; targets may have negative entries "
                      "(rows still sum to 1). Use the 'l2' or 'soft_ce' loss with them.", stacklevel=2)
    onehot = F.one_hot(labels.long(), num_classes).to(teacher_probs.dtype)
    return xi * teacher_probs + (1.0 - xi) * onehot


def build_loss(name: str, **kwargs) -> nn.Module:
    """A loss module by name: ``"l2"``, ``"soft_ce"`` (alias ``"ce"``), ``"kl"`` (``temperature``),
    ``"hard_ce"``, ``"ptloss"`` (``epsilon``, ``temperature``, ``reduction``; forwarded to PTLoss)."""
    key = name.lower().replace("-", "_")
    if key not in LOSS_NAMES:
        raise ValueError(f"unknown loss name {name!r}; known: {', '.join(LOSS_NAMES)}")

    def take(*allowed: str) -> dict:
        unknown = set(kwargs) - set(allowed)
        if unknown:
            raise ValueError(f"loss {name!r} does not accept {sorted(unknown)}; accepted: {list(allowed)}")
        return kwargs

    if key == "l2":
        take()
        return SoftmaxL2Loss()
    if key in ("soft_ce", "ce"):
        take()
        return SoftCrossEntropyLoss()
    if key == "kl":
        return TemperatureKLLoss(**take("temperature"))
    if key == "hard_ce":
        take()
        return HardLabelCrossEntropyLoss()
    from selfdistill.ptloss import PTLoss

    return ProbabilityTargetPTLoss(PTLoss(**kwargs))


def check_loss_fits(loss_fn: nn.Module, num_classes: int) -> None:
    """Evaluate ``loss_fn`` once on a tiny batch with ``num_classes`` classes (uniform targets), so that
    arguments that only fail against the data, e.g. a PTLoss ``epsilon`` with the wrong number of rows,
    raise their ValueError before any training."""
    with torch.no_grad():
        loss_fn(torch.zeros(2, num_classes), torch.full((2, num_classes), 1.0 / num_classes))
