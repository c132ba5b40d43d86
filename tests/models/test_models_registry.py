"""Tests for the model registry: listing, user registration, and helpful errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from freetickets.errors import UserError
from freetickets.models import (
    create_model,
    describe_models,
    list_models,
    model_names_help,
    register_model,
    unregister_model,
)


def test_list_models_sorted_with_pattern():
    names = list_models()
    assert names == sorted(names)
    for expected in ["mlp", "cnn1d", "lenet5", "vgg16", "vgg-like", "vgg-c", "vgg-d",
                     "wrn-D-K", "resnet18", "resnet50"]:
        assert expected in names
    described = dict(describe_models())
    assert set(described) == set(names)
    assert all(described.values())
    assert "wrn-28-10" in described["wrn-D-K"]
    assert "wrn-D-K" in model_names_help()


# ---- errors -------------------------------------------------------------------------------

def test_unknown_name_suggests_closest():
    with pytest.raises(ValueError) as info:
        create_model("resnet51")
    message = str(info.value)
    assert "name" in message and "'resnet51'" in message
    assert "did you mean 'resnet50'" in message
    assert "wrn-D-K" in message and "cnn1d" in message
    with pytest.raises(UserError, match="did you mean 'wrn-28-10'"):
        create_model("wrn28-10")
    with pytest.raises(ValueError, match="Valid models"):
        create_model("transformer-xl-huge")
    with pytest.raises(ValueError, match="name"):
        create_model(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["wrn-27-10", "wrn-4-2", "wrn-28-0"])
def test_bad_wrn_pattern(name):
    with pytest.raises(ValueError, match=r"name: .*6n \+ 4|width K must be >= 1"):
        create_model(name)


@pytest.mark.parametrize("num_classes", [1, 0, -3, 2.5, True, "10"])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        create_model("mlp", num_classes=num_classes)


@pytest.mark.parametrize("name,input_shape", [
    ("wrn-10-1", (1, 40)),
    ("resnet18", (3, 32)),
    ("cnn1d", (3, 32, 32)),
    ("lenet5", (1, 8, 8)),
    ("vgg16", (3, 16, 16)),
    ("vgg16", (1, 40)),
    ("mlp", ()),
    ("mlp", (1, 0)),
    ("mlp", (1, 40.0)),
])
def test_bad_input_shape(name, input_shape):
    with pytest.raises(ValueError, match="input_shape"):
        create_model(name, input_shape=input_shape)


def test_bad_options():
    with pytest.raises(ValueError, match="widht: not an option of model 'cnn1d'.*width"):
        create_model("cnn1d", widht=64)
    with pytest.raises(ValueError, match="dropout"):
        create_model("wrn-16-2", dropout=1.5)
    with pytest.raises(ValueError, match="stem"):
        create_model("resnet18", stem="tiny")
    with pytest.raises(ValueError, match="width"):
        create_model("cnn1d", width=0)
    with pytest.raises(ValueError, match="not an option"):
        create_model("vgg16", width=8)


def test_user_registration_roundtrip():
    @register_model("test-tiny-linear", default_input_shape=(5,))
    def tiny(num_classes, input_shape, bias=True):
        """A single linear layer (test only)."""
        return nn.Linear(input_shape[0], num_classes, bias=bias)

    try:
        assert "test-tiny-linear" in list_models()
        assert dict(describe_models())["test-tiny-linear"] == "A single linear layer (test only)."
        model = create_model("Test-Tiny-Linear", num_classes=4, bias=False)
        assert model(torch.randn(2, 5)).shape == (2, 4)
        with pytest.raises(ValueError, match="already registered"):
            register_model("test-tiny-linear")(tiny)
        register_model("test-tiny-linear", override=True)(tiny)
    finally:
        unregister_model("test-tiny-linear")
    assert "test-tiny-linear" not in list_models()
    with pytest.raises(ValueError):
        unregister_model("test-tiny-linear")


def test_top_level_api():
    import freetickets

    assert freetickets.create_model is create_model
    assert freetickets.list_models is list_models
