"""Prune-fraction schedules: pure functions ``(step, prune_fraction, end_step) -> fraction``.

``step`` is the number of optimizer steps taken (the engine's counter); the value is the fraction
p_t of each layer's active weights that the update at that step prunes and regrows.

* ``constant``: p_t = p (the released CIFAR code).
* ``cosine``: p_t = p/2 * (1 + cos(pi * t / end_step)), 0 at and after ``end_step`` (RigL, the
  released ImageNet code). Needs ``end_step``.

Users may add their own to :data:`SCHEDULES` (name -> function with the same signature).
"""
from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["SCHEDULES", "Schedule", "constant", "cosine", "get_schedule"]

Schedule = Callable[[int, float, "int | None"], float]


def constant(step: int, prune_fraction: float, end_step: int | None = None) -> float:
    """p_t = p for every step."""
    return float(prune_fraction)


def cosine(step: int, prune_fraction: float, end_step: int | None = None) -> float:
    """p_t = p/2 * (1 + cos(pi * step / end_step)); p at step 0, 0 at ``end_step`` and after."""
    if end_step is None or end_step <= 0:
        raise ValueError(f"end_step must be a positive integer for prune_schedule='cosine', got {end_step!r}")
    t = min(max(step, 0), end_step)
    return 0.5 * prune_fraction * (1.0 + math.cos(math.pi * t / end_step))


#: Registry: schedule name -> function. Add entries to use your own schedule by name.
SCHEDULES: dict[str, Schedule] = {"constant": constant, "cosine": cosine}


def get_schedule(name: str) -> Schedule:
    """Look up a schedule by name (``ValueError`` naming the allowed values otherwise)."""
    try:
        return SCHEDULES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"prune_schedule must be one of {', '.join(sorted(SCHEDULES))}; got {name!r}"
        ) from None
