"""Deterministic, resumable mini-batch iteration over tensor-resident splits."""
from __future__ import annotations

import math
from typing import Callable, Iterator, Optional

import torch

from freetickets.data.base import TensorSplit, make_generator

__all__ = ["BatchIterator", "iterate_eval", "epoch_permutation"]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: ``randperm(n)`` from a CPU generator seeded by a fixed
    function of ``(seed, epoch)``. Identical in every process, on every rank and device."""
    g = make_generator("permutation", int(seed), int(epoch))
    return torch.randperm(n, generator=g)


class BatchIterator:
    """Mini-batches ``(x float32, y int64)`` of a :class:`TensorSplit`, on the split's device.

    Determinism and exact resume: the order of epoch ``epoch`` is a fixed function of
    ``(seed, epoch)`` (:func:`epoch_permutation`), and batch ``i``'s augmentation uses a fresh
    generator seeded by ``(seed, epoch, i)``. Nothing depends on how many batches were drawn
    before, so ``BatchIterator(..., start_batch=k)`` yields exactly (bitwise) the batches
    ``k, k+1, ...`` of a full pass: a run resumed mid-epoch sees the same data it would have.

    Args:
        split: the data; ``x`` raw (``uint8`` images or float signals), ``y`` labels.
        batch_size: samples per batch (per rank when ``world_size > 1``).
        shuffle: permute each epoch; otherwise the natural order.
        seed, epoch: select the permutation and augmentation streams.
        augment: ``augment(x_raw, generator) -> x_raw`` (training only) or ``None``.
        normalize: ``normalize(x_raw) -> float x``; ``None`` means a float32 cast.
        start_batch: first batch to yield (0-based, in this rank's numbering).
        drop_last: drop a final incomplete batch.
        rank, world_size: data-parallel sharding: every rank computes the same permutation,
            truncates it to a multiple of ``world_size`` and takes every ``world_size``-th
            sample starting at ``rank`` (equal batch counts on all ranks, as DDP needs).
    """

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        epoch: int = 0,
        augment: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None,
        normalize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        start_batch: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.augment = augment
        self.normalize = normalize
        self.start_batch = int(start_batch)
        self.drop_last = bool(drop_last)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.num_samples = len(split) // self.world_size  # per rank

    def num_batches(self) -> int:
        """Batches in a full pass (ignoring ``start_batch``)."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def __len__(self) -> int:
        """Batches this iterator yields (a full pass minus ``start_batch``)."""
        return max(0, self.num_batches() - self.start_batch)

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the epoch, in order (CPU, int64)."""
        n = len(self.split)
        order = epoch_permutation(n, self.seed, self.epoch) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            order = order[: self.num_samples * self.world_size][self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices().to(self.split.x.device)
        for i in range(self.start_batch, self.num_batches()):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.split.x.index_select(0, idx)
            y = self.split.y.index_select(0, idx)
            if self.augment is not None:
                # Batch numbering is global (rank-independent) so that ranks differ only in
                # their samples: seed the stream with the rank as well.
                g = make_generator("augment", self.seed, self.epoch, i, self.rank)
                x = self.augment(x, g)
            x = self.normalize(x) if self.normalize is not None else x.to(torch.float32)
            yield x, y.to(torch.int64)


def iterate_eval(
    x: torch.Tensor,
    batch_size: int,
    normalize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> Iterator[torch.Tensor]:
    """Batches of ``x`` in order, normalised (or cast to float32), for evaluation.

    Converting per batch keeps a ``uint8`` test set small in memory; concatenating the outputs
    equals ``normalize(x)``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        yield normalize(xb) if normalize is not None else xb.to(torch.float32)
