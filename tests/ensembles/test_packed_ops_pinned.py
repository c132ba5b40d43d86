"""Known answers for the packed forward's per-layer operations (src/freetickets/ensembles/packed_ops.py):
each equals its members' layers run one after another on the member-major ``(M*B, ...)`` layout."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from freetickets.ensembles.packed import PackedMembers
from freetickets.ensembles.packed_ops import packed_affine, packed_conv, packed_linear, replicate, shared_layer, unstack

M, B = 3, 4


def _members(x: torch.Tensor) -> list[torch.Tensor]:
    return list(x.reshape(M, -1, *x.shape[1:]))


@pytest.mark.parametrize("rest", [(), (5,), (5, 2)], ids=["2d", "3d", "4d"])
def test_packed_affine_is_each_members_channel_scale_and_shift(rest):
    torch.manual_seed(0)
    c = 6
    x, scale, shift = torch.randn(M * B, c, *rest), torch.randn(M, c), torch.randn(M, c)
    out = packed_affine(x, scale, shift)
    view = (1, c) + (1,) * len(rest)
    ref = torch.cat([xm * scale[i].reshape(view) + shift[i].reshape(view) for i, xm in enumerate(_members(x))])
    assert out.shape == x.shape
    assert torch.allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("rest", [(), (5,)], ids=["rows", "sequence"])
def test_packed_linear_is_each_members_linear_over_the_last_dimension(rest):
    torch.manual_seed(0)
    x, w, b = torch.randn(M * B, *rest, 6), torch.randn(M, 7, 6), torch.randn(M, 7)
    out = packed_linear(x, w.transpose(1, 2), b.unsqueeze(1))
    ref = torch.cat([F.linear(xm, w[i], b[i]) for i, xm in enumerate(_members(x))])
    assert out.shape == (M * B, *rest, 7)
    assert torch.allclose(out, ref, atol=1e-5)


def test_packed_members_stay_packed_with_a_linear_over_a_sequence_dimension():
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Linear(6, 5), nn.Flatten(1), nn.Linear(20, 3)).eval()
               for _ in range(2)]
    packed = PackedMembers(members)
    for batch in (1, 3):
        x = torch.randn(batch, 1, 8)
        assert torch.allclose(packed(x), torch.stack([m(x) for m in members]), atol=1e-5)
    assert packed.path == "packed"


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"), [
    ((3,), (2,), (1,), (2,)),                # dilated and strided 1-D
    ((3, 2), (2, 3), (1, 0), (2, 1)),        # dilated 2-D with a different stride per axis
    ((3, 3), (1, 2), (0, 1), (1, 1)),        # undilated 2-D
])
def test_packed_conv_is_each_members_convolution(kernel, stride, padding, dilation):
    torch.manual_seed(0)
    x = torch.randn(M * B, 2, *([11] * len(kernel)))
    w, b = torch.randn(M, 5, 2, *kernel), torch.randn(M, 5)
    conv = F.conv1d if len(kernel) == 1 else F.conv2d
    out = packed_conv(x, w, b, stride, padding, dilation)
    ref = torch.cat([conv(xm, w[i], b[i], stride, padding, dilation) for i, xm in enumerate(_members(x))])
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)


def _count_calls(monkeypatch, *names: str) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for name in names:
        real = getattr(torch, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(torch, name, spy)
    return counts


@pytest.mark.parametrize(("batch", "path"), [(1, "addmm"), (2, "baddbmm"), (5, "baddbmm")])
def test_shared_linear_writes_member_major_rows_with_one_batched_matmul_above_one_row(monkeypatch, batch, path):
    torch.manual_seed(0)
    x, w, b = torch.randn(batch, 4), torch.randn(M, 7, 4), torch.randn(M, 7)
    ref = torch.cat([F.linear(x, w[i], b[i]) for i in range(M)])
    weight = torch.cat(list(w)).t().contiguous()  # (F, M*O)
    counts = _count_calls(monkeypatch, "addmm", "baddbmm")
    out = shared_layer(x, weight, b.flatten(), M, None)
    assert counts == {"addmm": int(path == "addmm"), "baddbmm": int(path == "baddbmm")}
    assert out.shape == (M * batch, 7)
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("spatial", [(9,), (6, 5)], ids=["conv1d", "conv2d"])
def test_shared_conv_is_each_members_convolution_member_major(spatial):
    torch.manual_seed(0)
    x = torch.randn(B, 2, *spatial)
    kernel = (3,) * len(spatial)
    w, b = torch.randn(M, 5, 2, *kernel), torch.randn(M, 5)
    conv = F.conv1d if len(spatial) == 1 else F.conv2d
    args = ((1,) * len(spatial), (1,) * len(spatial), (1,) * len(spatial))
    out = shared_layer(x, torch.cat(list(w)), b.flatten(), M, args)
    ref = torch.cat([conv(x, w[i], b[i], *args) for i in range(M)])
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(B, 3), (B, 2, 5)])
def test_replicate_stacks_the_input_once_per_member(shape):
    x = torch.randn(*shape)
    assert torch.equal(replicate(x, M), torch.cat([x] * M))


def test_unstack_splits_member_major_logits_and_rejects_non_tensors():
    out = torch.arange(M * B * 2.0).reshape(M * B, 2)
    assert torch.equal(unstack(out, M), out.reshape(M, B, 2))
    with pytest.raises(TypeError, match=r"^the model returns a tuple, not a logits tensor$"):
        unstack((out,), M)
