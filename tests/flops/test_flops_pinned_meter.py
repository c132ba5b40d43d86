"""Boundaries of the training-FLOPs meter and its closed form: zero samples and zero steps are
valid (they cost 0), negative counts are refused with one line."""
from __future__ import annotations

import pytest

from freetickets.flops.counter import LayerFlops
from freetickets.flops.training import TrainFlopsMeter, estimate_train_flops

LF = LayerFlops(per_layer={"a": 100.0, "b": 50.0}, other=10.0)


def test_a_step_of_zero_samples_costs_nothing_but_counts_as_a_step():
    meter = TrainFlopsMeter(LF)
    assert meter.step(0, {"a": 0.5}) == 0.0
    assert (meter.total, meter.steps, meter.samples) == (0.0, 1, 0)
    assert meter.step(2, {"a": 0.5}, dense_grad_step=True) == 2 * (2 * 110.0 + 160.0)
    assert (meter.steps, meter.dense_grad_steps, meter.samples) == (2, 1, 2)
    with pytest.raises(ValueError) as info:
        meter.step(-1, {})
    assert str(info.value) == "batch_size must be >= 0, got -1"


def test_closed_form_accepts_zero_and_refuses_negative_counts():
    assert estimate_train_flops(LF, {}, steps=0, batch_size=4) == 0.0
    assert estimate_train_flops(LF, {}, steps=3, batch_size=0) == 0.0
    assert estimate_train_flops(LF, {"b": 0.2}, steps=3, batch_size=2, update_steps=3) == 2 * 3 * (2 * 120.0 + 160.0)
    for kwargs in ({"steps": -1, "batch_size": 1}, {"steps": 1, "batch_size": -1},
                   {"steps": 2, "batch_size": 1, "update_steps": 3}, {"steps": 2, "batch_size": 1, "update_steps": -1}):
        with pytest.raises(ValueError, match="^need steps >= 0, batch_size >= 0 and 0 <= update_steps <= steps"):
            estimate_train_flops(LF, {}, **kwargs)
