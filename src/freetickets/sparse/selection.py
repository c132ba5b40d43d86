"""Exact, deterministic top-k selection on a subset of a tensor, and exact integer rounding.

Every prune and grow rule reduces to "pick exactly ``k`` of these candidate positions with the
smallest (or largest) score". No full sort and no index list over all candidates is built:

* large candidate sets (``BAND_MIN_CANDIDATES``): a strided sample of the candidates gives two
  scores bracketing the k-th; two comparison passes split the candidates into a "surely chosen"
  set and a thin boundary band, and only the band (typically ~1% of the candidates) is gathered
  and ranked exactly (see :func:`_band_select`); an unlucky sample falls back to the next path;
* otherwise the candidates are gathered in flat-index order and ranked with a selection
  (``np.partition`` / ``kthvalue``, O(m); on CUDA a sort, see ``_kth_smallest``); only positions
  tied with the k-th value are counted with a cumulative sum.

On CPU the steps run in numpy on zero-copy views of the tensors (no intra-op thread-pool
wake-ups); on other devices the same steps run in torch.

Tie rule (used everywhere in :mod:`freetickets.sparse`): among equal scores the position with the
**lower flat index is selected first**. NaN scores are treated as the least preferred value
(selected last, after -inf or +inf too). This makes every update a deterministic function of its inputs, on CPU and CUDA.
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
    """``ceil(fraction * count)`` of the fraction as written, computed exactly.

    The fraction is read as its shortest decimal (``repr``): 0.8 is 4/5, so 0.8 of 10 is 8. Its
    binary value is slightly above 0.8, which would give 9; float math is no remedy either
    (``0.07 * 100`` is 7.000000000000001 in floats, whose ceil is 8).
    """
    return math.ceil(Fraction(repr(float(fraction))) * count)


#: Candidate sets at least this large use the sampled band selection (see _band_select).
BAND_MIN_CANDIDATES = 1 << 15
_SAMPLE_SIZE = 1 << 15  # candidates in the strided sample
_Z = 5.0  # half-width of the band, in standard deviations of the sampled rank
_SLACK = 16  # ... plus this many sample ranks


def _band_ranks(k: int, m: int, ms: int) -> tuple[int, int] | None:
    """Sample ranks (lo, hi) bracketing the k-th of m candidates in a sample of ms of them, or
    None when the band would reach the end of the sample (then rank every candidate)."""
    center = k * ms / m
    spread = _Z * math.sqrt(center * max(0.0, 1.0 - k / m)) + _SLACK
    lo, hi = math.floor(center - spread), math.ceil(center + spread)
    return None if hi >= ms else (lo, hi)


def _flat_indices(flat_mask: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """Ascending int64 indices of the True entries of a 1-D bool tensor. On CPU this uses
    ``numpy.flatnonzero`` (single-threaded, a byte scan; several times faster than
    ``torch.nonzero``, which writes a 2-D result and is parallelised poorly). Elsewhere, with
    the number of True entries ``count`` known, ``torch.nonzero_static`` avoids the
    device-to-host read of the result size."""
    if flat_mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(flat_mask.numpy()))
    if count is not None and hasattr(torch, "nonzero_static"):
        return torch.nonzero_static(flat_mask, size=count).squeeze(1)
    return flat_mask.nonzero().squeeze(1)


def _kth_smallest(t: torch.Tensor, ranks: list[int]) -> list[torch.Tensor]:
    """The ``ranks``-th smallest values (1-based) of the 1-D ``t`` as 0-dim tensors on its
    device, NaN ordered after every number (as ``kthvalue`` and ``sort`` both do).

    On CUDA one ``sort`` replaces the ``kthvalue`` calls: CUDA's ``kthvalue`` selects within one
    thread block per slice, 230 us for a 32k-element sample on an H200, and was 77% of the GPU
    time of a WRN-28-10 topology update; the multi-block radix sort takes a fraction of that.
    """
    if t.device.type == "cuda":
        ordered = torch.sort(t).values
        return [ordered[r - 1] for r in ranks]
    return [t.kthvalue(r).values for r in ranks]


def _choose(vals: torch.Tensor, r: int, largest: bool) -> torch.Tensor:
    """Bool mask over ``vals`` (1-D, in flat-index order) with exactly ``r`` True entries: the
    ``r`` smallest (largest) values, ties by lower position, NaN after every number.

    One device-to-host read in all (this runs per layer and per rule on the GPU, where each read
    is a synchronisation): the four counts that decide the cut are read together.
    """
    count = vals.numel()
    if r == 0:
        return torch.zeros(count, dtype=torch.bool, device=vals.device)
    if r == count:
        return torch.ones(count, dtype=torch.bool, device=vals.device)
    # Rank the r smallest of ``key``; negation keeps NaN NaN, and kthvalue orders NaN after every
    # number, so the threshold is NaN exactly when fewer than r numbers exist.
    key = -vals if largest else vals
    (threshold,) = _kth_smallest(key, [r])
    nan = torch.isnan(key)
    better = key < threshold
    tied = key == threshold
    thr_nan, n_better, n_tied, n_nan = torch.stack(
        [torch.isnan(threshold).long(), better.sum(), tied.sum(), nan.sum()]).tolist()
    if thr_nan:  # every number, then the NaNs of lowest position
        chosen = ~nan
        numbers = count - n_nan
        if r > numbers:
            chosen |= nan & (torch.cumsum(nan, 0) <= r - numbers)
        return chosen
    need = r - n_better
    if n_tied == need:  # the usual case: no tie straddles the cut
        return better | tied
    return better | (tied & (torch.cumsum(tied, 0) <= need))  # the ``need`` tied of lowest index


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
    ranks = _band_ranks(k, m, ms)
    if ranks is None:
        return None
    lo, hi = ranks
    # The thresholds stay on the device. A NaN t_band (NaN near the cut) gives an empty band and
    # sure, so the count test below returns None, without a read of its own.
    if lo >= 1:
        t_sure, t_band = _kth_smallest(sample, [lo, hi])
    else:
        (t_band,) = _kth_smallest(sample, [hi])
    if largest:
        t_band = -t_band
    band = torch.ge(key, t_band) if largest else torch.le(key, t_band)
    band &= flat_c
    if lo >= 1:
        if largest:
            t_sure = -t_sure
        sure = torch.gt(key, t_sure) if largest else torch.lt(key, t_sure)
        sure &= band  # t_sure is on the good side of t_band: sure is a subset of band
        band ^= sure
    else:
        sure = torch.zeros_like(flat_c)
    n_sure, n_band = torch.stack([sure.sum(), band.sum()]).tolist()  # one device-to-host read
    if n_sure > k or n_sure + n_band < k:
        return None
    band_idx = _flat_indices(band, n_band)
    del band
    chosen = _choose(key.take(band_idx), k - n_sure, largest)
    sure.index_fill_(0, band_idx[chosen], True)
    return sure


# ---------------------------------------------------------------- CPU: the same steps in numpy
# On CPU every step runs in numpy on zero-copy views: the work per layer is a handful of
# byte-scanning passes plus small selections, and numpy runs them without waking torch's intra-op
# thread pool (on a busy 2-core machine each wake-up cost more than the work itself).
_USE_NUMPY = True


def _choose_np(vals: np.ndarray, r: int, largest: bool) -> np.ndarray:
    """numpy twin of :func:`_choose` (``np.partition`` also orders NaN last)."""
    count = vals.size
    if r == 0:
        return np.zeros(count, dtype=bool)
    if r == count:
        return np.ones(count, dtype=bool)
    nan = np.isnan(vals)
    numbers = count - int(np.count_nonzero(nan))
    if r >= numbers:
        chosen = ~nan
        if r > numbers:
            chosen |= nan & (np.cumsum(nan) <= r - numbers)
        return chosen
    kk = numbers - r if largest else r - 1
    threshold = np.partition(vals, kk)[kk]
    chosen = (vals > threshold) if largest else (vals < threshold)
    need = r - int(np.count_nonzero(chosen))
    tied = vals == threshold
    if int(np.count_nonzero(tied)) != need:
        tied &= np.cumsum(tied) <= need
    chosen |= tied
    return chosen


def _band_select_np(key: np.ndarray, c: np.ndarray, k: int, m: int, largest: bool) -> np.ndarray | None:
    """numpy twin of :func:`_band_select`."""
    stride = max(1, m // _SAMPLE_SIZE)
    sample = key[::stride][c[::stride]]
    ms = sample.size
    if ms < 1024:
        return None
    if largest:
        sample = -sample
    ranks = _band_ranks(k, m, ms)
    if ranks is None:
        return None
    lo, hi = ranks
    part = np.partition(sample, [lo - 1, hi - 1] if lo >= 1 else [hi - 1])
    t_band = part[hi - 1]
    if np.isnan(t_band):
        return None
    if largest:
        t_band = -t_band
    band = np.greater_equal(key, t_band) if largest else np.less_equal(key, t_band)
    band &= c
    if lo >= 1:
        t_sure = -part[lo - 1] if largest else part[lo - 1]
        sure = np.greater(key, t_sure) if largest else np.less(key, t_sure)
        sure &= band
        band ^= sure
        n_sure = int(np.count_nonzero(sure))
    else:
        sure = np.zeros(key.size, dtype=bool)
        n_sure = 0
    if n_sure > k:
        return None
    band_idx = np.flatnonzero(band)
    del band
    if n_sure + band_idx.size < k:
        return None
    chosen = _choose_np(key[band_idx], k - n_sure, largest)
    sure[band_idx[chosen]] = True
    return sure


def _select_np(s: np.ndarray, c: np.ndarray, k: int, m: int, largest: bool, magnitude: bool) -> np.ndarray:
    if m >= BAND_MIN_CANDIDATES:
        out = _band_select_np(np.abs(s) if magnitude else s, c, k, m, largest)
        if out is not None:
            return out
    idx = np.flatnonzero(c)
    vals = s[idx]
    if magnitude:
        np.abs(vals, out=vals)
    out = np.zeros(s.size, dtype=bool)
    out[idx[_choose_np(vals, k, largest)]] = True
    return out


def _select(scores: torch.Tensor, candidates: torch.Tensor, k: int, largest: bool, magnitude: bool) -> torch.Tensor:
    if scores.shape != candidates.shape:
        raise ValueError(f"scores shape {tuple(scores.shape)} != candidates shape {tuple(candidates.shape)}")
    if candidates.dtype != torch.bool:
        candidates = candidates.to(torch.bool)
    flat_c = candidates.reshape(-1)
    flat_s = scores.detach().reshape(-1)
    on_cpu = _USE_NUMPY and flat_s.device.type == "cpu" and flat_c.device.type == "cpu"
    m = int(np.count_nonzero(flat_c.numpy())) if on_cpu else int(torch.count_nonzero(flat_c))
    if not 0 <= k <= m:
        raise ValueError(f"k: cannot select {k} of {m} candidates")
    if k == 0:
        return torch.zeros_like(candidates)
    if k == m:
        return candidates.clone()
    # Scores are ranked as float32 (float64 stays float64); |.| and float comparisons treat
    # -0.0 and 0.0 as equal.
    if not flat_s.is_floating_point() or flat_s.dtype in (torch.float16, torch.bfloat16):
        flat_s = flat_s.float()
    if on_cpu:
        out = _select_np(flat_s.numpy(), flat_c.numpy(), k, m, largest, magnitude)
        return torch.from_numpy(out).view(candidates.shape)
    if m >= BAND_MIN_CANDIDATES:
        key = flat_s.abs() if magnitude else flat_s
        out = _band_select(key, flat_c, k, m, largest)
        if out is not None:
            return out.view_as(candidates)
    # Rank all candidates: gather them (in flat-index order), choose, scatter the choice back.
    idx = _flat_indices(flat_c, m)
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
