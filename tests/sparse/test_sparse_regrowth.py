"""Regrowth policy: may a weight pruned in an update be regrown in the same update?"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from freetickets.sparse import SparseEngine


def _layer_engine(regrow_pruned: bool):
    """One Linear(4, 4) at 50% uniform sparsity; every active weight 1.0 except the smallest,
    (0, c) with 0.01; the gradient is largest at that same position, then at the inactive ones in
    flat order 9 > 8 > ... (so the expected growth is known exactly)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = SparseEngine(model, opt, sparsity=0.5, distribution="uniform", update_interval=None,
                          regrow_pruned=regrow_pruned)
    mask = engine.masks["0.weight"]
    w = model[0].weight
    flat_active = mask.reshape(-1).nonzero().reshape(-1).tolist()
    smallest = flat_active[0]
    with torch.no_grad():
        w.copy_(mask.float())
        w.view(-1)[smallest] = 0.01
    grad = torch.zeros(16)
    inactive = (~mask).reshape(-1).nonzero().reshape(-1).tolist()
    for rank, pos in enumerate(inactive):
        grad[pos] = 1.0 + rank  # later inactive positions have larger gradients
    grad[smallest] = 100.0
    w.grad = grad.view(4, 4).clone()
    opt.state[w]["momentum_buffer"] = torch.full((4, 4), 7.0)
    return model, opt, engine, smallest, inactive


@pytest.mark.parametrize("regrow_pruned", [True, False])
def test_just_pruned_weight_regrown_only_when_allowed(regrow_pruned):
    model, opt, engine, smallest, inactive = _layer_engine(regrow_pruned)
    w = model[0].weight
    before = engine.masks["0.weight"].clone()
    engine.update_topology(0.125)  # k = ceil(0.125 * 8) = 1: prune exactly the 0.01 weight
    mask = engine.masks["0.weight"].reshape(-1)
    assert int(mask.sum()) == 8 and engine.pruned_total == engine.regrown_total == 1
    momentum = opt.state[w]["momentum_buffer"].reshape(-1)
    if regrow_pruned:
        # the pruned weight wins growth (largest gradient) and restarts at exactly 0, momentum 0
        assert torch.equal(mask, before.reshape(-1))
        assert w.view(-1)[smallest].item() == 0.0 and momentum[smallest].item() == 0.0
        assert engine.reactivated_total == 1
        assert int((momentum == 0).sum()) == 1
    else:
        # not eligible: the inactive position with the largest gradient is grown instead
        assert not mask[smallest] and mask[inactive[-1]]
        assert w.view(-1)[smallest].item() == 0.0 and w.view(-1)[inactive[-1]].item() == 0.0
        assert momentum[inactive[-1]].item() == 0.0 and momentum[smallest].item() == 7.0
        assert engine.reactivated_total == 0
    others = [i for i in range(16) if mask[i] and before.reshape(-1)[i] and i != smallest]
    assert len(others) == 7
    assert all(w.view(-1)[i].item() == 1.0 for i in others)


@pytest.mark.parametrize("regrow_pruned,expected_k", [(True, 8), (False, 8)])
def test_full_fraction_counts(regrow_pruned, expected_k):
    """fraction 1 at 50%: both policies move ceil(1 * 8) = 8 = n - n_active; with regrowth of
    pruned positions allowed, growth ranks every inactive position, pruned ones included."""
    model, opt, engine, smallest, inactive = _layer_engine(regrow_pruned)
    engine.update_topology(1.0)
    assert engine.pruned_total == expected_k and int(engine.masks["0.weight"].sum()) == 8
    assert bool((model[0].weight.detach()[engine.masks["0.weight"]] == 0).all())  # all regrown at 0
    if regrow_pruned:
        assert engine.masks["0.weight"].reshape(-1)[smallest]
        # 8 of 16 positions grown by gradient: the pruned one (100) + the 7 largest inactive ones
        assert engine.reactivated_total == 1
    else:
        assert torch.equal(engine.masks["0.weight"].reshape(-1).nonzero().reshape(-1), torch.tensor(sorted(inactive)))


def test_k_above_inactive_count_only_with_regrowth():
    """At 25% sparsity (12 of 16 active) fraction 0.5 gives ceil(6) = 6 > 4 inactive: True prunes
    and regrows 6, False is capped at n - n_active = 4."""
    for regrow, k in ((True, 6), (False, 4)):
        model = nn.Sequential(nn.Linear(4, 4, bias=False))
        engine = SparseEngine(model, None, sparsity=0.25, distribution="uniform", update_interval=None,
                              grow="random", regrow_pruned=regrow)
        engine.update_topology(0.5)
        assert engine.pruned_total == k and int(engine.masks["0.weight"].sum()) == 12
        assert engine.reactivated_total >= (2 if regrow else 0)  # 6 grown among 4 + 6: >= 2 were pruned


def test_regrow_pruned_must_be_bool_and_in_state():
    with pytest.raises(ValueError, match="regrow_pruned must be True or False"):
        SparseEngine(nn.Linear(3, 3), None, 0.5, regrow_pruned="yes")
    engine = SparseEngine(nn.Linear(3, 3), None, 0.5)
    assert engine.regrow_pruned is True and engine.state_dict()["config"]["regrow_pruned"] is True
    assert "regrow_pruned=True" in repr(engine)
