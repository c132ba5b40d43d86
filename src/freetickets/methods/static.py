"""Static sparse ensemble: M members, each with fixed random masks (distribution at sparsity S).

The masks are drawn once from the member's seed and never updated (``update_interval`` is
ignored), so the only difference from the DST ensemble is the absence of prune-and-regrow.
"""
from __future__ import annotations

from freetickets.methods.base import EngineSetup, Job, Recipe, member_ids, sparse_engine
from freetickets.epoch_plans import standard_plan


class StaticEnsemble(Recipe):
    name = "static"
    sparse = True

    def jobs(self, cfg) -> list[Job]:
        return [Job("train", k, cfg.seed + k, standard_plan(cfg)) for k in member_ids(cfg)]

    def make_engine(self, setup: EngineSetup):
        return sparse_engine(setup, update_interval=None)

    def job_masks(self, cfg, job: Job) -> str | None:
        return "static"
