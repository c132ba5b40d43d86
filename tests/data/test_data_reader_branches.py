"""The CIFAR / CIFAR-C reader branches that decide labels and refuse bad files (issue 13).

Each test fails when its branch is removed: too few training images, training/test labels out
of range, CIFAR-C labels stored once (n) versus per severity (5n, which must be sliced per
severity), CIFAR-C labels out of range or of the wrong count.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from freetickets.data import corruption_sets, load_data
from freetickets.data.cifar import VAL_SIZE
from freetickets.errors import UserError


def _write_cifar10(root: Path, per_batch: int, label=None, test_label=None) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = 20 if name == "test_batch" else per_batch
        labels = [int(v) for v in rng.integers(0, 10, n)]
        if label is not None and name != "test_batch":
            labels[-1] = label
        if test_label is not None and name == "test_batch":
            labels[0] = test_label
        with open(d / name, "wb") as f:
            pickle.dump({b"labels": labels, b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}, f)
    return d


def test_too_few_training_images_for_the_validation_split(tmp_path):
    assert VAL_SIZE == 5000
    _write_cifar10(tmp_path, per_batch=1000)  # 5000 training images: nothing left to train on
    with pytest.raises(UserError, match="only 5000 training images; need more than 5000"):
        load_data("cifar10", tmp_path)
    _write_cifar10(tmp_path / "ok", per_batch=1001)
    assert load_data("cifar10", tmp_path / "ok").train.x.shape[0] == 5005 - 5000


@pytest.mark.parametrize("where", ["train", "test"])
@pytest.mark.parametrize("bad", [10, -1])
def test_cifar_labels_out_of_range(tmp_path, where, bad):
    kw = {"label": bad} if where == "train" else {"test_label": bad}
    _write_cifar10(tmp_path, per_batch=1001, **kw)
    split = "training" if where == "train" else "test"
    with pytest.raises(UserError, match=f"{split} labels outside 0..9"):
        load_data("cifar10", tmp_path)


def _write_c(root: Path, labels: np.ndarray, n: int = 6) -> Path:
    d = root / "CIFAR-10-C"
    d.mkdir(parents=True)
    np.save(d / "fog.npy", np.zeros((5 * n, 32, 32, 3), np.uint8))
    np.save(d / "labels.npy", labels)
    return d


def test_cifar_c_labels_per_severity_are_sliced(tmp_path):
    n = 6
    labels = np.arange(5 * n) % 10  # different labels for each severity block
    _write_c(tmp_path, labels.astype(np.int64), n)
    splits = corruption_sets("cifar10", str(tmp_path))
    for s in splits:
        _, y = s.load()
        assert torch.equal(y, torch.from_numpy(labels[(s.severity - 1) * n: s.severity * n])), s.severity


def test_cifar_c_labels_stored_once_serve_every_severity(tmp_path):
    n = 6
    labels = np.array([3, 1, 4, 1, 5, 9], np.int64)
    _write_c(tmp_path, labels, n)
    for s in corruption_sets("cifar10", str(tmp_path)):
        _, y = s.load()
        assert torch.equal(y, torch.from_numpy(labels)), s.severity


@pytest.mark.parametrize("bad", [10, -1])
def test_cifar_c_labels_out_of_range(tmp_path, bad):
    labels = np.zeros(30, np.int64)
    labels[7] = bad
    _write_c(tmp_path, labels)
    with pytest.raises(UserError, match=r"labels\.npy: labels outside 0\.\.9"):
        corruption_sets("cifar10", str(tmp_path))


def test_cifar_c_label_count_must_match(tmp_path):
    _write_c(tmp_path, np.zeros(7, np.int64))
    with pytest.raises(UserError, match="7 labels, expected 6 or 30 for fog.npy"):
        corruption_sets("cifar10", str(tmp_path))
