"""Shared by the framework callbacks: building (or rebuilding on resume) the engine."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from freetickets.sparse import SparseEngine

__all__ = ["build_engine", "engine_log_values", "unwrap_optimizer"]


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside framework wrappers (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``), whose ``state`` the engine zeroes at regrown positions."""
    seen = 0
    while not isinstance(optimizer, torch.optim.Optimizer) and seen < 4:
        inner = getattr(optimizer, "optimizer", None) or getattr(optimizer, "_optimizer", None)
        if inner is None:
            break
        optimizer, seen = inner, seen + 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"SparseTrainingCallback: cannot find the torch optimizer in {type(optimizer).__name__}")
    return optimizer


def build_engine(model: nn.Module, optimizer: torch.optim.Optimizer, options: Mapping[str, Any],
                 state: Mapping[str, Any] | None, total_steps: float | None = None) -> SparseEngine:
    """A new engine from ``options``; with ``state`` (a saved ``engine.state_dict()``, the model
    weights already restored) it starts from the saved masks -- so building it neither redraws
    masks nor zeroes restored weights nor rescales them -- and then loads the saved counters.

    ``total_steps`` is the trainer's total optimizer steps (``None`` or not finite: unknown); it
    becomes the engine's ``total_steps`` unless ``options`` set one, so updates stop at 75% of
    training by default (:class:`~freetickets.sparse.SparseEngine`)."""
    if "total_steps" not in options and total_steps is not None and math.isfinite(total_steps) and total_steps > 0:
        options = {**options, "total_steps": int(total_steps)}
    if state is None:
        return SparseEngine(model, optimizer, **options)
    opts = dict(options)
    opts["masks"] = state["masks"]
    opts["sparse_init"] = "none"  # the restored weights were rescaled (if at all) in the first run
    engine = SparseEngine(model, optimizer, **opts)
    engine.load_state_dict(state)
    return engine


def engine_log_values(engine: SparseEngine) -> dict[str, float]:
    """A few scalars worth logging every step (cheap: counts are kept by the engine)."""
    return {"sparse/sparsity": engine.sparsity(), "sparse/explored_fraction": engine.explored_fraction(),
            "sparse/updates": float(engine.update_count)}
