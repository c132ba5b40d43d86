"""Distributed helpers: DDP switched on by torchrun's environment variables.

``torchrun --nproc_per_node=K -m freetickets train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; the trainer then initialises a process group (NCCL on CUDA, gloo on CPU, or the
``dist_backend`` config key), wraps the model in ``DistributedDataParallel`` and gives each rank a
contiguous slice of every *global* batch (``batch_size`` is the global batch). The loss of a slice
is scaled so that DDP's gradient average equals the gradient of the whole batch even when the
slices differ in size by one, so a K-process run follows the single-process run with the same
``batch_size`` (up to floating-point summation order; tested to 1e-5).

Invariants the trainer relies on (docs/paper-recipes.md, "Distributed training"):

* **Masks** are identical on every rank by construction: every rank builds the same model under
  the same seed, the engine's generator is seeded identically and topology updates read only
  all-reduced gradients and identical weights. ``check_consistency: true`` all-reduces a mask
  checksum after each update and raises if ranks differ (a debugging aid; it costs one tiny
  all-reduce per update).
* **Decisions** (best-epoch selection, EDST phase ends and jumps) use numbers every rank receives
  from the same collective: validation is sharded across ranks and the integer correct-counts and
  float64 loss sums are all-reduced, then rank 0's result is broadcast, so no rank can take a
  different branch. Before validating, the BatchNorm buffers (running statistics, which each rank
  updated from its own slice) are broadcast from rank 0, so every rank evaluates rank 0's model,
  which is also the model rank 0 saves as a ticket.
* **Files** are written by rank 0 only (checkpoints, tickets, manifest, metrics, config).

BatchNorm under DDP normalises each rank's slice with that slice's statistics (batch B/K), like
the released multi-GPU code; ``sync_batchnorm: true`` converts to ``nn.SyncBatchNorm`` (CUDA only;
ignored with a warning on CPU) to normalise over the global batch instead.
"""
from __future__ import annotations

import datetime
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

from freetickets.errors import UserError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "nccl", "gloo")
T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and local rank of this process (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # this module initialised the process group (and destroys it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """What torchrun's environment asks for (no process group is created here)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return DistInfo()
        return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise UserError("torchrun: WORLD_SIZE, RANK and LOCAL_RANK must be integers") from None


def choose_backend(requested: str, device: torch.device) -> str:
    """The process-group backend for ``device``: ``auto`` is NCCL on CUDA and gloo otherwise.

    Raises :class:`UserError` (one line) when the backend cannot work here: NCCL without CUDA
    or without NCCL in this PyTorch build, gloo missing from the build.
    """
    if requested not in BACKENDS:
        raise UserError(f"--dist-backend: '{requested}' is not one of {', '.join(BACKENDS)}")
    backend = requested if requested != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_available():
        raise UserError("torchrun: this PyTorch build has no torch.distributed support")
    if backend == "nccl":
        if not dist.is_nccl_available():
            raise UserError("torchrun: the nccl backend is not available in this PyTorch build "
                            "(use dist_backend: gloo, or a CUDA build of PyTorch)")
        if device.type != "cuda":
            raise UserError(f"torchrun: the nccl backend needs CUDA devices, but training runs on {device.type} "
                            "(use dist_backend: gloo or --device cuda)")
    if backend == "gloo" and not dist.is_gloo_available():
        raise UserError("torchrun: the gloo backend is not available in this PyTorch build (use dist_backend: nccl)")
    return backend


def init_distributed(device: torch.device, backend: str = "auto", timeout_s: float | None = None) -> DistInfo:
    """Initialise the default process group if torchrun asked for one (idempotent).

    Returns :class:`DistInfo` (``world_size == 1`` when not launched by torchrun).
    """
    info = env_dist_info()
    if not info.enabled:
        return info
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank, dist.get_backend(), False)
    name = choose_backend(backend, device)
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun: local rank {info.local_rank} but only {torch.cuda.device_count()} CUDA "
                            "device(s); use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(info.local_rank)
    kwargs: dict[str, Any] = {"backend": name}
    if timeout_s is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
    try:
        dist.init_process_group(**kwargs)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"torchrun: cannot initialise the {name} process group: {first}") from None
    log.info("distributed: rank %d of %d (%s)", info.rank, info.world_size, name)
    return DistInfo(info.rank, info.world_size, info.local_rank, name, True)


def drain_collectives(settle_s: float = 0.1) -> None:
    """Wait until every rank is here, then give gloo's worker threads time to free the finished
    collectives before the process group is destroyed and the interpreter exits.

    Call it on the success path only (a rank that died would leave the barrier waiting). Why:
    gloo's worker thread frees a finished collective after the caller has already been woken,
    and a barrier keeps the collectives it waited for alive until it is freed in turn. Freeing
    a tensor that Python created needs the GIL; if the interpreter is finalising by then, the
    thread is killed inside a C++ destructor and the process aborts ("terminate called without
    an active exception", exit -6) although all its work is done and saved. Measured on a
    2-core machine with 2 gloo ranks: about 1 run in 10 with no barrier, 1 in 60-80 with one or
    two barriers. The threads are at that point only waiting for the GIL, so sleeping
    ``settle_s`` seconds (which releases the GIL) lets them finish.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        time.sleep(settle_s)


def cleanup_distributed(info: DistInfo) -> None:
    """Drain (:func:`drain_collectives`) and destroy the process group if :func:`init_distributed`
    created it; when the caller owns the group, only wait for every rank (one barrier)."""
    if not _active(info):
        return
    if info.owns_group:
        drain_collectives()
        dist.destroy_process_group()
    else:
        dist.barrier()


# ----------------------------------------------------------------------------- batches
def shard_bounds(n: int, info: DistInfo) -> tuple[int, int]:
    """``[lo, hi)`` of this rank's contiguous slice of ``n`` items (sizes differ by at most one)."""
    if not info.enabled:
        return 0, n
    return n * info.rank // info.world_size, n * (info.rank + 1) // info.world_size


def shard_batch(x: torch.Tensor, y: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
    if not info.enabled:
        return x, y
    lo, hi = shard_bounds(x.shape[0], info)
    return x[lo:hi], y[lo:hi]


def loss_scale(local_size: int, global_size: int, info: DistInfo) -> float:
    """Factor turning this slice's *mean* loss into its share of the global mean.

    DDP averages gradients over ranks; with ``mean_loss_r × n_r × K / N`` on rank r the average is
    ``Σ_r n_r mean_r / N``, the gradient of the global batch's mean loss, for uneven slices too.
    """
    if not info.enabled or global_size == 0:
        return 1.0
    return local_size * info.world_size / global_size


def sharded_batch_indices(n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int, info: DistInfo,
                          start_batch: int = 0, drop_last: bool = False) -> Iterator[list[int]]:
    """Index lists of this rank's slices of the global batches of one epoch (map-style data).

    The epoch order is :func:`freetickets.data.iterator.epoch_permutation` of ``(seed, epoch)``
    (identical on every rank and in every process), global batch ``i`` is positions
    ``[i·B, (i+1)·B)`` of it and this rank takes its contiguous slice (:func:`shard_bounds`), exactly
    like the tensor path, so a resumed run (``start_batch``) sees the same samples.
    """
    from freetickets.data.iterator import epoch_permutation

    order = epoch_permutation(n, seed, epoch) if shuffle else torch.arange(n)
    num = n // batch_size if drop_last else math.ceil(n / batch_size)
    for i in range(start_batch, num):
        batch = order[i * batch_size : (i + 1) * batch_size]
        lo, hi = shard_bounds(batch.shape[0], info)
        yield batch[lo:hi].tolist()


class ShardedBatchSampler(torch.utils.data.Sampler):
    """``batch_sampler`` for ``DataLoader``: this rank's slice of every global batch of one epoch
    (see :func:`sharded_batch_indices`); ``len()`` is the number of global batches yielded."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int, info: DistInfo,
                 start_batch: int = 0, drop_last: bool = False):
        self.n, self.batch_size, self.shuffle = int(n), int(batch_size), bool(shuffle)
        self.seed, self.epoch, self.info = int(seed), int(epoch), info
        self.start_batch, self.drop_last = int(start_batch), bool(drop_last)

    def __len__(self) -> int:
        num = self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)
        return max(0, num - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        return sharded_batch_indices(self.n, self.batch_size, shuffle=self.shuffle, seed=self.seed,
                                     epoch=self.epoch, info=self.info, start_batch=self.start_batch,
                                     drop_last=self.drop_last)


# ----------------------------------------------------------------------------- collectives
def _active(info: DistInfo) -> bool:
    return info.enabled and dist.is_available() and dist.is_initialized()


def barrier(info: DistInfo) -> None:
    if _active(info):
        dist.barrier()


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place sum over ranks (no-op when not distributed); returns ``value``."""
    if _active(info):
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def broadcast_(value: torch.Tensor, info: DistInfo, src: int = 0) -> torch.Tensor:
    """In-place broadcast from rank ``src`` (no-op when not distributed); returns ``value``."""
    if _active(info):
        dist.broadcast(value, src=src)
    return value


@torch.no_grad()
def broadcast_buffers(model: nn.Module, info: DistInfo) -> None:
    """Make every rank's buffers (BatchNorm running statistics) equal to rank 0's.

    DDP broadcasts buffers at the start of each *training* forward; after the last step each rank
    holds statistics updated from its own slice. Call this before evaluating or saving.
    """
    if not _active(info):
        return
    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def run_on_main(fn: Callable[[], T], info: DistInfo) -> T | None:
    """Run ``fn`` on rank 0 only; if it raises :class:`UserError`, raise the same one-line error on
    every rank (instead of leaving the other ranks waiting in the next collective)."""
    if not _active(info):
        return fn()
    message = [None]
    result = None
    if info.is_main:
        try:
            result = fn()
        except UserError as exc:
            message[0] = str(exc)
    dist.broadcast_object_list(message, src=0)
    if message[0] is not None:
        raise UserError(message[0])
    return result


def convert_sync_batchnorm(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """``nn.SyncBatchNorm`` in place of BatchNorm layers (CUDA + DDP only; logs and returns the
    model unchanged otherwise). Parameters are the same objects, state-dict keys are unchanged,
    so tickets load into the plain model."""
    if not info.enabled:
        return model
    if device.type != "cuda":
        log.warning("sync_batchnorm: SyncBatchNorm needs CUDA; BatchNorm stays per-rank on %s", device.type)
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


# ----------------------------------------------------------------------------- per-rank sums in checkpoints
SUM_KEYS = ("loss", "correct", "seen")


def gather_sums(sums: dict, info: DistInfo) -> list[dict] | None:
    """Every rank's running training sums (``{"loss": float, "correct": int, "seen": int}``), by
    rank, for a step checkpoint; None when not distributed. A collective: every rank calls it.

    Why: each rank sums the loss/accuracy of its own slices and the epoch's row all-reduces them
    at the end of the epoch. A step checkpoint written by rank 0 alone would carry rank 0's sums
    only, and a resumed run would report rank 0's share twice; re-adding the gathered values per
    rank (float64, exact for the integer counts) gives the uninterrupted run's row bitwise.
    """
    if not _active(info):
        return None
    local = torch.tensor([float(sums[k]) for k in SUM_KEYS], dtype=torch.float64)
    if info.backend == "nccl":
        local = local.cuda()
    out = [torch.zeros_like(local) for _ in range(info.world_size)]
    dist.all_gather(out, local)
    return [{"loss": float(t[0]), "correct": int(t[1]), "seen": int(t[2])} for t in out]


def own_sums(saved: dict, by_rank: list[dict] | None, info: DistInfo) -> dict:
    """This rank's running sums when resuming from a step checkpoint (see :func:`gather_sums`).

    Same world size: the rank's own entry (exact). Another world size (not exact anyway): rank 0
    continues from the total and every other rank from zero, so the epoch's row stays the mean
    over all samples. Checkpoints without ``by_rank`` (single process, or written before it
    existed): ``saved``, taken as the total.
    """
    if by_rank is None:
        by_rank = [saved]
    if len(by_rank) == info.world_size:
        return dict(by_rank[info.rank])
    if info.rank != 0:
        return {"loss": 0.0, "correct": 0, "seen": 0}
    return {"loss": sum(s["loss"] for s in by_rank), "correct": sum(s["correct"] for s in by_rank),
            "seen": sum(s["seen"] for s in by_rank)}
