"""Bad input is refused at the start of a run, before any training, with one line that names the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

import selfdistill.nn.chain as chain_module
from selfdistill.nn import DatasetSplits, TrainSpec, as_splits, distill, self_distill

SPEC = TrainSpec(batch_size=8, steps=3)


class Items(Dataset):
    """A Dataset returning whatever ``item(i)`` says."""

    def __init__(self, n, item):
        self.n, self.item = n, item

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.item(i)


def good(i):
    return torch.full((4,), float(i)), i % 3


def mlp(outputs=3):
    return lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, outputs))


@pytest.fixture
def no_training(monkeypatch):
    """Any call of the training loop fails the test: the errors must come before training."""

    def train(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(chain_module, "train", train)


def _error(train, *, model=None, val=None, num_classes=3, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        self_distill(
            model or mlp(), train, val, num_classes=num_classes, training=SPEC, device="cpu", **kwargs
        )
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        (lambda i: torch.zeros(4), "train dataset: item 0 is a Tensor, not an (input, label) pair"),
        (lambda i: (torch.zeros(4), 0, "x") if i == 5 else good(i), "item 5 is a tuple of length 3, not an"),
        (lambda i: ([0.0] * 4, 1), "item 0 has an input of type builtins.list; inputs must be tensors"),
        (lambda i: (torch.zeros(4), 1.0), "item 0 has label 1.0 (float), not an integer class index"),
        (lambda i: (torch.zeros(4), 7) if i == 9 else good(i), "item 9 has label 7, outside [0, 3)"),
        (lambda i: (torch.zeros(4), -1) if i == 2 else good(i), "item 2 has label -1, outside [0, 3)"),
        (lambda i: (torch.zeros(5), 0) if i == 11 else good(i),
         "item 11 has an input of shape (5,) but item 0 has (4,); every input must have the same shape"),
        (lambda i: 1 / 0 if i == 4 else good(i), "item 4 could not be read (ZeroDivisionError"),
    ],
)  # fmt: skip
def test_bad_dataset_items_are_named_by_index(item, expected, no_training):
    message = _error(Items(16, item))
    assert message.startswith("train dataset: item ") and expected in message, message


def test_bad_items_are_found_with_worker_processes_too(no_training):
    message = _error(Items(40, lambda i: (torch.zeros(4), 3) if i == 33 else good(i)), num_workers=2)
    assert "train dataset: item 33 has label 3, outside [0, 3)" in message


def test_bad_validation_items_and_shapes_across_splits(no_training):
    assert "val dataset: item 1 has label 5" in _error(
        Items(16, good), val=Items(4, lambda i: (torch.zeros(4), 5) if i == 1 else good(i))
    )
    message = _error(Items(16, good), val=Items(4, lambda i: (torch.zeros(6), 0)))
    assert "val dataset has inputs of shape (6,) but the training inputs have (4,)" in message


def test_bad_tensor_labels_and_shapes(no_training):
    x, y = torch.randn(16, 4), torch.arange(16) % 3
    assert "train labels[1] = 3 is outside [0, 3)" in _error((x, torch.where(y == 1, 3, y)))
    assert "train labels must hold integer class indices; got dtype torch.float32" in _error((x, y.float()))
    assert "val inputs have shape (5,) per example but the training inputs have (4,)" in _error(
        (x, y), val=(torch.randn(3, 5), y[:3])
    )
    assert "val: 3 inputs but labels of shape (2,)" in _error((x, y), val=(x[:3], y[:2]))
    assert "num_classes: give the number of classes" in _error((x, y), num_classes=None)


def test_a_model_of_the_wrong_width_is_refused_after_one_forward_pass(no_training):
    x, y = torch.randn(16, 4), torch.arange(16) % 3
    message = _error((x, y), model=mlp(outputs=1000))
    assert (
        "outputs of shape (2, 1000) for a batch of 2, i.e. 1000 values per example, but num_classes is 3"
        in (message)
    )
    assert "num_classes=3" in message.split(";")[-1]
    message = _error((x, y), model=lambda: nn.Linear(5, 3))
    assert message.startswith("model: the forward pass on 2 training inputs (batch shape (2, 4)) failed")
    message = _error((x, y), model=lambda: "not a model")
    assert "the factory returned a str, not a torch.nn.Module" in message
    # the same on the Dataset path
    assert "1000 values per example" in _error(Items(16, good), model=mlp(outputs=1000))


def test_distill_checks_teacher_and_student_widths(no_training):
    x, y = torch.randn(16, 4), torch.arange(16) % 3
    with pytest.raises(ValueError, match="teacher: outputs of shape \\(2, 5\\)"):
        distill(mlp(5)(), mlp(), (x, y), num_classes=3, training=SPEC, device="cpu")
    with pytest.raises(ValueError, match="student: outputs of shape \\(2, 4\\)"):
        distill(mlp()(), mlp(4), (x, y), num_classes=3, training=SPEC, device="cpu")


def test_other_bad_arguments():
    x, y = torch.randn(16, 4), torch.arange(16) % 3

    class Stream(IterableDataset):
        def __iter__(self):
            yield from (good(i) for i in range(4))

    with pytest.raises(ValueError, match="an IterableDataset has no indices"):
        as_splits(Stream(), num_classes=3)
    with pytest.raises(ValueError, match="expected a map-style Dataset"):
        as_splits(42, num_classes=3)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        DatasetSplits(train=Items(4, good), num_classes=0)
    with pytest.raises(ValueError, match="augment works with tensors"):
        as_splits(Items(4, good), num_classes=3, augment=lambda b, g: b)
    with pytest.raises(ValueError, match="training must be a TrainSpec"):
        self_distill(mlp(), (x, y), num_classes=3, training={"steps": 3}, device="cpu")
    with pytest.raises(ValueError, match="xi=1.5 cannot be used with loss 'kl'"):
        self_distill(mlp(), (x, y), num_classes=3, training=SPEC, loss="kl", xi=1.5, device="cpu")
    with pytest.raises(ValueError, match="train_eval has 3 items but train has 4"):
        self_distill(
            mlp(), Items(4, good), num_classes=3, training=SPEC, train_eval=Items(3, good), device="cpu"
        )


def test_numpy_arrays_are_accepted_and_float64_inputs_become_float32():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)), np.arange(16) % 3
    splits = as_splits((x, y), (x[:4], y[:4]), num_classes=3)
    assert splits.x_train.dtype == torch.float32 and splits.y_train.dtype == torch.int64
    result = self_distill(mlp(), (x, y), num_classes=3, training=SPEC, rounds=1, device="cpu")
    assert len(result.rows) == 1
