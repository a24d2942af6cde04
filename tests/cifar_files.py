"""Small CIFAR-10/100 folders written in the official format (Python-2 pickles), for tests that read CIFAR."""

from __future__ import annotations

import pickle

import numpy as np


def dump(path, obj):
    # The official files are Python-2 pickles read with encoding="latin1", which yields str keys.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def fake_cifar10(root, per_batch=8, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        images.append(x)
        labels += y
        dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "data": x, "labels": y})
    xt = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    yt = [int(v) for v in rng.integers(0, 10, size=n_test)]
    dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": xt, "labels": yt})
    dump(folder / "batches.meta", {"label_names": [f"class{k}" for k in range(10)], "num_vis": 3072})
    return np.concatenate(images), np.asarray(labels), xt, np.asarray(yt)


def fake_cifar100(root, n_train=40, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    x = rng.integers(0, 256, size=(n_train, 3072), dtype=np.uint8)
    y = [int(v) for v in rng.integers(0, 100, size=n_train)]
    xt = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    yt = [int(v) for v in rng.integers(0, 100, size=n_test)]
    dump(folder / "train", {"data": x, "fine_labels": y, "coarse_labels": [0] * n_train})
    dump(folder / "test", {"data": xt, "fine_labels": yt, "coarse_labels": [0] * n_test})
    dump(folder / "meta", {"fine_label_names": [f"c{k}" for k in range(100)], "coarse_label_names": []})
    return x, np.asarray(y), xt, np.asarray(yt)
