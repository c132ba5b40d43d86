"""BatchEnsemble (Wen et al., ICLR 2020): M members sharing every weight, each with rank-1 factors.

Every Conv/Linear layer with shared weight ``W`` gets per-member vectors ``r_k`` (one per input
channel/feature) and ``s_k`` (one per output channel/feature) and, where the base layer has a
bias, a per-member bias ``b_k``. Member ``k``'s weight is ``W * (s_k r_k^T)`` (elementwise),
computed without forming it: ``layer(x * r_k) * s_k + b_k`` -- the rank-1 factors commute with
the convolution/matrix product because they act per input and per output channel.

All members run in one forward pass on a *member-tiled* batch ``(M * B, ...)``: rows
``k*B .. (k+1)*B - 1`` hold member ``k``'s copy of the batch (:func:`tile_batch`).

BatchNorm choice: the base model's BatchNorm layers stay *shared* and see the whole tiled batch,
i.e. statistics over all members' activations in training and one set of running statistics
at test time. This is what the authors' code does (their BatchEnsemble WRN keeps ordinary
BatchNorm); per-member BatchNorm would add M sets of statistics for little gain. At test time
(eval mode) each member's output then depends only on its own rows.
"""
from __future__ import annotations

import torch
from torch import nn

from freetickets.errors import UserError
from freetickets.models._efficient_common import check_members, set_submodule, weight_layers

__all__ = ["BatchEnsemble", "BatchEnsembleLayer", "BATCHENSEMBLE_INITS", "tile_batch"]

#: Initialisations of the rank-1 factors r and s (see :class:`BatchEnsembleLayer`).
BATCHENSEMBLE_INITS = ("random_sign", "normal", "ones")


def tile_batch(x: torch.Tensor, members: int) -> torch.Tensor:
    """``(B, ...)`` -> ``(M * B, ...)`` with member ``k``'s copy in rows ``k*B .. (k+1)*B - 1``.

    Use it on the targets too (``tile_batch(y, M)``) to train all members on every example.
    """
    return x.repeat(check_members(members), *([1] * (x.dim() - 1)))


class BatchEnsembleLayer(nn.Module):
    """A Conv1d/2d/3d or Linear layer shared by ``members`` members with rank-1 member factors.

    Parameters: ``layer.weight`` (the shared ``W``; the wrapped layer keeps its stride, padding,
    groups, ... and has its bias removed), ``r`` ``(M, in)``, ``s`` ``(M, out)`` and, when the
    original layer had a bias, ``bias`` ``(M, out)`` (each member starts from the original bias).
    ``init`` draws r and s from torch's global RNG: ``"random_sign"`` (+-1 with probability 1/2,
    Wen et al. 2020), ``"normal"`` (N(1, 0.5^2) truncated at 2 standard deviations, the authors'
    CIFAR setting) or ``"ones"`` (all members identical; for tests).

    Input ``(M * B, in, ...)`` for a convolution or ``(M * B, ..., in)`` for a Linear layer.
    """

    def __init__(self, layer: nn.Module, members: int, init: str = "random_sign") -> None:
        super().__init__()
        members = check_members(members)
        if init not in BATCHENSEMBLE_INITS:
            raise UserError(f"init: expected one of {', '.join(BATCHENSEMBLE_INITS)}, got {init!r}")
        self.num_members = members
        self.is_linear = isinstance(layer, nn.Linear)
        n_in = layer.in_features if self.is_linear else layer.in_channels
        n_out = layer.out_features if self.is_linear else layer.out_channels
        factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
        bias = layer.bias
        layer.bias = None  # the per-member bias replaces it
        self.layer = layer
        self.r = nn.Parameter(torch.empty(members, n_in, **factory))
        self.s = nn.Parameter(torch.empty(members, n_out, **factory))
        for factor in (self.r, self.s):
            with torch.no_grad():
                if init == "random_sign":
                    factor.copy_(torch.randint(0, 2, factor.shape, device=factor.device) * 2 - 1)
                elif init == "normal":
                    nn.init.trunc_normal_(factor, mean=1.0, std=0.5, a=0.0, b=2.0)
                else:
                    factor.fill_(1.0)
        self.bias = None if bias is None else nn.Parameter(bias.detach().expand(members, -1).clone())

    def _per_member(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``values`` ``(M, n)`` shaped to broadcast against ``x`` viewed as ``(M, B, ...)``."""
        if self.is_linear:  # features last
            return values.view(self.num_members, *([1] * (x.dim() - 2)), -1)
        return values.view(self.num_members, 1, -1, *([1] * (x.dim() - 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(M * B, in, ...)`` -> ``(M * B, out, ...)``: member k's rows use ``W * (s_k r_k^T)``, ``b_k``."""
        members = self.num_members
        if x.shape[0] % members:
            raise ValueError(f"BatchEnsemble expects a member-tiled batch whose size is a multiple "
                             f"of {members} members, got batch size {x.shape[0]}")
        tiled = x.reshape(members, -1, *x.shape[1:])
        out = self.layer((tiled * self._per_member(self.r, tiled)).reshape(x.shape))
        out = out.reshape(members, -1, *out.shape[1:])
        out = out * self._per_member(self.s, out)
        if self.bias is not None:
            out = out + self._per_member(self.bias, out)
        return out.reshape(-1, *out.shape[2:])

    def member_weight(self, k: int) -> torch.Tensor:
        """Member ``k``'s effective weight ``W * (s_k r_k^T)`` (same shape as ``W``; for tests and export)."""
        weight = self.layer.weight
        r = self.r[k]
        if not self.is_linear and self.layer.groups > 1:
            # Output channel o reads input channels of its group only: r indexed per group.
            groups = self.layer.groups
            r = r.view(groups, 1, -1).expand(groups, weight.shape[0] // groups, -1).reshape(weight.shape[0], -1)
        else:
            r = r.view(1, -1).expand(weight.shape[0], -1)
        extra = [1] * (weight.dim() - 2)
        return weight * self.s[k].view(-1, 1, *extra) * r.reshape(*r.shape, *extra)


class BatchEnsemble(nn.Module):
    """``base`` with every Conv/Linear layer replaced by a :class:`BatchEnsembleLayer` (in place).

    ``base`` maps ``(B, ...)`` to ``(B, C)`` and must apply its layers batch-row by batch-row
    (true of every built-in model); its BatchNorm layers stay shared (module docstring).
    ``forward`` takes the member-tiled batch ``(M * B, ...)`` and returns ``(M * B, C)``;
    :meth:`member_logits` tiles a plain batch and returns ``(M, B, C)``.
    """

    def __init__(self, base: nn.Module, members: int, init: str = "random_sign") -> None:
        super().__init__()
        self.num_members = check_members(members)
        layers = weight_layers(base)
        if not layers:
            raise UserError("BatchEnsemble needs a model with Conv or Linear layers")
        for name, layer in layers:
            if not isinstance(layer.weight, nn.Parameter):
                raise UserError(f"BatchEnsemble cannot wrap layer {name!r}: its weight is not a plain parameter")
        for name, layer in layers:
            set_submodule(base, name, BatchEnsembleLayer(layer, self.num_members, init))
        self.model = base

    def forward(self, x_tiled: torch.Tensor) -> torch.Tensor:
        """``(M * B, ...)`` member-tiled batch -> logits ``(M * B, C)`` (member k in rows ``k*B..``)."""
        if x_tiled.shape[0] % self.num_members:
            raise ValueError(f"BatchEnsemble expects a member-tiled batch whose size is a multiple "
                             f"of {self.num_members} members, got batch size {x_tiled.shape[0]}")
        return self.model(x_tiled)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time form: plain batch ``(B, ...)`` -> ``(M, B, C)``."""
        logits = self(tile_batch(x, self.num_members))
        return logits.view(self.num_members, x.shape[0], *logits.shape[1:])
