"""Pinned argument checks of :mod:`freetickets.sparse.engine_args`: every boundary of what each
``SparseEngine`` argument accepts, with the exact one-line message, the end step chosen from
``total_steps``, its warnings, and the initial masks."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from freetickets.sparse.engine_args import (
    check_arguments,
    has_momentum_state,
    initial_masks,
    is_int,
    resolve_end_step,
    validate_fraction,
)

OK = dict(sparsity=0.5, masks=None, distribution="erk", update_interval=10, end_step=None, prune_schedule="constant",
          sparse_init="none", grow="gradient", optimizer=None, seed=0, regrow_pruned=True, total_steps=None)


def _check(**overrides):
    return check_arguments(**{**OK, **overrides})


def _raises(message: str, **overrides):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        _check(**overrides)


def test_is_int_refuses_bools_and_floats():
    assert is_int(0) and is_int(-3)
    assert not is_int(True) and not is_int(2.0) and not is_int("2")


@pytest.mark.parametrize("value, expected", [(0, 0.0), (1, 1.0), ("0.25", 0.25), (0.5, 0.5)])
def test_validate_fraction_accepts_the_closed_interval(value, expected):
    assert validate_fraction(value, "f") == expected


def test_validate_fraction_messages():
    with pytest.raises(ValueError, match=r"^f must be in \[0, 1\], got 1\.5$"):
        validate_fraction(1.5, "f")
    with pytest.raises(ValueError, match=r"^f must be in \[0, 1\], got -0\.1$"):
        validate_fraction(-0.1, "f")
    with pytest.raises(ValueError, match=r"^f must be a number in \[0, 1\], got 'x'$"):
        validate_fraction("x", "f")
    with pytest.raises(ValueError, match=r"^f must be a number in \[0, 1\], got None$"):
        validate_fraction(None, "f")


def _opt(**group):
    p = nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([p], lr=0.1, **group)


def test_momentum_state_needs_every_group_to_keep_one():
    assert not has_momentum_state(None)
    assert not has_momentum_state(_opt())
    assert has_momentum_state(_opt(momentum=0.9))
    assert has_momentum_state(torch.optim.Adam([nn.Parameter(torch.zeros(2))]))
    assert not has_momentum_state(torch.optim.Adam([nn.Parameter(torch.zeros(2))], betas=(0.0, 0.9)))
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    mixed = torch.optim.SGD([{"params": [a], "momentum": 0.9}, {"params": [b], "momentum": 0.0}], lr=0.1)
    assert not has_momentum_state(mixed)
    both = torch.optim.SGD([{"params": [a], "momentum": 0.9}, {"params": [b], "momentum": 0.5}], lr=0.1)
    assert has_momentum_state(both)


def test_valid_arguments_return_the_sparsity():
    assert _check() == 0.5
    assert _check(sparsity=None, masks={}) is None  # given masks define it
    assert _check(sparsity=0.25, masks={}) == 0.25
    assert _check(update_interval=None, end_step=0, total_steps=1, seed=-1, regrow_pruned=False) == 0.5
    assert _check(update_interval=1, prune_schedule="cosine", end_step=5) == 0.5
    assert _check(prune_schedule="cosine", total_steps=5) == 0.5
    assert _check(grow="momentum", optimizer=_opt(momentum=0.9)) == 0.5


def test_messages_name_the_argument_and_what_it_allows():
    _raises("distribution must be one of uniform, er, erk; got 'ERK'", distribution="ERK")
    for bad in (0, -1, 1.0, True):
        _raises(f"update_interval must be a positive integer or None (static masks), got {bad!r}",
                update_interval=bad)
    for bad in (-1, 1.5, False):
        _raises(f"end_step must be a non-negative integer or None (never stop), got {bad!r}", end_step=bad)
    for bad in (0, -2, 2.0, True):
        _raises(f"total_steps must be a positive integer (the run's optimizer steps) or None, got {bad!r}",
                total_steps=bad)
    _raises("end_step or total_steps must be given (a positive integer) when prune_schedule='cosine'",
            prune_schedule="cosine")
    _raises("grow='momentum' needs an optimizer with momentum state (SGD with momentum > 0, Adam, AdamW); "
            "use grow='gradient' or 'random' otherwise", grow="momentum", optimizer=_opt())
    for bad in (1.0, None, True):
        _raises(f"seed must be an integer, got {bad!r}", seed=bad)
    for bad in (1, None, "yes"):
        _raises(f"regrow_pruned must be True or False, got {bad!r}", regrow_pruned=bad)


def test_sparse_init_message_lists_the_choices():
    from freetickets.names import SPARSE_INITS

    _raises(f"sparse_init must be one of {', '.join(SPARSE_INITS)}; got 'bad'", sparse_init="bad")


@pytest.mark.parametrize("total, end, interval, schedule, expected_end", [
    (100, None, 10, "constant", 75),  # 75 % of the run
    (101, None, 10, "constant", 75),  # floored
    (1, None, 1, "constant", 1),  # at least step 1
    (100, 40, 10, "constant", 40),  # an explicit end wins
    (None, None, 10, "cosine", None),
    (100, None, None, "constant", 75),
])
def test_end_step_from_total_steps(total, end, interval, schedule, expected_end):
    got, _ = resolve_end_step(total_steps=total, end_step=end, update_interval=interval, prune_schedule=schedule)
    assert got == expected_end


def test_end_step_warnings():
    _, none = resolve_end_step(total_steps=100, end_step=None, update_interval=10, prune_schedule="constant")
    assert none is None
    _, cosine = resolve_end_step(total_steps=None, end_step=None, update_interval=10, prune_schedule="cosine")
    assert cosine is None
    _, static = resolve_end_step(total_steps=None, end_step=None, update_interval=None, prune_schedule="constant")
    assert static is None
    _, endless = resolve_end_step(total_steps=None, end_step=None, update_interval=10, prune_schedule="constant")
    assert endless == ("SparseEngine: topology updates run until training stops with a constant prune fraction, "
                       "so an update near the end leaves regrown weights untrained at 0; pass total_steps=<optimizer "
                       "steps of the run> (updates then stop at 75% of them) or end_step=")
    _, last = resolve_end_step(total_steps=100, end_step=101, update_interval=10, prune_schedule="constant")
    assert last == ("SparseEngine: the last of the run's 100 steps is a topology update (end_step 101, constant "
                    "prune fraction): its regrown weights stay at 0 in the final model; stop updates earlier "
                    "(end_step <= 100, or end_step=None: 75% of total_steps; in a run's configuration: "
                    "update_end_fraction, e.g. --set update_end_fraction=0.75)")
    # no warning when the end step is within the run, or the last step is not an update step
    assert resolve_end_step(total_steps=100, end_step=100, update_interval=10, prune_schedule="constant")[1] is None
    assert resolve_end_step(total_steps=100, end_step=101, update_interval=7, prune_schedule="constant")[1] is None
    assert resolve_end_step(total_steps=None, end_step=5, update_interval=10, prune_schedule="constant")[1] is None


def _named():
    return [("a", nn.Parameter(torch.zeros(4, 5))), ("b", nn.Parameter(torch.zeros(3, 2)))]


def test_initial_random_masks_have_the_distribution_counts():
    masks = initial_masks(_named(), None, 0.5, "uniform", torch.Generator().manual_seed(0))
    assert [int(m.sum()) for m in masks.values()] == [10, 3]
    assert all(m.dtype == torch.bool for m in masks.values())
    again = initial_masks(_named(), None, 0.5, "uniform", torch.Generator().manual_seed(0))
    assert all(torch.equal(masks[k], again[k]) for k in masks)


def test_initial_masks_copy_the_given_ones_and_keep_unnamed_layers_dense():
    given = torch.zeros(4, 5, dtype=torch.float32)
    given[0, 0] = 1
    masks = initial_masks(_named(), {"a": given}, None, "erk", torch.Generator())
    assert masks["a"].dtype == torch.bool and int(masks["a"].sum()) == 1 and bool(masks["a"][0, 0])
    assert torch.equal(masks["b"], torch.ones(3, 2, dtype=torch.bool))
    given[1, 1] = 1  # a copy: later changes of the caller's tensor do not leak in
    assert int(masks["a"].sum()) == 1


def test_initial_masks_messages():
    with pytest.raises(ValueError, match=re.escape("masks: names ['c'] are not sparsifiable parameters of the model; "
                                                   "allowed: ['a', 'b']") + "$"):
        initial_masks(_named(), {"c": torch.ones(1)}, None, "erk", torch.Generator())
    many = [(f"w{i}", nn.Parameter(torch.zeros(2, 2))) for i in range(6)]
    with pytest.raises(ValueError, match=re.escape("allowed: ['w0', 'w1', 'w2', 'w3', 'w4'] ...") + "$"):
        initial_masks(many, {"x": torch.ones(1)}, None, "erk", torch.Generator())
    with pytest.raises(ValueError, match=re.escape("masks['b']: shape (2, 3) != parameter shape (3, 2)") + "$"):
        initial_masks(_named(), {"b": torch.ones(2, 3)}, None, "erk", torch.Generator())


def test_unknown_mask_names_list_five_of_each():
    five = [(f"w{i}", nn.Parameter(torch.zeros(2, 2))) for i in range(5)]
    with pytest.raises(ValueError, match=re.escape("allowed: ['w0', 'w1', 'w2', 'w3', 'w4']") + "$"):
        initial_masks(five, {"x": torch.ones(1)}, None, "erk", torch.Generator())
    six = five + [("w5", nn.Parameter(torch.zeros(2, 2)))]
    unknown = {f"u{i}": torch.ones(1) for i in range(6)}
    with pytest.raises(ValueError, match=re.escape("masks: names ['u0', 'u1', 'u2', 'u3', 'u4'] are not sparsifiable "
                                                   "parameters of the model; allowed: ['w0', 'w1', 'w2', 'w3', 'w4'] ...")
                       + "$"):
        initial_masks(six, unknown, None, "erk", torch.Generator())


def test_given_and_default_masks_are_bool():
    masks = initial_masks(_named(), {"a": torch.ones(4, 5)}, None, "erk", torch.Generator())
    assert masks["a"].dtype == torch.bool and masks["b"].dtype == torch.bool


def _conv_model():
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6, 3))


def _structure(model, **overrides):
    from freetickets.sparse.engine_args import channel_structure

    named = [(n, p) for n, p in model.named_parameters() if p.dim() >= 2]
    args = dict(structure="channel", example_inputs=torch.zeros(2, 1, 10), masks=None, sparsity=0.5,
                distribution="uniform", prune="magnitude", grow="gradient", generator=torch.Generator().manual_seed(0))
    return channel_structure(model, named, **{**args, **overrides})


def test_channel_structure_messages():
    model = _conv_model()
    assert _structure(model, structure="unstructured") is None
    with pytest.raises(ValueError, match=r"^structure must be one of unstructured, channel; got 'rows'$"):
        _structure(model, structure="rows")
    with pytest.raises(ValueError, match=re.escape("example_inputs: structure='channel' needs an example input batch "
                                                   "(e.g. torch.zeros(2, *input_shape)) to trace which layers share "
                                                   "channels") + "$"):
        _structure(model, example_inputs=None)
    why = ("structure='channel' prunes channels by magnitude and regrows them at random (docs/algorithms.md); "
           "prune must be 'magnitude' and grow 'gradient' or 'random', got prune={!r}, grow={!r}")
    for prune, grow in (("taylor", "gradient"), ("magnitude", "momentum")):
        with pytest.raises(ValueError, match="^" + re.escape(why.format(prune, grow)) + "$"):
            _structure(model, prune=prune, grow=grow)
    assert _structure(model, grow="random") is not None


def test_channel_structure_draws_from_the_given_generator():
    model = _conv_model()
    torch.manual_seed(1)
    first = [k.clone() for k in _structure(model).keep_out]
    torch.manual_seed(2)
    second = _structure(model).keep_out
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert [int(k.sum()) for k in first] == [2, 2, 3]  # the head keeps every class


def test_channel_structure_keeps_layers_without_a_given_mask_whole():
    model = _conv_model()
    names = [n for n, p in model.named_parameters() if p.dim() >= 2]
    channels = _structure(model, masks={names[2]: torch.ones(3, 24, dtype=torch.bool)})
    assert [int(k.sum()) for k in channels.keep_out] == [4, 4, 3]


def test_momentum_state_reads_the_first_beta_of_any_length():
    from types import SimpleNamespace

    assert has_momentum_state(SimpleNamespace(param_groups=[{"betas": (0.9,)}]))
    assert not has_momentum_state(SimpleNamespace(param_groups=[{"betas": ()}]))
    assert not has_momentum_state(SimpleNamespace(param_groups=[{"betas": [0.0, 0.9]}]))


def test_sparsity_is_required_without_masks():
    with pytest.raises(ValueError):
        _check(sparsity=None)


def test_momentum_state_checks_every_adam_group():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    mixed = torch.optim.Adam([{"params": [a]}, {"params": [b], "betas": (0.0, 0.9)}])
    assert not has_momentum_state(mixed)
