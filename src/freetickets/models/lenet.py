"""LeNet-5 (LeCun et al. 1998) for small images: ``(1, 28, 28)`` MNIST-like or ``(3, 32, 32)`` CIFAR."""
from __future__ import annotations

import torch
from torch import nn

from freetickets.errors import UserError
from freetickets.models._common import conv_out, init_weights, require_image_shape
from freetickets.models.registry import register_model


class LeNet5(nn.Module):
    """Conv(6, 5x5) -> pool -> Conv(16, 5x5) -> pool -> FC 120 -> FC 84 -> FC num_classes.

    Inputs smaller than 32x32 (e.g. 28x28 MNIST) get padding 2 on the first convolution, the
    classic way of feeding MNIST to LeNet-5; both ``(1, 28, 28)`` and ``(3, 32, 32)`` then reach
    a 16 x 5 x 5 feature map. ReLU and max pooling replace the original tanh/subsampling, and
    ``batch_norm=True`` (default) adds BatchNorm after every hidden layer, which sparse training
    needs (docs/algorithms.md).
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], batch_norm: bool = True) -> None:
        super().__init__()
        channels, height, width = input_shape
        padding = 2 if min(height, width) < 32 else 0

        def block(conv: nn.Module, norm: nn.Module) -> list[nn.Module]:
            return [conv, *([norm] if batch_norm else []), nn.ReLU()]

        self.features = nn.Sequential(
            *block(nn.Conv2d(channels, 6, 5, padding=padding, bias=not batch_norm), nn.BatchNorm2d(6)),
            nn.MaxPool2d(2),
            *block(nn.Conv2d(6, 16, 5, bias=not batch_norm), nn.BatchNorm2d(16)),
            nn.MaxPool2d(2),
            nn.Flatten(1),
        )
        h = conv_out(conv_out(conv_out(conv_out(height, 5, 1, padding), 2, 2), 5), 2, 2)
        w = conv_out(conv_out(conv_out(conv_out(width, 5, 1, padding), 2, 2), 5), 2, 2)
        if h < 1 or w < 1:
            raise UserError(
                f"input_shape: model 'lenet5' needs H and W >= 12, got {tuple(input_shape)!r}"
            )
        self.classifier = nn.Sequential(
            *block(nn.Linear(16 * h * w, 120, bias=not batch_norm), nn.BatchNorm1d(120)),
            *block(nn.Linear(120, 84, bias=not batch_norm), nn.BatchNorm1d(84)),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        return self.classifier(self.features(x))


@register_model("lenet5", default_input_shape=(1, 28, 28),
                description="LeNet-5 with BatchNorm for (1, 28, 28) or (3, 32, 32) images")
def lenet5(num_classes: int, input_shape: tuple[int, ...], batch_norm: bool = True) -> LeNet5:
    """LeNet-5 with BatchNorm, for ``(1, 28, 28)`` or ``(3, 32, 32)`` images."""
    require_image_shape("lenet5", input_shape)
    return init_weights(LeNet5(num_classes, input_shape, bool(batch_norm)))
