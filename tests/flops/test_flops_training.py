"""Training and inference FLOPs: RigL accounting, closed form, meter resume."""
from __future__ import annotations

import io

import pytest
import torch

from freetickets.flops import (
    LayerFlops,
    TrainFlopsMeter,
    estimate_train_flops,
    forward_flops,
    inference_flops,
    train_step_flops,
)

LAYERS = LayerFlops(per_layer={"a.weight": 1000.0, "b.weight": 400.0, "c.weight": 60.0},
                    other=40.0)
DENSITIES = {"a.weight": 0.2, "b.weight": 0.5}
SPARSE = 1000 * 0.2 + 400 * 0.5 + 60 + 40  # 500
DENSE = 1500.0


def test_step_costs():
    assert LAYERS.total == DENSE
    assert forward_flops(LAYERS, DENSITIES) == pytest.approx(SPARSE)
    assert train_step_flops(LAYERS, DENSITIES) == pytest.approx(3 * SPARSE)
    assert train_step_flops(LAYERS, DENSITIES, dense_grad_step=True) == pytest.approx(2 * SPARSE + DENSE)
    # A dense model: the dense-gradient step costs the same as a normal one.
    assert train_step_flops(LAYERS, {}, True) == train_step_flops(LAYERS, {}) == 3 * DENSE


def test_meter_static_run_equals_closed_form():
    meter = TrainFlopsMeter(LAYERS)
    for _ in range(7):
        meter.step(32, DENSITIES)
    assert meter.total == pytest.approx(7 * 32 * 3 * SPARSE)
    assert (meter.steps, meter.dense_grad_steps, meter.samples) == (7, 0, 224)
    assert estimate_train_flops(LAYERS, DENSITIES, steps=7, batch_size=32) == pytest.approx(meter.total)


def test_meter_with_update_steps_adds_dense_gradient_term():
    meter = TrainFlopsMeter(LAYERS)
    for step in range(1, 11):
        meter.step(16, dict(DENSITIES), dense_grad_step=(step % 5 == 0))
    static = 10 * 16 * 3 * SPARSE
    extra = 2 * 16 * (DENSE - SPARSE)  # each update step: 2 f_S + f_D instead of 3 f_S
    assert meter.total == pytest.approx(static + extra)
    assert meter.dense_grad_steps == 2
    assert estimate_train_flops(LAYERS, DENSITIES, 10, 16, update_steps=2) == pytest.approx(meter.total)
    with pytest.raises(ValueError, match="update_steps"):
        estimate_train_flops(LAYERS, DENSITIES, 10, 16, update_steps=11)


def test_meter_state_dict_round_trip_resumes_exactly():
    full = TrainFlopsMeter(LAYERS)
    first = TrainFlopsMeter(LAYERS)
    for step in range(6):
        for meter in (full, first):
            meter.step(8, DENSITIES, dense_grad_step=step == 3)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = TrainFlopsMeter(LAYERS)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(6, 9):
        for meter in (full, resumed):
            meter.step(8, {"a.weight": 0.3, "b.weight": 0.5}, dense_grad_step=step == 7)
    assert resumed.state_dict() == full.state_dict()
    with pytest.raises(ValueError, match="lacks"):
        resumed.load_state_dict({"total": 1.0})


def test_inference_flops_sum_over_members():
    assert inference_flops(LAYERS, [DENSITIES, DENSITIES, {}]) == pytest.approx(2 * SPARSE + DENSE)
    assert inference_flops(LAYERS, []) == 0.0
