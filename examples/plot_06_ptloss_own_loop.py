"""
PTLoss in your own training loop
================================

:class:`~selfdistill.ptloss.PTLoss` is an ordinary ``torch.nn`` loss: ``loss_fn(student_logits,
teacher_logits)`` with both of shape ``(N, C)``, averaged over the batch like
``F.kl_div(..., reduction="batchmean")``. It is the KL divergence from the teacher to the student plus a
perturbation of the first M terms of its Maclaurin series,

``L_PT = KL(p_t || p_s) + sum_k p_t,k sum_{m<=M} eps_{k,m} (1 - p_s,k)^m``,

so ``eps = 0`` is exactly KL (see :doc:`/concepts`; the definition is this project's reading of Zhang et
al., KDD 2024, in :doc:`/specs/ptloss`). With ``temperature=T`` both distributions are softened and the
loss is multiplied by ``T^2``, so ``eps = 0`` is then Hinton et al.'s temperature KD.

Training with PTLoss pulls the student towards a shifted "proxy teacher" instead of the teacher itself.
The point of the method is to choose ``eps`` so that this proxy teacher is closer to the truth:
:func:`~selfdistill.ptloss.select_perturbation` scores random candidates, at every temperature of a grid,
by the Brier score of their proxy teachers on labeled validation data, without training a single student,
and returns the pair ``(eps, T)`` to train with.

Everything below is plain PyTorch: a teacher, a smaller student, a loop you would write anyway.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfdistill.nn import load_data
from selfdistill.ptloss import PTLoss, proxy_teacher, select_perturbation, soften_probabilities

torch.set_num_threads(1)
torch.manual_seed(0)

# %%
# Data and a teacher
# ------------------
# Digits as tensors (train / validation / test). The teacher is an MLP trained long enough to be
# confident on its training data.
data = load_data("digits", seed=0)
x_train, y_train = data.x_train.flatten(1), data.y_train
x_val, y_val = data.x_val.flatten(1), data.y_val
x_test, y_test = data.x_test.flatten(1), data.y_test


def mlp(hidden):
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def fit(model, loss_of_batch, steps=600, batch_size=64, lr=3e-3, seed=0):
    """A plain training loop: Adam, random mini-batches; ``loss_of_batch(logits, index) -> loss``."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        index = torch.randint(0, len(x_train), (batch_size,), generator=generator)
        loss = loss_of_batch(model(x_train[index]), index)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


teacher = fit(mlp(256), lambda logits, index: F.cross_entropy(logits, y_train[index]), steps=1500)
print(f"teacher test accuracy {accuracy(teacher, x_test, y_test):.3f}")
with torch.no_grad():
    teacher_logits_train = teacher(x_train)  # what the student will be distilled from (frozen teacher)
    teacher_probs_val = teacher(x_val).softmax(1)  # what the search looks at (T = 1 probabilities)

# %%
# Choosing the perturbation and the temperature
# ---------------------------------------------
# 100 random ``(C, M)`` candidates with M = 5 (candidate 0 is ``eps = 0``), each at T = 1, 2 and 4: 300
# rows. Each row gets the proxy teacher of the loss trained at that ``(eps, T)`` on the validation set and
# its Brier score against the labels. Only *eligible* rows may win (every proxy solve converged, the
# problem certified convex); ties go to the lower row, so ``eps = 0`` wins unless a perturbation is
# strictly better. The ``eps = 0`` rows are plain temperature KD at each T, the baselines.
search = select_perturbation(teacher_probs_val, y_val, M=5, n_candidates=100, temperature=[1, 2, 4], seed=0)
print(search)
eps, T = search.selected  # eps: (10, 5), per class and series order; T: a temperature of the grid
kd_brier = {t: float(search.scores[search.row(0, t)]) for t in search.temperatures}  # the eps = 0 rows
kd_T = min(kd_brier, key=kd_brier.get)  # temperature KD with its T chosen by the same validation score
print(f"selected eps at T = {T:g}; eps = 0 (temperature KD) per T:",
      {t: round(v, 4) for t, v in kd_brier.items()}, f"-> KD's best T = {kd_T:g}")
print(f"{int(search.eligible.sum())} of {search.n_rows} rows eligible")
fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
search.plot(ax=ax)
plt.show()

# %%
# What the perturbation does to the teacher
# -----------------------------------------
# :func:`~selfdistill.ptloss.proxy_teacher` solves for the distribution the loss actually pulls the
# student's tempered softmax towards. At ``eps = 0`` that is the softened teacher ``p^(1/T) / Z``; the
# selected ``eps`` moves it. Here for the validation example the teacher is least sure about.
proxy = proxy_teacher(teacher_probs_val, eps, temperature=T)
softened = soften_probabilities(teacher_probs_val, T)
i = int(teacher_probs_val.max(1).values.argmin())
shift = 0.5 * (proxy[i] - softened[i]).abs().sum().item()
print(f"example {i}: total variation between the softened teacher and the proxy teacher {shift:.4f}")
fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
classes = np.arange(10)
ax.bar(classes - 0.2, softened[i], width=0.4, label=f"teacher, softened at T = {T:g}")
ax.bar(classes + 0.2, proxy[i], width=0.4, label="proxy teacher (selected eps)")
ax.set(xticks=classes, xlabel="class", ylabel="probability",
       title=f"validation example {i}, label {int(y_val[i])}")
ax.legend()
plt.show()

# %%
# PTLoss in the loop
# ------------------
# The loss takes the student's logits and the teacher's (precomputed, no gradient). Only the transfer
# inputs are needed, not their labels. ``PTLoss(**search.ptloss_kwargs())`` is the loss whose proxy won:
# the selected ``epsilon``, ``temperature`` and ``form``. We train the same small student (16 hidden
# units) with plain KL, with temperature KD at its best T on the same score (the best ``eps = 0`` row),
# and with the selection.
students = {
    "KL (eps = 0, T = 1)": PTLoss(torch.zeros(5)),
    f"KD (eps = 0, T = {kd_T:g})": PTLoss(torch.zeros(5), temperature=kd_T),
    "PTLoss, selected (eps, T)": PTLoss(**search.ptloss_kwargs()),
}
for name, loss_fn in students.items():
    test_acc = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        student = fit(mlp(16), lambda logits, index, f=loss_fn: f(logits, teacher_logits_train[index]),
                      seed=seed)
        test_acc.append(accuracy(student, x_test, y_test))
    print(f"{name:26s} test accuracy {np.mean(test_acc):.3f} (seeds: {np.round(test_acc, 3)})")

# %%
# With two seeds and 360 test images (one image is 0.0028) such differences are noise-sized; the
# shipped ``selfdistill distill distill_digits`` runs every baseline (temperature KD, label smoothing,
# PTLoss random and selected) with more seeds, and ``results/README.md`` reports what it found. In Python,
# :func:`selfdistill.nn.distill` runs the same comparison on your own teacher, student and data.
#
# The loss also takes probability targets instead of logits (``teacher_probs=``, e.g. a mixed or
# smoothed teacher) and ``reduction="none"`` for one value per example:
loss_fn = PTLoss(**search.ptloss_kwargs(), reduction="none")
logits = torch.randn(4, 10)
per_example = loss_fn(logits, teacher_logits_train[:4])
same = loss_fn(logits, teacher_probs=teacher_logits_train[:4].softmax(1))
print(per_example.shape, per_example, torch.allclose(per_example, same, atol=1e-5))
