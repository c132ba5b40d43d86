"""Known answers at the boundaries of :mod:`freetickets.sparse.selection`'s private steps.

The public ``select_smallest`` / ``select_largest`` are exact whichever path runs, so these
tests pin the steps themselves:

* ``_band_ranks``: the two sample ranks bracketing the k-th candidate, and None once the upper
  rank reaches the end of the sample;
* the sampled band (``_band_select`` in torch, ``_band_select_np`` in numpy): the sample is
  every ``m // 2**15``-th candidate (at least 1024 of them), ``t_sure`` and ``t_band`` are
  exactly the lo-th and hi-th smallest sampled scores, a band holding exactly k candidates (or a
  "surely chosen" set of exactly k) is accepted, and a sample that misses the k-th candidate
  gives None (the caller then ranks every candidate) rather than a wrong selection;
* the torch steps that run on accelerators (``_flat_indices``, ``_kth_smallest``, ``_choose``),
  exercised on the CPU with a tensor that reports a CUDA device, or on the ``meta`` device,
  which has shapes and devices but no data;
* the entry points: error messages, non-bool candidates, which dtypes are ranked as float32,
  which kernels run on which device (numpy on the CPU; one sort and no read-back of a result
  size on CUDA), and where the sampled band starts.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import freetickets.sparse.selection as sel
from freetickets.sparse.selection import select_largest, select_smallest


class _ReportsCuda(torch.Tensor):
    """A CPU tensor whose ``device`` says CUDA: it takes the accelerator branches of the
    selection steps while its values stay readable on a machine without a GPU."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda")

    def numpy(self, *args, **kwargs):  # like a CUDA tensor, no numpy view
        raise TypeError("can't convert cuda tensor to numpy")


def _on_cuda(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(_ReportsCuda)


# ------------------------------------------------------------------------------ _band_ranks
def test_band_ranks_known_answers_and_end_of_sample():
    """center = k * ms / m, spread = 5 * sqrt(center * (1 - k / m)) + 16, (floor, ceil) of
    center -/+ spread; None as soon as the upper rank reaches ms."""
    # 1000 of 4000, full sample: center 1000, spread 5 * sqrt(750) + 16 = 152.93
    assert sel._band_ranks(1000, 4000, 4000) == (847, 1153)
    # half the candidates sampled: center 500, spread 5 * sqrt(375) + 16 = 112.82
    assert sel._band_ranks(1000, 4000, 2000) == (387, 613)
    # k close to m: the upper rank 1023 is the last one below ms = 1024; one more and it is ms
    assert sel._band_ranks(971, 1024, 1024) == (919, 1023)
    assert sel._band_ranks(972, 1024, 1024) is None
    assert sel._band_ranks(973, 1024, 1024) is None


# ------------------------------------------------------------------ accelerator torch steps
def test_flat_indices_off_cpu_uses_the_known_count_and_stays_one_dimensional():
    """Off the CPU the indices come from ``torch.nonzero_static`` when the count is known (no
    read of the result size from the device: it works on the data-less meta device), from
    ``nonzero`` otherwise; either way a 1-D int64 tensor, also for a single True entry."""
    mask = torch.tensor([False, True, False, False, True, True])
    assert sel._flat_indices(_on_cuda(mask), 3).tolist() == [1, 4, 5]
    assert sel._flat_indices(_on_cuda(mask), None).tolist() == [1, 4, 5]
    one = torch.tensor([False, False, True, False])
    for count in (1, None):
        got = sel._flat_indices(_on_cuda(one), count)
        assert got.shape == (1,) and got.dtype == torch.int64 and got.tolist() == [2]
    meta = torch.zeros(6, dtype=torch.bool, device="meta")
    got = sel._flat_indices(meta, 4)
    assert got.device.type == "meta" and got.shape == (4,)
    # and on the CPU (numpy's flatnonzero)
    assert sel._flat_indices(mask).tolist() == [1, 4, 5]
    assert sel._flat_indices(one, 1).shape == (1,)


def test_kth_smallest_on_cuda_reads_one_sort_at_rank_minus_one():
    """On CUDA the 1-based ranks are read from one ascending sort (NaN last), and give the same
    values as ``kthvalue`` on the CPU."""
    t = torch.tensor([4.0, float("nan"), -1.0, 7.0, 2.0, 2.0])
    ranks = [1, 2, 3, 5, 6]
    want = [-1.0, 2.0, 2.0, 7.0]
    got = [float(v) for v in sel._kth_smallest(_on_cuda(t), ranks)]
    assert got[:4] == want and np.isnan(got[4])
    cpu = [float(v) for v in sel._kth_smallest(t, ranks)]
    assert cpu[:4] == want and np.isnan(cpu[4])


def test_choose_nothing_or_everything_is_a_bool_mask_on_the_input_device():
    """``_choose`` with r = 0 (or r = every value) returns an all-False (all-True) bool mask of
    the input's length on the input's device, without ranking anything (so it also works on
    the meta device)."""
    vals = torch.tensor([3.0, 1.0, 2.0])
    for r, fill in ((0, False), (3, True)):
        got = sel._choose(vals, r, largest=False)
        assert got.dtype == torch.bool and got.tolist() == [fill] * 3
        meta = sel._choose(torch.empty(5, device="meta"), 5 if fill else 0, largest=True)
        assert meta.device.type == "meta" and meta.dtype == torch.bool and meta.shape == (5,)


# ------------------------------------------------------------------------- the sampled band
def _both(key: np.ndarray, k: int, largest: bool, cand: np.ndarray | None = None):
    """(numpy result, torch result) of the band selection, each None or the flat indices."""
    c = np.ones(key.size, dtype=bool) if cand is None else cand
    m = int(c.sum())
    out_np = sel._band_select_np(key, c.copy(), k, m, largest)
    out_t = sel._band_select(torch.from_numpy(key.copy()), torch.from_numpy(c.copy()), k, m, largest)
    return (None if out_np is None else np.flatnonzero(out_np).tolist(),
            None if out_t is None else torch.flatten(out_t).nonzero().squeeze(1).tolist())


def _reference(key: np.ndarray, k: int, largest: bool, cand: np.ndarray | None = None) -> list[int]:
    """The k best candidates by a stable sort (ties: lower index first)."""
    pos = np.arange(key.size) if cand is None else np.flatnonzero(cand)
    order = np.argsort(-key[pos] if largest else key[pos], kind="stable")
    return sorted(pos[order[:k]].tolist())


def _layout(ms: int, stride: int, gap_rank: int, size: int, largest: bool, seed: int | None = None) -> np.ndarray:
    """float32 scores of ``ms * stride`` candidates whose strided sample (every ``stride``-th) is
    a shuffle of 10, 20, ..., 10 * ms, so its j-th smallest value is 10 * j. ``size`` of the
    unsampled candidates score 10 * gap_rank + 5 (just above the gap_rank-th sampled value),
    the other unsampled ones 1e7 (worse than every sampled score). Negated for ``largest``."""
    key = np.full(ms * stride, 1e7, dtype=np.float32)
    key[::stride] = 10.0 * (np.random.default_rng(gap_rank if seed is None else seed).permutation(ms) + 1)
    unsampled = np.flatnonzero(np.arange(key.size) % stride != 0)
    key[unsampled[:: max(1, unsampled.size // size)][:size]] = 10.0 * gap_rank + 5.0
    return -key if largest else key


_MS, _STRIDE, _K = 40_000, 2, 1000  # sampled ranks (lo, hi) = (372, 628) for k = 1000 of 80 000
_LO, _HI = 372, 628


def test_layout_ranks_are_the_ones_the_tests_below_assume():
    assert _MS * _STRIDE // sel._SAMPLE_SIZE == _STRIDE
    assert sel._band_ranks(_K, _MS * _STRIDE, _MS) == (_LO, _HI)


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize(
    ("gap_rank", "size", "accepted"),
    [
        # t_sure is the lo-th sampled value, not a later one: k + 1 candidates just above it do
        # not make "surely chosen" exceed k
        (_LO, _K + 1, True),
        # ... nor an earlier one: k - lo + 2 candidates just below it make it exceed k
        (_LO - 1, _K - _LO + 2, False),
        # exactly k candidates below t_sure: accepted, the band adds none of its own
        (_LO - 1, _K - _LO + 1, True),
        # t_band is the hi-th sampled value, not an earlier one: the band reaches k + 1
        (_HI - 1, _K - _HI + 1, True),
        # a band reaching exactly k candidates is accepted (all of it is chosen)
        (_HI - 1, _K - _HI, True),
        # ... nor a later one: k candidates just above it leave the band short of k
        (_HI, _K, False),
    ],
)
def test_band_thresholds_are_exactly_the_lo_th_and_hi_th_sampled_scores(gap_rank, size, accepted, largest):
    """Unsampled candidates placed next to the lo-th or hi-th sampled score decide whether the
    band holds the k-th candidate; an accepted band gives the exact selection (numpy and torch
    alike), a missed one gives None, never a wrong answer. Whatever the order of the sample."""
    for seed in (None, 10, 13):
        key = _layout(_MS, _STRIDE, gap_rank, size, largest, seed)
        got_np, got_t = _both(key, _K, largest)
        if accepted:
            want = _reference(key, _K, largest)
            assert got_np == want and got_t == want, seed
        else:
            assert got_np is None and got_t is None, seed


@pytest.mark.parametrize("largest", [False, True])
def test_band_with_lower_rank_one_uses_the_smallest_sampled_score(largest):
    """k = 108 of 80 000 puts the lower sample rank at 1: t_sure is the smallest sampled score
    (nothing is surely chosen), even with k + 1 unsampled candidates just above it."""
    k = 108
    assert sel._band_ranks(k, _MS * _STRIDE, _MS) == (1, 107)
    key = _layout(_MS, _STRIDE, 1, k + 1, largest)
    want = _reference(key, k, largest)
    assert _both(key, k, largest) == (want, want)
    # ... and candidates scoring better than it are surely chosen: k + 1 of them are too many
    assert _both(_layout(_MS, _STRIDE, 0, k + 1, largest), k, largest) == (None, None)


_MS8, _STRIDE8, _K8, _HI8 = 32_768, 8, 400, 102  # sampled ranks (-2, 102): no lower threshold


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize(
    ("gap_rank", "size", "accepted"),
    [(_HI8 - 1, _K8 - _HI8 + 1, True), (_HI8 - 1, _K8 - _HI8, True), (_HI8, _K8, False)],
)
def test_band_without_lower_threshold_uses_the_hi_th_sampled_score(gap_rank, size, accepted, largest):
    """A lower rank below 1 leaves "surely chosen" empty; the band is still bounded by exactly
    the hi-th sampled score (stride 8: every 8th of 262 144 candidates is sampled)."""
    assert sel._band_ranks(_K8, _MS8 * _STRIDE8, _MS8) == (-2, _HI8)
    key = _layout(_MS8, _STRIDE8, gap_rank, size, largest)
    got = _both(key, _K8, largest)
    if accepted:
        want = _reference(key, _K8, largest)
        assert got == (want, want)
    else:
        assert got == (None, None)


@pytest.mark.parametrize("largest", [False, True])
def test_band_needs_a_sample_of_1024_candidates(largest):
    """Fewer than 2**16 candidates are all sampled (stride 1); 1024 sampled candidates are
    enough for the band, 1023 are not."""
    key = np.random.default_rng(1).permutation(1024).astype(np.float32)
    assert _both(key, 100, largest) == (_reference(key, 100, largest),) * 2
    cand = np.ones(1024, dtype=bool)
    cand[7] = False
    assert _both(key, 100, largest, cand) == (None, None)


@pytest.mark.parametrize("largest", [False, True])
def test_band_reaches_the_last_sample_rank(largest):
    """k = 971 of 1024 puts the upper sample rank at 1023, the last one below ms: the band is
    bounded by the second-largest sampled score and is accepted."""
    assert sel._band_ranks(971, 1024, 1024) == (919, 1023)
    key = np.random.default_rng(2).permutation(1024).astype(np.float32)
    assert _both(key, 971, largest) == (_reference(key, 971, largest),) * 2


# ---------------------------------------------------------------------- the public entry points
def _idx(mask: torch.Tensor) -> list[int]:
    return torch.flatten(mask).nonzero().squeeze(1).tolist()


def test_select_rejects_mismatched_shapes_naming_both():
    with pytest.raises(ValueError, match=r"^scores shape \(2, 3\) != candidates shape \(6,\)$"):
        select_smallest(torch.zeros(2, 3), torch.ones(6, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match=r"^k: cannot select 7 of 6 candidates$"):
        select_largest(torch.zeros(6), torch.ones(6, dtype=torch.bool), 7)


@pytest.mark.parametrize("k", [0, 2, 4])
def test_integer_candidates_are_read_as_bool_and_the_result_is_bool(k):
    """Candidates given as 0/1 integers select like the bool mask, and the result is a bool
    tensor of the scores' shape for every k, including none (0) and all (4) of them."""
    scores = torch.tensor([[5.0, 1.0, 3.0], [2.0, 4.0, 0.0]])
    cand = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.uint8)
    for fn in (select_smallest, select_largest):
        got = fn(scores, cand, k)
        assert got.dtype == torch.bool and got.shape == (2, 3)
        assert torch.equal(got, fn(scores, cand.bool(), k))
    assert _idx(select_smallest(scores, cand, 2)) == [1, 3]
    assert _idx(select_largest(scores, cand, 2)) == [0, 4]


def test_float64_scores_are_ranked_in_float64():
    """float64 scores keep their precision: 1 + 1e-12 is larger than 1 (in float32 both are 1
    and the tie would go to the lower index)."""
    scores = torch.tensor([1.0 + 1e-12, 1.0, 3.0], dtype=torch.float64)
    cand = torch.ones(3, dtype=torch.bool)
    assert _idx(select_smallest(scores, cand, 1)) == [1]
    assert _idx(select_largest(scores, cand, 2)) == [0, 2]


@pytest.mark.parametrize("use_numpy", [True, False])
def test_bfloat16_and_unsigned_scores_rank_as_float32(monkeypatch, use_numpy):
    """bfloat16 (which numpy cannot hold) and uint8 scores (whose negation would wrap around)
    are ranked as float32, on the numpy and on the torch path."""
    monkeypatch.setattr(sel, "_USE_NUMPY", use_numpy)
    cand = torch.ones(6, dtype=torch.bool)
    ints = torch.tensor([3, 0, 200, 1, 7, 2], dtype=torch.uint8)
    assert _idx(select_largest(ints, cand, 2)) == [2, 4]
    assert _idx(select_smallest(ints, cand, 2)) == [1, 3]
    half = torch.tensor([0.5, -2.0, 1.5, 0.25, -0.125, 3.0], dtype=torch.bfloat16)
    assert _idx(select_largest(half, cand, 2)) == [2, 5]
    assert _idx(select_smallest(half, cand, 2, magnitude=True)) == [3, 4]


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("n", [40, 70_000])
def test_tensors_on_cuda_take_the_torch_path(largest, n):
    """Scores and candidates on an accelerator are never viewed as numpy arrays: the torch steps
    (the full ranking for a small set, the sampled band for a large one) give the exact
    selection, ties by lower index."""
    g = torch.Generator().manual_seed(n)
    scores = torch.randint(-50, 50, (n,), generator=g).float()
    cand = torch.rand(n, generator=g) < 0.9
    m = int(cand.sum())
    k = m // 3
    fn = select_largest if largest else select_smallest
    got = fn(_on_cuda(scores), _on_cuda(cand), k)
    assert _idx(got) == _reference(scores.numpy(), k, largest, cand.numpy())


# ------------------------------------------------------------- which kernels run on which device
def _refuse(*args, **kwargs):
    raise AssertionError("this step must not run here")


def test_cpu_steps_run_in_numpy(monkeypatch):
    """On the CPU every step runs in numpy (no torch intra-op thread pool): the torch twins of
    the steps, ``torch.nonzero`` / ``nonzero_static`` and ``torch.sort`` are never called, for a
    small and for a large (sampled band) candidate set; the candidates are counted in numpy too."""
    g = torch.Generator().manual_seed(3)
    cases = []
    for n in (50, 40_000):
        scores = torch.randint(-30, 30, (n,), generator=g).float()
        cand = torch.rand(n, generator=g) < 0.9
        cases.append((scores, cand, int(cand.sum()) // 4))
    mask = torch.tensor([False, True, True, False, True])
    t = torch.tensor([3.0, -1.0, 2.0])
    want = [[_reference(s.numpy(), k, largest, c.numpy()) for largest in (False, True)] for s, c, k in cases]
    for name in ("_choose", "_band_select"):
        monkeypatch.setattr(sel, name, _refuse)
    for name in ("nonzero_static", "sort", "count_nonzero"):
        monkeypatch.setattr(torch, name, _refuse)
    monkeypatch.setattr(torch.Tensor, "nonzero", _refuse)
    for (scores, cand, k), (small, large) in zip(cases, want):
        assert np.flatnonzero(select_smallest(scores, cand, k).numpy()).tolist() == small
        assert np.flatnonzero(select_largest(scores, cand, k).numpy()).tolist() == large
    assert sel._flat_indices(mask, 3).tolist() == [1, 2, 4]
    assert [float(v) for v in sel._kth_smallest(t, [1, 3])] == [-1.0, 3.0]


def test_cuda_order_statistics_come_from_one_sort(monkeypatch):
    """On CUDA ``_kth_smallest`` sorts once instead of calling ``kthvalue`` (see its docstring)."""
    monkeypatch.setattr(torch.Tensor, "kthvalue", _refuse)
    t = _on_cuda(torch.tensor([3.0, -1.0, 2.0, 0.5]))
    assert [float(v) for v in sel._kth_smallest(t, [1, 2, 4])] == [-1.0, 0.5, 3.0]


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("n", [40, 70_000])
def test_cuda_selection_never_reads_a_result_size_from_the_device(monkeypatch, largest, n):
    """The band and the full ranking know how many indices they gather and pass the count on
    (``nonzero_static``): ``nonzero``, which reads its result size back to the host, is not
    called on an accelerator."""
    g = torch.Generator().manual_seed(n + 1)
    scores = torch.randn(n, generator=g)
    cand = torch.rand(n, generator=g) < 0.7
    k = int(cand.sum()) // 5
    want = _reference(scores.numpy(), k, largest, cand.numpy())
    monkeypatch.setattr(torch.Tensor, "nonzero", _refuse)
    fn = select_largest if largest else select_smallest
    got = fn(_on_cuda(scores), _on_cuda(cand), k)
    assert np.flatnonzero(got.as_subclass(torch.Tensor).numpy()).tolist() == want


@pytest.mark.parametrize("use_numpy", [True, False])
def test_band_path_starts_at_exactly_band_min_candidates(monkeypatch, use_numpy):
    """``BAND_MIN_CANDIDATES`` (2**15) candidates take the sampled band, one fewer are ranked in
    full; when the band succeeds its answer is returned, and the candidates are not ranked again."""
    monkeypatch.setattr(sel, "_USE_NUMPY", use_numpy)
    band_name, choose_name = ("_band_select_np", "_choose_np") if use_numpy else ("_band_select", "_choose")
    band_fn, choose_fn = getattr(sel, band_name), getattr(sel, choose_name)
    calls: list[tuple[str, int]] = []

    def band(key, c, k, m, largest):
        out = band_fn(key, c, k, m, largest)
        calls.append(("band", out is not None))
        return out

    def choose(vals, r, largest):
        calls.append(("choose", len(vals)))
        return choose_fn(vals, r, largest)

    monkeypatch.setattr(sel, band_name, band)
    monkeypatch.setattr(sel, choose_name, choose)
    n = sel.BAND_MIN_CANDIDATES
    scores = torch.from_numpy(np.random.default_rng(4).permutation(n).astype(np.float32))
    for m in (n, n - 1):
        cand = torch.ones(n, dtype=torch.bool)
        cand[: n - m] = False
        calls.clear()
        got = select_smallest(scores, cand, 1000)
        assert np.flatnonzero(got.numpy()).tolist() == _reference(scores.numpy(), 1000, False, cand.numpy())
        if m == n:  # one band, one small choice inside it
            assert len(calls) == 2 and calls[1] == ("band", True)
            assert calls[0][0] == "choose" and calls[0][1] < m // 10
        else:
            assert calls == [("choose", m)]
