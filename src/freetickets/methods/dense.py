"""Dense baselines: one dense model (``dense``) and the dense deep ensemble (``deep``).

Member k is trained from its own seed ``seed + k`` on the standard plan; its ticket is its best
validation epoch. A deep ensemble costs M dense trainings and M dense forwards.
"""
from __future__ import annotations

from freetickets.methods.base import Job, Recipe, member_ids
from freetickets.epoch_plans import standard_plan


class Dense(Recipe):
    name = "dense"
    ensemble = False
    independent_members = False

    def jobs(self, cfg) -> list[Job]:
        return [Job("train", 0, cfg.seed, standard_plan(cfg))]


class DeepEnsemble(Recipe):
    name = "deep"

    def jobs(self, cfg) -> list[Job]:
        return [Job("train", k, cfg.seed + k, standard_plan(cfg)) for k in member_ids(cfg)]
