"""The NTK bridge: its loss and model against direct computations, and the whole pipeline against the one
case where the kernel chain must equal the network exactly (a model linear in its parameters)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from selfdistill.experiments import ntk_bridge
from selfdistill.experiments.ntk_bridge import (
    METHODS,
    BridgeSpec,
    CenteredLogitMSE,
    DisplacementModel,
    run_ntk_bridge,
)
from selfdistill.nn.models import build_model
from selfdistill.nn.ntk import empirical_ntk


def centered(a: np.ndarray) -> np.ndarray:
    return a - a.mean(axis=1, keepdims=True)


def test_centered_logit_mse_on_labels_and_on_a_teacher_softmax():
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    onehot = torch.nn.functional.one_hot(labels, 4).double()
    expected = np.mean(np.sum((centered(student.numpy()) - centered(onehot.numpy())) ** 2, axis=1))
    assert float(CenteredLogitMSE()(student, onehot)) == pytest.approx(expected, rel=1e-12)
    teacher_logits = torch.randn(6, 4, generator=gen, dtype=torch.float64) * 3
    probs = torch.softmax(teacher_logits, dim=1)
    expected = np.mean(np.sum((centered(student.numpy()) - centered(teacher_logits.numpy())) ** 2, axis=1))
    assert float(CenteredLogitMSE()(student, probs)) == pytest.approx(expected, rel=1e-10)


def test_centered_logit_mse_refuses_targets_that_are_neither_labels_nor_a_softmax():
    student = torch.zeros(2, 3)
    mixed = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])  # e.g. xi < 1 mixing with a saturated teacher
    with pytest.raises(ValueError, match="one-hot label rows or strictly positive"):
        CenteredLogitMSE()(student, mixed)
    with pytest.raises(ValueError, match="same shape"):
        CenteredLogitMSE()(student, torch.zeros(2, 4))


def test_displacement_model_starts_at_zero_and_has_the_base_ntk():
    torch.manual_seed(0)
    base = build_model("mlp", 3, (5,), hidden_sizes=(6,))
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    raw = DisplacementModel(base, center_outputs=False)
    assert torch.equal(raw(x), torch.zeros(7, 3))
    assert sum(p.numel() for p in raw.parameters() if p.requires_grad) == sum(
        p.numel() for p in base.parameters()
    )
    blocks = empirical_ntk(base, x, dtype=torch.float64, per_output=True)  # tested against autograd
    assert torch.allclose(empirical_ntk(raw, x, dtype=torch.float64, per_output=True), blocks, rtol=1e-12)
    # centered outputs: blocks P B P, and scaled outputs: s^2 B
    cent = DisplacementModel(base, output_scale=2.0)
    p = torch.eye(3, dtype=torch.float64) - 1.0 / 3
    expected = 4.0 * torch.einsum("ca,ijab,bd->ijcd", p, blocks, p)
    assert torch.allclose(empirical_ntk(cent, x, dtype=torch.float64, per_output=True), expected, rtol=1e-12)


def test_displacement_model_refuses_batchnorm_and_bad_scale():
    with pytest.raises(ValueError, match="without buffers"):
        DisplacementModel(build_model("cnn", 3, (1, 6, 6), channels=(2,)))
    with pytest.raises(ValueError, match="output_scale"):
        DisplacementModel(build_model("mlp", 3, (5,)), output_scale=0.0)


def test_bridge_spec_validation():
    with pytest.raises(ValueError, match="weight_decay must be > 0"):
        BridgeSpec(weight_decay=0.0)
    with pytest.raises(ValueError, match="rounds must be"):
        BridgeSpec(rounds=0)


#: a model linear in its parameters (no hidden layer): its NTK is exact along training, so the network
#: chain trained to convergence IS the fixed-alpha kernel chain; every conversion (centering, the C - 1
#: normalization, alpha = K wd / 2, softmax inversion of the teacher) must be right for the two to agree.
LINEAR_SPEC = BridgeSpec(n_train=60, hidden_sizes=(), weight_decay=0.2, lr=0.02, steps=400, rounds=3,
                         seeds=(0,), ntk_chunk_size=64)


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("linear")
    return out, run_ntk_bridge(out, LINEAR_SPEC, verbose=False)


def test_linear_model_network_equals_fixed_alpha_kernel_chain(linear_run):
    _, result = linear_run
    for metric in ("train_mse", "val_mse", "test_mse"):
        net, ker = result.curve("network", metric), result.curve("kernel_alpha", metric)
        assert np.allclose(net, ker, rtol=1e-4), (metric, net, ker)
    assert max(result.curve("kernel_alpha", "test_rel_diff_to_network")) < 1e-4
    assert min(result.curve("kernel_alpha", "test_argmax_agree_with_network")) == 1.0
    # the linear model's per-output blocks are exactly (x.x' + 1) P: its exact linearization (full
    # per-output NTK) is the summed-kernel chain
    exact = result.info["exact_linearization"]["train_mse"]
    assert np.allclose(exact, result.curve("kernel_alpha", "train_mse"), rtol=1e-8)
    # the eps chain is matched to the network's round 0: same training error there, by construction
    network_round0 = result.curve("network", "train_mse")[0]
    assert result.curve("kernel_eps", "train_mse")[0] == pytest.approx(network_round0, rel=1e-9)
    # independent check of round 0: scikit-learn's KernelRidge on the linear kernel x.x' + 1 (one output's
    # NTK of a linear layer with bias), alpha = K wd / 2, on the centered one-hot labels
    from sklearn.kernel_ridge import KernelRidge

    data = ntk_bridge.bridge_data(LINEAR_SPEC)
    x = data.x_train.reshape(data.num_train, -1).double().numpy()
    x_test = data.x_test.reshape(data.num_test, -1).double().numpy()
    y = ntk_bridge.centered_one_hot(data.y_train.numpy(), 10)
    ridge = KernelRidge(alpha=data.num_train * LINEAR_SPEC.weight_decay / 2, kernel="precomputed")
    ridge.fit(x @ x.T + 1.0, y)
    pred = ridge.predict(x_test @ x.T + 1.0)
    expected = float(np.mean(np.sum((pred - ntk_bridge.centered_one_hot(data.y_test.numpy(), 10)) ** 2, 1)))
    assert result.curve("kernel_alpha", "test_mse")[0] == pytest.approx(expected, rel=1e-8)


def test_bridge_files_summary_and_resume(linear_run):
    out, result = linear_run
    for name in ("rounds.csv", "per_round.csv", "summary.json", "bridge.png", "recipe.json",
                 "network/rounds.csv"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    comparison = summary["comparison"]
    assert set(comparison) == set(METHODS)
    assert comparison["kernel_alpha"]["best_round_by_val"] in range(LINEAR_SPEC.rounds)
    assert summary["findings"] and all("\n" not in line for line in summary["findings"])
    assert len(result.rows) == len(METHODS) * LINEAR_SPEC.rounds * len(LINEAR_SPEC.seeds)
    # dof = trace of B_t, decreasing over rounds for the fixed-alpha chain
    dof = result.curve("kernel_alpha", "dof")
    assert all(b < a for a, b in zip(dof, dof[1:], strict=False))
    # a rerun in the same folder resumes from the checkpoints and the NTK cache: identical rows
    again = run_ntk_bridge(out, LINEAR_SPEC, verbose=False)
    assert again.info["seconds"]["ntk"] == 0.0
    for a, b in zip(result.rows, again.rows, strict=True):
        assert a.keys() == b.keys()
        assert all(a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k]))
                   for k in a)


def test_reproduce_cli_target(tmp_path, monkeypatch, capsys):
    from selfdistill.cli import main

    tiny = BridgeSpec(n_train=30, hidden_sizes=(16,), steps=20, rounds=2, seeds=(0,), ntk_chunk_size=32)
    monkeypatch.setattr(ntk_bridge, "QUICK_SPEC", tiny)
    assert main(["reproduce", "--what", "ntk", "--quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "ntk_bridge" / "summary.json").read_text())
    assert summary["spec"]["n_train"] == 30
    assert (tmp_path / "ntk_bridge" / "bridge.png").is_file()
    assert not (tmp_path / "kernel").exists() and not (tmp_path / "neural").exists()
    assert "how well the kernel predicts the network" in capsys.readouterr().out
