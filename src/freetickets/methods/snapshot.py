"""Snapshot ensemble (Huang et al., ICLR 2017): M members from one dense run, no extra cost.

One dense network is trained for ``epochs`` epochs split into M cosine cycles with warm
restarts: within cycle m the learning rate falls from ``lr`` towards 0 along half a cosine, then
restarts at ``lr``. The model at the end of each cycle (its last epoch, not its best validation
epoch: the paper's snapshot) is member m. The training cost is that of one dense run.

The cycle length is ``epochs // members``; left-over epochs go to the last cycle (as EDST's
refinement phases). The rate is set per epoch, like every plan in this package (the paper
anneals per iteration; with tens of epochs per cycle the two differ by less than one epoch's
step of the curve).
"""
from __future__ import annotations

from freetickets.errors import UserError
from freetickets.methods.base import Job, Recipe
from freetickets.epoch_plans import EpochSpec, cosine_lr


def snapshot_plan(cfg) -> list[EpochSpec]:
    """M cycles; cycle m's epoch i has ``lr = cosine_lr(cfg.lr, i, length)`` (restarts at ``lr``)."""
    out, start = [], 0
    cycle = cfg.epochs // cfg.members
    for m in range(cfg.members):
        length = cycle if m < cfg.members - 1 else cfg.epochs - start
        out.extend(EpochSpec(start + i, "cycle", m, cosine_lr(cfg.lr, i, length), i == 0, i == length - 1)
                   for i in range(length))
        start += length
    return out


class SnapshotEnsemble(Recipe):
    name = "snapshot"
    independent_members = False

    def validate(self, cfg) -> None:
        if cfg.members < 2:
            raise UserError(f"--members: a snapshot ensemble needs at least 2 cycles, got {cfg.members}")
        if cfg.epochs < cfg.members:
            raise UserError(f"--epochs: {cfg.epochs} is fewer than one epoch per cycle for {cfg.members} members")

    def seeds(self, seed: int, members: int) -> list[int]:
        return [seed]  # one run, one seed

    def jobs(self, cfg) -> list[Job]:
        return [Job("train", 0, cfg.seed, snapshot_plan(cfg), tickets="phase", select="last")]
