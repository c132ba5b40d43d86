"""Prune and grow rules: two small registries of plain functions.

A **prune rule** ``f(weight, active, k) -> removed`` gets the weight tensor, its bool mask of
active positions and ``k``; it returns a bool tensor (shape of ``weight``) with exactly ``k``
True entries, all inside ``active``.

A **grow rule** ``f(weight, eligible, k, context) -> grown`` gets the weight, a bool tensor of
positions it may activate, ``k`` and a :class:`GrowContext` (gradient, optimizer state, the
engine's random generator); it returns a bool tensor with exactly ``k`` True entries, all inside
``eligible``. The engine makes positions pruned in the same update *not* eligible (see
:mod:`freetickets.sparse.engine`).

Register your own rule by adding it to :data:`PRUNE_RULES` / :data:`GROW_RULES` (name ->
function) before building the engine. The engine checks the exact count of every result.

Ties are broken by :mod:`freetickets.sparse.selection`: lower flat index selected first.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from freetickets.sparse.selection import select_largest, select_smallest

__all__ = [
    "GROW_RULES",
    "PRUNE_RULES",
    "GrowContext",
    "GrowRule",
    "PruneRule",
    "get_grow_rule",
    "get_prune_rule",
    "grow_gradient",
    "grow_momentum",
    "grow_random",
    "momentum_buffer",
    "prune_magnitude",
    "prune_set",
]

logger = logging.getLogger(__name__)

PruneRule = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass
class GrowContext:
    """What a grow rule may look at besides the weight.

    ``grad``: the dense gradient of the current mini-batch (``param.grad``; ``None`` if absent),
    ``optimizer_state``: ``optimizer.state[param]`` (may be empty), ``generator``: the engine's
    CPU ``torch.Generator`` (the only randomness allowed, so runs are reproducible and masks are
    identical on every DDP rank), ``name``: the parameter name.
    """

    grad: torch.Tensor | None
    optimizer_state: dict[str, Any] = field(default_factory=dict)
    generator: torch.Generator | None = None
    name: str = ""


GrowRule = Callable[[torch.Tensor, torch.Tensor, int, GrowContext], torch.Tensor]


# --------------------------------------------------------------------------------------- prune
def prune_magnitude(weight: torch.Tensor, active: torch.Tensor, k: int) -> torch.Tensor:
    """Remove the ``k`` active weights of smallest ``|w|`` (ties: lower flat index first)."""
    return select_smallest(weight, active, k, magnitude=True)


def prune_set(weight: torch.Tensor, active: torch.Tensor, k: int) -> torch.Tensor:
    """SET (Mocanu et al. 2018): remove the weights closest to zero *on each side*.

    ``k // 2`` of the largest (closest to zero) negative weights and ``k - k // 2`` of the
    smallest non-negative weights (an odd ``k`` takes its extra weight from the non-negative
    side; exact zeros count as non-negative, they are the closest to zero). When one side has
    fewer active weights than its share, all of them go and the other side makes up the rest,
    so exactly ``k`` are removed.
    """
    w = weight.detach()
    nonneg = active & (w >= 0)
    neg = active & (w < 0)
    n_nonneg, n_neg = int(torch.count_nonzero(nonneg)), int(torch.count_nonzero(neg))
    k_neg = k // 2
    k_pos = k - k_neg
    if k_pos > n_nonneg:
        k_pos, k_neg = n_nonneg, k - n_nonneg
    elif k_neg > n_neg:
        k_pos, k_neg = k - n_neg, n_neg
    return select_smallest(w, nonneg, k_pos) | select_largest(w, neg, k_neg)


# ---------------------------------------------------------------------------------------- grow
def grow_random(weight: torch.Tensor, eligible: torch.Tensor, k: int, context: GrowContext) -> torch.Tensor:
    """SET: ``k`` eligible positions uniformly at random (from the engine's CPU generator, so the
    choice is identical on CPU and CUDA and on every rank)."""
    scores = torch.rand(weight.numel(), generator=context.generator, dtype=torch.float32)
    return select_largest(scores.to(weight.device).view_as(eligible), eligible, k)


def grow_gradient(weight: torch.Tensor, eligible: torch.Tensor, k: int, context: GrowContext) -> torch.Tensor:
    """RigL: the ``k`` eligible positions of largest ``|dense gradient|``.

    Falls back to :func:`grow_random` (with a warning) when no gradient is available, e.g. when
    ``update_topology`` is called after ``optimizer.zero_grad(set_to_none=True)``.
    """
    if context.grad is None:
        logger.warning("grow='gradient': %s has no gradient; growing at random instead", context.name)
        return grow_random(weight, eligible, k, context)
    return select_largest(context.grad, eligible, k, magnitude=True)


def momentum_buffer(optimizer_state: dict[str, Any]) -> torch.Tensor | None:
    """The first-moment buffer of an optimizer state: SGD ``momentum_buffer`` or Adam ``exp_avg``."""
    for key in ("momentum_buffer", "exp_avg"):
        buf = optimizer_state.get(key)
        if isinstance(buf, torch.Tensor):
            return buf
    return None


def grow_momentum(weight: torch.Tensor, eligible: torch.Tensor, k: int, context: GrowContext) -> torch.Tensor:
    """SNFS (Dettmers & Zettlemoyer 2019): the ``k`` eligible positions of largest ``|momentum|``
    (SGD ``momentum_buffer``, Adam/AdamW ``exp_avg``).

    Falls back to :func:`grow_random` (with a warning) before the optimizer has created its
    state (no step taken yet).
    """
    buf = momentum_buffer(context.optimizer_state)
    if buf is None or buf.shape != weight.shape:
        logger.warning("grow='momentum': %s has no momentum buffer yet; growing at random instead", context.name)
        return grow_random(weight, eligible, k, context)
    return select_largest(buf, eligible, k, magnitude=True)


#: Registry: prune rule name -> function.
PRUNE_RULES: dict[str, PruneRule] = {"magnitude": prune_magnitude, "set": prune_set}
#: Registry: grow rule name -> function.
GROW_RULES: dict[str, GrowRule] = {"gradient": grow_gradient, "random": grow_random, "momentum": grow_momentum}


def get_prune_rule(name: str) -> PruneRule:
    """Look up a prune rule (``ValueError`` naming the allowed values otherwise)."""
    try:
        return PRUNE_RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"prune must be one of {', '.join(sorted(PRUNE_RULES))}; got {name!r}") from None


def get_grow_rule(name: str) -> GrowRule:
    """Look up a grow rule (``ValueError`` naming the allowed values otherwise)."""
    try:
        return GROW_RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"grow must be one of {', '.join(sorted(GROW_RULES))}; got {name!r}") from None
