"""Masksembles (Durasov et al., CVPR 2021): M fixed binary channel masks, each mask one member.

The masks (overlap set by ``masksembles_scale``, drawn once from the run seed) sit on the input
of every Conv/Linear layer but the first (:class:`freetickets.models.efficient.Masksembles`).
Procedure (the paper's Sec. 3):
1. training: one network; the batch is cut into M contiguous slices and slice k goes through
   mask k, so each example trains one member per step; loss = mean cross-entropy over the batch;
2. test: the batch is tiled M times and every example goes through every mask in one pass.

Costs: training = one dense training (the mask multiplies are element-wise: not counted, as for
MC dropout); inference = M forwards (the M tiled rows), measured with ``FlopCounterMode``.
"""
from __future__ import annotations

import torch

from freetickets.methods.forms import FormRecipe


class MasksemblesRecipe(FormRecipe):
    name = "masksembles"

    def validate(self, cfg) -> None:
        super().validate(cfg)
        from freetickets.models.masksembles import check_scale

        check_scale(cfg.masksembles_scale)

    def model_form(self, settings: dict) -> dict:
        return {"kind": "masksembles", "members": int(settings["members"]),
                "scale": float(settings["masksembles_scale"]), "seed": int(settings["seed"])}

    def form_flops(self, model, input_shape, cfg):
        from freetickets.flops.efficient import form_forward_flops

        train = form_forward_flops(model, torch.zeros((1, *input_shape)))  # one row, one mask
        test = form_forward_flops(model, torch.zeros((cfg.members, *input_shape)))  # every mask
        return train, test
