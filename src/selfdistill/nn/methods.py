"""Distillation methods as small objects, built through one registry (as mdistiller makes each method a unit).

A :class:`DistillationMethod` is a loss on probability targets plus a transform of the teacher's
probabilities into the targets, with a name (its row in the results) and a one-line description. Every
method trains the student on ``loss(student_logits, method.targets(teacher_probs))``.

Registered kinds (``build_method(kind, **params)``):

- ``"kl"``: ``KL(p_t || p_s)`` at T = 1 (Hinton et al. 2015 with T = 1), targets unchanged.
- ``"kd"`` (``temperature``): ``T^2 * KL`` between the softened distributions (Hinton et al. 2015).
- ``"label_smoothing"`` (``smoothing`` = a): KL at T = 1 to the smoothed teacher ``(1 - a) p_t + a / C``.
- ``"ptloss"`` (``epsilon``, ``temperature``, ``form``, optional ``name``/``label``): PTLoss (Zhang et al.
  2024, ``docs/specs/ptloss.md``) with the given perturbation ``epsilon``, on probability targets.

New kinds are added with :func:`register_method`. :func:`selfdistill.nn.distill` trains students with
any of them on your own teacher, student and data.

Examples
--------
>>> import torch
>>> from selfdistill.nn.methods import build_method
>>> method = build_method("kd", temperature=4.0)
>>> method.name
'kd_T4'
>>> teacher_probs = torch.tensor([[0.7, 0.2, 0.1]])
>>> method.loss(torch.zeros(1, 3), method.targets(teacher_probs)).ndim   # a scalar, batch mean
0
>>> build_method("label_smoothing", smoothing=0.1).targets(teacher_probs)
tensor([[0.6633, 0.2133, 0.1233]])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

__all__ = [
    "DistillationMethod",
    "MethodKind",
    "build_method",
    "method_kinds",
    "register_method",
]


@dataclass(frozen=True)
class DistillationMethod:
    """One way to distill: ``loss(student_logits, targets(teacher_probs))``.

    ``name`` labels the method's rows in the results (``kd_T4``), ``description`` says what it computes,
    ``target_transform`` maps the teacher's probabilities ``(N, C)`` to the targets (None: unchanged).
    """

    name: str
    description: str
    loss: nn.Module
    target_transform: Callable[[Tensor], Tensor] | None = None

    def targets(self, teacher_probs: Tensor) -> Tensor:
        return teacher_probs if self.target_transform is None else self.target_transform(teacher_probs)


@dataclass(frozen=True)
class MethodKind:
    """A registered kind of method: its ``kind`` name, a one-line summary and the builder."""

    kind: str
    summary: str
    builder: Callable[..., DistillationMethod]


_REGISTRY: dict[str, MethodKind] = {}


def register_method(kind: str, summary: str) -> Callable[[Callable[..., DistillationMethod]], Any]:
    """Decorator registering ``builder(**params) -> DistillationMethod`` under ``kind``."""

    def decorate(builder: Callable[..., DistillationMethod]) -> Callable[..., DistillationMethod]:
        if kind in _REGISTRY:
            raise ValueError(f"distillation method kind {kind!r} is already registered")
        _REGISTRY[kind] = MethodKind(kind, summary, builder)
        return builder

    return decorate


def method_kinds() -> tuple[str, ...]:
    """The registered kinds, in registration order."""
    return tuple(_REGISTRY)


def build_method(kind: str, **params: Any) -> DistillationMethod:
    """The method of ``kind`` built with ``params`` (ValueError naming the kind or the parameter)."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown distillation method {kind!r}; known: {', '.join(_REGISTRY)}")
    try:
        return _REGISTRY[kind].builder(**params)
    except TypeError as err:
        raise ValueError(f"method {kind!r}: {err}") from None


@register_method("kl", "KL(p_t || p_s) at T = 1")
def _kl() -> DistillationMethod:
    from selfdistill.nn.losses import TemperatureKLLoss

    return DistillationMethod("kl", "KL(p_t || p_s), T = 1", TemperatureKLLoss(1.0))


@register_method("kd", "temperature KD: T^2 KL of the softened distributions (Hinton et al. 2015)")
def _kd(temperature: float) -> DistillationMethod:
    from selfdistill.nn.losses import TemperatureKLLoss

    t = float(temperature)
    return DistillationMethod(f"kd_T{t:g}", f"T^2 KL, softened, T = {t:g}", TemperatureKLLoss(t))


class _Smooth:
    """``(1 - a) p + a / C`` row-wise (a picklable callable, unlike a closure)."""

    def __init__(self, smoothing: float) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)

    def __call__(self, teacher_probs: Tensor) -> Tensor:
        a = self.smoothing
        return (1 - a) * teacher_probs + a / teacher_probs.shape[1]


@register_method("label_smoothing", "KL at T = 1 to the label-smoothed teacher (1 - a) p_t + a / C")
def _label_smoothing(smoothing: float) -> DistillationMethod:
    from selfdistill.nn.losses import TemperatureKLLoss

    a = float(smoothing)
    return DistillationMethod(
        f"ls_{a:g}", f"KL to (1 - {a:g}) p_t + {a:g} / C", TemperatureKLLoss(1.0), _Smooth(a)
    )


@register_method("ptloss", "PTLoss with a chosen perturbation eps (Zhang et al. 2024)")
def _ptloss(
    epsilon: Any,
    temperature: float = 1.0,
    form: str = "full",
    name: str = "ptloss",
    label: str = "",
) -> DistillationMethod:
    """``epsilon``: ``(C, M)``, ``(M,)`` or a ``(1, M)`` row shared by every class; ``label`` describes
    where it comes from (e.g. "selected eps (candidate 17)")."""
    from selfdistill.nn.losses import ProbabilityTargetPTLoss
    from selfdistill.ptloss import PTLoss

    shape = getattr(epsilon, "shape", None)
    if shape is not None and len(shape) == 2 and shape[0] == 1:
        epsilon = epsilon[0]  # one row shared by every class
    loss = ProbabilityTargetPTLoss(PTLoss(epsilon, temperature, form=form))
    return DistillationMethod(name, f"PTLoss, {label}" if label else "PTLoss", loss)
