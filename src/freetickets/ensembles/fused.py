"""The fused (channel-stacked) form of M members of one architecture: one network, one pass.

The M members become one network whose activations are ``(B, M * C, ...)`` with member-major
channel blocks: convolutions become grouped convolutions (``groups * M``), BatchNorm one
BatchNorm over ``M * C`` channels, Linear a block-diagonal batched matmul (:class:`BlockLinear`).
Supports models built from Conv1d/2d/3d, BatchNorm1d/2d/3d, Linear and parameter-free modules;
anything else raises, and :class:`~freetickets.ensembles.ensemble.Ensemble` falls back to its
other paths. The members' parameters and buffers are re-pointed to views of the joined tensors
(one copy of the weights).
"""
from __future__ import annotations

import copy

import torch
from torch import fx, nn

from freetickets.models._efficient_common import set_submodule

__all__ = ["BlockLinear", "FusedMembers"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class BlockLinear(nn.Module):
    """M independent ``Linear(F, O)`` maps on ``(..., M*F) -> (..., M*O)``; weight ``(M, O, F)``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, o, f = self.weight.shape
        if x.shape[-1] != m * f:
            raise RuntimeError(f"BlockLinear: expected last dim {m * f}, got {x.shape[-1]}")
        xm = x.reshape(-1, m, f).transpose(0, 1)  # (M, N, F)
        out = torch.baddbmm(self.bias.unsqueeze(1), xm, self.weight.transpose(1, 2)) if self.bias is not None \
            else torch.bmm(xm, self.weight.transpose(1, 2))
        return out.transpose(0, 1).reshape(*x.shape[:-1], m * o)


def _cat_param(mods: list[nn.Module], attr: str, fused_mod: nn.Module, *, stack: bool = False) -> None:
    """Concatenate (or stack) ``attr`` of the members into ``fused_mod`` and re-point members to views."""
    tensors = [getattr(m, attr) for m in mods]
    if tensors[0] is None:
        return
    is_param = isinstance(tensors[0], nn.Parameter)
    joined = (torch.stack if stack else torch.cat)([t.detach() for t in tensors], 0)
    if is_param:
        setattr(fused_mod, attr, nn.Parameter(joined, requires_grad=False))
        joined = getattr(fused_mod, attr).data
    else:
        fused_mod._buffers[attr] = joined
    n = tensors[0].shape[0]
    for k, (m, t) in enumerate(zip(mods, tensors)):
        view = joined[k] if stack else joined[k * n : (k + 1) * n]
        if is_param:
            t.data = view
        else:
            m._buffers[attr] = view


def _fuse_module(mods: list[nn.Module]) -> nn.Module:
    first, M = mods[0], len(mods)
    if isinstance(first, _CONVS):
        if first.padding_mode != "zeros":
            raise TypeError(f"padding_mode {first.padding_mode!r} is not supported")
        fused = copy.copy(first)
        fused._parameters = dict(first._parameters)
        fused.in_channels, fused.out_channels = M * first.in_channels, M * first.out_channels
        fused.groups = M * first.groups
        _cat_param(mods, "weight", fused)
        _cat_param(mods, "bias", fused)
        return fused
    if isinstance(first, _NORMS):
        fused = copy.copy(first)
        fused._parameters, fused._buffers = dict(first._parameters), dict(first._buffers)
        fused.num_features = M * first.num_features
        for attr in ("weight", "bias", "running_mean", "running_var"):
            _cat_param(mods, attr, fused)
        return fused
    if type(first) is nn.Linear:
        return _fused_linear(mods)
    if any(p is not None for p in first._parameters.values()) or any(
        b is not None for b in first._buffers.values()
    ):
        raise TypeError(f"{type(first).__name__} has parameters/buffers and no fused form")
    fused = copy.copy(first)
    fused._modules = {
        name: _fuse_module([m._modules[name] for m in mods]) if child is not None else None
        for name, child in first._modules.items()
    }
    return fused


def _fuse_leaves(members: list[fx.GraphModule]) -> fx.GraphModule:
    """The fused form of traced members (e.g. BatchNorm-folded by ``torch.fx``'s ``fuse``): member 0's
    graph with every leaf module replaced by the fused module of that name across the members."""
    net = copy.deepcopy(members[0])
    mods = [dict(m.named_modules()) for m in members]
    for name, mod in list(net.named_modules()):
        if name and not any(True for _ in mod.children()):
            set_submodule(net, name, _fuse_module([mm[name] for mm in mods]))
    return net


def _fused_linear(mods: list[nn.Module]) -> BlockLinear:
    fused = BlockLinear(torch.empty(0), None)
    _cat_param(mods, "weight", fused, stack=True)
    _cat_param(mods, "bias", fused, stack=True)
    return fused


class FusedMembers(nn.Module):
    """M members as one channel-stacked network: ``(B, C, ...)`` -> logits ``(M, B, K)``.

    Channel-stacked ("fused") form of M same-architecture members: one network, grouped convs.

    Why: running M members through ``torch.func.vmap`` turns every convolution into a grouped
    convolution anyway, but vmap's batching rules move the member dimension in and out of the
    channel dimension around every op (permute + copy), which on CPU made the batched ensemble
    slower than running the members one after another. Here the activations stay in one layout,
    ``(B, M * C, ...)`` with member-major channel blocks, for the whole forward pass:

    * the input ``(B, C, ...)`` is repeated M times along channels;
    * ``ConvNd(C_in, C_out, groups=g)`` becomes ``ConvNd(M*C_in, M*C_out, groups=M*g)`` with the
      members' weights concatenated (member m's filters only see member m's channels);
    * ``BatchNormNd(C)`` becomes ``BatchNormNd(M*C)`` with concatenated affine parameters and
      running statistics;
    * ``Linear(F, O)`` becomes a block-diagonal linear map on ``(..., M*F)`` (a batched matmul);
    * parameter-free modules (ReLU, pooling, Flatten, Dropout, ...) and element-wise code in
      ``forward`` (residual additions) work unchanged, and flattening ``(B, M*C, H, W)`` keeps each
      member's features contiguous, so a member's classifier sees exactly its own features.

    The output ``(B, M*K)`` is reshaped to ``(M, B, K)``. The conversion raises ``TypeError`` for
    any other module with parameters or buffers; forward code that mixes channels by hand (e.g.
    ``x.view(-1, 640)`` or a channel softmax) cannot be detected here, so :class:`Ensemble` checks
    the fused output against the members once and falls back if they differ.

    Member modules are re-pointed to views of the fused tensors, so there is one copy of the
    weights and in-place changes to a member (``load_state_dict``) are seen by the fused network.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        first = members[0]
        for k, m in enumerate(members[1:], 1):
            if isinstance(first, fx.GraphModule):  # one generated class per instance: compare the code
                if not isinstance(m, fx.GraphModule) or m.code != first.code:
                    raise TypeError(f"member {k}'s traced graph differs from member 0's")
            elif type(m) is not type(first):
                raise TypeError(f"member {k} is a {type(m).__name__}, member 0 a {type(first).__name__}")
        self.members = len(members)
        self.net = _fuse_leaves(members) if isinstance(first, fx.GraphModule) else _fuse_module(members)
        self.net.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise RuntimeError("fused members need inputs (B, C, ...)")
        reps = [1, self.members] + [1] * (x.dim() - 2)
        out = self.net(x.repeat(*reps))
        b = x.shape[0]
        return out.reshape(b, self.members, -1).transpose(0, 1)
