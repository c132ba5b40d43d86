"""Readers for the official file formats, on tiny files written here in the real layout."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from freetickets.data import corruption_sets, list_corruptions, list_ood, load_data, ood_sets
from freetickets.data import cifar as cifar_mod
from freetickets.data.download import Resource, download_file, fetch_resource, safe_extract_tar
from freetickets.errors import UnsafeFileError, UserError

N_PER_BATCH = 1100  # 5 batches -> 5500 training images (validation takes the last 5000)
N_TEST = 30


def _batch(n, label_key, num_classes, seed):
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


def _dump(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(1, 6):
        _dump(_batch(N_PER_BATCH, b"labels", 10, i), d / f"data_batch_{i}")
    _dump(_batch(N_TEST, b"labels", 10, 0), d / "test_batch")
    return d


def write_cifar100(root: Path) -> Path:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    tr = _batch(5 * N_PER_BATCH, b"fine_labels", 100, 1)
    tr[b"coarse_labels"] = [v // 5 for v in tr[b"fine_labels"]]
    _dump(tr, d / "train")
    _dump(_batch(N_TEST, b"fine_labels", 100, 2), d / "test")
    return d


def write_svhn(root: Path, n=20) -> None:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
    y[0, 0] = 10
    scipy.io.savemat(root / "test_32x32.mat", {"X": X, "y": y})


@pytest.fixture
def cifar_root(tmp_path):
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    write_svhn(tmp_path)
    return tmp_path


def test_cifar10_bundle(cifar_root):
    b = load_data("cifar10", cifar_root)
    assert b.num_classes == 10 and b.input_shape == (3, 32, 32)
    assert b.train.x.shape == (5 * N_PER_BATCH - 5000, 3, 32, 32) and b.train.x.dtype == torch.uint8
    assert b.val.x.shape == (5000, 3, 32, 32) and b.test.x.shape == (N_TEST, 3, 32, 32)
    assert b.train.y.dtype == torch.int64
    # layout: row-major 3072 = 3 x 32 x 32, validation = last 5000 training images
    raw = pickle.load(open(cifar_root / "cifar-10-batches-py" / "data_batch_5", "rb"), encoding="bytes")
    assert torch.equal(b.val.x[-1], torch.from_numpy(raw[b"data"][-1].reshape(3, 32, 32)))
    assert b.val.y[-1].item() == raw[b"labels"][-1]
    first = pickle.load(open(cifar_root / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="bytes")
    assert torch.equal(b.train.x[0], torch.from_numpy(first[b"data"][0].reshape(3, 32, 32)))
    x = b.normalize(b.augment(b.train.x[:8], torch.Generator().manual_seed(0)))
    assert x.dtype == torch.float32 and x.shape == (8, 3, 32, 32)
    # the batches folder itself is accepted too
    assert load_data("CIFAR-10", cifar_root / "cifar-10-batches-py").test.x.shape[0] == N_TEST


def test_cifar100_bundle(cifar_root):
    b = load_data("cifar100", cifar_root)
    assert b.num_classes == 100 and b.val.x.shape[0] == 5000 and b.test.y.max() < 100


def test_missing_and_bad_layout(tmp_path):
    with pytest.raises(UserError) as exc:
        load_data("cifar10", tmp_path)
    msg = str(exc.value)
    assert "cifar-10-batches-py" in msg and str(tmp_path) in msg and "\n" not in msg
    d = write_cifar10(tmp_path / "x")
    (d / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_1..5"):
        load_data("cifar10", tmp_path / "x")
    with pytest.raises(UserError, match="cifar-100-python"):
        load_data("cifar100", tmp_path)


def test_corrupt_and_wrong_format_batches(tmp_path):
    d = write_cifar10(tmp_path)
    good = (d / "test_batch").read_bytes()
    (d / "test_batch").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_data("cifar10", tmp_path)
    _dump({b"data": np.zeros((3, 10), np.uint8), b"labels": [0, 1, 2]}, d / "test_batch")
    with pytest.raises(UserError, match=r"\(N, 3072\)"):
        load_data("cifar10", tmp_path)
    _dump([1, 2, 3], d / "test_batch")
    with pytest.raises(UserError, match="not a CIFAR-10 python batch"):
        load_data("cifar10", tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    d = write_cifar10(tmp_path)
    _dump({b"data": _Evil(), b"labels": []}, d / "test_batch")
    with pytest.raises(UnsafeFileError, match="refused"):
        load_data("cifar10", tmp_path)
    assert issubclass(UnsafeFileError, UserError)
    # numpy arrays under protocols 2..5 are fine
    for proto in (2, 3, 4, 5):
        p = tmp_path / f"p{proto}"
        arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
        with open(p, "wb") as f:
            pickle.dump({b"data": arr, b"labels": [1, 2, 3], "s": "x"}, f, protocol=proto)
        out = cifar_mod.safe_unpickle(p)
        assert np.array_equal(out[b"data"], arr) and out[b"labels"] == [1, 2, 3]


def test_svhn_and_cifar_ood(cifar_root):
    x, y = cifar_mod.read_svhn_test(cifar_root)
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8 and y[0] == 0 and y.max() <= 9
    raw = scipy.io.loadmat(cifar_root / "test_32x32.mat")["X"]
    assert np.array_equal(x[3, 1], raw[:, :, 1, 3])  # (32,32,3,N) -> (N,3,32,32)
    assert list_ood("cifar10") == ["svhn", "cifar100"] and list_ood("cifar100") == ["svhn", "cifar10"]
    sets = ood_sets("cifar10", cifar_root)
    assert sets["svhn"].shape == (20, 3, 32, 32) and sets["svhn"].dtype == torch.float32
    assert sets["cifar100"].shape == (N_TEST, 3, 32, 32)
    norm = cifar_mod.cifar_normalize("cifar10")
    assert torch.equal(sets["svhn"], norm(torch.from_numpy(x)))
    assert set(ood_sets("cifar100", cifar_root, names=["cifar10"])) == {"cifar10"}
    with pytest.raises(ValueError, match="svhn, cifar100"):
        ood_sets("cifar10", cifar_root, names=["mnist"])


def test_svhn_missing_and_corrupt(tmp_path):
    with pytest.raises(UserError, match="test_32x32.mat"):
        ood_sets("cifar10", tmp_path, names=["svhn"])
    (tmp_path / "test_32x32.mat").write_bytes(b"garbage" * 10)
    with pytest.raises(UserError, match="corrupt"):
        ood_sets("cifar10", tmp_path, names=["svhn"])


def _write_cifar_c(root: Path, n=12, types=("fog", "gaussian_noise")):
    d = root / "CIFAR-10-C"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for t in types:
        arr = np.stack([np.full((n, 32, 32, 3), 10 * s + i, np.uint8) for s in range(1, 6) for i in [0]]).reshape(5 * n, 32, 32, 3)
        arr[:, 0, 0, 0] = rng.integers(0, 256, 5 * n)
        np.save(d / f"{t}.npy", arr)
    np.save(d / "labels.npy", np.tile(np.arange(n) % 10, 5).astype(np.uint8))
    return d


def test_cifar_c(tmp_path):
    d = _write_cifar_c(tmp_path)
    assert list_corruptions("cifar10", tmp_path) == ["fog", "gaussian_noise"]
    assert len(list_corruptions("cifar10")) == 19
    splits = corruption_sets("cifar10", str(tmp_path))
    assert [(s.type, s.severity) for s in splits] == [(t, k) for t in ("fog", "gaussian_noise") for k in range(1, 6)]
    norm = cifar_mod.cifar_normalize("cifar10")
    s3 = splits[2]
    x, y = s3.load()
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    raw = np.load(d / "fog.npy")[24:36].transpose(0, 3, 1, 2)
    assert torch.equal(x, norm(torch.from_numpy(np.ascontiguousarray(raw))))
    assert torch.equal(y, torch.arange(12) % 10)
    assert torch.equal(corruption_sets("cifar10", d)[2].x, x)  # the C folder itself works too
    with pytest.raises(UserError, match="not built in"):
        corruption_sets("cifar10", "builtin")
    with pytest.raises(UserError, match="labels.npy"):
        corruption_sets("cifar100", tmp_path)
    np.save(d / "frost.npy", np.zeros((7, 32, 32, 3), np.uint8))
    with pytest.raises(UserError, match="frost.npy"):
        corruption_sets("cifar10", tmp_path)
    (d / "frost.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(UserError, match="corrupt"):
        corruption_sets("cifar10", tmp_path)


# ------------------------------------------------------------------------------ download logic
def _tarball(tmp_path: Path, members: dict[str, bytes], name="a.tar.gz") -> Path:
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        for n, data in members.items():
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_download_checksum_and_extract_via_file_url(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_cifar10(src)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    res = {"cifar10": Resource(archive.as_uri(), "cifar-10-python.tar.gz", _md5(archive), True)}
    dest = tmp_path / "data"
    fetch_resource("cifar10", dest, resources=res)  # real urllib on a file:// URL
    assert load_data("cifar10", dest).test.x.shape == (N_TEST, 3, 32, 32)


def test_download_load_data_with_injected_fetch(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    write_svhn(src)
    payload = (src / "test_32x32.mat").read_bytes()
    from freetickets.data import download

    monkeypatch.setitem(download.RESOURCES, "svhn", Resource("https://example.invalid/t.mat", "test_32x32.mat", hashlib.md5(payload).hexdigest(), False))
    calls = []

    def fetch(url, dest):
        calls.append(url)
        Path(dest).write_bytes(payload)

    x, _ = cifar_mod.read_svhn_test(tmp_path / "d", download=True, fetch=fetch)
    assert x.shape[0] == 20 and calls == ["https://example.invalid/t.mat"]


def test_download_rejects_bad_checksum(tmp_path):
    def fetch(url, dest):
        Path(dest).write_bytes(b"tampered")

    with pytest.raises(UserError, match="checksum mismatch"):
        download_file("https://example.invalid/x", tmp_path / "x.tar.gz", "0" * 32, fetch=fetch)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_download_skips_when_present(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"hello")
    download_file("https://example.invalid/f", p, _md5(p), fetch=lambda u, d: pytest.fail("fetched"))


def test_official_checksums_recorded():
    from freetickets.data.download import RESOURCES

    assert RESOURCES["cifar10"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert RESOURCES["cifar100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert RESOURCES["svhn"].md5 == "eb5a983be6a315427106f1b164d9cef3"


@pytest.mark.parametrize("bad", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_safe_extract_refuses_traversal(tmp_path, bad):
    archive = _tarball(tmp_path, {"ok/file.txt": b"1", bad: b"2"})
    dest = tmp_path / "out"
    with pytest.raises(UserError, match="unsafe"):
        safe_extract_tar(archive, dest)
    assert not (tmp_path / "evil.txt").exists() and not (dest / "ok" / "file.txt").exists()


def test_safe_extract_refuses_links_and_corrupt(tmp_path):
    path = tmp_path / "l.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(UserError, match="unsafe"):
        safe_extract_tar(path, tmp_path / "out")
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UserError, match="corrupt"):
        safe_extract_tar(bad, tmp_path / "out2")
