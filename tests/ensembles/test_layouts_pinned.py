"""Pinned decisions of the packed forward's layout rewrites (src/freetickets/ensembles/layouts.py):
which ReLUs become in-place, which Conv1d -> ReLU -> Conv1d chains are padded (and by how much),
how ChannelsLastConv1d mirrors its Conv1d, what channels_last replaces, and which softmax path
class_softmax takes."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from freetickets.ensembles.layouts import ChannelsLastConv1d, channels_last, class_softmax, pad_conv_channels, relu_in_place


def _double(t: torch.Tensor) -> torch.Tensor:
    return t * 2


def _relu_after(fn) -> tuple[fx.Graph, fx.Node]:
    """``relu(fn(x))`` as a bare graph; returns the graph and the relu node."""
    g = fx.Graph()
    x = g.placeholder("x")
    h = g.call_function(fn, (x,))
    r = g.call_function(torch.relu, (h,))
    g.output(r)
    return g, r


# ---- relu_in_place ---------------------------------------------------------------------------

def test_relu_in_place_functional_relu_after_a_fresh_function_becomes_relu_():
    g, r = _relu_after(_double)
    relu_in_place(g, fresh_fns=(_double,))
    assert r.target is torch.relu_
    x = torch.tensor([-1.0, 2.0])
    assert torch.equal(fx.GraphModule(nn.Module(), g)(x), torch.tensor([0.0, 4.0]))
    assert torch.equal(x, torch.tensor([-1.0, 2.0]))  # the caller's tensor is untouched


def test_relu_in_place_functional_relu_after_other_functions_stays_out_of_place():
    g, r = _relu_after(torch.neg)  # a call_function that is not one of fresh_fns
    relu_in_place(g, fresh_fns=(_double,))
    assert r.target is torch.relu
    g, r = _relu_after(_double)  # fresh, but not listed
    relu_in_place(g, fresh_fns=())
    assert r.target is torch.relu


def test_relu_in_place_functional_relu_on_the_graph_input_stays_out_of_place():
    g = fx.Graph()
    x = g.placeholder("x")
    r = g.call_function(torch.relu, (x,))
    g.output(r)
    relu_in_place(g, fresh_fns=(_double,))
    assert r.target is torch.relu


class _KeywordReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act = nn.Linear(3, 3), nn.ReLU()

    def forward(self, x):
        return self.act(input=self.fc(x))


def test_relu_in_place_module_relu_called_with_a_keyword_input_stays_out_of_place():
    gm = fx.symbolic_trace(_KeywordReLU())
    relu_in_place(gm.graph, dict(gm.named_modules()))
    assert gm.act.inplace is False


def test_relu_in_place_module_only_relus_change_and_only_after_fresh_modules():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 4), nn.ReLU(), nn.Identity(), nn.ReLU())
    gm = fx.symbolic_trace(copy.deepcopy(model).eval())
    relu_in_place(gm.graph, dict(gm.named_modules()))
    # the ReLU after a Linear writes in place; a Dropout after a Linear keeps its own flag
    assert gm.get_submodule("3").inplace is True
    assert gm.get_submodule("1").inplace is False
    # Identity returns its input: the ReLU after it must not overwrite a tensor that others hold
    assert gm.get_submodule("5").inplace is False


def test_relu_in_place_module_relu_after_identity_does_not_overwrite_the_input():
    gm = fx.symbolic_trace(nn.Sequential(nn.Identity(), nn.ReLU()))
    relu_in_place(gm.graph, dict(gm.named_modules()))
    gm.recompile()
    x = torch.tensor([[-1.0, 2.0]])
    assert torch.equal(gm(x), torch.tensor([[0.0, 2.0]]))
    assert torch.equal(x, torch.tensor([[-1.0, 2.0]]))


# ---- pad_conv_channels -----------------------------------------------------------------------

class _FnChain(nn.Module):
    """Conv1d -> ``act`` (a function) -> Conv1d."""

    def __init__(self, act, mid: int = 110) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.act = nn.Conv1d(1, mid, 3), nn.Conv1d(mid, 41, 3), act

    def forward(self, x):
        return self.b(self.act(self.a(x)))


def _pad(model: nn.Module, **kw) -> tuple[fx.GraphModule, int, torch.Tensor, torch.Tensor]:
    x = torch.randn(5, 1, 12)
    model = model.eval()
    ref = model(x)
    gm = fx.symbolic_trace(copy.deepcopy(model))
    n = pad_conv_channels(gm, **kw)
    return gm, n, ref, gm(x)


@pytest.mark.parametrize("act", [torch.relu, torch.relu_, F.relu], ids=["torch.relu", "torch.relu_", "F.relu"])
def test_pad_conv_channels_pads_through_functional_relus(act):
    gm, n, ref, out = _pad(_FnChain(act))
    assert n == 1 and (gm.a.out_channels, gm.b.in_channels) == (112, 112)
    assert torch.allclose(out, ref, atol=1e-5)


def test_pad_conv_channels_skips_non_relu_activations_where_zero_channels_would_not_stay_zero():
    # sigmoid(0) = 0.5: padded channels would feed 0.5 into the consumer's zero columns
    for model in (_FnChain(torch.sigmoid), nn.Sequential(nn.Conv1d(1, 110, 3), nn.Sigmoid(), nn.Conv1d(110, 41, 3))):
        gm, n, ref, out = _pad(model)
        assert n == 0
        assert all(m.out_channels == 110 for m in gm.modules() if isinstance(m, nn.Conv1d) and m.in_channels == 1)
        assert torch.equal(out, ref)


def test_pad_conv_channels_goes_on_after_a_chain_it_does_not_pad_and_counts_each_chain():
    # 16 is already a block (skipped), 110 -> 112, then 100 -> 112 (+12 %, within 1/8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 16, 3), nn.ReLU(), nn.Conv1d(16, 110, 3), nn.ReLU(), nn.Conv1d(110, 100, 3),
                          nn.ReLU(), nn.Conv1d(100, 41, 3))
    gm, n, ref, out = _pad(model)
    assert n == 2
    assert [gm.get_submodule(str(i)).out_channels for i in (0, 2, 4, 6)] == [16, 112, 112, 41]
    assert [gm.get_submodule(str(i)).in_channels for i in (0, 2, 4, 6)] == [1, 16, 112, 112]
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize(("mid", "block", "padded_to"), [
    (111, 16, 112),  # one channel of padding is done
    (114, 16, 128),  # 14 more channels: 14 * 8 = 112 <= 114
    (113, 16, 113),  # 15 more: 120 > 113, more than 1/8
    (8, 9, 9),       # exactly 1/8 more (8 -> 9) is still done
    (112, 16, 112),  # already a multiple of the block
])
def test_pad_conv_channels_pads_up_to_the_block_when_at_most_one_eighth_more(mid, block, padded_to):
    gm, n, ref, out = _pad(_FnChain(torch.relu, mid), block=block)
    assert (n, gm.a.out_channels, gm.b.in_channels) == (int(padded_to != mid), padded_to, padded_to)
    assert torch.allclose(out, ref, atol=1e-5)


class _SharedProducer(nn.Module):
    """``a`` is called twice: padding it would change its second output's channels."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv1d(1, 110, 3), nn.Conv1d(110, 41, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x))), self.a(x + 1)


def test_pad_conv_channels_leaves_a_convolution_called_twice_alone():
    model = _SharedProducer().eval()
    x = torch.randn(2, 1, 12)
    gm = fx.symbolic_trace(copy.deepcopy(model))
    assert pad_conv_channels(gm) == 0
    assert gm.a.out_channels == 110 and gm(x)[1].shape == (2, 110, 10)


class _ArgNamedLikeConv(nn.Module):
    """The forward argument ``a`` shares its name with the convolution ``self.a``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv1d(1, 110, 3), nn.Conv1d(110, 41, 3)

    def forward(self, a, y):
        return self.b(torch.relu(a)), self.a(y)


def test_pad_conv_channels_takes_only_module_calls_for_convolutions():
    model = _ArgNamedLikeConv().eval()
    a, y = torch.randn(2, 110, 12), torch.randn(2, 1, 12)
    ref = model(a, y)
    gm = fx.symbolic_trace(copy.deepcopy(model))
    assert pad_conv_channels(gm) == 0
    assert gm.b.in_channels == 110
    assert all(torch.equal(o, r) for o, r in zip(gm(a, y), ref))


def test_pad_conv_channels_gives_a_producer_without_bias_a_zero_bias_and_frozen_parameters():
    model = nn.Sequential(nn.Conv1d(1, 110, 3, bias=False), nn.ReLU(), nn.Conv1d(110, 41, 3))
    gm, n, ref, out = _pad(model)
    producer, consumer = gm.get_submodule("0"), gm.get_submodule("2")
    assert n == 1 and torch.equal(producer.bias, torch.zeros(112))
    assert torch.allclose(out, ref, atol=1e-5)
    # the padded copies are inference constants, like the rest of the packed forward
    assert not any(p.requires_grad for p in (producer.weight, producer.bias, consumer.weight))


# ---- ChannelsLastConv1d / channels_last ------------------------------------------------------

@pytest.mark.parametrize("conv", [nn.Conv1d(2, 3, 3, padding=1, padding_mode="reflect"),
                                  nn.Conv1d(2, 3, 3, padding="same")], ids=["reflect", "same"])
def test_channels_last_conv1d_rejects_non_numeric_or_non_zero_padding(conv):
    with pytest.raises(TypeError, match=r"^ChannelsLastConv1d: only numeric zero padding$"):
        ChannelsLastConv1d(conv)


@pytest.mark.parametrize("bias", [True, False])
def test_channels_last_conv1d_matches_the_conv_with_frozen_parameters_and_2d_geometry(bias):
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=3, bias=bias)
    m = ChannelsLastConv1d(conv)
    x = torch.randn(3, 4, 17)
    assert torch.allclose(m(x), conv(x), atol=1e-5)
    assert (m.bias is None) == (not bias)
    assert not any(p.requires_grad for p in m.parameters())
    # the 1 x k Conv2d it runs: unit stride / dilation and no padding along the added height
    assert (m.stride, m.padding, m.dilation, m.groups) == ((1, 2), (0, 2), (1, 3), 1)


def test_channels_last_replaces_nested_conv1ds_in_their_parent():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU()), nn.Conv1d(4, 5, 3)).eval()
    x = torch.randn(3, 2, 10)
    ref = model(x)
    assert channels_last(model) == 2
    assert isinstance(model[0][0], ChannelsLastConv1d) and isinstance(model[1], ChannelsLastConv1d)
    assert [n for n, _ in model.named_children()] == ["0", "1"]
    assert torch.allclose(model(x), ref, atol=1e-5)


# ---- class_softmax ---------------------------------------------------------------------------

@pytest.mark.parametrize(("shape", "dim"), [
    ((3, 256, 10), -2),  # few classes, many rows: the transposed softmax
    ((640, 10), -2),     # 2-D logits too
    ((64, 10), -2),      # exactly 64 rows' worth (numel = 64 * C)
    ((63, 10), -1),      # fewer rows: the plain call
    ((6, 10), -1),
    ((3, 256, 16), -1),  # 16 classes: the plain call vectorises
    ((64, 16), -1),
    ((15,), -1),         # 1-D
])
def test_class_softmax_takes_the_transposed_path_only_for_few_classes_and_enough_rows(monkeypatch, shape, dim):
    torch.manual_seed(0)
    logits = torch.randn(*shape)
    expected = torch.softmax(logits, dim=-1)
    dims = []
    real = torch.softmax

    def spy(t, dim):
        dims.append(dim)
        return real(t, dim=dim)

    monkeypatch.setattr(torch, "softmax", spy)
    out = class_softmax(logits)
    assert dims == [dim]
    assert out.shape == logits.shape and out.is_contiguous()
    assert torch.allclose(out, expected, atol=1e-6)
