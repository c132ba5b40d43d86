"""MNIST-1D (Greydanus & Kobak), generated offline by the ``mnist1d`` package and cached.

Splits: the package's own 80/20 train/test split; validation is the last 10% of the package's
training portion (never the test set). With the default 10000 samples: 7200 train, 800 val,
2000 test, inputs ``(N, 1, 40)`` float32 (globally standardised by the package: mean 0, std 1),
labels int64.

The package seeds NumPy's and Python's *global* generators; :func:`generate_mnist1d` saves and
restores both, so loading data never changes the caller's random streams.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from freetickets.data.base import DataBundle, TensorSplit, cache_dir
from freetickets.data.transforms import ToFloat
from freetickets.utils.io import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["generate_mnist1d", "load_mnist1d", "mnist1d_cache_path", "DEFAULT_NUM_SAMPLES"]

DEFAULT_NUM_SAMPLES = 10_000
VAL_FRACTION = 0.1
# Bump when the generation or the cache layout changes: old cache files are then ignored.
_CACHE_FORMAT = 1


@contextmanager
def _preserve_global_rng() -> Iterator[None]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def _generation_args(num_samples: int, seed: int) -> dict:
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # download location, not a generation parameter
    args["num_samples"] = int(num_samples)
    args["seed"] = int(seed)
    return args


def mnist1d_cache_path(num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = 0) -> Path:
    """The cache file for these generation arguments (hash of all of them + format version)."""
    args = _generation_args(num_samples, seed)
    key = json.dumps({"format": _CACHE_FORMAT, "args": args}, sort_keys=True)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return cache_dir() / f"mnist1d-n{int(num_samples)}-s{int(seed)}-{digest}.npz"


def generate_mnist1d(num_samples: int = DEFAULT_NUM_SAMPLES, seed: int = 0) -> dict[str, np.ndarray]:
    """Run ``mnist1d.data.make_dataset``; returns ``x, y, x_test, y_test`` (float32 / int64).

    The caller's global NumPy and ``random`` states are left exactly as they were.
    """
    if int(num_samples) < 10 or int(num_samples) % 10:
        raise ValueError(f"num_samples must be a positive multiple of 10 (one share per class), got {num_samples}")
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    args = ObjectView(dict(_generation_args(num_samples, seed)))
    with _preserve_global_rng():
        data = make_dataset(args)
    return {
        "x": np.ascontiguousarray(data["x"], dtype=np.float32),
        "y": np.ascontiguousarray(data["y"], dtype=np.int64),
        "x_test": np.ascontiguousarray(data["x_test"], dtype=np.float32),
        "y_test": np.ascontiguousarray(data["y_test"], dtype=np.int64),
    }


_KEYS = ("x", "y", "x_test", "y_test")


def _read_cache(path: Path, num_samples: int) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in _KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unreadable MNIST-1D cache %s (%s); regenerating", path, exc)
        return None
    n = data["y"].shape[0] + data["y_test"].shape[0]
    ok = (
        n == num_samples
        and data["x"].shape == (data["y"].shape[0], 40)
        and data["x_test"].shape == (data["y_test"].shape[0], 40)
        and data["x"].dtype == np.float32
        and data["y"].dtype == np.int64
    )
    if not ok:
        logger.warning("ignoring MNIST-1D cache %s with unexpected contents; regenerating", path)
        return None
    return data


def _mnist1d_arrays(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    path = mnist1d_cache_path(num_samples, seed)
    if path.is_file():
        data = _read_cache(path, num_samples)
        if data is not None:
            logger.debug("MNIST-1D read from cache %s", path)
            return data
    logger.info("generating MNIST-1D (num_samples=%d, seed=%d) into %s", num_samples, seed, path)
    data = generate_mnist1d(num_samples, seed)

    def write(f: io.BufferedWriter) -> None:
        np.savez(f, **data)

    try:
        atomic_write(path, write)
    except OSError as exc:  # a read-only cache must not stop the run
        logger.warning("could not write MNIST-1D cache %s (%s)", path, exc)
    return data


def load_mnist1d(num_samples: int | None = None, seed: int = 0, device: str | torch.device = "cpu") -> DataBundle:
    """The MNIST-1D :class:`DataBundle` (generated on first use, then read from the cache)."""
    num_samples = DEFAULT_NUM_SAMPLES if num_samples is None else int(num_samples)
    data = _mnist1d_arrays(num_samples, seed)
    x = torch.from_numpy(data["x"]).unsqueeze(1)
    y = torch.from_numpy(data["y"])
    n_val = int(round(VAL_FRACTION * len(y)))
    n_train = len(y) - n_val
    x_test = torch.from_numpy(data["x_test"]).unsqueeze(1)
    y_test = torch.from_numpy(data["y_test"])

    def split(a: torch.Tensor, b: torch.Tensor) -> TensorSplit:
        return TensorSplit(a.contiguous().to(device), b.contiguous().to(device))

    return DataBundle(
        name="mnist1d",
        num_classes=10,
        input_shape=(1, 40),
        train=split(x[:n_train], y[:n_train]),
        val=split(x[n_train:], y[n_train:]),
        test=split(x_test, y_test),
        augment=None,
        normalize=ToFloat(),
        meta={"num_samples": num_samples, "seed": int(seed), "cache_file": str(mnist1d_cache_path(num_samples, seed))},
    )
