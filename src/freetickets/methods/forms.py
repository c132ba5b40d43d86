"""What the three efficient ensembles share: one network that holds all M members.

MIMO, BatchEnsemble and MC dropout train *one* model (one job, one seed, the standard plan,
the best validation epoch kept) whose forward pass produces every member's prediction
(:mod:`freetickets.models.efficient`). The ticket is that one network; the manifest records
``model_form`` so that :meth:`freetickets.ensembles.ensemble.Ensemble.load` rebuilds it, and
``members`` = M. Tickets are ranked on validation data by the *ensemble's* prediction (the
mean of the member probabilities), as the other methods' ensembles are evaluated.

FLOPs are measured on the form itself with ``torch.utils.flop_counter.FlopCounterMode`` (the
package's convention, :mod:`freetickets.flops.counter`) on one example in the layout the form
reads (:func:`freetickets.flops.efficient.form_forward_flops`); training counts 3x the forward of
the rows a data sample becomes, as for every other method.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from freetickets.errors import UserError
from freetickets.methods.base import Job, Recipe
from freetickets.epoch_plans import standard_plan


def ensemble_log_probs(member_logits: torch.Tensor) -> torch.Tensor:
    """``(M, B, C)`` member logits -> ``(B, C)`` log of the mean member probability (stable)."""
    log_p = torch.log_softmax(member_logits.float(), dim=-1)
    return torch.logsumexp(log_p, dim=0) - math.log(member_logits.shape[0])


class FormRecipe(Recipe):
    """Base of the efficient ensembles: one job whose one network holds M members."""

    independent_members = False  # the members are one network: --member is meaningless

    def validate(self, cfg) -> None:
        if cfg.members < 2:
            raise UserError(f"--members: {self.name} needs at least 2 members, got {cfg.members}")

    def seeds(self, seed: int, members: int) -> list[int]:
        return [seed]  # one network, one seed

    def jobs(self, cfg) -> list[Job]:
        return [Job("train", 0, cfg.seed, standard_plan(cfg))]

    def members_per_ticket(self, cfg) -> int:
        return cfg.members

    def validation_logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # log p̄: its cross-entropy is the ensemble NLL and its argmax the ensemble prediction.
        return ensemble_log_probs(model.member_logits(x))
