"""
Is self-distillation just early stopping?
=========================================

Every self-distillation round fits the original labels a little worse: its training loss on them rises.
So maybe it only does what stopping training early would do? The paper (Figure 6) answers by comparing
the two at EQUAL training loss: for each round, train a fresh model on the labels and stop it as soon as
its training loss reaches the loss the chain's round ended with; then compare test accuracy.

:func:`~selfdistill.nn.early_stopping.run_early_stopping_comparison` does exactly that for a finished
chain. This example uses the built-in pieces (:func:`~selfdistill.nn.load_data`,
:func:`~selfdistill.nn.build_model`) at a tiny size; ``selfdistill train digits_mlp_early_stopping`` is the
full-size run, and ``results/README.md`` reports what it found.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

from selfdistill.nn import SoftmaxL2Loss, build_model, load_data
from selfdistill.nn.chain import ChainSpec, run_chain
from selfdistill.nn.early_stopping import run_early_stopping_comparison
from selfdistill.nn.training import TrainSpec

torch.set_num_threads(1)

# %%
# A short chain
# -------------
# Digits with 20 % symmetric label noise, an MLP with two hidden layers of 128, the paper's L2 loss on the
# softmax, weight decay added to the loss. ``check_every`` is how often (in steps) the early-stopped runs
# measure their training loss.
data = load_data("digits", label_noise=0.2, seed=0)


def model_factory():
    return build_model("mlp", data.num_classes, data.input_shape, hidden_sizes=(128, 128))


loss_fn = SoftmaxL2Loss()
spec = ChainSpec(
    rounds=5,
    seeds=(0, 1),
    train=TrainSpec(lr=1e-3, weight_decay=2e-3, batch_size=64, steps=500, check_every=10),
)
chain = run_chain(data, model_factory, loss_fn, spec)
print(chain)

# %%
# Early stopping at the chain's training losses
# ---------------------------------------------
# One training run per seed (round 0's initialization and batch order) serves every round: it is stopped
# at the first check where its training loss on the labels drops to each round's recorded value.
comparison = run_early_stopping_comparison(data, model_factory, loss_fn, spec, chain)
print(comparison)

# %%
# Plot: test accuracy at equal training loss
# ------------------------------------------
# Each point is a round of the chain (x: its training loss on the noisy labels) and the early-stopped model
# that reached the same loss. Where the self-distillation curve lies above the early-stopping one, the
# rounds did something that stopping early does not.
rows = comparison.per_round()
loss = np.array([r["sd_train_loss_mean"] for r in rows])
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
for key, label, marker in [("sd_test_acc", "self-distillation round", "o"),
                           ("es_test_acc", "early stopping, same loss", "s")]:
    mean = np.array([r[f"{key}_mean"] for r in rows])
    std = np.array([r[f"{key}_std"] for r in rows])
    ax.errorbar(loss, mean, yerr=std, marker=marker, capsize=3, label=label)
for r in rows:
    ax.annotate(f"t={r['round']}", (r["sd_train_loss_mean"], r["sd_test_acc_mean"]),
                textcoords="offset points", xytext=(4, 6), fontsize="small")
ax.set(xlabel="training loss on the original (noisy) labels", ylabel="test accuracy",
       title="Figure 6, tiny: mean ± std over 2 seeds")
ax.legend()
plt.show()
