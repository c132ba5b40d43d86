"""MC dropout (Gal & Ghahramani, ICML 2016): dropout kept on at test time; M samples are the members.

Dropout of probability ``dropout_rate`` sits on the input of every Conv/Linear layer but the
first (:class:`freetickets.models.efficient.MCDropout`). Procedure:
1. training: one dense network with ordinary dropout (fresh masks every step, from torch's RNG,
   which the checkpoints save: resume stays exact);
2. test: member k applies its *fixed* masks, drawn from a generator seeded by (run seed, k,
   layer), so predictions are deterministic and reproducible after a reload.

Costs: training = one dense training (the dropout multiplies are element-wise: not counted, as
activations and BatchNorm are not); inference = M dense forwards.
"""
from __future__ import annotations

import torch

from freetickets.errors import UserError
from freetickets.methods.forms import FormRecipe


class MCDropoutRecipe(FormRecipe):
    name = "mcdropout"

    def validate(self, cfg) -> None:
        super().validate(cfg)
        rate = cfg.dropout_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate < 1.0:
            raise UserError(f"--dropout-rate: expected a probability in (0, 1), got {rate!r}")

    def model_form(self, settings: dict) -> dict:
        return {"kind": "mcdropout", "members": int(settings["members"]), "rate": float(settings["dropout_rate"]),
                "seed": int(settings["seed"])}

    def form_flops(self, model, input_shape, cfg):
        from freetickets.flops.efficient import form_forward_flops

        forward = form_forward_flops(model, torch.zeros((1, *input_shape)))
        return forward, cfg.members * forward
