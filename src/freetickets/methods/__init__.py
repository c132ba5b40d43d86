"""One recipe per training method (see :mod:`freetickets.methods.base`).

``get_recipe(name)`` is how the loop, the config validation and the manifest learn what a method
does; adding a method means one new module here and one line in ``RECIPES``.
"""
from __future__ import annotations

from freetickets.methods.base import EngineSetup, Job, Recipe
from freetickets.methods.batchensemble import BatchEnsembleRecipe
from freetickets.methods.dense import DeepEnsemble, Dense
from freetickets.methods.dst import DSTEnsemble
from freetickets.methods.edst import EDSTEnsemble
from freetickets.methods.masksembles import MasksemblesRecipe
from freetickets.methods.mcdropout import MCDropoutRecipe
from freetickets.methods.mimo import MIMOEnsemble
from freetickets.methods.packed import PackedEnsemble
from freetickets.methods.pf import PFEnsemble
from freetickets.methods.snapshot import SnapshotEnsemble
from freetickets.methods.static import StaticEnsemble

RECIPES: dict[str, Recipe] = {r.name: r for r in (Dense(), DeepEnsemble(), DSTEnsemble(), EDSTEnsemble(),
                                                   PFEnsemble(), StaticEnsemble(), SnapshotEnsemble(),
                                                   MIMOEnsemble(), BatchEnsembleRecipe(), MCDropoutRecipe(),
                                                   PackedEnsemble(), MasksemblesRecipe())}


def get_recipe(name: str) -> Recipe:
    """The recipe of method ``name`` (a KeyError for an unknown name: config validation names the flag)."""
    return RECIPES[name]


__all__ = ["RECIPES", "EngineSetup", "Job", "Recipe", "get_recipe"]
