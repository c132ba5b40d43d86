"""Runs ``freetickets`` (the CLI, in this process) and sends itself a signal at one training step.

argv: STEP SIGNAL CLI-ARGS...  STEP counts training forward passes from the start of this process
(1-based, as tests/reliability/_reliability_helpers.StepCounter does); the signal is delivered
by ``os.kill`` from a forward pre-hook, i.e. in the middle of that step, as a scheduler's signal
would arrive. With ``SIGNAL_RANK=r`` set, only the process whose ``RANK`` is r signals itself.
Not a test module.
"""
import os
import signal
import sys

import torch

import freetickets.models as models_pkg
from freetickets.cli.main import main


def _install(step: int, sig: signal.Signals) -> None:
    only = os.environ.get("SIGNAL_RANK")
    if only is not None and os.environ.get("RANK", "0") != only:
        return
    real = models_pkg.create_model
    count = [0]

    def hook(module, inputs):
        if module.training and torch.is_grad_enabled():
            count[0] += 1
            if count[0] == step:
                os.kill(os.getpid(), sig)

    def create_model(*args, **kwargs):
        model = real(*args, **kwargs)
        model.register_forward_pre_hook(hook)
        return model

    models_pkg.create_model = create_model


if __name__ == "__main__":
    torch.set_num_threads(1)
    _install(int(sys.argv[1]), getattr(signal, sys.argv[2]))
    sys.exit(main(sys.argv[3:]))
