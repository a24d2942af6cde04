"""The one training loop: determinism, batching, weight decay semantics, stop condition, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from selfdistill.nn.training import (
    BatchStream,
    TrainSpec,
    evaluate,
    predict_probs,
    train,
)


def _problem(n=60, d=5, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    labels = torch.randint(0, c, (n,), generator=g)
    targets = torch.nn.functional.one_hot(labels, c).float()
    return x, labels, targets


def _model(seed=0, d=5, c=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, c))


def _soft_ce(logits, probs):
    return -(probs * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_same_seed_same_weights_different_seed_different_weights():
    x, _, y = _problem()
    spec = TrainSpec(lr=1e-2, batch_size=8, steps=25)
    runs = []
    for data_seed in (1, 1, 2):
        model = _model()
        train(model, x, y, _soft_ce, spec, generator=torch.Generator().manual_seed(data_seed))
        runs.append(_flat(model))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_batch_stream_is_a_stream_of_permutations():
    stream = BatchStream(10, 3, torch.Generator().manual_seed(0))
    drawn = torch.cat([stream.next() for _ in range(10)])  # 30 indices = 3 full permutations
    for epoch in range(3):
        assert sorted(drawn[10 * epoch : 10 * (epoch + 1)].tolist()) == list(range(10))
    assert BatchStream(4, 100, torch.Generator()).next().numel() == 4  # batch capped at N


def test_epoch_budget_converts_to_steps():
    assert TrainSpec(batch_size=16, epochs=2.5).total_steps(100) == math.ceil(2.5 * 100 / 16)
    assert TrainSpec(batch_size=16, steps=7).total_steps(100) == 7
    x, _, y = _problem(n=40)
    result = train(_model(), x, y, _soft_ce, TrainSpec(batch_size=16, epochs=2), generator=torch.Generator())
    assert result.steps == 5


def test_training_fits_a_separable_problem():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(80, 2, generator=g)
    labels = (x[:, 0] > 0).long()
    x[:, 0] += 0.5 * (2 * labels - 1)  # a margin of 1 between the classes
    model = nn.Linear(2, 2)
    train(
        model,
        x,
        torch.nn.functional.one_hot(labels, 2).float(),
        _soft_ce,
        TrainSpec(lr=0.1, batch_size=16, steps=200),
        generator=g,
    )
    assert evaluate(model, x, labels, _soft_ce).accuracy == 1.0


def test_coupled_weight_decay_equals_l2_penalty_added_to_the_loss():
    """weight_decay_mode='l2' (the paper's 'weight decay added to the loss') == loss + wd/2 * ||w||^2."""
    x, _, y = _problem()
    wd = 0.05
    for optimizer in ("adam", "sgd"):
        decayed = _model()
        train(
            decayed,
            x,
            y,
            _soft_ce,
            TrainSpec(optimizer=optimizer, lr=1e-2, weight_decay=wd, batch_size=8, steps=20),
            generator=torch.Generator().manual_seed(0),
        )
        penalized = _model()

        def loss_with_penalty(logits, probs, model=penalized):
            return _soft_ce(logits, probs) + 0.5 * wd * sum((p**2).sum() for p in model.parameters())

        train(
            penalized,
            x,
            y,
            loss_with_penalty,
            TrainSpec(optimizer=optimizer, lr=1e-2, batch_size=8, steps=20),
            generator=torch.Generator().manual_seed(0),
        )
        torch.testing.assert_close(_flat(decayed), _flat(penalized), rtol=1e-5, atol=1e-6)


def test_decoupled_weight_decay_is_adamw():
    x, _, y = _problem()
    ours = _model()
    train(
        ours,
        x,
        y,
        _soft_ce,
        TrainSpec(lr=1e-2, weight_decay=0.1, weight_decay_mode="decoupled", batch_size=8, steps=10),
        generator=torch.Generator().manual_seed(0),
    )
    # hand-written AdamW loop with the same batches
    ref = _model()
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.1)
    stream = BatchStream(x.shape[0], 8, torch.Generator().manual_seed(0))
    for _ in range(10):
        idx = stream.next()
        loss = _soft_ce(ref(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(_flat(ours), _flat(ref), rtol=0, atol=0)
    with pytest.raises(ValueError, match="decoupled"):
        TrainSpec(optimizer="sgd", weight_decay_mode="decoupled", steps=1)


def test_stop_condition_checked_every_k_steps_and_model_back_in_train_mode():
    x, _, y = _problem()
    seen = []

    def stop(state):
        seen.append((state.step, state.model.training))
        state.model.eval()  # the loop must put it back into train mode
        return state.step >= 12

    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.1), nn.Linear(8, 3))
    modes = []
    model.register_forward_pre_hook(lambda m, inp: modes.append(m.training))
    result = train(
        model,
        x,
        y,
        _soft_ce,
        TrainSpec(batch_size=8, steps=50, check_every=5),
        generator=torch.Generator(),
        stop_condition=stop,
    )
    assert [s for s, _ in seen] == [5, 10, 15]
    assert result.steps == 15 and result.stopped_early
    assert all(modes)  # every training forward ran in train mode


def test_callable_targets_receive_the_augmented_batch():
    x, labels, y = _problem()
    received = []

    def augment(batch, generator):
        return batch + torch.randn(batch.shape, generator=generator)

    def targets(x_batch, indices):
        received.append((x_batch.clone(), indices.clone()))
        return y[indices]

    train(
        _model(),
        x,
        targets,
        _soft_ce,
        TrainSpec(batch_size=8, steps=3),
        generator=torch.Generator(),
        augment=augment,
    )
    assert len(received) == 3
    for batch, indices in received:
        assert batch.shape == (8, 5)
        assert not torch.allclose(batch, x[indices])  # augmented, not the raw inputs


def test_evaluate_matches_a_hand_computation():
    model = nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model.bias.zero_()
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -2.0], [1.0, 1.5]])
    labels = torch.tensor([0, 1, 2, 0])
    logits = x.numpy() @ model.weight.detach().numpy().T
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    onehot = np.eye(3)[labels.numpy()]
    expected_l2 = ((probs - onehot) ** 2).sum(axis=1).mean()
    expected_acc = (logits.argmax(axis=1) == labels.numpy()).mean()

    def l2(logits_t, p):
        return ((torch.softmax(logits_t, 1) - p) ** 2).sum(1).mean()

    result = evaluate(model, x, labels, l2, batch_size=3)  # chunked evaluation
    assert result.accuracy == pytest.approx(expected_acc)
    assert result.loss == pytest.approx(expected_l2, rel=1e-6)
    np.testing.assert_allclose(predict_probs(model, x).numpy(), probs, rtol=1e-5)
    soft = torch.full((4, 3), 1 / 3)
    expected_soft = ((probs - 1 / 3) ** 2).sum(axis=1).mean()
    assert evaluate(model, x, labels, l2, targets=soft).loss == pytest.approx(expected_soft, rel=1e-6)


def test_bad_inputs_get_clear_errors():
    x, _, y = _problem()
    with pytest.raises(ValueError, match="targets must have shape"):
        train(_model(), x, y[:10], _soft_ce, TrainSpec(steps=1), generator=torch.Generator())
    with pytest.raises(ValueError, match="NaN"):
        bad = y.clone()
        bad[0, 0] = float("nan")
        train(_model(), x, bad, _soft_ce, TrainSpec(steps=1), generator=torch.Generator())
    with pytest.raises(ValueError, match="exactly one of steps or epochs"):
        TrainSpec(steps=10, epochs=1)
    with pytest.raises(ValueError, match="optimizer must be one of adam, sgd"):
        TrainSpec(optimizer="rmsprop", steps=1)
    with pytest.raises(ValueError, match="diverged"):
        train(
            _model(),
            x * 1e30,
            y,
            lambda lg, p: (lg * 1e30).pow(2).sum(),
            TrainSpec(lr=1e3, steps=3),
            generator=torch.Generator(),
        )
