"""Models by name: small nets for the built-in data and the CIFAR networks of the paper (Section 5).

``build_model(name, num_classes, input_shape, **kwargs)`` returns a freshly initialized ``nn.Module``
mapping a batch ``(N, *input_shape)`` to logits ``(N, num_classes)``. Initialization uses the global torch
RNG only, so ``torch.manual_seed(s)`` before the call makes it deterministic.

- ``"mlp"``: flatten, then Linear+ReLU layers (``hidden_sizes``, default (256, 256)), then a linear head.
- ``"cnn"``: a small 2-D CNN for 8x8 or 32x32 images: stages of 3x3 conv (+BatchNorm) + ReLU with 2x2
  max-pooling between stages, global average pooling, linear head. ``channels`` default (32, 64, 128).
- ``"cnn1d"``: the same design with 1-D convolutions (MNIST-1D, input (1, 40)).
- ``"resnet20"``: the CIFAR ResNet-20 of He et al. 2016 (3 stages of 3 basic blocks, 16/32/64 channels),
  built from torchvision's ``BasicBlock`` with 1x1-conv projection shortcuts (option B), about 0.27M
  parameters.
- ``"resnet50"``: torchvision's ResNet-50 in its CIFAR form: the 7x7/stride-2 stem conv replaced by a
  3x3/stride-1 conv and the max-pool removed; bottleneck blocks unchanged (about 23.5M parameters for 10
  classes).
- ``"vgg16"``: VGG-16 with batch norm (torchvision's configuration "D" and ``make_layers``) whose five
  max-pools bring 32x32 to 1x1, then global average pooling and one linear layer 512 -> classes (the usual
  CIFAR head; about 14.7M parameters for 10 classes). Initialized as torchvision initializes VGG.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MODEL_NAMES", "MODEL_OPTIONS", "build_model", "count_parameters"]

MODEL_NAMES = ("mlp", "cnn", "cnn1d", "resnet20", "resnet50", "vgg16")
# the keyword arguments build_model accepts for each name (the rest of the constructors' arguments are
# filled in from the data: class count and input shape)
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "mlp": ("hidden_sizes",),
    "cnn": ("channels", "batch_norm"),
    "cnn1d": ("channels", "batch_norm"),
    "resnet20": ("blocks_per_stage",),
    "resnet50": (),
    "vgg16": ("batch_norm",),
}


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class MLP(nn.Sequential):
    """Flatten -> [Linear -> ReLU] * len(hidden_sizes) -> Linear."""

    def __init__(self, in_features: int, num_classes: int, hidden_sizes: Sequence[int] = (256, 256)):
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True)]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class SmallCNN(nn.Module):
    """Stages of [conv3 (+BN) + ReLU], max-pool 2 between stages while the size allows, global average
    pool, linear head. ``dims=2`` for images (C, H, W), ``dims=1`` for sequences (C, L)."""

    def __init__(self, in_channels: int, num_classes: int, spatial: Sequence[int],
                 channels: Sequence[int] = (32, 64, 128), batch_norm: bool = True, dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool1d
        gap = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)
        layers: list[nn.Module] = []
        size = min(spatial)
        width = in_channels
        for i, c in enumerate(channels):
            if i > 0 and size >= 2:
                layers.append(pool(2))
                size //= 2
            layers.append(conv(width, int(c), kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(norm(int(c)))
            layers.append(nn.ReLU(inplace=True))
            width = int(c)
        layers += [gap, nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images (He et al. 2016, Section 4.2), from torchvision's BasicBlock."""

    def __init__(self, num_classes: int, in_channels: int = 3, blocks_per_stage: int = 3,
                 widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages = []
        inplanes = widths[0]
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            for b in range(blocks_per_stage):
                s = stride if b == 0 else 1
                downsample = None
                if s != 1 or inplanes != planes:
                    downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=s, bias=False),
                                               nn.BatchNorm2d(planes))
                stages.append(BasicBlock(inplanes, planes, stride=s, downsample=downsample))
                inplanes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))))


def _resnet50_cifar(num_classes: int, in_channels: int) -> nn.Module:
    from torchvision.models import resnet50

    model = resnet50(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


class CifarVGG(nn.Module):
    """VGG-16-BN features (torchvision cfg "D"), global average pool, Linear(512, num_classes)."""

    def __init__(self, num_classes: int, in_channels: int = 3, batch_norm: bool = True):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        self.features = make_layers(cfgs["D"], batch_norm=batch_norm)
        if in_channels != 3:
            first = self.features[0]
            self.features[0] = nn.Conv2d(in_channels, first.out_channels, kernel_size=3, padding=1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(512, num_classes)
        # torchvision's VGG initialization
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _require_image_shape(name: str, input_shape: tuple[int, ...], hint: str = "") -> None:
    if len(input_shape) != 3:
        raise ValueError(f"model {name!r} expects input_shape (channels, height, width), got {input_shape}"
                         + hint)


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """A freshly initialized model by name (see the module docstring for the names and kwargs).

    kwargs: ``hidden_sizes`` (mlp); ``channels``, ``batch_norm`` (cnn, cnn1d); ``blocks_per_stage``
    (resnet20: 3 gives ResNet-20, 5 ResNet-32, ...); ``batch_norm`` (vgg16).
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in MODEL_NAMES:
        raise ValueError(f"unknown model name {name!r}; known: {', '.join(MODEL_NAMES)}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape or any(s < 1 for s in input_shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive sizes, got {input_shape}")

    def take(*allowed: str) -> dict:
        unknown = set(kwargs) - set(allowed)
        if unknown:
            raise ValueError(f"model {name!r} does not accept {sorted(unknown)}; accepted: {list(allowed)}")
        return kwargs

    kw = take(*MODEL_OPTIONS[key])
    if key == "mlp":
        in_features = 1
        for s in input_shape:
            in_features *= s
        return MLP(in_features, num_classes, tuple(kw.get("hidden_sizes", (256, 256))))
    if key == "cnn":
        _require_image_shape(name, input_shape, "; for 1-D inputs (channels, length) use 'cnn1d'")
        return SmallCNN(input_shape[0], num_classes, input_shape[1:], dims=2,
                        channels=tuple(kw.get("channels", (32, 64, 128))),
                        batch_norm=bool(kw.get("batch_norm", True)))
    if key == "cnn1d":
        if len(input_shape) != 2:
            raise ValueError(f"model 'cnn1d' expects input_shape (channels, length), got {input_shape}")
        return SmallCNN(input_shape[0], num_classes, input_shape[1:], dims=1,
                        channels=tuple(kw.get("channels", (32, 64, 128))),
                        batch_norm=bool(kw.get("batch_norm", True)))
    _require_image_shape(name, input_shape)
    if key == "resnet20":
        return CifarResNet(num_classes, input_shape[0], blocks_per_stage=int(kw.get("blocks_per_stage", 3)))
    if key == "resnet50":
        return _resnet50_cifar(num_classes, input_shape[0])
    return CifarVGG(num_classes, input_shape[0], batch_norm=bool(kw.get("batch_norm", True)))
