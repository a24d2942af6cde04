"""PTLoss: knowledge distillation with a perturbed KL loss (Zhang et al., KDD 2024, arXiv 2305.05010).

This is the project's definition (``docs/specs/ptloss.md``; the paper body and code were not available,
so it was derived from the abstract, a summary and the public reviews and checked numerically). Write
``u_k = 1 - p_s,k``. The Maclaurin series ``-log p = sum_{m>=1} u^m / m`` makes the cross-entropy part of
KL(p_t || p_s) a power series in ``u_k``; PTLoss perturbs the coefficients of its first M terms:

    L_PT(p_t, p_s) = KL(p_t || p_s) + sum_k p_t,k sum_{m=1..M} eps_{k,m} (1 - p_s,k)^m      (full, default)

The KL part is computed exactly with ``log_softmax`` (never a truncated series), so ``eps = 0`` is exactly
``KL(p_t || p_s)``. The optional ``form="truncated"`` keeps only the first M series terms (perturbed) and
drops the tail:

    L_trunc(p_t, p_s) = sum_k p_t,k log p_t,k + sum_k p_t,k sum_{m=1..M} (1/m + eps_{k,m}) (1 - p_s,k)^m

Temperature: with ``T != 1`` both distributions are softened, ``p = softmax(logits / T)``, and the loss is
multiplied by ``T^2`` (Hinton et al. 2015), so gradient magnitudes w.r.t. the logits stay comparable across T.
The gradient w.r.t. the student logits ``z`` is then ``T * W (p_s - q)`` per example, with
``g_k = sum_m m eps_{k,m} (1 - p_s,k)^(m-1)``, ``q_j = p_t,j (1 + p_s,j g_j) / W`` and
``W = sum_k p_t,k (1 + p_s,k g_k)`` (full form).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REDUCTIONS = ("batchmean", "sum", "none")
FORMS = ("full", "truncated")


def positive_real(value: object, name: str) -> float:
    """``value`` as a float when it is a positive finite real number (Python, NumPy, or a one-element
    tensor); otherwise a ValueError naming ``name``. Booleans are refused."""
    if isinstance(value, Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def positive_int(value: object, name: str) -> int:
    """``value`` as an int when it is an integer >= 1 (Python or NumPy); otherwise a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def as_epsilon(epsilon: Tensor | object, num_classes: int | None = None, *, name: str = "epsilon") -> Tensor:
    """Validate a perturbation and return it as a float tensor of shape ``(..., C or 1, M)``.

    Accepted: ``(M,)`` (one perturbation shared by all classes), ``(C, M)`` (per class and order) and, for
    batches of candidates, ``(S, C, M)`` or ``(S, 1, M)``. An ``(M,)`` vector becomes ``(1, M)``.
    """
    try:
        eps = torch.as_tensor(epsilon)
    except (TypeError, ValueError, RuntimeError) as err:  # strings, ragged nested lists, None...
        raise ValueError(
            f"{name} must be numbers: an (M,) list, or C lists of M numbers (one per class); got {epsilon!r} "
            f"({err})"
        ) from None
    if not (eps.is_floating_point() or eps.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be a real tensor, got dtype {eps.dtype}")
    if not eps.is_floating_point():
        eps = eps.to(torch.get_default_dtype())
    if eps.ndim == 1:
        eps = eps.unsqueeze(0)
    if eps.ndim not in (2, 3) or eps.shape[-1] < 1:
        raise ValueError(
            f"{name} must have shape (M,), (C, M) or (S, C, M) with M >= 1 series orders, "
            f"got {tuple(eps.shape)}"
        )
    if num_classes is not None and eps.shape[-2] not in (1, num_classes):
        raise ValueError(
            f"{name} has {eps.shape[-2]} rows but the distributions have {num_classes} classes: pass a "
            f"({num_classes}, M) matrix, or an (M,) vector shared by all classes"
        )
    if not torch.isfinite(eps).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return eps


def _horner(u: Tensor, coefficients: Tensor) -> Tensor:
    """Evaluate ``sum_{i=0}^{D-1} c_i u^i`` with Horner's rule; ``coefficients`` has shape ``(..., C, D)``."""
    acc = coefficients[..., -1]
    for i in range(coefficients.shape[-1] - 2, -1, -1):
        acc = torch.addcmul(coefficients[..., i], acc, u)
    if acc.shape != u.shape:
        acc = acc.expand(torch.broadcast_shapes(acc.shape, u.shape))
    return acc


def perturbation_polynomial(u: Tensor, epsilon: Tensor) -> Tensor:
    """``h_k(u_k) = sum_{m=1..M} eps_{k,m} u_k^m`` elementwise; ``u``: (N, C), ``epsilon``: (C|1, M)."""
    return u * _horner(u, epsilon)


def perturbation_slope(u: Tensor, epsilon: Tensor) -> Tensor:
    """``g_k(u_k) = h_k'(u_k) = sum_{m=1..M} m eps_{k,m} u_k^(m-1)`` (the ``g`` of the gradient formula)."""
    orders = torch.arange(1, epsilon.shape[-1] + 1, dtype=epsilon.dtype, device=epsilon.device)
    return _horner(u, epsilon * orders)


def perturbation_curvature(u: Tensor, epsilon: Tensor) -> Tensor:
    """``h_k''(u_k) = sum_{m=2..M} m (m-1) eps_{k,m} u_k^(m-2)``; zero when M = 1."""
    if epsilon.shape[-1] < 2:
        return torch.zeros_like(u)
    orders = torch.arange(2, epsilon.shape[-1] + 1, dtype=epsilon.dtype, device=epsilon.device)
    return _horner(u, epsilon[..., 1:] * orders * (orders - 1))


def _check_logits(logits: Tensor, name: str) -> None:
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {logits.dtype}")
    if not torch.isfinite(logits).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def pt_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    epsilon: Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    form: str = "full",
    validate: bool = True,
) -> Tensor:
    """PTLoss between teacher and student logits of shape ``(N, C)``; see the module docstring.

    ``reduction``: ``"batchmean"`` (sum over examples / N, like ``F.kl_div(..., reduction="batchmean")``),
    ``"sum"``, or ``"none"`` (one value per example, shape ``(N,)``). ``validate=False`` skips the input
    checks (shapes, finiteness), which cost one device synchronisation per call.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    temperature = positive_real(temperature, "temperature")
    if validate:
        _check_logits(student_logits, "student_logits")
        _check_logits(teacher_logits, "teacher_logits")
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                f"{tuple(teacher_logits.shape)} must have the same shape (N, C): same examples, same classes"
            )
        epsilon = as_epsilon(epsilon, student_logits.shape[-1])
        if epsilon.ndim != 2:
            raise ValueError(
                f"epsilon must have shape (M,) or (C, M) for the loss, got {tuple(epsilon.shape)}"
            )
    epsilon = torch.as_tensor(epsilon).to(dtype=student_logits.dtype, device=student_logits.device)

    log_ps = F.log_softmax(student_logits / temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits / temperature, dim=-1)
    pt = log_pt.exp()
    u = -torch.expm1(log_ps)  # 1 - p_s, in [0, 1]
    if form == "full":
        kl = (pt * (log_pt - log_ps)).sum(-1)
        per_example = kl + (pt * perturbation_polynomial(u, epsilon)).sum(-1)
    else:
        orders = torch.arange(1, epsilon.shape[-1] + 1, dtype=epsilon.dtype, device=epsilon.device)
        series = perturbation_polynomial(u, epsilon + 1.0 / orders)
        per_example = (pt * log_pt).sum(-1) + (pt * series).sum(-1)
    per_example = per_example * (temperature**2)
    if reduction == "none":
        return per_example
    total = per_example.sum()
    return total / student_logits.shape[0] if reduction == "batchmean" else total


class PTLoss(nn.Module):
    """PTLoss as a module: ``PTLoss(epsilon, temperature=1.0, reduction="batchmean")(student, teacher)``.

    ``epsilon`` is a ``(C, M)`` matrix (per class ``k``, per series order ``m``) or an ``(M,)`` vector shared
    by all classes; it is stored as a buffer (moves with ``.to(device)``, saved in ``state_dict``). The
    teacher logits are used as given: detach them (or compute them under ``torch.no_grad()``) in a
    distillation loop.
    """

    def __init__(
        self,
        epsilon: Tensor,
        temperature: float = 1.0,
        reduction: str = "batchmean",
        *,
        form: str = "full",
        validate: bool = True,
    ) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        temperature = positive_real(temperature, "temperature")
        eps = as_epsilon(epsilon)
        if eps.ndim != 2:
            raise ValueError(f"epsilon must have shape (M,) or (C, M), got {tuple(eps.shape)}")
        self.register_buffer("epsilon", eps.clone())
        self.temperature = float(temperature)
        self.reduction = reduction
        self.form = form
        self.validate = validate

    @property
    def num_orders(self) -> int:
        """M, the number of perturbed series terms."""
        return int(self.epsilon.shape[-1])

    def forward(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        return pt_loss(
            student_logits,
            teacher_logits,
            self.epsilon,
            temperature=self.temperature,
            reduction=self.reduction,
            form=self.form,
            validate=self.validate,
        )

    def extra_repr(self) -> str:
        return (
            f"epsilon_shape={tuple(self.epsilon.shape)}, temperature={self.temperature}, "
            f"reduction={self.reduction!r}, form={self.form!r}"
        )
