"""DST ensemble: M independent dynamic-sparse-training runs at sparsity S (FreeTickets, Liu et al. 2022, Sec. 3).

Member k starts from its own random sparse masks (seed ``seed + k``) and prunes and regrows every
``update_interval`` optimizer steps with the run's prune/grow rules; its ticket is its best
validation epoch.
"""
from __future__ import annotations

from freetickets.errors import UserError
from freetickets.methods.base import EngineSetup, Job, Recipe, member_ids, sparse_engine
from freetickets.epoch_plans import standard_plan


class DSTEnsemble(Recipe):
    name = "dst"
    sparse = True

    def validate(self, cfg) -> None:
        if cfg.update_interval is None:
            raise UserError("--update-interval: dst needs a topology update interval "
                            "(use --method static for fixed masks)")

    def jobs(self, cfg) -> list[Job]:
        return [Job("train", k, cfg.seed + k, standard_plan(cfg)) for k in member_ids(cfg)]

    def make_engine(self, setup: EngineSetup):
        return sparse_engine(setup, update_interval=setup.cfg.update_interval)

    def job_masks(self, cfg, job: Job) -> str | None:
        return "dynamic"
