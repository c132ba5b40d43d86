"""MIMO (Havasi et al., ICLR 2021): M subnetworks in one network, one forward pass at test time.

The base network is widened at its two ends only: the first layer reads ``M`` inputs stacked on
the channel axis (input channels x M) and the last Linear layer has ``M`` heads (outputs x M).
Training feeds each member its own independently shuffled examples
(:func:`mimo_training_batch`), so the members learn to ignore each other's inputs and behave like
an ensemble; at test time the same example is repeated ``M`` times (:meth:`MIMO.member_logits`).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from freetickets.errors import UserError
from freetickets.models._common import init_weights
from freetickets.models._efficient_common import LAYER_TYPES, check_members, set_submodule

__all__ = ["MIMO", "mimo_training_batch"]


def _leaf_parametrised(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters directly, in module order."""
    return [(name, m) for name, m in model.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


def _widened(layer: nn.Module, members: int, widen_in: bool, widen_out: bool) -> nn.Module:
    """A fresh copy of ``layer`` with in (and/or out) features x ``members``, initialised as
    :func:`freetickets.models._common.init_weights` does (the convention of the built-in models)."""
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features * (members if widen_in else 1),
                        layer.out_features * (members if widen_out else 1), bias=bias, **factory)
    else:
        new = type(layer)(layer.in_channels * (members if widen_in else 1),
                          layer.out_channels * (members if widen_out else 1), layer.kernel_size,
                          stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                          groups=1, bias=bias, padding_mode=layer.padding_mode, **factory)
    return init_weights(new)


class MIMO(nn.Module):
    """A multi-input multi-output network built from ``base`` (which it takes over and edits in place).

    ``base`` maps ``(B, C_in, ...)`` to logits ``(B, C)``. Its first parametrised layer must be a
    Conv (``groups=1``) or Linear layer and its last parametrised layer a Linear classifier;
    these two are replaced by freshly initialised layers with ``C_in * M`` inputs and ``C * M``
    outputs (everything in between is shared by all members and keeps its weights). Otherwise
    ``ValueError``. A Linear first layer after a flatten works too (MLP): the flattened stacked
    input is the members' flattened inputs one after the other.

    Layout: member ``k``'s input occupies channels ``k*C_in .. (k+1)*C_in - 1`` of the stacked
    input, and its logits are output units ``k*C .. (k+1)*C - 1`` of the widened head.
    Caveat: the network must read its input only through that first layer (true of every
    built-in model); a base that also uses the raw input elsewhere fails at the first forward.
    """

    def __init__(self, base: nn.Module, members: int) -> None:
        super().__init__()
        self.num_members = check_members(members)
        if getattr(base, "add_channel_dim", False):
            raise UserError("MIMO stacks the members' inputs on the channel axis, but this base "
                            "model adds its own channel axis; build it with an explicit channel "
                            "axis, e.g. input_shape=(1, L)")
        layers = _leaf_parametrised(base)
        if not layers:
            raise UserError("MIMO cannot widen a model without parameters")
        (first_name, first), (last_name, last) = layers[0], layers[-1]
        if not isinstance(first, LAYER_TYPES):
            raise UserError(f"MIMO widens the first layer's inputs, but the first layer "
                            f"{first_name!r} is a {type(first).__name__}, not a Conv or Linear layer")
        if not isinstance(first, nn.Linear) and first.groups != 1:
            raise UserError(f"MIMO cannot widen the grouped convolution {first_name!r} "
                            f"(groups={first.groups}); the first convolution must have groups=1")
        if not isinstance(last, nn.Linear):
            raise UserError(f"MIMO widens the final Linear layer into M heads, but the last layer "
                            f"{last_name!r} is a {type(last).__name__}, not a Linear layer")
        self.num_classes: int = last.out_features
        #: channels (Conv) or features (Linear) of one member's input to the first layer.
        self.member_in_features: int = first.in_features if isinstance(first, nn.Linear) else first.in_channels
        self.first_is_conv = not isinstance(first, nn.Linear)
        if first is last:
            set_submodule(base, first_name, _widened(first, self.num_members, True, True))
        else:
            set_submodule(base, first_name, _widened(first, self.num_members, True, False))
            set_submodule(base, last_name, _widened(last, self.num_members, False, True))
        self.first_layer_name, self.last_layer_name = first_name, last_name
        self.model = base

    def forward(self, x_stacked: torch.Tensor) -> torch.Tensor:
        """``x_stacked``: ``(B, M * C_in, ...)`` (member ``k`` in channels ``k*C_in..``) -> ``(M, B, C)``."""
        if self.first_is_conv and (x_stacked.dim() < 2
                                   or x_stacked.shape[1] != self.num_members * self.member_in_features):
            raise ValueError(f"MIMO expects {self.num_members} x {self.member_in_features} = "
                             f"{self.num_members * self.member_in_features} stacked input channels, "
                             f"got input of shape {tuple(x_stacked.shape)}")
        logits = self.model(x_stacked)  # (B, M * C)
        batch = logits.shape[0]
        return logits.view(batch, self.num_members, self.num_classes).transpose(0, 1)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time form: ``x`` ``(B, C_in, ...)`` repeated for every member, one forward -> ``(M, B, C)``."""
        return self(torch.cat([x] * self.num_members, dim=1))


def mimo_training_batch(x: torch.Tensor, y: torch.Tensor, members: int,
                        input_repetition_prob: float = 0.0, batch_repetitions: int = 1,
                        generator: torch.Generator | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """A MIMO training batch from a plain one (Havasi et al. 2021, Sec. 2 and the authors' code).

    x: ``(B, C_in, ...)``; y: ``(B,)`` (or ``(B, ...)``). The batch indices are repeated
    ``batch_repetitions`` times and shuffled (``B' = B * batch_repetitions`` rows); then
    ``floor(B' * (1 - input_repetition_prob))`` of the rows get an independent shuffle per member,
    while the remaining rows hold the *same* example for every member (input repetition, rho in
    the paper: rows are shared with probability rho, as an exact fraction of the batch like the
    authors' code rather than a coin per row). Every random draw comes from ``generator`` (torch's
    default CPU generator when ``None``), so a given generator state gives the same batch.

    Returns ``x_stacked`` ``(B', M * C_in, ...)`` (member ``k``'s input in channels
    ``k*C_in .. (k+1)*C_in - 1``, the layout :class:`MIMO` reads) and the targets ``(M, B', ...)``
    (``y[k]`` is member ``k``'s target for each row).
    """
    members = check_members(members)
    if isinstance(batch_repetitions, bool) or not isinstance(batch_repetitions, int) or batch_repetitions < 1:
        raise UserError(f"batch_repetitions: expected an int >= 1, got {batch_repetitions!r}")
    if isinstance(input_repetition_prob, bool) or not isinstance(input_repetition_prob, (int, float)) \
            or not 0.0 <= input_repetition_prob <= 1.0:
        raise UserError(f"input_repetition_prob: expected a probability in [0, 1], got {input_repetition_prob!r}")
    if x.dim() < 2 or y.dim() < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"mimo_training_batch needs x (B, C, ...) and y (B, ...) with the same B; "
                         f"got x {tuple(x.shape)} and y {tuple(y.shape)}")
    device = generator.device if generator is not None else torch.device("cpu")
    batch = x.shape[0]
    rows = batch * batch_repetitions
    main = torch.arange(batch, device=device).repeat(batch_repetitions)
    main = main[torch.randperm(rows, generator=generator, device=device)]
    # The tiny slack keeps e.g. 10 * (1 - 0.3) from rounding down to 6 through float error.
    shuffled = min(rows, math.floor(rows * (1.0 - float(input_repetition_prob)) + 1e-9))
    indices = torch.stack([
        torch.cat([main[:shuffled][torch.randperm(shuffled, generator=generator, device=device)],
                   main[shuffled:]])
        for _ in range(members)
    ]).to(x.device)  # (M, B')
    stacked = x[indices].movedim(0, 1)  # (B', M, C_in, ...)
    x_stacked = stacked.reshape(rows, members * x.shape[1], *x.shape[2:])
    return x_stacked, y[indices.to(y.device)]
