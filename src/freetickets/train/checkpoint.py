"""The run checkpoint: one file holding the run's progress and the state of the job in flight.

Written atomically (a crash mid-write leaves the previous checkpoint) by rank 0 only, after every
epoch and, with ``checkpoint_every_steps``, every N steps. ``run_state`` is the run's progress
(job index, finished tickets, FLOP totals, metrics rows written); ``job_state`` is
:meth:`freetickets.train.job_state.JobState.snapshot` of the job in flight, or ``None`` between
jobs. A resume refuses a configuration that would compute something else (see
:data:`RESUME_MAY_CHANGE` for what it may change).
"""
from __future__ import annotations

from freetickets.errors import UserError
from freetickets.train.config import TrainConfig
from freetickets.train.rundir import RunDir
from freetickets.utils.io import atomic_torch_save, safe_torch_load

CHECKPOINT_FORMAT = "freetickets-checkpoint"

#: Settings a resume may change: where and how the run executes, not what it computes.
RESUME_MAY_CHANGE = frozenset({"device", "data_dir", "checkpoint_every_steps", "compile", "num_workers",
                               "dist_backend", "check_consistency", "eval_batch_size"})


def save_checkpoint(run: RunDir, cfg: TrainConfig, run_state: dict, job_state: dict | None) -> None:
    """Atomically write ``run.checkpoint`` (call on rank 0 only)."""
    state = {k: v for k, v in run_state.items() if k != "source_manifest"}  # re-read from the source run
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "version": 1, "config": cfg.to_dict(),
                       "run_state": state, "job_state": job_state}, run.checkpoint)


def load_checkpoint(run: RunDir, cfg: TrainConfig) -> dict | None:
    """The checkpoint to resume ``run`` from, ``None`` if it has none yet.

    A complete run without a checkpoint gives a state past its last job (nothing to train). Raises
    :class:`UserError` for a file that is not a checkpoint or a setting that differs from the saved
    run's (other than those in :data:`RESUME_MAY_CHANGE`).
    """
    if not run.checkpoint.is_file():
        if run.manifest.is_file() and run.read_manifest().get("status") == "complete":
            return {"run_state": {"job_index": 10**9, "tickets": [], "train_flops_total": 0.0}, "job_state": None}
        return None
    ckpt = safe_torch_load(run.checkpoint, map_location="cpu")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{run.checkpoint}: not a freetickets checkpoint")
    saved = ckpt.get("config", {})
    for key, value in cfg.to_dict().items():
        if key not in RESUME_MAY_CHANGE and key in saved and saved[key] != value:
            raise UserError(f"--resume: '{key}' differs from the saved run ({saved[key]!r} there, {value!r} now)")
    return ckpt
