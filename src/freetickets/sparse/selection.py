"""Exact, deterministic top-k selection on a subset of a tensor, and exact integer rounding.

Every prune and grow rule reduces to "pick exactly ``k`` of these candidate positions with the
smallest (or largest) score". Doing that with a full sort is O(n log n) and allocates index
tensors of the full size; here the candidates are gathered first (``scores[candidates]``, a copy
of only the subset), the k-th value is found with ``kthvalue`` (a selection, O(m)), and only the
positions *tied* with the k-th value need an index list.

Tie rule (used everywhere in :mod:`freetickets.sparse`): among equal scores the position with the
**lower flat index is selected first**. NaN scores are treated as the least preferred value
(selected last). This makes every update a deterministic function of its inputs, on CPU and CUDA.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

__all__ = ["ceil_product", "round_half_up", "select_largest", "select_smallest"]


def round_half_up(x: float) -> int:
    """``floor(x + 1/2)`` computed exactly on the binary value of ``x`` (no banker's rounding)."""
    return math.floor(Fraction(x) + Fraction(1, 2))


def ceil_product(fraction: float, count: int) -> int:
    """``ceil(fraction * count)`` computed exactly; ``0.3 * 10`` gives 3, not 4 as float math would."""
    return math.ceil(Fraction(fraction) * count)


#: Candidate sets at least this large use the sampled band selection (see _band_select).
BAND_MIN_CANDIDATES = 1 << 15
_SAMPLE_SIZE = 1 << 15  # candidates in the strided sample
_Z = 5.0  # half-width of the band, in standard deviations of the sampled rank
_SLACK = 16  # ... plus this many sample ranks


def _flat_indices(flat_mask: torch.Tensor) -> torch.Tensor:
    """Ascending int64 indices of the True entries of a 1-D bool tensor. On CPU this uses
    ``numpy.flatnonzero`` (single-threaded, a byte scan; several times faster than
    ``torch.nonzero``, which writes a 2-D result and is parallelised poorly)."""
    if flat_mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(flat_mask.numpy()))
    return flat_mask.nonzero().squeeze(1)


def _choose(vals: torch.Tensor, r: int, largest: bool) -> torch.Tensor:
    """Bool mask over ``vals`` (1-D, in flat-index order) with exactly ``r`` True entries: the
    ``r`` smallest (largest) values, ties by lower position, NaN after every number."""
    count = vals.numel()
    if r == 0:
        return torch.zeros(count, dtype=torch.bool, device=vals.device)
    if r == count:
        return torch.ones(count, dtype=torch.bool, device=vals.device)
    nan = torch.isnan(vals)
    n_nan = int(torch.count_nonzero(nan))
    numbers = count - n_nan
    if r >= numbers:  # every number, then the NaNs of lowest position
        chosen = ~nan
        if r > numbers:
            chosen |= nan & (torch.cumsum(nan, 0) <= r - numbers)
        return chosen
    # kthvalue orders NaN after every number, so ranks 1..numbers are the numbers, ascending.
    threshold = vals.kthvalue(numbers - r + 1 if largest else r).values
    chosen = (vals > threshold) if largest else (vals < threshold)
    need = r - int(torch.count_nonzero(chosen))
    tied = vals == threshold
    if int(torch.count_nonzero(tied)) == need:  # the usual case: no tie straddles the cut
        chosen |= tied
    else:  # the ``need`` tied positions of lowest index
        chosen |= tied & (torch.cumsum(tied, 0) <= need)
    return chosen


def _band_select(key: torch.Tensor, flat_c: torch.Tensor, k: int, m: int, largest: bool) -> torch.Tensor | None:
    """Exact selection on a large candidate set with a few elementwise passes over the tensor.

    A deterministic strided sample of the candidates estimates two scores, ``t_sure`` and
    ``t_band``, whose ranks among the candidates lie a few standard deviations below and above
    ``k``. One pass each gives ``sure`` (candidates strictly better than ``t_sure``) and the
    ``band`` (candidates between the two, both included; NaN is in neither). If
    ``|sure| <= k <= |sure| + |band|``, the answer is ``sure`` plus the ``k - |sure|`` best of the
    band (ties by lower index): every position of ``sure`` beats every band position, and every
    band position beats every other candidate. Only the band (a small fraction of the
    candidates) is gathered and ranked. Otherwise (an unlucky sample, or NaN near the cut)
    ``None`` is returned and the caller ranks all candidates.
    """
    stride = max(1, m // _SAMPLE_SIZE)
    sample = key[::stride][flat_c[::stride]]
    ms = sample.numel()
    if ms < 1024:
        return None
    if largest:
        sample = -sample  # kthvalue keeps NaN last either way
    center = k * ms / m
    spread = _Z * math.sqrt(center * max(0.0, 1.0 - k / m)) + _SLACK
    lo, hi = math.floor(center - spread), math.ceil(center + spread)
    if hi >= ms:
        return None
    t_band = sample.kthvalue(hi).values
    if torch.isnan(t_band):
        return None
    if largest:
        t_band = -t_band
    band = torch.ge(key, t_band) if largest else torch.le(key, t_band)
    band &= flat_c
    if lo >= 1:
        t_sure = sample.kthvalue(lo).values
        if largest:
            t_sure = -t_sure
        sure = torch.gt(key, t_sure) if largest else torch.lt(key, t_sure)
        sure &= band  # t_sure is on the good side of t_band: sure is a subset of band
        band ^= sure
        n_sure = int(torch.count_nonzero(sure))
    else:
        sure = torch.zeros_like(flat_c)
        n_sure = 0
    if n_sure > k:
        return None
    band_idx = _flat_indices(band)
    del band
    if n_sure + band_idx.numel() < k:
        return None
    chosen = _choose(key.take(band_idx), k - n_sure, largest)
    sure.index_fill_(0, band_idx[chosen], True)
    return sure


def _select(scores: torch.Tensor, candidates: torch.Tensor, k: int, largest: bool, magnitude: bool) -> torch.Tensor:
    if scores.shape != candidates.shape:
        raise ValueError(f"scores shape {tuple(scores.shape)} != candidates shape {tuple(candidates.shape)}")
    if candidates.dtype != torch.bool:
        candidates = candidates.to(torch.bool)
    flat_c = candidates.reshape(-1)
    flat_s = scores.detach().reshape(-1)
    m = int(torch.count_nonzero(flat_c))
    if not 0 <= k <= m:
        raise ValueError(f"k: cannot select {k} of {m} candidates")
    if k == 0:
        return torch.zeros_like(candidates)
    if k == m:
        return candidates.clone()
    # Scores are ranked as float32 (float64 stays float64); |.| makes -0.0 and 0.0 equal, and
    # float comparisons treat them as equal anyway.
    if not flat_s.is_floating_point() or flat_s.dtype in (torch.float16, torch.bfloat16):
        flat_s = flat_s.float()
    if m >= BAND_MIN_CANDIDATES:
        key = flat_s.abs() if magnitude else flat_s
        out = _band_select(key, flat_c, k, m, largest)
        if out is not None:
            return out.view_as(candidates)
    # Rank all candidates: gather them (in flat-index order), choose, scatter the choice back.
    idx = _flat_indices(flat_c)
    vals = flat_s.take(idx)
    if magnitude:
        vals.abs_()
    chosen = _choose(vals, k, largest)
    out = torch.zeros_like(flat_c)
    out.index_fill_(0, idx[chosen], True)
    return out.view_as(candidates)


def select_smallest(scores: torch.Tensor, candidates: torch.Tensor, k: int, *, magnitude: bool = False) -> torch.Tensor:
    """Bool tensor (shape of ``scores``) with exactly ``k`` True entries: the ``k`` candidate
    positions of smallest score (ties: lower flat index first). ``candidates`` is a bool tensor
    of the same shape; ``0 <= k <= candidates.sum()`` or ``ValueError``. ``magnitude=True`` ranks
    by ``|score|``, computed on the candidate subset only (no full-size temporary)."""
    return _select(scores, candidates, k, largest=False, magnitude=magnitude)


def select_largest(scores: torch.Tensor, candidates: torch.Tensor, k: int, *, magnitude: bool = False) -> torch.Tensor:
    """Like :func:`select_smallest`, for the ``k`` largest scores (ties: lower flat index first)."""
    return _select(scores, candidates, k, largest=True, magnitude=magnitude)
