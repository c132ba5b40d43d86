"""MIMO (Havasi et al., ICLR 2021): M independent subnetworks inside one network.

The registry model gets M stacked inputs (first layer's input channels x M) and M heads (last
Linear's outputs x M); everything between is shared (:class:`freetickets.models.efficient.MIMO`).

Procedure, per optimizer step (the paper's Sec. 2 and its released CIFAR code):
1. the data batch of B examples is repeated ``mimo_batch_repetitions`` (r) times and shuffled:
   B' = r·B rows; each head k gets its own independent shuffle of the rows, except a fraction
   ``mimo_input_repetition`` (rho) of them where all heads see the same example;
2. the loss is the sum over heads of each head's mean cross-entropy on its own targets;
3. at test time one example is repeated M times and one forward gives the M members.

Costs: training = 3 x (r rows of the widened network's forward) per data sample -- r times the
forward work of one dense model per epoch, plus the wider first and last layers; inference =
one forward of the widened network.
"""
from __future__ import annotations

import torch

from freetickets.data.base import derive_seed
from freetickets.errors import UserError
from freetickets.methods.base import Job
from freetickets.methods.forms import FormRecipe


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of step ``step``'s shuffles: a pure function of (seed, step), so a resumed
    run draws the same batches without checkpointing generator state."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed("mimo-step", seed, step))
    return gen


class MIMOEnsemble(FormRecipe):
    name = "mimo"

    def validate(self, cfg) -> None:
        super().validate(cfg)
        rho, reps = cfg.mimo_input_repetition, cfg.mimo_batch_repetitions
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0.0 <= rho <= 1.0:
            raise UserError(f"--mimo-input-repetition: expected a probability in [0, 1], got {rho!r}")
        if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
            raise UserError(f"--mimo-batch-repetitions: expected an integer >= 1, got {reps!r}")

    def model_form(self, settings: dict) -> dict:
        return {"kind": "mimo", "members": int(settings["members"])}

    def training_batch(self, cfg, x: torch.Tensor, y: torch.Tensor, job: Job, step: int):
        from freetickets.models.efficient import mimo_training_batch

        return mimo_training_batch(x, y, cfg.members, cfg.mimo_input_repetition, cfg.mimo_batch_repetitions,
                                   generator=step_generator(job.seed, step, x.device))

    def training_logits(self, output: torch.Tensor, targets: torch.Tensor):
        # (M, B', C) and (M, B') -> (M·B', C) and (M·B',)
        return output.reshape(-1, output.shape[-1]), targets.reshape(-1)

    def training_loss(self, logits, targets, cfg):
        # sum over heads of each head's mean: M x the mean over all M·B' rows
        return cfg.members * super().training_loss(logits, targets, cfg)

    def form_flops(self, model, input_shape, cfg):
        from freetickets.flops.efficient import form_forward_flops

        one = torch.zeros((1, cfg.members * input_shape[0], *input_shape[1:]))
        forward = form_forward_flops(model, one)
        return cfg.mimo_batch_repetitions * forward, forward
