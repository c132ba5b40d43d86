"""Dynamic sparse training engine (docs/algorithms.md): masks, layer-wise distributions (uniform/er/erk),
prune and grow rules (small registries), prune-fraction schedules (pure functions of the step),
:class:`SparseEngine` and one-shot global magnitude pruning for PF ensembles.
"""
from __future__ import annotations

from freetickets.sparse.distributions import DISTRIBUTIONS, layer_active_counts, layer_densities
from freetickets.sparse.engine import SparseEngine
from freetickets.sparse.masks import global_magnitude_masks, pack_bits, random_mask, unpack_bits
from freetickets.sparse.params import SPARSE_MODULE_TYPES, sparsifiable_parameters, unwrap_model
from freetickets.sparse.rules import (
    GROW_RULES,
    PRUNE_RULES,
    GrowContext,
    grow_gradient,
    grow_momentum,
    grow_random,
    prune_magnitude,
    prune_set,
)
from freetickets.sparse.schedules import SCHEDULES
from freetickets.sparse.selection import select_largest, select_smallest

__all__ = [
    "DISTRIBUTIONS",
    "GROW_RULES",
    "PRUNE_RULES",
    "SCHEDULES",
    "SPARSE_MODULE_TYPES",
    "GrowContext",
    "SparseEngine",
    "global_magnitude_masks",
    "grow_gradient",
    "grow_momentum",
    "grow_random",
    "layer_active_counts",
    "layer_densities",
    "pack_bits",
    "prune_magnitude",
    "prune_set",
    "random_mask",
    "select_largest",
    "select_smallest",
    "sparsifiable_parameters",
    "unpack_bits",
    "unwrap_model",
]
