"""Small models for MNIST-1D (inputs ``(1, 40)``): ``mlp`` and ``cnn1d``.

Both use BatchNorm after every hidden layer: the project measured that a sparse (S = 0.8, ERK)
1-D CNN without normalisation trains to about 33% on MNIST-1D and about 95% with it
(docs/algorithms.md), because normalisation undoes the variance loss of sparse layers.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from freetickets.errors import UserError
from freetickets.models._common import check_dropout, check_positive_int, conv_out, init_weights
from freetickets.models.registry import register_model


class MLP(nn.Module):
    """Multi-layer perceptron: flatten ``(B, *input_shape)`` -> hidden layers -> ``(B, num_classes)``.

    Each hidden layer is Linear -> BatchNorm1d -> ReLU (-> Dropout). The Linear layers before a
    BatchNorm have no bias (the BatchNorm shift replaces it).
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        hidden_sizes: tuple[int, ...] = (256, 256),
        batch_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(1)]
        width = math.prod(input_shape)
        for size in hidden_sizes:
            layers.append(nn.Linear(width, size, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, *input_shape)`` -> logits ``(B, num_classes)``."""
        return self.classifier(self.features(x))


class CNN1d(nn.Module):
    """1-D CNN: ``(B, C, L)`` (or ``(B, L)``) -> three Conv1d-BN-ReLU blocks -> Linear -> logits.

    Convolutions have kernel ``kernel_size`` with "same" padding and strides 1, 2, 2, so a
    length-40 signal becomes ``width`` channels of length 10. ``head="flatten"`` keeps the
    position information (MNIST-1D digits are position-dependent templates); ``head="avg"``
    global-average-pools instead (fewer head parameters, translation invariant).
    """

    strides = (1, 2, 2)

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        width: int = 128,
        kernel_size: int = 5,
        batch_norm: bool = True,
        head: str = "flatten",
    ) -> None:
        super().__init__()
        if len(input_shape) == 1:
            channels, length = 1, input_shape[0]
        elif len(input_shape) == 2:
            channels, length = input_shape
        else:
            raise UserError(
                f"input_shape: model 'cnn1d' takes signals (C, L) or (L,), got {tuple(input_shape)!r}"
            )
        # Decided at construction (not from x at run time) so forward has no shape-dependent branches.
        self.add_channel_dim = len(input_shape) == 1
        layers: list[nn.Module] = []
        in_channels = channels
        for stride in self.strides:
            layers.append(
                nn.Conv1d(in_channels, width, kernel_size, stride=stride,
                          padding=kernel_size // 2, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            in_channels = width
            length = conv_out(length, kernel_size, stride, kernel_size // 2)
        if head == "flatten":
            layers.append(nn.Flatten(1))
            head_features = width * length
        else:
            layers.extend([nn.AdaptiveAvgPool1d(1), nn.Flatten(1)])
            head_features = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(head_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, L)`` (or ``(B, L)`` when built with ``input_shape=(L,)``) -> ``(B, num_classes)``."""
        if self.add_channel_dim:
            x = x.unsqueeze(1)
        return self.classifier(self.features(x))


@register_model("mlp", default_input_shape=(1, 40),
                description="MLP for MNIST-1D: flatten, 2 x (Linear 256, BatchNorm, ReLU), Linear")
def mlp(
    num_classes: int,
    input_shape: tuple[int, ...],
    hidden_sizes: int | tuple[int, ...] | list[int] = (256, 256),
    batch_norm: bool = True,
    dropout: float = 0.0,
) -> MLP:
    """MLP for MNIST-1D (any input shape; it is flattened)."""
    sizes = (hidden_sizes,) if isinstance(hidden_sizes, int) else tuple(hidden_sizes)
    for size in sizes:
        check_positive_int(size, "hidden_sizes")
    return init_weights(
        MLP(num_classes, input_shape, sizes, bool(batch_norm), check_dropout(dropout))
    )


@register_model("cnn1d", default_input_shape=(1, 40),
                description="1-D CNN for MNIST-1D: 3 x (Conv1d k5, 128 ch, BatchNorm, ReLU), Linear")
def cnn1d(
    num_classes: int,
    input_shape: tuple[int, ...],
    width: int = 128,
    kernel_size: int = 5,
    batch_norm: bool = True,
    head: str = "flatten",
) -> CNN1d:
    """1-D CNN for MNIST-1D, input ``(C, L)`` or ``(L,)``."""
    check_positive_int(width, "width")
    check_positive_int(kernel_size, "kernel_size")
    if kernel_size % 2 == 0:
        raise UserError(f"kernel_size: expected an odd int (for 'same' padding), got {kernel_size!r}")
    if head not in ("flatten", "avg"):
        raise UserError(f"head: expected 'flatten' or 'avg', got {head!r}")
    return init_weights(CNN1d(num_classes, input_shape, width, kernel_size, bool(batch_norm), head))
