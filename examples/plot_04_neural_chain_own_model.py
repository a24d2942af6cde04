"""
A neural chain with your own model and Dataset
==============================================

The neural side of the toolkit runs the paper's experiment (Section 5) on any PyTorch model: round 0
trains a freshly initialized network on the labels; round t trains ANOTHER fresh network on the softmax
outputs of round t-1's network (frozen, in eval mode). :func:`~selfdistill.nn.self_distill` needs

* a **model factory**: a function with no arguments that returns a new ``nn.Module`` mapping a batch of
  inputs to logits (a torchvision or timm network, or your own; it is called under a seeded random
  generator, once per round and seed);
* your **data**: map-style ``torch.utils.data.Dataset`` objects of ``(input, label)`` items, read through
  DataLoaders, or ``(x, y)`` tensor pairs; training, validation (chooses the best round) and test;
* a **training budget** (:class:`~selfdistill.nn.training.TrainSpec`) and a loss on (student logits,
  target probabilities), here the paper's L2 loss between the softmax and the targets.

Here the data are scikit-learn's 8x8 digits with 20 % of the training labels flipped at random (label noise
is where self-distillation's regularization shows), wrapped in a small Dataset class as your own data
would be, and the model is a small hand-written CNN. Everything is tiny so that the example runs in
seconds on one CPU thread.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import Dataset

from selfdistill.nn import TrainSpec, self_distill

torch.set_num_threads(1)  # tiny models: one thread is as fast, and polite on a shared machine

# %%
# Your data as a Dataset
# ----------------------
# Any map-style Dataset works: ``len(ds)`` and ``ds[i] -> (input tensor, integer label)``. The validation
# split comes out of the training pool; only the training labels get noise.
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


class Digits(Dataset):
    """8x8 digit images, standardized with the training mean and std."""

    def __init__(self, x, y):
        self.x = torch.as_tensor((x - mean) / std)
        self.y = y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


train_set, val_set, test_set = Digits(x_train, y_noisy), Digits(x_val, y_val), Digits(x_test, y_test)
print(len(train_set), len(val_set), len(test_set), "examples;", int(noisy.sum()), "noisy training labels")

# %%
# Your model
# ----------
# The factory must return a NEW, freshly initialized model each time it is called.


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


# %%
# Run the chain
# -------------
# Four rounds (0..3) for each of two seeds, 400 Adam steps a round, weight decay added to the loss as in
# the paper. ``clean_train_labels`` (optional) lets the rows (``train_acc_clean``) and the plot report how
# well each round fits the labels before the noise. ``out_dir=...`` would also checkpoint every finished
# round and write ``rounds.csv``; running the same call again then resumes after the last finished round.
# On a GPU, ``device="cuda"`` (the default ``"auto"`` picks it), ``num_workers=4, pin_memory=True`` and
# ``TrainSpec(..., bf16=True, channels_last=True)`` are the usual speed-ups (:ref:`concepts-performance`).
result = self_distill(
    TinyCNN,
    train_set,
    val_set,
    test_set,
    num_classes=10,
    rounds=4,
    seeds=(0, 1),
    loss="l2",
    training=TrainSpec(optimizer="adam", lr=1e-3, weight_decay=1e-3, batch_size=64, steps=400),
    clean_train_labels=torch.as_tensor(y_train),
    device="cpu",
)

# %%
# The result prints its table (mean ± std over seeds) and names the best round by VALIDATION accuracy;
# test accuracy is reported, never used to choose.
print(result)
print(f"best round by validation: {result.best_round}")

# %%
# The paper's trends
# ------------------
# Accuracy on the ORIGINAL (noisy) training labels drops round after round: each student fits its
# teacher, not the labels. Accuracy on the clean training labels and on the test set tell whether that
# helps. At this tiny size (two seeds, 144 validation images) differences between rounds are of the order
# of the seed spread, so read the bands, not single points; ``results/README.md`` reports larger runs.
fig = result.plot(title="digits, 20% label noise")
plt.show()

# %%
# Tensors give the same numbers
# -----------------------------
# The same examples as ``(x, y)`` tensor pairs run the same code: the batches are the same index batches
# (a seeded stream of permutations), so round 0 of seed 0 reproduces the Dataset run exactly.
as_tensors = self_distill(
    TinyCNN,
    (train_set.x, torch.as_tensor(y_noisy)),
    (val_set.x, torch.as_tensor(y_val)),
    (test_set.x, torch.as_tensor(y_test)),
    num_classes=10,
    rounds=1,
    seeds=(0,),
    loss="l2",
    training=TrainSpec(optimizer="adam", lr=1e-3, weight_decay=1e-3, batch_size=64, steps=400),
    device="cpu",
)
from_dataset, from_tensors = result.rows[0]["test_acc"], as_tensors.rows[0]["test_acc"]
print(f"round 0, seed 0, test accuracy: Dataset {from_dataset:.4f}, tensors {from_tensors:.4f}, "
      f"identical: {from_dataset == from_tensors}")

# %%
# Mistakes are caught before training
# -----------------------------------
# A model whose output width is not the number of classes (here a torchvision-style default of 1000),
# labels outside ``[0, num_classes)``, items that are not ``(input, label)`` pairs or inputs of different
# shapes get one line naming the problem, before any training starts.
try:
    self_distill(lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 1000)), train_set, num_classes=10,
                 training=TrainSpec(steps=10), device="cpu")
except ValueError as err:
    print(err)

# %%
# The per-seed numbers are in ``result.rows`` (one dict per seed and round); ``result.save_csv(path)``
# writes them as ``rounds.csv``, the file every plot of :mod:`selfdistill.nn.plots` reads.
print(result.rows[0])
