"""Exact sparse-aware FLOPs accounting (docs/flops.md).

:func:`dense_layer_flops` measures the per-sample dense forward FLOPs of every Conv/Linear layer
(FlopCounterMode's convention: 2 x multiply-accumulates, bias and element-wise ops not counted);
:func:`forward_flops`, :func:`train_step_flops`, :class:`TrainFlopsMeter`,
:func:`estimate_train_flops` and :func:`inference_flops` turn them into sparse forward,
training (RigL accounting) and ensemble inference FLOPs.
"""
from freetickets.flops.counter import LayerFlops, dense_layer_flops
from freetickets.flops.training import (
    TrainFlopsMeter,
    estimate_train_flops,
    forward_flops,
    inference_flops,
    train_step_flops,
)

__all__ = [
    "LayerFlops",
    "dense_layer_flops",
    "forward_flops",
    "train_step_flops",
    "TrainFlopsMeter",
    "estimate_train_flops",
    "inference_flops",
]
