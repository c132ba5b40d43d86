"""The narrow interface between the shared training loop and one method.

A *recipe* says what a method trains and how; the loop (:mod:`freetickets.train.runner`) owns
the mechanics every method shares: optimizer steps, learning-rate plans, validation, ticket
files, checkpoints, exact resume, DDP and FLOPs metering. A recipe imports this module and the
building blocks (``sparse/``, ``models/``, ``ensembles/``, ``flops/``), never the loop.

A recipe answers these questions:

- :meth:`Recipe.jobs` — which stretches of training (:class:`Job`) the run consists of;
- :meth:`Recipe.make_engine` — whether a job trains sparse, and with which masks and updates;
- :meth:`Recipe.training_batch` / :meth:`Recipe.training_logits` — how a data batch becomes the
  model's training inputs and the (N, C) logits / (N,) targets the loss sees;
- :meth:`Recipe.end_of_phase` — what happens after a phase's ticket is taken (EDST's jump);
- :meth:`Recipe.validate` — which settings the method cannot accept (one line per mistake);
- :meth:`Recipe.model_form` / :meth:`Recipe.build_model` / :meth:`Recipe.form_flops` — for the
  efficient ensembles, the one network that holds all M members, and its exact costs;
- :meth:`Recipe.training_loss` / :meth:`Recipe.validation_logits` — the loss of a step and the
  scores that rank tickets on validation data (the ensemble's, for a model form).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from freetickets.epoch_plans import EpochSpec


@dataclass(frozen=True)
class Job:
    """One stretch of training with one model, optimizer and (optional) sparse engine.

    ``kind`` is "train" (its tickets are ensemble members), "parent" (an intermediate dense model
    that later jobs start from: PF) or "finetune" (starts from the parent of the same member).
    ``tickets`` is "best" (one ticket per job) or "phase" (one ticket per phase of the plan, e.g.
    EDST's refinement phases); ``select`` is "best" (the best-validation epoch of the ticket's
    epochs) or "last" (its last epoch, e.g. snapshot ensembles). Epochs whose spec has
    ``takes_ticket=False`` (EDST's exploration) never become tickets. ``warmup``: whether the
    run's learning-rate warm-up applies to this job.
    """

    kind: str
    member: int
    seed: int
    plan: list[EpochSpec]
    tickets: str = "best"
    select: str = "best"
    warmup: bool = True


@dataclass
class EngineSetup:
    """What a recipe may use to build a job's :class:`~freetickets.sparse.SparseEngine`.

    ``total_steps`` is the job's optimizer-step count; ``load_parent(model)`` loads the dense
    parent of ``job.member`` into ``model`` (PF); ``check_consistency`` asks the engine to compare
    masks across DDP ranks.
    """

    cfg: object  # TrainConfig (typed loosely: recipes never construct one)
    job: Job
    model: nn.Module
    optimizer: torch.optim.Optimizer
    total_steps: int
    load_parent: Callable[[nn.Module], None]
    check_consistency: bool = False
    input_shape: tuple[int, ...] | None = None  # one example's shape: channel structure traces the model


def sparse_engine(setup: EngineSetup, *, update_interval: int | None, masks=None, sparse_init: str | None = None):
    """A :class:`SparseEngine` with the run's sparsity settings (the one place they are read).

    Updates end at ``update_end_fraction`` of the job's steps when it is set; a cosine prune
    schedule otherwise anneals to the job's last step.
    """
    from freetickets.sparse import SparseEngine
    from freetickets.sparse.run_options import engine_options

    cfg = setup.cfg
    end_step = None
    if cfg.update_end_fraction is not None:
        end_step = max(1, int(cfg.update_end_fraction * setup.total_steps))
    elif cfg.prune_schedule == "cosine":
        end_step = setup.total_steps
    else:  # the presets' constant schedule may update up to the job's last step (the engine warns if one does)
        end_step = setup.total_steps + 1
    return SparseEngine(setup.model, setup.optimizer, sparsity=cfg.sparsity, distribution=cfg.distribution,
                        prune=cfg.prune, grow=cfg.grow, prune_fraction=cfg.prune_fraction,
                        prune_schedule=cfg.prune_schedule, update_interval=update_interval, end_step=end_step,
                        seed=setup.job.seed, sparse_init=cfg.sparse_init if sparse_init is None else sparse_init,
                        masks=masks, check_consistency=setup.check_consistency, total_steps=setup.total_steps,
                        **engine_options(cfg, setup.model, setup.input_shape))  # include/exclude/regrow/structure


def member_ids(cfg) -> list[int]:
    """The members this run trains: all of them, or only ``--member K``."""
    return [cfg.member] if cfg.member is not None else list(range(cfg.num_members))


class Recipe:
    """Base recipe: one dense model per member, identity batches, no phase-end action."""

    name: str = ""
    sparse: bool = False  # the run's tickets are sparse (manifest sparsity, FLOPs)
    ensemble: bool = True  # False: one model whatever --members says (dense)
    independent_members: bool = True  # members are separate jobs (so --member K is allowed)

    def jobs(self, cfg) -> list[Job]:
        raise NotImplementedError

    def validate(self, cfg) -> None:
        """Raise :class:`~freetickets.errors.UserError` for settings this method cannot take."""

    def seeds(self, seed: int, members: int) -> list[int]:
        """The seeds of the run's members: member k trains with ``seed + k``."""
        return [seed + k for k in range(members)]

    def check_sources(self, cfg, read_manifest: Callable[[str], dict]) -> dict | None:
        """Check the finished run this run starts from (``--from``); return its manifest, or None.

        ``read_manifest(run_dir)`` is the loop's reader of a completed run's manifest (a one-line
        :class:`~freetickets.errors.UserError` otherwise): the loop passes it so that a recipe never
        imports the training package."""
        return None

    def make_engine(self, setup: EngineSetup):
        """The job's sparse engine, or None for dense training."""
        return None

    def job_masks(self, cfg, job: Job) -> str | None:
        """What :meth:`make_engine` gives ``job``, for planning costs without training: None
        (dense), ``"static"`` (fixed masks) or ``"dynamic"`` (updates every ``update_interval``)."""
        return None

    def training_batch(self, cfg, x: torch.Tensor, y: torch.Tensor, job: Job, step: int):
        """(model inputs, targets) for one optimizer step; by default the batch itself."""
        return x, y

    def training_logits(self, output: torch.Tensor, targets: torch.Tensor):
        """(logits (N, C), targets (N,)) for the loss and training accuracy."""
        return output, targets

    def training_loss(self, logits: torch.Tensor, targets: torch.Tensor, cfg) -> torch.Tensor:
        """The loss of one step from :meth:`training_logits`' output: mean cross-entropy."""
        return F.cross_entropy(logits.float(), targets, label_smoothing=cfg.label_smoothing)

    # ---- the model form (one network holding all M members: MIMO, BatchEnsemble, MC dropout)
    def model_form(self, settings: dict) -> dict | None:
        """``manifest["model_form"]`` (how :func:`freetickets.models.efficient.build_form`
        rebuilds the trained network from the registry model), or None for a plain model."""
        return None

    def build_model(self, base: nn.Module, cfg) -> nn.Module:
        """The network this method trains, made from the registry model ``base``."""
        form = self.model_form(cfg.to_dict())
        if form is None:
            return base
        from freetickets.models.efficient import build_form

        return build_form(form, base)

    def members_per_ticket(self, cfg) -> int:
        """Ensemble members inside one ticket file (M for a model form, else 1)."""
        return 1

    def form_flops(self, model: nn.Module, input_shape: tuple[int, ...], cfg) -> tuple[float, float] | None:
        """(training forward FLOPs per data sample, inference FLOPs per test sample) of a model
        form, or None: the sparse/dense accounting of the registry model applies."""
        return None

    def validation_logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` scores whose cross-entropy and argmax rank a ticket on validation data."""
        return model(x)

    def end_of_phase(self, cfg, job: Job, spec: EpochSpec, engine) -> None:
        """Called after the ticket of a phase that ends at ``spec`` is recorded ("phase" jobs)."""
