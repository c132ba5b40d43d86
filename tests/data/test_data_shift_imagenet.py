"""MNIST-1D OoD and corruption sets; ImageNet folder reader (only with torchvision)."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from freetickets.data import corruption_sets, list_corruptions, list_ood, load_data, ood_sets
from freetickets.errors import UserError

N = 500  # -> 100 test sequences


def test_mnist1d_ood_sets():
    assert list_ood("mnist1d") == ["shuffled", "noise", "class_mix"]
    a = ood_sets("mnist1d", num_samples=N, seed=0)
    b = ood_sets("mnist1d", num_samples=N, seed=0)
    test = load_data("mnist1d", num_samples=N).test
    assert set(a) == {"shuffled", "noise", "class_mix"}
    for k in a:
        assert a[k].shape == (100, 1, 40) and a[k].dtype == torch.float32
        assert torch.equal(a[k], b[k])  # deterministic
        assert not torch.equal(a[k], test.x)
    # shuffled keeps each sequence's values, only the order changes
    assert torch.equal(a["shuffled"].sort(-1).values, test.x.sort(-1).values)
    # noise and class_mix have roughly the data's scale
    for k in ("noise", "class_mix"):
        assert abs(a[k].std().item() - test.x.std().item()) < 0.2
    c = ood_sets("mnist1d", names=["noise"], num_samples=N, seed=1)
    assert list(c) == ["noise"] and not torch.equal(c["noise"], a["noise"])
    with pytest.raises(ValueError, match="shuffled, noise, class_mix"):
        ood_sets("mnist1d", names=["svhn"], num_samples=N)
    with pytest.raises(ValueError, match="valid"):
        list_ood("svhn")


def test_mnist1d_corruptions():
    types = list_corruptions("mnist1d")
    assert len(types) >= 6
    splits = corruption_sets("mnist1d", "builtin", num_samples=N)
    again = corruption_sets("mnist1d", "builtin", num_samples=N)
    test = load_data("mnist1d", num_samples=N).test
    assert len(splits) == 5 * len(types)
    assert [(s.type, s.severity) for s in splits] == [(t, k) for t in types for k in range(1, 6)]
    for s, s2 in zip(splits, again):
        assert s.x.shape == (100, 1, 40) and s.x.dtype == torch.float32
        assert torch.equal(s.y, test.y)
        assert torch.equal(s.x, s2.x)
        assert torch.isfinite(s.x).all()
        assert not torch.equal(s.x, test.x)
    # severity increases the distortion for every type
    for t in types:
        errs = [(s.x - test.x).pow(2).mean().item() for s in splits if s.type == t]
        assert errs[0] < errs[-1], t
    other = corruption_sets("mnist1d", seed=1, num_samples=N, types=["gaussian_noise"])
    assert len(other) == 5 and not torch.equal(other[0].x, splits[0].x)
    with pytest.raises(ValueError, match="builtin"):
        corruption_sets("mnist1d", "/some/dir", num_samples=N)
    with pytest.raises(ValueError, match="gaussian_noise"):
        corruption_sets("mnist1d", types=["fog"], num_samples=N)


def test_imagenet_without_torchvision_is_a_clear_error(tmp_path):
    (tmp_path / "train" / "n01").mkdir(parents=True)
    (tmp_path / "val" / "n01").mkdir(parents=True)
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed; the missing-extra message cannot be tested")
    with pytest.raises(UserError, match=r"freetickets\[vision\]"):
        load_data("imagenet", tmp_path)


def test_imagenet_missing_layout(tmp_path):
    with pytest.raises(UserError, match="train/ and val/"):
        load_data("imagenet", tmp_path)


def test_imagenet_folder(tmp_path):
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision not installed (optional extra freetickets[vision])")
    from PIL import Image

    for split, n in (("train", 130), ("val", 2)):
        for c in ("n01", "n02"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((40, 48, 3), i % 255, np.uint8)).save(d / f"{i}.png")
    b = load_data("imagenet", tmp_path)
    assert b.num_classes == 2 and len(b.test) == 4
    assert len(b.train) + len(b.val) == 260 and len(b.val) == 2
    x, y = b.train[0]
    assert x.shape == (3, 224, 224) and isinstance(y, int)
