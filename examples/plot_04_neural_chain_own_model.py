"""
A neural chain with your own model and data
===========================================

The neural side of the toolkit runs the paper's experiment (Section 5) on any PyTorch model: round 0
trains a freshly initialized network on the labels; round t trains ANOTHER fresh network on the softmax
outputs of round t-1's network (frozen, in eval mode). Everything it needs from you is

* a **model factory**: a function with no arguments that returns a new ``nn.Module`` mapping a batch of
  inputs to logits (it is called under a seeded random generator, once per round and seed);
* your **data** as tensors in a :class:`~selfdistill.nn.DataSplits`: training, validation (used to choose
  the best round) and test splits;
* a **loss** on (student logits, target probabilities), here the paper's L2 loss between the softmax
  and the targets, and a training budget.

Here the data are scikit-learn's 8x8 digits with 20 % of the training labels flipped at random (label noise
is where self-distillation's regularization shows), and the model is a small hand-written CNN. Everything
is tiny so that the example runs in seconds on one CPU thread.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from selfdistill.nn import DataSplits, SoftmaxL2Loss
from selfdistill.nn.chain import ChainSpec, run_chain
from selfdistill.nn.training import TrainSpec

torch.set_num_threads(1)  # tiny models: one thread is as fast, and polite on a shared machine

# %%
# Your data as tensors
# --------------------
# Inputs are float32 and already normalized, labels int64 class indices. The validation split comes out of
# the training pool; only the training labels get noise. ``clean_y_train`` and ``noise_mask`` let the
# chain report how well each round fits the labels before the noise.
images, labels = load_digits(return_X_y=True)
images = images.reshape(-1, 1, 8, 8).astype(np.float32)
x_pool, x_test, y_pool, y_test = train_test_split(images, labels, test_size=0.2, stratify=labels,
                                                  random_state=0)
x_train, x_val, y_train, y_val = train_test_split(x_pool, y_pool, test_size=0.1, stratify=y_pool,
                                                  random_state=0)
mean, std = x_train.mean(), x_train.std()

rng = np.random.default_rng(0)
noisy = rng.random(len(y_train)) < 0.2
y_noisy = np.where(noisy, (y_train + rng.integers(1, 10, len(y_train))) % 10, y_train)  # another class


def tensor(a, dtype=torch.float32):
    return torch.as_tensor(a, dtype=dtype)


data = DataSplits(
    name="digits, 20% label noise",
    x_train=tensor((x_train - mean) / std),
    y_train=tensor(y_noisy, torch.int64),
    x_val=tensor((x_val - mean) / std),
    y_val=tensor(y_val, torch.int64),
    x_test=tensor((x_test - mean) / std),
    y_test=tensor(y_test, torch.int64),
    num_classes=10,
    input_shape=(1, 8, 8),
    augment=None,  # or a function (x_batch, generator) -> augmented batch
    clean_y_train=tensor(y_train, torch.int64),
    noise_mask=tensor(noisy, torch.bool),
    label_noise=0.2,
)
print(data)

# %%
# Your model
# ----------
# Any ``nn.Module`` works: a torchvision or timm network, or your own. The factory must return a NEW,
# freshly initialized model each time it is called.


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),  # 32 channels x 4 x 4
        )
        self.head = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def model_factory():
    return TinyCNN(num_classes=data.num_classes)


# %%
# Run the chain
# -------------
# Four rounds (0..3) for each of two seeds, 400 Adam steps a round, weight decay added to the loss as in
# the paper. ``out_dir=...`` would also checkpoint every finished round and write ``rounds.csv``; running
# the same call again then resumes after the last finished round.
spec = ChainSpec(
    rounds=4,
    seeds=(0, 1),
    train=TrainSpec(optimizer="adam", lr=1e-3, weight_decay=1e-3, batch_size=64, steps=400),
)
result = run_chain(data, model_factory, SoftmaxL2Loss(), spec)

# %%
# The result prints its table (mean ± std over seeds) and names the best round by VALIDATION accuracy;
# test accuracy is reported, never used to choose.
print(result)
best = result.best_round_by_val()
print(f"best round by validation: {best['round']}, test accuracy there {best['test_acc_mean']:.3f}")

# %%
# Plot: the paper's trends
# ------------------------
# Accuracy on the ORIGINAL (noisy) training labels drops round after round: each student fits its
# teacher, not the labels. Accuracy on the clean training labels and on the test set tell whether that
# helps. At this tiny size (two seeds, 144 validation images) differences between rounds are of the order
# of the seed spread, so read the bands, not single points; ``results/README.md`` reports larger runs.
per_round = result.per_round()
rounds = [entry["round"] for entry in per_round]
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
for column, label in [
    ("train_acc_original", "train, noisy labels"),
    ("train_acc_clean", "train, clean labels"),
    ("test_acc", "test"),
]:
    mean_ = np.array([entry[f"{column}_mean"] for entry in per_round])
    std_ = np.array([entry[f"{column}_std"] for entry in per_round])
    ax.plot(rounds, mean_, "o-", label=label)
    ax.fill_between(rounds, mean_ - std_, mean_ + std_, alpha=0.2)
ax.axvline(best["round"], color="k", ls=":", label="best round (validation)")
ax.set(xlabel="round t", ylabel="accuracy", title="self-distillation rounds, mean ± std over 2 seeds")
ax.legend(fontsize="small")
plt.show()

# %%
# The per-seed numbers are in ``result.rows`` (one dict per seed and round); ``result.save_csv(path)``
# writes them as ``rounds.csv``, the file every plot of :mod:`selfdistill.nn.plots` reads.
print(result.rows[0])
