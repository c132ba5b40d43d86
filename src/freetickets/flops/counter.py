"""Dense per-layer forward FLOPs of a model (docs/flops.md).

Convention (that of ``torch.utils.flop_counter.FlopCounterMode``, which we follow exactly so
that our numbers can be checked against it): FLOPs = 2 x multiply-accumulates of convolutions
and matrix multiplications; bias additions, normalisation, activations, pooling, softmax and
other element-wise ops count 0. Per sample:

- ``Linear(in, out)`` applied to an input with ``T`` rows (T = 1 for a plain (B, in) input):
  ``2 * T * in * out``.
- ``ConvNd(c_in, c_out, kernel, groups)``: ``2 * prod(out_spatial) * c_out * (c_in / groups) *
  prod(kernel)``; stride, padding and dilation act through the output size ``out_spatial``.

The shapes come from one real forward pass on a batch of 1, so any module tree works.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn

# Same layer set and naming rule as the sparse engine, so per_layer keys match engine.masks.
from freetickets.sparse.params import SPARSE_MODULE_TYPES, unwrap_model

logger = logging.getLogger(__name__)

__all__ = ["LayerFlops", "dense_layer_flops"]

@dataclass
class LayerFlops:
    """Dense forward FLOPs of one sample.

    per_layer: weight parameter name (as in ``model.named_parameters()`` of the unwrapped model)
        -> FLOPs of the Conv/Linear layer that owns it. A layer that was not called in the
        forward pass has 0.
    other: FLOPs of every other op FlopCounterMode counts (e.g. ``torch.matmul`` outside
        modules, attention, transposed convolutions); never scaled by a density.
    """

    per_layer: dict[str, float] = field(default_factory=dict)
    other: float = 0.0

    @property
    def total(self) -> float:
        """Dense forward FLOPs per sample: sum of ``per_layer`` plus ``other``."""
        return math.fsum(self.per_layer.values()) + self.other


def _layer_flops(module: nn.Module, output: torch.Tensor) -> float:
    """FLOPs of one call of a Conv/Linear module with a batch-1 ``output`` (see module doc)."""
    if isinstance(module, nn.Linear):
        return 2.0 * output.numel() * module.in_features
    # Conv: output.numel() = c_out * prod(out_spatial) for batch 1.
    kernel = math.prod(module.kernel_size)
    return 2.0 * output.numel() * (module.in_channels // module.groups) * kernel


def dense_layer_flops(model: nn.Module, input_shape: tuple[int, ...]) -> LayerFlops:
    """Per-sample dense forward FLOPs of every Conv1d/2d/3d and Linear layer, plus the rest.

    model: any module (DDP / torch.compile wrappers are unwrapped). input_shape: the shape of
    one sample *without* the batch dimension, e.g. ``(1, 40)`` for MNIST-1D or ``(3, 32, 32)``.
    Runs one forward pass on zeros of shape ``(1, *input_shape)`` (model dtype and device) in
    eval mode under ``torch.no_grad`` -- eval so that batch-1 BatchNorm works and no running
    statistics change -- with forward hooks recording each layer's output shape, inside
    ``FlopCounterMode``. Every module's training flag is restored afterwards.

    ``other`` = FlopCounterMode's total minus the sum of the per-layer values; FlopCounterMode
    does not count BatchNorm, activations, pooling or bias adds, and neither do we.
    Caveat: a layer whose weight is used without calling the module (e.g. ``out_proj`` inside
    ``nn.MultiheadAttention``) gets 0 in ``per_layer`` and its FLOPs land in ``other``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = unwrap_model(model)
    names = {id(p): name for name, p in model.named_parameters()}
    per_layer: dict[str, float] = {}
    hooks = []

    def hook(module: nn.Module, _inputs, output) -> None:
        per_layer[names[id(module.weight)]] += _layer_flops(module, output)

    for module in model.modules():
        if isinstance(module, SPARSE_MODULE_TYPES) and id(module.weight) in names:
            per_layer.setdefault(names[id(module.weight)], 0.0)
            hooks.append(module.register_forward_hook(hook))

    reference = next(iter(model.parameters()), None)
    if reference is None:
        reference = next(iter(model.buffers()), torch.zeros(()))
    dtype = reference.dtype if reference.is_floating_point() else torch.get_default_dtype()
    x = torch.zeros((1, *tuple(input_shape)), dtype=dtype, device=reference.device)

    flags = {module: module.training for module in model.modules()}
    counter = FlopCounterMode(display=False)
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(x)
    finally:
        for handle in hooks:
            handle.remove()
        for module, flag in flags.items():
            module.training = flag

    other = float(counter.get_total_flops()) - math.fsum(per_layer.values())
    if other < 0:
        # Our per-layer formula disagrees with FlopCounterMode: a bug, not a property of the model.
        logger.warning("per-layer FLOPs exceed FlopCounterMode's total by %.0f; check the model's "
                       "Conv/Linear layers", -other)
    return LayerFlops(per_layer=per_layer, other=other)
