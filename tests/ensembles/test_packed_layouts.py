"""The packed forward's layout optimisations keep the members' outputs exactly: in-place ReLUs,
zero-padded convolution channels, channels-last convolutions, the grouped form of traced members, the
member-major shared Linear (src/freetickets/ensembles/layouts.py, fused.py, packed.py)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from freetickets.ensembles.fused import FusedMembers
from freetickets.ensembles.layouts import ChannelsLastConv1d, channels_last, pad_conv_channels, relu_in_place
from freetickets.ensembles.packed import PackedMembers, shared_layer
from freetickets.models.registry import create_model


def _chain(width: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, 5, 3, stride=2),
                         nn.ReLU(), nn.Flatten(1), nn.Linear(5 * 9, 3)).eval()


def test_pad_conv_channels_pads_conv_relu_conv_with_zero_channels_exactly():
    model = _chain(30)
    x = torch.randn(7, 1, 20)
    ref = model(x)
    gm = fx.symbolic_trace(copy.deepcopy(model))  # the modules are changed in place
    assert pad_conv_channels(gm) == 1  # 30 -> 32; 5 feeds a Linear and 11 more would be > 1/8
    first, second = gm.get_submodule("0"), gm.get_submodule("2")
    assert (first.out_channels, second.in_channels, second.out_channels) == (32, 32, 5)
    assert first.weight.shape == (32, 1, 3) and second.weight.shape == (5, 32, 3)
    assert torch.equal(first.weight[30:], torch.zeros(2, 1, 3)) and torch.equal(first.bias[30:], torch.zeros(2))
    assert torch.equal(second.weight[:, 30:], torch.zeros(5, 2, 3))
    assert torch.allclose(gm(x), ref, atol=1e-6)
    assert model[0].out_channels == 30


def test_pad_conv_channels_leaves_chains_alone_when_not_worth_it_or_not_private():
    assert pad_conv_channels(fx.symbolic_trace(_chain(12))) == 0  # +4 channels is more than 1/8 of 12

    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Conv1d(1, 30, 3, padding=1), nn.Conv1d(30, 30, 3, padding=1), nn.Linear(30, 2)

        def forward(self, x):
            h = torch.relu(self.a(x))
            return self.head((self.b(h) + h).mean(-1))  # h is read twice: padding it would change the sum's shape

    assert pad_conv_channels(fx.symbolic_trace(Branch().eval())) == 0


def test_relu_in_place_only_where_nothing_else_reads_the_input():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.conv2, self.relu2 = nn.Conv1d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv1d(2, 2, 1), nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            return self.relu2(self.conv2(self.relu(y) + y))

    model = Residual().eval()
    x = torch.randn(4, 2, 6)
    ref = model(x)
    gm = fuse(model)  # a deep copy
    relu_in_place(gm.graph, dict(gm.named_modules()))
    assert not gm.get_submodule("relu").inplace  # y is also added afterwards
    assert gm.get_submodule("relu2").inplace
    assert not model.relu2.inplace
    assert torch.allclose(gm(x), ref, atol=1e-6)


@pytest.mark.parametrize("batch", [1, 5])
def test_shared_linear_is_member_major_at_every_batch(batch):
    g = torch.Generator().manual_seed(0)
    m, f, o = 3, 4, 6
    w, b, x = torch.randn(m, o, f, generator=g), torch.randn(m, o, generator=g), torch.randn(batch, f, generator=g)
    got = shared_layer(x, torch.cat(list(w)).t().contiguous(), b.flatten(), m, None)
    ref = torch.cat([x @ w[k].t() + b[k] for k in range(m)])
    assert got.shape == (m * batch, o) and torch.allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("name,kwargs", [("cnn1d", {"width": 30}), ("mlp", {"hidden_sizes": [16, 8]})])
def test_packed_members_with_layout_changes_equal_the_members(name, kwargs):
    torch.manual_seed(0)
    members = []
    for _ in range(3):
        model = create_model(name, num_classes=4, input_shape=(1, 40), **kwargs).train()
        with torch.no_grad():
            model(torch.randn(16, 1, 40))  # BatchNorm statistics that are not the identity
        members.append(model.eval())
    packed = PackedMembers(members, small_inputs=80)
    for batch in (1, 2, 9):
        x = torch.randn(batch, 1, 40)
        ref = torch.stack([mm(x) for mm in members])
        assert torch.allclose(packed.member_logits(x), ref, atol=1e-5)
    assert packed.path == "packed"
    assert all(not r.inplace for mm in members for r in mm.modules() if isinstance(r, nn.ReLU))
    if name == "cnn1d":  # 30 -> 32 channels in the folded members, the members untouched
        assert packed.folded[0].get_submodule("features.0").out_channels == 32
        assert members[0].features[0].out_channels == 30
    assert "relu_" in packed.graph_module.code


@pytest.mark.parametrize("cin,cout,stride,padding,dilation,groups",
                         [(1, 12, 1, 2, 1, 1), (6, 4, 2, 1, 1, 1), (6, 9, 1, 0, 2, 1), (6, 9, 2, 2, 1, 3)])
@pytest.mark.parametrize("batch", [1, 5])
def test_channels_last_conv1d_equals_conv1d_and_writes_channels_last(cin, cout, stride, padding, dilation, groups, batch):
    torch.manual_seed(0)
    conv = nn.Conv1d(cin, cout, 5, stride=stride, padding=padding, dilation=dilation, groups=groups).eval()
    x = torch.randn(batch, cin, 23)
    fast = ChannelsLastConv1d(conv)
    with torch.no_grad():
        ref, out = conv(x), fast(x)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-6)
    assert out.stride(1) == 1  # channel stride 1: NWC memory, also from a single input channel
    assert (fast.in_channels, fast.out_channels, fast.kernel_size) == (cin, cout, (5,))
    conv2 = nn.Conv1d(cout, 3, 5, stride=stride, padding=padding, dilation=dilation).eval()
    with torch.no_grad():  # a channels-last input (the previous one's output) is read by its strides
        assert torch.allclose(ChannelsLastConv1d(conv2)(torch.relu(out)), conv2(torch.relu(ref)), atol=1e-5)


def test_channels_last_converts_every_convolution_and_keeps_the_outputs():
    torch.manual_seed(0)
    one_d = _chain(8)
    two_d = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2),
                          nn.Flatten(1), nn.Linear(4 * 3 * 3, 2)).eval()
    for model, x in ((one_d, torch.randn(4, 1, 20)), (two_d, torch.randn(4, 3, 8, 8))):
        fast = copy.deepcopy(model)
        with torch.no_grad():
            ref = model(x)
            assert channels_last(fast) == 2
            assert torch.allclose(fast(x), ref, atol=1e-5)
    assert isinstance(fast[0], nn.Conv2d) and fast[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not two_d[0].weight.is_contiguous(memory_format=torch.channels_last)  # the original is untouched
    converted = copy.deepcopy(one_d)
    channels_last(converted)
    assert isinstance(converted[0], ChannelsLastConv1d) and isinstance(one_d[0], nn.Conv1d)
    assert channels_last(nn.Conv1d(1, 2, 3)) == 0  # a bare convolution has no parent to be replaced in


def test_fused_members_of_traced_members_equal_the_members_and_refuse_different_graphs():
    torch.manual_seed(0)
    members = []
    for _ in range(3):
        model = create_model("wrn-10-2", num_classes=5, input_shape=(3, 8, 8)).train()
        with torch.no_grad():
            model(torch.randn(8, 3, 8, 8))
        members.append(model.eval())
    folded = [fuse(copy.deepcopy(m)) for m in members]
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        ref = torch.stack([m(x) for m in members])
        grouped = FusedMembers(folded)
        assert torch.allclose(grouped(x), ref, atol=1e-5)
        assert any(isinstance(m, nn.Conv2d) and m.groups == 3 for m in grouped.net.modules())
    other = fx.symbolic_trace(_chain(4))
    with pytest.raises(TypeError, match="traced graph differs"):
        FusedMembers([folded[0], other])


@pytest.mark.parametrize("shape", [(3, 256, 10), (3, 1, 10), (256, 2), (3, 200, 16), (2, 70, 100), (4, 15)])
def test_class_softmax_equals_softmax_contiguous(shape):
    from freetickets.ensembles.layouts import class_softmax

    z = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 5
    got = class_softmax(z)
    assert got.shape == z.shape and got.is_contiguous()
    assert torch.allclose(got, torch.softmax(z, dim=-1), rtol=1e-6, atol=1e-7)
    assert torch.allclose(got.sum(-1), torch.ones(shape[:-1]), atol=1e-6)
