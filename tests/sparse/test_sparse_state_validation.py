"""``SparseEngine.load_state_dict`` refuses a state of other layers or shapes (issue 13).

The cases are chosen so that, without the checks, loading would *succeed silently* (an extra
layer is ignored, a broadcastable mask shape is broadcast) or fail with an unrelated error; the
engine's masks must be unchanged after a refused load.
"""
from __future__ import annotations

import pytest
import torch

from freetickets.sparse import SparseEngine

from _sparse_models import MLP


def _engine(seed=0):
    torch.manual_seed(seed)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return SparseEngine(model, opt, sparsity=0.8, update_interval=10, seed=seed)


def _tamper(state, fn):
    masks = {k: v.clone() for k, v in state["masks"].items()}
    ever = {k: v.clone() for k, v in state["ever_active"].items()}
    fn(masks, ever)
    return {**state, "masks": masks, "ever_active": ever}


def _refused(engine, state, match):
    before = {k: v.clone() for k, v in engine.masks.items()}
    with pytest.raises(ValueError, match=match):
        engine.load_state_dict(state)
    for k, v in engine.masks.items():
        assert torch.equal(v, before[k]), k


def test_an_extra_layer_is_refused():
    state = _engine(1).state_dict()
    name = next(iter(state["masks"]))

    def extra(masks, ever):
        masks["other.weight"], ever["other.weight"] = masks[name].clone(), ever[name].clone()

    _refused(_engine(0), _tamper(state, extra), "mask names do not match.*unexpected \\['other.weight'\\]")


def test_a_missing_layer_is_refused():
    state = _engine(1).state_dict()
    name = next(iter(state["masks"]))

    def drop(masks, ever):
        del masks[name], ever[name]

    _refused(_engine(0), _tamper(state, drop), f"mask names do not match.*missing \\['{name}'\\]")


def test_a_broadcastable_shape_is_refused():
    state = _engine(1).state_dict()
    name = next(iter(state["masks"]))
    shape = tuple(state["masks"][name].shape)

    def row(masks, ever):
        masks[name] = masks[name][:1].clone()  # (1, in): would broadcast over (out, in)

    import re

    _refused(_engine(0), _tamper(state, row), re.escape(f"mask {name!r} has shape (1, {shape[1]}), expected {shape}"))


def test_a_valid_state_loads_exactly():
    src = _engine(1)
    dst = _engine(0)
    assert any(not torch.equal(src.masks[k], dst.masks[k]) for k in src.masks)
    dst.load_state_dict(src.state_dict())
    for k in src.masks:
        assert torch.equal(src.masks[k], dst.masks[k])
