"""Sparse forward, training and inference FLOPs (docs/flops.md, RigL's accounting, Evci et al. 2020).

Notation, per sample: ``f_S`` = sparse forward FLOPs (:func:`forward_flops`: each sparse layer
at dense FLOPs x density, everything else dense), ``f_D`` = dense forward FLOPs
(``layer_flops.total``).

- Normal training step: ``3 f_S`` -- the forward pass, the gradient w.r.t. the layer inputs and
  the gradient w.r.t. the weights each cost one sparse forward.
- Gradient-growth update step (RigL; the step at which the engine prunes and regrows using the
  dense gradient): the weight gradient is computed densely, so ``2 f_S + f_D``.
  Layers and ops that are dense anyway cost the same 3x as on a normal step.
- Prune/regrow bookkeeping (sorting, top-k) and the optimizer update are not counted, as in RigL.
- ``other`` FLOPs (e.g. parameter-free matmuls) are counted 3x as well, which slightly
  over-counts ops without weights; this is RigL's convention and equal for all methods.

Totals are per run = sum over steps of batch_size x per-sample cost; evaluation passes are not
included (report them separately if wanted).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from freetickets.flops.counter import LayerFlops

__all__ = [
    "forward_flops",
    "train_step_flops",
    "TrainFlopsMeter",
    "estimate_train_flops",
    "inference_flops",
]


def forward_flops(layer_flops: LayerFlops, densities: Mapping[str, float]) -> float:
    """Sparse forward FLOPs of one sample: ``sum_l density_l * dense_l + other``.

    densities: weight name -> fraction of non-zero weights in [0, 1]; layers not listed count
    dense (density 1). A name that is not a layer of ``layer_flops`` raises ``ValueError`` (a
    name mismatch, e.g. a ``module.`` prefix, would otherwise silently count dense).
    """
    unknown = [name for name in densities if name not in layer_flops.per_layer]
    if unknown:
        raise ValueError(f"densities name layers that layer_flops does not have: {sorted(unknown)}; "
                         f"known layers: {sorted(layer_flops.per_layer)}")
    parts = [layer_flops.other]
    for name, dense in layer_flops.per_layer.items():
        density = densities.get(name, 1.0)
        if not 0.0 <= density <= 1.0:
            raise ValueError(f"density of {name!r} must lie in [0, 1], got {density!r}")
        parts.append(dense * density)
    return math.fsum(parts)


def train_step_flops(layer_flops: LayerFlops, densities: Mapping[str, float],
                     dense_grad_step: bool = False) -> float:
    """Training FLOPs of one sample in one step: ``3 f_S``, or ``2 f_S + f_D`` on a
    gradient-growth update step (``dense_grad_step=True``); see the module docstring."""
    sparse = forward_flops(layer_flops, densities)
    if dense_grad_step:
        return 2.0 * sparse + layer_flops.total
    return 3.0 * sparse


class TrainFlopsMeter:
    """Accumulates the training FLOPs of an actual run, step by step.

    Call :meth:`step` once per optimizer step with the number of samples it processed (under DDP
    either the global batch on one rank, or each rank's own batch summed afterwards), the current densities
    (``SparseEngine.densities()``; ``{}`` for a dense model) and whether that step used the dense
    gradient (``SparseEngine.last_step_was_update`` with gradient growth). The per-sample cost is
    cached per distinct densities, so a step costs one dict-to-tuple conversion and a lookup.
    """

    _CACHE_LIMIT = 256

    def __init__(self, layer_flops: LayerFlops) -> None:
        self.layer_flops = layer_flops
        self.total = 0.0  # FLOPs so far
        self.steps = 0  # optimizer steps counted
        self.dense_grad_steps = 0  # of which gradient-growth update steps
        self.samples = 0  # training samples seen
        self._cache: dict[tuple, float] = {}

    def step(self, batch_size: int, densities: Mapping[str, float],
             dense_grad_step: bool = False) -> float:
        """Add one optimizer step of ``batch_size`` samples; return the FLOPs it added."""
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size!r}")
        key = (bool(dense_grad_step), *densities.items())
        per_sample = self._cache.get(key)
        if per_sample is None:
            per_sample = train_step_flops(self.layer_flops, densities, dense_grad_step)
            if len(self._cache) >= self._CACHE_LIMIT:  # densities drift: keep memory bounded
                self._cache.clear()
            self._cache[key] = per_sample
        added = per_sample * batch_size
        self.total += added
        self.steps += 1
        self.dense_grad_steps += bool(dense_grad_step)
        self.samples += batch_size
        return added

    def state_dict(self) -> dict[str, Any]:
        """Counters as plain numbers (safe for ``torch.load(weights_only=True)`` and JSON)."""
        return {"total": self.total, "steps": self.steps,
                "dense_grad_steps": self.dense_grad_steps, "samples": self.samples}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the counters of :meth:`state_dict` (exact resume)."""
        missing = {"total", "steps", "dense_grad_steps", "samples"} - set(state)
        if missing:
            raise ValueError(f"TrainFlopsMeter state lacks keys {sorted(missing)}")
        self.total = float(state["total"])
        self.steps = int(state["steps"])
        self.dense_grad_steps = int(state["dense_grad_steps"])
        self.samples = int(state["samples"])


def estimate_train_flops(layer_flops: LayerFlops, densities: Mapping[str, float], steps: int,
                         batch_size: int, update_steps: int = 0) -> float:
    """Closed-form training FLOPs for planning, without training.

    ``batch_size * ((steps - update_steps) * 3 f_S + update_steps * (2 f_S + f_D))``: ``steps``
    optimizer steps in total, of which ``update_steps`` are gradient-growth updates (e.g.
    ``end_step // update_interval`` for RigL; 0 for static masks, dense models or random/SET
    growth). Equals a :class:`TrainFlopsMeter` fed the same steps with fixed densities.
    """
    if steps < 0 or batch_size < 0 or not 0 <= update_steps <= steps:
        raise ValueError(f"need steps >= 0, batch_size >= 0 and 0 <= update_steps <= steps; got "
                         f"steps={steps!r}, batch_size={batch_size!r}, update_steps={update_steps!r}")
    normal = train_step_flops(layer_flops, densities, False)
    update = train_step_flops(layer_flops, densities, True)
    return float(batch_size) * ((steps - update_steps) * normal + update_steps * update)


def inference_flops(layer_flops: LayerFlops,
                    member_densities: Sequence[Mapping[str, float]]) -> float:
    """Per-sample inference FLOPs of an ensemble: sum over members of the sparse forward.

    member_densities: one densities mapping per member (``{}`` for a dense member). Averaging
    the member probabilities is not counted (negligible, and FlopCounterMode would not count it).
    """
    return math.fsum(forward_flops(layer_flops, d) for d in member_densities)
