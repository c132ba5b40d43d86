"""ResNets (He et al. 2016): ``resnet18`` (basic blocks) and ``resnet50`` (bottleneck blocks).

The stem depends on the input size: images up to 64x64 (CIFAR, SVHN, Tiny-ImageNet) get the
CIFAR stem, a 3x3 stride-1 convolution without max pooling, so that a 32x32 image still has a
4x4 map at the last stage; larger images (ImageNet) get the original 7x7 stride-2 convolution
followed by a 3x3 stride-2 max pool. ``stem="cifar"`` / ``"imagenet"`` forces one.
Bottleneck blocks put the stride on the 3x3 convolution ("ResNet v1.5", as in torchvision and
the FreeTickets ImageNet code's model). Parameter counts: resnet18 (CIFAR, 10 classes) about
11.2M, resnet50 (ImageNet, 1000 classes) about 25.6M.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from freetickets.errors import UserError
from freetickets.models._common import check_positive_int, init_weights, require_image_shape
from freetickets.models.registry import register_model


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """1x1 conv + BN projection when the shape changes, else ``None`` (identity)."""
    if in_channels == out_channels and stride == 1:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU: ``(B, C_in, H, W)`` -> ``(B, planes, H/s, W/s)``."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_channels, planes, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + residual)


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1(4x)-BN, plus shortcut, then ReLU.

    ``(B, C_in, H, W)`` -> ``(B, 4 * planes, H/s, W/s)``.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + residual)


class ResNet(nn.Module):
    """ResNet: stem -> 4 stages (width, 2w, 4w, 8w channels x expansion; strides 1, 2, 2, 2) -> avg pool -> Linear.

    Input ``(B, C, H, W)`` -> logits ``(B, num_classes)``. ``stem`` is ``"cifar"`` (3x3 conv,
    stride 1, no pooling) or ``"imagenet"`` (7x7 conv stride 2, 3x3 max pool stride 2).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks_per_stage: tuple[int, ...],
                 num_classes: int, input_shape: tuple[int, ...], stem: str, width: int = 64,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        in_channels = input_shape[0]
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(width), nn.ReLU(),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(width), nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        stages = []
        channels = width
        for index, count in enumerate(blocks_per_stage):
            planes = width * 2**index
            blocks = []
            for i in range(count):
                blocks.append(block(channels, planes, 2 if (i == 0 and index > 0) else 1))
                channels = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)
        if zero_init_residual:
            # Each residual branch starts at zero, so every block starts as the identity
            # (Goyal et al. 2017); helps large-batch ImageNet training.
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(module.last_bn().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        out = self.stem(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def _resnet(name: str, block, blocks_per_stage, num_classes, input_shape, stem, width,
            zero_init_residual) -> ResNet:
    _, height, image_width = require_image_shape(name, input_shape)
    if stem == "auto":
        stem = "cifar" if max(height, image_width) <= 64 else "imagenet"
    if stem not in ("cifar", "imagenet"):
        raise UserError(f"stem: expected 'auto', 'cifar' or 'imagenet', got {stem!r}")
    check_positive_int(width, "width")
    return ResNet(block, blocks_per_stage, num_classes, input_shape, stem, width,
                  bool(zero_init_residual))


@register_model("resnet18", default_input_shape=(3, 32, 32),
                description="ResNet-18 (basic blocks); CIFAR stem for inputs <= 64x64, else ImageNet stem")
def resnet18(num_classes: int, input_shape: tuple[int, ...], stem: str = "auto", width: int = 64,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 (basic blocks [2, 2, 2, 2]); ``width`` is the first stage's channels (64)."""
    return _resnet("resnet18", BasicBlock, (2, 2, 2, 2), num_classes, input_shape, stem, width,
                   zero_init_residual)


@register_model("resnet50", default_input_shape=(3, 224, 224),
                description="ResNet-50 (bottleneck blocks); ImageNet stem for inputs > 64x64, else CIFAR stem")
def resnet50(num_classes: int, input_shape: tuple[int, ...], stem: str = "auto", width: int = 64,
             zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 (bottleneck blocks [3, 4, 6, 3]); default input ``(3, 224, 224)`` (ImageNet)."""
    return _resnet("resnet50", Bottleneck, (3, 4, 6, 3), num_classes, input_shape, stem, width,
                   zero_init_residual)
