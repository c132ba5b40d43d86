"""Packed-Ensembles (Laurent et al., ICLR 2023): M narrow members packed into one network of grouped layers.

Every Conv/Linear layer of the base network becomes a *grouped* layer whose groups are the
members: a tensor that has ``c`` channels (or features) in the base network has
``packed_width(c) = ceil(alpha * c / (M * gamma)) * (M * gamma)`` channels in the packed one,
member ``k`` owning the contiguous block ``k * w/M .. (k+1) * w/M - 1`` of them (``w`` =
``packed_width(c)``), split further into ``gamma`` subgroups. So each member is the base
network widened by ``alpha / M`` (``alpha = M`` gives M full-width members: a deep ensemble in
one network), and inside a member each layer is a grouped layer of ``gamma`` groups:

* the first layer reads the plain input (``groups = 1``; each output channel has its own
  filter, so the members' first layers are independent) and writes ``packed_width(C_out)``;
* every other layer reads ``packed_width(C_in)`` and writes ``packed_width(C_out)`` with
  ``groups = M * gamma`` (times the base layer's own groups): no weight connects two members;
* the last (Linear) layer writes ``M * num_classes`` outputs with ``M * gamma`` groups: member
  ``k``'s logits are outputs ``k * C .. (k+1) * C - 1`` (``num_classes`` must divide by gamma);
* BatchNorm layers get ``packed_width(c)`` channels (per-channel, so per-member statistics).

When ``alpha * c`` is a multiple of ``M * gamma`` (every WRN-28-10 layer with M = 4, alpha = 2,
gamma = 2) the widths are exactly ``alpha * c``, the layer sizes of the paper; otherwise they are
rounded *up* to the next multiple so that every group has the same width (e.g. M = 3, alpha = 2
on 256 features: 513, i.e. 171 per member). A Linear layer that reads a flattened convolution
output (``c`` channels x ``L`` positions) reads ``packed_width(c) * L`` features, which keeps
each member's features contiguous.

Parameters: a grouped layer has ``1 / groups`` of the weights of a dense layer of its widths,
so a middle layer has about ``alpha^2 / (M * gamma)`` times the base layer's weights. Where the
widths divide, the layers have torch-uncertainty's packed layers' parameter counts
(``tests/methods/test_packed_oracle.py``); one difference: its convolutions lower gamma while a
group would read fewer than 64 channels (its ``minimum_channels_per_group``), ours use gamma as
given (so e.g. WRN-28-10's 16- and 160-channel stages keep gamma = 2 here).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from freetickets.errors import UserError
from freetickets.models._common import init_weights
from freetickets.models._efficient_common import LAYER_TYPES, check_members, set_submodule

__all__ = ["Packed", "PackedLinear", "check_packed_options", "packed_width"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def packed_width(channels: int, members: int, alpha: float, gamma: int) -> int:
    """Channels of a base tensor of ``channels`` channels in the packed network (module docstring)."""
    groups = members * gamma
    return math.ceil(alpha * channels / groups - 1e-9) * groups  # slack: 2.0 * 6 / 3 is not 4.000001


def check_packed_options(alpha: object, gamma: object) -> tuple[float, int]:
    """``(alpha, gamma)`` if valid, else :class:`UserError` naming ``--packed-alpha`` / ``--packed-gamma``."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 64:
        raise UserError(f"--packed-alpha: expected a width factor in (0, 64], got {alpha!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, int) or not 1 <= gamma <= 64:
        raise UserError(f"--packed-gamma: expected an integer in [1, 64] (subgroups per member), got {gamma!r}")
    return float(alpha), gamma


class PackedLinear(nn.Module):
    """A grouped (block-diagonal) Linear layer: ``groups`` independent ``in/groups -> out/groups`` maps.

    ``weight`` ``(out_features, in_features // groups)`` (group ``g`` owns rows
    ``g * out/groups ..``), ``bias`` ``(out_features,)`` or None. Input ``(..., in_features)``
    -> ``(..., out_features)``; group ``g`` reads input features ``g * in/groups ..``.
    Computed as a kernel-1 grouped ``conv1d`` (so ``FlopCounterMode`` counts exactly the
    ``2 * in * out / groups`` FLOPs per row of the block-diagonal product). Initialised as
    ``nn.Linear`` is, with each group's fan-in ``in/groups``: weights Kaiming-uniform
    (a = sqrt(5)), bias zero (the package's Linear convention, ``init_weights``).
    """

    def __init__(self, in_features: int, out_features: int, groups: int, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        if in_features % groups or out_features % groups:
            raise ValueError(f"PackedLinear: in_features {in_features} and out_features {out_features} "
                             f"must be multiples of groups {groups}")
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features // groups, **factory))
        self.bias = nn.Parameter(torch.zeros(out_features, **factory)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features)`` -> ``(..., out_features)``."""
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features, 1)
        out = F.conv1d(rows, self.weight.unsqueeze(-1), self.bias, groups=self.groups)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}"


def _packed_conv(layer: nn.Module, n_in: int, n_out: int, groups: int) -> nn.Module:
    new = type(layer)(n_in, n_out, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                      dilation=layer.dilation, groups=groups, bias=layer.bias is not None,
                      padding_mode=layer.padding_mode, device=layer.weight.device, dtype=layer.weight.dtype)
    return init_weights(new)


def _packed_norm(norm: nn.Module, width) -> nn.Module:
    new = type(norm)(width(norm.num_features), eps=norm.eps, momentum=norm.momentum, affine=norm.affine,
                     track_running_stats=norm.track_running_stats,
                     device=norm.running_mean.device if norm.running_mean is not None else None)
    return init_weights(new)


class Packed(nn.Module):
    """``base`` with every Conv/Linear and BatchNorm layer replaced by its packed version (in place).

    ``base`` maps ``(B, ...)`` to ``(B, C)``; it needs at least two Conv/Linear layers, the first
    with ``groups=1`` and the last a Linear classifier (module order = call order, true of every
    built-in model); other normalisation layers (GroupNorm, LayerNorm) are not supported.
    ``forward``: ``(B, ...)`` -> member logits ``(M, B, C)`` (every member sees every example);
    :meth:`member_logits` is the same. ``alpha`` > 0 is the width factor, ``gamma`` >= 1 the
    subgroups per member; bad values raise :class:`UserError` naming ``--packed-alpha`` /
    ``--packed-gamma``. New layers are freshly initialised from torch's global RNG.
    """

    def __init__(self, base: nn.Module, members: int, alpha: float = 2.0, gamma: int = 1) -> None:
        super().__init__()
        self.num_members = check_members(members)
        self.alpha, self.gamma = check_packed_options(alpha, gamma)
        layers = [(n, m) for n, m in base.named_modules() if isinstance(m, LAYER_TYPES + _NORMS)]
        weights = [(n, m) for n, m in layers if isinstance(m, LAYER_TYPES)]
        others = [n for n, m in base.named_modules()
                  if isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.Embedding))]
        if others:
            raise UserError(f"Packed-Ensembles cannot pack layer {others[0]!r} (only Conv, Linear and BatchNorm)")
        if len(weights) < 2:
            raise UserError("Packed-Ensembles needs a model with at least two Conv/Linear layers")
        (first_name, first), (last_name, last) = weights[0], weights[-1]
        if not isinstance(first, nn.Linear) and first.groups != 1:
            raise UserError(f"Packed-Ensembles: the first convolution {first_name!r} must have groups=1")
        if not isinstance(last, nn.Linear):
            raise UserError(f"Packed-Ensembles packs the last layer into M heads, but {last_name!r} is a "
                            f"{type(last).__name__}, not a Linear layer")
        self.num_classes: int = last.out_features
        if self.num_classes % gamma:
            raise UserError(f"--packed-gamma: the classifier's {self.num_classes} outputs do not split into "
                            f"{gamma} subgroups per member; choose a gamma that divides {self.num_classes}")

        def width(c: int) -> int:
            return packed_width(c, self.num_members, self.alpha, gamma)

        groups = self.num_members * gamma
        previous_out = None
        for name, layer in layers:
            if isinstance(layer, _NORMS):
                set_submodule(base, name, _packed_norm(layer, width))
                continue
            is_linear = isinstance(layer, nn.Linear)
            n_in = layer.in_features if is_linear else layer.in_channels
            n_out = layer.out_features if is_linear else layer.out_channels
            if layer is first:
                new_in, new_out, new_groups = n_in, width(n_out), 1
            else:
                if is_linear and previous_out and n_in % previous_out == 0:
                    new_in = width(previous_out) * (n_in // previous_out)  # flattened channels x positions
                else:
                    new_in = width(n_in)
                new_out = self.num_members * n_out if layer is last else width(n_out)
                new_groups = groups * (1 if is_linear else layer.groups)
            if is_linear:
                new = PackedLinear(new_in, new_out, new_groups, bias=layer.bias is not None,
                                   device=layer.weight.device, dtype=layer.weight.dtype)
            else:
                new = _packed_conv(layer, new_in, new_out, new_groups)
            set_submodule(base, name, new)
            previous_out = n_out
        self.model = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` -> ``(M, B, C)``: member ``k``'s logits are the packed head's block ``k``."""
        logits = self.model(x)  # (B, M * C)
        return logits.view(logits.shape[0], self.num_members, self.num_classes).transpose(0, 1)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time form (the same as training): ``(B, ...)`` -> ``(M, B, C)``."""
        return self(x)
