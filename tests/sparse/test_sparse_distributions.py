"""Layer-wise densities, exact counts, schedules, parameter selection and naming."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from freetickets.sparse import layer_active_counts, layer_densities, sparsifiable_parameters, unwrap_model
from freetickets.sparse.schedules import SCHEDULES, constant, cosine, get_schedule
from freetickets.sparse.selection import round_half_up

from _sparse_models import CNN2d, ERKDenseModel, GroupedCNN


def test_erk_matches_hand_computation():
    # conv (4, 2, 3, 3): sum 12, prod 72; linear (10, 8): sum 18, prod 80
    shapes = {"conv.weight": (4, 2, 3, 3), "fc.weight": (10, 8)}
    total = 72 + 80
    target = round_half_up(0.5 * total)  # 76
    # eps * (12/72 * 72 + 18/80 * 80) = eps * 30 = 76
    eps = target / 30
    d = layer_densities(shapes, 0.5, "erk")
    assert d["conv.weight"] == pytest.approx(eps * 12 / 72)
    assert d["fc.weight"] == pytest.approx(eps * 18 / 80)
    counts = layer_active_counts(shapes, 0.5, "erk")
    assert counts == {"conv.weight": round_half_up(eps * 12), "fc.weight": round_half_up(eps * 18)}
    assert abs(sum(counts.values()) - target) <= 2


def test_er_excludes_kernel_dims():
    shapes = {"conv.weight": (4, 2, 3, 3), "fc.weight": (10, 8)}
    # ER raw: conv (2 + 4) / (2 * 4) = 0.75, fc (8 + 10) / 80 = 0.225
    target = round_half_up(0.3 * 152)
    eps = target / (0.75 * 72 + 0.225 * 80)
    d = layer_densities(shapes, 0.7, "er")
    assert d["conv.weight"] == pytest.approx(eps * 0.75)
    assert d["fc.weight"] == pytest.approx(eps * 0.225)


def test_uniform_and_sparsity_zero():
    shapes = {"a": (5, 5), "b": (3, 7, 2)}
    assert layer_densities(shapes, 0.8, "uniform") == {"a": pytest.approx(0.2), "b": pytest.approx(0.2)}
    assert layer_active_counts(shapes, 0.8, "uniform") == {"a": 5, "b": round_half_up(0.2 * 42)}
    for dist in ("uniform", "er", "erk"):
        assert layer_active_counts(shapes, 0.0, dist) == {"a": 25, "b": 42}


def test_erk_caps_dense_layer_and_resolves():
    # small (64, 2): raw 66/128; big (64, 64): raw 128/4096; out (3, 64): raw 67/192.
    # target 2208 of 4416; first eps = 2208 / (66 + 128 + 67) makes small and out exceed 1;
    # both become dense and big gets the rest: (2208 - 128 - 192) / 4096.
    model = ERKDenseModel()
    shapes = {n: tuple(p.shape) for n, p in sparsifiable_parameters(model)}
    d = layer_densities(shapes, 0.5, "erk")
    assert d["small.weight"] == 1.0 and d["out.weight"] == 1.0
    assert d["big.weight"] == pytest.approx((2208 - 128 - 192) / 4096)
    assert layer_active_counts(shapes, 0.5, "erk") == {"small.weight": 128, "big.weight": 1888, "out.weight": 192}


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(
        st.lists(st.integers(1, 12), min_size=2, max_size=4).map(tuple), min_size=1, max_size=5
    ),
    sparsity=st.floats(0.0, 0.99),
    distribution=st.sampled_from(["uniform", "er", "erk"]),
)
def test_counts_exact_property(shapes, sparsity, distribution):
    named = {f"l{i}.weight": s for i, s in enumerate(shapes)}
    dens = layer_densities(named, sparsity, distribution)
    counts = layer_active_counts(named, sparsity, distribution)
    total = sum(math.prod(s) for s in shapes)
    target = round_half_up((1 - sparsity) * total)
    for name, shape in named.items():
        n = math.prod(shape)
        assert 0.0 <= dens[name] <= 1.0
        assert counts[name] == round_half_up(dens[name] * n)
    assert abs(sum(counts.values()) - target) <= len(shapes)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_bad_sparsity(bad):
    with pytest.raises(ValueError, match="sparsity"):
        layer_densities({"a": (3, 3)}, bad, "erk")


def test_bad_distribution():
    with pytest.raises(ValueError, match="distribution must be one of uniform, er, erk"):
        layer_densities({"a": (3, 3)}, 0.5, "gaussian")


def test_schedules_values():
    assert constant(123, 0.5, None) == 0.5
    assert cosine(0, 0.5, 100) == pytest.approx(0.5)
    assert cosine(50, 0.5, 100) == pytest.approx(0.25)
    assert cosine(25, 0.4, 100) == pytest.approx(0.2 * (1 + math.cos(math.pi / 4)))
    assert cosine(100, 0.5, 100) == pytest.approx(0.0, abs=1e-12)
    assert cosine(150, 0.5, 100) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="end_step"):
        cosine(1, 0.5, None)
    assert set(SCHEDULES) >= {"constant", "cosine"}
    with pytest.raises(ValueError, match="prune_schedule must be one of constant, cosine"):
        get_schedule("linear")


def test_sparsifiable_parameters_selects_conv_and_linear_weights():
    names = [n for n, _ in sparsifiable_parameters(CNN2d())]
    assert names == ["conv1.weight", "conv2.weight", "fc.weight"]
    names = [n for n, _ in sparsifiable_parameters(GroupedCNN())]
    assert names == ["conv1.weight", "dw.weight", "fc.weight"]
    conv3 = nn.Sequential(nn.Conv3d(1, 2, 2), nn.BatchNorm3d(2), nn.Embedding(4, 3))
    assert [n for n, _ in sparsifiable_parameters(conv3)] == ["0.weight"]


def test_shared_weight_listed_once():
    a = nn.Linear(4, 4)
    model = nn.Sequential(a, nn.ReLU(), a)
    assert [n for n, _ in sparsifiable_parameters(model)] == ["0.weight"]


def test_no_sparsifiable_layer():
    with pytest.raises(ValueError, match="model: no sparsifiable layer"):
        sparsifiable_parameters(nn.Sequential(nn.BatchNorm1d(3), nn.ReLU()))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_unwrap_strips_compile_and_data_parallel():
    model = CNN2d()
    compiled = torch.compile(model)  # no compilation happens until the first call
    assert unwrap_model(compiled) is model
    assert unwrap_model(nn.DataParallel(compiled)) is model
    assert [n for n, _ in sparsifiable_parameters(nn.DataParallel(compiled))][0] == "conv1.weight"
