"""Model registry: ``list_models()`` and ``build_model(name, num_classes, in_channels)``.

Teachers and students come from the same registry and may differ (the paper studies teacher
capacity). Every model takes (B, in_channels, H, W) float images and returns (B, num_classes) logits;
the CIFAR-style nets end in global pooling, so they also run on 8x8 digits.

- ``resnet20/32/56/110``: He et al. (2016)'s CIFAR ResNets, 16-32-64 channels, option-A shortcuts.
- ``resnet18_cifar``: ResNet-18 with a 3x3 stem and no max-pool (the data-pruning literature's model).
- ``airbench_arch``: airbench94's architecture only (conv groups of conv-pool-BN-GELU, 64-256-256
  wide); trained with this project's recipe, not airbench's, so do not expect airbench's speed or
  accuracy from it.
- ``small_cnn``: a three-conv net that trains on digits in seconds on a CPU.
- ``cnn3_w8/16/32/64``: three conv-BN-ReLU-max-pool blocks of widths w, 2w, 4w: one width knob for
  teacher-capacity studies on a CPU (``cnn3_w32`` trains about 3x faster than ``small_cnn`` on 32x32
  images, since it pools after every conv; ``studies/cifar10_subset`` uses them).
- ``resnet18``/``resnet50``: torchvision's ImageNet ResNets, no pretrained weights.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from contract.registry import Registry

MODELS: Registry[Callable[[int, int], nn.Module]] = Registry("model")
register_model = MODELS.register


def list_models() -> list[str]:
    return MODELS.names()


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return MODELS.get(name)(num_classes, in_channels)


def check_model_name(name: str) -> None:
    """Raise a clear error for an unknown architecture, before any compute."""
    MODELS.get(name)


# --------------------------------------------------------------------------------------------
# CIFAR ResNets


class _ZeroPadShortcut(nn.Module):
    """He et al.'s option A: subsample spatially, zero-pad the new channels (no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Identity()
        elif shortcut == "zero_pad":
            self.shortcut = _ZeroPadShortcut(in_planes, planes, stride)
        else:  # option B: a strided 1x1 projection
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stem, no max-pool, stages of BasicBlocks, global average pool, linear head."""

    def __init__(self, widths, depths, num_classes: int, in_channels: int, shortcut: str):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks, in_planes = [], widths[0]
        for stage, (width, depth) in enumerate(zip(widths, depths)):
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_planes, width, stride, shortcut))
                in_planes = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _register_he_resnet(depth: int) -> None:
    n = (depth - 2) // 6

    @register_model(f"resnet{depth}")
    def build(num_classes: int, in_channels: int) -> nn.Module:
        return CifarResNet((16, 32, 64), (n, n, n), num_classes, in_channels, shortcut="zero_pad")


for _depth in (20, 32, 56, 110):
    _register_he_resnet(_depth)


@register_model("resnet18_cifar")
def resnet18_cifar(num_classes: int, in_channels: int) -> nn.Module:
    return CifarResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes, in_channels, shortcut="projection")


# --------------------------------------------------------------------------------------------
# airbench94's architecture (not its training recipe)


class _ConvGroup(nn.Module):
    def __init__(self, in_planes: int, planes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=False)
        # ceil_mode keeps small inputs (8x8 digits) from pooling away to nothing.
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.bn1(self.pool(self.conv1(x))))
        return F.gelu(self.bn2(self.conv2(x)))


class AirbenchArch(nn.Module):
    """airbench94's architecture: a 2x2 stem conv, three conv groups, global max pool, a scaled head.

    The architecture only. airbench's training recipe (whitening initialisation of the stem, label
    smoothing, lookahead/EMA of the weights, test-time flips, decoupled learning rates and weight
    decay) is not part of it: this net is trained with this project's recipe like every other model.
    """

    def __init__(self, num_classes: int, in_channels: int, widths=(64, 256, 256)):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 24, 2, padding=0, bias=True)
        self.groups = nn.Sequential(
            _ConvGroup(24, widths[0]), _ConvGroup(widths[0], widths[1]), _ConvGroup(widths[1], widths[2])
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.head_scale = 1 / 9  # airbench's temperature on the logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.stem(x)))
        return self.head(torch.flatten(F.adaptive_max_pool2d(x, 1), 1)) * self.head_scale


@register_model("airbench_arch")
def airbench_arch(num_classes: int, in_channels: int) -> nn.Module:
    """airbench94's architecture only; trained with this project's recipe, not airbench's."""
    return AirbenchArch(num_classes, in_channels)


# --------------------------------------------------------------------------------------------
# Small CNN for digits


@register_model("small_cnn")
def small_cnn(num_classes: int, in_channels: int) -> nn.Module:
    def conv(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *conv(in_channels, 32),
        *conv(32, 64),
        nn.MaxPool2d(2, ceil_mode=True),
        *conv(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


# --------------------------------------------------------------------------------------------
# Three-block CNNs with one width knob (capacity studies on a CPU)


def cnn3(num_classes: int, in_channels: int, width: int) -> nn.Module:
    """conv3x3-BN-ReLU-maxpool blocks of width, 2*width, 4*width channels, global average pool, linear."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        # ceil_mode keeps 8x8 digits from pooling away to nothing (8 -> 4 -> 2 -> 1).
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True)]

    return nn.Sequential(
        *block(in_channels, width),
        *block(width, 2 * width),
        *block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


def _register_cnn3(width: int) -> None:
    @register_model(f"cnn3_w{width}")
    def build(num_classes: int, in_channels: int) -> nn.Module:
        return cnn3(num_classes, in_channels, width)


for _width in (8, 16, 32, 64):
    _register_cnn3(_width)


# --------------------------------------------------------------------------------------------
# torchvision ImageNet ResNets


def _torchvision_resnet(name: str, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int) -> nn.Module:
    return _torchvision_resnet("resnet18", num_classes, in_channels)


@register_model("resnet50")
def resnet50(num_classes: int, in_channels: int) -> nn.Module:
    return _torchvision_resnet("resnet50", num_classes, in_channels)
