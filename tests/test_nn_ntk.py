"""The empirical NTK against per-example autograd Jacobians (naive loops, float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from selfdistill.nn.models import build_model
from selfdistill.nn.ntk import empirical_ntk, jacobian_block_bytes


def naive_gradients(model: nn.Module, x: torch.Tensor) -> list[list[torch.Tensor]]:
    """grads[i][c] = d f_c(x_i) / d theta (trainable parameters, flattened), one autograd call per example
    and output, on a float64 eval-mode copy."""
    model = copy.deepcopy(model).double().eval()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = []
    for i in range(x.shape[0]):
        out = model(x[i:i + 1].double()).reshape(-1)
        grads.append([
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(out[c], params, retain_graph=True)])
            for c in range(out.shape[0])
        ])
    return grads


def naive_ntk(model, x1, x2, per_output=False):
    g1, g2 = naive_gradients(model, x1), naive_gradients(model, x2)
    n_out = len(g1[0])
    full = torch.tensor(
        [[[[float(a[c] @ b[d]) for d in range(n_out)] for c in range(n_out)] for b in g2] for a in g1],
        dtype=torch.float64,
    )
    return full if per_output else full.diagonal(dim1=2, dim2=3).sum(-1)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return build_model("mlp", 3, (5,), hidden_sizes=(7, 6))


@pytest.fixture
def bn_cnn():
    """A tiny CNN with BatchNorm whose running statistics and affine parameters are not the defaults, so
    eval mode (running statistics) and train mode (batch statistics) give different outputs."""
    torch.manual_seed(1)
    model = build_model("cnn", 3, (1, 6, 6), channels=(2, 3))
    gen = torch.Generator().manual_seed(2)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=gen) * 2 - 1)
            module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(module.num_features, generator=gen) - 0.5)
    model.train()  # the user's mode: must be left alone
    return model


def test_mlp_matches_autograd(mlp):
    gen = torch.Generator().manual_seed(3)
    x1, x2 = torch.randn(6, 5, generator=gen), torch.randn(4, 5, generator=gen)
    theta = empirical_ntk(mlp, x1, x2, dtype=torch.float64, chunk_size=4)
    assert theta.shape == (6, 4) and theta.dtype == torch.float64
    assert rel_err(theta, naive_ntk(mlp, x1, x2)) < 1e-10


def test_bn_cnn_matches_autograd_in_eval_mode_and_keeps_the_model(bn_cnn):
    gen = torch.Generator().manual_seed(4)
    x1, x2 = torch.randn(5, 1, 6, 6, generator=gen), torch.randn(3, 1, 6, 6, generator=gen)
    state = {k: v.clone() for k, v in bn_cnn.state_dict().items()}
    theta = empirical_ntk(bn_cnn, x1, x2, dtype=torch.float64, chunk_size=2)
    assert rel_err(theta, naive_ntk(bn_cnn, x1, x2)) < 1e-10
    # the caller's model: same mode, dtype and state (running statistics included)
    assert bn_cnn.training
    assert all(p.dtype == torch.float32 for p in bn_cnn.parameters())
    assert all(torch.equal(v, state[k]) for k, v in bn_cnn.state_dict().items())


def test_per_output_blocks_match_autograd(bn_cnn):
    gen = torch.Generator().manual_seed(5)
    x1, x2 = torch.randn(3, 1, 6, 6, generator=gen), torch.randn(4, 1, 6, 6, generator=gen)
    blocks = empirical_ntk(bn_cnn, x1, x2, dtype=torch.float64, chunk_size=2, per_output=True)
    assert blocks.shape == (3, 4, 3, 3)
    assert rel_err(blocks, naive_ntk(bn_cnn, x1, x2, per_output=True)) < 1e-10
    summed = empirical_ntk(bn_cnn, x1, x2, dtype=torch.float64, chunk_size=3)
    assert rel_err(blocks.diagonal(dim1=2, dim2=3).sum(-1), summed) < 1e-12


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 100])
def test_chunking_does_not_change_the_result(mlp, chunk_size):
    gen = torch.Generator().manual_seed(6)
    x1, x2 = torch.randn(7, 5, generator=gen), torch.randn(5, 5, generator=gen)
    reference = naive_ntk(mlp, x1, x2)
    assert rel_err(empirical_ntk(mlp, x1, x2, dtype=torch.float64, chunk_size=chunk_size), reference) < 1e-10
    sym = empirical_ntk(mlp, x1, dtype=torch.float64, chunk_size=chunk_size)
    assert rel_err(sym, naive_ntk(mlp, x1, x1)) < 1e-10
    # a budget of exactly two blocks plus the result: x2's blocks are recomputed, not cached (when x2 has
    # more than one chunk); the result is the same
    block = jacobian_block_bytes(min(chunk_size, 7), 3, sum(p.numel() for p in mlp.parameters()), 8)
    tight = empirical_ntk(mlp, x1, x2, dtype=torch.float64, chunk_size=chunk_size,
                          memory_budget=2 * block + 7 * 5 * 8)
    assert rel_err(tight, reference) < 1e-10


def test_symmetric_and_positive_semidefinite(bn_cnn):
    x = torch.randn(9, 1, 6, 6, generator=torch.Generator().manual_seed(7))
    theta = empirical_ntk(bn_cnn, x, dtype=torch.float64, chunk_size=4)
    assert torch.equal(theta, theta.T)
    eigenvalues = torch.linalg.eigvalsh(theta)
    assert float(eigenvalues.min()) >= -1e-12 * float(eigenvalues.max())
    explicit = empirical_ntk(bn_cnn, x, x.clone(), dtype=torch.float64, chunk_size=4)
    assert rel_err(theta, explicit) < 1e-12
    blocks = empirical_ntk(bn_cnn, x, dtype=torch.float64, chunk_size=4, per_output=True)
    assert torch.equal(blocks, blocks.permute(1, 0, 3, 2))
    flat = blocks.permute(0, 2, 1, 3).reshape(27, 27)  # (example, output) x (example, output): a Gram matrix
    assert float(torch.linalg.eigvalsh(flat).min()) >= -1e-12 * float(flat.diagonal().max())


def test_frozen_parameters_are_held_fixed(mlp):
    mlp[1].requires_grad_(False)  # the first Linear layer
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(8))
    theta = empirical_ntk(mlp, x, dtype=torch.float64)
    assert rel_err(theta, naive_ntk(mlp, x, x)) < 1e-10  # naive_gradients differentiates trainable only


def test_default_dtype_is_the_model_dtype(mlp):
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(9))
    theta = empirical_ntk(mlp, x)
    assert theta.dtype == torch.float32
    assert rel_err(theta.double(), naive_ntk(mlp, x, x)) < 1e-5


def test_block_that_does_not_fit_names_a_chunk_size_that_does(mlp):
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(10))
    n_params = sum(p.numel() for p in mlp.parameters())
    per_example = 2 * jacobian_block_bytes(1, 3, n_params, 8)
    budget = 5 * per_example + per_example // 2  # room for 5 examples per block
    with pytest.raises(ValueError, match=r"chunk_size=5 or smaller") as info:
        empirical_ntk(mlp, x, dtype=torch.float64, chunk_size=16, memory_budget=budget)
    message = str(info.value)
    assert "\n" not in message and message.startswith("chunk_size=16")
    fits = empirical_ntk(mlp, x, dtype=torch.float64, chunk_size=5, memory_budget=budget)
    assert rel_err(fits, naive_ntk(mlp, x, x)) < 1e-10
    with pytest.raises(ValueError, match="even chunk_size=1"):
        empirical_ntk(mlp, x, dtype=torch.float64, chunk_size=1, memory_budget=per_example - 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chunk_size": 0}, "chunk_size must be a positive integer"),
        ({"dtype": torch.int64}, "dtype must be a floating"),
    ],
)
def test_bad_arguments(mlp, kwargs, match):
    with pytest.raises(ValueError, match=match):
        empirical_ntk(mlp, torch.randn(2, 5), **kwargs)


def test_bad_inputs(mlp):
    with pytest.raises(ValueError, match="x2 examples have shape"):
        empirical_ntk(mlp, torch.randn(2, 5), torch.randn(2, 4))
    with pytest.raises(ValueError, match="at least one example"):
        empirical_ntk(mlp, torch.randn(0, 5))
    mlp.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad"):
        empirical_ntk(mlp, torch.randn(2, 5))
