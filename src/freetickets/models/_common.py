"""Helpers shared by the model definitions: initialisation and input-shape checks."""
from __future__ import annotations

from torch import nn

from freetickets.errors import UserError


def init_weights(model: nn.Module) -> nn.Module:
    """Standard initialisation, in place; returns ``model``.

    Convolutions: Kaiming normal (fan-out, ReLU gain), zero bias, as in the ResNet and WRN papers.
    Normalisation layers: weight 1, bias 0. Linear layers keep PyTorch's default weight init
    (Kaiming uniform with a = sqrt(5)) with a zero bias. Everything draws from torch's global RNG
    in module order, so construction is deterministic under ``torch.manual_seed``.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm)):
            if module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    return model


def require_image_shape(model: str, input_shape: tuple[int, ...], min_size: int = 1) -> tuple[int, int, int]:
    """Check ``input_shape`` is ``(C, H, W)`` with ``H, W >= min_size``; return it."""
    if len(input_shape) != 3:
        raise UserError(
            f"input_shape: model {model!r} takes images (C, H, W), got {tuple(input_shape)!r}"
        )
    channels, height, width = input_shape
    if height < min_size or width < min_size:
        raise UserError(
            f"input_shape: model {model!r} needs H and W >= {min_size}, got {tuple(input_shape)!r}"
        )
    return channels, height, width


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution/pooling along one dimension (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def check_positive_int(value: object, argument: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, else ``ValueError`` naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{argument}: expected an int >= {minimum}, got {value!r}")
    return value


def check_dropout(value: object, argument: str = "dropout") -> float:
    """``value`` as a probability in [0, 1), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise UserError(f"{argument}: expected a probability in [0, 1), got {value!r}")
    return float(value)
