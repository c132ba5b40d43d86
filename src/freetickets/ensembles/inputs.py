"""From a user's inputs to the members' input space: layout, finiteness and a run's normalisation.

A run's ``manifest.json`` records the input normalisation of its data set (``"normalization"``,
see :attr:`freetickets.data.DataBundle.normalization`)::

    {"mean": [...], "std": [...], "scale": 255.0, "raw_dtype": "uint8"}   # CIFAR, ImageNet
    {"mean": [0.0], "std": [1.0], "scale": 1.0, "raw_dtype": "float32"}    # MNIST-1D (identity)

and the members see ``(x / scale - mean) / std`` per channel of a *raw* input ``x``: for image
data sets the ``uint8`` pixel values as stored (0..255), for MNIST-1D the float arrays as the
package generates them (already standardised, so the map is the identity).

Accepted layouts, for a run whose ``input_shape`` is ``S``: ``(N, *S)`` or a single ``S``;
for images ``S = (C, H, W)`` also channels-last ``(N, H, W, C)`` / ``(H, W, C)``; for
one-channel inputs ``S = (1, L)`` also ``(N, L)`` / ``(L,)`` (MNIST-1D as ``(N, 40)``).

Refused in one line (:class:`UserError`): rows holding NaN or infinity (the count is named),
and, for ``uint8`` raw data, values that are not whole numbers in 0..255 (typically inputs that
are already normalised: then pass ``normalized=True`` / ``--normalized``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from freetickets.errors import UserError

__all__ = ["InputNormalization", "run_normalization", "to_model_layout", "prepare_inputs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputNormalization:
    """``(x / scale - mean) / std`` per channel (axis 1); ``raw_dtype`` is the raw form's dtype."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0
    raw_dtype: str = "float32"

    @classmethod
    def from_record(cls, record: dict, channels: int) -> "InputNormalization":
        """Parse and check a manifest record (one mean/std per channel, or one for all)."""
        try:
            mean = tuple(float(v) for v in record["mean"])
            std = tuple(float(v) for v in record["std"])
            scale = float(record.get("scale", 1.0))
            raw_dtype = str(record.get("raw_dtype", "float32"))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError("manifest.json: 'normalization' must be {\"mean\": [...], \"std\": [...], "
                            "\"scale\": s}") from None
        if (len(mean) not in (channels, 1) or len(std) != len(mean) or not all(s > 0 for s in std)
                or not scale > 0 or raw_dtype not in ("uint8", "float32")):
            raise UserError(f"manifest.json: 'normalization' needs {channels} mean and positive std values "
                            f"(one per channel), a positive scale and raw_dtype uint8 or float32, got {record}")
        return cls(mean, std, scale, raw_dtype)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Raw ``(N, C, ...)`` -> float32 model inputs, on ``x``'s device."""
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(shape)
        return (x.to(torch.float32) / self.scale - mean) / std


def run_normalization(manifest: dict) -> InputNormalization | None:
    """The normalisation a run's members expect, from its manifest.

    Manifests written before the record existed have ``"normalization": null``: the data set's
    own normalisation is used then (by ``manifest["data"]``). None only when neither is known (a
    hand-made manifest without ``data``): inputs are then used as they are (logged).
    """
    input_shape = tuple(int(s) for s in manifest["input_shape"])
    channels = input_shape[0] if input_shape else 1
    record = manifest.get("normalization")
    if record is None and manifest.get("data") is not None:
        from freetickets.data.api import data_normalization

        record = data_normalization(str(manifest["data"]))
    if record is None:
        logger.warning("the run records no input normalisation and names no known data set; "
                       "inputs are used as they are")
        return None
    return InputNormalization.from_record(record, channels)


def to_model_layout(x: torch.Tensor, input_shape: tuple[int, ...], what: str) -> torch.Tensor:
    """``x`` in one of the accepted layouts (module docstring) -> ``(N, *input_shape)`` (a view
    or a permuted copy); a :class:`UserError` naming both shapes otherwise."""
    s = tuple(int(v) for v in input_shape)
    layouts: list[tuple[tuple[int, ...], tuple[int, ...] | None]] = [(s, None)]
    if len(s) == 3:  # images: channels-last (H, W, C) -> (C, H, W)
        layouts.append(((s[1], s[2], s[0]), (0, 3, 1, 2)))
    if len(s) >= 2 and s[0] == 1:  # one channel given without its axis
        layouts.append((s[1:], None))
    shape = tuple(x.shape)
    for layout, perm in layouts:
        if shape == layout:
            x, shape = x.unsqueeze(0), (1, *layout)  # a single input
        if shape[1:] == layout:
            if perm is not None:
                return x.permute(*perm).contiguous()
            return x.reshape(shape[0], *s)
    allowed = " or ".join(f"(N, {', '.join(map(str, lay))})" for lay, _ in layouts)
    raise UserError(f"{what}: input shape mismatch: expected {allowed} (or one input without N), "
                    f"got {shape}")


def _check_finite(x: torch.Tensor, what: str) -> None:
    if x.is_floating_point():
        bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).sum()) if x.numel() else 0
        if bad:
            raise UserError(f"{what}: {bad} of {x.shape[0]} rows hold NaN or infinite values; "
                            "remove or repair them")


def _check_raw_uint8(x: torch.Tensor, what: str, data: str) -> None:
    if x.dtype == torch.uint8 or x.numel() == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    whole = not x.is_floating_point() or bool((x == torch.round(x)).all())
    if lo < 0 or hi > 255 or not whole:
        raise UserError(f"{what}: the run ({data}) takes raw uint8 pixel values 0..255, got {x.dtype} values in "
                        f"[{lo:.4g}, {hi:.4g}]; pass --normalized (Python: normalized=True) if the inputs "
                        "are already normalised")


def prepare_inputs(x: torch.Tensor | np.ndarray, manifest: dict, *, normalized: bool = False,
                   what: str = "inputs") -> torch.Tensor:
    """Inputs as a user holds them -> float32 ``(N, *input_shape)`` members' inputs on ``x``'s device.

    ``normalized=False``: ``x`` is in the data set's raw form and the run's normalisation is
    applied; ``normalized=True``: ``x`` is already in the members' input space (only the layout
    and dtype change). Non-finite rows are refused either way. ``what`` names the input in errors.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{what}: expected a tensor or numpy array, got {type(x).__name__}")
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    if x.is_complex():
        raise UserError(f"{what}: expected a real numeric array, got dtype {x.dtype}")
    x = to_model_layout(x, tuple(manifest["input_shape"]), what)
    _check_finite(x, what)
    if normalized:
        return x.to(torch.float32)
    norm = run_normalization(manifest)
    if norm is None:
        return x.to(torch.float32)
    if norm.raw_dtype == "uint8":
        _check_raw_uint8(x, what, str(manifest.get("data", "image data")))
    return norm.apply(x)
