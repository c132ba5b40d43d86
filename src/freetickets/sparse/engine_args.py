"""Argument checks and initial masks of :class:`~freetickets.sparse.engine.SparseEngine`.

Kept apart from the engine so that its module holds the algorithm (steps, updates, state) and a
reader can see in one place what each constructor argument accepts. Every check raises
``ValueError`` naming the argument and what it allows.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from freetickets.names import SPARSE_INITS
from freetickets.sparse.distributions import DISTRIBUTIONS, layer_active_counts, validate_sparsity
from freetickets.sparse.masks import random_mask


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_fraction(value: Any, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= out <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return out


def has_momentum_state(optimizer: torch.optim.Optimizer | None) -> bool:
    """Whether every parameter group keeps a momentum buffer (SGD momentum > 0, Adam-style betas[0] > 0)."""
    if optimizer is None:
        return False
    for group in optimizer.param_groups:
        momentum = group.get("momentum")
        betas = group.get("betas")
        if isinstance(momentum, (int, float)) and momentum > 0:
            continue
        if isinstance(betas, (tuple, list)) and len(betas) > 0 and float(betas[0]) > 0:
            continue
        return False
    return True


def check_arguments(*, sparsity: float | None, masks: Mapping | None, distribution: str, update_interval: Any,
                    end_step: Any, prune_schedule: str, sparse_init: str, grow: Any,
                    optimizer: torch.optim.Optimizer | None, seed: Any, regrow_pruned: Any) -> float | None:
    """Check the engine's scalar arguments; return the validated sparsity (``None`` when given masks
    define it)."""
    if masks is None or sparsity is not None:
        sparsity = validate_sparsity(sparsity)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}")
    if update_interval is not None and (not is_int(update_interval) or update_interval <= 0):
        raise ValueError(f"update_interval must be a positive integer or None (static masks), got {update_interval!r}")
    if end_step is not None and (not is_int(end_step) or end_step < 0):
        raise ValueError(f"end_step must be a non-negative integer or None (never stop), got {end_step!r}")
    if prune_schedule == "cosine" and end_step is None:
        raise ValueError("end_step must be given (a positive integer) when prune_schedule='cosine'")
    if sparse_init not in SPARSE_INITS:
        raise ValueError(f"sparse_init must be one of {', '.join(SPARSE_INITS)}; got {sparse_init!r}")
    if grow == "momentum" and not has_momentum_state(optimizer):
        raise ValueError(
            "grow='momentum' needs an optimizer with momentum state (SGD with momentum > 0, "
            "Adam, AdamW); use grow='gradient' or 'random' otherwise"
        )
    if not is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not isinstance(regrow_pruned, bool):
        raise ValueError(f"regrow_pruned must be True or False, got {regrow_pruned!r}")
    return sparsity


def initial_masks(named: list[tuple[str, nn.Parameter]], masks: Mapping[str, torch.Tensor] | None,
                  sparsity: float | None, distribution: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The engine's starting masks, one bool tensor per sparse parameter, on its device.

    Without ``masks``: random masks with the per-layer active counts of ``distribution`` at
    ``sparsity`` (drawn from ``generator`` in ``named`` order). With ``masks``: copies of them; a
    sparse parameter they do not name stays dense; a name that is not a sparse parameter, or a
    shape that differs from the parameter's, raises ``ValueError``.
    """
    names = [n for n, _ in named]
    out: dict[str, torch.Tensor] = {}
    if masks is None:
        counts = layer_active_counts({n: tuple(p.shape) for n, p in named}, sparsity, distribution)
        for name, p in named:
            out[name] = random_mask(p.shape, counts[name], generator, device=p.device)
        return out
    unknown = sorted(set(masks) - set(names))
    if unknown:
        raise ValueError(
            f"masks: names {unknown[:5]} are not sparsifiable parameters of the model; "
            f"allowed: {names[:5]}{' ...' if len(names) > 5 else ''}"
        )
    for name, p in named:
        given = masks.get(name)
        if given is None:
            out[name] = torch.ones(p.shape, dtype=torch.bool, device=p.device)
            continue
        if tuple(given.shape) != tuple(p.shape):
            raise ValueError(f"masks[{name!r}]: shape {tuple(given.shape)} != parameter shape {tuple(p.shape)}")
        out[name] = given.detach().to(device=p.device, dtype=torch.bool).clone()
    return out


def channel_structure(model: nn.Module, named: list[tuple[str, nn.Parameter]], *, structure: str,
                      example_inputs: Any, masks: Mapping[str, torch.Tensor] | None, sparsity: float | None,
                      distribution: str, prune: Any, grow: Any, generator: torch.Generator):
    """``None`` for ``structure="unstructured"``; for ``"channel"`` the engine's
    :class:`~freetickets.sparse.channels.ChannelStructure`: traced dependencies and kept output
    channels (random, exact per-layer counts; or read from channel-structured ``masks``)."""
    from freetickets.sparse.channels import STRUCTURES, ChannelStructure, allocate_channels, build_channel_layers

    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(STRUCTURES)}; got {structure!r}")
    if structure == "unstructured":
        return None
    if example_inputs is None:
        raise ValueError("example_inputs: structure='channel' needs an example input batch (e.g. "
                         "torch.zeros(2, *input_shape)) to trace which layers share channels")
    if prune != "magnitude" or grow not in ("gradient", "random"):
        raise ValueError("structure='channel' prunes channels by magnitude and regrows them at random "
                         f"(docs/algorithms.md); prune must be 'magnitude' and grow 'gradient' or 'random', "
                         f"got prune={prune!r}, grow={grow!r}")
    layers = build_channel_layers(model, named, example_inputs)
    channels = ChannelStructure(layers, [p for _, p in named])
    if masks is None:
        channels.set_initial(allocate_channels(layers, sparsity, distribution), generator)
    else:
        given = [masks.get(n) for n, _ in named]
        channels.load_masks([torch.ones(p.shape, dtype=torch.bool) if m is None else m.detach().cpu()
                             for m, (_, p) in zip(given, named)])
    return channels
