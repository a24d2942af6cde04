"""The speed switches (bf16 autocast, channels_last, torch.compile): each one runs a tiny chain on the CPU
and agrees with the default path; the config section and the fingerprint handle them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from selfdistill.experiments.config import config_from_dict, result_settings
from selfdistill.nn import TrainSpec, load_data, self_distill
from selfdistill.nn.chain import ChainSpec, spec_settings

SPEC = dict(lr=3e-3, batch_size=32, steps=60)


@pytest.fixture(scope="module")
def data():
    return load_data("digits", subset=300)


class SmallCNN(nn.Module):
    """Convolutions (where channels_last matters) and a record of the dtypes its layers computed in."""

    dtypes: list = []

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten()
        )
        self.head = nn.Linear(8 * 64, 10)

    def forward(self, x):
        hidden = self.features(x)
        type(self).dtypes.append((torch.is_grad_enabled(), hidden.dtype, x.is_contiguous(
            memory_format=torch.channels_last)))  # fmt: skip
        return self.head(hidden)


def _chain(data, **switches):
    return self_distill(
        SmallCNN, data, training=TrainSpec(**SPEC, **switches), rounds=2, seeds=(0, 1), device="cpu"
    )


@pytest.fixture(scope="module")
def reference(data):
    return _chain(data)


def test_channels_last_agrees_with_the_default_layout(data, reference):
    """Measured on this CPU: losses agree to 2e-5 after two rounds of 60 Adam steps (round 0: 1e-8); the
    layout changes only the order of float operations, whose differences the training amplifies a little."""
    SmallCNN.dtypes = []
    result = _chain(data, channels_last=True)
    assert all(channels_last for _, _, channels_last in SmallCNN.dtypes)  # every batch, train and eval
    for a, b in zip(reference.rows, result.rows, strict=True):
        for column in ("train_loss_original", "target_loss", "val_loss", "test_loss"):
            assert b[column] == pytest.approx(a[column], abs=1e-4), column
        for column in ("train_acc_original", "val_acc", "test_acc"):
            assert abs(b[column] - a[column]) <= 1.5 / 144, column  # at most one example may flip


def test_bf16_autocast_trains_in_bf16_evaluates_in_float32_and_agrees(data, reference):
    """bf16 keeps 8 bits of mantissa (relative rounding 2^-9, about 0.2 %) in the forward pass; the
    trajectory drifts like a small perturbation of the weights. Measured on this CPU: test accuracy within
    one example (1/360) of float32 per seed and round, test loss within 0.3 %. The tolerance, 2 points of
    accuracy and 5 % of loss, is the spread between seeds of this tiny model (about 2 points), far below
    what a broken cast would cost (chance is 10 %)."""
    SmallCNN.dtypes = []
    result = _chain(data, bf16=True)
    training_dtypes = {dtype for grad, dtype, _ in SmallCNN.dtypes if grad}
    eval_dtypes = {dtype for grad, dtype, _ in SmallCNN.dtypes if not grad}
    assert training_dtypes == {torch.bfloat16} and eval_dtypes == {torch.float32}
    for a, b in zip(reference.rows, result.rows, strict=True):
        assert all(math.isfinite(b[c]) for c in ("train_loss_original", "target_loss", "test_loss"))
        assert abs(b["test_acc"] - a["test_acc"]) <= 0.02
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=0.05)


def test_compile_switch_compiles_the_training_forward(data, monkeypatch):
    """Wiring only (compiling takes tens of seconds here): torch.compile receives the model being trained,
    once per round, and the chain runs with what it returns."""
    compiled = []

    def fake_compile(model, *args, **kwargs):
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    result = self_distill(
        SmallCNN,
        data,
        training=TrainSpec(lr=3e-3, batch_size=32, steps=5, compile=True),
        rounds=2,
        device="cpu",
    )
    assert len(compiled) == 2 and all(isinstance(m, SmallCNN) for m in compiled)
    assert len(result.rows) == 2


def _compile_works() -> bool:
    try:
        torch.compile(nn.Linear(2, 2))(torch.zeros(1, 2))
        return True
    except Exception:  # no compiler toolchain, unsupported platform
        return False


@pytest.mark.slow
def test_compiled_chain_gives_the_eager_numbers(data):
    """torch.compile for real (about 25 s for a tiny MLP on this CPU); skipped where it cannot compile."""
    if not hasattr(torch, "compile") or not _compile_works():
        pytest.skip("torch.compile is unavailable here")

    def mlp():
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    spec = dict(lr=3e-3, batch_size=32, steps=30)
    eager = self_distill(mlp, data, training=TrainSpec(**spec), rounds=2, device="cpu")
    compiled = self_distill(mlp, data, training=TrainSpec(**spec, compile=True), rounds=2, device="cpu")
    for a, b in zip(eager.rows, compiled.rows, strict=True):
        assert b["test_loss"] == pytest.approx(a["test_loss"], abs=1e-5)
        assert b["test_acc"] == pytest.approx(a["test_acc"], abs=1.5 / 360)


def test_switches_are_validated_and_fingerprinted_only_when_on():
    with pytest.raises(ValueError, match="bf16 must be True or False"):
        TrainSpec(steps=1, bf16="yes")
    off = spec_settings(ChainSpec(rounds=1, seeds=(0,), train=TrainSpec(steps=1)))
    assert not {"bf16", "channels_last", "compile"} & set(off["train"])  # older fingerprints unchanged
    on = spec_settings(ChainSpec(rounds=1, seeds=(0,), train=TrainSpec(steps=1, bf16=True)))
    assert on["train"]["bf16"] is True


def test_the_config_section_reaches_the_training_spec():
    raw = {
        "name": "x",
        "data": {"name": "digits"},
        "model": {"name": "mlp"},
        "loss": {"name": "l2"},
        "optimizer": {"steps": 5},
    }
    plain = config_from_dict(raw)
    assert "performance" not in plain.to_dict()  # absent when off: the fingerprint of older runs holds
    assert not any(key.startswith("performance") for key in result_settings(plain))
    switched = config_from_dict({**raw, "performance": {"bf16": True, "channels_last": True}})
    spec = switched.train_spec()
    assert (spec.bf16, spec.channels_last, spec.compile) == (True, True, False)
    assert switched.to_dict()["performance"] == {"bf16": True, "channels_last": True, "compile": False}
    assert result_settings(switched)["performance.bf16"] is True
    with pytest.raises(ValueError, match="performance: unknown key 'fp16'"):
        config_from_dict({**raw, "performance": {"fp16": True}})
