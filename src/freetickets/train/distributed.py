"""Distributed helpers: DDP switched on by torchrun's environment variables.

``torchrun --nproc_per_node=K -m freetickets train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; we then initialise a process group (NCCL on CUDA, gloo on CPU), wrap the model in
``DistributedDataParallel`` and give each rank a contiguous slice of every global batch, so the
averaged gradient equals the single-process gradient of the whole batch.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from freetickets.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device: torch.device) -> DistInfo:
    """Initialise the default process group if torchrun asked for one (idempotent)."""
    info = env_dist_info()
    if not info.enabled:
        return info
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_available() or (backend == "nccl" and not dist.is_nccl_available()):
        raise UserError(f"torchrun: the {backend} backend is not available in this PyTorch build")
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend)
    log.info("distributed: rank %d of %d (%s)", info.rank, info.world_size, backend)
    return info


def shard_batch(x: torch.Tensor, y: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
    if not info.enabled:
        return x, y
    n = x.shape[0]
    lo = n * info.rank // info.world_size
    hi = n * (info.rank + 1) // info.world_size
    return x[lo:hi], y[lo:hi]


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled and dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value
