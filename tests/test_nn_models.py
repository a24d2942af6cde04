"""Tests of selfdistill.nn.models: output shapes, parameter counts, deterministic init, errors."""

import pytest
import torch
import torch.nn.functional as F

from selfdistill.nn.models import build_model, count_parameters


@pytest.mark.parametrize("name, input_shape, batch", [
    ("mlp", (1, 8, 8), 5),
    ("mlp", (1, 40), 5),
    ("cnn", (1, 8, 8), 5),
    ("cnn", (3, 32, 32), 3),
    ("cnn1d", (1, 40), 5),
    ("resnet20", (3, 32, 32), 2),
    ("resnet50", (3, 32, 32), 2),
    ("vgg16", (3, 32, 32), 2),
])
def test_output_shape(name, input_shape, batch):
    torch.manual_seed(0)
    model = build_model(name, 7, input_shape)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(batch, *input_shape))
    assert out.shape == (batch, 7)
    assert torch.isfinite(out).all()


def test_resnet50_cifar_parameter_count():
    # torchvision's ImageNet ResNet-50 has 25,557,032 parameters. The CIFAR form swaps the 7x7x3x64 stem
    # (9,408) for a 3x3x3x64 one (1,728) and the 2048->1000 head (2,049,000) for 2048->10 (20,490).
    expected = 25_557_032 - 9_408 + 1_728 - 2_049_000 + 20_490
    model = build_model("resnet50", 10, (3, 32, 32))
    assert count_parameters(model) == expected  # 23,520,842
    assert not isinstance(model.maxpool, torch.nn.MaxPool2d)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)


def test_vgg16_bn_cifar_parameter_count():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    expected, c_in = 0, 3
    for v in cfg:
        if v == "M":
            continue
        expected += 9 * c_in * v + v + 2 * v  # conv weight + bias + BatchNorm weight and bias
        c_in = v
    expected += 512 * 100 + 100
    model = build_model("vgg16", 100, (3, 32, 32))
    assert count_parameters(model) == expected  # 14,774,436 for 100 classes
    assert 14.5e6 < count_parameters(build_model("vgg16", 10, (3, 32, 32))) < 15.5e6


def test_resnet20_is_in_the_published_ballpark():
    # He et al. 2016 report 0.27M parameters for ResNet-20 (projection shortcuts add a few thousand).
    assert 0.26e6 < count_parameters(build_model("resnet20", 10, (3, 32, 32))) < 0.28e6


def test_mlp_parameter_count_and_hidden_sizes():
    model = build_model("mlp", 10, (1, 8, 8), hidden_sizes=[32, 16])
    assert count_parameters(model) == (64 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)


@pytest.mark.parametrize("name, input_shape", [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)),
                                               ("cnn1d", (1, 40)), ("resnet20", (3, 32, 32))])
def test_deterministic_init_under_manual_seed(name, input_shape):
    torch.manual_seed(123)
    a = build_model(name, 10, input_shape).state_dict()
    torch.manual_seed(123)
    b = build_model(name, 10, input_shape).state_dict()
    torch.manual_seed(124)
    c = build_model(name, 10, input_shape).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_unknown_name_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown model name 'resnet18'.*mlp.*cnn.*cnn1d.*resnet50.*vgg16"):
        build_model("resnet18", 10, (3, 32, 32))
    with pytest.raises(ValueError, match="cnn1d"):
        build_model("cnn", 10, (1, 40))
    with pytest.raises(ValueError, match="does not accept"):
        build_model("mlp", 10, (1, 8, 8), channels=(8,))
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mlp", 1, (1, 8, 8))


def test_small_cnn_learns_a_tiny_batch():
    # a real optimization check: the model can fit 32 random examples (loss falls by a factor > 10)
    torch.manual_seed(0)
    model = build_model("cnn", 4, (1, 8, 8), channels=(8, 16))
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 4, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < first / 10
