"""CIFAR-10/100 (official python-pickle layout), SVHN test set and CIFAR-10-C/100-C readers.

Data stay as ``uint8`` tensors ``(N, 3, 32, 32)`` on the requested device; augmentation
(:class:`RandomCropFlip`, 4-pixel zero padding + horizontal flip) and normalisation run per batch.
Validation is the last 5000 training images (as in the released code); training uses the first
45000.

The CIFAR archives are Python pickles. These are data files from the user's own directory, but a
pickle can run code, so they are read with a restricted unpickler that only rebuilds plain
containers and NumPy arrays; anything else is refused with :class:`UnsafeFileError`.
"""
from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from freetickets.data.base import CorruptedSplit, DataBundle, TensorSplit, default_data_dir
from freetickets.data.transforms import Normalize, RandomCropFlip
from freetickets.errors import UnsafeFileError, UserError

logger = logging.getLogger(__name__)

__all__ = [
    "CIFAR_STATS",
    "read_cifar",
    "load_cifar",
    "read_svhn_test",
    "cifar_c_splits",
    "list_cifar_c",
    "safe_unpickle",
]

# Per-channel mean and std of the training images (pixel values in [0, 1]).
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
VAL_SIZE = 5000
_TRAIN_SIZE = 50000
_TEST_SIZE = 10000

_LAYOUT = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}
_PRETTY = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


# ----------------------------------------------------------------------------- restricted pickle
_ALLOWED_GLOBALS = {
    # containers and scalars (normally opcodes; some writers reference them by name)
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "bytes"),
    ("builtins", "bytearray"), ("builtins", "str"), ("builtins", "int"), ("builtins", "float"),
    ("__builtin__", "dict"), ("__builtin__", "list"), ("__builtin__", "tuple"),
    ("__builtin__", "str"), ("__builtin__", "int"), ("__builtin__", "long"),
    ("__builtin__", "float"), ("__builtin__", "bytearray"),
    # how Python 3 writes bytes under protocol <= 2
    ("_codecs", "encode"),
    # NumPy array reconstruction (NumPy 1.x and 2.x module names)
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):  # NumPy 2 dtype classes
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def safe_unpickle(path: str | os.PathLike) -> Any:
    """Read a data pickle (CIFAR's format) without running code.

    Uses ``encoding="bytes"`` (the CIFAR files were written by Python 2, their keys are bytes).
    Raises :class:`UnsafeFileError` if the file references anything but plain containers and
    NumPy arrays, :class:`UserError` if it is missing or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        if "is not allowed" in str(exc):
            raise UnsafeFileError(
                f"{path}: refused to load: the pickle references {str(exc).split(' is not')[0]}, "
                "not plain data (replace it with the official file)"
            ) from None
        raise UserError(f"{path}: corrupt or truncated pickle ({exc}); replace it with the official file") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError, OSError) as exc:
        raise UserError(
            f"{path}: corrupt or truncated pickle ({type(exc).__name__}); replace it with the official file"
        ) from None


def _read_batch(path: Path, label_key: bytes, pretty: str) -> tuple[np.ndarray, np.ndarray]:
    d = safe_unpickle(path)
    if not isinstance(d, dict) or b"data" not in d or label_key not in d:
        raise UserError(
            f"{path}: not a {pretty} python batch (expected a dict with b'data' and {label_key!r})"
        )
    data, labels = d[b"data"], d[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{path}: b'data' must be a uint8 array of shape (N, 3072)")
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (data.shape[0],):
        raise UserError(f"{path}: {label_key!r} has {y.size} entries for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), y


def _find_dir(name: str, data_dir: Path) -> Optional[Path]:
    sub, train_files, test_files, _ = _LAYOUT[name]
    for cand in (data_dir / sub, data_dir):
        if all((cand / f).is_file() for f in train_files + test_files):
            return cand
    return None


def _layout_hint(name: str, data_dir: Path) -> str:
    sub, train_files, test_files, _ = _LAYOUT[name]
    files = ", ".join(train_files + test_files) if name == "cifar100" else "data_batch_1..5, test_batch"
    return (
        f"{_PRETTY[name]} not found: put the python version ({sub}/ with {files}) "
        f"under {data_dir}, or pass download=True"
    )


def read_cifar(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = False,
               fetch: Any = None, train: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train (50000,3,32,32) uint8, y_train int64, x_test (10000,...), y_test)`` from the
    official python layout under ``data_dir`` (or ``data_dir`` being the batches folder).
    ``train=False`` skips reading the training batches (returned empty), e.g. for OoD use."""
    if name not in _LAYOUT:
        raise ValueError(f"unknown CIFAR name {name!r}; valid: {', '.join(_LAYOUT)}")
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    folder = _find_dir(name, data_dir)
    if folder is None and download:
        from freetickets.data.download import fetch_resource

        fetch_resource(name, data_dir, fetch=fetch)
        folder = _find_dir(name, data_dir)
    if folder is None:
        raise UserError(_layout_hint(name, data_dir))
    _, train_files, test_files, label_key = _LAYOUT[name]
    pretty = _PRETTY[name]
    test = [_read_batch(folder / f, label_key, pretty) for f in test_files]
    if not train:
        empty = np.zeros((0, 3, 32, 32), np.uint8), np.zeros((0,), np.int64)
        return empty[0], empty[1], np.concatenate([a for a, _ in test]), np.concatenate([b for _, b in test])
    train_batches = [_read_batch(folder / f, label_key, pretty) for f in train_files]
    x_train = np.concatenate([a for a, _ in train_batches])
    y_train = np.concatenate([b for _, b in train_batches])
    x_test = np.concatenate([a for a, _ in test])
    y_test = np.concatenate([b for _, b in test])
    k = NUM_CLASSES[name]
    for split, y in (("training", y_train), ("test", y_test)):
        if y.size and (y.min() < 0 or y.max() >= k):
            raise UserError(f"{folder}: {split} labels outside 0..{k - 1}; is this really {pretty}?")
    if len(y_train) <= VAL_SIZE:
        raise UserError(f"{folder}: only {len(y_train)} training images; need more than {VAL_SIZE}")
    if len(y_train) != _TRAIN_SIZE or len(y_test) != _TEST_SIZE:
        logger.warning("%s: %d training / %d test images (official: 50000 / 10000)", folder, len(y_train), len(y_test))
    return x_train, y_train, x_test, y_test


def cifar_normalize(name: str) -> Normalize:
    mean, std = CIFAR_STATS[name]
    return Normalize(mean, std, scale=255.0)


def load_cifar(name: str, data_dir: str | os.PathLike | None = None, *, device: Any = "cpu",
               download: bool = False, fetch: Any = None) -> DataBundle:
    """The CIFAR-10/100 :class:`DataBundle`: uint8 splits on ``device``; train = first 45000,
    val = last 5000 training images, test = the official test set."""
    x_train, y_train, x_test, y_test = read_cifar(name, data_dir, download=download, fetch=fetch)
    n = len(y_train) - VAL_SIZE

    def split(x: np.ndarray, y: np.ndarray) -> TensorSplit:
        return TensorSplit(torch.from_numpy(np.ascontiguousarray(x)).to(device),
                           torch.from_numpy(np.ascontiguousarray(y)).to(device))

    return DataBundle(
        name=name,
        num_classes=NUM_CLASSES[name],
        input_shape=(3, 32, 32),
        train=split(x_train[:n], y_train[:n]),
        val=split(x_train[n:], y_train[n:]),
        test=split(x_test, y_test),
        augment=RandomCropFlip(padding=4),
        normalize=cifar_normalize(name),
        meta={"data_dir": str(Path(data_dir).expanduser() if data_dir is not None else default_data_dir())},
    )


# ----------------------------------------------------------------------------- SVHN
def read_svhn_test(data_dir: str | os.PathLike | None = None, *, download: bool = False,
                   fetch: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """SVHN's ``test_32x32.mat``: ``x (N, 3, 32, 32) uint8``, ``y (N,) int64`` with label 10
    mapped to 0."""
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    path = data_dir / "test_32x32.mat"
    if not path.is_file() and (data_dir / "svhn" / "test_32x32.mat").is_file():
        path = data_dir / "svhn" / "test_32x32.mat"
    if not path.is_file() and download:
        from freetickets.data.download import fetch_resource

        fetch_resource("svhn", data_dir, fetch=fetch)
    if not path.is_file():
        raise UserError(f"SVHN not found: put test_32x32.mat (the cropped-digits test set) in {data_dir}")
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises ValueError, MatReadError, OSError, ...
        raise UserError(f"{path}: corrupt or not a MATLAB file ({type(exc).__name__}); replace it with the official file") from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y is None:
        raise UserError(f"{path}: expected 'X' of shape (32, 32, 3, N) and 'y'; is this test_32x32.mat?")
    x = np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)).astype(np.uint8, copy=False))
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    y[y == 10] = 0
    if y.shape[0] != x.shape[0]:
        raise UserError(f"{path}: {x.shape[0]} images but {y.shape[0]} labels")
    return x, y


# ----------------------------------------------------------------------------- CIFAR-10-C / 100-C
_C_DIRNAMES = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
_SEVERITIES = 5


def _find_c_dir(name: str, source: str | os.PathLike) -> Path:
    base = Path(source).expanduser()
    for cand in (base, base / _C_DIRNAMES[name]):
        if (cand / "labels.npy").is_file():
            return cand
    raise UserError(
        f"{_C_DIRNAMES[name]} not found: put Hendrycks' {_C_DIRNAMES[name]} .npy files "
        f"(labels.npy and one <corruption>.npy per type) in {base}"
    )


def list_cifar_c(name: str, source: str | os.PathLike) -> list[str]:
    """Corruption types present in a CIFAR-10-C/100-C directory (every ``.npy`` but labels)."""
    folder = _find_c_dir(name, source)
    types = sorted(p.stem for p in folder.glob("*.npy") if p.name != "labels.npy")
    if not types:
        raise UserError(f"{folder}: no <corruption>.npy files next to labels.npy")
    return types


def _load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: corrupt or not a .npy array ({exc}); replace it with the official file") from None


def cifar_c_splits(name: str, source: str | os.PathLike, *, device: Any = "cpu",
                   normalize: Optional[Normalize] = None) -> list[CorruptedSplit]:
    """One lazily loaded :class:`CorruptedSplit` per (type, severity 1..5).

    Each ``<type>.npy`` holds ``(5 * n, 32, 32, 3) uint8`` (severity 1 first); ``labels.npy``
    holds ``5 * n`` (or ``n``) labels. Shapes are checked now; pixels are read when a split's
    ``x`` is accessed.
    """
    folder = _find_c_dir(name, source)
    types = list_cifar_c(name, source)
    labels = np.asarray(_load_npy(folder / "labels.npy", mmap=False)).astype(np.int64).reshape(-1)
    k = NUM_CLASSES[name]
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise UserError(f"{folder / 'labels.npy'}: labels outside 0..{k - 1}; is this {_C_DIRNAMES[name]}?")
    normalize = normalize or cifar_normalize(name)
    splits: list[CorruptedSplit] = []
    for t in types:
        path = folder / f"{t}.npy"
        arr = _load_npy(path)
        if arr.ndim != 4 or arr.shape[1:] != (32, 32, 3) or arr.dtype != np.uint8 or arr.shape[0] % _SEVERITIES:
            raise UserError(
                f"{path}: expected uint8 (5*N, 32, 32, 3) images (5 severities in order), got {arr.dtype} {arr.shape}"
            )
        n = arr.shape[0] // _SEVERITIES
        if labels.shape[0] not in (n, n * _SEVERITIES):
            raise UserError(f"{folder / 'labels.npy'}: {labels.shape[0]} labels, expected {n} or {n * _SEVERITIES} for {path.name}")
        del arr
        for s in range(1, _SEVERITIES + 1):
            splits.append(CorruptedSplit(t, s, loader=_CifarCLoader(path, s, n, labels, normalize, device)))
    return splits


class _CifarCLoader:
    def __init__(self, path: Path, severity: int, n: int, labels: np.ndarray, normalize: Normalize, device: Any):
        self.path, self.severity, self.n = path, severity, n
        self.labels, self.normalize, self.device = labels, normalize, device

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = (self.severity - 1) * self.n, self.severity * self.n
        arr = _load_npy(self.path)
        x = torch.from_numpy(np.ascontiguousarray(arr[lo:hi].transpose(0, 3, 1, 2))).to(self.device)
        y = self.labels[lo:hi] if self.labels.shape[0] != self.n else self.labels
        return self.normalize(x), torch.from_numpy(np.ascontiguousarray(y)).to(self.device)
