"""Mask construction (random initial masks, one-shot global magnitude pruning) and bit packing.

Masks are ``torch.bool`` tensors of the parameter's shape and device (True = active weight).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from freetickets.sparse.distributions import validate_sparsity
from freetickets.sparse.params import sparsifiable_parameters
from freetickets.sparse.selection import round_half_up, select_largest

__all__ = ["count_bits", "global_magnitude_masks", "pack_bits", "random_mask", "unpack_bits"]

_BIT_WEIGHTS = (1, 2, 4, 8, 16, 32, 64, 128)


def random_mask(shape: torch.Size | tuple[int, ...], active: int, generator: torch.Generator,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Bool tensor of ``shape`` with exactly ``active`` True entries at uniformly random positions.

    The positions come from ``generator`` on the CPU (a random permutation), then the mask is
    moved to ``device``: the same seed gives the same mask on every device and every DDP rank.
    """
    n = 1
    for s in shape:
        n *= int(s)
    if not 0 <= active <= n:
        raise ValueError(f"active: need 0 <= active <= {n}, got {active}")
    flat = torch.zeros(n, dtype=torch.bool)
    flat[torch.randperm(n, generator=generator)[:active]] = True
    return flat.view(tuple(shape)).to(device)


def global_magnitude_masks(
    model_or_named_params: nn.Module | Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    sparsity: float,
) -> dict[str, torch.Tensor]:
    """One-shot global magnitude pruning (the PF ensemble baseline): ``name -> bool mask``.

    Over all sparsifiable weights together (``sparsifiable_parameters(model)``, or the given
    ``name -> tensor`` pairs), keeps exactly ``round(N * (1 - sparsity))`` weights of largest
    ``|w|``; ties are broken by the position in the concatenation (layer order, then flat
    index): the lower position is kept first. Masks have each weight's shape and device.

    Minimum per layer: every output unit (row ``w[j]``: an output neuron of a ``Linear``, an
    output channel of a convolution; a 1-D weight counts as one unit) keeps its largest-magnitude
    weight (ties: the lowest index). One threshold over all layers alone can empty a layer whose
    weights are small by initialisation (a wide classifier next to narrow convolutions): the
    ticket then predicts one class. The reserved weights count towards the kept total; the rest
    is chosen globally as above. If the kept total cannot cover one weight per output unit, a
    one-line ``ValueError`` names the largest sparsity that can.
    """
    sparsity = validate_sparsity(sparsity)
    if isinstance(model_or_named_params, nn.Module):
        named = [(name, p) for name, p in sparsifiable_parameters(model_or_named_params)]
    elif isinstance(model_or_named_params, Mapping):
        named = list(model_or_named_params.items())
    else:
        named = list(model_or_named_params)
    if not named:
        raise ValueError("model_or_named_params: no sparsifiable weight given")
    device = named[0][1].device
    with torch.no_grad():
        scores = torch.cat([p.detach().reshape(-1).abs().float().to(device) for _, p in named])
        keep = round_half_up((1.0 - sparsity) * scores.numel())
        reserved = _row_maxima(named, scores)
        n_reserved = int(reserved.sum())
        if n_reserved > keep:
            raise ValueError(
                f"sparsity {sparsity}: keeps {keep} of {scores.numel()} weights, fewer than the {n_reserved} output "
                f"units of the sparse layers (one weight each); use a sparsity of at most "
                f"{1.0 - n_reserved / scores.numel():.4f}")
        chosen = select_largest(scores, ~reserved, keep - n_reserved) | reserved
    del scores
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name, p in named:
        n = p.numel()
        out[name] = chosen[start:start + n].view(p.shape).to(p.device, copy=True)
        start += n
    return out


def _row_maxima(named: list[tuple[str, torch.Tensor]], scores: torch.Tensor) -> torch.Tensor:
    """Bool over the concatenated ``scores``: the largest entry of every output unit (row) of
    every weight (``torch.argmax`` takes the first of tied maxima)."""
    reserved = torch.zeros_like(scores, dtype=torch.bool)
    start = 0
    for _, p in named:
        n = p.numel()
        rows = scores[start:start + n].view(p.shape[0] if p.dim() > 1 else 1, -1)
        cols = rows.shape[1]
        picks = rows.argmax(dim=1) + torch.arange(rows.shape[0], device=scores.device) * cols
        reserved[start + picks] = True
        start += n
    return reserved


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool tensor into ``uint8`` (8 entries per byte, little-endian bit order), shape
    ``(ceil(numel / 8),)``: 1/32 of the memory of a float32 tensor of the same shape."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: bool tensor of ``shape``."""
    n = 1
    for s in shape:
        n *= int(s)
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(1) >> shifts) & 1
    return bits.reshape(-1)[:n].to(torch.bool).view(tuple(shape))


def count_bits(packed: torch.Tensor) -> int:
    """Number of set bits in a packed tensor."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    return int(torch.count_nonzero((packed.unsqueeze(1) >> shifts) & 1))
