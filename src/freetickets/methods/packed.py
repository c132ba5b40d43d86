"""Packed-Ensembles (Laurent et al., ICLR 2023): M narrow independent members in one grouped network.

Every layer of the registry model becomes a grouped layer whose groups are the members (width
factor ``packed_alpha``, ``packed_gamma`` subgroups per member; the first layer reads the plain
input, the last gives M heads: :class:`freetickets.models.efficient.Packed`). Procedure:
1. training: every member sees every example of the batch (one forward gives ``(M, B, C)``);
   the loss is the sum over members of each member's mean cross-entropy. No weight (and no
   BatchNorm channel) is shared between members, so each member's gradient is exactly the one
   it would get trained alone: a deep ensemble of narrower networks, trained in one pass;
2. test: the same single forward gives the M members.

Costs: training = 3 x one forward of the packed network per data sample; inference = one
forward. Both measured with ``FlopCounterMode`` (grouped layers count ``1/groups`` of the dense
products), so they scale with about ``alpha^2 / (M * gamma)`` of one base network per layer.
"""
from __future__ import annotations

import torch

from freetickets.methods.forms import FormRecipe


class PackedEnsemble(FormRecipe):
    name = "packed"

    def validate(self, cfg) -> None:
        super().validate(cfg)
        from freetickets.models.packed import check_packed_options

        check_packed_options(cfg.packed_alpha, cfg.packed_gamma)

    def model_form(self, settings: dict) -> dict:
        return {"kind": "packed", "members": int(settings["members"]), "alpha": float(settings["packed_alpha"]),
                "gamma": int(settings["packed_gamma"])}

    def training_logits(self, output: torch.Tensor, targets: torch.Tensor):
        # (M, B, C) member logits and (B,) targets -> (M·B, C) and (M·B,), member k in rows k·B..
        members = output.shape[0]
        return output.reshape(-1, output.shape[-1]), targets.repeat(members)

    def training_loss(self, logits, targets, cfg):
        # sum over members of each member's mean: M x the mean over all M·B rows
        return cfg.members * super().training_loss(logits, targets, cfg)

    def form_flops(self, model, input_shape, cfg):
        from freetickets.flops.efficient import form_forward_flops

        forward = form_forward_flops(model, torch.zeros((1, *input_shape)))
        return forward, forward
