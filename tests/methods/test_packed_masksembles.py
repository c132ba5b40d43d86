"""Packed-Ensembles and Masksembles: the model forms (exact invariants, known answers), their FLOPs
against FlopCounterMode, their recipes, and the methods end to end through the CLI (train ->
Ensemble with (M, B, C) member probabilities -> evaluate --json with a cost block)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from freetickets.cli.main import main
from freetickets.ensembles.ensemble import Ensemble
from freetickets.errors import UserError
from freetickets.methods import get_recipe
from freetickets.models import create_model
from freetickets.models.efficient import Masksembles, Packed, build_form, generate_masks
from freetickets.models.masksembles import MaskedInput, row_members
from freetickets.models.packed import PackedLinear, packed_width
from freetickets.train.config import TrainConfig


# ----------------------------------------------------------------------------- Packed-Ensembles
def test_packed_width_known_answers():
    assert packed_width(160, 4, 2.0, 2) == 320  # WRN-28-10 preset: alpha * c exactly
    assert packed_width(256, 3, 2.0, 1) == 513  # 512 rounded up to a multiple of 3
    assert packed_width(6, 3, 2.0, 1) == 12  # no float slack error (2.0 * 6 / 3 = 4)
    assert packed_width(10, 2, 1.5, 2) == 16  # 15 -> 16


def _copy_members_into(packed: Packed, bases: list[nn.Module]) -> None:
    """Write M base networks' weights into the packed network's member blocks (alpha = M, gamma = 1):
    every tensor of the packed network (the first layer's output rows, a grouped layer's groups, a
    BatchNorm's channels, the heads) is the members' tensors stacked along dim 0."""
    leaves = [[m for m in net.modules() if not list(m.children())] for net in (packed.model, *bases)]
    with torch.no_grad():
        for mine, *theirs in zip(*leaves):
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(mine, name, None) is not None:
                    getattr(mine, name).copy_(torch.cat([getattr(t, name) for t in theirs], dim=0))


@pytest.mark.parametrize("model", ["mlp", "cnn1d"])
def test_packed_with_alpha_m_is_m_independent_base_networks(model):
    """alpha = M, gamma = 1: member k of the packed network computes exactly base network k (weights
    copied into block k), in eval mode and for every example: no weight couples two members."""
    torch.manual_seed(0)
    kwargs = {"width": 8} if model == "cnn1d" else {"hidden_sizes": [16, 12]}
    bases = [create_model(model, num_classes=10, input_shape=(1, 40), **kwargs) for _ in range(3)]
    for b in bases:  # non-trivial BatchNorm statistics
        for m in b.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.5, 0.5)
    packed = Packed(create_model(model, num_classes=10, input_shape=(1, 40), **kwargs), 3, alpha=3, gamma=1)
    _copy_members_into(packed, bases)
    x = torch.randn(5, 1, 40)
    with torch.no_grad():
        got = packed.eval().member_logits(x)
        want = torch.stack([b.eval()(x) for b in bases])
    assert got.shape == (3, 5, 10)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_packed_members_are_independent_in_training_too():
    """A change to member 1's weights (and any input) moves only member 1's logits, in train mode."""
    torch.manual_seed(1)
    packed = Packed(create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=12), 3, alpha=2, gamma=2)
    x = torch.randn(6, 1, 40)
    before = packed.train()(x).detach()
    with torch.no_grad():
        for m in packed.model.modules():
            if isinstance(m, (nn.Conv1d, PackedLinear)) and m.groups > 1:
                rows = m.weight.shape[0] // 3
                m.weight[rows:2 * rows] += 0.5  # member 1's output block
    after = packed(x).detach()
    assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
    assert not torch.allclose(after[1], before[1])


def test_packed_parameter_count_known_answer():
    """MLP 40-256-256-10, M = 4, alpha = 2, gamma = 2: widths 512 (8 groups), head 40 outputs."""
    packed = Packed(create_model("mlp", num_classes=10, input_shape=(1, 40)), 4, alpha=2, gamma=2)
    expected = (40 * 512            # first layer (no bias: BatchNorm follows), groups = 1
                + 2 * 512           # BatchNorm
                + 512 * 512 // 8    # middle layer, 8 groups
                + 2 * 512
                + 512 * 40 // 8 + 40)  # 4 heads of 10 classes, 8 groups, bias
    assert sum(p.numel() for p in packed.parameters()) == expected == 57896


def test_packed_linear_is_the_block_diagonal_product():
    torch.manual_seed(2)
    layer = PackedLinear(6, 4, groups=2)
    x = torch.randn(3, 6)
    w = layer.weight
    block = torch.zeros(4, 6)
    block[:2, :3], block[2:, 3:] = w[:2], w[2:]
    torch.testing.assert_close(layer(x), x @ block.T + layer.bias)
    with pytest.raises(ValueError, match="multiples of groups"):
        PackedLinear(5, 4, groups=2)


@pytest.mark.parametrize("kwargs,flag", [({"alpha": 0}, "--packed-alpha"), ({"gamma": 0}, "--packed-gamma"),
                                         ({"gamma": 3}, "--packed-gamma")])
def test_packed_bad_arguments_name_the_flag(kwargs, flag):
    with pytest.raises(UserError, match=flag):
        Packed(create_model("mlp", num_classes=10, input_shape=(1, 40)), 3, **kwargs)


# ----------------------------------------------------------------------------- Masksembles
@pytest.mark.parametrize("channels,members,scale", [(256, 3, 2.0), (128, 4, 1.5), (64, 3, 3.0), (160, 4, 2.0)])
def test_generated_masks_follow_the_papers_procedure(channels, members, scale):
    masks = generate_masks(channels, members, scale, seed=7)
    ones = int(channels / (scale * (1 - (1 - 1 / scale) ** members)))
    assert masks.shape == (members, channels)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks.sum(dim=1) == ones).all()  # every mask has the same number of ones
    assert (masks.amax(dim=0) == 1).all()  # no channel is unused
    assert torch.equal(masks, generate_masks(channels, members, scale, seed=7))  # a pure function of the seed
    assert not torch.equal(masks, generate_masks(channels, members, scale, seed=8))


def test_mask_scale_sets_the_overlap():
    """s = 1: M identical all-ones masks; the mean pairwise overlap falls as s grows."""
    assert torch.equal(generate_masks(50, 3, 1.0, 0), torch.ones(3, 50))

    def overlap(s):
        m = generate_masks(240, 4, s, 0)
        inter = m @ m.T
        return float(sum(inter[i, j] / m[i].sum() for i in range(4) for j in range(4) if i < j) / 6)

    values = [overlap(s) for s in (1.2, 2.0, 4.0)]
    assert values[0] > values[1] > values[2]
    # expected overlap of two random m-subsets of m*s positions is 1/s
    assert values[1] == pytest.approx(0.5, abs=0.1)


def test_mask_generation_errors_name_the_flag():
    with pytest.raises(UserError, match="--masksembles-scale"):
        generate_masks(40, 3, 0.5, 0)
    with pytest.raises(UserError, match="--masksembles-scale"):
        generate_masks(2, 3, 50.0, 0)  # 2 channels cannot hold 3 masks


def test_row_members_known_answer():
    assert row_members(7, 3, torch.device("cpu")).tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert row_members(6, 3, torch.device("cpu")).tolist() == [0, 0, 1, 1, 2, 2]


def test_masked_input_multiplies_each_rows_own_mask():
    layer = nn.Linear(4, 2, bias=False)
    masks = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]])
    site = MaskedInput(layer, masks)
    x = torch.randn(6, 4)
    expected = torch.cat([(x[2 * k:2 * k + 2] * masks[k]) @ layer.weight.T for k in range(3)])
    torch.testing.assert_close(site(x), expected)
    conv = nn.Conv1d(4, 2, 3, bias=False)
    xc = torch.randn(3, 4, 5)
    torch.testing.assert_close(MaskedInput(conv, masks)(xc), conv(xc * masks[:, :, None]))


def test_masksembles_training_slices_and_test_members_agree():
    """Training form: batch slice k goes through mask k. Test form: every example through every mask,
    member k's prediction independent of the other examples (eval mode)."""
    torch.manual_seed(3)
    form = Masksembles(create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=16), 3, scale=2.0, seed=5)
    assert form.masked_layers == ["features.3", "features.6", "classifier"]
    x = torch.randn(4, 1, 40)
    with torch.no_grad():
        members = form.eval().member_logits(x)
        assert members.shape == (3, 4, 10)
        assert not torch.allclose(members[0], members[1])
        torch.testing.assert_close(form.member_logits(x[:1]), members[:, :1])
        same = form(x[:1].repeat(3, 1, 1))  # a 3-row batch: row k is slice k, mask k
        torch.testing.assert_close(same, members[:, 0])
    # the masks are a function of (members, scale, seed): a rebuilt form has them too
    again = build_form({"kind": "masksembles", "members": 3, "scale": 2.0, "seed": 5},
                       create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=16))
    for a, b in zip(form.modules(), again.modules()):
        if isinstance(a, MaskedInput):
            assert torch.equal(a.masks, b.masks)


# ----------------------------------------------------------------------------- recipes and FLOPs
def _oracle(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return float(counter.get_total_flops())


@pytest.mark.parametrize("model,shape", [("cnn1d", (1, 40)), ("mlp", (1, 40)), ("wrn-10-1", (3, 16, 16))])
@pytest.mark.parametrize("method", ["packed", "masksembles"])
def test_recipe_form_flops_match_flop_counter_on_real_batches(method, model, shape):
    cfg = TrainConfig(method=method, model=model, members=3, packed_alpha=2.0, packed_gamma=2)
    recipe = get_recipe(method)
    torch.manual_seed(0)
    form = recipe.build_model(create_model(model, num_classes=10, input_shape=shape), cfg).eval()
    train_fwd, inference = recipe.form_flops(form, shape, cfg)
    batch = 6
    x = torch.randn(batch, *shape)
    assert _oracle(lambda: form(x)) == pytest.approx(batch * train_fwd, rel=1e-12)
    assert _oracle(lambda: form.member_logits(x)) == pytest.approx(batch * inference, rel=1e-12)
    dense = _oracle(lambda: create_model(model, num_classes=10, input_shape=shape).eval()(x)) / batch
    if method == "masksembles":  # one dense forward per training row, three at test
        assert train_fwd == dense and inference == 3 * dense
    else:  # one forward of the packed network in both
        assert train_fwd == inference


def test_packed_form_flops_hand_formula():
    cfg = TrainConfig(method="packed", model="mlp", members=4, packed_alpha=2.0, packed_gamma=2)
    recipe = get_recipe("packed")
    form = recipe.build_model(create_model("mlp", num_classes=10, input_shape=(1, 40)), cfg)
    assert recipe.form_flops(form, (1, 40), cfg) == (2 * (40 * 512 + 512 * 512 / 8 + 512 * 40 / 8),) * 2


def test_packed_loss_is_the_sum_over_members_of_each_members_mean():
    recipe, cfg = get_recipe("packed"), TrainConfig(method="packed", members=3)
    torch.manual_seed(4)
    output, y = torch.randn(3, 5, 10), torch.randint(0, 10, (5,))
    logits, targets = recipe.training_logits(output, y)
    assert logits.shape == (15, 10) and torch.equal(targets, y.repeat(3))
    expected = sum(F.cross_entropy(output[k], y) for k in range(3))
    torch.testing.assert_close(recipe.training_loss(logits, targets, cfg), expected)


def test_masksembles_trains_on_the_plain_batch_with_the_mean_loss():
    recipe, cfg = get_recipe("masksembles"), TrainConfig(method="masksembles", members=3)
    x, y = torch.randn(5, 1, 40), torch.randint(0, 10, (5,))
    inputs, targets = recipe.training_batch(cfg, x, y, None, 0)
    assert inputs is x and targets is y
    logits = torch.randn(5, 10)
    torch.testing.assert_close(recipe.training_loss(*recipe.training_logits(logits, y), cfg),
                               F.cross_entropy(logits, y))


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method,extra", [("packed", ["--packed-alpha", "2", "--packed-gamma", "2"]),
                                          ("masksembles", ["--masksembles-scale", "2"])])
def test_train_load_evaluate_through_the_cli(method, extra, tmp_path, capsys):
    """`freetickets train --method METHOD` (mnist1d, cnn1d, M = 3): an Ensemble of (3, B, C)
    member probabilities and `evaluate --json` with a cost block of the measured form costs."""
    run = tmp_path / method
    argv = ["train", "--method", method, "--model", "cnn1d", "--members", "3", "--epochs", "1",
            "--num-samples", "600", "--batch-size", "64", "--device", "cpu", "--out", str(run),
            "--set", "model_kwargs={width: 16}", *extra]
    assert main(argv) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model_form"]["kind"] == method and manifest["members"] == 3 and len(manifest["tickets"]) == 1
    ens = Ensemble.load(run)
    x = torch.randn(7, 1, 40)
    probs = ens.member_probs(x)
    assert probs.shape == (3, 7, 10)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 7))
    assert not torch.allclose(probs[0], probs[1])
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--device", "cpu", "--ood", "none", "--corruptions", "none"]) == 0
    result = json.loads(capsys.readouterr().out)
    cost = result["cost"]
    assert cost["members"] == 3 and cost["sparsity"] == 0.0
    recipe = get_recipe(method)
    cfg = TrainConfig(method=method, model="cnn1d", model_kwargs={"width": 16}, members=3, packed_alpha=2.0,
                      packed_gamma=2, masksembles_scale=2.0)
    form = recipe.build_model(create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=16), cfg)
    train_fwd, inference = recipe.form_flops(form, (1, 40), cfg)
    assert cost["inference_flops"] == pytest.approx(inference, rel=1e-12)
    assert cost["nonzero_params"] == sum(p.numel() for p in form.parameters())
    assert math.isfinite(result["ensemble"]["nll"]) and 0.0 <= result["ensemble"]["accuracy"] <= 1.0


def test_flops_command_plans_the_measured_packed_costs(capsys):
    """`freetickets flops --method packed` (MLP, M = 4, alpha = 2, gamma = 2): the hand formula
    2 x (40·512 + 512·512/8 + 512·40/8) = 111,616 FLOPs per test sample, and training at the same
    ratio to one dense model (one forward of the packed network per sample in both)."""
    capsys.readouterr()
    assert main(["flops", "--model", "mlp", "--method", "packed", "--members", "4", "--packed-alpha", "2",
                 "--packed-gamma", "2"]) == 0
    out = capsys.readouterr().out
    dense = 2 * (40 * 256 + 256 * 256 + 256 * 10)
    ratio = 111_616 / dense
    assert "111,616" in out
    assert f"({ratio:.3f}x one dense model trained" in out and f"({ratio:.3f}x one dense model)" in out
