"""The engine options a :class:`~freetickets.train.config.TrainConfig` adds to every sparse run:
which parameters are sparse (``include``/``exclude``) and the regrowth policy. One place, so the
runner (and its method recipes) pass them identically to ``SparseEngine`` and to PF's one-shot
pruning."""
from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["engine_options", "selected_parameters"]


def engine_options(cfg: Any, model: nn.Module | None = None,
                   input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """``SparseEngine`` keyword arguments from ``cfg``: ``include``, ``exclude``, ``regrow_pruned``;
    for ``structure: channel`` also ``structure`` and ``example_inputs`` (two zero examples of
    ``input_shape`` on ``model``'s device, to trace channel dependencies)."""
    out = {"include": list(cfg.include) or None, "exclude": list(cfg.exclude) or None,
           "regrow_pruned": bool(cfg.regrow_pruned)}
    if getattr(cfg, "structure", "unstructured") == "channel":
        out.update(structure="channel", example_inputs=example_inputs(model, input_shape))
    return out


def example_inputs(model: nn.Module | None, input_shape: tuple[int, ...] | None):
    """``torch.zeros(2, *input_shape)`` on the device of ``model``'s first parameter."""
    import torch

    if model is None or input_shape is None:
        raise ValueError("structure='channel' needs the model and its input shape to trace channel dependencies")
    device = next(model.parameters()).device
    return torch.zeros(2, *input_shape, device=device)


def selected_parameters(cfg: Any, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The sparse ``(name, parameter)`` pairs of ``model`` under ``cfg``'s include/exclude (for
    :func:`~freetickets.sparse.masks.global_magnitude_masks`)."""
    from freetickets.sparse import sparsifiable_parameters

    return sparsifiable_parameters(model, include=cfg.include or None, exclude=cfg.exclude or None)
