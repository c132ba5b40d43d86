"""Pinned engine options of a run's configuration (:mod:`freetickets.sparse.run_options`): what
``include``/``exclude``/``regrow_pruned``/``structure`` become for ``SparseEngine`` and PF's
pruning, and the channel example batch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from freetickets.sparse.run_options import engine_options, example_inputs, selected_parameters
from freetickets.train.config import TrainConfig


def _model():
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_unstructured_options_are_the_three_selection_settings():
    assert engine_options(TrainConfig()) == {"include": None, "exclude": None, "regrow_pruned": True}
    cfg = TrainConfig(include=["0.weight"], exclude=["2.weight"], regrow_pruned=0)
    assert engine_options(cfg) == {"include": ["0.weight"], "exclude": ["2.weight"], "regrow_pruned": False}


def test_channel_options_add_two_zero_examples_of_the_input_shape():
    out = engine_options(TrainConfig(structure="channel"), _model(), (3,))
    assert set(out) == {"include", "exclude", "regrow_pruned", "structure", "example_inputs"}
    assert out["structure"] == "channel"
    assert torch.equal(out["example_inputs"], torch.zeros(2, 3))


@pytest.mark.parametrize("model, shape", [(None, (3,)), (_model(), None)])
def test_channel_examples_need_the_model_and_its_input_shape(model, shape):
    with pytest.raises(ValueError, match=r"^structure='channel' needs the model and its input shape to trace "
                                         r"channel dependencies$"):
        example_inputs(model, shape)


def test_selected_parameters_follow_include_and_exclude():
    assert [n for n, _ in selected_parameters(TrainConfig(), _model())] == ["0.weight", "2.weight"]
    assert [n for n, _ in selected_parameters(TrainConfig(exclude=["2.*"]), _model())] == ["0.weight"]
    with pytest.raises(ValueError, match="include pattern 'emb"):
        selected_parameters(TrainConfig(include=["emb*"]), _model())


def test_a_configuration_without_structure_is_unstructured():
    from types import SimpleNamespace

    cfg = SimpleNamespace(include=[], exclude=["x"], regrow_pruned=False)
    assert engine_options(cfg) == {"include": None, "exclude": ["x"], "regrow_pruned": False}
