"""EDST ensemble (FreeTickets, Liu et al. 2022, Sec. 3.2): M tickets from one sparse run.

The procedure, as the paper gives it:

1. **Explore**: train one sparse network with DST at a constant, large learning rate for
   ``explore_epochs`` epochs, so that prune-and-regrow visits many topologies. No tickets.
2. For each of the M refinement phases m = 0 .. M-1:
   a. **Refine**: continue DST for ``refine_epochs`` at a small learning rate (the two halves of
      the phase at ``lr × refine_lr_factors[0]`` and ``lr × refine_lr_factors[1]``);
   b. **Take the ticket**: the best-validation epoch of phase m is member m;
   c. **Jump** (all but the last phase): prune the fraction ``jump_fraction`` of each layer's
      active weights and regrow as many (``SparseEngine.update_topology``), which moves the
      network to a different subnetwork for the next phase.

One run, one seed; the training cost is one sparse run of ``epochs`` epochs.
"""
from __future__ import annotations

from freetickets.errors import UserError
from freetickets.methods.base import EngineSetup, Job, Recipe, sparse_engine
from freetickets.epoch_plans import EpochSpec


def edst_plan(cfg) -> list[EpochSpec]:
    """Exploration epochs (constant ``lr``, no tickets), then ``members`` refinement phases.

    Epochs left over by the integer division ``(epochs - explore_epochs) // members`` go to the
    last phase.
    """
    out = [EpochSpec(e, "explore", 0, cfg.lr, e == 0, e == cfg.explore_epochs - 1, takes_ticket=False)
           for e in range(cfg.explore_epochs)]
    start = cfg.explore_epochs
    for m in range(cfg.members):
        length = cfg.refine_epochs if m < cfg.members - 1 else cfg.epochs - start
        for i in range(length):
            factor = cfg.refine_lr_factors[0] if i < length / 2 else cfg.refine_lr_factors[1]
            out.append(EpochSpec(start + i, "refine", m, cfg.lr * factor, i == 0, i == length - 1))
        start += length
    return out


class EDSTEnsemble(Recipe):
    name = "edst"
    sparse = True
    independent_members = False

    def validate(self, cfg) -> None:
        if cfg.explore_epochs >= cfg.epochs:
            raise UserError(f"--explore-epochs: {cfg.explore_epochs} must be below --epochs {cfg.epochs} "
                            "(refinement needs epochs)")
        if cfg.refine_epochs < 1:
            raise UserError(f"--epochs: {cfg.epochs} - {cfg.explore_epochs} exploration epochs leaves fewer than "
                            f"one epoch per refinement phase for {cfg.members} members")

    def seeds(self, seed: int, members: int) -> list[int]:
        return [seed]  # one run, one seed

    def jobs(self, cfg) -> list[Job]:
        return [Job("train", 0, cfg.seed, edst_plan(cfg), tickets="phase")]

    def make_engine(self, setup: EngineSetup):
        return sparse_engine(setup, update_interval=setup.cfg.update_interval)

    def end_of_phase(self, cfg, job: Job, spec: EpochSpec, engine) -> None:
        if spec.phase == "refine" and spec.phase_index < cfg.members - 1:
            engine.update_topology(cfg.jump_fraction)  # the jump to the next subnetwork

    def job_masks(self, cfg, job: Job) -> str | None:
        return "dynamic"
