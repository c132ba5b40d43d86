"""Masksembles (Durasov et al., CVPR 2021): M fixed binary channel masks; each mask is one member.

Between MC dropout (infinitely many random, highly correlated masks) and a deep ensemble (M
disjoint models) sit M *fixed* masks whose overlap is set by a scale ``s >= 1``:

* mask generation (the paper's procedure, :func:`generate_masks`): for a layer input of ``c``
  channels, draw M masks of ``m`` ones at random positions among ``L`` positions, then drop the
  positions that no mask uses; ``m = floor(c / (s * (1 - (1 - 1/s)^M)))`` (the inverse of the
  expected number of used positions, ``m * s * (1 - (1 - 1/s)^M)``, for ``L = m * s``), and
  ``L`` is searched (from ``round(m * s)``, one step at a time, redrawing) until exactly ``c``
  positions are used. ``s = 1`` gives M identical all-ones masks (one model); a large ``s``
  gives nearly disjoint masks (separate sub-networks). Every draw comes from a CPU generator
  seeded by ``(seed, layer index)``: the masks are a pure function of the constructor arguments.
* placement: on the input of every Conv/Linear layer but the first (as this package's MC
  dropout; one mask entry per channel of a convolution input, per feature of a Linear input);
  masks are not rescaled (the paper's layer multiplies by the binary mask only).
* training: the batch of ``N`` rows is cut into M contiguous near-equal slices, slice ``k``
  through mask ``k`` (row ``i`` uses mask ``floor(i * M / N)``): each example is seen by one
  member per step, so training costs one dense model.
* test (:meth:`Masksembles.member_logits`): the batch is tiled M times (member ``k``'s copy in
  rows ``k*B .. (k+1)*B - 1``), so every example goes through every mask in one pass.

BatchNorm stays shared (it sees every slice), as in the authors' layers.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from freetickets.data.base import derive_seed
from freetickets.errors import UserError
from freetickets.models._efficient_common import check_members, set_submodule, weight_layers

__all__ = ["Masksembles", "MaskedInput", "check_scale", "generate_masks", "row_members"]

_MAX_DRAWS = 20_000


def check_scale(scale: object) -> float:
    """``scale`` if it is a number in [1, 100], else :class:`UserError` naming ``--masksembles-scale``."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 1.0 <= scale <= 100.0:
        raise UserError(f"--masksembles-scale: expected a number in [1, 100] (1: identical masks, "
                        f"larger: less overlap), got {scale!r}")
    return float(scale)


def generate_masks(channels: int, members: int, scale: float, seed: int) -> torch.Tensor:
    """``(members, channels)`` 0/1 float masks with overlap set by ``scale`` (module docstring).

    Every position is used by at least one mask and every mask has the same number of ones.
    Raises :class:`UserError` naming ``--masksembles-scale`` when no draw reaches exactly
    ``channels`` used positions (e.g. fewer channels than the masks need).
    """
    members = check_members(members)
    scale = check_scale(scale)
    ones = int(channels / (scale * (1.0 - (1.0 - 1.0 / scale) ** members)))
    if ones < 1 or ones * members < channels:
        raise UserError(f"--masksembles-scale: {channels} channels are too few for {members} masks at "
                        f"scale {scale}")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    positions = max(ones, round(ones * scale))
    for _ in range(_MAX_DRAWS):
        # each mask: `ones` distinct positions out of `positions` (a random permutation's prefix)
        picks = torch.stack([torch.randperm(positions, generator=generator)[:ones] for _ in range(members)])
        masks = torch.zeros(members, positions)
        masks.scatter_(1, picks, 1.0)
        used = masks.amax(dim=0) > 0
        count = int(used.sum())
        if count == channels:
            return masks[:, used]
        # too few used positions: spread the ones over more positions; too many: fewer
        positions = max(ones, positions + (1 if count < channels else -1))
    raise UserError(f"--masksembles-scale: cannot draw {members} masks of {ones} ones covering exactly "
                    f"{channels} channels at scale {scale}; try a scale closer to 2")


def row_members(rows: int, members: int, device: torch.device) -> torch.Tensor:
    """``(rows,)`` member index of each batch row: M contiguous near-equal slices, ``floor(i * M / rows)``."""
    return torch.arange(rows, device=device) * members // max(rows, 1)


class MaskedInput(nn.Module):
    """``layer`` whose input is multiplied by the row's member mask (buffer ``masks`` ``(M, n_in)``).

    Input ``(N, n_in, ...)`` for a convolution, ``(N, ..., n_in)`` for a Linear layer; row ``i``
    uses mask :func:`row_members` ``[i]``.
    """

    def __init__(self, layer: nn.Module, masks: torch.Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.is_linear = isinstance(layer, nn.Linear)
        self.register_buffer("masks", masks.to(device=layer.weight.device, dtype=layer.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, ...)`` -> ``layer(x * mask of each row)``."""
        per_row = self.masks[row_members(x.shape[0], self.masks.shape[0], x.device)]  # (N, n_in)
        if self.is_linear:
            per_row = per_row.view(x.shape[0], *([1] * (x.dim() - 2)), -1)
        else:
            per_row = per_row.view(*per_row.shape, *([1] * (x.dim() - 2)))
        return self.layer(x * per_row.to(x.dtype))


class Masksembles(nn.Module):
    """``base`` with fixed member masks on the input of every Conv/Linear layer but the first (in place).

    ``forward``: ``(N, ...)`` -> ``(N, C)``, row slices through masks 0..M-1 (training form);
    :meth:`member_logits`: ``(B, ...)`` -> ``(M, B, C)`` (test form, batch tiled M times).
    ``scale`` in [1, 100] sets the masks' overlap; ``seed`` the draws.
    """

    def __init__(self, base: nn.Module, members: int, scale: float = 2.0, seed: int = 0) -> None:
        super().__init__()
        self.num_members = check_members(members)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"seed: expected an int, got {seed!r}")
        self.scale, self.seed = check_scale(scale), seed
        layers = weight_layers(base)
        if len(layers) < 2:
            raise UserError("Masksembles needs a model with at least two Conv/Linear layers "
                            "(masks go on the input of every such layer but the first)")
        self.masked_layers: list[str] = []
        for index, (name, layer) in enumerate(layers[1:], start=1):
            n_in = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
            try:
                masks = generate_masks(n_in, self.num_members, self.scale,
                                       derive_seed("masksembles-mask", seed, index))
            except UserError as exc:
                raise UserError(f"{exc} (layer {name!r})") from None
            set_submodule(base, name, MaskedInput(layer, masks))
            self.masked_layers.append(name)
        self.model = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, ...)`` -> ``(N, C)``; row ``i`` goes through mask ``floor(i * M / N)``."""
        return self.model(x)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time form: ``(B, ...)`` tiled M times, one forward -> ``(M, B, C)``."""
        tiled = x.repeat(self.num_members, *([1] * (x.dim() - 1)))
        logits = self(tiled)
        return logits.view(self.num_members, x.shape[0], *logits.shape[1:])

    def overlap(self) -> list[float]:
        """Per masked layer, the mean over mask pairs of |a AND b| / |a| (1 = identical masks)."""
        out = []
        for m in self.model.modules():
            if isinstance(m, MaskedInput) and self.num_members > 1:
                masks = m.masks.float()
                inter = masks @ masks.T
                pairs = [float(inter[i, j] / masks[i].sum()) for i in range(len(masks))
                         for j in range(len(masks)) if i < j]
                out.append(math.fsum(pairs) / len(pairs))
        return out
