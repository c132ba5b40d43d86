"""Helpers shared by the efficient-ensemble model forms (MIMO, BatchEnsemble, MC dropout); `set_submodule` also
by the packed forward's layout rewrites (freetickets.ensembles.layouts, fused)."""
from __future__ import annotations

from torch import nn

from freetickets.errors import UserError

#: The layers the efficient forms rewrite: convolutions and fully connected layers.
LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def check_members(value: object) -> int:
    """``value`` as an ensemble size (int >= 1), else ``ValueError`` naming ``members``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"members: expected an int >= 1 (the ensemble size), got {value!r}")
    return value


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every Conv/Linear layer of ``model``, in module order.

    Module order is registration order; for every built-in model it is also the order in which
    the forward pass calls the layers (first = the one reading the input, last = the classifier).
    A module registered under two names is listed once.
    """
    seen: set[int] = set()
    out = []
    for name, module in model.named_modules():
        if isinstance(module, LAYER_TYPES) and id(module) not in seen:
            seen.add(id(module))
            out.append((name, module))
    return out


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` (e.g. ``block1.0.conv1``) by ``module``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
