"""Learning-rate plans: pure functions of (epoch, step), no hidden counters.

A run is a list of :class:`EpochSpec` (one per epoch) that names the phase each epoch belongs to
and its learning rate; the training loop only reads it. Warm-up is per optimizer step.
"""
from __future__ import annotations

import math
from typing import Any
from dataclasses import dataclass



@dataclass(frozen=True)
class EpochSpec:
    epoch: int  # index within the job
    phase: str  # "train", "explore", "refine", "finetune"
    phase_index: int  # EDST refinement phase m (0-based); 0 elsewhere
    lr: float
    phase_start: bool  # first epoch of a phase
    phase_end: bool  # last epoch of a phase (EDST tickets are taken here)
    takes_ticket: bool = True  # False: this epoch never becomes a ticket (EDST exploration)

    @property
    def number(self) -> int:
        """The epoch as users read it: 1-based within the job (the log, metrics.jsonl, the
        manifest's ticket ``epoch``, trajectories, messages). ``epoch`` is the 0-based index."""
        return self.epoch + 1


def multistep_lr(base_lr: float, epoch: int, epochs: int, milestones: list[float], gamma: float) -> float:
    """``base_lr × gamma^k`` where k counts milestones (fractions of ``epochs``) already passed.

    Milestone epochs are ``max(1, int(f × epochs))``: with 250 epochs and (0.5, 0.75) that is 125
    and 187, the released code's schedule. A milestone never falls on the first epoch (index 0),
    so a short run (``--epochs 1``, a smoke test) trains at ``base_lr`` first: with (0.5, 0.75)
    one epoch runs at ``base_lr``, two at ``[base_lr, base_lr × gamma²]``, three at
    ``[base_lr, base_lr × gamma, base_lr × gamma²]``.
    """
    passed = sum(1 for f in milestones if epoch >= milestone_epoch(f, epochs))
    return base_lr * gamma**passed


def milestone_epoch(fraction: float, epochs: int) -> int:
    """The 0-based epoch index at which a multistep milestone at ``fraction`` of ``epochs`` takes
    effect: ``int(fraction × epochs)``, but never 0 (the first epoch always runs at the base lr)."""
    return max(1, int(fraction * epochs))


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * epoch / epochs))


def standard_plan(cfg: Any, epochs: int | None = None) -> list[EpochSpec]:
    """The one-phase plan of a member trained from scratch (dense, deep, dst, static, PF parents): ``cfg.lr_schedule``."""
    epochs = cfg.epochs if epochs is None else epochs
    out = []
    for e in range(epochs):
        if cfg.lr_schedule == "multistep":
            lr = multistep_lr(cfg.lr, e, epochs, cfg.lr_milestones, cfg.lr_gamma)
        elif cfg.lr_schedule == "cosine":
            lr = cosine_lr(cfg.lr, e, epochs)
        else:
            lr = cfg.lr
        out.append(EpochSpec(e, "train", 0, lr, e == 0, e == epochs - 1))
    return out


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear warm-up from 1/warmup_steps to 1 over the first ``warmup_steps`` optimizer steps."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps
