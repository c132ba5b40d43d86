"""Per-claim verdicts from paired differences over seeds (the ``claims`` block of ``results.json``, docs/evaluation.md).

A claim compares two methods trained with the same seeds (e.g. EDST vs dense on accuracy).
For seed ``i`` the paired difference is ``d_i = a_i - b_i`` (``a`` = claimed-better method).
The interval is a two-sided Student-t interval for the mean of ``d``:
``mean(d) ± t_{0.975, n-1} * sd(d) / sqrt(n)`` with ``sd`` the sample standard deviation
(``ddof=1``).

Why Student-t over paired seeds: the seeds are few (2-5), the seed-to-seed variance is
unknown and must be estimated from the same few differences, and pairing removes the variation
that both methods share through the seed (data order, initialisation). A normal (z) interval
would be far too narrow at n <= 5; a bootstrap over 2-5 values is meaningless.

Degenerate cases (defined, not errors):
- one seed: the spread cannot be estimated; the interval is ``(-inf, inf)``, verdict
  ``not resolved``;
- zero spread (all differences equal, n >= 2): the interval is the point ``(d, d)``; the
  verdict follows the sign of ``d`` (0 -> ``not resolved``).

Verdicts, for a claim that ``a`` is higher (``higher_is_better=True``) or lower than ``b``:
``holds`` if the whole interval lies strictly on the claimed side of 0, ``fails`` if it lies
strictly on the other side, ``not resolved`` if it contains 0.
"""
from __future__ import annotations

import math
from typing import Sequence

from scipy import stats

HOLDS = "holds"
NOT_RESOLVED = "not resolved"
FAILS = "fails"


def paired_interval(diffs: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean paired difference and its Student-t interval: ``(mean, lo, hi)``.

    ``diffs``: ``(n,)`` per-seed differences, n >= 1, all finite.
    """
    d = [float(x) for x in diffs]
    if not d:
        raise ValueError("paired_interval needs at least one difference")
    if not all(math.isfinite(x) for x in d):
        raise ValueError("paired differences must be finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    n = len(d)
    mean = sum(d) / n
    if n == 1:
        return mean, -math.inf, math.inf
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    if var == 0.0:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df=n - 1)) * math.sqrt(var / n)
    return mean, mean - half, mean + half


def verdict(lo: float, hi: float, higher_is_better: bool = True, threshold: float = 0.0,
            inclusive: bool = False) -> str:
    """``holds`` / ``not resolved`` / ``fails`` for an interval of ``a - b``.

    The claim is ``a - b > threshold`` (``higher_is_better``) or ``a - b < threshold``;
    ``inclusive`` makes it ``>=`` / ``<=`` (an interval touching the threshold then holds, e.g.
    "inference FLOPs <= dense" with a point interval at the threshold).
    """
    lo, hi = lo - threshold, hi - threshold
    if not higher_is_better:
        lo, hi = -hi, -lo
    if lo > 0.0 or (inclusive and lo >= 0.0):
        return HOLDS
    if hi < 0.0:
        return FAILS
    return NOT_RESOLVED


def claim(
    name: str,
    a: Sequence[float],
    b: Sequence[float],
    higher_is_better: bool = True,
    confidence: float = 0.95,
    threshold: float = 0.0,
    inclusive: bool = False,
) -> dict:
    """One ``claims`` entry: ``{"name", "difference", "interval", "verdict", "seeds"}``.

    ``a``, ``b``: ``(n,)`` metric values of the two methods, index ``i`` = the same seed.
    ``difference`` is the mean of ``a - b``; ``interval`` is ``[lo, hi]`` (JSON cannot hold
    infinities, so an unbounded end is written as ``None``). ``threshold`` and ``inclusive``
    as in :func:`verdict` (the difference and interval are always of plain ``a - b``).
    """
    if len(a) != len(b):
        raise ValueError(f"claim {name!r}: {len(a)} vs {len(b)} seeds; pairs need equal counts")
    mean, lo, hi = paired_interval([x - y for x, y in zip(a, b)], confidence)
    return {
        "name": name,
        "difference": mean,
        "interval": [lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None],
        "verdict": verdict(lo, hi, higher_is_better, threshold, inclusive),
        "seeds": len(a),
    }
