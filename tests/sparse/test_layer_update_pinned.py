"""Pinned checks of what a prune or grow rule returns (:func:`freetickets.sparse.layer_update.check_selection`):
a bool tensor of the allowed mask's shape with exactly ``k`` True entries, all allowed; anything
else is a one-line ``RuntimeError`` naming the rule and the layer."""
from __future__ import annotations

import re

import pytest
import torch

from freetickets.sparse.layer_update import check_selection

ALLOWED = torch.tensor([True, True, False, False])
SHAPE_MSG = "grow rule for fc.weight: must return a bool tensor of shape (4,)"
COUNT_MSG = "grow rule for fc.weight: must select exactly 1 allowed positions"


def _check(selected, k=1):
    check_selection(selected, ALLOWED, k, "fc.weight", "grow")


def test_an_exact_allowed_selection_passes():
    _check(torch.tensor([False, True, False, False]))
    _check(torch.zeros(4, dtype=torch.bool), k=0)


@pytest.mark.parametrize("selected", [
    [False, True, False, False],  # not a tensor
    torch.tensor([0.0, 1.0, 0.0, 0.0]),  # not bool
    torch.tensor([[False, True, False, False]]),  # another shape
])
def test_wrong_type_dtype_or_shape(selected):
    with pytest.raises(RuntimeError, match="^" + re.escape(SHAPE_MSG) + "$"):
        _check(selected)


@pytest.mark.parametrize("selected", [
    torch.tensor([False, False, True, False]),  # one entry, not allowed
    torch.tensor([True, True, False, False]),  # allowed, but two
    torch.tensor([False, True, True, False]),  # two, one of them allowed
])
def test_wrong_count_or_positions(selected):
    with pytest.raises(RuntimeError, match="^" + re.escape(COUNT_MSG) + "$"):
        _check(selected)
