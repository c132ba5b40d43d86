"""Oracle tests: per-layer FLOPs against hand formulas and torch's FlopCounterMode."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from freetickets.flops import LayerFlops, dense_layer_flops, forward_flops


class SmallCNN(nn.Module):
    """(3, 16, 16) -> strided conv -> grouped dilated conv -> Conv1d -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, stride=2, padding=1)                         # (8, 8, 8)
        self.bn = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4, bias=False)  # (8, 8, 8)
        self.conv_c = nn.Conv1d(8, 4, 5, stride=2, padding=1)                           # (4, 31)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(124, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv_a(x)))
        x = torch.relu(self.conv_b(x)).flatten(2)  # (B, 8, 64)
        x = nn.functional.max_pool1d(self.conv_c(x), 1)
        return self.head(x)


HAND = {
    "conv_a.weight": 2 * (8 * 8 * 8) * 3 * 9,        # 2 * out elems * c_in * k
    "conv_b.weight": 2 * (8 * 8 * 8) * (8 // 4) * 9,  # groups: c_in / groups
    "conv_c.weight": 2 * (4 * 31) * 8 * 5,
    "head.1.weight": 2 * 124 * 10,
}


def _flop_counter_total(model: nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops()


def test_per_layer_matches_hand_formulas_and_flop_counter():
    torch.manual_seed(0)
    model = SmallCNN()
    flops = dense_layer_flops(model, (3, 16, 16))
    assert isinstance(flops, LayerFlops)
    assert flops.per_layer == HAND
    assert flops.other == 0.0  # BN, ReLU, pooling, bias adds: not counted by FlopCounterMode
    model.eval()
    assert flops.total == _flop_counter_total(model, torch.zeros(1, 3, 16, 16))
    # Per sample: a batch of 5 costs 5x.
    assert 5 * flops.total == _flop_counter_total(model, torch.zeros(5, 3, 16, 16))


class WithMatmul(nn.Module):
    """A parameter used in a bare matmul (-> other) and a Linear applied twice (accumulates)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 10)
        self.proj = nn.Parameter(torch.randn(10, 6))
        self.unused = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc(x)) @ self.proj


def test_other_flops_and_repeated_and_unused_layers():
    model = WithMatmul()
    flops = dense_layer_flops(model, (10,))
    assert flops.per_layer == {"fc.weight": 2 * (2 * 10 * 10), "unused.weight": 0.0}
    assert flops.other == 2 * 10 * 6
    assert flops.total == _flop_counter_total(model, torch.zeros(1, 10))
    # other is never scaled by densities.
    assert forward_flops(flops, {"fc.weight": 0.5}) == 200 + 120


def test_sequence_input_linear():
    model = nn.Sequential(nn.Linear(6, 4))
    flops = dense_layer_flops(model, (7, 6))  # 7 rows per sample
    assert flops.per_layer == {"0.weight": 2 * 7 * 6 * 4}
    assert flops.total == _flop_counter_total(model, torch.zeros(1, 7, 6))


def test_training_flags_and_buffers_restored_and_wrappers_unwrapped():
    model = SmallCNN()
    model.train()
    model.bn.eval()  # a frozen BN must stay frozen
    running_mean = model.bn.running_mean.clone()
    dense_layer_flops(model, (3, 16, 16))
    assert model.training and model.conv_a.training and not model.bn.training
    assert torch.equal(model.bn.running_mean, running_mean)

    class Compiled(nn.Module):  # the shape torch.compile's OptimizedModule has
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self._orig_mod = inner

        def forward(self, x):
            return self._orig_mod(x)

    assert dense_layer_flops(Compiled(model), (3, 16, 16)).per_layer == HAND


def test_sparse_forward_hand_computation():
    flops = dense_layer_flops(SmallCNN(), (3, 16, 16))
    densities = {"conv_a.weight": 0.5, "conv_c.weight": 0.25}
    expected = HAND["conv_a.weight"] * 0.5 + HAND["conv_b.weight"] \
        + HAND["conv_c.weight"] * 0.25 + HAND["head.1.weight"]
    assert forward_flops(flops, densities) == pytest.approx(expected)
    assert forward_flops(flops, {}) == flops.total
    assert forward_flops(flops, {name: 0.0 for name in HAND}) == 0.0
    with pytest.raises(ValueError, match="module.conv_a.weight"):
        forward_flops(flops, {"module.conv_a.weight": 0.5})
    with pytest.raises(ValueError, match="density"):
        forward_flops(flops, {"conv_a.weight": 1.5})


def test_conv3d_matches_flop_counter():
    model = nn.Sequential(nn.Conv3d(2, 4, (2, 3, 3), stride=(1, 2, 2), padding=1, groups=2),
                          nn.Flatten(), nn.Linear(4 * 5 * 4 * 4, 3))
    flops = dense_layer_flops(model, (2, 4, 8, 8))
    # Conv3d output (4, 5, 4, 4): 2 * 320 * (2 / 2) * 18
    assert flops.per_layer["0.weight"] == 2 * 320 * 1 * 18
    assert flops.other == 0.0
    assert flops.total == _flop_counter_total(model, torch.zeros(1, 2, 4, 8, 8))
