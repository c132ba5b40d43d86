"""Training: configuration, the loop shared by every method, checkpoints, distributed helpers.

The loop (``Trainer``, ``train``) is imported on first use, so that the recipes in
:mod:`freetickets.methods`, which the loop imports, can use :mod:`freetickets.train.schedules`
without an import cycle.
"""
from typing import Any

from freetickets.train.config import TrainConfig, resolve, validate

__all__ = ["TrainConfig", "Trainer", "resolve", "train", "validate"]


def __getattr__(name: str) -> Any:
    if name in ("Trainer", "train"):
        from freetickets.train import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'freetickets.train' has no attribute {name!r}")
