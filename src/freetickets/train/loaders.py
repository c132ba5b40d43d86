"""Training batches and validation for both kinds of data split, sharded for DDP.

* Tensor splits (:class:`~freetickets.data.base.TensorSplit`: MNIST-1D, CIFAR) are iterated by
  :class:`~freetickets.data.BatchIterator` (data on the device, augmentation on tensors): every
  rank draws the same *global* batch and takes its contiguous slice.
* Map-style datasets (ImageNet's ``ImageFolder`` subsets, anything with ``__len__`` and
  ``__getitem__`` returning ``(x, y)``) go through a ``DataLoader`` whose batch sampler
  (:class:`~freetickets.train.distributed.ShardedBatchSampler`) yields the same slices of the same
  epoch-seeded global batches, so both paths shard identically and resume at a batch index.
  Augmentation then happens in the dataset's transforms (torchvision draws from worker RNGs, so a
  map-style run is reproducible in its data order, not bitwise in its augmentation).

Validation is sharded the same way; every rank gets the all-reduced totals (see
:mod:`freetickets.train.distributed` for why decisions cannot diverge).
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from freetickets.train.distributed import (DistInfo, ShardedBatchSampler, all_reduce_sum, broadcast_, shard_batch,
                                           shard_bounds)

log = logging.getLogger(__name__)


def is_tensor_split(split: Any) -> bool:
    return hasattr(split, "x") and hasattr(split, "y") and isinstance(getattr(split, "x"), torch.Tensor)


def split_size(split: Any) -> int:
    return int(split.x.shape[0]) if is_tensor_split(split) else len(split)


class TrainBatches:
    """One epoch of ``(x_local, y_local, global_batch_size)`` for this rank, from batch
    ``start_batch`` on; ``len()`` is the number of (global) batches yielded."""

    def __init__(self, data: Any, batch_size: int, *, seed: int, epoch: int, start_batch: int, info: DistInfo,
                 device: torch.device, num_workers: int = 0):
        from freetickets.data import BatchIterator

        self.info, self.device = info, device
        split = data.train
        if is_tensor_split(split):
            self._iter = BatchIterator(split, batch_size, shuffle=True, seed=seed, epoch=epoch, augment=data.augment,
                                       normalize=data.normalize, start_batch=start_batch)
            self._loader = None
        else:
            self._sampler = ShardedBatchSampler(len(split), batch_size, shuffle=True, seed=seed, epoch=epoch,
                                                info=info, start_batch=start_batch)
            self._iter = None
            self._loader = torch.utils.data.DataLoader(
                split, batch_sampler=self._sampler, num_workers=num_workers, pin_memory=device.type == "cuda",
                persistent_workers=False)
            self._full = [min(batch_size, len(split) - i * batch_size)
                          for i in range(start_batch, start_batch + len(self._sampler))]

    def __len__(self) -> int:
        return len(self._iter) if self._iter is not None else len(self._sampler)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        if self._iter is not None:
            for x, y in self._iter:
                n = int(x.shape[0])
                x, y = shard_batch(x, y, self.info)
                yield x, y, n
            return
        for (x, y), n in zip(self._loader, self._full):
            yield (x.to(self.device, non_blocking=True), torch.as_tensor(y).to(self.device, non_blocking=True), n)


def steps_per_epoch(data: Any, batch_size: int) -> int:
    return math.ceil(split_size(data.train) / batch_size)


def _eval_batches(split: Any, lo: int, hi: int, batch_size: int, normalize: Callable | None, device: torch.device,
                  num_workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if is_tensor_split(split):
        for i in range(lo, hi, batch_size):
            xb = split.x[i : min(i + batch_size, hi)].to(device, non_blocking=True)
            yb = split.y[i : min(i + batch_size, hi)].to(device, non_blocking=True)
            yield (normalize(xb) if normalize is not None else xb.to(torch.float32)), yb
        return
    subset = torch.utils.data.Subset(split, range(lo, hi))
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         pin_memory=device.type == "cuda")
    for xb, yb in loader:
        yield xb.to(device, non_blocking=True), torch.as_tensor(yb).to(device, non_blocking=True)


@torch.no_grad()
def evaluate_sharded(model: nn.Module, split: Any, batch_size: int, normalize: Callable | None,
                     device: torch.device, info: DistInfo, autocast: Callable | None = None,
                     num_workers: int = 0, channels_last: bool = False,
                     forward: Callable | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on ``split``, identical on every rank.

    ``forward(x) -> (B, C)`` scores (default ``model(x)``; a model form's ensemble log-probabilities).

    Each rank evaluates its contiguous shard; the float64 loss sum and the int64 correct count are
    all-reduced and then broadcast from rank 0, so every rank holds bitwise the same two numbers
    (best-epoch decisions cannot differ). Without DDP this is a plain pass over the split.
    """
    was_training = model.training
    model.eval()
    n = split_size(split)
    lo, hi = shard_bounds(n, info)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct count (exact < 2^53)
    for xb, yb in _eval_batches(split, lo, hi, batch_size, normalize, device, num_workers):
        if channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast() if autocast else contextlib.nullcontext():
            logits = model(xb) if forward is None else forward(xb)
        logits = logits.float()
        totals[0] += F.cross_entropy(logits, yb, reduction="sum").double()
        totals[1] += (logits.argmax(1) == yb).sum().double()
    model.train(was_training)
    all_reduce_sum(totals, info)
    broadcast_(totals, info)
    return float(totals[0]) / max(n, 1), float(totals[1]) / max(n, 1)


@torch.no_grad()
def evaluate_split(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                   normalize: Callable | None, device: torch.device, autocast=None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode on a tensor split."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = x.shape[0]
    for i in range(0, n, batch_size):
        xb = x[i : i + batch_size].to(device, non_blocking=True)
        yb = y[i : i + batch_size].to(device, non_blocking=True)
        if normalize is not None:
            xb = normalize(xb)
        with autocast() if autocast else contextlib.nullcontext():
            logits = model(xb)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
    model.train(was_training)
    return float(loss_sum) / max(n, 1), float(correct) / max(n, 1)
