"""Channel-structured masks for :class:`~freetickets.sparse.engine.SparseEngine` (``structure="channel"``).

A channel ticket is a smaller dense network: every sparse weight ``W`` of shape ``(out, in, *k)``
has the mask ``outer(keep_out, keep_in)`` broadcast over the kernel dimensions. Row ``o`` is all
False iff output channel ``o`` is removed; column ``i`` is all False iff the channel (or, after a
flatten, the block of features) feeding it was removed upstream.

**Dependencies** come from torch-pruning's ``DependencyGraph`` (traced once at construction on an
example batch). For each sparse Conv/Linear layer ``P`` the pruning group of one output channel
says which other tensors index that channel: the consumers' input columns (with the index map
through ``flatten``), the BatchNorm that normalises it, and any other producer coupled to it. ``P``
may lose output channels ("removable") only when its group holds nothing but BatchNorms,
parameter-free operations and ungrouped Conv/Linear layers. It keeps all its output channels when
the group holds a module we cannot zero exactly per channel (GroupNorm/LayerNorm mix channels;
attention), joins a producer outside the sparse set, or has no consumer (it produces the model's
output, e.g. the logits). Kept layers' input columns still follow their producers.

**Residual groups**: producers whose outputs are added together form one channel unit
(:mod:`freetickets.sparse.channel_graph`): they keep the same output channels, get one count
from the unit's density (the numel-weighted mean of the producers' densities), and prune and
regrow together; the unit's score uses the stream's consumers and the mean BatchNorm scale. We use the graph only to *find* these tensors: the
masks, not torch-pruning, remove the channels, so the network keeps its shapes during training.

**Exact zeros.** A removed channel is 0 in its weight rows, its bias, and its BatchNorm's affine
weight and bias, and the optimizer state of all of them is zeroed at every step
(:meth:`ChannelStructure.apply`). Then the channel's activation is exactly 0, the consumers'
columns are masked too, and the network computes what the physically smaller network computes.

**Channel counts** (:func:`allocate_channels`): see ``docs/algorithms.md``. In short, a layer of
density ``d_l`` (from ``erk``/``er``/``uniform``) keeps ``round(min(1, a * sqrt(d_l)) * out_l)``
output channels (at least 1), since a weight survives when both its output and its input channel
survive; the one scale ``a`` is chosen (bisection) so that the exact active-weight count, which
includes the input columns the producers removed, is closest to ``round((1 - S) * N)``.

**Updates** (:meth:`ChannelStructure.update`): each removable layer keeping ``c`` of ``out``
channels prunes the ``k = ceil(p * c)`` channels of smallest score and regrows ``k`` channels
uniformly at random among the removed ones (SET-style, from the engine's generator). The score of
channel ``c`` is ``|gamma_c| * sum |outgoing weights of c|``: its BatchNorm scale (1 without a
BatchNorm; the scaling-factor criterion of network slimming, Liu et al., ICCV 2017) times the L1
norm of the consumer columns it feeds, i.e. how strongly the channel reaches the next layer.
Chase (Yin et al., NeurIPS 2023) ranks channels by the mean magnitude of their incoming weights;
behind a BatchNorm that magnitude does not change what the channel computes, and on the MNIST-1D
MLP it did worse on validation (docs/benchmarks.md). Why not a
gradient score as RigL uses for weights: a removed channel has zero incoming weights, zero BN
affine parameters and zero outgoing columns, so every gradient that would rank it (its weights,
its BN parameters, its outgoing columns) is exactly 0; a dense gradient cannot tell removed
channels apart. Why regrown channels do not start all-zero as RigL's weights do: with zero
incoming weights and a zero BN affine weight the channel is a saddle of the loss and would
never train. A regrown channel's incoming weights are drawn afresh (normal, with the standard
deviation of the layer's surviving active weights), its BatchNorm affine weight is 1, bias 0,
running statistics reset (mean 0, variance 1), and its outgoing consumer columns start at
exactly 0, so, as in RigL, the network's output is unchanged at the moment of growth. The
optimizer state of every regrown position is zeroed.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from freetickets.names import STRUCTURES
from freetickets.sparse.channel_graph import ChannelLayer, build_channel_layers
from freetickets.sparse.distributions import layer_densities
from freetickets.sparse.selection import ceil_product, round_half_up, select_smallest

__all__ = ["STRUCTURES", "ChannelLayer", "ChannelStructure", "allocate_channels", "build_channel_layers",
           "channel_densities", "magnitude_channel_masks"]


def _active_total(layers: Sequence[ChannelLayer], counts: Sequence[int]) -> int:
    kin = [layer.in_columns for layer in layers]
    for layer, c in zip(layers, counts):
        for j, columns in layer.consumers:
            kin[j] -= (layer.out_channels - c) * columns.shape[1]
    return sum(c * k * layer.cell for layer, c, k in zip(layers, counts, kin))


def allocate_channels(layers: Sequence[ChannelLayer], sparsity: float, distribution: str) -> list[int]:
    """Output channels each layer keeps (module docstring; ``docs/algorithms.md``)."""
    shapes = {layer.name: (layer.out_channels, layer.in_columns, layer.cell) for layer in layers}
    densities = layer_densities(shapes, sparsity, distribution)
    numel = sum(layer.out_channels * layer.in_columns * layer.cell for layer in layers)
    target = round_half_up((1.0 - sparsity) * numel)
    roots = [math.sqrt(_unit_density(layers, densities, j)) for j in range(len(layers))]

    def counts(scale: float) -> list[int]:
        return [min(layer.out_channels, max(1, round_half_up(min(1.0, scale * r) * layer.out_channels)))
                if layer.removable else layer.out_channels for layer, r in zip(layers, roots)]

    lo, hi = 0.0, 1.0 / max(min(r for r in roots if r > 0) if any(roots) else 1.0, 1e-12)
    best = counts(hi)
    best_gap = abs(_active_total(layers, best) - target)
    for _ in range(60):  # the total is non-decreasing in the scale: bisect towards the target
        mid = (lo + hi) / 2
        trial = counts(mid)
        total = _active_total(layers, trial)
        if abs(total - target) < best_gap or (abs(total - target) == best_gap and total <= target):
            best, best_gap = trial, abs(total - target)
        if total < target:
            lo = mid
        else:
            hi = mid
    return best


def _unit_density(layers: Sequence[ChannelLayer], densities: Mapping[str, float], j: int) -> float:
    """Density of layer ``j``'s channel unit: the layer's own density, or for the producers of a
    residual group the numel-weighted mean of their densities (so the group's planned weights
    are what its producers' densities sum to; ``docs/algorithms.md``)."""
    leader = layers[j].leader if layers[j].leader is not None else j
    unit = [leader, *layers[leader].members]
    sizes = [layers[i].out_channels * layers[i].in_columns * layers[i].cell for i in unit]
    return sum(densities[layers[i].name] * n for i, n in zip(unit, sizes)) / max(1, sum(sizes))


class ChannelStructure:
    """Channel bookkeeping of one engine: which output channels each sparse layer keeps, the
    masks they imply, exact zeros of removed channels, and channel prune-and-regrow."""

    def __init__(self, layers: list[ChannelLayer], params: Sequence[nn.Parameter]) -> None:
        self.layers = layers
        self.params = list(params)
        self.keep_out: list[torch.Tensor] = [torch.ones(layer.out_channels, dtype=torch.bool) for layer in layers]
        self.counts = [layer.out_channels for layer in layers]
        self._zero_plan: list[tuple[list[tuple[torch.Tensor, torch.Tensor]], bool]] = []
        self.refresh()

    def refresh(self) -> None:
        """Recompute counts and, per layer, what :meth:`apply` zeroes (the removed channels'
        positions in each per-channel tensor, on its device; whether the weight mask is not
        all True), so that a training step reads no mask back from the device."""
        self.counts = [int(k.sum()) for k in self.keep_out]
        self._zero_plan = []
        for j, layer in enumerate(self.layers):
            removed = ~self.keep_out[j]
            extras = [(t, idx[removed].to(t.device)) for t, idx in layer.extras] if bool(removed.any()) else []
            self._zero_plan.append((extras, bool(removed.any()) or not bool(self.keep_in(j).all())))

    # ---------------------------------------------------------------- masks
    def keep_in(self, j: int) -> torch.Tensor:
        """Bool ``(in_columns,)``: input columns of layer ``j`` whose producing channel is kept."""
        keep = torch.ones(self.layers[j].in_columns, dtype=torch.bool)
        for i, layer in enumerate(self.layers):
            for consumer, columns in layer.consumers:
                if consumer == j:
                    keep[columns[~self.keep_out[i]].reshape(-1)] = False
        return keep

    def mask(self, j: int) -> torch.Tensor:
        """``outer(keep_out, keep_in)`` broadcast to the weight's shape, on its device."""
        p = self.params[j]
        extra = (1,) * (p.dim() - 2)
        out = self.keep_out[j].view(-1, 1, *extra) & self.keep_in(j).view(1, -1, *extra)
        return out.expand(p.shape).contiguous().to(p.device)

    def set_initial(self, counts: Sequence[int], generator: torch.Generator) -> None:
        """Keep ``counts[j]`` output channels of each layer, drawn uniformly (in layer order)."""
        for j, (layer, c) in enumerate(zip(self.layers, counts)):
            if layer.leader is not None:  # a residual group keeps its leader's channels
                self.keep_out[j] = self.keep_out[layer.leader].clone()
                continue
            keep = torch.zeros(layer.out_channels, dtype=torch.bool)
            keep[torch.randperm(layer.out_channels, generator=generator)[:c]] = True
            self.keep_out[j] = keep
        self.refresh()

    def load_masks(self, masks: Sequence[torch.Tensor]) -> None:
        """Read kept output channels back from masks (rows with a True entry); ``ValueError``
        unless the masks are exactly the channel masks those rows imply."""
        for j, m in enumerate(masks):
            self.keep_out[j] = m.reshape(m.shape[0], -1).any(dim=1).cpu()
        for j, layer in enumerate(self.layers):
            if layer.leader is not None and not torch.equal(self.keep_out[j], self.keep_out[layer.leader]):
                raise ValueError(f"masks[{layer.name!r}]: must keep the same output channels as "
                                 f"masks[{self.layers[layer.leader].name!r}] (their outputs are added)")
        for j, m in enumerate(masks):
            if not torch.equal(self.mask(j).cpu(), m.to(torch.bool).cpu()):
                raise ValueError(f"masks[{self.layers[j].name!r}]: not channel-structured "
                                 f"(expected outer(kept output channels, kept input channels))")
        self.refresh()

    def describe(self) -> dict[str, Any]:
        """``name -> kept/out`` channels and, for layers that cannot shrink, why."""
        def unit(layer: ChannelLayer) -> dict[str, str]:
            leader = layer if layer.leader is None else self.layers[layer.leader]
            return {"residual_group": leader.name} if leader.members else {}

        return {layer.name: {"channels": int(k.sum()), "out_channels": layer.out_channels, **unit(layer),
                             **({"kept_because": layer.kept_reason} if layer.kept_reason else {})}
                for layer, k in zip(self.layers, self.keep_out)}

    # ---------------------------------------------------------------- exact zeros
    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer | None, masks: Sequence[torch.Tensor]) -> None:
        """Zero removed channels' bias/BN affine parameters and the optimizer state of every
        masked position (weights and those per-channel tensors)."""
        for j, (extras, masked) in enumerate(self._zero_plan):
            for tensor, where in extras:
                tensor.index_fill_(0, where, 0.0)
                for value in _state(optimizer, tensor):
                    value.index_fill_(0, where, 0.0)
            if masked:
                for value in _state(optimizer, self.params[j]):
                    value.mul_(masks[j].view(torch.uint8))

    # ---------------------------------------------------------------- updates
    @torch.no_grad()
    def update(self, fraction: float, masks: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer | None,
               generator: torch.Generator, regrow_pruned: bool) -> tuple[int, int, list[torch.Tensor]]:
        """Prune and regrow channels in every removable layer; update ``masks`` in place.

        Returns ``(weights moved, weights restarted in place, per-layer bool of regrown
        positions)``: restarted = positions of channels pruned and regrown in this same update,
        counted in ``moved`` too (they restart like RigL's reactivated weights).
        """
        grown_ch: list[torch.Tensor] = []
        for j, layer in enumerate(self.layers):
            if layer.leader is not None:  # the residual group's leader (a lower index) decided
                self.keep_out[j] = self.keep_out[layer.leader].clone()
                grown_ch.append(grown_ch[layer.leader].clone())
                continue
            keep = self.keep_out[j]
            c = int(keep.sum())
            none = torch.zeros_like(keep)
            if not layer.removable or c >= layer.out_channels:
                grown_ch.append(none)
                continue
            k = ceil_product(fraction, c)
            if not regrow_pruned:
                k = min(k, layer.out_channels - c)
            if k <= 0:
                grown_ch.append(none)
                continue
            score = self._score(j)
            pruned = select_smallest(score, keep, k)
            eligible = ~(keep & ~pruned) if regrow_pruned else ~keep
            candidates = eligible.nonzero().view(-1)
            grown = torch.zeros_like(keep)
            grown[candidates[torch.randperm(candidates.numel(), generator=generator)[:k]]] = True
            self.keep_out[j] = (keep & ~pruned) | grown
            grown_ch.append(grown)
        return self._apply_update(masks, grown_ch, optimizer, generator)

    def _score(self, j: int) -> torch.Tensor:
        """``(out,)`` channel importance: |BatchNorm scale| x L1 norm of the channel's outgoing
        weights in every consumer (module docstring), on the CPU."""
        layer = self.layers[j]
        score = torch.zeros(layer.out_channels)
        for weight, columns in layer.outgoing:
            w = weight.detach().abs()
            per_column = w.transpose(0, 1).reshape(w.shape[1], -1).sum(dim=1).float().cpu()
            score += per_column[columns].sum(dim=1)
        scales = [norm.weight.detach().abs().float().cpu()[idx] for norm, idx in layer.norms if norm.weight is not None]
        if layer.members and scales:  # a residual group: the mean scale of the stream's BatchNorms
            return score * torch.stack(scales).mean(dim=0)
        for scale in scales:
            score *= scale
        return score

    def _apply_update(self, masks: Sequence[torch.Tensor], grown_ch: list[torch.Tensor],
                      optimizer: torch.optim.Optimizer | None,
                      generator: torch.Generator) -> tuple[int, int, list[torch.Tensor]]:
        moved = restarted = 0
        fresh_all: list[torch.Tensor] = []
        for j, layer in enumerate(self.layers):
            p, old = self.params[j], masks[j]
            new = self.mask(j)
            # positions restarting now: rows of regrown channels, columns fed by regrown channels
            reset = torch.zeros(layer.out_channels, layer.in_columns, dtype=torch.bool)
            reset[grown_ch[j]] = True
            for i, producer in enumerate(self.layers):
                for consumer, columns in producer.consumers:
                    if consumer == j:
                        reset[:, columns[grown_ch[i]].reshape(-1)] = True
            reset = reset.view(*reset.shape, *(1,) * (p.dim() - 2)).expand(p.shape).to(p.device) & new
            fresh = reset | (new & ~old)
            moved += int(fresh.sum())
            restarted += int((reset & old).sum())
            self._restart_weights(j, p, old, new, fresh, grown_ch[j], generator)
            keep_state = (new & ~fresh).view(torch.uint8)
            for value in _state(optimizer, p):
                value.mul_(keep_state)
            old.copy_(new)
            fresh_all.append(fresh)
            self._restart_channels(j, grown_ch[j], optimizer)
        self.refresh()
        return moved, restarted, fresh_all

    def _restart_weights(self, j: int, p: torch.Tensor, old: torch.Tensor, new: torch.Tensor,
                         fresh: torch.Tensor, grown: torch.Tensor, generator: torch.Generator) -> None:
        """Fresh positions start at 0, except the incoming weights of regrown channels, which are
        drawn from N(0, std of the layer's surviving active weights) (module docstring)."""
        with torch.no_grad():
            survivors = p.detach()[(old & new & ~fresh)]
            std = float(survivors.float().std()) if survivors.numel() > 1 else 0.0
            if not math.isfinite(std) or std == 0.0:
                fan_in = self.layers[j].in_columns * self.layers[j].cell
                std = math.sqrt(2.0 / max(1, fan_in))
            p.masked_fill_(fresh, 0.0)
            if bool(grown.any()):
                rows = grown.nonzero().view(-1)
                draw = torch.randn((rows.numel(), *p.shape[1:]), generator=generator) * std
                block = p.data[rows.to(p.device)]
                row_mask = new[rows.to(p.device)]
                p.data[rows.to(p.device)] = torch.where(row_mask, draw.to(p.device, p.dtype), block)
            p.mul_(new.view(torch.uint8)).add_(0.0)

    def _restart_channels(self, j: int, grown: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        """Regrown channels: bias 0, BatchNorm weight 1 / bias 0 / statistics reset, state zeroed."""
        if not bool(grown.any()):
            return
        layer = self.layers[j]
        for tensor, idx in layer.extras:
            where = idx[grown].to(tensor.device)
            tensor.data.index_fill_(0, where, 0.0)
            for value in _state(optimizer, tensor):
                value.index_fill_(0, where, 0.0)
        for norm, idx in layer.norms:
            where = idx[grown]
            if norm.weight is not None:
                norm.weight.data.index_fill_(0, where.to(norm.weight.device), 1.0)
            if norm.running_mean is not None:
                norm.running_mean.index_fill_(0, where.to(norm.running_mean.device), 0.0)
                norm.running_var.index_fill_(0, where.to(norm.running_var.device), 1.0)


def magnitude_channel_masks(model: nn.Module, named: Sequence[tuple[str, nn.Parameter]], sparsity: float,
                            distribution: str, example_inputs: Any) -> dict[str, torch.Tensor]:
    """One-shot channel pruning of a trained network (PF with ``structure="channel"``): each
    layer keeps the :func:`allocate_channels` count of output channels with the largest L1 norm
    of their weights (ties: lower index); ``name -> bool mask``."""
    from freetickets.sparse.selection import select_largest

    layers = build_channel_layers(model, named, example_inputs)
    channels = ChannelStructure(layers, [p for _, p in named])
    for j, c in enumerate(allocate_channels(layers, sparsity, distribution)):
        if layers[j].leader is not None:  # a residual group: every producer keeps its leader's channels
            channels.keep_out[j] = channels.keep_out[layers[j].leader].clone()
            continue
        score = sum(named[i][1].detach().abs().reshape(layers[i].out_channels, -1).sum(dim=1).float().cpu()
                    for i in (j, *layers[j].members))
        channels.keep_out[j] = select_largest(score, torch.ones_like(score, dtype=torch.bool), c)
    return {name: channels.mask(j) for j, (name, _) in enumerate(named)}


def channel_densities(model: nn.Module, named: Sequence[tuple[str, nn.Parameter]], sparsity: float,
                      distribution: str, example_inputs: Any) -> dict[str, float]:
    """``name -> density`` of every layer's channel mask at the :func:`allocate_channels` counts
    (the same for every choice of channels; the ``flops`` command plans with these)."""
    layers = build_channel_layers(model, named, example_inputs)
    counts = allocate_channels(layers, sparsity, distribution)
    kin = [layer.in_columns for layer in layers]
    for layer, c in zip(layers, counts):
        for j, columns in layer.consumers:
            kin[j] -= (layer.out_channels - c) * columns.shape[1]
    return {layer.name: c * k / (layer.out_channels * layer.in_columns) for layer, c, k in zip(layers, counts, kin)}


def _state(optimizer: torch.optim.Optimizer | None, tensor: torch.Tensor) -> list[torch.Tensor]:
    """Optimizer-state tensors of ``tensor``'s shape (momentum, Adam moments, ...)."""
    if optimizer is None:
        return []
    state: Mapping[str, Any] = optimizer.state.get(tensor, {})
    return [v for v in state.values() if isinstance(v, torch.Tensor) and v.shape == tensor.shape]
