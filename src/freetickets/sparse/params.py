"""Which parameters are sparse, and how they are named.

Sparse ("sparsifiable") parameters are the ``weight`` tensors of ``nn.Conv1d``, ``nn.Conv2d``,
``nn.Conv3d`` (grouped and depthwise convolutions included) and ``nn.Linear`` modules, subclasses
included. Biases, normalisation layers, embeddings and everything else stay dense: they are a
small share of the parameters and pruning them hurts accuracy far more than it saves.

Names are those of the *unwrapped* model (:func:`unwrap_model`), so that masks, tickets and
checkpoints written by a DDP run or a ``torch.compile``-d model use the same keys as a plain
single-process run.
"""
from __future__ import annotations

from torch import nn

__all__ = ["SPARSE_MODULE_TYPES", "sparsifiable_parameters", "unwrap_model"]

#: Module types whose ``weight`` is made sparse.
SPARSE_MODULE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip wrappers that only add a name prefix: DDP/DataParallel ``.module`` and
    ``torch.compile``'s ``._orig_mod`` (in any nesting order)."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def sparsifiable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Return ``[(name, weight), ...]`` of every sparse weight, in module order.

    ``name`` is the parameter's name in ``unwrap_model(model).named_parameters()`` (e.g.
    ``"block1.conv.weight"``). A parameter shared by several modules appears once, under its
    first name. Raises ``ValueError`` when the model has no Conv1d/2d/3d or Linear layer.
    """
    base = unwrap_model(model)
    wanted = {
        id(module.weight)
        for module in base.modules()
        if isinstance(module, SPARSE_MODULE_TYPES) and isinstance(module.weight, nn.Parameter)
    }
    out: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for name, param in base.named_parameters():  # deduplicates shared parameters itself
        if id(param) in wanted and id(param) not in seen:
            seen.add(id(param))
            out.append((name, param))
    if not out:
        raise ValueError(
            "model: no sparsifiable layer found; sparse training needs at least one "
            "nn.Conv1d, nn.Conv2d, nn.Conv3d or nn.Linear module"
        )
    return out
