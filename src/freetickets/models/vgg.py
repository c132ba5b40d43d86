"""VGG-16 networks with BatchNorm for CIFAR-sized images.

``vgg16`` is the common CIFAR VGG-16-BN (13 3x3 convolutions with BatchNorm, a single Linear
classifier on the 512 x 1 x 1 feature map; about 14.7M parameters for 10 classes).

``vgg-like``, ``vgg-c`` and ``vgg-d`` are the three variants of the released FreeTickets /
sparse-learning code (after SNIP, Lee et al. 2019): FC layers reduced to 512 units, BatchNorm1d
in place of dropout (placed after the ReLU, as released), and the flattening sized for 32x32:

* ``vgg-d``: the VGG-16 "D" convolutions, classifier FC 512 -> FC 512 -> FC classes;
* ``vgg-like``: same convolutions, classifier FC 512 -> FC classes;
* ``vgg-c``: VGG-16 "C" (the third conv of blocks 3-5 is 1x1). As released, those 1x1
  convolutions use padding 1, which grows the map by 2 pixels each time, so a 32x32 input ends
  at 512 x 2 x 2 and the first FC layer has 2048 inputs. We keep this quirk so that parameter
  counts and FLOPs match the released code.

All convolutions have a bias (as in the original VGG and the released code).
"""
from __future__ import annotations

import torch
from torch import nn

from freetickets.errors import UserError
from freetickets.models._common import conv_out, init_weights, require_image_shape
from freetickets.models.registry import register_model

# An int is a 3x3 conv with that many channels; (k, c) a kxk conv; "M" a 2x2 max pool.
_CONFIG_D: tuple = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                    512, 512, 512, "M", 512, 512, 512, "M")
_CONFIG_C: tuple = (64, 64, "M", 128, 128, "M", 256, 256, (1, 256), "M",
                    512, 512, (1, 512), "M", 512, 512, (1, 512), "M")

_VARIANTS = {
    # name: (conv config, hidden FC widths)
    "vgg16": (_CONFIG_D, ()),
    "vgg-like": (_CONFIG_D, (512,)),
    "vgg-d": (_CONFIG_D, (512, 512)),
    "vgg-c": (_CONFIG_C, (512, 512)),
}


class VGG(nn.Module):
    """VGG with BatchNorm: ``(B, C, H, W)`` -> conv stack -> flatten -> classifier -> ``(B, num_classes)``.

    ``config`` lists convolutions (int: 3x3 with that many channels; ``(k, c)``: kxk) and ``"M"``
    (2x2 max pool). Every convolution uses padding 1 (see the module docstring for ``vgg-c``).
    ``hidden`` gives the widths of the FC layers before the output layer, each followed by
    ReLU and BatchNorm1d.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], config: tuple,
                 hidden: tuple[int, ...], name: str = "vgg") -> None:
        super().__init__()
        in_channels, height, width = input_shape
        layers: list[nn.Module] = []
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                height, width = height // 2, width // 2
                continue
            kernel, channels = (3, item) if isinstance(item, int) else item
            layers += [nn.Conv2d(in_channels, channels, kernel, padding=1),
                       nn.BatchNorm2d(channels), nn.ReLU()]
            height, width = conv_out(height, kernel, 1, 1), conv_out(width, kernel, 1, 1)
            in_channels = channels
            if height < 1 or width < 1:
                break
        if height < 1 or width < 1:
            raise UserError(
                f"input_shape: model {name!r} needs H and W >= 32, got {tuple(input_shape)!r}"
            )
        layers.append(nn.Flatten(1))
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = []
        features = in_channels * height * width
        for size in hidden:
            head += [nn.Linear(features, size), nn.ReLU(), nn.BatchNorm1d(size)]
            features = size
        head.append(nn.Linear(features, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        return self.classifier(self.features(x))


def _make_factory(variant: str, description: str):
    config, hidden = _VARIANTS[variant]

    @register_model(variant, default_input_shape=(3, 32, 32), description=description)
    def factory(num_classes: int, input_shape: tuple[int, ...]) -> VGG:
        require_image_shape(variant, input_shape)
        return init_weights(VGG(num_classes, input_shape, config, hidden, name=variant))

    factory.__name__ = factory.__qualname__ = variant.replace("-", "_")
    factory.__doc__ = description
    return factory


vgg16 = _make_factory("vgg16", "VGG-16 with BatchNorm for CIFAR (13 convs, one Linear head)")
vgg_like = _make_factory("vgg-like", "VGG-like of the released FreeTickets code (VGG-16 convs, FC 512, BatchNorm)")
vgg_c = _make_factory("vgg-c", "VGG-C of the released FreeTickets code (1x1 convs, FC 512-512, BatchNorm)")
vgg_d = _make_factory("vgg-d", "VGG-D of the released FreeTickets code (VGG-16 convs, FC 512-512, BatchNorm)")
