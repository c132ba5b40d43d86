"""The efficient-ensemble model forms (MIMO, BatchEnsemble, MC dropout): exact layouts and
member computations, and their FLOPs against FlopCounterMode and hand formulas."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from freetickets.errors import UserError
from freetickets.flops.efficient import form_forward_flops, rank1_flops
from freetickets.methods import get_recipe
from freetickets.models import create_model
from freetickets.models.efficient import (MIMO, BatchEnsemble, BatchEnsembleLayer, MCDropout, build_form,
                                          mimo_training_batch, tile_batch)
from freetickets.train.config import TrainConfig


def _mlp(d_in: int = 4, hidden: int = 8, classes: int = 3) -> nn.Module:
    """(B, 1, d_in) -> flatten -> Linear(d_in, hidden) -> ReLU -> Linear(hidden, classes)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def _oracle(fn) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return float(counter.get_total_flops())


# ---------------------------------------------------------------------------- MIMO
def test_mimo_widens_first_and_last_layer_only():
    torch.manual_seed(0)
    base = create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=8)
    convs = [m for m in base.modules() if isinstance(m, nn.Conv1d)]
    middle = convs[1].weight.detach().clone()
    form = MIMO(base, 3)
    convs = [m for m in form.modules() if isinstance(m, nn.Conv1d)]
    heads = [m for m in form.modules() if isinstance(m, nn.Linear)]
    assert convs[0].in_channels == 3 and convs[0].out_channels == 8
    assert torch.equal(convs[1].weight, middle)  # shared body keeps its weights
    assert heads[-1].out_features == 30
    x = torch.randn(5, 1, 40)
    form.eval()
    out = form.member_logits(x)
    assert out.shape == (3, 5, 10)
    # member k is head k of one forward on the input repeated 3 times
    flat = form.model(torch.cat([x, x, x], dim=1))
    assert torch.equal(out[1], flat[:, 10:20])


def test_mimo_training_batch_rows_targets_and_repetitions():
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1).expand(6, 2, 3).contiguous()  # example i is all i
    y = torch.arange(6)
    gen = torch.Generator().manual_seed(0)
    xs, ys = mimo_training_batch(x, y, 3, input_repetition_prob=0.0, batch_repetitions=2, generator=gen)
    assert xs.shape == (12, 6, 3) and ys.shape == (3, 12)
    for k in range(3):
        member_rows = xs[:, 2 * k:2 * k + 2, 0]  # (12, 2): both channels of member k's example
        assert torch.equal(member_rows[:, 0], ys[k].float())  # targets follow the member's own rows
        assert torch.equal(member_rows[:, 1], ys[k].float())
        assert sorted(ys[k].tolist()) == sorted(list(range(6)) * 2)  # each example exactly r = 2 times
    # rho = 1: every row holds the same example for every member
    _, ys1 = mimo_training_batch(x, y, 3, input_repetition_prob=1.0, batch_repetitions=1, generator=gen)
    assert torch.equal(ys1[0], ys1[1]) and torch.equal(ys1[1], ys1[2])
    # rho = 0.5 of 10 rows: exactly the last 5 rows shared
    x10, y10 = torch.zeros(10, 1, 2), torch.arange(10)
    _, ys5 = mimo_training_batch(x10, y10, 2, input_repetition_prob=0.5, generator=gen)
    assert torch.equal(ys5[0, 5:], ys5[1, 5:])
    # the same generator state gives the same batch
    a = mimo_training_batch(x, y, 3, generator=torch.Generator().manual_seed(7))
    b = mimo_training_batch(x, y, 3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_mimo_rejects_bases_it_cannot_widen():
    with pytest.raises(UserError, match="last layer"):
        MIMO(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), 2)
    with pytest.raises(UserError, match="members"):
        MIMO(_mlp(), 0)


# ---------------------------------------------------------------------------- BatchEnsemble
@pytest.mark.parametrize("layer", [nn.Linear(5, 4), nn.Conv1d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, groups=2)],
                         ids=["linear", "conv1d", "conv2d-grouped"])
def test_batchensemble_member_equals_its_rank1_weight(layer):
    torch.manual_seed(1)
    be = BatchEnsembleLayer(layer, 3, init="normal")
    with torch.no_grad():
        be.bias.normal_()
    shape = (2, 5) if isinstance(layer, nn.Linear) else ((2, 3, 7) if isinstance(layer, nn.Conv1d) else (2, 4, 6, 6))
    x = torch.randn(*shape)
    out = be(tile_batch(x, 3)).view(3, 2, *be(tile_batch(x, 3)).shape[1:])
    for k in range(3):
        w = be.member_weight(k)
        if isinstance(layer, nn.Linear):
            ref = F.linear(x, w, be.bias[k])
        else:
            conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
            ref = conv(x, w, be.bias[k], stride=layer.stride, padding=layer.padding, groups=layer.groups)
        torch.testing.assert_close(out[k], ref, rtol=1e-5, atol=1e-5)


def test_batchensemble_ones_init_gives_identical_members_and_tiles():
    torch.manual_seed(0)
    base = create_model("mlp", num_classes=10, input_shape=(1, 40), batch_norm=False)
    ref = create_model("mlp", num_classes=10, input_shape=(1, 40), batch_norm=False)
    ref.load_state_dict(base.state_dict())
    form = BatchEnsemble(base, 4, init="ones").eval()
    x = torch.randn(3, 1, 40)
    out = form.member_logits(x)
    assert out.shape == (4, 3, 10)
    for k in range(4):
        torch.testing.assert_close(out[k], ref.eval()(x), rtol=1e-5, atol=1e-6)
    assert torch.equal(tile_batch(torch.arange(3), 2), torch.tensor([0, 1, 2, 0, 1, 2]))
    with pytest.raises(ValueError, match="multiple of 4"):
        form(torch.randn(3, 1, 40))


# ---------------------------------------------------------------------------- MC dropout
def test_mcdropout_members_fixed_distinct_and_reproducible():
    torch.manual_seed(0)
    base = create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=8)
    state = base.state_dict()
    form = MCDropout(base, 0.3, 3, seed=5).eval()
    x = torch.randn(6, 1, 40)
    a = form.member_logits(x)
    assert a.shape == (3, 6, 10)
    assert torch.equal(a, form.member_logits(x))  # deterministic
    assert not torch.equal(a[0], a[1])  # members differ
    # independent of the other examples in the batch (eval BatchNorm, masks shared per example)
    torch.testing.assert_close(form.member_logits(x[2:3]), a[:, 2:3], rtol=1e-5, atol=1e-6)
    # the masks depend on (seed, member, layer) only: a fresh form with the same state agrees
    twin_base = create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=8)
    twin_base.load_state_dict(state)
    twin = MCDropout(twin_base, 0.3, 3, seed=5).eval()
    assert torch.equal(twin.member_logits(x), a)
    other = MCDropout(create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=8), 0.3, 3, seed=6)
    other.model.load_state_dict(twin.model.state_dict())
    assert not torch.equal(other.eval().member_logits(x), a)
    # eval forward without a member: no dropout, the base network
    plain = create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=8)
    plain.load_state_dict(state)
    torch.testing.assert_close(form(x), plain.eval()(x), rtol=1e-5, atol=1e-6)


def test_mcdropout_mask_keep_rate_and_scaling():
    form = MCDropout(_mlp(4, 2000, 3), 0.25, 2, seed=0)
    site = form.model[3]
    mask = site.mask(0, (2000,), torch.device("cpu"), torch.float32)
    assert set(mask.unique().tolist()) <= {0.0, float(torch.tensor(1 / 0.75, dtype=torch.float32))}
    assert abs(float((mask > 0).float().mean()) - 0.75) < 0.03
    with pytest.raises(UserError, match="dropout rate"):
        MCDropout(_mlp(), 1.0, 2)


# ---------------------------------------------------------------------------- FLOPs
def test_form_flops_hand_formulas_on_an_mlp():
    """Linear(4, 8) -> Linear(8, 3), M = 3: MIMO widens to Linear(12, 8), Linear(8, 9);
    BatchEnsemble adds 1 FLOP per element of each layer's input and output per member row."""
    m = 3
    mimo = MIMO(_mlp(), m)
    assert form_forward_flops(mimo, torch.zeros(1, m, 4)) == 2 * (12 * 8 + 8 * 9)
    be = BatchEnsemble(_mlp(), m)
    assert rank1_flops(be, torch.zeros(m, 1, 4)) == m * ((4 + 8) + (8 + 3))
    assert form_forward_flops(be, torch.zeros(m, 1, 4)) == m * (2 * (4 * 8 + 8 * 3) + (4 + 8) + (8 + 3))
    mcd = MCDropout(_mlp(), 0.5, m)
    assert form_forward_flops(mcd, torch.zeros(1, 1, 4)) == 2 * (4 * 8 + 8 * 3)


@pytest.mark.parametrize("model,shape", [("cnn1d", (1, 40)), ("wrn-10-1", (3, 16, 16)), ("resnet18", (3, 16, 16))])
@pytest.mark.parametrize("method", ["mimo", "batchensemble", "mcdropout"])
def test_recipe_form_flops_match_flop_counter_on_real_batches(method, model, shape):
    """The per-sample (training forward, inference) FLOPs a run records equal FlopCounterMode on a
    real training batch from the recipe and on member_logits of a test batch (plus, for
    BatchEnsemble, the rank-1 products counted by hand from the layer shapes)."""
    cfg = TrainConfig(method=method, model=model, members=3, mimo_batch_repetitions=2, dropout_rate=0.2)
    recipe = get_recipe(method)
    torch.manual_seed(0)
    form = recipe.build_model(create_model(model, num_classes=10, input_shape=shape), cfg).eval()
    train_fwd, inference = recipe.form_flops(form, shape, cfg)
    batch = 4
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    inputs, _ = recipe.training_batch(cfg, x, y, _job(), 0)
    extra_train = extra_test = 0.0
    if method == "batchensemble":  # rank-1 products: input + output elements of every layer, per row
        extra_train = _hand_rank1(form, inputs)
        extra_test = _hand_rank1(form, tile_batch(x, 3))
    assert _oracle(lambda: form(inputs)) + extra_train == pytest.approx(batch * train_fwd, rel=1e-12)
    assert _oracle(lambda: form.member_logits(x)) + extra_test == pytest.approx(batch * inference, rel=1e-12)
    dense = _oracle(lambda: create_model(model, num_classes=10, input_shape=shape).eval()(x)) / batch
    if method == "mcdropout":  # three dense forwards at test, one dense forward in training
        assert inference == 3 * dense and train_fwd == dense
    elif method == "batchensemble":  # three tiled rows plus the rank-1 products
        assert train_fwd == inference and inference > 3 * dense
    else:  # one forward of the wider network; batch repetitions r = 2 in training
        assert inference > dense and train_fwd == 2 * inference


def _job():
    from freetickets.methods.base import Job

    return Job("train", 0, 0, [])


def _hand_rank1(form, x) -> float:
    """Sum over BatchEnsemble layers of numel(input) + numel(output), from shapes recorded in a forward."""
    sizes = []
    hooks = [m.register_forward_hook(lambda mod, i, o: sizes.append(i[0].numel() + o.numel()))
             for m in form.modules() if isinstance(m, BatchEnsembleLayer)]
    with torch.no_grad():
        form(x)
    for h in hooks:
        h.remove()
    assert sizes
    return float(sum(sizes))


def test_build_form_round_trip_and_unknown_kind():
    torch.manual_seed(0)
    for form in ({"kind": "mimo", "members": 2}, {"kind": "batchensemble", "members": 2, "init": "normal"},
                 {"kind": "mcdropout", "members": 2, "rate": 0.1, "seed": 3}):
        net = build_form(form, create_model("mlp", num_classes=10, input_shape=(1, 40)))
        assert net.num_members == 2
        assert net.eval().member_logits(torch.randn(2, 1, 40)).shape == (2, 2, 10)
    with pytest.raises(UserError, match="unknown kind"):
        build_form({"kind": "nope", "members": 2}, _mlp())


def test_mimo_loss_is_the_sum_over_heads_of_each_heads_mean():
    """Havasi et al.: the training loss sums the M heads' cross-entropies (each a batch mean)."""
    torch.manual_seed(0)
    cfg = TrainConfig(method="mimo", members=3)
    recipe = get_recipe("mimo")
    output, targets = torch.randn(3, 5, 4), torch.randint(0, 4, (3, 5))  # (M, B', C), (M, B')
    logits, flat = recipe.training_logits(output, targets)
    assert logits.shape == (15, 4) and flat.shape == (15,)
    expected = sum(F.cross_entropy(output[k], targets[k]) for k in range(3))
    torch.testing.assert_close(recipe.training_loss(logits, flat, cfg), expected)
    # every other recipe: the plain mean cross-entropy (with label smoothing)
    smooth = TrainConfig(method="batchensemble", label_smoothing=0.1)
    torch.testing.assert_close(get_recipe("batchensemble").training_loss(logits, flat, smooth),
                               F.cross_entropy(logits, flat, label_smoothing=0.1))
