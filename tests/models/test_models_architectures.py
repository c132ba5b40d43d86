"""Tests for the built-in architectures: shapes, parameter counts, init, determinism, channels_last, vmap."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from freetickets.models import create_model, list_models, resolve_model

# (name, input_shape, options): small variants so every forward is cheap on 2 CPU cores.
FORWARD_CASES = [
    ("mlp", (1, 40), {}),
    ("mlp", (40,), {"hidden_sizes": (16,), "dropout": 0.1}),
    ("cnn1d", (1, 40), {}),
    ("cnn1d", (40,), {"width": 8}),
    ("cnn1d", (2, 33), {"width": 8, "head": "avg"}),
    ("lenet5", (1, 28, 28), {}),
    ("lenet5", (3, 32, 32), {}),
    ("vgg16", (3, 32, 32), {}),
    ("vgg-like", (3, 32, 32), {}),
    ("vgg-c", (3, 32, 32), {}),
    ("vgg-d", (3, 32, 32), {}),
    ("wrn-10-1", (3, 32, 32), {}),
    ("wrn-16-2", (3, 32, 32), {"dropout": 0.3}),
    ("WRN-10-2", (1, 28, 28), {}),
    ("resnet18", (3, 32, 32), {"width": 8}),
    ("resnet18", (3, 96, 96), {"width": 8, "zero_init_residual": True}),
    ("resnet50", (3, 32, 32), {"width": 8}),
    ("resnet50", (3, 96, 96), {"width": 8}),
]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,input_shape,options", FORWARD_CASES)
def test_forward_shape(name, input_shape, options):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, input_shape=input_shape, **options)
    x = torch.randn(2, *input_shape)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 7)


def test_every_registered_name_builds_at_default_shape():
    # Covers names registered in future too; big models are only constructed, not run.
    for name in list_models():
        concrete = "wrn-10-1" if name == "wrn-D-K" else name
        spec, _ = resolve_model(concrete)
        model = create_model(concrete, num_classes=3)
        if n_params(model) < 20_000_000 and spec.default_input_shape[-1] <= 64:
            model.eval()
            with torch.no_grad():
                out = model(torch.randn(1, *spec.default_input_shape))
            assert out.shape == (1, 3)


@pytest.mark.parametrize(
    "name,num_classes,input_shape,expected,tolerance",
    [
        ("wrn-28-10", 10, None, 36_479_194, 0),       # Zagoruyko & Komodakis: 36.5M
        ("wrn-16-8", 10, None, 10_961_370, 0),        # 11.0M
        ("resnet50", 1000, (3, 224, 224), 25_557_032, 0),  # He et al. / torchvision: 25.6M
        ("resnet18", 10, (3, 32, 32), 11_173_962, 0),  # CIFAR ResNet-18: 11.2M
        ("vgg16", 10, (3, 32, 32), 14_728_266, 0),     # CIFAR VGG-16-BN: 14.7M
    ],
)
def test_parameter_counts_match_literature(name, num_classes, input_shape, expected, tolerance):
    model = create_model(name, num_classes=num_classes, input_shape=input_shape)
    assert abs(n_params(model) - expected) <= tolerance


def test_released_vgg_variant_head_sizes():
    # vgg-c keeps the released code's 1x1 convs with padding 1: 512 x 2 x 2 -> FC 2048 -> 512.
    c = create_model("vgg-c")
    d = create_model("vgg-d")
    like = create_model("vgg-like")
    assert c.classifier[0].in_features == 2048
    assert d.classifier[0].in_features == 512
    assert [m.out_features for m in d.classifier if isinstance(m, nn.Linear)] == [512, 512, 10]
    assert [m.out_features for m in like.classifier if isinstance(m, nn.Linear)] == [512, 10]
    assert sum(1 for m in c.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)) == 3


def test_resnet_stem_choice():
    small = create_model("resnet50", input_shape=(3, 32, 32), width=8)
    large = create_model("resnet50", input_shape=(3, 224, 224), width=8)
    assert small.stem[0].kernel_size == (3, 3) and small.stem[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in small.stem)
    assert large.stem[0].kernel_size == (7, 7) and large.stem[0].stride == (2, 2)
    assert any(isinstance(m, nn.MaxPool2d) for m in large.stem)
    forced = create_model("resnet18", input_shape=(3, 32, 32), width=8, stem="imagenet")
    assert forced.stem[0].kernel_size == (7, 7)


def test_wrn_structure():
    model = create_model("wrn-16-2")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 1 + 6 * 2  # stem + 2 convs per block, n = (16 - 4) / 6 = 2 blocks per group
    assert model.fc.in_features == 64 * 2


def test_init_conventions():
    torch.manual_seed(0)
    model = create_model("resnet18", width=8)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    conv = model.layer1[0].conv1  # 8 -> 8, 3x3: Kaiming normal, fan-out std = sqrt(2 / (8 * 9))
    assert abs(conv.weight.std().item() - (2 / 72) ** 0.5) < 0.05
    assert torch.equal(model.fc.bias, torch.zeros_like(model.fc.bias))


@pytest.mark.parametrize("name,options", [("cnn1d", {"width": 16}), ("wrn-10-1", {}), ("vgg-c", {})])
def test_construction_is_deterministic(name, options):
    torch.manual_seed(123)
    a = create_model(name, **options).state_dict()
    torch.manual_seed(123)
    b = create_model(name, **options).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(124)
    c = create_model(name, **options).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name,options", [("wrn-10-1", {}), ("resnet18", {"width": 8}),
                                          ("lenet5", {})])
def test_channels_last(name, options):
    torch.manual_seed(0)
    shape = (1, 28, 28) if name == "lenet5" else (3, 32, 32)
    model = create_model(name, input_shape=shape, **options).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected = model(x)
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        got = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,input_shape,options", [
    ("cnn1d", (1, 40), {"width": 16}),
    ("mlp", (1, 40), {}),
    ("wrn-10-1", (3, 16, 16), {}),
])
def test_vmap_functional_call_matches_loop(name, input_shape, options):
    torch.manual_seed(0)
    members = [create_model(name, num_classes=5, input_shape=input_shape, **options) for _ in range(3)]
    x = torch.randn(4, *input_shape)
    for m in members:  # non-trivial running statistics, so eval-mode BatchNorm matters
        m.train()
        with torch.no_grad():
            m(torch.randn(8, *input_shape) * 2 + 0.5)
        m.eval()
    params, buffers = stack_module_state(members)
    base = copy.deepcopy(members[0]).to("meta")

    def one(p, b, inputs):
        return functional_call(base, (p, b), (inputs,))

    with torch.no_grad():
        batched = vmap(one, in_dims=(0, 0, None))(params, buffers, x)
        looped = torch.stack([m(x) for m in members])
    assert batched.shape == (3, 4, 5)
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)


def test_backward_reaches_all_parameters():
    torch.manual_seed(0)
    model = create_model("cnn1d", width=8)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 40)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


