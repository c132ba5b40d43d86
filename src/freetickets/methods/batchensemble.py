"""BatchEnsemble (Wen et al., ICLR 2020): M members sharing every weight, each with rank-1 factors.

Every Conv/Linear weight ``W`` is shared; member k uses ``W * (s_k r_kᵀ)`` and its own bias
(:class:`freetickets.models.efficient.BatchEnsemble`; BatchNorm stays shared, as in the
authors' code). Procedure (the paper's Sec. 3 and its released CIFAR code):
1. training: the data batch is tiled M times (rows k·B .. (k+1)·B - 1 go to member k) and the
   loss is the mean cross-entropy over all M·B rows -- every member sees every example;
2. test: the batch is tiled the same way; one vectorised forward gives the M members.

Costs: training = 3 x (M tiled rows of the forward, plus the rank-1 products) per data sample --
about M dense trainings; inference = M forwards plus the rank-1 products, in one pass.
"""
from __future__ import annotations

import torch

from freetickets.errors import UserError
from freetickets.methods.base import Job
from freetickets.methods.forms import FormRecipe


class BatchEnsembleRecipe(FormRecipe):
    name = "batchensemble"

    def validate(self, cfg) -> None:
        super().validate(cfg)
        from freetickets.models.efficient import BATCHENSEMBLE_INITS

        if cfg.batchensemble_init not in BATCHENSEMBLE_INITS:
            raise UserError(f"--batchensemble-init: {cfg.batchensemble_init!r} is not one of "
                            f"{', '.join(BATCHENSEMBLE_INITS)}")

    def model_form(self, settings: dict) -> dict:
        return {"kind": "batchensemble", "members": int(settings["members"]),
                "init": str(settings["batchensemble_init"])}

    def training_batch(self, cfg, x: torch.Tensor, y: torch.Tensor, job: Job, step: int):
        from freetickets.models.efficient import tile_batch

        return tile_batch(x, cfg.members), tile_batch(y, cfg.members)

    def form_flops(self, model, input_shape, cfg):
        from freetickets.flops.efficient import form_forward_flops

        forward = form_forward_flops(model, torch.zeros((cfg.members, *input_shape)))  # one sample, tiled
        return forward, forward
