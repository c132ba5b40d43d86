"""``dense_layer_flops`` on models it must still count: float64 weights, no parameters (the
input follows a buffer's dtype, else torch's default), and a layer whose module is called but
does no matmul (per-layer FLOPs then exceed FlopCounterMode's total: a warning, with the gap)."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from freetickets.flops.counter import dense_layer_flops


class _BufferMatmul(nn.Module):
    """No parameters; multiplies by a (4, 3) buffer of the given dtype: 2 * 4 * 3 FLOPs."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("w", torch.ones(4, 3, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


class _NoParams(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ torch.ones(4, 2)  # float32: needs a float32 input


class _IntBuffer(_NoParams):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))


class _Lazy(nn.Linear):
    """Called like a Linear layer but computes nothing FlopCounterMode sees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.out_features)


def test_float64_model_is_counted_with_a_float64_input(caplog):
    model = nn.Sequential(nn.Linear(5, 3)).double()
    with caplog.at_level(logging.WARNING, logger="freetickets.flops.counter"):
        lf = dense_layer_flops(model, (5,))
    assert lf.per_layer == {"0.weight": 30.0} and lf.other == 0.0
    assert caplog.records == []  # per-layer and FlopCounterMode agree: no warning at other == 0


@pytest.mark.parametrize("model", [_BufferMatmul(torch.float64), _BufferMatmul(torch.float32)])
def test_parameter_free_model_takes_its_buffers_dtype(model):
    lf = dense_layer_flops(model, (4,))
    assert lf.per_layer == {} and lf.other == 24.0


@pytest.mark.parametrize("model", [_NoParams(), _IntBuffer()])
def test_without_float_parameters_or_buffers_the_input_is_the_default_dtype(model):
    assert dense_layer_flops(model, (4,)).other == 16.0


def test_layer_flops_above_the_counters_total_are_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="freetickets.flops.counter"):
        lf = dense_layer_flops(nn.Sequential(_Lazy(4, 3)), (4,))
    assert lf.per_layer == {"0.weight": 24.0} and lf.other == -24.0
    assert [r.getMessage() for r in caplog.records] == [
        "per-layer FLOPs exceed FlopCounterMode's total by 24; check the model's Conv/Linear layers"]
