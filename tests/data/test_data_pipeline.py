"""Tensor augmentation, normalisation and the resumable BatchIterator."""
from __future__ import annotations

import pickle

import pytest
import torch

from freetickets.data import BatchIterator, Normalize, RandomCropFlip, TensorSplit, derive_seed, iterate_eval


def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    # values >= 1 so zeros can only come from padding
    return torch.randint(1, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def test_crop_flip_shape_dtype_and_padding():
    x = _images()
    out = RandomCropFlip(4)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    zero_rows = (out == 0).all(dim=(1, 3))  # (B, H): whole padded rows
    zero_cols = (out == 0).all(dim=(1, 2))
    shifted = zero_rows.any(1) | zero_cols.any(1)
    assert shifted.float().mean() > 0.5  # most images are shifted by at least one pixel
    # zeros appear only as full border rows/columns
    assert ((out == 0).sum() == (out == 0).all(1, keepdim=True).expand_as(out).sum())


def test_crop_flip_matches_reference_per_image():
    x = _images(16)
    aug = RandomCropFlip(4)
    out = aug(x, torch.Generator().manual_seed(7))
    dy, dx, flip = aug.draw(16, torch.Generator().manual_seed(7))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(16):
        ref = padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        if flip[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref)


def test_flip_rate_deterministic_and_about_half():
    aug = RandomCropFlip(0)
    x = _images(1000, seed=1)
    out = aug(x, torch.Generator().manual_seed(0))
    flipped = (out != x).flatten(1).any(1)
    assert torch.equal(out[flipped], x[flipped].flip(-1))
    count = int(flipped.sum())
    _, _, flip = aug.draw(1000, torch.Generator().manual_seed(0))
    assert count == int(flip.sum())
    assert 450 <= count <= 550


def test_augment_determinism_and_seed_dependence():
    x = _images()
    aug = RandomCropFlip(4)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # float inputs work too (padding value 0 in that space)
    f = aug(x.float(), torch.Generator().manual_seed(3))
    assert torch.equal(f, a.float())


def test_normalize_matches_formula_and_pickles():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    norm = Normalize(mean, std)
    x = _images(4)
    ref = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(norm(x), ref, atol=1e-5)
    assert norm(x).dtype == torch.float32
    assert torch.allclose(pickle.loads(pickle.dumps(norm))(x), ref, atol=1e-5)
    pickle.loads(pickle.dumps(RandomCropFlip(4)))
    with pytest.raises(ValueError):
        norm(torch.zeros(2, 1, 4, 4))


def _split(n=300):
    return TensorSplit(_images(n, seed=2), torch.arange(n) % 10)


def test_batch_iterator_len_order_and_types():
    s = _split(300)
    it = BatchIterator(s, 64, shuffle=True, seed=0, epoch=0)
    assert len(it) == 5
    assert len(BatchIterator(s, 64, shuffle=True, seed=0, epoch=0, drop_last=True)) == 4
    assert len(BatchIterator(s, 64, shuffle=True, seed=0, epoch=0, start_batch=3)) == 2
    ys = []
    for x, y in it:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.device == s.x.device
        ys.append(y)
    ys = torch.cat(ys)
    assert sorted(ys.tolist()) == sorted(s.y.tolist())  # every sample exactly once
    xs = torch.cat([x for x, _ in BatchIterator(s, 64, shuffle=False, seed=0, epoch=0)])
    assert torch.equal(xs, s.x.float())
    # permutation depends on (seed, epoch) and on nothing else
    order = lambda seed, epoch: BatchIterator(s, 300, shuffle=True, seed=seed, epoch=epoch).indices()
    assert torch.equal(order(0, 0), order(0, 0))
    assert not torch.equal(order(0, 0), order(0, 1)) and not torch.equal(order(0, 0), order(1, 0))


def test_batch_iterator_resume_is_bitwise():
    s = _split(300)
    kw = dict(shuffle=True, seed=5, epoch=2, augment=RandomCropFlip(4), normalize=Normalize((0.5,) * 3, (0.25,) * 3))
    full = list(BatchIterator(s, 32, **kw))
    torch.manual_seed(123)  # global RNG state must not matter
    tail = list(BatchIterator(s, 32, start_batch=4, **kw))
    assert len(tail) == len(full) - 4
    for (xa, ya), (xb, yb) in zip(full[4:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = list(BatchIterator(s, 32, **{**kw, "seed": 6}))
    assert not torch.equal(full[0][0], other[0][0])


def test_batch_iterator_sharding():
    s = _split(301)
    parts = [BatchIterator(s, 16, shuffle=True, seed=0, epoch=0, rank=r, world_size=2) for r in range(2)]
    assert len(parts[0]) == len(parts[1])
    a, b = (set(p.indices().tolist()) for p in parts)
    assert not a & b and len(a) + len(b) == 300
    with pytest.raises(ValueError):
        BatchIterator(s, 0, shuffle=True, seed=0, epoch=0)


def test_iterate_eval():
    x = _images(70)
    norm = Normalize((0.5,) * 3, (0.25,) * 3)
    batches = list(iterate_eval(x, 32, norm))
    assert [len(b) for b in batches] == [32, 32, 6]
    assert torch.equal(torch.cat(batches), norm(x))
    assert torch.equal(torch.cat(list(iterate_eval(x, 50))), x.float())


def test_derive_seed_stable():
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert derive_seed("a", 1) != derive_seed("a1")
    assert 0 <= derive_seed(-5, "x") < 2**63


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batch_iterator_same_on_cuda_as_cpu():
    s = _split(200)
    kw = dict(shuffle=True, seed=1, epoch=3, augment=RandomCropFlip(4))
    cpu = list(BatchIterator(s, 64, **kw, normalize=lambda x: x))
    gpu = list(BatchIterator(s.to("cuda"), 64, **kw, normalize=lambda x: x))
    for (xa, ya), (xb, yb) in zip(cpu, gpu):
        assert xb.device.type == "cuda"
        assert torch.equal(xa, xb.cpu()) and torch.equal(ya, yb.cpu())
