"""Channel dependencies of a model for ``SparseEngine(structure="channel")``, found with
torch-pruning's ``DependencyGraph`` (see :mod:`freetickets.sparse.channels` for the rules).

The graph is traced once and used only to *find* tensors: for each sparse Conv/Linear layer, which
consumer input columns (with the index map through ``flatten``), which BatchNorm and bias belong to
each of its output channels, and whether the layer may lose channels at all. Why not let
torch-pruning remove the channels: during training the network keeps its shapes (masks remove
channels, so the optimizer, checkpoints and DDP see the same tensors); physical removal is the
slim exporter's job. The result is plain tensors; the graph is discarded.

**Residual groups.** When a layer's output channels are added to other layers' outputs (a
residual stream: a stage's stem or shortcut conv and every block's last conv), all those
producers form one channel *unit*: the lowest-indexed producer is the unit's leader and holds
the unit's consumers, BatchNorms and per-channel tensors (every producer's bias, every BatchNorm
of the stream); the other producers list the leader in ``leader`` and mirror its kept channels.
A unit shrinks only when every producer in it is a sparse, ungrouped Conv/Linear weight.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["ChannelLayer", "build_channel_layers"]

_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class ChannelLayer:
    """One sparse weight seen as channels. ``consumers``: ``(layer index, columns)`` with
    ``columns`` a ``(out, w)`` long tensor: the consumer's input columns (weight dim 1) fed by
    each output channel of this layer; ``outgoing``: ``(weight, columns)`` of every consumer,
    sparse or dense (for the channel score). ``extras``: per-channel tensors of this layer's output
    channels (its bias, its BatchNorm's weight and bias) as ``(tensor, index)`` with ``index`` the
    ``(out,)`` positions in the tensor. ``kept_reason`` is empty for removable layers."""

    name: str
    out_channels: int
    in_columns: int
    cell: int  # weights per (row, column): product of the kernel dimensions
    kept_reason: str = ""
    consumers: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    outgoing: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    extras: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    norms: list[tuple[nn.Module, torch.Tensor]] = field(default_factory=list)
    leader: int | None = None  # a coupled producer: the index of its unit's leader (module docstring)
    members: list[int] = field(default_factory=list)  # on a leader: the other producers of its unit

    @property
    def removable(self) -> bool:
        return not self.kept_reason


def _owners(model: nn.Module) -> dict[int, nn.Module]:
    return {id(m.weight): m for m in model.modules() if isinstance(m, _LAYER_TYPES) and isinstance(m.weight, nn.Parameter)}


def _handler_kind(handler: Any) -> str:
    name = getattr(handler, "__name__", "")
    return "out" if name == "prune_out_channels" else "in" if name == "prune_in_channels" else name


def _group(dg, module: nn.Module, index: int):
    import torch_pruning as tp

    fn = tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels
    return dg.get_pruning_group(module, fn, idxs=[index])


def _scan_group(dg, module: nn.Module) -> tuple[str, list, list, list]:
    """Classify channel 0's pruning group of ``module``: (kept reason, consumer modules, norms,
    the other producers coupled to it)."""
    consumers, norms, producers = [], [], []
    for dep, idxs in _group(dg, module, 0):
        target, kind = dep.target.module, _handler_kind(dep.handler)
        if target is module:
            continue
        if isinstance(target, _LAYER_TYPES):
            if getattr(target, "groups", 1) != 1:
                return "a grouped convolution consumes it", [], [], []
            if kind == "out" and ([int(i) for i in idxs] != [0] or target.weight.shape[0] != module.weight.shape[0]):
                return "its output joins another layer's output with a different channel order", [], [], []
            bucket = producers if kind == "out" else consumers
            if target not in bucket:
                bucket.append(target)
        elif isinstance(target, nn.modules.batchnorm._BatchNorm):
            if target not in norms:
                norms.append(target)
        elif isinstance(target, nn.Parameter) or any(True for _ in target.parameters(recurse=False)):
            # a bare parameter added to the output (a learned offset) keeps a removed channel non-zero
            return f"its channels reach {type(target).__name__}, which cannot drop one channel exactly", [], [], []
    if not consumers:
        return "it produces the model's output", [], [], []
    return "", consumers, norms, producers


def _columns(dg, module: nn.Module, consumer: nn.Module, out: int) -> torch.Tensor | None:
    """``(out, w)`` columns of ``consumer`` fed by each output channel of ``module`` (None when
    the channels do not map to equal-sized column blocks)."""
    def cols(index: int) -> list[int]:
        for dep, idxs in _group(dg, module, index):
            if dep.target.module is consumer and _handler_kind(dep.handler) == "in":
                return sorted(int(i) for i in idxs)
        return []

    in_cols = consumer.weight.shape[1]
    if in_cols == out and cols(0) == [0] and cols(out - 1) == [out - 1]:
        return torch.arange(out).view(out, 1)  # identity: skip the per-channel queries
    rows = [cols(c) for c in range(out)]
    if not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        return None
    return torch.tensor(rows, dtype=torch.long)


def build_channel_layers(model: nn.Module, named: Sequence[tuple[str, nn.Parameter]],
                         example_inputs: Any) -> list[ChannelLayer]:
    """Trace ``model`` on ``example_inputs`` with torch-pruning's ``DependencyGraph`` and describe
    every sparse parameter of ``named`` as a :class:`ChannelLayer` (module docstring)."""
    import torch_pruning as tp

    owners = _owners(model)
    index_of = {id(p): i for i, (_, p) in enumerate(named)}
    was_training = model.training
    model.eval()  # no BatchNorm statistics move while tracing
    try:
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    finally:
        model.train(was_training)
    layers: list[ChannelLayer] = []
    unit_of: dict[int, int] = {}  # id(module) of a coupled producer -> index of its unit's leader
    for name, p in named:
        module = owners.get(id(p))
        cell = math.prod(int(s) for s in p.shape[2:])
        layer = ChannelLayer(name, int(p.shape[0]), int(p.shape[1]) if p.dim() > 1 else 1, cell)
        if module is not None and id(module) in unit_of:  # a later producer of a unit seen already
            layer.leader = unit_of[id(module)]
            layers[layer.leader].members.append(len(layers))
            layers.append(layer)
            continue
        if module is None:
            layer.kept_reason = "it is not a Conv/Linear weight"
        elif getattr(module, "groups", 1) != 1:
            layer.kept_reason = "grouped convolution"
        else:
            reason, consumers, norms, producers = _scan_group(dg, module)
            if not reason and any(id(q.weight) not in index_of for q in producers):
                reason = "its output joins the output of a layer that is not sparse (residual addition)"
            layer.kept_reason = reason
            for consumer in consumers:
                columns = _columns(dg, module, consumer, layer.out_channels)
                if columns is None:
                    layer.kept_reason = f"its channels map irregularly onto {type(consumer).__name__} inputs"
                    layer.consumers.clear()
                    layer.outgoing.clear()
                    break
                layer.outgoing.append((consumer.weight, columns))  # every consumer counts in the score
                if id(consumer.weight) in index_of:  # masked columns; a dense (excluded) consumer just receives zeros
                    layer.consumers.append((index_of[id(consumer.weight)], columns))
            if not layer.kept_reason:
                idx = torch.arange(layer.out_channels)
                for producer in (module, *producers):  # a unit's leader holds every producer's bias
                    if producer.bias is not None:
                        layer.extras.append((producer.bias, idx))
                    if producer is not module:
                        unit_of[id(producer)] = len(layers)
                for norm in norms:
                    layer.norms.append((norm, idx))
                    layer.extras += [(t, idx) for t in (norm.weight, norm.bias) if t is not None]
        layers.append(layer)
    del dg
    return layers
