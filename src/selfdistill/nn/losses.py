r"""Distillation losses on probability targets, with pinned normalizations, for chains and for your own loop.

Every loss is an ``nn.Module`` whose ``forward(student_logits, target_probs)`` takes student logits
``(N, C)`` and one probability distribution per row ``(N, C)`` (one-hot labels at round 0, the teacher's
softmax in later rounds, Mobahi et al. 2020, Section 5) and returns, by default, a scalar averaged over the
batch (``batchmean``: sum over classes, mean over examples; never a mean over the N*C entries, the
normalization bug common in Born-Again reimplementations).

- :class:`SoftmaxL2Loss` (``"l2"``): the paper's main loss, ``mean_i sum_k (softmax(s_i)_k - p_ik)^2``.
- :class:`SoftCrossEntropyLoss` (``"soft_ce"``, alias ``"ce"``): ``-mean_i sum_k p_ik log softmax(s_i)_k``.
- :class:`TemperatureKLLoss` (``"kl"``): Hinton et al. 2015, ``T^2 * mean_i KL(q_i || softmax(s_i / T))``
  with the softened target ``q = p^(1/T) / Z`` (= ``softmax(teacher_logits / T)`` when ``p`` is the
  teacher's softmax).
- :class:`HardLabelCrossEntropyLoss` (``"hard_ce"``): cross-entropy on ``argmax p`` (Appendix D.3).
- :class:`ProbabilityTargetPTLoss` (``"ptloss"``): PTLoss (Zhang et al. 2024) from :mod:`selfdistill.ptloss`
  on the probability targets (``epsilon = 0`` equals ``"kl"`` at the same temperature).

:func:`~selfdistill.nn.mix_targets` builds ``xi * teacher + (1 - xi) * onehot(labels)`` (Borup & Andersen
2021; Das & Sanghavi 2023 for xi > 1).

Targets are treated as constants (the teacher is frozen): pass them detached.

Examples
--------
Any of these losses in a plain PyTorch loop; the teacher's probabilities are computed once, without
gradient:

>>> import torch
>>> from torch import nn
>>> from selfdistill.nn.losses import SoftmaxL2Loss
>>> _ = torch.manual_seed(0)
>>> x = torch.randn(32, 4)
>>> teacher = nn.Linear(4, 3)
>>> with torch.no_grad():
...     teacher_probs = torch.softmax(teacher(x), dim=1)
>>> student = nn.Linear(4, 3)
>>> optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
>>> loss_fn = SoftmaxL2Loss()
>>> first = loss_fn(student(x), teacher_probs).item()
>>> for step in range(50):
...     loss = loss_fn(student(x), teacher_probs)
...     optimizer.zero_grad()
...     loss.backward()
...     optimizer.step()
>>> loss.item() < first
True

PTLoss with the perturbation chosen by the proxy-teacher search on labeled validation data
(:func:`selfdistill.ptloss.select_perturbation`; no student is trained per candidate):

>>> from selfdistill.ptloss import PTLoss, select_perturbation
>>> labels_val = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
>>> probs_val = torch.softmax(torch.randn(8, 3), dim=1)           # the teacher on the validation set
>>> search = select_perturbation(probs_val, labels_val, M=5, n_candidates=20, seed=0)
>>> search.best_epsilon.shape                                     # (C, M): per class, per series order
torch.Size([3, 5])
>>> pt_loss = ProbabilityTargetPTLoss(PTLoss(search.best_epsilon))  # takes probabilities as targets
>>> pt_loss(student(x), teacher_probs).ndim
0
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
    "REDUCTIONS",
    "HardLabelCrossEntropyLoss",
    "ProbabilityTargetPTLoss",
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
# as in selfdistill.ptloss.PTLoss: the per-example loss summed over classes, then the mean or the sum over
# the batch, or one value per example
REDUCTIONS = ("batchmean", "sum", "none")


def _check_pair(student_logits: Tensor, target_probs: Tensor) -> None:
    """Shape checks only (no device synchronization)."""
    if student_logits.ndim != 2:
        raise ValueError(f"student_logits must have shape (N, C), got {tuple(student_logits.shape)}")
    if target_probs.shape != student_logits.shape:
        raise ValueError(f"target_probs must have the shape of student_logits {tuple(student_logits.shape)}, "
                         f"got {tuple(target_probs.shape)}")


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
    return reduction


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_example
    return per_example.sum() if reduction == "sum" else per_example.mean()


class SoftmaxL2Loss(nn.Module):
    r"""Squared L2 distance between the student's softmax and the targets (the paper's main loss, Sec. 5).

    For student logits :math:`s_i` and a target distribution :math:`p_i` per example,

    .. math::

        \ell_i = \sum_{k=1}^{C} \big(\mathrm{softmax}(s_i)_k - p_{ik}\big)^2, \qquad
        L = \frac{1}{N} \sum_{i=1}^{N} \ell_i \quad (\texttt{reduction="batchmean"}).

    Parameters
    ----------
    reduction : {"batchmean", "sum", "none"}, default "batchmean"
        ``"batchmean"``: the mean over examples of the per-example sum over classes (never the mean over
        the N*C entries); ``"sum"``: the sum over examples; ``"none"``: one value per example.

    Notes
    -----
    Shapes: ``student_logits`` :math:`(N, C)`; ``target_probs`` :math:`(N, C)`, one distribution per row
    (treated as constants); output: a scalar, or :math:`(N,)` with ``reduction="none"``.
    The targets may also be mixed with the labels with any ``xi`` (:func:`~selfdistill.nn.mix_targets`),
    negative entries included: the loss stays well defined.

    Examples
    --------
    >>> import torch
    >>> from selfdistill.nn.losses import SoftmaxL2Loss
    >>> logits = torch.zeros(2, 3)                          # softmax = (1/3, 1/3, 1/3)
    >>> targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> round(SoftmaxL2Loss()(logits, targets).item(), 4)   # (2/3)^2 + 2 (1/3)^2 = 2/3 per example
    0.6667
    >>> SoftmaxL2Loss(reduction="none")(logits, targets).shape
    torch.Size([2])
    """

    def __init__(self, reduction: str = "batchmean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def forward(self, student_logits: Tensor, target_probs: Tensor) -> Tensor:
        _check_pair(student_logits, target_probs)
        diff = torch.softmax(student_logits, dim=1) - target_probs
        return _reduce(diff.pow(2).sum(dim=1), self.reduction)


class SoftCrossEntropyLoss(nn.Module):
    r"""Cross-entropy with soft targets.

    .. math::

        \ell_i = -\sum_{k=1}^{C} p_{ik} \log \mathrm{softmax}(s_i)_k, \qquad
        L = \frac{1}{N} \sum_{i=1}^{N} \ell_i \quad (\texttt{reduction="batchmean"}).

    Equals ``torch.nn.functional.cross_entropy`` for one-hot targets; linear in :math:`p`, so mixed targets
    with ``xi > 1`` (negative entries, rows summing to 1) are fine.

    Parameters
    ----------
    reduction : {"batchmean", "sum", "none"}, default "batchmean"
        As in :class:`SoftmaxL2Loss`.

    Notes
    -----
    Shapes: ``student_logits`` :math:`(N, C)`; ``target_probs`` :math:`(N, C)`; output: a scalar, or
    :math:`(N,)` with ``reduction="none"``.

    Examples
    --------
    >>> import torch
    >>> from selfdistill.nn.losses import SoftCrossEntropyLoss
    >>> loss = SoftCrossEntropyLoss()(torch.zeros(1, 3), torch.tensor([[0.5, 0.5, 0.0]]))
    >>> round(loss.item(), 4)                               # log 3
    1.0986
    """

    def __init__(self, reduction: str = "batchmean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def forward(self, student_logits: Tensor, target_probs: Tensor) -> Tensor:
        _check_pair(student_logits, target_probs)
        per_example = -(target_probs * torch.log_softmax(student_logits, dim=1)).sum(dim=1)
        return _reduce(per_example, self.reduction)


class TemperatureKLLoss(nn.Module):
    r"""Temperature distillation (Hinton, Vinyals, Dean 2015), times :math:`T^2` so the gradient scale does
    not shrink with the temperature :math:`T`.

    .. math::

        q_i = \frac{p_i^{1/T}}{\sum_k p_{ik}^{1/T}}, \qquad
        L = T^2 \, \frac{1}{N} \sum_{i=1}^{N} \sum_{k=1}^{C} q_{ik}
            \log \frac{q_{ik}}{\mathrm{softmax}(s_i / T)_k} .

    The softened target :math:`q` is computed as ``softmax(log(p) / T)`` where ``log 0 = -inf`` gives
    ``q = 0``; it equals ``softmax(teacher_logits / T)`` when ``p`` is the teacher's softmax. Zero entries
    (one-hot targets) contribute ``0 log 0 = 0`` via ``torch.xlogy``, so there is no NaN. Teacher logits
    can be passed directly with ``teacher_logits=`` instead of ``p``.

    Parameters
    ----------
    temperature : float, default 1.0
        :math:`T > 0`.

    Notes
    -----
    Shapes: ``student_logits`` :math:`(N, C)`; ``target_probs`` (or ``teacher_logits``) :math:`(N, C)`;
    output: a scalar. Reduction: always ``batchmean`` (the sum over classes, the mean over examples, as
    ``torch.nn.functional.kl_div(..., reduction="batchmean")``). The targets must be probability rows (no
    negative entry): mixed targets need ``xi`` in [0, 1].

    Examples
    --------
    >>> import torch
    >>> from selfdistill.nn.losses import TemperatureKLLoss
    >>> one_hot = torch.tensor([[1.0, 0.0, 0.0]])
    >>> round(TemperatureKLLoss()(torch.zeros(1, 3), one_hot).item(), 4)        # KL = log 3
    1.0986
    >>> teacher_logits = torch.tensor([[2.0, 0.0, 0.0]])
    >>> loss = TemperatureKLLoss(temperature=4.0)(torch.zeros(1, 3), teacher_logits=teacher_logits)
    >>> loss.ndim
    0
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
        (:func:`selfdistill.ptloss.soften_probabilities`) as PTLoss's probability targets, so PTLoss
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
    r"""Cross-entropy on hard labels :math:`\arg\max_k p_{ik}` (Appendix D.3: the teacher's argmax as
    labels).

    .. math::

        \ell_i = -\log \mathrm{softmax}(s_i)_{\hat y_i}, \quad \hat y_i = \arg\max_k p_{ik}, \qquad
        L = \frac{1}{N} \sum_{i=1}^{N} \ell_i \quad (\texttt{reduction="batchmean"}).

    Parameters
    ----------
    reduction : {"batchmean", "sum", "none"}, default "batchmean"
        As in :class:`SoftmaxL2Loss`.

    Notes
    -----
    Shapes: ``student_logits`` :math:`(N, C)`; ``target_probs`` :math:`(N, C)` (only the argmax of each
    row is used; ties go to the lowest class index); output: a scalar, or :math:`(N,)` with
    ``reduction="none"``.

    Examples
    --------
    >>> import torch
    >>> from selfdistill.nn.losses import HardLabelCrossEntropyLoss
    >>> loss = HardLabelCrossEntropyLoss()(torch.zeros(1, 3), torch.tensor([[0.2, 0.7, 0.1]]))
    >>> round(loss.item(), 4)                               # -log softmax(0)_1 = log 3
    1.0986
    """

    def __init__(self, reduction: str = "batchmean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"

    def forward(self, student_logits: Tensor, target_probs: Tensor) -> Tensor:
        _check_pair(student_logits, target_probs)
        hard = target_probs.argmax(dim=1)
        if self.reduction == "batchmean":
            return F.cross_entropy(student_logits, hard)
        return F.cross_entropy(student_logits, hard, reduction=self.reduction)


class ProbabilityTargetPTLoss(nn.Module):
    r"""PTLoss (:class:`selfdistill.ptloss.PTLoss`) on probability targets: ``ptloss(student_logits,
    teacher_probs=p)``, softened as ``p^(1/T) / Z`` exactly like :class:`TemperatureKLLoss` (zeros stay
    zero, ``0 log 0 = 0``, no floor), so ``epsilon = 0`` gives the temperature-KD value on the same targets.
    This is how chains and distillation runs use PTLoss (their targets are probabilities).

    With :math:`u_k = 1 - \mathrm{softmax}(s)_k` and the perturbation :math:`\epsilon` (``(C, M)`` or
    ``(M,)``) of the wrapped PTLoss (full form, :math:`T = 1`):

    .. math::

        \ell_i = \mathrm{KL}(p_i \,\|\, \mathrm{softmax}(s_i))
                 + \sum_{k=1}^{C} p_{ik} \sum_{m=1}^{M} \epsilon_{k,m}\, u_{ik}^{m} .

    Parameters
    ----------
    ptloss : selfdistill.ptloss.PTLoss
        The loss on (student logits, teacher probabilities); its ``temperature``, ``reduction`` and
        ``form`` apply.

    Notes
    -----
    Shapes: ``student_logits`` :math:`(N, C)`; ``target_probs`` :math:`(N, C)`, probability rows (no
    negative entry); output: as the wrapped PTLoss's ``reduction`` says (``"batchmean"``: a scalar).

    Examples
    --------
    >>> import torch
    >>> from selfdistill.ptloss import PTLoss
    >>> from selfdistill.nn.losses import ProbabilityTargetPTLoss
    >>> loss_fn = ProbabilityTargetPTLoss(PTLoss(torch.zeros(5)))   # eps = 0: exactly KL
    >>> round(loss_fn(torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]])).item(), 4)
    1.0986
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
