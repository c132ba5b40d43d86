"""Batched augmentation and normalisation on tensors (no per-sample Python, no PIL).

The whole data set stays on its device as ``uint8``; a batch is augmented with one gather and
converted to float once (the cifar10-airbench idea). Augmentations are module-level classes so
that bundles can be pickled (DataLoader workers, ``torch.multiprocessing``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["RandomCropFlip", "Normalize", "ToFloat"]


class RandomCropFlip:
    """Random crop with zero padding, then a random horizontal flip, for a batch ``(B, C, H, W)``.

    Matches ``RandomCrop(H, padding=pad)`` + ``RandomHorizontalFlip()`` of the released code:
    the padding value is 0 in the input's own space (a black pixel for ``uint8`` images, which
    is what the PIL pipeline pads with before ``ToTensor``/``Normalize``). Each image gets its
    own offsets ``(dy, dx)`` uniform in ``[0, 2*pad]`` and a flip with probability
    ``flip_probability``. All draws come from ``generator`` (a CPU generator: identical on every
    device), three small tensors of ``B`` values per batch, so the result is a deterministic
    function of ``(x, generator state)``. Output dtype and device equal the input's.
    """

    def __init__(self, padding: int = 4, flip_probability: float = 0.5) -> None:
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if not 0.0 <= flip_probability <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability}")
        self.padding = int(padding)
        self.flip_probability = float(flip_probability)

    def draw(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """The random parameters ``(dy, dx, flip)`` for a batch, each of shape ``(B,)``, on CPU."""
        gen_device = generator.device
        span = 2 * self.padding + 1
        dy = torch.randint(0, span, (batch_size,), generator=generator, device=gen_device)
        dx = torch.randint(0, span, (batch_size,), generator=generator, device=gen_device)
        flip = torch.rand((batch_size,), generator=generator, device=gen_device) < self.flip_probability
        return dy, dx, flip

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"RandomCropFlip expects (B, C, H, W), got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        dy, dx, flip = (t.to(x.device) for t in self.draw(b, generator))
        p = self.padding
        padded = F.pad(x, (p, p, p, p)) if p else x
        wp = w + 2 * p
        ar_w = torch.arange(w, device=x.device)
        # The flip folds into the column index, so one gather on the flattened (H+2p)*(W+2p)
        # plane does crop and flip together (about 5x faster than advanced indexing on CPU).
        cols = dx[:, None] + torch.where(flip[:, None], (w - 1) - ar_w[None, :], ar_w[None, :])
        rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]
        flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
        return padded.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip_probability={self.flip_probability})"


class Normalize:
    """``(x / scale - mean) / std`` per channel, returning float32; channel axis is 1.

    For ``uint8`` images ``scale`` is 255 (ToTensor + Normalize in one fused multiply-add).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], scale: float = 255.0) -> None:
        if len(mean) != len(std):
            raise ValueError("Normalize: mean and std must have the same length")
        if any(s <= 0 for s in std):
            raise ValueError("Normalize: std must be positive")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.scale = float(scale)
        self._cache: dict = {}

    def _coeffs(self, x: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (x.device, ndim)
        if key not in self._cache:
            shape = (1, len(self.mean)) + (1,) * (ndim - 2)
            mul = torch.tensor([1.0 / (self.scale * s) for s in self.std], dtype=torch.float32)
            add = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32)
            self._cache[key] = (mul.view(shape).to(x.device), add.view(shape).to(x.device))
        return self._cache[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != len(self.mean):
            raise ValueError(
                f"Normalize: expected (B, {len(self.mean)}, ...), got shape {tuple(x.shape)}"
            )
        mul, add = self._coeffs(x, x.dim())
        return torch.addcmul(add, x.to(torch.float32), mul)

    def record(self) -> dict:
        """The JSON record a run's manifest keeps (``"normalization"``): model input =
        ``(x / scale - mean) / std`` per channel; raw inputs are ``uint8`` when ``scale`` is 255."""
        return {"mean": list(self.mean), "std": list(self.std), "scale": self.scale,
                "raw_dtype": "uint8" if self.scale == 255.0 else "float32"}

    def __getstate__(self) -> dict:
        return {"mean": self.mean, "std": self.std, "scale": self.scale}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["mean"], state["std"], state["scale"])

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std}, scale={self.scale})"


class ToFloat:
    """Identity up to a float32 cast: for inputs already in model space (MNIST-1D is generated
    with mean 0 and standard deviation 1)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32)

    def record(self) -> dict:
        """The manifest record of the identity (see :meth:`Normalize.record`)."""
        return {"mean": [0.0], "std": [1.0], "scale": 1.0, "raw_dtype": "float32"}

    def __repr__(self) -> str:
        return "ToFloat()"
