"""Slim tickets: a channel-structured ticket as the physically smaller dense network.

A ticket trained with ``SparseEngine(structure="channel")`` has masks in which a removed output
channel (or neuron) is a mask row with no True entry, and everything that channel would leak
into (bias, the affine weight and bias of its BatchNorm) is exactly zero. The masked network
then computes exactly what the network *without* those channels computes, so we can remove them
physically and run a smaller dense network: real speed instead of multiplied-by-zero weights.

How (:func:`slim_member`): the model's dependency graph is traced with torch-pruning's
``DependencyGraph``; for every group of coupled channels (a layer's outputs, its BatchNorm, the
next layer's input columns, a flattened block of a Linear's columns, and every producer of a
residual addition) the channels removed are those whose rows are all False in the mask of
*every* producer in the group (a producer without a mask, or the layer producing the logits,
keeps all its channels). The group is pruned with torch-pruning, which shrinks every coupled
parameter consistently. Because the masks alone cannot prove that nothing leaks (a non-zero
bias of a removed channel, say), the slim copy is then run against the masked model on a fixed
random batch and refused with :class:`~freetickets.errors.UserError` unless the logits agree to
fp32 tolerance.

Members of one channel run keep the same number of channels per layer, so their slim copies
share one architecture and run as one packed forward (:mod:`freetickets.ensembles.packed`).
:func:`slim_cost` measures their exact inference FLOPs (``FlopCounterMode`` on the slim modules,
the convention of :mod:`freetickets.flops.counter`), parameters and bytes.
"""
from __future__ import annotations

import copy
import io
import logging
from typing import Any, Sequence

import torch
from torch import nn

from freetickets.errors import UserError
from freetickets.sparse.params import SPARSE_MODULE_TYPES

__all__ = ["slim_member", "slim_cost", "random_channel_masks", "logits_layer", "pack_tickets"]

logger = logging.getLogger(__name__)

# Relative tolerance (to the largest logit magnitude, at least 1) of the slim-versus-masked check.
# Removing zero channels changes only the order of fp32 sums (~1e-6 relative); a leaking removed
# channel changes logits by O(weights).
_SLIM_TOL = 1e-4


def _example_input(model: nn.Module, input_shape: Sequence[int], batch: int = 1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    ref = next(iter(model.parameters()))
    x = torch.randn((batch, *input_shape), generator=generator, dtype=torch.float32)
    return x.to(device=ref.device, dtype=ref.dtype)


def logits_layer(model: nn.Module, input_shape: Sequence[int]) -> nn.Module | None:
    """The Conv/Linear module whose output *is* the model's output (the logits), or None.

    Found by one forward pass with hooks, so any module tree works; its output channels are
    never removed (they are the classes).
    """
    outputs: dict[int, nn.Module] = {}
    hooks = [mod.register_forward_hook(lambda mod, _i, out: outputs.__setitem__(id(out), mod))
             for mod in model.modules() if isinstance(mod, SPARSE_MODULE_TYPES)]
    try:
        with torch.no_grad():
            out = model(_example_input(model, input_shape))
    finally:
        for h in hooks:
            h.remove()
    return outputs.get(id(out))


def _channel_groups(model: nn.Module, input_shape: Sequence[int]):
    """torch-pruning's dependency graph of ``model`` and its prunable output-channel groups.

    Returns ``(graph, groups)``; ``groups`` lists ``(root_module, producers, group)`` where
    ``producers`` are the Conv/Linear modules whose *output* channels the group removes (more
    than one at a residual addition). The logits layer's group is left out.
    """
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        head = logits_layer(model, input_shape)
        with torch.enable_grad():  # torch-pruning traces the graph through autograd
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=_example_input(model, input_shape), verbose=False)
        groups = []
        ignored = [head] if head is not None else []
        for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=SPARSE_MODULE_TYPES):
            producers = [dep.target.module for dep, _ in group
                         if graph.is_out_channel_pruning_fn(dep.handler)
                         and isinstance(dep.target.module, SPARSE_MODULE_TYPES)]
            groups.append((group[0].dep.target.module, producers, group))
    finally:
        model.train(was_training)
    return graph, groups


def _removed_rows(module: nn.Module, masks: dict[str, torch.Tensor], names: dict[int, str]) -> set[int]:
    """Output channels of ``module`` whose mask rows have no True entry (none without a mask)."""
    mask = masks.get(names.get(id(module.weight), ""))
    if mask is None:
        return set()
    rows = mask.reshape(mask.shape[0], -1).any(dim=1)
    return set(torch.nonzero(~rows).flatten().tolist())


def slim_member(model: nn.Module, masks: dict[str, torch.Tensor], input_shape: Sequence[int], *,
                check: bool = True) -> nn.Module:
    """A physically smaller copy of the masked ``model`` without its removed channels (eval mode).

    model: a member with masked weights at zero (left unchanged; a deep copy is pruned).
    masks: parameter name -> bool mask of that weight (a ticket's masks). input_shape: one
    sample's shape without the batch dimension (the manifest's ``input_shape``).
    check: compare the slim copy's logits with ``model``'s on a fixed random batch of 4 and
    raise :class:`UserError` when they differ by more than 1e-4 relative (the masks were not
    channel-structured, or a removed channel leaks through a bias or BatchNorm).
    A member without removed channels comes back as an unchanged copy.
    """
    slim = copy.deepcopy(model).eval()
    names = {id(p): n for n, p in slim.named_parameters()}
    graph, groups = _channel_groups(slim, input_shape)
    plan = []
    for root, producers, _ in groups:
        removed = set.intersection(*(_removed_rows(p, masks, names) for p in producers)) if producers else set()
        n_out = root.weight.shape[0]
        if len(removed) >= n_out:  # keep one channel rather than an empty layer (it is all zero)
            removed.discard(min(removed))
        if removed:
            plan.append((root, sorted(removed)))
    with torch.no_grad():
        for root, idxs in plan:
            pruner = graph.get_pruner_of_module(root)
            graph.get_pruning_group(root, pruner.prune_out_channels, idxs).prune()
    if check:
        _check_agrees(model, slim, input_shape)
    return slim


@torch.no_grad()
def _check_agrees(masked: nn.Module, slim: nn.Module, input_shape: Sequence[int]) -> None:
    was_training = masked.training
    masked.eval()
    try:
        x = _example_input(masked, input_shape, batch=4, generator=torch.Generator().manual_seed(0))
        ref, got = masked(x).float(), slim(x).float()
    finally:
        masked.train(was_training)
    diff = (ref - got).abs().max().item() if ref.shape == got.shape else float("nan")
    scale = max(1.0, ref.abs().max().item())
    if not diff <= _SLIM_TOL * scale:
        raise UserError(
            f"slim export: the slim network's logits differ from the masked ticket's by {diff:.3g} "
            "(allowed 1e-4 relative); the ticket is not channel-structured (train with "
            "--structure channel) or a removed channel leaks through a bias or BatchNorm"
        )


def _state_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


@torch.no_grad()
def slim_cost(models: Sequence[nn.Module], input_shape: Sequence[int]) -> dict[str, Any]:
    """Exact inference cost of slim members, measured on the slim modules themselves.

    Returns ``inference_flops`` (per sample, all members: ``FlopCounterMode``'s total of one
    batch-1 forward per member, i.e. 2 x multiply-accumulates of convolutions and matmuls, the
    convention of :mod:`freetickets.flops.counter`), ``params`` (all members' parameters; every
    one is stored and computed, none is zero by structure), ``param_bytes`` (their bytes in
    their dtypes) and ``state_bytes`` (bytes of ``torch.save`` of every member's state dict,
    BatchNorm statistics included), plus ``per_member`` lists of the FLOPs and params.
    """
    from torch.utils.flop_counter import FlopCounterMode

    flops, params, pbytes, sbytes = [], [], 0, 0
    for m in models:
        counter = FlopCounterMode(display=False)
        was_training = m.training
        m.eval()
        try:
            with counter:
                m(_example_input(m, input_shape))
        finally:
            m.train(was_training)
        flops.append(int(counter.get_total_flops()))
        params.append(sum(p.numel() for p in m.parameters()))
        pbytes += sum(p.numel() * p.element_size() for p in m.parameters())
        sbytes += _state_bytes(m)
    return {"inference_flops": sum(flops), "params": sum(params), "param_bytes": pbytes,
            "state_bytes": sbytes, "per_member": {"inference_flops": flops, "params": params}}


def random_channel_masks(model: nn.Module, input_shape: Sequence[int], channel_density: float,
                         generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Remove random output channels of ``model`` in place; return the channel-structured masks.

    For benchmarks and tests (training builds channel masks with the sparse engine): in every
    prunable channel group (see :func:`slim_member`) ``max(1, round(channel_density * n))`` of
    the ``n`` channels are kept, chosen at random, the same indices in every producer of the
    group; so models of one architecture get equal channel counts per layer (one packed
    architecture) and a weight density of about ``channel_density ** 2`` in inner layers.
    The removed channels are zeroed as the channel contract requires: the producers' weight
    rows and biases, the affine weight and bias of every BatchNorm in the group, and the input
    columns (flattened blocks included) of the consumers. Returns a mask for every Conv/Linear
    weight (rows and columns of removed channels False).
    """
    if not 0.0 < channel_density <= 1.0:
        raise ValueError(f"channel_density: expected a value in (0, 1], got {channel_density!r}")
    names = {id(mod.weight): f"{n}.weight" if n else "weight" for n, mod in model.named_modules()
             if isinstance(mod, SPARSE_MODULE_TYPES)}
    masks = {names[id(mod.weight)]: torch.ones_like(mod.weight, dtype=torch.bool)
             for mod in model.modules() if isinstance(mod, SPARSE_MODULE_TYPES)}
    graph, groups = _channel_groups(model, input_shape)
    with torch.no_grad():
        _zero_random_channels(model, graph, groups, masks, names, channel_density, generator)
    return masks


def _zero_random_channels(model, graph, groups, masks, names, channel_density, generator) -> None:
    for root, _, _ in groups:
        n = root.weight.shape[0]
        keep = max(1, round(channel_density * n))
        removed = sorted(torch.randperm(n, generator=generator)[keep:].tolist())
        if not removed:
            continue
        for dep, idxs in graph.get_pruning_group(root, graph.get_pruner_of_module(root).prune_out_channels, removed):
            mod = dep.target.module
            out = graph.is_out_channel_pruning_fn(dep.handler)
            if isinstance(mod, SPARSE_MODULE_TYPES):
                mask = masks[names[id(mod.weight)]]
                if out:
                    mask[idxs] = False
                    if mod.bias is not None:
                        mod.bias[idxs] = 0.0
                else:
                    mask[:, idxs] = False
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.affine:
                mod.weight[idxs] = 0.0
                mod.bias[idxs] = 0.0
    for mod in model.modules():
        if isinstance(mod, SPARSE_MODULE_TYPES):
            mod.weight.mul_(masks[names[id(mod.weight)]])


def pack_tickets(models: Sequence[nn.Module], masks: Sequence[dict[str, torch.Tensor]],
                 manifest: dict[str, Any]) -> nn.Module:
    """The compact form of a run's loaded members: slim copies, packed when they share a shape.

    Returns a :class:`~freetickets.ensembles.packed.PackedMembers` (one packed forward, its
    ``path`` "packed" or, when the members cannot be packed, "sequential"). Raises
    :class:`UserError` for model forms (MIMO, BatchEnsemble, MC dropout: already one network)
    and when a member's slim export disagrees with its masked form.
    """
    from freetickets.ensembles.packed import PackedMembers

    if manifest.get("model_form"):
        raise UserError("compact: this run's members live in one network "
                        f"({manifest['model_form'].get('kind', 'model form')}); compact applies to ticket runs")
    shape = tuple(int(s) for s in manifest["input_shape"])
    slim = [slim_member(m, mk, shape) for m, mk in zip(models, masks)]
    try:
        return PackedMembers(slim)
    except TypeError as exc:  # members of different channel counts: no shared architecture
        logger.info("compact: members differ (%s); they run one after another", exc)
        return PackedMembers(slim, pack=False)
