"""Forward FLOPs of the efficient-ensemble model forms (MIMO, BatchEnsemble, MC dropout).

The package's convention (:mod:`freetickets.flops.counter`): FLOPs are what
``torch.utils.flop_counter.FlopCounterMode`` counts -- 2 x the multiply-accumulates of
convolutions and matrix products; element-wise ops count 0. One exception, because it is the
point of BatchEnsemble's cost: its rank-1 factors are element-wise products on every layer's
input (``x * r_k``) and output (``y * s_k``), counted here at 1 FLOP per element (the per-member
bias add is not counted, as no bias add is). MC dropout's mask multiplies are element-wise and
*not* counted (negligible next to the convolutions, and the same as a dense network's
activations).
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["form_forward_flops", "rank1_flops"]


def rank1_flops(model: nn.Module, example: torch.Tensor) -> float:
    """Element-wise rank-1 FLOPs of every BatchEnsemble layer in one forward on ``example``:
    ``numel(layer input) + numel(layer output)`` per layer (0 for a model without such layers)."""
    from freetickets.models.batchensemble import BatchEnsembleLayer

    total: list[float] = []

    def hook(_module, inputs, output) -> None:
        total.append(float(inputs[0].numel() + output.numel()))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, BatchEnsembleLayer)]
    if not handles:
        return 0.0
    try:
        _forward(model, example)
    finally:
        for h in handles:
            h.remove()
    return math.fsum(total)


def _forward(model: nn.Module, example: torch.Tensor) -> None:
    """One eval-mode, no-grad forward (restoring the modules' training flags)."""
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for m, flag in flags.items():
            m.training = flag


def form_forward_flops(model: nn.Module, example: torch.Tensor) -> float:
    """FLOPs of one forward of ``model`` on ``example`` (already in the layout the form's
    ``forward`` reads: MIMO's stacked ``(1, M * C, ...)``, BatchEnsemble's tiled ``(M, ...)``):
    FlopCounterMode's total plus BatchEnsemble's rank-1 products (module docstring)."""
    from torch.utils.flop_counter import FlopCounterMode

    ref = next(iter(model.parameters()))
    example = example.to(device=ref.device, dtype=ref.dtype)
    counter = FlopCounterMode(display=False)
    with counter:
        _forward(model, example)
    return float(counter.get_total_flops()) + rank1_flops(model, example)
