"""The per-layer operations of the packed forward (:mod:`freetickets.ensembles.packed`).

M members' activations are stacked member-major along the batch: ``(M*B, ...)``. Each function
here computes one layer for all members at once on that layout (Linear, Conv, eval-mode
BatchNorm), or moves between it and the shared input / the ``(M, B, C)`` logits.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["packed_affine", "packed_conv", "packed_linear", "replicate", "shared_layer", "unstack"]


def packed_linear(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """M Linear maps on member-stacked rows: ``x`` (M*B, ..., F), ``weight_t`` (M, F, O), ``bias``
    (M, 1, O) -> (M*B, ..., O); like ``nn.Linear``, over the last dimension of any number of them."""
    m = weight_t.shape[0]
    out = torch.baddbmm(bias, x.reshape(m, -1, x.shape[-1]), weight_t)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def packed_affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per-member channel affine map (an eval-mode BatchNorm): ``x`` (M*B, C, ...), ``scale``/``shift`` (M, C)."""
    m, c = scale.shape
    view = x.reshape(m, -1, *x.shape[1:])
    shape = (m, 1, c) + (1,) * (x.dim() - 2)
    return torch.addcmul(shift.reshape(shape), view, scale.reshape(shape)).reshape(x.shape)


def packed_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: tuple[int, ...],
                padding: tuple[int, ...], dilation: tuple[int, ...]) -> torch.Tensor:
    """M convolutions (groups 1) on member-stacked rows ``x`` (M*B, C, *spatial) by im2col + one
    ``baddbmm``; ``weight`` (M, O, C, *k), ``bias`` (M, O).

    The im2col matrix ``(M, C*k, B*L)`` comes from ``Tensor.unfold`` views of the padded input
    and one copy (aten's ``im2col`` kernel, behind ``F.unfold``, measured about 1.7x slower
    for these small maps); dilated convolutions use ``F.unfold``.
    """
    m, o = weight.shape[:2]
    b, c, spatial = x.shape[0] // m, x.shape[1], x.shape[2:]
    kernel = weight.shape[3:]
    nd = len(kernel)
    if any(d != 1 for d in dilation):
        cols = F.unfold(x if nd == 2 else x.unsqueeze(2), tuple(kernel) if nd == 2 else (1, kernel[0]),
                        dilation=dilation if nd == 2 else (1, dilation[0]),
                        padding=padding if nd == 2 else (0, padding[0]),
                        stride=stride if nd == 2 else (1, stride[0]))  # (M*B, C*k, L)
        out_sp = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                  for n, k, s, p, d in zip(spatial, kernel, stride, padding, dilation)]
        cols = cols.reshape(m, b, cols.shape[1], -1).transpose(1, 2).reshape(m, cols.shape[1], -1)
    else:
        pads = [p for pad in reversed(padding) for p in (pad, pad)]
        v = F.pad(x, pads) if any(padding) else x
        for d, (k, s) in enumerate(zip(kernel, stride)):
            v = v.unfold(2 + d, k, s)  # (M*B, C, *out_spatial, *k) after the loop
        out_sp = list(v.shape[2:2 + nd])
        v = v.reshape(m, b, c, *out_sp, *kernel)
        # (M, C, *k, B, *out_spatial): rows ordered like the weight's (C, *k)
        order = [0, 2, *range(3 + nd, 3 + 2 * nd), 1, *range(3, 3 + nd)]
        cols = v.permute(order).reshape(m, c * math.prod(kernel), -1)
    out = torch.baddbmm(bias.unsqueeze(-1), weight.reshape(m, o, -1), cols)  # (M, O, B*L)
    if b == 1:
        return out.reshape(m, o, *out_sp)
    return out.reshape(m, o, b, *out_sp).transpose(1, 2).reshape(m * b, o, *out_sp)


def shared_layer(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, members: int,
                 conv_args: tuple | None) -> torch.Tensor:
    """The first weighted layer on the input every member shares: one ordinary Linear / Conv
    with the members' output channels concatenated (``weight`` (M*O, ...), ``bias`` (M*O,)),
    ``(B, ...) -> (M*B, O, ...)`` member-major (a view at B = 1)."""
    if conv_args is None:
        if x.shape[0] > 1:
            # (M, B, O) directly: the matmul reads the (narrower) input M times instead of the
            # (B, M*O) output being copied into member-major order afterwards.
            f = x.shape[-1]
            w = weight.reshape(f, members, -1).transpose(0, 1)  # (M, F, O) view
            out = torch.baddbmm(bias.reshape(members, 1, -1), x.unsqueeze(0).expand(members, -1, -1), w)
            return out.reshape(-1, out.shape[-1])
        out = torch.addmm(bias, x, weight)  # weight (F, M*O)
    else:
        out = (F.conv1d if x.dim() == 3 else F.conv2d)(x, weight, bias, *conv_args)
    b, rest = out.shape[0], out.shape[2:]
    return out.reshape(b, members, -1, *rest).transpose(0, 1).reshape(members * b, -1, *rest)


def replicate(x: torch.Tensor, members: int) -> torch.Tensor:
    """The input ``(B, ...)`` for every member: ``(M*B, ...)``, member-major."""
    return x.repeat(members, *([1] * (x.dim() - 1)))


def unstack(out: torch.Tensor, members: int) -> torch.Tensor:
    """Member-stacked logits ``(M*B, C)`` -> ``(M, B, C)``."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model returns a {type(out).__name__}, not a logits tensor")
    return out.reshape(members, -1, *out.shape[1:])
