"""Known answers for when the engine updates and how much one update moves.

* Updates happen at optimizer steps t with ``t % update_interval == 0`` and ``t < end_step``:
  the first update is at step ``update_interval`` (never at step 0) and none at ``end_step``.
* One update of fraction p moves ``ceil(p * n_active)`` weights in every layer that is not dense.
* ``update_topology(p)`` does the same now, from the public API, without advancing the step
  counter or changing any layer's active count.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from freetickets.sparse import SparseEngine
from freetickets.sparse.schedules import constant, cosine

from _sparse_models import MLP, batch


def _engine(**kwargs) -> tuple[SparseEngine, torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    kwargs = {"sparsity": 0.5, "distribution": "uniform", "seed": 0, **kwargs}
    return SparseEngine(model, opt, **kwargs), model, opt


def _train_steps(engine, model, opt, steps: int) -> list[int]:
    """Run ``steps`` optimizer steps; return the steps (1-based) at which an update happened."""
    x, y = batch(model, 0)
    updated = []
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        before = engine.update_count
        engine.step()
        if engine.update_count != before:
            assert engine.last_step_was_update
            updated.append(engine.step_count)
        else:
            assert not engine.last_step_was_update
    return updated


def _expected_moved(engine: SparseEngine, fraction: float) -> int:
    """Sum over non-dense layers of ceil(fraction * n_active)."""
    total = 0
    for m in engine.masks.values():
        n_active, n = int(m.sum()), m.numel()
        if n_active < n:
            total += math.ceil(fraction * n_active)
    return total


@pytest.mark.parametrize("interval, end_step, steps, expected", [
    (3, None, 10, [3, 6, 9]),
    (3, 9, 10, [3, 6]),  # no update AT end_step
    (3, 10, 10, [3, 6, 9]),  # 9 < 10
    (1, 4, 6, [1, 2, 3]),
    (4, 4, 8, []),  # the first due step is already end_step
    (5, None, 4, []),  # no update before the first full interval
])
def test_update_steps(interval, end_step, steps, expected):
    engine, model, opt = _engine(update_interval=interval, end_step=end_step)
    assert _train_steps(engine, model, opt, steps) == expected
    assert engine.step_count == steps
    assert engine.update_count == len(expected)


def test_static_engine_never_updates():
    engine, model, opt = _engine(update_interval=None)
    assert _train_steps(engine, model, opt, 5) == []


def test_each_update_moves_ceil_fraction_of_every_layers_active_weights():
    engine, model, opt = _engine(update_interval=2, prune_fraction=0.3)
    expected = _expected_moved(engine, 0.3)
    counts = {n: int(m.sum()) for n, m in engine.masks.items()}
    _train_steps(engine, model, opt, 4)
    assert engine.update_count == 2
    assert engine.pruned_total == engine.regrown_total == 2 * expected
    assert {n: int(m.sum()) for n, m in engine.masks.items()} == counts


def test_cosine_schedule_fraction_is_taken_at_the_update_step():
    """With end_step 8 and updates every 2 steps, the updates at 2, 4, 6 prune
    p/2 (1 + cos(pi t / 8)) of the active weights, t the update's step."""
    engine, model, opt = _engine(update_interval=2, end_step=8, prune_fraction=0.6, prune_schedule="cosine")
    expected = sum(_expected_moved(engine, 0.3 * (1 + math.cos(math.pi * t / 8))) for t in (2, 4, 6))
    assert _train_steps(engine, model, opt, 8) == [2, 4, 6]
    assert engine.pruned_total == expected


def test_schedule_known_values():
    assert cosine(0, 0.5, 10) == 0.5
    assert cosine(5, 0.5, 10) == pytest.approx(0.25, rel=1e-12)
    assert cosine(10, 0.5, 10) == 0.0
    assert cosine(12, 0.5, 10) == 0.0  # clamped after end_step
    assert cosine(-3, 0.5, 10) == 0.5  # clamped before step 0
    assert constant(123, 0.3) == 0.3
    for bad in (None, 0, -1):
        with pytest.raises(ValueError, match="end_step"):
            cosine(1, 0.5, bad)


def test_update_topology_from_the_api_moves_weights_now_and_keeps_the_step_counter():
    engine, model, opt = _engine(update_interval=None)
    x, y = batch(model, 0)
    F.cross_entropy(model(x), y).backward()  # gradient growth ranks these gradients
    before = {n: m.clone() for n, m in engine.masks.items()}
    expected = _expected_moved(engine, 0.5)
    engine.update_topology(0.5)
    assert engine.step_count == 0
    assert engine.update_count == 1
    assert engine.topology_version == 1
    assert engine.pruned_total == engine.regrown_total == expected
    for n, m in engine.masks.items():
        assert int(m.sum()) == int(before[n].sum())
    assert any(not torch.equal(before[n], engine.masks[n]) for n in before)
    # masked weights are exactly zero after the jump
    for name, p in model.named_parameters():
        if name in engine.masks:
            assert torch.all(p[~engine.masks[name]] == 0)


def test_update_topology_of_zero_moves_nothing_and_bad_fractions_are_refused():
    engine, model, opt = _engine(update_interval=None)
    before = {n: m.clone() for n, m in engine.masks.items()}
    engine.update_topology(0.0)
    assert engine.pruned_total == 0
    assert engine.topology_version == 0
    assert all(torch.equal(before[n], engine.masks[n]) for n in before)
    for bad in (1.5, -0.1, "half"):
        with pytest.raises(ValueError, match="fraction"):
            engine.update_topology(bad)


def test_update_topology_of_one_prunes_every_active_weight():
    """p = 1 prunes all n_active weights of each layer and regrows as many (regrow_pruned)."""
    engine, model, opt = _engine(update_interval=None)
    n_active = sum(int(m.sum()) for m in engine.masks.values())
    x, y = batch(model, 0)
    F.cross_entropy(model(x), y).backward()
    engine.update_topology(1.0)
    assert engine.pruned_total == n_active
    assert sum(int(m.sum()) for m in engine.masks.values()) == n_active


def test_update_topology_does_not_shift_the_periodic_schedule():
    """A jump between steps 2 and 3 leaves the next scheduled update at step 4 (interval 2)."""
    engine, model, opt = _engine(update_interval=2)
    assert _train_steps(engine, model, opt, 2) == [2]
    engine.update_topology(0.2)
    assert engine.update_count == 2
    assert _train_steps(engine, model, opt, 2) == [4]


def test_cosine_schedule_with_a_one_step_horizon():
    """end_step = 1 is a valid horizon: the full fraction at step 0, nothing from step 1 on."""
    assert cosine(0, 0.4, 1) == 0.4
    assert cosine(1, 0.4, 1) == 0.0


def test_weights_moved_per_layer_are_computed_exactly_not_in_floating_point():
    """The fraction as written: 0.8 of 10 is 8 and 0.9 of 10 is 9, although the binary values of
    0.8 and 0.9 lie slightly above them (exact binary arithmetic would give 9 and 10), and 0.07 of
    100 is 7 (float math: 7.000000000000001, ceil 8); halves round up (no banker's rounding)."""
    from freetickets.sparse.selection import ceil_product, round_half_up

    assert ceil_product(0.3, 10) == 3
    assert ceil_product(0.7, 10) == 7
    assert ceil_product(0.8, 10) == 8
    assert ceil_product(0.9, 10) == 9
    assert ceil_product(0.55, 20) == 11
    assert ceil_product(0.07, 1000) == 70
    assert ceil_product(0.07, 100) == 7
    assert ceil_product(0.071, 1000) == 71
    assert ceil_product(0.0, 10) == 0
    assert ceil_product(0.01, 10) == 1
    assert [round_half_up(x) for x in (0.5, 1.5, 2.5, 0.49999999999999994, 2.4999)] == [1, 2, 3, 0, 2]


def test_a_jump_of_eight_tenths_moves_eight_of_ten_active_weights():
    model = torch.nn.Sequential(torch.nn.Linear(5, 4, bias=False))
    masks = {"0.weight": torch.zeros(4, 5, dtype=torch.bool)}
    masks["0.weight"].view(-1)[:10] = True  # 10 active of 20
    engine = SparseEngine(model, None, masks=masks, update_interval=None, grow="random")
    engine.update_topology(0.8)  # EDST's default jump fraction
    assert engine.pruned_total == 8


def test_er_scores_a_one_dimensional_weight_with_one_input():
    """ER: density ~ (n_in + n_out) / (n_in n_out), with n_in = 1 for a 1-D weight (8,)."""
    from freetickets.sparse.distributions import layer_densities

    d = layer_densities({"a": (8,), "b": (6, 4)}, 0.5, "er")
    eps = 16 / (9 / 8 * 8 + 10 / 24 * 24)  # target 16 of 32 weights
    assert d == pytest.approx({"a": eps * 9 / 8, "b": eps * 10 / 24}, rel=1e-12)


def test_erk_is_the_default_and_no_sparsity_makes_every_layer_dense():
    from freetickets.sparse.distributions import layer_active_counts, layer_densities

    shapes = {"conv": (8, 3, 3, 3), "fc": (10, 72)}
    assert layer_densities(shapes, 0.7) == layer_densities(shapes, 0.7, "erk")
    assert layer_active_counts(shapes, 0.7) == layer_active_counts(shapes, 0.7, "erk")
    assert layer_densities(shapes, 0.7) != layer_densities(shapes, 0.7, "er")
    for dist in ("er", "erk", "uniform"):
        assert layer_densities(shapes, 0.0, dist) == {"conv": 1.0, "fc": 1.0}


def test_a_layer_may_end_with_no_active_weight_and_shape_errors_are_one_line():
    from freetickets.sparse.distributions import layer_active_counts, layer_densities

    assert layer_active_counts({"tiny": (2, 2), "big": (100, 100)}, 0.99, "uniform") == {"tiny": 0, "big": 100}
    for shapes, message in (({}, "shapes: no sparsifiable layer given"),
                            ({"a": (4, 0)}, "shapes: every layer must have at least one weight")):
        with pytest.raises(ValueError) as info:
            layer_densities(shapes, 0.5)
        assert str(info.value) == message


def test_grow_rules_fall_back_to_random_with_a_warning_naming_the_layer(caplog):
    import logging

    from freetickets.sparse.rules import GrowContext, grow_gradient, grow_momentum, momentum_buffer

    weight = torch.zeros(3, 4)
    eligible = torch.ones(3, 4, dtype=torch.bool)
    context = GrowContext(grad=None, optimizer_state={}, generator=torch.Generator().manual_seed(0), name="fc.weight")
    with caplog.at_level(logging.WARNING, logger="freetickets.sparse.rules"):
        assert int(grow_gradient(weight, eligible, 5, context).sum()) == 5
        assert int(grow_momentum(weight, eligible, 2, context).sum()) == 2
    assert [r.getMessage() for r in caplog.records] == [
        "grow='gradient': fc.weight has no gradient; growing at random instead",
        "grow='momentum': fc.weight has no momentum buffer yet; growing at random instead"]
    adam = torch.ones(3, 4)
    assert momentum_buffer({"exp_avg": adam}) is adam  # Adam's first moment is the momentum
    assert momentum_buffer({"step": torch.tensor(1.0)}) is None
