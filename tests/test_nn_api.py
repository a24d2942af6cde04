"""The Python API on your own model and data: Datasets through DataLoaders give the tensor path's numbers,
resume stays exact, the result prints, plots and names its best round; distillation runs the same way."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import selfdistill.nn.chain as chain_module
from selfdistill.nn import (
    DatasetSplits,
    NeuralChainResult,
    TrainSpec,
    as_splits,
    build_method,
    distill,
    load_data,
    run_chain,
    self_distill,
)
from selfdistill.nn.chain import ChainSpec, checkpoint_path, train_round
from selfdistill.nn.losses import build_loss

SPEC = TrainSpec(lr=3e-3, batch_size=32, steps=25)
COMPARED = ("train_acc_original", "train_loss_original", "target_loss", "val_acc", "test_acc", "val_loss",
            "test_loss", "train_acc_clean", "steps", "student_seed", "batch_seed")  # fmt: skip


@pytest.fixture(scope="module")
def data():
    return load_data("digits", subset=150, label_noise=0.2)


class Pairs(Dataset):
    """A user's map-style Dataset: ``(input tensor, int label)`` items; counts the items read."""

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.reads = 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.reads += 1
        return self.x[i], int(self.y[i])


class Noisy(Pairs):
    """Random transforms (augmentation): Gaussian noise from the global torch RNG on each read."""

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x + 0.05 * torch.randn(x.shape), y


class Net(nn.Module):
    teacher_calls = 0

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        if not any(p.requires_grad for p in self.parameters()):
            type(self).teacher_calls += 1
        return self.net(x)


def _datasets(data, **options):
    return DatasetSplits(
        train=Pairs(data.x_train, data.y_train),
        val=Pairs(data.x_val, data.y_val),
        test=Pairs(data.x_test, data.y_test),
        num_classes=10,
        clean_train_labels=data.clean_y_train,
        **options,
    )


def _rows(result):
    return [{k: r[k] for k in ("seed", "round", *COMPARED)} for r in result.rows]


def _spec(rounds=3, seeds=(0,), xi=1.0):
    return ChainSpec(rounds=rounds, seeds=seeds, train=SPEC, xi=xi)


def test_datasets_give_exactly_the_numbers_of_the_tensor_path(data, tmp_path):
    """Same examples, same seeds: every number of every round, and every saved weight, is identical."""
    loss = build_loss("l2")
    tensors = run_chain(data, Net, loss, _spec(seeds=(0, 1), xi=0.7), out_dir=tmp_path / "t")
    streamed = run_chain(_datasets(data), Net, loss, _spec(seeds=(0, 1), xi=0.7), out_dir=tmp_path / "d")
    assert _rows(streamed) == _rows(tensors)
    assert any(r["train_acc_clean"] != r["train_acc_original"] for r in tensors.rows)  # the noise is seen
    for seed in (0, 1):
        for t in range(3):
            a = torch.load(checkpoint_path(tmp_path / "t", seed, t), weights_only=True)["weights_sha256"]
            b = torch.load(checkpoint_path(tmp_path / "d", seed, t), weights_only=True)["weights_sha256"]
            assert a == b


def test_worker_processes_and_pinned_memory_give_the_same_numbers(data):
    loss = build_loss("soft_ce")
    in_process = run_chain(_datasets(data), Net, loss, _spec(rounds=2))
    workers = run_chain(_datasets(data, num_workers=2, pin_memory=True), Net, loss, _spec(rounds=2))
    assert _rows(workers) == _rows(in_process)


def test_teacher_outputs_are_computed_once_per_round_and_looked_up_by_index(data):
    """Without augmentation the frozen teacher never runs: its outputs are the previous round's evaluation
    pass over the training items (read once per round for it, plus the batches and the start-up checks)."""
    splits = _datasets(data)
    Net.teacher_calls = 0
    spec = _spec(rounds=2)
    run_chain(splits, Net, build_loss("l2"), spec)
    assert Net.teacher_calls == 0
    n, steps = data.num_train, SPEC.steps
    # start: one scan of every item, item 0 read 3 times (random transforms?), 2 items for the model check;
    # per round: the batches and ONE evaluation pass (the next round's teacher outputs)
    assert splits.train.reads == n + 3 + 2 + 2 * (steps * SPEC.batch_size + n)


def test_resume_on_the_dataset_path_equals_an_uninterrupted_run(data, tmp_path, monkeypatch):
    loss = build_loss("l2")
    reference = run_chain(_datasets(data), Net, loss, _spec(seeds=(0, 1)), out_dir=tmp_path / "ref")

    real_train = chain_module.train
    calls = {"n": 0}

    def killed_in_fifth_round(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return real_train(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(chain_module, "train", killed_in_fifth_round)
        with pytest.raises(KeyboardInterrupt):
            run_chain(_datasets(data), Net, loss, _spec(seeds=(0, 1)), out_dir=tmp_path / "run")
    assert len(list((tmp_path / "run" / "checkpoints").rglob("*.pt"))) == 4
    trained = {"n": 0}

    def counting(*args, **kwargs):
        trained["n"] += 1
        return real_train(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(chain_module, "train", counting)
        resumed = run_chain(_datasets(data), Net, loss, _spec(seeds=(0, 1)), out_dir=tmp_path / "run")
    assert trained["n"] == 2  # only seed 1's rounds 1 and 2
    assert _rows(resumed) == _rows(reference)
    with open(tmp_path / "run" / "rounds.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6


def test_random_transforms_need_train_eval_and_then_the_teacher_sees_each_batch(data):
    noisy = Noisy(data.x_train, data.y_train)
    with pytest.raises(ValueError, match="different input each time item 0 is read.*train_eval"):
        run_chain(DatasetSplits(train=noisy, num_classes=10), Net, build_loss("l2"), _spec(rounds=2))
    Net.teacher_calls = 0
    splits = DatasetSplits(train=noisy, train_eval=Pairs(data.x_train, data.y_train), num_classes=10)
    result = run_chain(splits, Net, build_loss("l2"), _spec(rounds=2))
    assert Net.teacher_calls == SPEC.steps  # round 1: the teacher runs on each augmented batch
    assert len(result.rows) == 2


def test_self_distill_on_tensor_pairs_equals_the_chain_on_the_same_splits(data):
    result = self_distill(
        Net,
        (data.x_train, data.y_train),
        (data.x_val, data.y_val),
        (data.x_test, data.y_test),
        num_classes=10,
        rounds=2,
        loss="soft_ce",
        training=SPEC,
        device="cpu",
    )
    reference = run_chain(data, Net, build_loss("soft_ce"), _spec(rounds=2))
    keep = [c for c in COMPARED if c != "train_acc_clean"]  # the pairs carry no clean labels
    assert [[r[c] for c in keep] for r in result.rows] == [[r[c] for c in keep] for r in reference.rows]
    # a Dataset and tensor pairs mixed: everything is read through DataLoaders, same numbers
    mixed = self_distill(
        Net,
        Pairs(data.x_train, data.y_train),
        (data.x_val, data.y_val),
        (data.x_test, data.y_test),
        num_classes=10,
        rounds=2,
        loss="soft_ce",
        training=SPEC,
        device="cpu",
    )
    assert [[r[c] for c in keep] for r in mixed.rows] == [[r[c] for c in keep] for r in reference.rows]


def test_the_result_prints_plots_and_names_the_best_round_on_validation(data):
    result = self_distill(Net, data, training=SPEC, rounds=3, seeds=2, device="cpu")
    assert isinstance(result, NeuralChainResult)
    by_round = {e["round"]: e["val_acc_mean"] for e in result.per_round()}
    assert by_round[result.best_round] == max(by_round.values())  # validation only, never test
    text = str(result)
    assert f"best round by validation accuracy: {result.best_round}" in text
    assert text.count("\n") >= 5  # header, rule, three rounds, the best round
    fig = result.plot(title="digits")
    assert len(fig.axes) == 2
    assert {line.get_label() for line in fig.axes[0].get_lines()} >= {"validation", "test"}
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_without_validation_there_is_no_best_round(data):
    result = self_distill(
        Net, (data.x_train, data.y_train), num_classes=10, training=SPEC, rounds=2, device="cpu"
    )
    assert result.best_round is None
    assert all(r["val_acc"] != r["val_acc"] for r in result.rows)  # NaN


def _teacher(data):
    model, _ = train_round(Net, data.x_train, torch.nn.functional.one_hot(data.y_train, 10).float(),
                           build_loss("soft_ce"), TrainSpec(lr=3e-3, batch_size=32, steps=60), seed=7,
                           round_index=0)  # fmt: skip
    return model


def test_distill_trains_one_student_per_method_and_seed_as_train_round_does(data):
    teacher = _teacher(data)
    methods = [build_method("kl"), build_method("kd", temperature=4.0)]
    splits = as_splits((data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test),
                       num_classes=10)  # fmt: skip
    result = distill(teacher, Net, splits, training=SPEC, methods=methods, seeds=2, device="cpu")
    assert [(r["method"], r["seed"]) for r in result.rows] == [
        ("kl", 0), ("kl", 1), ("kd_T4", 0), ("kd_T4", 1)
    ]  # fmt: skip
    with torch.no_grad():
        teacher_probs = torch.softmax(teacher(data.x_train), dim=1)
        assert result.teacher["test_acc"] == pytest.approx(
            float((teacher(data.x_test).argmax(1) == data.y_test).float().mean())
        )
    # the kd_T4 student of seed 1, trained by hand: the same accuracy
    student, _ = train_round(Net, data.x_train, teacher_probs, methods[1].loss, SPEC, seed=1, round_index=1)
    with torch.no_grad():
        by_hand = float((student(data.x_test).argmax(1) == data.y_test).float().mean())
    assert result.rows[3]["test_acc"] == pytest.approx(by_hand, abs=1e-7)
    assert result.best_method in ("kl", "kd_T4")
    assert "kd_T4" in str(result) and "teacher:" in str(result)
    fig = result.plot()
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_distill_on_datasets_equals_distill_on_tensors(data):
    teacher = _teacher(data)
    on_tensors = distill(teacher, Net, data, training=SPEC, methods="kl", device="cpu")
    on_datasets = distill(teacher, Net, _datasets(data), training=SPEC, methods="kl", device="cpu")
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in on_datasets.rows] == [
        {k: v for k, v in r.items() if k not in drop} for r in on_tensors.rows
    ]
    assert on_datasets.teacher == on_tensors.teacher
