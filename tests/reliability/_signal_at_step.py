"""Runs ``freetickets`` (the CLI, in this process) and sends a signal at one training step.

argv: STEP SIGNAL CLI-ARGS...  STEP counts training forward passes from the start of this process
(1-based, as tests/reliability/_reliability_helpers.StepCounter does; 0: never signal); the
signal is delivered by ``os.kill`` from a forward pre-hook, i.e. in the middle of that step, as a
scheduler's signal would arrive. Environment (all optional; used under torchrun):

* ``SIGNAL_RANK=r``: only the process whose ``RANK`` is r signals.
* ``SIGNAL_TO``: ``self`` (default), ``launcher`` (the parent process, i.e. torchrun, as
  ``kill -TERM <torchrun pid>`` or Kubernetes does) or ``all`` (this process and, from rank 0,
  the launcher too: SLURM signals every process of a job step).
* ``LOCK_PROBE=1``: at STEP, a rank other than 0 tries to take the run directory's lock
  (``--out``) itself and records the refusal (it must be held by global rank 0's process).
* ``RESULT_DIR=d``: at exit, write ``d/rank{RANK}.json`` with this process's rank, local rank,
  pid, exit status, number of training steps run and the lock probe's message.

Not a test module.
"""
import json
import os
import signal
import sys

import torch

import freetickets.models as models_pkg
from freetickets.cli.main import main

STATE = {"steps": 0, "lock_probe": None}


def _out_dir(argv: list[str]) -> str:
    return argv[argv.index("--out") + 1]


def _probe_lock(out: str) -> str:
    from freetickets.errors import UserError
    from freetickets.train.runlock import RunLock

    lock = RunLock(out)
    try:
        lock.acquire()
    except UserError as exc:
        return str(exc)
    lock.release()
    return "acquired"  # nobody held it: the test fails on this


def _install(step: int, sig: signal.Signals, argv: list[str]) -> None:
    rank = os.environ.get("RANK", "0")
    only = os.environ.get("SIGNAL_RANK")
    signals = step > 0 and (only is None or rank == only)
    target = os.environ.get("SIGNAL_TO", "self")
    real = models_pkg.create_model

    def hook(module, inputs):
        if module.training and torch.is_grad_enabled():
            STATE["steps"] += 1
            if STATE["steps"] != step:
                return
            if os.environ.get("LOCK_PROBE") and rank != "0":
                STATE["lock_probe"] = _probe_lock(_out_dir(argv))
            if signals:
                if target in ("launcher", "all") and rank == "0":
                    os.kill(os.getppid(), sig)
                if target in ("self", "all"):
                    os.kill(os.getpid(), sig)

    def create_model(*args, **kwargs):
        model = real(*args, **kwargs)
        model.register_forward_pre_hook(hook)
        return model

    models_pkg.create_model = create_model


def _record(rc: int) -> None:
    where = os.environ.get("RESULT_DIR")
    if where:
        rank = os.environ.get("RANK", "0")
        result = {"rank": int(rank), "local_rank": int(os.environ.get("LOCAL_RANK", "0")), "pid": os.getpid(),
                  "rc": rc, **STATE}
        with open(os.path.join(where, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    torch.set_num_threads(1)
    _install(int(sys.argv[1]), getattr(signal, sys.argv[2]), sys.argv[3:])
    rc = main(sys.argv[3:])
    _record(rc)
    sys.exit(rc)
