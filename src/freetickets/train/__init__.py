"""Training: configuration, the loop shared by every method, checkpoints, distributed helpers.

The loop (``Trainer``, ``train``) is imported on first use (importing the configuration alone stays
cheap). Direction of imports: the loop imports the recipes (:mod:`freetickets.methods`); a recipe
imports only the building blocks below both (:mod:`freetickets.epoch_plans`, ``sparse/``,
``models/``, ``ensembles/``, ``flops/``), never this package (tests/methods/test_import_direction.py).
"""
from typing import Any

from freetickets.train.config import TrainConfig, resolve, validate

__all__ = ["TrainConfig", "Trainer", "resolve", "train", "validate"]


def __getattr__(name: str) -> Any:
    if name in ("Trainer", "train"):
        from freetickets.train import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'freetickets.train' has no attribute {name!r}")
