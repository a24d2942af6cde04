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

Targets: teacher logits (:func:`pt_loss`) or teacher probabilities (:func:`pt_loss_from_probabilities`,
softened as ``p^(1/T) / Z`` with exact zeros kept, so ``eps = 0`` is exactly temperature KD on the same
targets). Precision: float16/bfloat16 inputs are computed in float32 and the loss is returned in float32
(like the losses under ``torch.autocast``); float32/float64 inputs are computed and returned in their
dtype. An empty batch is refused (its ``batchmean`` would be 0/0).
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


def _check_logits(logits: Tensor, name: str) -> None:
    if not isinstance(logits, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {logits.dtype}")
    if not torch.isfinite(logits).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_target_probabilities(probs: Tensor, name: str, atol: float = 1e-3) -> None:
    """Finite, non-negative rows summing to 1 within ``atol`` (one device synchronisation)."""
    if not isinstance(probs, Tensor) or not probs.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor of probabilities")
    if not torch.isfinite(probs).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if bool((probs < 0).any()):
        raise ValueError(
            f"{name} has negative entries (min {float(probs.min()):.3g}): PTLoss needs probability targets "
            "(mixed targets with xi outside [0, 1] are not distributions)"
        )
    worst = float((probs.sum(-1, dtype=torch.float64) - 1).abs().max())
    if worst > atol:
        raise ValueError(
            f"{name} rows must sum to 1 (largest deviation {worst:.3g} > {atol:g}): pass probabilities, "
            "or pass logits as teacher_logits"
        )


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype PTLoss computes in: the promoted input dtype, raised to float32 for float16/bfloat16
    (whose range, 65504 for float16, a logit gap can exceed, and whose rounding a sum over classes
    magnifies)."""
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def soften_probabilities(probs: Tensor, temperature: float) -> Tensor:
    """``p^(1/T) / sum_k p_k^(1/T)`` row-wise, computed as ``softmax(log(p) / T)``: exact zeros stay exactly
    zero (``log 0 = -inf``) and tiny probabilities keep their value (no floor). ``T = 1`` returns ``probs``
    unchanged. Equals ``softmax(teacher_logits / T)`` when ``probs = softmax(teacher_logits)``."""
    if temperature == 1.0:
        return probs
    return torch.softmax(torch.log(probs) / temperature, dim=-1)


def _per_example(
    log_ps: Tensor, q: Tensor, entropy: Tensor, epsilon: Tensor, form: str, temperature: float
) -> Tensor:
    """``T^2 L_PT`` per example from the student's log-probabilities, the (softened) target ``q`` and the
    target's ``sum_k q_k log q_k``."""
    u = -torch.expm1(log_ps)  # 1 - p_s, in [0, 1]
    if form == "full":
        series = perturbation_polynomial(u, epsilon)
        per_example = entropy - (q * log_ps).sum(-1) + (q * series).sum(-1)
    else:
        orders = torch.arange(1, epsilon.shape[-1] + 1, dtype=epsilon.dtype, device=epsilon.device)
        per_example = entropy + (q * perturbation_polynomial(u, epsilon + 1.0 / orders)).sum(-1)
    return per_example * (temperature**2)


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return per_example
    total = per_example.sum()
    return total / per_example.shape[0] if reduction == "batchmean" else total


def _check_options(reduction: str, form: str, temperature: object) -> float:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    return positive_real(temperature, "temperature")


def _check_pair(student_logits: Tensor, target: Tensor, target_name: str, validate: bool) -> None:
    """Shapes (always, no synchronisation) and, with ``validate``, the student's values."""
    for tensor, name in ((student_logits, "student_logits"), (target, target_name)):
        if not isinstance(tensor, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.ndim != 2:
            raise ValueError(f"{name} must have shape (N, C), got {tuple(tensor.shape)}")
    if student_logits.shape != target.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and {target_name} {tuple(target.shape)} must have "
            "the same shape (N, C): same examples, same classes"
        )
    if student_logits.shape[0] == 0:
        raise ValueError("student_logits is an empty batch (N = 0): PTLoss needs at least one example")
    if validate:
        _check_logits(student_logits, "student_logits")


def _loss_epsilon(epsilon: Tensor, num_classes: int, validate: bool, dtype: torch.dtype, device) -> Tensor:
    if validate:
        epsilon = as_epsilon(epsilon, num_classes)
        if epsilon.ndim != 2:
            raise ValueError(
                f"epsilon must have shape (M,) or (C, M) for the loss, got {tuple(epsilon.shape)}"
            )
    return torch.as_tensor(epsilon).to(dtype=dtype, device=device)


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
    ``"sum"``, or ``"none"`` (one value per example, shape ``(N,)``). The loss is computed, and returned, in
    float32 for float16/bfloat16 inputs and in the input dtype otherwise (:func:`compute_dtype`); an empty
    batch is refused. ``validate=False`` skips the value checks (finiteness, epsilon's shape), which cost
    one device synchronisation per call.
    """
    temperature = _check_options(reduction, form, temperature)
    _check_pair(student_logits, teacher_logits, "teacher_logits", validate)
    if validate:
        _check_logits(teacher_logits, "teacher_logits")
    dtype = compute_dtype(student_logits, teacher_logits)
    epsilon = _loss_epsilon(epsilon, student_logits.shape[-1], validate, dtype, student_logits.device)
    log_ps = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    log_q = F.log_softmax(teacher_logits.to(dtype) / temperature, dim=-1)
    q = log_q.exp()
    per_example = _per_example(log_ps, q, (q * log_q).sum(-1), epsilon, form, temperature)
    return _reduce(per_example, reduction)


def pt_loss_from_probabilities(
    student_logits: Tensor,
    teacher_probs: Tensor,
    epsilon: Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "batchmean",
    form: str = "full",
    validate: bool = True,
) -> Tensor:
    """PTLoss with probability targets ``teacher_probs`` ``(N, C)`` instead of teacher logits.

    The softened target is :func:`soften_probabilities` (``p^(1/T) / Z``, the same as
    ``nn.losses.TemperatureKLLoss``), zero probabilities contribute ``0 log 0 = 0`` (``torch.xlogy``) and no
    floor is applied, so ``epsilon = 0`` is exactly temperature KD on the same targets, and the value equals
    :func:`pt_loss` with ``teacher_logits = log(p)`` wherever ``p > 0``. Targets are constants (detach them).
    ``validate=True`` also checks that the rows are non-negative and sum to 1 (within 1e-3).
    """
    temperature = _check_options(reduction, form, temperature)
    _check_pair(student_logits, teacher_probs, "teacher_probs", validate)
    if validate:
        _check_target_probabilities(teacher_probs, "teacher_probs")
    dtype = compute_dtype(student_logits, teacher_probs)
    epsilon = _loss_epsilon(epsilon, student_logits.shape[-1], validate, dtype, student_logits.device)
    log_ps = F.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    q = soften_probabilities(teacher_probs.to(dtype), temperature)
    per_example = _per_example(log_ps, q, torch.xlogy(q, q).sum(-1), epsilon, form, temperature)
    return _reduce(per_example, reduction)


class PTLoss(nn.Module):
    """PTLoss as a module: ``PTLoss(epsilon, temperature=1.0, reduction="batchmean")(student, teacher)``.

    ``epsilon`` is a ``(C, M)`` matrix (per class ``k``, per series order ``m``) or an ``(M,)`` vector shared
    by all classes; it is stored as a buffer (moves with ``.to(device)``, saved in ``state_dict``). Call it
    with teacher logits, ``loss(student_logits, teacher_logits)``, or with probability targets,
    ``loss(student_logits, teacher_probs=p)`` (:func:`pt_loss_from_probabilities`). The teacher's outputs
    are used as given: detach them (or compute them under ``torch.no_grad()``) in a distillation loop.
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
        temperature = _check_options(reduction, form, temperature)
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

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None = None,
        *,
        teacher_probs: Tensor | None = None,
    ) -> Tensor:
        if (teacher_logits is None) == (teacher_probs is None):
            raise ValueError("PTLoss: pass exactly one of teacher_logits and teacher_probs")
        loss = pt_loss if teacher_probs is None else pt_loss_from_probabilities
        return loss(
            student_logits,
            teacher_logits if teacher_probs is None else teacher_probs,
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
