"""Self-distillation chains: the invariants of a correct chain and the recorded numbers, checked by hand."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from selfdistill.nn.chain import (
    ROUND_COLUMNS,
    ChainHooks,
    ChainSpec,
    NeuralChainResult,
    checkpoint_path,
    derive_seed,
    fresh_model,
    frozen_teacher,
    run_chain,
)
from selfdistill.nn.data import load_data
from selfdistill.nn.losses import build_loss
from selfdistill.nn.training import TrainSpec


@pytest.fixture(scope="module")
def data():
    return load_data("digits", subset=200)


class Recorder(nn.Module):
    """A small MLP that counts forward passes made by a FROZEN copy (the teacher)."""

    teacher_calls = 0
    no_grad_rows = 0  # rows seen by any no-grad forward pass (evaluation and teacher outputs)

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        if not any(p.requires_grad for p in self.parameters()):
            type(self).teacher_calls += 1
        if not torch.is_grad_enabled():
            type(self).no_grad_rows += x.shape[0]
        return self.net(x)


def _spec(rounds=3, seeds=(0,), steps=30, xi=1.0):
    return ChainSpec(
        rounds=rounds, seeds=tuple(seeds), train=TrainSpec(lr=3e-3, batch_size=32, steps=steps), xi=xi
    )


def _np_softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _load(out, seed, round_index):
    model = Recorder()
    model.load_state_dict(
        torch.load(checkpoint_path(out, seed, round_index), weights_only=True)["state_dict"]
    )
    return model.eval()


def _np_logits(model, x):
    with torch.no_grad():
        return model(x).double().numpy()


def test_rounds_csv_columns_and_numbers_recomputed_from_checkpoints(data, tmp_path):
    """Every metric of rounds.csv equals a NumPy recomputation from the saved weights; round t's targets are
    round t-1's softmax (L2 loss: sum over classes, mean over examples)."""
    result = run_chain(data, Recorder, build_loss("l2"), _spec(rounds=3, seeds=(0, 1)), out_dir=tmp_path)
    with open(tmp_path / "rounds.csv") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames[: len(ROUND_COLUMNS)]) == ROUND_COLUMNS
        rows = list(reader)
    assert [(int(r["seed"]), int(r["round"])) for r in rows] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 1),
        (1, 2),
    ]
    y = data.y_train.numpy()
    onehot = np.eye(10)[y]
    for row in rows:
        seed, t = int(row["seed"]), int(row["round"])
        probs = _np_softmax(_np_logits(_load(tmp_path, seed, t), data.x_train))
        targets = onehot if t == 0 else _np_softmax(_np_logits(_load(tmp_path, seed, t - 1), data.x_train))
        assert float(row["train_acc_original"]) == pytest.approx((probs.argmax(1) == y).mean(), abs=1e-6)
        assert float(row["train_loss_original"]) == pytest.approx(
            ((probs - onehot) ** 2).sum(1).mean(), rel=1e-5
        )
        assert float(row["target_loss"]) == pytest.approx(
            ((probs - targets) ** 2).sum(1).mean(), rel=1e-4, abs=1e-7
        )
        test_probs = _np_softmax(_np_logits(_load(tmp_path, seed, t), data.x_test))
        assert float(row["test_acc"]) == pytest.approx(
            (test_probs.argmax(1) == data.y_test.numpy()).mean(), abs=1e-6
        )
        assert int(row["steps"]) == 30
        assert int(row["student_seed"]) == derive_seed(seed, t, "init")
    assert len(result.rows) == 6


def test_each_round_is_a_fresh_student_and_the_teacher_is_frozen(data):
    inits = []

    class Hooks(ChainHooks):
        pass

    def factory():
        model = Recorder()
        inits.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
        return model

    Recorder.teacher_calls = Recorder.no_grad_rows = 0
    run_chain(data, factory, build_loss("l2"), _spec(rounds=3), hooks=Hooks())
    # the first model is the start-of-run check of the output width (one forward pass on 2 inputs)
    assert len(inits) == 4
    inits = inits[1:]
    assert not torch.equal(inits[0], inits[1]) and not torch.equal(inits[1], inits[2])
    # the initialization is the one of the recorded seed, independent of the chain's history
    expected = fresh_model(Recorder, derive_seed(0, 2, "init"))
    assert torch.equal(inits[2], torch.cat([p.detach().flatten() for p in expected.parameters()]))
    # teacher outputs are cached: the finished student's evaluation pass over x_train is the next round's
    # teacher output, so the frozen copy never runs again, and each round makes exactly one no-grad pass
    # over train, val and test
    assert Recorder.teacher_calls == 0
    assert Recorder.no_grad_rows == 2 + 3 * (data.num_train + data.num_val + data.num_test)

    student = Recorder().train()
    teacher = frozen_teacher(student)
    assert teacher is not student and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    assert all(
        a.data_ptr() != b.data_ptr() for a, b in zip(teacher.parameters(), student.parameters(), strict=True)
    )


def test_with_augmentation_the_teacher_sees_each_augmented_batch(data):
    from dataclasses import replace

    augmented = replace(data, augment=lambda x, g: x + 0.01 * torch.randn(x.shape, generator=g))
    Recorder.teacher_calls = 0
    run_chain(augmented, Recorder, build_loss("l2"), _spec(rounds=2, steps=12))
    # round 1: the teacher runs on each of the 12 augmented batches; its un-augmented outputs (for the
    # target loss) come from round 0's evaluation pass
    assert Recorder.teacher_calls == 12


def test_ground_truth_mixing_xi(data, tmp_path):
    xi = 0.3
    run_chain(data, Recorder, build_loss("soft_ce"), _spec(rounds=2, xi=xi), out_dir=tmp_path)
    with open(tmp_path / "rounds.csv") as handle:
        row = list(csv.DictReader(handle))[1]
    onehot = np.eye(10)[data.y_train.numpy()]
    teacher = _np_softmax(_np_logits(_load(tmp_path, 0, 0), data.x_train))
    targets = xi * teacher + (1 - xi) * onehot
    log_probs = np.log(_np_softmax(_np_logits(_load(tmp_path, 0, 1), data.x_train)))
    assert float(row["target_loss"]) == pytest.approx(-(targets * log_probs).sum(1).mean(), rel=1e-5)


def test_hard_label_variant_trains_on_the_teachers_argmax(data, tmp_path):
    run_chain(data, Recorder, build_loss("hard_ce"), _spec(rounds=2), out_dir=tmp_path)
    with open(tmp_path / "rounds.csv") as handle:
        row = list(csv.DictReader(handle))[1]
    hard = _np_logits(_load(tmp_path, 0, 0), data.x_train).argmax(1)
    log_probs = np.log(_np_softmax(_np_logits(_load(tmp_path, 0, 1), data.x_train)))
    assert float(row["target_loss"]) == pytest.approx(-log_probs[np.arange(len(hard)), hard].mean(), rel=1e-5)


def _row(seed, t, val, test):
    return {
        "seed": seed,
        "round": t,
        "train_acc_original": 1.0,
        "train_loss_original": 0.1,
        "target_loss": 0.1,
        "val_acc": val,
        "test_acc": test,
        "val_loss": 1 - val,
        "test_loss": 1 - test,
        "steps": 1,
        "seconds": 0.1,
        "train_acc_clean": 1.0,
        "student_seed": 0,
        "batch_seed": 0,
    }


def test_best_round_uses_validation_never_test():
    rows = [
        _row(0, 0, 0.80, 0.99),
        _row(0, 1, 0.90, 0.50),
        _row(0, 2, 0.85, 0.60),
        _row(1, 0, 0.70, 0.99),
        _row(1, 1, 0.80, 0.50),
        _row(1, 2, 0.95, 0.60),
    ]
    best = NeuralChainResult(rows).best_round_by_val()
    # mean val per round: 0.75, 0.85, 0.90 -> round 2 (mean test would have picked round 0: 0.99)
    assert best["round"] == 2
    assert best["test_acc_mean"] == pytest.approx(0.60)
    assert best["per_seed_best_round"] == {"0": 1, "1": 2}


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="rounds"):
        _spec(rounds=0)
    with pytest.raises(ValueError, match="distinct"):
        _spec(seeds=(1, 1))


def test_one_name_per_meaning_and_no_dead_code():
    """The network chain's result is NeuralChainResult; ChainResult is the kernel's alone; the unused
    rounds.csv reader and summary writer are gone."""
    import selfdistill.nn.chain as chain_module
    from selfdistill.kernel import ChainResult as KernelChainResult

    assert not hasattr(chain_module, "ChainResult") and not hasattr(chain_module, "load_rounds_csv")
    assert not hasattr(NeuralChainResult, "save_summary")
    assert KernelChainResult is not NeuralChainResult


def test_one_check_probabilities_contract():
    from selfdistill.nn import losses
    from selfdistill.ptloss import proxy

    assert losses.check_probabilities is proxy.check_probabilities
