"""Efficient-ensemble model forms (design §6 baselines): MIMO, BatchEnsemble and MC dropout.

Each wraps a registry model (``create_model(...)``), which it takes over and edits in place,
and exposes ``num_members`` and ``member_logits(x)``: a plain test batch ``(B, ...)`` ->
member logits ``(M, B, C)``. Their training forms differ:

* :class:`MIMO`: ``forward((B', M * C_in, ...)) -> (M, B', C)`` on batches from
  :func:`mimo_training_batch` (targets ``(M, B')``);
* :class:`BatchEnsemble`: ``forward((M * B, ...)) -> (M * B, C)`` on :func:`tile_batch` (x and y);
* :class:`MCDropout`: ``forward((B, ...)) -> (B, C)`` with ordinary dropout.

FLOPs of each form: :mod:`freetickets.flops.efficient`.
"""
from freetickets.models.batchensemble import BATCHENSEMBLE_INITS, BatchEnsemble, BatchEnsembleLayer, tile_batch
from freetickets.models.mcdropout import MCDropout, MCDropoutInput, mask_seed
from freetickets.models.mimo import MIMO, mimo_training_batch

__all__ = [
    "BATCHENSEMBLE_INITS",
    "BatchEnsemble",
    "BatchEnsembleLayer",
    "MCDropout",
    "MCDropoutInput",
    "MIMO",
    "mask_seed",
    "mimo_training_batch",
    "tile_batch",
]
