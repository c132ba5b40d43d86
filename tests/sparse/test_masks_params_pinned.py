"""Pinned edges of :mod:`freetickets.sparse.masks` (global magnitude masks, bit packing) and of the
messages of :func:`freetickets.sparse.params.sparsifiable_parameters` for unmatched patterns."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from freetickets.sparse.masks import global_magnitude_masks, pack_bits, unpack_bits
from freetickets.sparse.params import sparsifiable_parameters


def test_no_weight_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^model_or_named_params: no sparsifiable weight given$"):
        global_magnitude_masks({}, 0.5)


def test_a_single_weight_is_enough():
    masks = global_magnitude_masks({"w": torch.tensor([[3.0, -1.0], [0.5, -2.0]])}, 0.5)
    assert masks["w"].tolist() == [[True, False], [False, True]]


def test_keeping_exactly_one_weight_per_output_unit_is_allowed():
    """Sparsity 0.75 of a (4, 4) weight keeps 4 weights: exactly the 4 rows' maxima (the boundary
    of the one-weight-per-unit rule); one weight fewer is the error naming the largest sparsity."""
    w = torch.arange(16.0).reshape(4, 4)
    masks = global_magnitude_masks({"w": w}, 0.75)
    assert masks["w"].tolist() == [[False, False, False, True]] * 4
    with pytest.raises(ValueError, match=re.escape("sparsity 0.8: keeps 3 of 16 weights, fewer than the 4 output "
                                                   "units of the sparse layers (one weight each); use a sparsity of "
                                                   "at most 0.7500")):
        global_magnitude_masks({"w": w}, 0.8)


def test_a_one_dimensional_weight_is_one_unit():
    """A 1-D weight reserves one entry (its largest), so keeping a single weight works."""
    masks = global_magnitude_masks({"v": torch.tensor([1.0, -4.0, 2.0, 3.0])}, 0.75)
    assert masks["v"].tolist() == [False, True, False, False]


def test_each_mask_owns_its_memory():
    """Masks are cut from one concatenated selection; each is copied out so that saving or keeping
    one mask does not hold the whole model's selection."""
    masks = global_magnitude_masks({"a": torch.randn(3, 4), "b": torch.randn(5, 2)}, 0.5)
    for m in masks.values():
        assert m.untyped_storage().nbytes() == m.numel()
    assert masks["a"].untyped_storage().data_ptr() != masks["b"].untyped_storage().data_ptr()


def test_unpacked_bits_are_bool_in_the_given_shape():
    mask = torch.tensor([[True, False, True], [False, False, True], [True, True, True]])
    packed = pack_bits(mask)
    assert packed.tolist() == [0b11100101, 0b1]  # little-endian bits, 9 entries in 2 bytes
    out = unpack_bits(packed, (3, 3))
    assert out.dtype == torch.bool and torch.equal(out, mask)


class _Named(nn.Module):
    def __init__(self, names):
        super().__init__()
        for n in names:
            self.add_module(n, nn.Linear(2, 2))


def _message(model, **patterns) -> str:
    with pytest.raises(ValueError) as info:
        sparsifiable_parameters(model, **patterns)
    return str(info.value)


def test_unmatched_message_lists_five_close_names_then_dots():
    six = _Named([f"fc{i}" for i in range(6)] + ["head"])
    assert _message(six, exclude=["*fc"]) == ("exclude pattern '*fc' matches no sparse parameter; names that exist: "
                                                "fc0.weight, fc1.weight, fc2.weight, fc3.weight, fc4.weight ...")
    five = _Named([f"fc{i}" for i in range(5)] + ["head"])
    assert _message(five, exclude=["*fc"]) == ("exclude pattern '*fc' matches no sparse parameter; names that "
                                                 "exist: fc0.weight, fc1.weight, fc2.weight, fc3.weight, fc4.weight")
    seven = _Named([f"fc{i}" for i in range(7)])
    assert _message(seven, include=["*fc"]).endswith("fc3.weight, fc4.weight ...")


def test_close_names_strip_only_the_stars_of_the_pattern():
    """The close names contain the pattern without its ``*``s; other characters (spaces, letters)
    stay, so ``' fc*'`` has no close name and every name is listed."""
    model = _Named(["fc", "head"])
    assert _message(model, exclude=[" fc*"]).endswith("names that exist: fc.weight, head.weight")
    assert _message(model, exclude=["Xfc*"]).endswith("names that exist: fc.weight, head.weight")
    assert _message(model, exclude=["*fcX"]).endswith("names that exist: fc.weight, head.weight")


def test_unmatched_message_without_any_name():
    assert _message(nn.Sequential(nn.BatchNorm1d(3)), exclude=["x"]) == (
        "exclude pattern 'x' matches no sparse parameter; names that exist: (none)")


def test_random_mask_counts_from_zero_to_all():
    from freetickets.sparse.masks import random_mask

    g = torch.Generator().manual_seed(0)
    assert not random_mask((2, 3), 0, g).any()
    assert random_mask((2, 3), 6, g).all()
    assert int(random_mask((2, 3), 1, g).sum()) == 1
    for bad in (-1, 7):
        with pytest.raises(ValueError, match=rf"^active: need 0 <= active <= 6, got {bad}$"):
            random_mask((2, 3), bad, g)


@pytest.mark.parametrize("what", ["include", "exclude"])
def test_a_bare_string_pattern_is_refused_by_name(what):
    with pytest.raises(ValueError, match=re.escape(f"{what} must be a list of fnmatch patterns (e.g. ['fc.weight']), "
                                                   "got str") + "$"):
        sparsifiable_parameters(_Named(["fc"]), **{what: "fc.weight"})
    with pytest.raises(ValueError, match=re.escape(f"{what}: every pattern must be a non-empty string, got ' '") + "$"):
        sparsifiable_parameters(_Named(["fc"]), **{what: [" "]})


def test_one_dimensional_include_hits_list_five():
    model = nn.Sequential(*[nn.BatchNorm1d(2) for _ in range(6)])
    with pytest.raises(ValueError, match=re.escape("include pattern '*.weight' matches only parameters with fewer than "
                                                   "2 dimensions (0.weight, 1.weight, 2.weight, 3.weight, 4.weight); "
                                                   "only weights of >= 2 dimensions can be sparse") + "$"):
        sparsifiable_parameters(model, include=["*.weight"])


def test_excluding_everything_is_a_one_line_error():
    with pytest.raises(ValueError, match=re.escape(
            "model: no sparsifiable layer left; sparse training needs at least one nn.Conv1d/2d/3d, nn.Linear or "
            "nn.MultiheadAttention weight (or an `include` pattern), and `exclude` must leave at least one") + "$"):
        sparsifiable_parameters(_Named(["fc"]), exclude=["fc.*"])
