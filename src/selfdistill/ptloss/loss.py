r"""PTLoss: knowledge distillation with a perturbed KL loss (Zhang et al., KDD 2024, arXiv 2305.05010).

This is the project's definition (``docs/specs/ptloss.md``; the paper body and code were not available,
so it was derived from the abstract, a summary and the public reviews and checked numerically). Write
:math:`u_k = 1 - p_{s,k}`. The Maclaurin series :math:`-\log p = \sum_{m \ge 1} u^m / m` makes the
cross-entropy part of :math:`\mathrm{KL}(p_t \,\|\, p_s)` a power series in :math:`u_k`; PTLoss perturbs
the coefficients of its first :math:`M` terms (``form="full"``, the default):

.. math::

    L_{\mathrm{PT}}(p_t, p_s) = \mathrm{KL}(p_t \,\|\, p_s)
        + \sum_{k=1}^{C} p_{t,k} \sum_{m=1}^{M} \epsilon_{k,m} (1 - p_{s,k})^m .

The KL part is computed exactly with ``log_softmax`` (never a truncated series), so ``eps = 0`` is exactly
:math:`\mathrm{KL}(p_t \,\|\, p_s)`. The optional ``form="truncated"`` keeps only the first :math:`M`
series terms (perturbed) and drops the tail:

.. math::

    L_{\mathrm{trunc}}(p_t, p_s) = \sum_k p_{t,k} \log p_{t,k}
        + \sum_k p_{t,k} \sum_{m=1}^{M} \Bigl(\frac{1}{m} + \epsilon_{k,m}\Bigr) (1 - p_{s,k})^m .

Temperature: with :math:`T \ne 1` both distributions are softened, :math:`p = \mathrm{softmax}(z / T)`,
and the loss is multiplied by :math:`T^2` (Hinton et al. 2015), so gradient magnitudes with respect to the
logits stay comparable across :math:`T`. The gradient with respect to the student logits :math:`z` is then
:math:`T\, W (p_s - q)` per example, with :math:`g_k = \sum_m m\, \epsilon_{k,m} (1 - p_{s,k})^{m-1}`,
:math:`q_j = p_{t,j} (1 + p_{s,j} g_j) / W` and :math:`W = \sum_k p_{t,k} (1 + p_{s,k} g_k)` (full form).

Targets: teacher logits (:func:`~selfdistill.ptloss.pt_loss`) or teacher probabilities
(:func:`~selfdistill.ptloss.pt_loss_from_probabilities`, softened as :math:`p^{1/T} / Z` with exact zeros
kept, so ``eps = 0`` is exactly temperature KD on the same targets). Precision: float16/bfloat16 inputs are
computed in float32 and the loss is returned in float32 (like the losses under ``torch.autocast``);
float32/float64 inputs are computed and returned in their dtype (:func:`compute_dtype`). An empty batch is
refused (its ``batchmean`` would be 0/0).
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
    magnifies).

    Examples
    --------
    >>> import torch
    >>> from selfdistill.ptloss.loss import compute_dtype
    >>> compute_dtype(torch.zeros(2, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.float16))
    torch.float32
    >>> compute_dtype(torch.zeros(2), torch.zeros(2, dtype=torch.float64))
    torch.float64
    """
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def soften_probabilities(probs: Tensor, temperature: float) -> Tensor:
    r"""Soften probability rows with a temperature: :math:`q_k = p_k^{1/T} / \sum_j p_j^{1/T}`.

    Computed as ``softmax(log(p) / T)``: exact zeros stay exactly zero (``log 0 = -inf``) and tiny
    probabilities keep their value (no floor). ``T = 1`` returns ``probs`` unchanged. Equals
    ``softmax(teacher_logits / T)`` when ``probs = softmax(teacher_logits)``. PTLoss with probability
    targets and :class:`~selfdistill.nn.TemperatureKLLoss` soften their targets with it.

    Parameters
    ----------
    probs : Tensor, shape (N, C)
        Probability rows (not checked here).
    temperature : float
        :math:`T > 0`; above 1 flattens the rows, below 1 sharpens them.

    Returns
    -------
    Tensor, shape (N, C)

    Examples
    --------
    >>> import torch
    >>> from selfdistill.ptloss import soften_probabilities
    >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
    >>> torch.allclose(soften_probabilities(logits.softmax(1), 4.0), (logits / 4.0).softmax(1))
    True
    >>> soften_probabilities(torch.tensor([[0.8, 0.2, 0.0]]), 2.0)   # sqrt(0.8) : sqrt(0.2) = 2 : 1
    tensor([[0.6667, 0.3333, 0.0000]])
    """
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
    r"""PTLoss between student and teacher logits, the functional form of :class:`~selfdistill.ptloss.PTLoss`.

    .. math::

        \ell_i = T^2 \Bigl[\mathrm{KL}(q_i \,\|\, p_i)
            + \sum_{k=1}^{C} q_{i,k} \sum_{m=1}^{M} \epsilon_{k,m} (1 - p_{i,k})^m\Bigr],
        \quad p_i = \mathrm{softmax}(s_i / T),\ q_i = \mathrm{softmax}(t_i / T)

    for ``form="full"`` (``form="truncated"``: :mod:`selfdistill.ptloss.loss`).

    Parameters
    ----------
    student_logits : Tensor, shape (N, C)
        The student's logits :math:`s_i` (the gradient flows through them).
    teacher_logits : Tensor, shape (N, C)
        The teacher's logits :math:`t_i`, used as constants: detach them.
    epsilon : Tensor, shape (C, M) or (M,)
        The perturbation, per class and series order, or shared by all classes. Zeros: exactly KL.
    temperature : float, default 1.0
        :math:`T`: both distributions are softened and the loss is multiplied by :math:`T^2`.
    reduction : {"batchmean", "sum", "none"}, default "batchmean"
        ``"batchmean"``: the sum over classes, then the mean over the N examples (like
        ``F.kl_div(..., reduction="batchmean")``); ``"sum"``: the sum over examples; ``"none"``: one value
        per example.
    form : {"full", "truncated"}, default "full"
        ``"full"``: exact KL plus the perturbation; ``"truncated"``: only the first M series terms.
    validate : bool, default True
        Check the values (finite logits, epsilon's shape), which costs one device synchronisation per call;
        False checks shapes only.

    Returns
    -------
    Tensor
        A scalar, or shape ``(N,)`` with ``reduction="none"``; float32 for float16/bfloat16 inputs, the
        input dtype otherwise (:func:`~selfdistill.ptloss.loss.compute_dtype`).

    Raises
    ------
    ValueError
        Shapes that differ or are not ``(N, C)``, an empty batch (N = 0), an unknown ``reduction`` or
        ``form``, a non-positive temperature; with ``validate``, non-finite values.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from selfdistill.ptloss import pt_loss
    >>> _ = torch.manual_seed(0)
    >>> s, t = torch.randn(4, 3), torch.randn(4, 3)
    >>> kl = F.kl_div(F.log_softmax(s, dim=1), F.softmax(t, dim=1), reduction="batchmean")
    >>> torch.allclose(pt_loss(s, t, torch.zeros(3, 5)), kl)             # eps = 0: exactly KL
    True

    Perturbing only the first order by ``c`` adds ``c * sum_k q_k (1 - p_k)`` per example:

    >>> c = 0.5
    >>> p, q = F.softmax(s, dim=1), F.softmax(t, dim=1)
    >>> by_hand = kl + c * (1 - (q * p).sum(1)).mean()
    >>> torch.allclose(pt_loss(s, t, torch.tensor([c, 0.0, 0.0])), by_hand)
    True
    >>> pt_loss(s, t, torch.zeros(5), temperature=4.0, reduction="none").shape
    torch.Size([4])
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
    r"""PTLoss with teacher probabilities ``teacher_probs`` as targets instead of teacher logits.

    The softened target is :math:`q = p^{1/T} / Z` (:func:`~selfdistill.ptloss.soften_probabilities`, the
    same as :class:`~selfdistill.nn.TemperatureKLLoss`); zero probabilities contribute :math:`0 \log 0 = 0`
    (``torch.xlogy``) and no floor is applied, so ``epsilon = 0`` is exactly temperature KD on the same
    targets, and the value equals :func:`~selfdistill.ptloss.pt_loss` with ``teacher_logits = log(p)``
    wherever :math:`p > 0`.

    Parameters
    ----------
    student_logits : Tensor, shape (N, C)
        The student's logits.
    teacher_probs : Tensor, shape (N, C)
        One probability distribution per row (the teacher's ``T = 1`` softmax, possibly mixed or smoothed),
        used as constants: detach them. With ``validate``, rows must be non-negative and sum to 1 (within
        1e-3).
    epsilon, temperature, reduction, form, validate
        As in :func:`~selfdistill.ptloss.pt_loss`.

    Returns
    -------
    Tensor
        A scalar, or shape ``(N,)`` with ``reduction="none"``.

    Examples
    --------
    >>> import torch
    >>> from selfdistill.ptloss import pt_loss, pt_loss_from_probabilities
    >>> _ = torch.manual_seed(0)
    >>> s, t = torch.randn(4, 3), torch.randn(4, 3)
    >>> eps = 0.1 * torch.randn(3, 5)
    >>> from_probs = pt_loss_from_probabilities(s, t.softmax(1), eps, temperature=2.0)
    >>> torch.allclose(from_probs, pt_loss(s, t, eps, temperature=2.0))
    True

    A target with an exact zero (a class the teacher rules out) stays exactly zero after softening:

    >>> p = torch.tensor([[0.7, 0.3, 0.0]])
    >>> pt_loss_from_probabilities(torch.zeros(1, 3), p, torch.zeros(5), temperature=2.0).isfinite().item()
    True
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
    r"""The perturbed distillation loss (PTLoss, Zhang et al. 2024) as a ``torch.nn`` loss module.

    For student logits :math:`s_i`, teacher logits :math:`t_i`, a temperature :math:`T` and the softened
    distributions :math:`p_i = \mathrm{softmax}(s_i / T)`, :math:`q_i = \mathrm{softmax}(t_i / T)`:

    .. math::

        \ell_i = T^2 \Bigl[\mathrm{KL}(q_i \,\|\, p_i)
            + \sum_{k=1}^{C} q_{i,k} \sum_{m=1}^{M} \epsilon_{k,m} (1 - p_{i,k})^m\Bigr], \qquad
        L = \frac{1}{N} \sum_{i=1}^{N} \ell_i \quad (\texttt{reduction="batchmean"}).

    The sum over :math:`m` perturbs the first :math:`M` coefficients :math:`1/m` of the Maclaurin series
    :math:`-\log p = \sum_m (1 - p)^m / m` of the cross-entropy; :math:`\epsilon = 0` is exactly
    ``T**2 * F.kl_div(F.log_softmax(s / T), F.softmax(t / T), reduction="batchmean")``, computed exactly
    (never as a truncated series). ``form="truncated"`` keeps only the first :math:`M` series terms
    (:mod:`selfdistill.ptloss.loss`).

    Parameters
    ----------
    epsilon : Tensor or array-like, shape (C, M) or (M,)
        The perturbation :math:`\epsilon_{k,m}`, per class :math:`k` and series order :math:`m`, or one
        ``(M,)`` vector shared by all classes. Stored as a buffer: it moves with ``.to(device)`` and is
        saved in the ``state_dict``. :func:`~selfdistill.ptloss.select_perturbation` chooses it.
    temperature : float, default 1.0
        :math:`T > 0`: both distributions are softened and the loss is multiplied by :math:`T^2` (Hinton et
        al. 2015), so gradient magnitudes stay comparable across temperatures.
    reduction : {"batchmean", "sum", "none"}, default "batchmean"
        ``"batchmean"``: the sum over classes, then the mean over the N examples (as
        ``F.kl_div(..., reduction="batchmean")``, never a mean over the N*C entries); ``"sum"``: the sum
        over examples; ``"none"``: one value per example.
    form : {"full", "truncated"}, default "full"
        ``"full"``: exact KL plus the perturbation; ``"truncated"``: the first M series terms only.
    validate : bool, default True
        Check values at every call (finite logits, probability rows, epsilon's shape), which costs one
        device synchronisation per call; False checks shapes only.

    Notes
    -----
    Shapes:

    - ``student_logits``: :math:`(N, C)`;
    - ``teacher_logits`` or ``teacher_probs``: :math:`(N, C)`, treated as constants (detach them, or
      compute them under ``torch.no_grad()``);
    - ``epsilon``: :math:`(C, M)` or :math:`(M,)`;
    - output: a scalar, or :math:`(N,)` with ``reduction="none"``.

    Call it with teacher logits, ``loss_fn(student_logits, teacher_logits)``, or with probability targets,
    ``loss_fn(student_logits, teacher_probs=p)`` (softened as :math:`p^{1/T} / Z`,
    :func:`~selfdistill.ptloss.pt_loss_from_probabilities`). float16/bfloat16 inputs (``torch.autocast``)
    are computed, and the loss returned, in float32; an empty batch is refused.

    Minimizing this loss does not pull the student to the teacher but to the *proxy teacher*
    (:func:`~selfdistill.ptloss.proxy_teacher`); the point of the method is to choose :math:`\epsilon` so
    that the proxy teacher is closer to the true class probabilities than the teacher is.

    See Also
    --------
    pt_loss, pt_loss_from_probabilities : the functional forms.
    select_perturbation : choose ``epsilon`` (and ``temperature``) on labeled validation data.
    selfdistill.nn.ProbabilityTargetPTLoss : this loss on the probability targets of a chain.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from selfdistill.ptloss import PTLoss
    >>> _ = torch.manual_seed(0)
    >>> student_logits = torch.randn(8, 3, requires_grad=True)
    >>> teacher_logits = torch.randn(8, 3)
    >>> kl = F.kl_div(F.log_softmax(student_logits, 1), F.softmax(teacher_logits, 1), reduction="batchmean")
    >>> torch.allclose(PTLoss(torch.zeros(5))(student_logits, teacher_logits), kl)    # eps = 0: KL
    True
    >>> loss_fn = PTLoss(0.1 * torch.randn(3, 5), temperature=2.0)                    # (C, M)
    >>> loss_fn
    PTLoss(epsilon_shape=(3, 5), temperature=2.0, reduction='batchmean', form='full')
    >>> loss = loss_fn(student_logits, teacher_logits)
    >>> loss.backward()
    >>> student_logits.grad.shape
    torch.Size([8, 3])
    >>> probs = teacher_logits.softmax(1)                                             # probability targets
    >>> torch.allclose(loss_fn(student_logits, teacher_probs=probs), loss)
    True
    >>> PTLoss(torch.zeros(5), reduction="none")(student_logits, teacher_logits).shape
    torch.Size([8])
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
        """The loss of ``student_logits`` ``(N, C)`` against ``teacher_logits`` ``(N, C)`` or, given by
        keyword instead, ``teacher_probs`` ``(N, C)`` (probability rows); exactly one of the two. Returns a
        scalar, or ``(N,)`` with ``reduction="none"``."""
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
