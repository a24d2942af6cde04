"""PTLoss (Zhang et al., KDD 2024): the perturbed KL loss, its proxy teacher, and the perturbation search.

In a few lines::

    from selfdistill.ptloss import PTLoss, proxy_teacher, select_perturbation
    loss_fn = PTLoss(epsilon, temperature=1.0, reduction="batchmean")   # epsilon: (C, M) or (M,)
    loss = loss_fn(student_logits, teacher_logits)                      # (N, C) each
    loss = loss_fn(student_logits, teacher_probs=p)                     # probability targets
    q = proxy_teacher(teacher_probs, epsilon, temperature=4.0)          # (N, C) -> (N, C)
    search = select_perturbation(teacher_probs_val, labels_val, M=5, n_candidates=200,
                                 temperature=[1, 2, 4, 8], form="full")
    loss_fn = PTLoss(**search.ptloss_kwargs())                          # the selected (eps, T) and form

The definitions are this project's (``docs/specs/ptloss.md``): the loss in :mod:`selfdistill.ptloss.loss`,
the proxy teacher in :mod:`selfdistill.ptloss.proxy` (and :mod:`selfdistill.ptloss.truncated` for the
truncated form), the search in :mod:`selfdistill.ptloss.search`.
"""

from selfdistill.ptloss.loss import (
    PTLoss,
    as_epsilon,
    pt_loss,
    pt_loss_from_probabilities,
    soften_probabilities,
)
from selfdistill.ptloss.proxy import ProxySolveInfo, convexity_margin, proxy_teacher
from selfdistill.ptloss.search import PerturbationSearchResult, sample_candidates, select_perturbation

__all__ = [
    "PTLoss",
    "PerturbationSearchResult",
    "ProxySolveInfo",
    "as_epsilon",
    "convexity_margin",
    "proxy_teacher",
    "pt_loss",
    "pt_loss_from_probabilities",
    "sample_candidates",
    "select_perturbation",
    "soften_probabilities",
]
