"""Slim channel tickets and the packed forward (issue 22, items 3-4).

Channel tickets are built here with ``random_channel_masks`` (random output channels removed
through torch-pruning groups and zeroed as the channel contract requires), on every registry
model that supports channel structure, at small widths / inputs so each case takes well under
a second. Invariants checked exactly or to fp32 tolerance: slim == masked logits, packed ==
members one after another on both packing paths, FLOPs equal to hand-counted multiply-adds and
to ``FlopCounterMode``'s own count of the slim modules.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from freetickets.ensembles.ensemble import Ensemble
from freetickets.ensembles.packed import PackedMembers
from freetickets.ensembles.slim import random_channel_masks, slim_cost, slim_member
from freetickets.ensembles.tickets import save_ticket
from freetickets.errors import UserError
from freetickets.models.registry import create_model

# (registry name, input shape, model kwargs): every registry model the slim export supports.
MODELS = [
    ("mlp", (1, 40), {"hidden_sizes": [24, 20]}),
    ("cnn1d", (1, 40), {"width": 12}),
    ("cnn1d", (40,), {"width": 12, "head": "avg"}),
    ("wrn-10-2", (3, 12, 12), {}),
    ("resnet18", (3, 12, 12), {"width": 8}),
    ("resnet50", (3, 16, 16), {"width": 8}),
    ("lenet5", (1, 28, 28), {}),
    ("vgg-c", (3, 32, 32), {}),
]


def channel_member(name, shape, kwargs, seed, channel_density=0.5):
    """A member with BatchNorm statistics and random channels removed; returns (model, masks)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = create_model(name, num_classes=10, input_shape=shape, **kwargs)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *shape, generator=g) * 2 + 0.3)
    model.eval()
    masks = random_channel_masks(model, shape, channel_density, g)
    return model, masks


def _max_rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()


@pytest.mark.parametrize("name,shape,kwargs", MODELS, ids=[f"{m[0]}{m[1]}" for m in MODELS])
def test_slim_equals_masked_and_packed_equals_members(name, shape, kwargs):
    built = [channel_member(name, shape, kwargs, seed) for seed in range(3)]
    slims = [slim_member(m, masks, shape) for m, masks in built]
    for (model, masks), slim in zip(built, slims):
        dense_params = sum(p.numel() for p in model.parameters())
        assert sum(p.numel() for p in slim.parameters()) < 0.6 * dense_params
        # every removed row is gone: the slim weight has exactly the kept rows and columns
        for (n, p), (_, q) in zip(model.named_parameters(), slim.named_parameters()):
            if n in masks and p.dim() >= 2:
                assert q.numel() == int(masks[n].sum())
    x = torch.randn(11, *shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        masked = torch.stack([m(x) for m, _ in built])
        assert _max_rel(torch.stack([s(x) for s in slims]), masked) < 1e-5
        for small_inputs in (0, 10**6):  # folded members one after another, and the packed graph
            packed = PackedMembers(slims, small_inputs=small_inputs)
            assert packed.path == "packed"
            out = packed.member_logits(x)
            assert out.shape == (3, 11, 10)
            assert _max_rel(out, masked) < 1e-5
            assert packed.path == "packed"  # the first-call check passed
            assert _max_rel(packed.member_logits(x[:1]), masked[:, :1]) < 1e-5


def test_slim_keeps_logits_and_residual_channels_the_masks_keep():
    model, masks = channel_member("wrn-10-2", (3, 12, 12), {}, 0)
    # A hand-made mask that removes only some producers of a residual sum: nothing leaves.
    slim = slim_member(model, masks, (3, 12, 12))
    assert slim.fc.out_features == 10
    assert slim.fc.in_features == int(masks["fc.weight"][0].sum())


def test_slim_refuses_a_leaking_channel():
    model, masks = channel_member("cnn1d", (1, 40), {"width": 12}, 0)
    removed = torch.nonzero(~masks["features.0.weight"].flatten(1).any(1)).flatten()
    with torch.no_grad():
        model.features[1].bias[removed[0]] = 0.5  # the BatchNorm shift of a removed channel ...
    slim_member(model, masks, (1, 40))  # ... is harmless while the next layer's columns are zero
    with torch.no_grad():
        model.features[3].weight[:, removed[0]] = 0.1  # ... and leaks once they are not
    with pytest.raises(UserError, match="not channel-structured"):
        slim_member(model, masks, (1, 40))


def test_unstructured_masks_give_an_unchanged_copy():
    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10, input_shape=(1, 40), hidden_sizes=[16]).eval()
    masks = {n: torch.rand(p.shape) < 0.5 for n, p in model.named_parameters() if p.dim() == 2}
    slim = slim_member(model, masks, (1, 40))
    assert [p.shape for p in slim.parameters()] == [p.shape for p in model.parameters()]


def test_slim_cost_known_answer_and_flop_counter_oracle():
    from torch.utils.flop_counter import FlopCounterMode

    built = [channel_member("mlp", (1, 40), {"hidden_sizes": [24, 20]}, s) for s in range(2)]
    slims = [slim_member(m, mk, (1, 40)) for m, mk in built]
    h1, h2 = slims[0].features[1].weight.shape[0], slims[0].classifier.in_features
    assert (h1, h2) == (12, 10)  # round(0.5 * 24), round(0.5 * 20)
    cost = slim_cost(slims, (1, 40))
    per_member = 2 * (40 * h1 + h1 * h2 + h2 * 10)  # 2 x multiply-adds of the three Linears
    assert cost["per_member"]["inference_flops"] == [per_member, per_member]
    assert cost["inference_flops"] == 2 * per_member
    params = 40 * h1 + 2 * h1 + h1 * h2 + 2 * h2 + h2 * 10 + 10  # weights, BN affine, classifier bias
    assert cost["params"] == 2 * params and cost["param_bytes"] == 2 * params * 4
    cnn = slim_member(*channel_member("cnn1d", (1, 40), {"width": 12}, 0), (1, 40))
    with FlopCounterMode(display=False) as counter, torch.no_grad():  # oracle on a conv model
        cnn(torch.zeros(1, 1, 40))
    # 6 of 12 channels: conv 1->6 (k5, length 40), 6->6 (length 20), 6->6 (length 10), Linear 60->10
    assert counter.get_total_flops() == 2 * (6 * 5 * 40 + 6 * 6 * 5 * 20 + 6 * 6 * 5 * 10 + 60 * 10)
    assert slim_cost([cnn], (1, 40))["inference_flops"] == counter.get_total_flops()


def test_packed_refuses_members_of_different_shapes_and_runs_them_one_by_one():
    a = slim_member(*channel_member("mlp", (1, 40), {"hidden_sizes": [24]}, 0, 0.5), (1, 40))
    b = slim_member(*channel_member("mlp", (1, 40), {"hidden_sizes": [24]}, 1, 0.25), (1, 40))
    with pytest.raises(TypeError, match="differs"):
        PackedMembers([a, b])
    seq = PackedMembers([a, b], pack=False)
    x = torch.randn(3, 1, 40)
    assert seq.path == "sequential"
    with torch.no_grad():
        assert torch.equal(seq.member_logits(x), torch.stack([a(x), b(x)]))


def test_packed_falls_back_when_forward_mixes_rows(caplog):
    class Mixer(nn.Module):  # centres hidden features over the batch: packed rows of members mix
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)

        def forward(self, x):
            h = self.fc1(x)
            return self.fc2(h - h.mean(0))

    members = [Mixer().eval() for _ in range(2)]
    packed = PackedMembers(members)
    x = torch.randn(5, 4)
    with torch.no_grad():
        out = packed.member_logits(x)
        assert torch.equal(out, torch.stack([m(x) for m in members]))
    assert packed.path == "sequential" and "differs" in caplog.text


def _channel_run(tmp_path, name="cnn1d", shape=(1, 40), kwargs=None, structure="channel"):
    kwargs = {"width": 12} if kwargs is None else kwargs
    run = tmp_path / "run"
    (run / "tickets").mkdir(parents=True)
    models, entries = [], []
    for k in range(3):
        model, masks = channel_member(name, shape, kwargs, k)
        save_ticket(run / "tickets" / f"member_{k}.pt", model, masks, {"seed": k})
        models.append(model)
        entries.append({"file": f"tickets/member_{k}.pt", "member": k, "seed": k})
    manifest = {"format": "freetickets-run", "version": 1, "status": "complete", "model": name,
                "model_kwargs": kwargs, "num_classes": 10, "input_shape": list(shape),
                "members": 3, "tickets": entries, "structure": structure}
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run, models


@pytest.mark.parametrize("name,kwargs", [("cnn1d", {"width": 12}), ("mlp", {"hidden_sizes": [24, 20]})])
def test_load_compact_equals_masked_form(tmp_path, name, kwargs):
    run, models = _channel_run(tmp_path, name, (1, 40), kwargs)
    masked = Ensemble.load(run)  # today's behaviour: the masked members
    assert masked.form is None and len(masked.models) == 3
    compact = Ensemble.load(run, compact=True)
    assert isinstance(compact.form, PackedMembers) and compact.form.path == "packed"
    assert compact.members == 3 and len(compact.masks) == 3 and compact.manifest["structure"] == "channel"
    slim_params = sum(p.numel() for p in compact.form.members.parameters())
    assert slim_params < 0.5 * sum(p.numel() for m in masked.models for p in m.parameters())
    for batch in (1, 40):
        x = torch.randn(batch, 1, 40)
        got = compact.member_probs(x)
        assert got.shape == (3, batch, 10)
        assert (got - masked.member_probs(x)).abs().max().item() <= 1e-4
    assert isinstance(Ensemble.load(run, compact="auto").form, PackedMembers)


def test_compact_auto_keeps_unstructured_runs_masked(tmp_path):
    run, _ = _channel_run(tmp_path, structure="unstructured")
    assert Ensemble.load(run, compact="auto").form is None


def test_evaluate_reports_the_compact_cost_block(tmp_path):
    from freetickets.evaluation import compact_cost_block, cost_block

    run, models = _channel_run(tmp_path)
    ens = Ensemble.load(run, compact="auto")
    manifest = ens.manifest
    block = cost_block(run, manifest, ens)
    masked_block = cost_block(run, manifest, Ensemble.load(run))
    for key in ("members", "nonzero_params", "dense_params", "checkpoint_bytes"):
        assert block[key] == masked_block[key]  # today's keys are unchanged by the compact form
    c = block["compact"]
    dense = create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=12)
    dense_cost = slim_cost([dense], (1, 40))
    slim = slim_cost(list(ens.form.members), (1, 40))
    assert c["inference_flops"] == slim["inference_flops"]
    assert c["inference_flops_vs_dense"] == pytest.approx(slim["inference_flops"] / dense_cost["inference_flops"])
    assert c["params"] == slim["params"] and c["bytes"] == 4 * slim["params"]
    assert c["path"] == "packed" and c == compact_cost_block(ens.form, dense, manifest)
    # Channel density 0.5: inner layers keep ~1/4 of their weights, so three members cost
    # well under three dense models but more than one quarter of one.
    assert 0.25 < c["inference_flops_vs_dense"] < 1.5
    assert math.isclose(c["bytes_vs_dense"], c["params_vs_dense"])


@pytest.mark.parametrize("name,kwargs,big_path", [("cnn1d", {"width": 12}, "folded"), ("mlp", {"hidden_sizes": [24]}, "graph")])
def test_packing_rule_picks_the_path_by_batch_and_model(name, kwargs, big_path):
    slims = [slim_member(*channel_member(name, (1, 40), kwargs, s), (1, 40)) for s in range(2)]
    packed = PackedMembers(slims, small_inputs=80)  # two signals of 40 values
    calls = {"graph": 0, "folded": 0}
    packed.member_logits(torch.randn(3, 1, 40))  # the first call checks both paths
    packed.graph_module.register_forward_hook(lambda *_: calls.__setitem__("graph", calls["graph"] + 1))
    packed.folded[0].register_forward_hook(lambda *_: calls.__setitem__("folded", calls["folded"] + 1))
    packed.member_logits(torch.randn(2, 1, 40))
    assert calls == {"graph": 1, "folded": 0}  # small batches: the packed graph
    packed.member_logits(torch.randn(3, 1, 40))
    assert calls[big_path] == 1 + (big_path == "graph")  # convolutional models: folded members


def test_packing_rule_for_conv2d_models_uses_grouped_convolutions_then_folded_members():
    shape = (3, 12, 12)
    slims = [slim_member(*channel_member("wrn-10-2", shape, {}, s), shape) for s in range(3)]
    packed = PackedMembers(slims, small_inputs=2 * 3 * 12 * 12)  # two images
    assert packed.routes() == ["grouped", "folded"]
    calls = {"grouped": 0, "folded": 0}
    packed.member_logits(torch.randn(3, *shape))  # the first call checks both routes
    packed.grouped.register_forward_hook(lambda *_: calls.__setitem__("grouped", calls["grouped"] + 1))
    packed.folded[0].register_forward_hook(lambda *_: calls.__setitem__("folded", calls["folded"] + 1))
    x = torch.randn(3, *shape)
    with torch.no_grad():
        ref = torch.stack([s(x) for s in slims])
    assert _max_rel(packed.member_logits(x[:2]), ref[:, :2]) < 1e-5 and calls == {"grouped": 1, "folded": 0}
    assert _max_rel(packed.member_logits(x), ref) < 1e-5 and calls == {"grouped": 1, "folded": 1}
    assert packed.route(x[:2]) == "grouped" and packed.route(x) == "folded"
    conv = packed.folded[0].get_submodule("conv1")  # the folded members run on channels-last memory
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert PackedMembers(slims).small_inputs == 4 * 3 * 32 * 32  # default for Conv2d models
    unpacked = PackedMembers(slims, pack=False)
    assert unpacked.routes() == [] and unpacked.route(x) == "sequential"


@pytest.mark.parametrize("stride,padding,dilation", [(2, 1, 1), (1, 0, 1), (1, 2, 2)])
@pytest.mark.parametrize("batch", [1, 2])
def test_packed_conv_equals_one_convolution_per_member(stride, padding, dilation, batch):
    import torch.nn.functional as F

    from freetickets.ensembles.packed import packed_conv

    g = torch.Generator().manual_seed(0)
    b = torch.randn(3, 5, generator=g)
    for conv, x, w in ((F.conv1d, torch.randn(3 * batch, 4, 10, generator=g), torch.randn(3, 5, 4, 3, generator=g)),
                       (F.conv2d, torch.randn(3 * batch, 4, 9, 7, generator=g), torch.randn(3, 5, 4, 3, 2, generator=g))):
        nd = x.dim() - 2
        args = ((stride,) * nd, (padding,) * nd, (dilation,) * nd)
        ref = torch.cat([conv(x[k * batch:(k + 1) * batch], w[k], b[k], *args) for k in range(3)])
        assert torch.allclose(packed_conv(x, w, b, *args), ref, atol=1e-5)


def test_compact_refuses_model_forms():
    from freetickets.ensembles.slim import pack_tickets

    model, masks = channel_member("mlp", (1, 40), {"hidden_sizes": [8]}, 0)
    with pytest.raises(UserError, match="compact applies to ticket runs"):
        pack_tickets([model], [masks], {"model_form": {"kind": "mimo", "members": 3}, "input_shape": [1, 40]})
