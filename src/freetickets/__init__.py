"""freetickets: sparse ensembles trained with dynamic sparse training (FreeTickets, ICLR 2022).

Public API (README.md, docs/using-in-your-loop.md)::

    from freetickets import SparseEngine, Ensemble, create_model

Heavy submodules are imported lazily so that ``import freetickets`` stays cheap.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "SparseEngine": ("freetickets.sparse.engine", "SparseEngine"),
    "Ensemble": ("freetickets.ensembles.ensemble", "Ensemble"),
    "create_model": ("freetickets.models.registry", "create_model"),
    "list_models": ("freetickets.models.registry", "list_models"),
}

__all__ = ["SparseEngine", "Ensemble", "create_model", "list_models", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from freetickets.ensembles.ensemble import Ensemble
    from freetickets.models.registry import create_model, list_models
    from freetickets.sparse.engine import SparseEngine


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'freetickets' has no attribute {name!r}")
