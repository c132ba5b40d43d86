"""freetickets.data: data sets, deterministic batching, OoD and corrupted test sets.

* :func:`load_data` -> :class:`DataBundle` (``mnist1d`` generated and cached, ``cifar10``,
  ``cifar100`` from the official python layout, ``imagenet`` with the ``vision`` extra).
* :class:`BatchIterator`: resumable, deterministic mini-batches with on-device augmentation;
  :func:`iterate_eval` for evaluation passes.
* :func:`ood_sets` / :func:`list_ood`, :func:`corruption_sets` / :func:`list_corruptions`.
"""
from __future__ import annotations

from freetickets.data.api import (
    corruption_sets,
    list_corruptions,
    list_data,
    list_ood,
    load_data,
    ood_sets,
)
from freetickets.data.base import CorruptedSplit, DataBundle, TensorSplit, cache_dir, derive_seed
from freetickets.data.iterator import BatchIterator, epoch_permutation, iterate_eval
from freetickets.data.transforms import Normalize, RandomCropFlip, ToFloat

__all__ = [
    "load_data",
    "list_data",
    "DataBundle",
    "TensorSplit",
    "CorruptedSplit",
    "BatchIterator",
    "iterate_eval",
    "epoch_permutation",
    "ood_sets",
    "list_ood",
    "corruption_sets",
    "list_corruptions",
    "RandomCropFlip",
    "Normalize",
    "ToFloat",
    "cache_dir",
    "derive_seed",
]
