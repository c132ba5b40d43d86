"""The engine options a :class:`~freetickets.train.config.TrainConfig` adds to every sparse run:
which parameters are sparse (``include``/``exclude``) and the regrowth policy. One place, so the
runner (and its method recipes) pass them identically to ``SparseEngine`` and to PF's one-shot
pruning."""
from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["engine_options", "selected_parameters"]


def engine_options(cfg: Any) -> dict[str, Any]:
    """``SparseEngine`` keyword arguments from ``cfg``: ``include``, ``exclude``, ``regrow_pruned``."""
    return {"include": list(cfg.include) or None, "exclude": list(cfg.exclude) or None,
            "regrow_pruned": bool(cfg.regrow_pruned)}


def selected_parameters(cfg: Any, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The sparse ``(name, parameter)`` pairs of ``model`` under ``cfg``'s include/exclude (for
    :func:`~freetickets.sparse.masks.global_magnitude_masks`)."""
    from freetickets.sparse import sparsifiable_parameters

    return sparsifiable_parameters(model, include=cfg.include or None, exclude=cfg.exclude or None)
