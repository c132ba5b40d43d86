"""Exact selection, tie rule and the prune/grow rules on small hand-made tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from freetickets.sparse.rules import (
    GROW_RULES,
    PRUNE_RULES,
    GrowContext,
    get_grow_rule,
    get_prune_rule,
    grow_gradient,
    grow_momentum,
    grow_random,
    prune_magnitude,
    prune_set,
)
from freetickets.sparse.selection import ceil_product, round_half_up, select_largest, select_smallest


def idx(mask: torch.Tensor) -> list[int]:
    return mask.reshape(-1).nonzero().squeeze(1).tolist()


def test_ceil_and_round_are_exact():
    assert ceil_product(0.3, 10) == 3
    assert ceil_product(0.5, 7) == 4
    assert ceil_product(0.0, 9) == 0 and ceil_product(1.0, 9) == 9
    assert round_half_up(2.5) == 3 and round_half_up(3.5) == 4 and round_half_up(2.4999) == 2


def test_select_smallest_ties_lower_index_first():
    scores = torch.tensor([3.0, 1.0, 2.0, 1.0, 1.0, 0.5])
    cand = torch.tensor([True, True, True, True, True, False])
    # 0.5 is not a candidate; three 1.0s tie, the two lowest indices (1, 3) win.
    assert idx(select_smallest(scores, cand, 2)) == [1, 3]
    assert idx(select_smallest(scores, cand, 4)) == [1, 2, 3, 4]
    assert idx(select_smallest(scores, cand, 0)) == []
    assert idx(select_smallest(scores, cand, 5)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="k"):
        select_smallest(scores, cand, 6)


def test_select_largest_ties_and_nan():
    scores = torch.tensor([[5.0, float("nan"), 5.0], [7.0, 5.0, -1.0]])
    cand = torch.ones(2, 3, dtype=torch.bool)
    assert idx(select_largest(scores, cand, 1)) == [3]
    assert idx(select_largest(scores, cand, 3)) == [0, 2, 3]  # 5.0 at 0, 2, 4: lower indices
    assert idx(select_largest(scores, cand, 5)) == [0, 2, 3, 4, 5]  # NaN is selected last
    assert select_largest(scores, cand, 3).shape == (2, 3)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=40),
    st.data(),
)
def test_select_matches_stable_sort_reference(values, data):
    scores = torch.tensor(values, dtype=torch.float32)
    cand = torch.tensor(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))))
    m = int(cand.sum())
    k = data.draw(st.integers(0, m))
    order = sorted((v, i) for i, v in enumerate(values) if cand[i])
    assert idx(select_smallest(scores, cand, k)) == sorted(i for _, i in order[:k])
    order_l = sorted((-v, i) for i, v in enumerate(values) if cand[i])
    assert idx(select_largest(scores, cand, k)) == sorted(i for _, i in order_l[:k])


def test_prune_magnitude_hand_made():
    w = torch.tensor([[0.5, -0.1, 0.0], [0.1, -2.0, 0.3]])
    active = torch.tensor([[True, True, False], [True, True, True]])
    # |w| active: 0.5(0) 0.1(1) 0.1(3) 2.0(4) 0.3(5); ties 0.1 at 1 and 3 -> lower index first.
    assert idx(prune_magnitude(w, active, 1)) == [1]
    assert idx(prune_magnitude(w, active, 2)) == [1, 3]
    assert idx(prune_magnitude(w, active, 3)) == [1, 3, 5]


def test_prune_set_both_sides_and_odd_k():
    w = torch.tensor([0.4, -0.3, 0.1, -0.05, 0.2, -0.9, 0.0, 0.7])
    active = torch.tensor([True] * 6 + [False, True])
    # non-negative active: 0.4(0) 0.1(2) 0.2(4) 0.7(7); negative: -0.3(1) -0.05(3) -0.9(5)
    assert idx(prune_set(w, active, 2)) == [2, 3]  # smallest positive, largest negative
    assert idx(prune_set(w, active, 3)) == [2, 3, 4]  # odd: extra from the non-negative side
    assert idx(prune_set(w, active, 4)) == [1, 2, 3, 4]


def test_prune_set_one_side_too_small_and_zeros():
    w = torch.tensor([0.4, -0.3, 0.1, 0.2, 0.0, 0.7])
    active = torch.ones(6, dtype=torch.bool)
    # one negative weight only: k=4 -> 1 negative + 3 non-negative (0.0 is the closest to zero)
    assert idx(prune_set(w, active, 4)) == [1, 2, 3, 4]
    w2 = -w.abs() - 0.01
    w2[0] = 0.5
    # one non-negative weight only: k=3 -> it plus the two largest negatives
    assert idx(prune_set(w2, active, 3)) == [0, 2, 4]


def test_grow_gradient_and_momentum_hand_made():
    w = torch.zeros(2, 3)
    eligible = torch.tensor([[True, False, True], [True, True, False]])
    grad = torch.tensor([[0.1, 9.0, -0.5], [0.5, 0.2, 8.0]])
    ctx = GrowContext(grad=grad)
    # eligible |grad|: 0.1(0) 0.5(2) 0.5(3) 0.2(4); 9.0 and 8.0 are not eligible; tie 0.5 -> 2 first
    assert idx(grow_gradient(w, eligible, 1, ctx)) == [2]
    assert idx(grow_gradient(w, eligible, 3, ctx)) == [2, 3, 4]
    sgd_state = {"momentum_buffer": -grad}
    assert idx(grow_momentum(w, eligible, 2, GrowContext(grad=None, optimizer_state=sgd_state))) == [2, 3]
    adam_state = {"exp_avg": torch.tensor([[3.0, 0, 0], [0, -4.0, 0]]), "exp_avg_sq": torch.ones(2, 3)}
    assert idx(grow_momentum(w, eligible, 2, GrowContext(grad=None, optimizer_state=adam_state))) == [0, 4]


def test_grow_random_is_seeded_and_exact():
    w = torch.zeros(10, 10)
    eligible = torch.rand(10, 10, generator=torch.Generator().manual_seed(3)) < 0.6
    picks = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        grown = grow_random(w, eligible, 13, GrowContext(grad=None, generator=g))
        assert int(grown.sum()) == 13 and not (grown & ~eligible).any()
        picks.append(grown)
    assert torch.equal(picks[0], picks[1])


def test_grow_falls_back_to_random_without_scores():
    w = torch.zeros(4, 4)
    eligible = torch.ones(4, 4, dtype=torch.bool)
    for rule in (grow_gradient, grow_momentum):
        grown = rule(w, eligible, 5, GrowContext(grad=None, generator=torch.Generator().manual_seed(0)))
        assert int(grown.sum()) == 5


def test_registries_and_unknown_names():
    assert set(PRUNE_RULES) >= {"magnitude", "set"}
    assert set(GROW_RULES) >= {"gradient", "random", "momentum"}
    with pytest.raises(ValueError, match="prune must be one of.*magnitude"):
        get_prune_rule("nope")
    with pytest.raises(ValueError, match="grow must be one of.*gradient"):
        get_grow_rule("nope")


def _reference(scores, cand, k, largest, magnitude):
    """Stable-sort reference: NaN after every number (also after +-inf), ties by lower index."""
    key = scores.float().abs() if magnitude else scores.float()
    vals, c = key.tolist(), cand.reshape(-1).tolist()

    def order(i):
        v = vals[i]
        return (1, 0.0, i) if v != v else (0, -v if largest else v, i)

    ranked = sorted((i for i in range(len(vals)) if c[i]), key=order)
    return sorted(ranked[:k])


def _tricky_scores(g, n, kind):
    if kind == "ints":  # many ties
        s = torch.randint(-40, 40, (n,), generator=g).float()
    elif kind == "few":  # very many ties
        s = torch.randint(-2, 3, (n,), generator=g).float()
    else:
        s = torch.randn(n, generator=g)
    s[torch.rand(n, generator=g) < 0.03] = float("nan")
    s[torch.rand(n, generator=g) < 0.05] = -0.0
    s[torch.rand(n, generator=g) < 0.05] = 0.0
    s[torch.rand(n, generator=g) < 0.005] = float("inf")
    s[torch.rand(n, generator=g) < 0.005] = -float("inf")
    return s


@pytest.mark.parametrize("use_numpy", [True, False])
@pytest.mark.parametrize("kind", ["ints", "few", "normal"])
@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("magnitude", [False, True])
def test_band_and_full_paths_match_reference(monkeypatch, use_numpy, kind, largest, magnitude):
    """Both implementations (numpy on CPU; torch, as on CUDA) of both paths (sampled band for
    large candidate sets, full ranking otherwise) equal a stable-sort reference: ties, NaN,
    -0.0 == 0.0, +-inf, k = 0, k = m, k beyond the last number (NaN chosen by index)."""
    import freetickets.sparse.selection as sel

    monkeypatch.setattr(sel, "_USE_NUMPY", use_numpy)
    monkeypatch.setattr(sel, "BAND_MIN_CANDIDATES", 2000)
    g = torch.Generator().manual_seed(["ints", "few", "normal"].index(kind) * 4 + 2 * largest + magnitude)
    n = 12000
    scores = _tricky_scores(g, n, kind)
    cand = torch.rand(n, generator=g) < 0.8
    m = int(cand.sum())
    numbers = int((cand & ~torch.isnan(scores)).sum())
    fn = select_largest if largest else select_smallest
    for k in (0, 1, 37, m // 8, m // 2, m - m // 8, numbers, numbers + 3, m - 1, m):
        got = fn(scores.view(100, 120), cand.view(100, 120), k, magnitude=magnitude)
        assert got.shape == (100, 120) and got.dtype == torch.bool
        assert idx(got) == _reference(scores, cand, k, largest, magnitude), k


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("magnitude", [False, True])
def test_band_path_is_taken_and_exact(largest, magnitude):
    """On a large candidate set the sampled band succeeds (no fallback) and gives the exact answer."""
    import freetickets.sparse.selection as sel

    g = torch.Generator().manual_seed(5)
    n = 200_000
    scores = torch.randint(-500, 500, (n,), generator=g).float() / 7
    cand = torch.rand(n, generator=g) < 0.6
    m, k = int(cand.sum()), 20_011
    key = scores.abs() if magnitude else scores
    out_np = sel._band_select_np(key.numpy(), cand.numpy(), k, m, largest)
    out_t = sel._band_select(key, cand, k, m, largest)
    assert out_np is not None and out_t is not None
    expected = _reference(scores, cand, k, largest, magnitude)
    assert np.flatnonzero(out_np).tolist() == expected
    assert idx(out_t) == expected
    fn = select_largest if largest else select_smallest
    assert idx(fn(scores, cand, k, magnitude=magnitude)) == expected


def test_integer_and_half_scores_rank_as_float32():
    g = torch.Generator().manual_seed(2)
    ints = torch.randint(-9, 9, (500,), generator=g)
    cand = torch.rand(500, generator=g) < 0.7
    assert torch.equal(select_smallest(ints, cand, 100, magnitude=True), select_smallest(ints.float(), cand, 100, magnitude=True))
    half = torch.randn(500, generator=g).half()
    assert torch.equal(select_largest(half, cand, 77), select_largest(half.float(), cand, 77))
