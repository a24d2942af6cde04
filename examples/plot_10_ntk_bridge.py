"""
The network's own kernel: the NTK bridge in miniature
======================================================

The theory of Mobahi et al. is about kernels. What does it say about a network? Near its initialization a
network ``f(x; theta)`` is close to its linearization, and training the linearization with squared loss
and an L2 penalty on ``theta - theta_0`` is kernel ridge regression with the **empirical neural tangent
kernel** (Jacot, Gabriel & Hongler 2018)

.. math:: \\Theta(x, x') = \\sum_{c} \\nabla_\\theta f_c(x) \\cdot \\nabla_\\theta f_c(x') .

:func:`~selfdistill.nn.ntk.empirical_ntk` computes it for any PyTorch model (``torch.func``, in chunks, so
memory stays bounded). Here we compute it for a small MLP at initialization on 200 handwritten digits,
check one entry against plain autograd, and run the exact kernel self-distillation chain on it.
``selfdistill reproduce --what ntk`` runs the full comparison with the network's own chain
(:mod:`selfdistill.experiments.ntk_bridge`); its results and what they show are in ``results/ntk_bridge``.
"""

import copy

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from selfdistill.kernel import KernelSelfDistillation
from selfdistill.nn.ntk import empirical_ntk

torch.set_num_threads(1)  # small matrices: one thread is as fast and does not fight over the CPUs
digits = load_digits()
rng = np.random.default_rng(0)
order = rng.permutation(len(digits.target))
train, test = order[:200], order[200:700]
x_all = torch.tensor(digits.data / 16.0, dtype=torch.float32)
x_train, x_test = x_all[train], x_all[test]
labels, y_test = digits.target[train].copy(), digits.target[test]
# 30 % of the training labels replaced by random classes: the situation in which distillation helps
noisy = rng.uniform(size=labels.size) < 0.3
labels[noisy] = rng.integers(0, 10, size=int(noisy.sum()))
print(f"{len(train)} training digits ({int(noisy.sum())} relabelled at random), {len(test)} test digits")

# %%
# The empirical NTK of a network at initialization
# ------------------------------------------------
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
theta_train = empirical_ntk(model, x_train, dtype=torch.float64)  # (200, 200), summed over the 10 outputs
theta_test = empirical_ntk(model, x_test, x_train, dtype=torch.float64)  # (500, 200)
print(f"NTK shapes: {tuple(theta_train.shape)} and {tuple(theta_test.shape)}, "
      f"{sum(p.numel() for p in model.parameters())} parameters")

# %%
# The same entry from per-example gradients with autograd: ``Theta[i, j] = sum_c grad f_c(x_i) .
# grad f_c(x_j)``, one backward pass per output and example (on a float64 copy of the model, as
# ``dtype=torch.float64`` computes the kernel).
model64 = copy.deepcopy(model).double()


def flat_gradient(x, c):
    model64.zero_grad()
    model64(x[None].double())[0, c].backward()
    return torch.cat([p.grad.reshape(-1) for p in model64.parameters()])


i, j = 3, 17
by_hand = sum(float(flat_gradient(x_train[i], c) @ flat_gradient(x_train[j], c)) for c in range(10))
print(f"Theta[{i}, {j}]: empirical_ntk {float(theta_train[i, j]):.10f}, autograd {by_hand:.10f}")

# %%
# The kernel chain on the NTK
# ---------------------------
# The network's outputs are regressed on one-hot labels (centered, as the bridge does), one regression
# per class with a shared ``c_t``. The NTK is a precomputed kernel: ``fit`` takes the train-by-train matrix
# and ``predict`` the test-by-train one.
one_hot = np.eye(10)[labels] - 0.1
gram, cross = theta_train.numpy(), theta_test.numpy()
chain = KernelSelfDistillation("precomputed", epsilon=0.05, epsilon_mode="relative").fit(gram, one_hot)
print(chain.result_)

test_acc = [np.mean(p.argmax(axis=1) == y_test) for p in chain.staged_predict(cross)]
train_acc_clean = [np.mean(p.argmax(axis=1) == digits.target[train])
                   for p in chain.staged_predict(gram)]
print("test accuracy per round:", np.round(test_acc, 3))

# %%
# The accuracy on the TRUE training labels, which the chain never saw, rises with the test accuracy: the
# rounds undo part of the label noise, until the chain underfits and collapses. Choose the round without
# the test set (GCV), as for any kernel:
auto = KernelSelfDistillation("precomputed", epsilon=0.05, epsilon_mode="relative", n_rounds="auto")
auto.fit(gram, one_hot)
print(f"GCV chooses round {auto.selection_.chosen}: test accuracy "
      f"{np.mean(auto.predict(cross).argmax(axis=1) == y_test):.3f}")

fig, (ax_acc, ax_spec) = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
rounds = np.arange(len(test_acc))
ax_acc.plot(rounds, test_acc, "o-", label="test")
ax_acc.plot(rounds, train_acc_clean, "s-", label="train, true labels")
ax_acc.axvline(auto.selection_.chosen, color="k", ls=":", label="round chosen by GCV")
ax_acc.set(xlabel="round", ylabel="accuracy", title="kernel chain on the network's NTK")
ax_acc.legend(fontsize="small")
ax_spec.loglog(np.arange(1, gram.shape[0] + 1), chain.result_.eigenvalues[::-1], ".")
ax_spec.set(xlabel="index", ylabel="eigenvalue of G = Theta / K", title="NTK spectrum")
plt.show()

# %%
# Does the kernel predict the network? Only as far as the network stays close to its linearization.
# :mod:`selfdistill.experiments.ntk_bridge` puts this chain beside the toolkit's neural chain of the same
# network family, round by round (training and test error, effective degrees of freedom, best round,
# collapse), with a lazy-regime control in which the network must follow its NTK.
