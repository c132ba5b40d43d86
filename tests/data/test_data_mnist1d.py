"""MNIST-1D generation, splits, caching and global-RNG hygiene."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from freetickets.data import cache_dir, list_data, load_data
from freetickets.data import mnist1d as m1d


def test_list_and_unknown_name():
    assert list_data() == ["mnist1d", "cifar10", "cifar100", "imagenet"]
    with pytest.raises(ValueError) as exc:
        load_data("mnist2d")
    msg = str(exc.value)
    for name in list_data():
        assert name in msg


def test_shapes_and_splits():
    b = load_data("mnist1d", num_samples=500)
    assert b.name == "mnist1d" and b.num_classes == 10 and b.input_shape == (1, 40)
    # package split 80/20 -> 400 train portion (last 10% = 40 val) and 100 test
    assert b.train.x.shape == (360, 1, 40) and b.val.x.shape == (40, 1, 40) and b.test.x.shape == (100, 1, 40)
    for s in (b.train, b.val, b.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert int(s.y.min()) >= 0 and int(s.y.max()) <= 9
    assert b.augment is None
    assert torch.equal(b.normalize(b.test.x), b.test.x)
    # validation is the *last* 10% of the package's training portion
    raw = m1d.generate_mnist1d(500, 0)
    assert np.array_equal(b.val.x[:, 0].numpy(), raw["x"][-40:])
    assert np.array_equal(b.train.x[:, 0].numpy(), raw["x"][:360])
    assert np.array_equal(b.test.y.numpy(), raw["y_test"])


def test_global_rng_untouched():
    np.random.seed(1234)
    random.seed(99)
    np_before = np.random.get_state()
    py_before = random.getstate()
    m1d.generate_mnist1d(100, 5)
    np_after = np.random.get_state()
    assert np_before[0] == np_after[0] and np.array_equal(np_before[1], np_after[1]) and np_before[2:] == np_after[2:]
    assert random.getstate() == py_before
    # and the global streams continue as if nothing happened
    expected = np.random.RandomState(1234).rand(3)
    assert np.allclose(np.random.rand(3), expected)


def test_cache_written_and_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("FREETICKETS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    path = m1d.mnist1d_cache_path(300, 3)
    assert path.parent == tmp_path / "c" and not path.exists()
    b1 = load_data("mnist1d", num_samples=300, seed=3)
    assert path.is_file()
    # the second load must read the cache, not regenerate
    monkeypatch.setattr(m1d, "generate_mnist1d", lambda *a, **k: pytest.fail("regenerated despite cache"))
    b2 = load_data("mnist1d", num_samples=300, seed=3)
    assert torch.equal(b1.train.x, b2.train.x) and torch.equal(b1.test.y, b2.test.y)
    # different generation args -> different file name
    assert m1d.mnist1d_cache_path(300, 4) != path and m1d.mnist1d_cache_path(400, 3) != path


def test_corrupt_cache_is_regenerated(monkeypatch, tmp_path):
    monkeypatch.setenv("FREETICKETS_CACHE", str(tmp_path))
    path = m1d.mnist1d_cache_path(200, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a zip file")
    b = load_data("mnist1d", num_samples=200)
    assert b.test.x.shape == (40, 1, 40)
    with np.load(path) as f:  # rewritten atomically with valid contents
        assert f["x"].shape == (160, 40)


def test_cache_dir_fallbacks(monkeypatch, tmp_path):
    monkeypatch.delenv("FREETICKETS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "freetickets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "freetickets"


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_samples"):
        load_data("mnist1d", num_samples=55)
    with pytest.raises(ValueError, match="num_samples"):
        load_data("cifar10", num_samples=100)


def test_default_size_is_10000():
    assert m1d.DEFAULT_NUM_SAMPLES == 10_000
    assert "n10000" in m1d.mnist1d_cache_path().name
