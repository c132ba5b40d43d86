"""Layer-wise densities for a target overall sparsity (``uniform``, ``er``, ``erk``).

All functions take ``shapes``: parameter name -> weight shape (e.g. ``(out, in/groups, kh, kw)``
for a conv, ``(out, in)`` for a linear layer) and the overall ``sparsity`` S in [0, 1) of the
sparse layers together.

* ``uniform``: every layer at density 1 - S.
* ``er`` (Erdős–Rényi, Mocanu et al. 2018): density_l = eps * (n_in + n_out) / (n_in * n_out)
  with ``n_out = shape[0]`` and ``n_in = shape[1]`` (input channels per group for convs; kernel
  dimensions are *not* included -- that is what distinguishes ER from ERK).
* ``erk`` (Erdős–Rényi-Kernel, Evci et al. 2020): density_l = eps * sum(shape) / prod(shape),
  kernel dimensions included.

For ``er``/``erk`` the scale ``eps`` is solved so that sum_l density_l * n_l equals the target
``round(density * N)`` (N = total sparse parameters); a layer whose density would exceed 1 is
made dense (density 1) and ``eps`` is re-solved for the rest, until no layer exceeds 1. Because
``eps`` only grows when a layer is capped, capping every offender at once is exact.

The active count of layer l is ``round(d_l * n_l)`` (half up, exact arithmetic, see
:func:`layer_active_counts`), so the total is within one weight per layer of the target.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from freetickets.sparse.selection import round_half_up

__all__ = ["DISTRIBUTIONS", "layer_active_counts", "layer_densities", "validate_sparsity"]

DISTRIBUTIONS = ("uniform", "er", "erk")


def validate_sparsity(sparsity: float, name: str = "sparsity") -> float:
    """Return ``float(sparsity)`` or raise ``ValueError`` unless it lies in [0, 1)."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ValueError(f"{name} must be in [0, 1) (fraction of zero weights), got {sparsity!r}")
    return value


def _raw_score(shape: Sequence[int], distribution: str) -> float:
    shape = tuple(int(s) for s in shape)
    if distribution == "erk":
        return sum(shape) / math.prod(shape)
    n_out = shape[0]
    n_in = shape[1] if len(shape) > 1 else 1
    return (n_in + n_out) / (n_in * n_out)


def layer_densities(
    shapes: Mapping[str, Sequence[int]], sparsity: float, distribution: str = "erk"
) -> dict[str, float]:
    """Density (fraction of active weights) of every layer, ``name -> d_l`` in [0, 1].

    ``shapes`` maps parameter names to weight shapes; ``sparsity`` is the overall fraction of
    zero weights over all these layers; ``distribution`` is one of ``uniform``, ``er``, ``erk``.
    """
    sparsity = validate_sparsity(sparsity)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}")
    if not shapes:
        raise ValueError("shapes: no sparsifiable layer given")
    numels = {name: math.prod(int(s) for s in shape) for name, shape in shapes.items()}
    if any(n <= 0 for n in numels.values()):
        raise ValueError("shapes: every layer must have at least one weight")
    density = 1.0 - sparsity
    if distribution == "uniform":
        return {name: density for name in shapes}

    target = round_half_up(density * sum(numels.values()))
    raw = {name: _raw_score(shape, distribution) for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        free = [name for name in shapes if name not in dense]
        budget = target - sum(numels[name] for name in dense)
        weight = sum(raw[name] * numels[name] for name in free)
        eps = budget / weight if free and weight > 0 else 0.0
        over = [name for name in free if eps * raw[name] > 1.0]
        if not over:
            break
        dense.update(over)
    return {name: (1.0 if name in dense else min(1.0, max(0.0, eps * raw[name]))) for name in shapes}


def layer_active_counts(
    shapes: Mapping[str, Sequence[int]], sparsity: float, distribution: str = "erk"
) -> dict[str, int]:
    """Exact active-weight count per layer: ``round(d_l * n_l)`` (half up) of :func:`layer_densities`."""
    densities = layer_densities(shapes, sparsity, distribution)
    out = {}
    for name, shape in shapes.items():
        n = math.prod(int(s) for s in shape)
        out[name] = min(n, max(0, round_half_up(densities[name] * n)))
    return out
