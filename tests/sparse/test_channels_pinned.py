"""Known answers of :mod:`freetickets.sparse.channels` at the boundaries mutation testing showed
the channel contract tests (``test_sparse_channels.py``) did not pin.

Most tests describe the channels by hand (:class:`ChannelLayer` objects with plain parameters,
no tracing), so every count, score, mask and restarted weight can be worked out on paper:

- ``chain``: ``a`` (4 channels, 5 inputs, one BatchNorm) feeds ``b`` (6 channels, a kernel of
  3), whose channels each feed 2 columns of ``out`` (a flatten), the kept output layer.
- ``residual``: ``s`` and ``m`` add their outputs (one unit led by ``s``, two BatchNorms on the
  stream) and feed ``n``, which feeds the kept ``o``.
"""
from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from _sparse_models import CNN1d, ResidualUnit
from torch import nn

from freetickets.sparse.channels import (ChannelLayer, ChannelStructure, _active_total, _state, _unit_density,
                                         allocate_channels, build_channel_layers, channel_densities,
                                         magnitude_channel_masks)
from freetickets.sparse.distributions import layer_densities
from freetickets.sparse.selection import round_half_up

OUTPUT = "it produces the model's output"


def _param(*shape: int, seed: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)))


def _chain(in_a: int = 5) -> SimpleNamespace:
    pa, pb, pout = _param(4, in_a, seed=1), _param(6, 4, 3, seed=2), _param(2, 12, seed=3)
    dense = _param(3, 4, seed=4)  # a dense (excluded) consumer of a: it only counts in a's score
    bias_a, bias_b = _param(4, seed=5), _param(6, seed=6)
    bn = nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 2.0, 1.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        bn.running_var.copy_(torch.tensor([5.0, 6.0, 7.0, 8.0]))
    i4, i6 = torch.arange(4), torch.arange(6)
    cols_ab, cols_bo = torch.arange(4).view(4, 1), torch.arange(12).view(6, 2)
    a = ChannelLayer("a", 4, in_a, 1, consumers=[(1, cols_ab)], outgoing=[(pb, cols_ab), (dense, cols_ab)],
                     extras=[(bias_a, i4), (bn.weight, i4), (bn.bias, i4)], norms=[(bn, i4)])
    b = ChannelLayer("b", 6, 4, 3, consumers=[(2, cols_bo)], outgoing=[(pout, cols_bo)], extras=[(bias_b, i6)])
    out = ChannelLayer("out", 2, 12, 1, kept_reason=OUTPUT)
    return SimpleNamespace(layers=[a, b, out], params=[pa, pb, pout], dense=dense, bias_a=bias_a, bias_b=bias_b, bn=bn)


def _residual() -> SimpleNamespace:
    ps, pm, pn, po = _param(4, 3, seed=11), _param(4, 4, seed=12), _param(3, 4, seed=13), _param(2, 3, seed=14)
    bias_s, bias_m = _param(4, seed=15), _param(4, seed=16)
    bn1, bn2 = nn.BatchNorm1d(4), nn.BatchNorm1d(4)
    with torch.no_grad():
        bn1.weight.copy_(torch.tensor([1.0, 2.0, 4.0, 0.5]))
        bn2.weight.copy_(torch.tensor([3.0, 2.0, 0.0, 0.5]))
    i4 = torch.arange(4)
    cols = torch.arange(4).view(4, 1)
    s = ChannelLayer("s", 4, 3, 1, consumers=[(1, cols), (2, cols)], outgoing=[(pm, cols), (pn, cols)],
                     extras=[(bias_s, i4), (bias_m, i4), (bn1.weight, i4), (bn1.bias, i4), (bn2.weight, i4),
                             (bn2.bias, i4)], norms=[(bn1, i4), (bn2, i4)], members=[1])
    m = ChannelLayer("m", 4, 4, 1, leader=0)
    n = ChannelLayer("n", 3, 4, 1, consumers=[(3, torch.arange(3).view(3, 1))],
                     outgoing=[(po, torch.arange(3).view(3, 1))])
    o = ChannelLayer("o", 2, 3, 1, kept_reason=OUTPUT)
    return SimpleNamespace(layers=[s, m, n, o], params=[ps, pm, pn, po], bn1=bn1, bn2=bn2)


def _set_keep(cs: ChannelStructure, *keeps: list[int]) -> list[torch.Tensor]:
    """Set kept output channels (0/1 lists, in layer order) and return the implied masks."""
    for j, keep in enumerate(keeps):
        cs.keep_out[j] = torch.tensor(keep, dtype=torch.bool)
    cs.refresh()
    masks = [cs.mask(j) for j in range(len(cs.layers))]
    with torch.no_grad():
        for p, m in zip(cs.params, masks):
            p.mul_(m)
    return masks


def _outer(keep_out: torch.Tensor, keep_in: torch.Tensor, shape) -> torch.Tensor:
    extra = (1,) * (len(shape) - 2)
    return (keep_out.view(-1, 1, *extra) & keep_in.view(1, -1, *extra)).expand(shape)


def _b(*bits: int) -> torch.Tensor:
    return torch.tensor(bits, dtype=torch.bool)


# ------------------------------------------------------------------ counts


def test_active_total_is_kept_rows_times_columns_their_producers_left():
    layers = _chain().layers
    # a keeps 2 of 4 (5 inputs), b 3 of 6 (a removed 2 of its 4 columns), out loses 3 channels of b x 2 columns
    assert _active_total(layers, [2, 3, 2]) == 2 * 5 * 1 + 3 * 2 * 3 + 2 * 6 * 1 == 40
    assert _active_total(layers, [4, 6, 2]) == 4 * 5 + 6 * 4 * 3 + 2 * 12 == 116  # everything kept: numel


def _closest_reachable(layers, sparsity: float, distribution: str) -> list[int]:
    """Oracle: every count vector that one scale reaches (each removable layer keeps
    round(min(1, scale * sqrt(unit density)) * out), at least 1), the one whose exact total is
    closest to round((1 - S) * N), ties to the smaller total."""
    shapes = {l.name: (l.out_channels, l.in_columns, l.cell) for l in layers}
    dens = layer_densities(shapes, sparsity, distribution)
    roots = [math.sqrt(_unit_density(layers, dens, j)) for j in range(len(layers))]
    numel = sum(l.out_channels * l.in_columns * l.cell for l in layers)
    target = round_half_up((1 - sparsity) * numel)

    def counts(scale):
        return [max(1, round_half_up(min(1.0, scale * r) * l.out_channels)) if l.removable else l.out_channels
                for l, r in zip(layers, roots)]

    scales = {0.0} | {(m - 0.5) / (l.out_channels * r) * (1 + 1e-9) for l, r in zip(layers, roots)
                      if l.removable for m in range(1, l.out_channels + 1)}
    vectors = [counts(s) for s in sorted(scales)] + [[l.out_channels for l in layers]]
    return min(vectors, key=lambda v: (abs(_active_total(layers, v) - target), _active_total(layers, v)))


def test_allocation_known_answers_on_the_chain():
    """Uniform densities: a and b share one scale x; the reachable (a, b) are (1,1) 12, (1,2) 19,
    (2,2) 30, (2,3) 40, (2,4) 50, (3,4) 67, (3,5) 80, (4,5) 100, (4,6) 116 active weights."""
    layers = _chain().layers
    assert allocate_channels(layers, 0.5, "uniform") == [2, 4, 2]  # target 58: 50 is 8 away, 67 is 9
    assert allocate_channels(layers, 0.9, "uniform") == [1, 1, 2]  # target 12: exact at the smallest
    assert allocate_channels(layers, 1 - 45 / 116, "uniform") == [2, 3, 2]  # target 45: 40 and 50 tie, the lower wins
    assert allocate_channels(layers, 1 - 75 / 116, "uniform") == [3, 5, 2]  # target 75: 80 is closer than 67
    for target, counts in ((35, [2, 2, 2]), (108, [4, 5, 2])):  # more ties (30 | 40, 100 | 116): the lower total
        assert allocate_channels(layers, 1 - target / 116, "uniform") == counts
    assert allocate_channels(layers, 0.01, "uniform") == [4, 6, 2]  # target 115: everything kept


@pytest.mark.parametrize("distribution", ["uniform", "er", "erk"])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.62, 0.8, 0.9, 0.95])
def test_allocation_is_the_closest_total_one_scale_reaches(distribution, sparsity):
    for layers in (_chain().layers, _chain(in_a=40).layers, _residual().layers):
        assert allocate_channels(layers, sparsity, distribution) == _closest_reachable(layers, sparsity, distribution)


def test_allocation_reaches_every_channel_of_thin_layers():
    """The scale runs up to 1 / (smallest root), so even the sparsest layer can stay whole."""
    layers = [ChannelLayer("wide", 40, 400, 1, consumers=[(1, torch.arange(40).view(40, 1))]),
              ChannelLayer("thin", 2, 40, 1, consumers=[(2, torch.arange(2).view(2, 1))]),
              ChannelLayer("out", 1, 2, 1, kept_reason=OUTPUT)]
    for sparsity in (0.05, 0.2, 0.5):
        assert allocate_channels(layers, sparsity, "erk") == _closest_reachable(layers, sparsity, "erk")
    assert allocate_channels(layers, 0.05, "erk")[1] == 2


def test_unit_density_is_the_numel_weighted_mean_over_a_residual_unit():
    layers = [ChannelLayer("lead", 4, 3, 2, members=[2]), ChannelLayer("alone", 5, 5, 1),
              ChannelLayer("member", 4, 5, 1, leader=0), ChannelLayer("dot", 1, 1, 1)]
    dens = {"lead": 0.2, "alone": 0.5, "member": 0.8, "dot": 0.3}
    unit = (0.2 * 24 + 0.8 * 20) / 44
    assert _unit_density(layers, dens, 0) == pytest.approx(unit, rel=1e-12)
    assert _unit_density(layers, dens, 2) == pytest.approx(unit, rel=1e-12)
    assert _unit_density(layers, dens, 1) == pytest.approx(0.5, rel=1e-12)
    assert _unit_density(layers, dens, 3) == pytest.approx(0.3, rel=1e-12)  # one weight: its own density


# ------------------------------------------------------------------ masks and bookkeeping


def test_a_new_structure_keeps_every_channel():
    chain = _chain()
    cs = ChannelStructure(chain.layers, chain.params)
    assert cs.counts == [4, 6, 2]
    for j, p in enumerate(chain.params):
        assert cs.keep_out[j].dtype == torch.bool and bool(cs.keep_out[j].all())
        assert cs.mask(j).shape == p.shape and bool(cs.mask(j).all())
    assert cs.describe() == {"a": {"channels": 4, "out_channels": 4}, "b": {"channels": 6, "out_channels": 6},
                             "out": {"channels": 2, "out_channels": 2, "kept_because": OUTPUT}}


def test_masks_are_kept_rows_times_columns_whose_producing_channel_is_kept():
    chain = _chain()
    cs = ChannelStructure(chain.layers, chain.params)
    _set_keep(cs, [1, 0, 1, 1], [1, 1, 0, 1, 0, 1], [1, 1])
    assert torch.equal(cs.keep_in(0), torch.ones(5, dtype=torch.bool))  # a has no sparse producer
    assert torch.equal(cs.keep_in(1), _b(1, 0, 1, 1))
    assert torch.equal(cs.keep_in(2), _b(1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1))  # two columns per channel of b
    assert torch.equal(cs.mask(1), _outer(_b(1, 1, 0, 1, 0, 1), _b(1, 0, 1, 1), (6, 4, 3)))
    assert torch.equal(cs.mask(2), _outer(_b(1, 1), cs.keep_in(2), (2, 12)))
    assert cs.mask(1).is_contiguous() and cs.mask(1).dtype == torch.bool
    assert cs.counts == [3, 4, 2]


def test_initial_channels_are_drawn_in_layer_order_and_members_copy_their_leader():
    res = _residual()
    cs = ChannelStructure(res.layers, res.params)
    cs.set_initial([2, 4, 1, 2], torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws, by hand: s, (m copies s), n, o
    expected = []
    for out, c in ((4, 2), (3, 1), (2, 2)):
        keep = torch.zeros(out, dtype=torch.bool)
        keep[torch.randperm(out, generator=g)[:c]] = True
        expected.append(keep)
    assert torch.equal(cs.keep_out[0], expected[0]) and torch.equal(cs.keep_out[1], expected[0])
    assert torch.equal(cs.keep_out[2], expected[1]) and torch.equal(cs.keep_out[3], expected[2])
    assert cs.counts == [2, 2, 1, 2]
    assert cs.keep_out[1] is not cs.keep_out[0]  # a copy: the member never aliases its leader


def test_load_masks_reads_kept_rows_and_any_nonzero_entry_as_active():
    """As SparseEngine reads given masks (``dtype=torch.bool``): a float mask of 0 and 2 is a mask."""
    chain = _chain()
    masks = _set_keep(ChannelStructure(chain.layers, chain.params), [0, 1, 1, 1], [1, 1, 1, 0, 0, 1], [1, 1])
    cs = ChannelStructure(chain.layers, chain.params)
    cs.load_masks([m.float() * 2 for m in masks])
    assert torch.equal(cs.keep_out[1], _b(1, 1, 1, 0, 0, 1))
    assert cs.counts == [3, 4, 2]
    assert all(torch.equal(cs.mask(j), m) for j, m in enumerate(masks))


def test_load_masks_refuses_non_channel_masks_and_members_that_differ_from_their_leader():
    chain = _chain()
    masks = [torch.ones(p.shape, dtype=torch.bool) for p in chain.params]
    masks[1][2, 1, 0] = False  # one weight, not a channel
    with pytest.raises(ValueError, match="^" + re.escape("masks['b']: not channel-structured (expected outer(kept "
                                                         "output channels, kept input channels))") + "$"):
        ChannelStructure(chain.layers, chain.params).load_masks(masks)
    masks[1][2] = False  # now a whole channel; out's columns 4 and 5 still active: not implied by b
    with pytest.raises(ValueError, match=r"^masks\['out'\]: not channel-structured"):
        ChannelStructure(chain.layers, chain.params).load_masks(masks)

    res = _residual()
    masks = [torch.ones(p.shape, dtype=torch.bool) for p in res.params]
    masks[1][3] = False
    with pytest.raises(ValueError, match="^" + re.escape("masks['m']: must keep the same output channels as "
                                                         "masks['s'] (their outputs are added)") + "$"):
        ChannelStructure(res.layers, res.params).load_masks(masks)
    masks[0][3] = False
    masks[1][:, 3] = False  # m and n consume the stream
    masks[2][:, 3] = False
    cs = ChannelStructure(res.layers, res.params)
    cs.load_masks(masks)  # the unit drops channel 3 together
    assert cs.counts == [3, 3, 3, 2]


def test_describe_names_residual_groups_and_why_a_layer_keeps_its_channels():
    res = _residual()
    cs = ChannelStructure(res.layers, res.params)
    _set_keep(cs, [1, 1, 0, 1], [1, 1, 0, 1], [1, 0, 1], [1, 1])
    assert cs.describe() == {
        "s": {"channels": 3, "out_channels": 4, "residual_group": "s"},
        "m": {"channels": 3, "out_channels": 4, "residual_group": "s"},
        "n": {"channels": 2, "out_channels": 3},
        "o": {"channels": 2, "out_channels": 2, "kept_because": OUTPUT},
    }


def _momentum(params) -> SimpleNamespace:
    """What the channel code reads of an optimizer: ``state[tensor]``, here SGD's momentum, all 1
    (a stand-in: building a torch optimizer first imports torch._dynamo, seconds per process)."""
    return SimpleNamespace(state={p: {"momentum_buffer": torch.ones_like(p)} for p in params})


def test_apply_zeroes_removed_channels_and_the_state_of_every_masked_position():
    chain = _chain()
    cs = ChannelStructure(chain.layers, chain.params)
    masks = _set_keep(cs, [1, 0, 1, 1], [1, 1, 0, 1, 1, 1], [1, 1])
    extras = [chain.bias_a, chain.bn.weight, chain.bn.bias, chain.bias_b]
    before = [t.detach().clone() for t in extras]
    opt = _momentum([*chain.params, *extras, chain.dense])
    cs.apply(opt, masks)
    for t, old in zip(extras[:3], before[:3]):  # a's channel 1: bias, BatchNorm weight and bias
        assert t[1] == 0 and torch.equal(t[[0, 2, 3]], old[[0, 2, 3]])
        assert torch.equal(opt.state[t]["momentum_buffer"], _b(1, 0, 1, 1).float())
    assert chain.bias_b[2] == 0 and torch.equal(chain.bias_b[[0, 1, 3, 4, 5]], before[3][[0, 1, 3, 4, 5]])
    assert torch.equal(opt.state[chain.bias_b]["momentum_buffer"], _b(1, 1, 0, 1, 1, 1).float())
    for p, m in zip(chain.params, masks):  # out keeps all rows, but b's channel 2 columns are masked
        assert torch.equal(opt.state[p]["momentum_buffer"], m.float())
    assert bool(opt.state[chain.dense]["momentum_buffer"].all())  # not a sparse weight: untouched

    cs.apply(None, masks)  # without an optimizer: the parameters only


def test_apply_masks_adam_moments_and_leaves_its_step_count():
    chain = _chain()
    cs = ChannelStructure(chain.layers, chain.params)
    masks = _set_keep(cs, [1, 1, 0, 1], [1, 1, 1, 1, 1, 1], [1, 1])
    opt = SimpleNamespace(state={t: {"step": torch.tensor(3.0), "exp_avg": torch.ones_like(t),  # Adam's state
                                     "exp_avg_sq": torch.ones_like(t)} for t in (*chain.params, chain.bias_a)})
    cs.apply(opt, masks)
    for t, m in ((chain.params[0], masks[0]), (chain.params[1], masks[1]), (chain.bias_a, _b(1, 1, 0, 1))):
        assert torch.equal(opt.state[t]["exp_avg"], m.float()) and torch.equal(opt.state[t]["exp_avg_sq"], m.float())
        assert float(opt.state[t]["step"]) == 3.0
    assert [v.shape for v in _state(opt, chain.bias_a)] == [(4,), (4,)]
    assert _state(None, chain.bias_a) == [] and _state(opt, chain.dense) == []


def test_a_structure_that_removed_nothing_leaves_parameters_and_state_alone():
    chain = _chain()
    cs = ChannelStructure(chain.layers, chain.params)
    masks = [cs.mask(j) for j in range(3)]
    before = [t.detach().clone() for t in (*chain.params, chain.bias_a, chain.bn.weight)]
    opt = _momentum([*chain.params, chain.bias_a, chain.bn.weight])
    cs.apply(opt, masks)
    for t, old in zip((*chain.params, chain.bias_a, chain.bn.weight), before):
        assert torch.equal(t, old) and bool(opt.state[t]["momentum_buffer"].all())


# ------------------------------------------------------------------ scores


def test_score_is_bn_scale_times_l1_of_every_outgoing_column_block():
    chain = _chain()
    cs = ChannelStructure(chain.layers, chain.params)
    pb, pout, dense = chain.params[1], chain.params[2], chain.dense
    l1_a = pb.detach().abs().sum(dim=(0, 2)) + dense.detach().abs().sum(dim=0)  # b's kernels and the dense consumer
    assert torch.allclose(cs._score(0), chain.bn.weight.detach().abs() * l1_a, rtol=1e-6, atol=0)
    l1_b = pout.detach().abs().view(2, 6, 2).sum(dim=(0, 2))  # two columns of out per channel of b
    assert torch.allclose(cs._score(1), l1_b, rtol=1e-6, atol=0)
    assert cs._score(1).shape == (6,) and cs._score(2).shape == (2,) and not bool(cs._score(2).any())


def test_a_channel_with_two_batchnorms_scores_with_both_scales():
    chain = _chain()
    side = nn.BatchNorm1d(4)
    with torch.no_grad():
        side.weight.copy_(torch.tensor([-2.0, 0.5, 1.0, 4.0]))
    a = chain.layers[0]
    two = ChannelLayer("a", 4, 5, 1, consumers=a.consumers, outgoing=a.outgoing,
                       norms=[*a.norms, (side, torch.arange(4))])
    cs = ChannelStructure([two, *chain.layers[1:]], chain.params)
    one = ChannelStructure(chain.layers, chain.params)._score(0)
    assert torch.allclose(cs._score(0), one * torch.tensor([2.0, 0.5, 1.0, 4.0]), rtol=1e-6, atol=0)


def test_a_residual_unit_scores_with_the_mean_scale_of_the_streams_batchnorms():
    res = _residual()
    cs = ChannelStructure(res.layers, res.params)
    pm, pn = res.params[1].detach(), res.params[2].detach()
    l1 = pm.abs().sum(dim=0) + pn.abs().sum(dim=0)
    mean_scale = torch.tensor([2.0, 2.0, 2.0, 0.5])  # (|bn1| + |bn2|) / 2 per channel
    assert torch.allclose(cs._score(0), l1 * mean_scale, rtol=1e-6, atol=0)


# ------------------------------------------------------------------ updates


def _fresh_by_hand(layers, shapes, old_keep, new_keep, grown):
    """Positions that restart: active now and (inactive before, or in the row of a regrown channel,
    or in a column fed by a regrown channel)."""
    def keep_in(keep, j):
        k = torch.ones(layers[j].in_columns, dtype=torch.bool)
        for i, producer in enumerate(layers):
            for consumer, columns in producer.consumers:
                if consumer == j:
                    k[columns[~keep[i]].reshape(-1)] = False
        return k

    out = []
    for j, shape in enumerate(shapes):
        old = _outer(old_keep[j], keep_in(old_keep, j), shape)
        new = _outer(new_keep[j], keep_in(new_keep, j), shape)
        restart = _outer(grown[j], torch.ones(layers[j].in_columns, dtype=torch.bool), shape).clone()
        for i, producer in enumerate(layers):
            for consumer, columns in producer.consumers:
                if consumer == j:
                    cols = torch.zeros(layers[j].in_columns, dtype=torch.bool)
                    cols[columns[grown[i]].reshape(-1)] = True
                    restart |= _outer(torch.ones(shape[0], dtype=torch.bool), cols, shape)
        out.append((old, new, new & (~old | restart)))
    return out


def _chain_for_update():
    chain = _chain()
    cs = ChannelStructure(chain.layers, chain.params)
    masks = _set_keep(cs, [1, 1, 1, 0], [1, 1, 1, 1, 1, 0], [1, 1])
    # b's weights all 1: a's scores are |gamma| x 18 = 9, 36, 18; out's 0.5 makes b's channel 2 the weakest
    with torch.no_grad():
        chain.params[1].copy_(masks[1].float())
        chain.dense.fill_(1.0)
        chain.params[2].copy_(masks[2].float())
        chain.params[2][:, 4:6] = 0.5
    return chain, cs, masks


def test_update_prunes_the_weakest_channel_and_regrows_the_removed_one_with_known_weights():
    chain, cs, masks = _chain_for_update()
    before = [p.detach().clone() for p in chain.params]
    extras = [chain.bias_a, chain.bn.weight, chain.bn.bias, chain.bias_b]
    opt = _momentum([*chain.params, *extras])
    old_masks = [m.clone() for m in masks]
    moved, restarted, fresh = cs.update(0.2, masks, opt, torch.Generator().manual_seed(7), regrow_pruned=False)

    # a: ceil(0.2 * 3) = 1 channel; the weakest (0, score 9) goes, the only removed one (3) comes back
    assert torch.equal(cs.keep_out[0], _b(0, 1, 1, 1)) and torch.equal(cs.keep_out[1], _b(1, 1, 0, 1, 1, 1))
    assert cs.counts == [3, 5, 2]
    # fresh: a's row 3 (5), b's row 5 and column 3 (7 pairs x 3), out's columns 10-11 (2 x 2)
    assert (moved, restarted) == (5 + 21 + 4, 0)
    grown = [_b(0, 0, 0, 1), _b(0, 0, 0, 0, 0, 1), _b(0, 0)]
    old_keep = [_b(1, 1, 1, 0), _b(1, 1, 1, 1, 1, 0), _b(1, 1)]
    by_hand = _fresh_by_hand(cs.layers, [p.shape for p in chain.params], old_keep,
                             [cs.keep_out[0], cs.keep_out[1], _b(1, 1)], grown)
    for j, (old, new, fresh_j) in enumerate(by_hand):
        assert torch.equal(old_masks[j], old) and torch.equal(masks[j], new) and torch.equal(fresh[j], fresh_j)
        assert torch.equal(opt.state[chain.params[j]]["momentum_buffer"], (new & ~fresh_j).float())

    # the regrown rows' incoming weights: N(0, std of the layer's surviving weights), from the generator;
    # b's survivors are all 1 (std 0), so b falls back to sqrt(2 / fan_in), fan_in = 4 columns x 3
    g = torch.Generator().manual_seed(7)
    torch.randperm(1, generator=g)
    torch.randperm(1, generator=g)  # the regrowth draws of a and b
    draw_a = torch.randn((1, 5), generator=g) * float(before[0][1:3].std())
    draw_b = torch.randn((1, 4, 3), generator=g) * math.sqrt(2 / 12)
    pa, pb, pout = (p.detach() for p in chain.params)
    assert torch.equal(pa[3], draw_a[0]) and torch.equal(pa[1:3], before[0][1:3]) and not bool(pa[0].any())
    assert torch.equal(pb[5, 1:], draw_b[0, 1:]) and not bool(pb[5, 0].any())  # a's channel 0 is gone
    assert not bool(pb[:5, 3].any())  # columns fed by a's regrown channel start at 0
    assert torch.equal(pb[[0, 1, 3, 4]][:, 1:3], before[1][[0, 1, 3, 4]][:, 1:3]) and not bool(pb[2].any())
    assert not bool(pout[:, 10:].any()) and not bool(pout[:, 4:6].any())
    assert torch.equal(pout[:, [0, 1, 2, 3, 6, 7, 8, 9]], before[2][:, [0, 1, 2, 3, 6, 7, 8, 9]])
    # the regrown channels' bias 0, BatchNorm weight 1 / bias 0 / statistics reset, their state 0
    assert chain.bias_a[3] == 0 and chain.bias_b[5] == 0 and chain.bn.weight[3] == 1 and chain.bn.bias[3] == 0
    assert chain.bn.running_mean[3] == 0 and chain.bn.running_var[3] == 1
    assert torch.equal(chain.bn.weight.detach()[:3], torch.tensor([0.5, 2.0, 1.0]))
    assert torch.equal(chain.bn.running_var[:3], torch.tensor([5.0, 6.0, 7.0]))
    for t, row in ((chain.bias_a, 3), (chain.bn.weight, 3), (chain.bn.bias, 3), (chain.bias_b, 5)):
        expected = torch.ones_like(t)
        expected[row] = 0
        assert torch.equal(opt.state[t]["momentum_buffer"], expected)


def test_regrowth_is_reproducible_from_the_generator_alone():
    results = []
    for global_seed in (0, 1):
        chain, cs, masks = _chain_for_update()
        torch.manual_seed(global_seed)
        cs.update(0.5, masks, None, torch.Generator().manual_seed(5), regrow_pruned=True)
        results.append(([k.clone() for k in cs.keep_out], [p.detach().clone() for p in chain.params]))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("seed", range(6))
def test_channels_pruned_and_regrown_at_once_restart_like_new_ones(seed):
    """regrow_pruned=True: the weakest channel may come straight back; its weights, outgoing
    columns and state restart all the same, and those positions count as restarted."""
    chain, cs, masks = _chain_for_update()
    before = [p.detach().clone() for p in chain.params]
    old_keep = [k.clone() for k in cs.keep_out]
    opt = _momentum(chain.params)
    moved, restarted, fresh = cs.update(0.2, masks, opt, torch.Generator().manual_seed(seed), regrow_pruned=True)
    survivors = [_b(0, 1, 1, 0), _b(1, 1, 0, 1, 1, 0), _b(1, 1)]  # channels 0 of a and 2 of b were pruned
    grown = [cs.keep_out[j] & ~survivors[j] for j in range(3)]
    assert [int(g.sum()) for g in grown] == [1, 1, 0]
    by_hand = _fresh_by_hand(cs.layers, [p.shape for p in chain.params], old_keep, cs.keep_out, grown)
    assert moved == sum(int(f.sum()) for _, _, f in by_hand)
    assert restarted == sum(int((f & old).sum()) for old, _, f in by_hand)
    for j, (old, new, fresh_j) in enumerate(by_hand):
        assert torch.equal(fresh[j], fresh_j) and torch.equal(masks[j], new)
        p = chain.params[j].detach()
        rows = _outer(grown[j], torch.ones(p.shape[1], dtype=torch.bool), p.shape)
        assert not bool(p[fresh_j & ~rows].any()) and not bool(p[~new].any())
        assert bool(p[fresh_j & rows].all())  # drawn afresh (nonzero almost surely)
        assert torch.equal(p[new & ~fresh_j], before[j][new & ~fresh_j])
        assert torch.equal(opt.state[chain.params[j]]["momentum_buffer"], (new & ~fresh_j).float())


def test_pruned_and_regrown_in_place_counts_as_restarted():
    outcomes = set()
    for seed in range(6):
        chain, cs, masks = _chain_for_update()
        _, restarted, _ = cs.update(0.2, masks, None, torch.Generator().manual_seed(seed), regrow_pruned=True)
        back_a, back_b = bool(cs.keep_out[0][0]), bool(cs.keep_out[1][2])
        # a's channel 0 back: its row (5) and b's column 0 in b's rows active before and after (4 x 3, or
        # 5 x 3 with b's channel 2 back too); b's channel 2 back: its row in b's columns active before
        # and after (2 x 3, or 3 x 3 with a's channel 0 back; b[2, 0] counted once) and out's 2 x 2
        expected = {(False, False): 0, (True, False): 5 + 12, (False, True): 6 + 4, (True, True): 5 + 15 + 6 + 4}
        expected = expected[back_a, back_b]
        assert restarted == expected
        outcomes.add((back_a, back_b))
    assert len(outcomes) >= 3  # the seeds cover in-place and moved regrowth


def test_without_regrowing_pruned_channels_at_most_the_removed_ones_move():
    chain, cs, masks = _chain_for_update()
    moved, _, _ = cs.update(0.9, masks, None, torch.Generator().manual_seed(0), regrow_pruned=False)
    # a: ceil(0.9 * 3) = 3, but only one channel is removed: one channel moves; b likewise
    assert torch.equal(cs.keep_out[0], _b(0, 1, 1, 1)) and torch.equal(cs.keep_out[1], _b(1, 1, 0, 1, 1, 1))
    assert moved == 30
    chain, cs, masks = _chain_for_update()
    cs.update(0.9, masks, None, torch.Generator().manual_seed(0), regrow_pruned=True)
    assert cs.counts == [3, 5, 2]  # counts never change; three of a's channels were candidates to go


def test_nothing_moves_at_fraction_zero_or_in_whole_and_kept_layers():
    chain, cs, masks = _chain_for_update()
    before = [p.detach().clone() for p in chain.params]
    assert cs.update(0.0, masks, None, torch.Generator().manual_seed(0), regrow_pruned=True)[:2] == (0, 0)
    assert all(torch.equal(p, b) for p, b in zip(chain.params, before))
    chain = _chain()
    cs = ChannelStructure(chain.layers, chain.params)
    masks = [cs.mask(j) for j in range(3)]
    moved, restarted, fresh = cs.update(0.5, masks, None, torch.Generator().manual_seed(0), regrow_pruned=True)
    assert (moved, restarted) == (0, 0) and not any(bool(f.any()) for f in fresh)
    assert cs.counts == [4, 6, 2]


def test_a_residual_unit_moves_as_one_and_every_producer_restarts_the_regrown_channel():
    res = _residual()
    cs = ChannelStructure(res.layers, res.params)
    masks = _set_keep(cs, [1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0], [1, 1])
    with torch.no_grad():
        for p, m in zip(res.params[1:], masks[1:]):
            p.copy_(m.float() * 2.0)  # equal consumer weights: ties go to the lower index
    before = [p.detach().clone() for p in res.params]
    moved, _, _ = cs.update(0.3, masks, None, torch.Generator().manual_seed(1), regrow_pruned=False)
    assert torch.equal(cs.keep_out[0], _b(0, 1, 1, 1)) and torch.equal(cs.keep_out[1], _b(0, 1, 1, 1))
    assert torch.equal(cs.keep_out[2], _b(0, 1, 1))
    g = torch.Generator().manual_seed(1)
    torch.randperm(1, generator=g)
    torch.randperm(1, generator=g)  # regrowth draws: the unit (once, by its leader), then n
    ps, pm, pn, po = (p.detach() for p in res.params)
    draw_s = torch.randn((1, 3), generator=g) * float(before[0][1:3].std())
    draw_m = torch.randn((1, 4), generator=g) * math.sqrt(2 / 4)  # m's survivors are all 2: std 0, fan-in rule
    assert torch.equal(ps[3], draw_s[0])
    assert torch.equal(pm[3, 1:], draw_m[0, 1:]) and pm[3, 0] == 0  # the member restarts the unit's channel
    assert not bool(pm[:3, 3].any()) and not bool(pn[:2, 3].any())  # columns fed by the regrown channel
    assert pn[2, 3] != 0  # ... except in n's own regrown row
    # s's row 3; m's row 3 and column 3 (3 + 2); n's row 2 and column 3 (3 + 1); o's column 2 (2 rows)
    assert moved == 3 + 5 + 4 + 2


def _one_layer(out: int, rows: list[list[float]]) -> tuple[ChannelStructure, list[torch.Tensor], nn.Parameter]:
    """Layer ``c`` (out x in) keeping all but its last channel, feeding a kept 1 x out layer whose
    weights 1, 2, 3, ... make channel 0 the weakest."""
    pc = nn.Parameter(torch.zeros(out, len(rows[0])))
    with torch.no_grad():
        pc[:len(rows)] = torch.tensor(rows)
    po = nn.Parameter(torch.arange(1.0, out + 1).view(1, out))
    cols = torch.arange(out).view(out, 1)
    layers = [ChannelLayer("c", out, len(rows[0]), 1, consumers=[(1, cols)], outgoing=[(po, cols)]),
              ChannelLayer("o", 1, out, 1, kept_reason=OUTPUT)]
    cs = ChannelStructure(layers, [pc, po])
    masks = _set_keep(cs, [1] * (out - 1) + [0], [1])
    return cs, masks, pc


@pytest.mark.parametrize("out, rows, std", [
    (2, [[0.7]], math.sqrt(2.0)),  # no survivor: sqrt(2 / fan_in), fan_in 1
    (3, [[0.7, 0.1], [1.0, 3.0]], math.sqrt(2.0)),  # two survivors: their std, sqrt(2)
    (3, [[0.7, 0.1], [2.0, 2.0]], 1.0),  # survivors all equal (std 0): sqrt(2 / 2)
    (3, [[0.7, 0.1], [1.0, math.inf]], 1.0),  # a non-finite std: sqrt(2 / 2)
])
def test_regrown_weights_scale_with_the_survivors_or_the_fan_in(out, rows, std):
    cs, masks, pc = _one_layer(out, rows)
    cs.update(0.5, masks, None, torch.Generator().manual_seed(3), regrow_pruned=False)
    assert torch.equal(cs.keep_out[0], torch.tensor([False] + [True] * (out - 1)))
    g = torch.Generator().manual_seed(3)
    torch.randperm(1, generator=g)
    draw = torch.randn((1, len(rows[0])), generator=g) * std
    assert torch.equal(pc.detach()[out - 1], draw[0])
    assert torch.equal(pc.detach()[1:out - 1], torch.tensor(rows[1:]).view(-1, len(rows[0])))
    assert not bool(pc.detach()[0].any()) and not torch.signbit(pc.detach()[0]).any()  # +0.0, not -0.0


def test_batchnorms_without_affine_parameters_or_statistics_are_skipped():
    cs, masks, pc = _one_layer(3, [[1.0, 2.0], [3.0, 4.0]])
    plain = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    cs.layers[0].norms.append((plain, torch.arange(3)))
    assert torch.allclose(cs._score(0), torch.tensor([1.0, 2.0, 0.0]))  # no scale to multiply by
    cs.update(0.5, masks, None, torch.Generator().manual_seed(0), regrow_pruned=False)
    assert cs.counts == [2, 1]


# ------------------------------------------------------------------ one-shot channel pruning (PF)


def test_one_shot_channel_pruning_keeps_the_largest_l1_rows_summed_over_a_unit():
    model = ResidualUnit()
    with torch.no_grad():  # row L1 norms: stem 6..1; a adds 10 to rows 4 and 5; b 1, 5, 3, 4, 2
        model.stem.weight.copy_(torch.arange(6, 0, -1.0).view(6, 1).expand(6, 4) / 4)
        model.a.weight.zero_()
        model.a.weight[4:] = 10 / 6
        model.b.weight.copy_(torch.tensor([1.0, 5.0, 3.0, 4.0, 2.0]).view(5, 1).expand(5, 6) / 6)
        model.b.weight[2, 0] = -model.b.weight[2, 0]  # the norm takes |w|
    named = [(n, p) for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 2]
    x = torch.zeros(2, 4)
    counts = allocate_channels(build_channel_layers(model, named, x), 0.6, "uniform")
    assert counts[0] == counts[1] and 1 <= counts[0] < 6 and 1 <= counts[2] < 5 and counts[3] == 3
    masks = magnitude_channel_masks(model, named, 0.6, "uniform", x)
    assert list(masks) == [n for n, _ in named]
    order_unit, order_b = [4, 5, 0, 1, 2, 3], [1, 3, 2, 4, 0]  # summed L1 16, 15, 6, 5, 4, 3 / 5, 4, 3, 2, 1
    keep_unit = torch.zeros(6, dtype=torch.bool)
    keep_unit[order_unit[:counts[0]]] = True
    keep_b = torch.zeros(5, dtype=torch.bool)
    keep_b[order_b[:counts[2]]] = True
    assert torch.equal(masks["stem.weight"], _outer(keep_unit, torch.ones(4, dtype=torch.bool), (6, 4)))
    assert torch.equal(masks["a.weight"], _outer(keep_unit, keep_unit, (6, 6)))
    assert torch.equal(masks["b.weight"], _outer(keep_b, keep_unit, (5, 6)))
    assert torch.equal(masks["out.weight"], _outer(torch.ones(3, dtype=torch.bool), keep_b, (3, 5)))
    # the planned densities (flops command) are those of any mask with these counts
    assert channel_densities(model, named, 0.6, "uniform", x) == {n: int(m.sum()) / m.numel() for n, m in masks.items()}


def test_planned_densities_count_the_flattened_columns_a_removed_channel_feeds():
    """CNN1d: conv2's channels each feed 16 columns of fc; the planned densities are the masks'."""
    model = CNN1d()
    named = [(n, p) for n, p in model.named_parameters() if n.endswith("weight") and p.dim() >= 2]
    x = torch.zeros(2, *model.input_shape)
    masks = magnitude_channel_masks(model, named, 0.7, "erk", x)
    assert int(masks["fc.weight"][0].sum()) < 192  # removed channels of conv2 took whole column blocks
    assert channel_densities(model, named, 0.7, "erk", x) == {n: int(m.sum()) / m.numel() for n, m in masks.items()}
