"""Channel-structured masks (``SparseEngine(structure="channel")``): the channel contract.

Invariants checked exactly: per-layer channel counts from the allocation; every mask equals
outer(kept output channels, kept input columns); removed channels are exactly 0 in weights, bias,
BatchNorm affine parameters and optimizer state after steps and updates; the masked network
equals the physically smaller one that torch-pruning cuts out of it; resume is bitwise.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

from freetickets.models import create_model
from freetickets.sparse import SparseEngine
from freetickets.sparse.channels import allocate_channels, build_channel_layers
from freetickets.sparse.params import sparsifiable_parameters

SHAPES = {"mlp": (1, 40), "cnn1d": (1, 40), "lenet5": (1, 28, 28), "wrn-16-2": (3, 32, 32), "wrn-10-2": (3, 16, 16),
          "resnet18": (3, 8, 8), "vgg16": (3, 32, 32)}


def _setup(name: str, *, sparsity: float = 0.8, seed: int = 0, **engine_kwargs):
    torch.manual_seed(seed)
    shape = SHAPES[name]
    model = create_model(name, num_classes=10, input_shape=shape)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    engine = SparseEngine(model, opt, sparsity=sparsity, structure="channel", example_inputs=torch.zeros(2, *shape),
                          seed=seed, **engine_kwargs)
    return model, opt, engine, shape


def _train(model, opt, engine, shape, steps: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, *shape, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        engine.step()
        opt.zero_grad()


def _keep_out(engine) -> dict[str, torch.Tensor]:
    return {n: m.reshape(m.shape[0], -1).any(dim=1) for n, m in engine.masks.items()}


def _assert_contract(model, opt, engine) -> None:
    """Masks are outer products; removed channels and their state are exactly 0 everywhere."""
    channels = engine._channels
    named = dict(model.named_parameters())
    for j, (name, mask) in enumerate(engine.masks.items()):
        keep_out = channels.keep_out[j]
        keep_in = channels.keep_in(j)
        extra = (1,) * (mask.dim() - 2)
        expected = (keep_out.view(-1, 1, *extra) & keep_in.view(1, -1, *extra)).expand(mask.shape)
        assert torch.equal(mask, expected), name
        assert int(keep_out.sum()) == channels.counts[j]
        w = named[name]
        assert torch.all(w[~mask] == 0), name
        for value in opt.state.get(w, {}).values():
            if isinstance(value, torch.Tensor) and value.shape == w.shape:
                assert torch.all(value[~mask] == 0), name
        for tensor, idx in channels.layers[j].extras:
            assert torch.all(tensor[idx[~keep_out]] == 0), name
            for value in opt.state.get(tensor, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == tensor.shape:
                    assert torch.all(value[idx[~keep_out]] == 0), name


def _slim_copy(model, engine, shape) -> nn.Module:
    """Physically remove the masked-out output channels with torch-pruning (one call per
    pruning group: the producers of a residual group are cut once, by the first of them)."""
    slim = copy.deepcopy(model).eval()
    modules = dict(slim.named_modules())
    dg = tp.DependencyGraph().build_dependency(slim, example_inputs=torch.zeros(2, *shape))
    for j, (name, keep) in enumerate(_keep_out(engine).items()):
        removed = (~keep).nonzero().view(-1).tolist()
        if not removed or engine._channels.layers[j].leader is not None:
            continue
        module = modules[name.rsplit(".", 1)[0]]
        fn = tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels
        dg.get_pruning_group(module, fn, idxs=removed).prune()
    return slim


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_initial_counts_are_the_allocation_and_hit_the_target(name):
    model, opt, engine, shape = _setup(name)
    named = sparsifiable_parameters(model)
    layers = build_channel_layers(model, named, torch.zeros(2, *shape))
    counts = allocate_channels(layers, 0.8, "erk")
    assert engine._channels.counts == counts
    assert [int(k.sum()) for k in _keep_out(engine).values()] == counts
    # the total is as close to the target as one more/fewer channel of the widest block allows
    total = sum(int(m.sum()) for m in engine.masks.values())
    numel = sum(m.numel() for m in engine.masks.values())
    block = max(m[0].numel() for m in engine.masks.values())
    assert abs(total - round(0.2 * numel)) <= block
    assert engine.stats()["channels"]["classifier.weight"]["kept_because"] == "it produces the model's output"
    _assert_contract(model, opt, engine)


def test_flatten_removes_whole_blocks_of_linear_columns():
    model, _, engine, _ = _setup("cnn1d")
    last_conv = [n for n in engine.masks if n.startswith("features")][-1]
    keep = _keep_out(engine)[last_conv]
    cols = engine.masks["classifier.weight"][0]
    per_channel = cols.numel() // keep.numel()
    assert per_channel > 1
    assert torch.equal(cols.view(keep.numel(), per_channel), keep.view(-1, 1).expand(-1, per_channel))


@pytest.mark.parametrize("name", ["mlp", "cnn1d", "lenet5", "wrn-16-2", "resnet18",
                                  pytest.param("vgg16", marks=pytest.mark.slow)])
def test_masked_network_equals_the_physically_smaller_one(name):
    model, opt, engine, shape = _setup(name, update_interval=2)
    _train(model, opt, engine, shape, steps=3)
    engine.update_topology(0.5)
    _assert_contract(model, opt, engine)
    _train(model, opt, engine, shape, steps=1)
    slim = _slim_copy(model, engine, shape)
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), slim(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_updates_move_channels_and_keep_everything_exact(name):
    model, opt, engine, shape = _setup(name, update_interval=2, regrow_pruned=False)
    before = {n: k.clone() for n, k in _keep_out(engine).items()}
    _train(model, opt, engine, shape, steps=4)
    assert engine.update_count == 2
    engine.update_topology(0.8)
    after = _keep_out(engine)
    moved = [n for n in before if not torch.equal(before[n], after[n])]
    assert moved, "an update must move channels"
    for n in before:  # exact counts never change
        assert int(before[n].sum()) == int(after[n].sum())
    _assert_contract(model, opt, engine)
    _train(model, opt, engine, shape, steps=3)
    _assert_contract(model, opt, engine)
    assert engine.pruned_total == engine.regrown_total > 0


def test_regrown_channel_starts_with_zero_outgoing_columns_and_unit_bn():
    model, opt, engine, shape = _setup("mlp", update_interval=None, regrow_pruned=False)
    _train(model, opt, engine, shape, steps=2)
    first = "features.1.weight"
    before = _keep_out(engine)[first].clone()
    before_next = _keep_out(engine)["features.4.weight"].clone()
    model.eval()
    x = torch.randn(5, *shape)
    with torch.no_grad():
        out_before = model(x)
    engine.update_topology(1e-9)  # one channel per removable layer
    grown = _keep_out(engine)[first] & ~before
    assert int(grown.sum()) == 1
    params = dict(model.named_parameters())
    old_rows = _keep_out(engine)["features.4.weight"] & before_next
    assert torch.all(params["features.4.weight"][old_rows][:, grown] == 0)  # outgoing columns start at 0
    grown_next = _keep_out(engine)["features.4.weight"] & ~before_next
    assert torch.all(params["classifier.weight"][:, grown_next] == 0)
    assert torch.all(model.features[2].weight[grown] == 1) and torch.all(model.features[2].bias[grown] == 0)
    assert float(params[first].detach()[grown].abs().sum()) > 0  # fresh incoming weights: the channel can learn
    # a regrown channel contributes exactly 0 to the output when it grows: silencing it changes nothing
    silent = copy.deepcopy(model)
    with torch.no_grad():
        for lin, bn, g in ((silent.features[1], silent.features[2], grown), (silent.features[4], silent.features[5], grown_next)):
            lin.weight[g] = 0
            bn.weight[g] = 0
            bn.bias[g] = 0
        assert torch.equal(model(x), silent(x))
        assert not torch.equal(model(x), out_before)  # pruning did change it


@pytest.mark.parametrize("name", ["cnn1d", "wrn-10-2"])
def test_resume_is_bitwise(name):
    model, opt, engine, shape = _setup(name, update_interval=2)
    _train(model, opt, engine, shape, steps=3)
    state = copy.deepcopy((model.state_dict(), opt.state_dict(), engine.state_dict()))
    _train(model, opt, engine, shape, steps=4, seed=7)

    model2, opt2, engine2, _ = _setup(name, update_interval=2, seed=0)
    model2.load_state_dict(state[0])
    opt2.load_state_dict(state[1])
    engine2.load_state_dict(state[2])
    _train(model2, opt2, engine2, shape, steps=4, seed=7)
    for (n, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), n
    assert engine.mask_checksum() == engine2.mask_checksum()


def test_same_counts_for_every_seed_and_exclude_keeps_layer_dense():
    counts = [_setup("cnn1d", seed=s)[2]._channels.counts for s in (0, 1)]
    assert counts[0] == counts[1]
    model, opt, engine, shape = _setup("cnn1d", exclude=["features.0.weight"])
    assert "features.0.weight" not in engine.masks
    _train(model, opt, engine, shape, steps=1)
    _assert_contract(model, opt, engine)


def test_bad_arguments_are_value_errors():
    model = create_model("mlp", num_classes=10, input_shape=(1, 40))
    with pytest.raises(ValueError, match="structure must be one of"):
        SparseEngine(model, None, sparsity=0.8, structure="block")
    with pytest.raises(ValueError, match="example_inputs"):
        SparseEngine(model, None, sparsity=0.8, structure="channel")
    with pytest.raises(ValueError, match="grow"):
        SparseEngine(model, None, sparsity=0.8, structure="channel", grow="momentum",
                     example_inputs=torch.zeros(2, 1, 40))
    unstructured = SparseEngine(model, None, sparsity=0.8).masks
    with pytest.raises(ValueError, match="not channel-structured"):
        SparseEngine(model, None, masks=unstructured, structure="channel", example_inputs=torch.zeros(2, 1, 40))


@pytest.mark.parametrize("name", ["cnn1d", "lenet5", "wrn-10-2"])
def test_density_flops_equal_flop_counter_on_the_slim_network(name):
    """Oracle: FLOPs counted by density (flops/) are exactly FlopCounterMode's on the slim network."""
    from torch.utils.flop_counter import FlopCounterMode

    from freetickets.flops.counter import dense_layer_flops
    from freetickets.flops.training import forward_flops
    from freetickets.sparse.channels import channel_densities

    model, opt, engine, shape = _setup(name, update_interval=None)
    layer_flops = dense_layer_flops(model, shape)
    slim = _slim_copy(model, engine, shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        slim(torch.zeros(1, *shape))
    assert forward_flops(layer_flops, engine.densities()) == pytest.approx(counter.get_total_flops(), rel=1e-12)
    planned = channel_densities(model, sparsifiable_parameters(model), 0.8, "erk", torch.zeros(2, *shape))
    assert planned == pytest.approx(engine.densities(), rel=1e-12)


def test_prune_takes_the_channel_with_the_smallest_bn_scale_times_outgoing_l1():
    model, opt, engine, shape = _setup("mlp", update_interval=None, regrow_pruned=False)
    _train(model, opt, engine, shape, steps=2)
    keep = _keep_out(engine)["features.1.weight"].clone()
    kept = keep.nonzero().view(-1)
    weak, strong_gamma = int(kept[3]), int(kept[0])
    with torch.no_grad():
        model.features[2].weight[weak] = 1e-3  # small BatchNorm scale
        model.features[2].weight[strong_gamma] = 1e-3
        model.features[4].weight[:, strong_gamma] *= 1e6  # ... but huge outgoing weights: kept
    engine.update_topology(1e-9)  # k = 1 per layer
    after = _keep_out(engine)["features.1.weight"]
    assert not after[weak] and after[strong_gamma]
    assert int(after.sum()) == int(keep.sum())


def test_unstructured_stays_the_default_and_unchanged():
    def engine(**kw):
        torch.manual_seed(0)
        model = create_model("cnn1d", num_classes=10, input_shape=(1, 40))
        return SparseEngine(model, None, sparsity=0.8, seed=3, **kw), model

    (a, ma), (b, mb) = engine(), engine(structure="unstructured")
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values()))
    assert "structure" not in a.state_dict()["config"] and "channels" not in a.stats()
    rows_mixed = any(0 < int(m.reshape(m.shape[0], -1).any(dim=1).sum()) and
                     not torch.equal(m.reshape(m.shape[0], -1).any(dim=1), m.reshape(m.shape[0], -1).all(dim=1))
                     for m in a.masks.values())
    assert rows_mixed  # unstructured masks are not channel masks


def _residual_units(engine) -> list[list[int]]:
    layers = engine._channels.layers
    return [[j, *layer.members] for j, layer in enumerate(layers) if layer.members]


@pytest.mark.parametrize("name", ["wrn-10-2", "wrn-16-2", "resnet18"])
def test_residual_groups_shrink_jointly_and_equal_the_slim_member(name):
    """Every producer of a residual stream removes the same channels; the stream really shrinks;
    the masked network equals ensembles.slim's physically smaller member after updates."""
    from freetickets.ensembles.slim import slim_member

    model, opt, engine, shape = _setup(name, update_interval=2)
    units = _residual_units(engine)
    assert units and all(len(unit) >= 2 for unit in units)
    channels = engine._channels

    def check_units() -> None:
        for unit in units:
            first = channels.keep_out[unit[0]]
            assert 0 < int(first.sum()) < first.numel(), channels.layers[unit[0]].name  # the stream shrinks
            for j in unit[1:]:
                assert torch.equal(channels.keep_out[j], first), channels.layers[j].name

    check_units()
    before = [channels.keep_out[unit[0]].clone() for unit in units]
    _train(model, opt, engine, shape, steps=3)
    engine.update_topology(0.5)
    assert any(not torch.equal(b, channels.keep_out[u[0]]) for b, u in zip(before, units)), "units must move"
    check_units()
    _assert_contract(model, opt, engine)
    _train(model, opt, engine, shape, steps=1)
    _assert_contract(model, opt, engine)
    slim = slim_member(model, dict(engine.masks), shape, check=False)
    slim_params = dict(slim.named_parameters())
    for unit in units:  # every producer of the stream is physically smaller, by the same channels
        for j in unit:
            name_j = channels.layers[j].name
            assert slim_params[name_j].shape[0] == channels.counts[j] < channels.layers[j].out_channels, name_j
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), slim(x), atol=1e-4, rtol=1e-4)


def test_residual_group_regrowth_restarts_every_bn_and_leaves_the_output_unchanged():
    model, opt, engine, shape = _setup("wrn-10-2", update_interval=None, regrow_pruned=False)
    _train(model, opt, engine, shape, steps=2)
    channels = engine._channels
    unit = _residual_units(engine)[0]
    before = channels.keep_out[unit[0]].clone()
    model.eval()
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(2))
    names = [channels.layers[j].name for j in unit]
    kept_before = {n: channels.keep_out[j].clone() for n, j in zip(names, unit)}
    engine.update_topology(1e-9)  # one channel per unit
    grown = channels.keep_out[unit[0]] & ~before
    assert int(grown.sum()) == 1
    for n, j in zip(names, unit):
        assert torch.equal(channels.keep_out[j] & ~kept_before[n], grown), n
    norms = channels.layers[unit[0]].norms
    assert norms  # the BatchNorm(s) normalising the stream
    for norm, idx in norms:
        assert torch.all(norm.weight[idx[grown]] == 1) and torch.all(norm.bias[idx[grown]] == 0)
        assert torch.all(norm.running_mean[idx[grown]] == 0) and torch.all(norm.running_var[idx[grown]] == 1)
    # the regrown channel contributes exactly 0 to the output: silencing it in every producer changes nothing
    silent = copy.deepcopy(model)
    params = dict(silent.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n][grown] = 0
        assert torch.equal(model(x), silent(x))


def test_residual_group_counts_hit_the_target_and_mismatched_masks_are_refused():
    model, opt, engine, shape = _setup("wrn-16-2")
    total = sum(int(m.sum()) for m in engine.masks.values())
    numel = sum(m.numel() for m in engine.masks.values())
    block = max(m[0].numel() for m in engine.masks.values())
    assert abs(total - round(0.2 * numel)) <= block
    unit = _residual_units(engine)[0]
    masks = {n: m.clone() for n, m in engine.masks.items()}
    bad = engine._channels.layers[unit[1]].name
    row = int(engine._channels.keep_out[unit[1]].nonzero()[0])
    masks[bad][row] = False  # one producer drops a channel its group keeps
    with pytest.raises(ValueError, match="same output channels"):
        SparseEngine(model, None, masks=masks, structure="channel", example_inputs=torch.zeros(2, *shape))
