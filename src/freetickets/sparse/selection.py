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

import torch

__all__ = ["ceil_product", "round_half_up", "select_largest", "select_smallest"]


def round_half_up(x: float) -> int:
    """``floor(x + 1/2)`` computed exactly on the binary value of ``x`` (no banker's rounding)."""
    return math.floor(Fraction(x) + Fraction(1, 2))


def ceil_product(fraction: float, count: int) -> int:
    """``ceil(fraction * count)`` computed exactly; ``0.3 * 10`` gives 3, not 4 as float math would."""
    return math.ceil(Fraction(fraction) * count)


#: Candidate sets at least this large are first narrowed with a sampled threshold (see _prefilter).
PREFILTER_MIN_CANDIDATES = 1 << 18
_SAMPLE_SIZE = 1 << 15


def _prefilter(flat_s: torch.Tensor, flat_c: torch.Tensor, k: int, m: int, largest: bool,
               magnitude: bool) -> torch.Tensor | None:
    """Shrink the candidate set before the exact selection, without changing its result.

    A deterministic strided sample of the candidates estimates a score t that about
    ``k + 6 sigma + 64`` candidates beat; the candidates at least as good as t form the new set.
    If it holds at least ``k`` positions, every position the exact selection would pick (the k
    best, and all positions tied with the k-th) is inside it, so selecting on it gives the same
    answer; otherwise (an unlucky sample) ``None`` is returned and the full set is used. This
    replaces a gather and a ``kthvalue`` over all m candidates by a few elementwise passes and a
    selection over about k values.
    """
    stride = max(1, flat_s.numel() // _SAMPLE_SIZE)
    sample = flat_s[::stride][flat_c[::stride]]
    ms = sample.numel()
    if ms < 256:
        return None
    if not sample.is_floating_point() or sample.dtype in (torch.float16, torch.bfloat16):
        sample = sample.float()
    if magnitude:
        sample = sample.abs()
    q = k / m
    rank = math.ceil(q * ms + 6.0 * math.sqrt(q * (1.0 - q) * ms) + 64)
    if rank >= ms:
        return None
    if largest:
        t = sample.kthvalue(ms - rank + 1).values  # rank-th largest
    else:
        t = sample.kthvalue(rank).values
    if torch.isnan(t):
        return None
    keyed = flat_s.abs() if magnitude else flat_s
    narrowed = (keyed >= t) if largest else (keyed <= t)
    narrowed &= flat_c
    if int(torch.count_nonzero(narrowed)) < k:
        return None
    return narrowed


def _select(scores: torch.Tensor, candidates: torch.Tensor, k: int, largest: bool, magnitude: bool) -> torch.Tensor:
    if scores.shape != candidates.shape:
        raise ValueError(f"scores shape {tuple(scores.shape)} != candidates shape {tuple(candidates.shape)}")
    flat_c = candidates.reshape(-1)
    flat_s = scores.detach().reshape(-1)
    m = int(torch.count_nonzero(flat_c))
    if not 0 <= k <= m:
        raise ValueError(f"k: cannot select {k} of {m} candidates")
    if k == 0:
        return torch.zeros_like(candidates)
    if k == m:
        return candidates.clone()
    if m >= PREFILTER_MIN_CANDIDATES and 4 * k < m:
        narrowed = _prefilter(flat_s, flat_c, k, m, largest, magnitude)
        if narrowed is not None:
            flat_c = narrowed
    # (m,) copy of the candidate scores, in flat-index order; |.| is taken on this subset only
    vals = flat_s[flat_c]
    if not vals.is_floating_point() or vals.dtype in (torch.float16, torch.bfloat16):
        vals = vals.float()
    if magnitude:
        vals.abs_()
    if largest:
        vals.neg_()
    # kthvalue orders NaN after every number, as the tie rule wants (NaN selected last).
    threshold = vals.kthvalue(k).values
    if torch.isnan(threshold):  # the cut falls among NaNs: rank them explicitly (rare)
        vals = torch.nan_to_num_(vals, nan=math.inf, posinf=math.inf, neginf=-math.inf)
        threshold = vals.kthvalue(k).values
        return _scatter_choice(vals, threshold, k, flat_c).view_as(candidates)
    del vals
    # Apply the cut on the full tensor with elementwise (multi-threaded) ops rather than
    # scattering the subset back (masked_scatter_ is single-threaded on CPU).
    key = flat_s if flat_s.is_floating_point() and flat_s.dtype not in (torch.float16, torch.bfloat16) else flat_s.float()
    if magnitude:
        key = key.abs()
    cut = -threshold if largest else threshold
    out = (key > cut) if largest else (key < cut)
    out &= flat_c
    need = k - int(torch.count_nonzero(out))
    tied = key == cut
    tied &= flat_c
    if int(torch.count_nonzero(tied)) == need:  # the usual case: no tie straddles the cut
        out |= tied
    else:
        out[tied.nonzero().squeeze(1)[:need]] = True  # nonzero() is in ascending index order
    return out.view_as(candidates)


def _scatter_choice(vals: torch.Tensor, threshold: torch.Tensor, k: int, flat_c: torch.Tensor) -> torch.Tensor:
    """Pick the k smallest of ``vals`` (the candidates' transformed scores, in flat order) and
    scatter the choice back to the positions of ``flat_c``."""
    chosen = vals < threshold
    need = k - int(torch.count_nonzero(chosen))
    tied = vals == threshold
    if int(torch.count_nonzero(tied)) == need:
        chosen |= tied
    else:
        chosen[tied.nonzero().squeeze(1)[:need]] = True
    out = torch.zeros_like(flat_c)
    out.masked_scatter_(flat_c, chosen)
    return out


def select_smallest(scores: torch.Tensor, candidates: torch.Tensor, k: int, *, magnitude: bool = False) -> torch.Tensor:
    """Bool tensor (shape of ``scores``) with exactly ``k`` True entries: the ``k`` candidate
    positions of smallest score (ties: lower flat index first). ``candidates`` is a bool tensor
    of the same shape; ``0 <= k <= candidates.sum()`` or ``ValueError``. ``magnitude=True`` ranks
    by ``|score|``, computed on the candidate subset only (no full-size temporary)."""
    return _select(scores, candidates, k, largest=False, magnitude=magnitude)


def select_largest(scores: torch.Tensor, candidates: torch.Tensor, k: int, *, magnitude: bool = False) -> torch.Tensor:
    """Like :func:`select_smallest`, for the ``k`` largest scores (ties: lower flat index first)."""
    return _select(scores, candidates, k, largest=True, magnitude=magnitude)
