"""PF ensemble (prune and fine-tune): M dense parents, each pruned once and fine-tuned.

For member k: train a dense parent (seed ``seed + k``, the standard plan) — or take member k of
a finished ``deep``/``dense`` run given by ``--from`` — then keep its largest-magnitude weights
(one global threshold over the sparse layers, to sparsity S) and fine-tune ``pf_epochs`` at the
constant ``pf_lr`` with the masks fixed. The parent's training counts in the member's cost.
"""
from __future__ import annotations

from freetickets.errors import UserError
from freetickets.methods.base import EngineSetup, Job, Recipe, member_ids, sparse_engine
from freetickets.epoch_plans import EpochSpec, standard_plan


def finetune_plan(cfg) -> list[EpochSpec]:
    """PF fine-tuning: ``pf_epochs`` at the constant ``pf_lr`` (paper: 0.001)."""
    return [EpochSpec(e, "finetune", 0, cfg.pf_lr, e == 0, e == cfg.pf_epochs - 1) for e in range(cfg.pf_epochs)]


class PFEnsemble(Recipe):
    name = "pf"
    sparse = True

    def jobs(self, cfg) -> list[Job]:
        jobs = []
        for k in member_ids(cfg):
            if cfg.from_run is None:
                jobs.append(Job("parent", k, cfg.seed + k, standard_plan(cfg)))
            jobs.append(Job("finetune", k, cfg.seed + k, finetune_plan(cfg), warmup=False))
        return jobs

    def check_sources(self, cfg, read_manifest) -> dict | None:
        """The manifest of the ``--from`` run of dense parents (None: PF trains its own parents)."""
        if cfg.from_run is None:
            return None
        try:
            m = read_manifest(cfg.from_run)
        except UserError as exc:  # name the flag: the message alone does not say which path is wrong
            raise UserError(f"--from: {exc}") from None
        if m.get("method") not in ("deep", "dense"):
            raise UserError(f"--from: {cfg.from_run} is a '{m.get('method')}' run; PF needs dense parents "
                            "(a deep or dense run)")
        if m.get("model") != cfg.model or m.get("data") != cfg.data:
            raise UserError(f"--from: {cfg.from_run} trained {m.get('model')} on {m.get('data')}, "
                            f"not {cfg.model} on {cfg.data}")
        if len(m["tickets"]) < max(member_ids(cfg)) + 1:
            raise UserError(f"--from: {cfg.from_run} has {len(m['tickets'])} dense models; "
                            f"--members {cfg.members} needs more")
        return m

    def make_engine(self, setup: EngineSetup):
        if setup.job.kind == "parent":
            return None
        from freetickets.sparse import global_magnitude_masks
        from freetickets.sparse.run_options import selected_parameters

        setup.load_parent(setup.model)
        named = selected_parameters(setup.cfg, setup.model)
        if setup.cfg.structure == "channel":  # the parent's strongest channels, per-layer counts of the distribution
            from freetickets.sparse.channels import magnitude_channel_masks
            from freetickets.sparse.run_options import example_inputs

            masks = magnitude_channel_masks(setup.model, named, setup.cfg.sparsity, setup.cfg.distribution,
                                            example_inputs(setup.model, setup.input_shape))
            return sparse_engine(setup, update_interval=None, masks=masks, sparse_init="none")
        masks = global_magnitude_masks(named, setup.cfg.sparsity)
        return sparse_engine(setup, update_interval=None, masks=masks, sparse_init="none")

    def job_masks(self, cfg, job: Job) -> str | None:
        return None if job.kind == "parent" else "static"  # dense parents, then fixed magnitude masks
