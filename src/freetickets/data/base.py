"""Containers, the cache directory and seed derivation shared by every data reader.

Nothing here holds global state: every random draw in :mod:`freetickets.data` comes from a
generator seeded by :func:`derive_seed`, so results do not depend on (and do not disturb) the
caller's global RNGs.
"""
from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

__all__ = [
    "TensorSplit",
    "DataBundle",
    "CorruptedSplit",
    "cache_dir",
    "derive_seed",
]


@dataclass
class TensorSplit:
    """A tensor-resident split: inputs ``x`` of shape ``(N, *input_shape)`` and labels ``y (N,)``.

    ``x`` may be ``uint8`` (images, normalised per batch) or ``float32`` (MNIST-1D); ``y`` is
    ``int64``. Both live on the same device.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"TensorSplit: x has {self.x.shape[0]} rows but y has {self.y.shape[0]}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: Any) -> "TensorSplit":
        return TensorSplit(self.x.to(device), self.y.to(device))


@dataclass
class DataBundle:
    """Everything a training or evaluation run needs about one data set.

    ``train``/``val``/``test`` are :class:`TensorSplit` for tensor-resident sets (MNIST-1D,
    CIFAR); for ImageNet they are map-style datasets usable with ``torch.utils.data.DataLoader``
    (transforms included, ``augment``/``normalize`` are then ``None``).

    ``augment(x, generator) -> x`` is the training augmentation applied to a raw batch (same
    dtype in and out) before ``normalize(x) -> float32 x``, which maps a raw batch to the
    model's input space. Evaluation uses ``normalize`` only.

    :attr:`normalization` is that map as a JSON record (what a run's manifest keeps, so that
    ``predict`` can take inputs in the data set's raw form).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    train: Any
    val: Any
    test: Any
    augment: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None
    normalize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    meta: dict = field(default_factory=dict)

    @property
    def normalization(self) -> Optional[dict]:
        """``{"mean": [...], "std": [...], "scale": s, "raw_dtype": "uint8" | "float32"}``: the
        model sees ``(x / scale - mean) / std`` per channel (channel axis 1) of a raw input ``x``.
        From ``normalize.record()``, else ``meta["normalization"]`` (ImageNet, whose transforms
        live in its datasets); None when neither says."""
        record = getattr(self.normalize, "record", None)
        if callable(record):
            return record()
        return self.meta.get("normalization")


class CorruptedSplit:
    """One (corruption type, severity) split of a corrupted test set.

    ``x`` is normalised like the test set (float32, ready for the model); ``y`` is int64.
    File-backed splits (CIFAR-10-C: 95 splits of 10000 images each, about 12 GB as float) are
    loaded when ``x``/``y`` is read and not kept, so iterating over the list holds one split in
    memory at a time; read ``x`` once per split.
    """

    __slots__ = ("type", "severity", "_x", "_y", "_loader")

    def __init__(
        self,
        type: str,
        severity: int,
        x: Optional[torch.Tensor] = None,
        y: Optional[torch.Tensor] = None,
        *,
        loader: Optional[Callable[[], tuple[torch.Tensor, torch.Tensor]]] = None,
    ) -> None:
        if (x is None or y is None) and loader is None:
            raise ValueError("CorruptedSplit needs x and y, or a loader")
        self.type = type
        self.severity = int(severity)
        self._x, self._y, self._loader = x, y, loader

    @property
    def x(self) -> torch.Tensor:
        if self._x is not None:
            return self._x
        return self._loader()[0]  # type: ignore[misc]

    @property
    def y(self) -> torch.Tensor:
        if self._y is not None:
            return self._y
        return self._loader()[1]  # type: ignore[misc]

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` with one read of the underlying file."""
        if self._x is not None and self._y is not None:
            return self._x, self._y
        return self._loader()  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"CorruptedSplit(type={self.type!r}, severity={self.severity})"


def cache_dir() -> Path:
    """The user cache directory for generated data.

    ``$FREETICKETS_CACHE`` if set, else ``$XDG_CACHE_HOME/freetickets``, else
    ``~/.cache/freetickets``. Read on every call (tests and users may change the environment).
    """
    env = os.environ.get("FREETICKETS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "freetickets"


def default_data_dir() -> Path:
    """Where file-backed data sets live when no ``data_dir`` is given: ``cache_dir()/datasets``."""
    return cache_dir() / "datasets"


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that is a fixed function of ``parts`` (ints and strings).

    Uses BLAKE2b rather than Python's ``hash`` so the value is identical across processes,
    machines and ranks (``PYTHONHASHSEED`` does not matter); nearby inputs such as
    ``(seed, epoch)`` and ``(seed, epoch + 1)`` give unrelated streams.
    """
    h = hashlib.blake2b(digest_size=8, person=b"freetickets")
    for p in parts:
        if isinstance(p, bool) or not isinstance(p, (int, str)):
            raise TypeError(f"derive_seed: parts must be int or str, got {type(p).__name__}")
        if isinstance(p, int):
            h.update(b"i" + struct.pack("<q", p))
        else:
            b = p.encode("utf-8")
            h.update(b"s" + struct.pack("<q", len(b)) + b)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def make_generator(*parts: int | str) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(*parts)``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(*parts))
    return g
