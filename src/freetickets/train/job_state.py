"""The mutable state of one training job: what the loop updates every step and a checkpoint holds.

One :class:`JobState` lives for one job (:class:`~freetickets.methods.base.Job`). Together with the
data order (a function of seed, epoch and batch) it is everything a resumed job needs to continue
bitwise: model, optimizer, sparse engine, FLOP meter, torch RNG, the position (epoch, batch,
global step), the best validation result of the ticket on disk and the epoch's running sums.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from freetickets.train.distributed import DistInfo, gather_sums, own_sums


def new_sums() -> dict:
    """The running training sums of an epoch: loss x samples, correct predictions, samples."""
    return {"loss": 0.0, "correct": 0, "seen": 0}


@dataclass
class JobState:
    model: nn.Module  # the bare network (tickets and checkpoints are written from it)
    train_model: nn.Module  # what the step calls: ``model``, or it wrapped in DDP / torch.compile
    optimizer: torch.optim.Optimizer
    engine: Any  # a SparseEngine, or None for dense methods
    flops: Any  # a TrainFlopsMeter
    epoch: int = 0  # the epoch (index into the job's plan) the job starts or resumes at
    batch: int = 0  # the batch of that epoch it starts at
    global_step: int = 0
    best: dict | None = None  # {"val_accuracy", "val_loss", "epoch"} of the ticket file on disk
    sums: dict = field(default_factory=new_sums)
    densities: dict = field(default_factory=dict)  # per-layer densities the FLOP meter integrates
    topo: int = 0  # the engine's topology version ``densities`` was read at

    def read_densities(self) -> None:
        """Read the engine's per-layer densities (none for a dense job)."""
        if self.engine is not None:
            self.densities, self.topo = self.engine.densities(), self.engine.topology_version

    def refresh_densities(self) -> None:
        """Re-read the densities if the engine changed its masks since the last read (cheap otherwise)."""
        if self.engine is not None and self.engine.topology_version != self.topo:
            self.read_densities()

    def snapshot(self, epoch: int, batch: int, dist: DistInfo, device: torch.device) -> dict:
        """The checkpoint's ``job_state``: resume at batch ``batch`` of epoch ``epoch``.

        Every rank's running sums are gathered (a collective: all ranks must call it) so that a
        resume with the same world size restores each rank's own sums.
        """
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "engine": self.engine.state_dict() if self.engine is not None else None,
                "flops": self.flops.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                "epoch": epoch, "batch": batch, "global_step": self.global_step, "best": self.best,
                "sums": self.sums, "rank_sums": gather_sums(self.sums, dist)}

    def restore(self, ckpt: dict, dist: DistInfo, device: torch.device) -> None:
        """Load a :meth:`snapshot` (the model, optimizer and engine already built for the job)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.engine is not None:
            self.engine.load_state_dict(ckpt["engine"])
        self.flops.load_state_dict(ckpt["flops"])
        torch.set_rng_state(ckpt["torch_rng"])
        if torch.cuda.is_available() and ckpt.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        self.epoch, self.batch, self.global_step = ckpt["epoch"], ckpt["batch"], ckpt["global_step"]
        self.best = ckpt["best"]
        self.sums = own_sums(ckpt["sums"], ckpt.get("rank_sums"), dist)
