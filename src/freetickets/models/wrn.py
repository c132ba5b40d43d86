"""Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016) for CIFAR: names ``wrn-D-K``.

WRN-D-K has depth D = 6n + 4: 3 groups of n pre-activation basic blocks (two 3x3 convs each,
6n in all) with 16K, 32K and 64K channels, plus the stem convolution, the classifier and the
two strided 1x1 shortcut convolutions counted by the paper's convention. WRN-28-10 (the FreeTickets paper's CIFAR model) has about 36.5M parameters.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from freetickets.errors import UserError
from freetickets.models._common import check_dropout, init_weights, require_image_shape
from freetickets.models.registry import register_model_pattern


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-(dropout)-conv3x3, plus shortcut.

    When the block changes the number of channels or the resolution, the shortcut is a 1x1
    convolution applied to the *pre-activated* input (as in the authors' WRN code); otherwise it
    is the identity on the raw input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if in_channels != out_channels or stride != 1
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, H / stride, W / stride)``."""
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = F.relu(self.bn2(out))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        residual = x if self.shortcut is None else self.shortcut(activated)
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-width: conv3x3(16) -> 3 groups of blocks (16K, 32K, 64K; strides 1, 2, 2) -> BN-ReLU -> avg pool -> Linear.

    Input ``(B, C, H, W)`` (CIFAR: 3 x 32 x 32; any size works thanks to global average
    pooling) -> logits ``(B, num_classes)``.
    """

    def __init__(self, depth: int, width: int, num_classes: int, input_shape: tuple[int, ...],
                 dropout: float = 0.0) -> None:
        super().__init__()
        blocks_per_group = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        self.conv1 = nn.Conv2d(input_shape[0], widths[0], 3, stride=1, padding=1, bias=False)
        groups = []
        for group, stride in enumerate((1, 2, 2)):
            blocks = [
                PreActBlock(widths[group] if i == 0 else widths[group + 1], widths[group + 1],
                            stride if i == 0 else 1, dropout)
                for i in range(blocks_per_group)
            ]
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


@register_model_pattern(
    "wrn-D-K", r"wrn-(\d+)-(\d+)",
    examples=("wrn-28-10", "wrn-16-8", "wrn-16-2"),
    default_input_shape=(3, 32, 32),
    description="Wide ResNet (pre-activation, BatchNorm) of depth D = 6n+4 and width K, for CIFAR",
)
def wide_resnet(match: re.Match[str], num_classes: int, input_shape: tuple[int, ...],
                dropout: float = 0.0) -> WideResNet:
    """Wide ResNet ``wrn-D-K`` for CIFAR-sized images; ``dropout`` between the block convs (default 0)."""
    depth, width = int(match.group(1)), int(match.group(2))
    name = match.group(0)
    if depth < 10 or (depth - 4) % 6 != 0:
        raise UserError(
            f"name: {name!r} has depth {depth}; a WRN depth D must be 6n + 4 with n >= 1 "
            "(10, 16, 22, 28, 34, 40, ...), e.g. wrn-28-10"
        )
    if width < 1:
        raise UserError(f"name: {name!r} has width {width}; the width K must be >= 1, e.g. wrn-28-10")
    require_image_shape(name, input_shape)
    return init_weights(WideResNet(depth, width, num_classes, input_shape, check_dropout(dropout)))
