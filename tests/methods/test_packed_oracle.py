"""Cross-check: our Packed-Ensembles layers have the parameter counts of torch-uncertainty's packed
layers (``torch_uncertainty.layers.packed``, 0.13) for the same base layer, M, alpha and gamma.

torch-uncertainty is an optional test dependency, installed without its dependencies: its package
``__init__`` imports torchvision (absent here: it does not load beside the CPU torch build) and,
through it, ``torchvision.transforms.InterpolationMode`` and more, which an empty stand-in
``torchvision`` package does not provide. So the fixture first tries the import with an empty
stand-in on ``sys.path``; if that fails it loads only the file of the packed layers
(``layers/packed.py``, which needs torch and einops, not torchvision) under bare parent packages
whose ``__init__`` is not run. Every module it added is removed afterwards. If neither works the
tests skip, saying why.

Known difference (not a mismatch of definitions): torch-uncertainty's *convolutions* lower gamma
while a group would read fewer than ``minimum_channels_per_group`` (default 64) channels; ours
use the gamma they are given. The conv cases pass ``minimum_channels_per_group=1`` where that rule
would act, and one case checks that at its default the rule is inactive above 64 channels.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest
import torch
from torch import nn

from freetickets.models.packed import Packed, PackedLinear, packed_width


def _drop(prefixes: tuple[str, ...], keep: set[str]) -> None:
    for name in [n for n in sys.modules if n.startswith(prefixes) and n not in keep]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def tu_packed(tmp_path_factory):
    """torch-uncertainty's ``layers.packed`` module, or a skip naming why it cannot be imported."""
    if importlib.util.find_spec("torch_uncertainty") is None:
        pytest.skip("torch-uncertainty is not installed (optional test extra: pip install torch-uncertainty)")
    before = set(sys.modules)
    prefixes = ("torch_uncertainty", "torchvision")
    stand_in = tmp_path_factory.mktemp("stand_in")
    (stand_in / "torchvision").mkdir()
    (stand_in / "torchvision" / "__init__.py").write_text("")
    reasons = []
    sys.path.insert(0, str(stand_in))
    try:
        try:
            module = importlib.import_module("torch_uncertainty.layers.packed")
        except Exception as exc:  # noqa: BLE001 - any import failure means: use the fallback below
            reasons.append(f"with an empty torchvision stand-in: {type(exc).__name__}: {exc}")
            _drop(prefixes, before)
            root = importlib.util.find_spec("torch_uncertainty").submodule_search_locations[0]
            for name, path in (("torch_uncertainty", root), ("torch_uncertainty.layers", f"{root}/layers")):
                bare = types.ModuleType(name)
                bare.__path__ = [path]
                sys.modules[name] = bare
            try:
                module = importlib.import_module("torch_uncertainty.layers.packed")
            except Exception as exc2:  # noqa: BLE001
                reasons.append(f"its layers/packed.py alone: {type(exc2).__name__}: {exc2}")
                pytest.skip("torch-uncertainty's packed layers cannot be imported here: " + "; ".join(reasons))
        yield module
    finally:
        sys.path.remove(str(stand_in))
        _drop(prefixes, before)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _ours(base: nn.Module, role: str, members: int, alpha: float, gamma: int) -> nn.Module:
    """Our packed version of one base layer as the first, a middle or the last layer of a network."""
    first = nn.Linear(8, base.in_features if isinstance(base, nn.Linear) else base.in_channels)
    if not isinstance(base, nn.Linear):
        first = type(base)(3, base.in_channels, 1)
    last = nn.Linear(base.out_features if isinstance(base, nn.Linear) else base.out_channels, 10)
    if role == "first":
        layers = [base, last]
    elif role == "last":
        layers = [first, base]
    else:
        layers = [first, base, last]
    net = Packed(nn.Sequential(*layers), members, alpha, gamma)
    return net.model[{"first": 0, "last": 1, "middle": 1}[role]]


CASES = [  # (base layer, M, alpha, gamma)
    (nn.Linear(256, 256), 4, 2, 2),
    (nn.Linear(256, 128, bias=False), 4, 2, 1),
    (nn.Linear(96, 96), 3, 2, 1),
    (nn.Linear(160, 640), 4, 2, 2),
    (nn.Linear(100, 60), 2, 3, 2),
]


@pytest.mark.parametrize("role", ["first", "middle"])
@pytest.mark.parametrize("base,members,alpha,gamma", CASES)
def test_packed_linear_parameter_count_equals_torch_uncertainty(tu_packed, base, members, alpha, gamma, role):
    ours = _ours(base, role, members, alpha, gamma)
    theirs = tu_packed.PackedLinear(base.in_features, base.out_features, alpha=alpha, num_estimators=members,
                                    gamma=gamma, bias=base.bias is not None, first=role == "first")
    assert _count(ours) == _count(theirs)
    x = torch.randn(2, base.in_features if role == "first" else packed_width(base.in_features, members, alpha, gamma))
    assert ours(x).shape == theirs(x).shape


@pytest.mark.parametrize("base,members,alpha,gamma", [(nn.Linear(256, 10), 4, 2, 2), (nn.Linear(640, 100), 4, 2, 2),
                                                      (nn.Linear(96, 10), 3, 2, 1)])
def test_packed_head_parameter_count_equals_torch_uncertainty(tu_packed, base, members, alpha, gamma):
    ours = _ours(base, "last", members, alpha, gamma)
    theirs = tu_packed.PackedLinear(base.in_features, base.out_features, alpha=alpha, num_estimators=members,
                                    gamma=gamma, last=True)
    assert _count(ours) == _count(theirs)
    assert isinstance(ours, PackedLinear) and ours.out_features == members * base.out_features


CONV_CASES = [  # (conv class name, in, out, kernel, stride, M, alpha, gamma)
    ("Conv2d", 16, 160, 3, 1, 4, 2, 2),  # WRN-28-10's first block convolution
    ("Conv2d", 160, 160, 3, 1, 4, 2, 2),
    ("Conv2d", 320, 640, 3, 2, 4, 2, 2),
    ("Conv2d", 160, 320, 1, 2, 4, 2, 2),  # a shortcut
    ("Conv1d", 64, 64, 5, 1, 4, 2, 1),
    ("Conv1d", 48, 96, 5, 2, 3, 2, 2),
]


@pytest.mark.parametrize("role", ["first", "middle"])
@pytest.mark.parametrize("kind,c_in,c_out,kernel,stride,members,alpha,gamma", CONV_CASES)
def test_packed_conv_parameter_count_equals_torch_uncertainty(tu_packed, kind, c_in, c_out, kernel, stride, members,
                                                              alpha, gamma, role):
    base = getattr(nn, kind)(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    ours = _ours(base, role, members, alpha, gamma)
    theirs = getattr(tu_packed, f"Packed{kind}")(c_in, c_out, kernel, alpha=alpha, num_estimators=members,
                                                 gamma=gamma, stride=stride, padding=kernel // 2, bias=False,
                                                 first=role == "first", minimum_channels_per_group=1)
    assert _count(ours) == _count(theirs)
    assert ours.groups == theirs.conv.groups
    spatial = (12,) * (1 if kind == "Conv1d" else 2)
    channels = c_in if role == "first" else packed_width(c_in, members, alpha, gamma)
    x = torch.randn(2, channels, *spatial)
    assert ours(x).shape == theirs(x).shape


def test_torch_uncertainty_default_minimum_is_inactive_above_64_channels_per_group(tu_packed):
    """At its default minimum (64 channels per group) torch-uncertainty keeps gamma = 2 on WRN-28-10's
    widest convolution (1280 / 8 = 160 channels per group), the same layer as ours."""
    base = nn.Conv2d(640, 640, 3, padding=1, bias=False)
    theirs = tu_packed.PackedConv2d(640, 640, 3, alpha=2, num_estimators=4, gamma=2, padding=1, bias=False)
    ours = _ours(base, "middle", 4, 2, 2)
    assert theirs.conv.groups == ours.groups == 8
    assert _count(ours) == _count(theirs) == 1280 * 1280 * 9 // 8
