"""Compact storage of ensemble members ("tickets").

A ticket is one trained sparse network. For every sparse parameter (a name in ``masks``) it
stores only the values of the active weights (a 1-D tensor in the parameter's dtype, in
row-major order of the active positions) and the mask bit-packed (``numpy.packbits``, one bit
per entry, a ``uint8`` tensor of ``ceil(numel / 8)`` bytes) plus the shape. Every other entry of
the model's ``state_dict`` (biases, normalisation layers, BatchNorm running statistics and
``num_batches_tracked``, dense layers) is stored as it is.

Why: at sparsity S a float32 ticket costs about ``(1 - S) * 4 + 1/8`` bytes per sparse
parameter instead of 4 (0.925 bytes at S = 0.8), so M = 3 tickets take about 0.69x the bytes of
one dense checkpoint.

File layout (``torch.save`` of plain data only, read back with ``weights_only=True``)::

    {"format": "freetickets-ticket", "version": 1,
     "meta": {...JSON-able...},
     "keys": [state_dict keys in order],
     "sparse": {name: {"values": Tensor (n_active,), "mask": uint8 Tensor (ceil(numel/8),),
                       "shape": [int, ...],
                       "neg_zero": uint8 Tensor (optional, see below)}},
     "dense": {name: Tensor}}

Masked-out weights are stored implicitly as zero: a ticket is the *masked* model (the training
engine keeps masked weights at exactly zero). Masking by multiplication leaves ``-0.0`` at
negative masked weights; when a tensor has such entries, their sign bits are kept bit-packed
over the inactive positions (``neg_zero``, about 0.1 byte per parameter at S = 0.8), so the round
trip is bitwise in every case.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from freetickets.errors import UserError
from freetickets.utils.io import atomic_torch_save, safe_torch_load

__all__ = [
    "TICKET_FORMAT",
    "TICKET_VERSION",
    "Ticket",
    "save_ticket",
    "load_ticket",
    "ticket_to_model",
    "ticket_nbytes",
    "pack_mask",
    "unpack_mask",
]

logger = logging.getLogger(__name__)

TICKET_FORMAT = "freetickets-ticket"
TICKET_VERSION = 1


class Ticket(NamedTuple):
    """A loaded ticket: the full (dense-shaped) ``state_dict``, the masks and the metadata.

    ``state_dict``: name -> tensor, exactly the model's ``state_dict`` at save time (masked
    entries zero). ``masks``: name -> bool tensor of the parameter's shape. ``meta``: the JSON-able
    dict given to :func:`save_ticket`. Unpacks like the tuple ``(state_dict, masks, meta)``.
    """

    state_dict: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    meta: dict[str, Any]


def _unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP/DataParallel and ``torch.compile`` wrappers so keys match the bare model."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Bit-pack a bool mask of any shape into a 1-D ``uint8`` CPU tensor (``ceil(numel/8)``,)."""
    flat = mask.detach().reshape(-1).to(device="cpu", dtype=torch.bool).numpy()
    return torch.from_numpy(np.packbits(flat))


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...] | list[int]) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: a bool CPU tensor of ``shape``."""
    numel = math.prod(shape)
    bits = np.unpackbits(packed.numpy(), count=numel).astype(bool)
    return torch.from_numpy(bits).reshape(tuple(shape))


def _check_json_able(obj: Any, where: str = "meta") -> None:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_json_able(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be str, got {type(k).__name__}")
            _check_json_able(v, f"{where}[{k!r}]")
        return
    raise ValueError(
        f"{where}: must hold plain JSON-able data (None, bool, int, float, str, list, dict), "
        f"got {type(obj).__name__}"
    )


def save_ticket(
    path: str | os.PathLike,
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` compactly to ``path`` (atomically) and return the path.

    ``masks``: parameter name (as in the unwrapped model's ``state_dict``) -> bool tensor of the
    parameter's shape; those parameters are stored as active values + packed mask, everything
    else in the ``state_dict`` as is. ``meta``: plain JSON-able data (seed, phase, epoch, val
    accuracy, ...). Weights outside the mask are not stored; if any of them is non-zero a
    warning is logged, because loading will give zeros there.
    """
    path = Path(path)
    meta = dict(meta or {})
    _check_json_able(meta)
    state = _unwrap(model).state_dict()
    unknown = sorted(set(masks) - set(state))
    if unknown:
        raise ValueError(f"masks: names not in the model's state_dict: {unknown[:5]}")
    sparse: dict[str, Any] = {}
    dense: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        if name in masks:
            mask = masks[name]
            if tuple(mask.shape) != tuple(tensor.shape):
                raise ValueError(
                    f"masks[{name!r}]: shape {tuple(mask.shape)} does not match the parameter's "
                    f"shape {tuple(tensor.shape)}"
                )
            mask = mask.to(device=tensor.device, dtype=torch.bool)
            if bool((tensor[~mask] != 0).any()):
                logger.warning(
                    "save_ticket(%s): %s has non-zero weights outside its mask; they are stored "
                    "as zero", path, name,
                )
            entry = {
                # clone(): a slice can share a larger storage, and torch.save writes whole storages
                "values": tensor[mask].cpu().clone(),
                "mask": pack_mask(mask),
                "shape": [int(s) for s in tensor.shape],
            }
            if tensor.is_floating_point():
                # Masking by multiplication leaves -0.0 where the weight was negative. Keep those
                # sign bits (one bit per inactive entry, only when present) so a round trip is
                # bitwise; masks applied with masked_fill_(~mask, 0) cost nothing extra.
                inactive = tensor[~mask]
                neg_zero = torch.signbit(inactive) & (inactive == 0)
                if bool(neg_zero.any()):
                    entry["neg_zero"] = pack_mask(neg_zero)
            sparse[name] = entry
        else:
            dense[name] = tensor.cpu().clone()
    payload = {
        "format": TICKET_FORMAT,
        "version": TICKET_VERSION,
        "meta": meta,
        "keys": list(state.keys()),
        "sparse": sparse,
        "dense": dense,
    }
    atomic_torch_save(payload, path)
    return path


def load_ticket(path: str | os.PathLike, map_location: Any = "cpu") -> Ticket:
    """Read and validate a ticket written by :func:`save_ticket`.

    Returns ``Ticket(state_dict, masks, meta)`` with dense-shaped tensors (masked entries zero).
    Raises :class:`~freetickets.errors.UnsafeFileError` if the file carries pickled objects and
    :class:`~freetickets.errors.UserError` (naming the file) if it is missing, truncated, not a
    ticket, of an unknown version, or internally inconsistent (e.g. the number of stored values
    differs from the mask's popcount).
    """
    path = Path(path)
    payload = safe_torch_load(path, map_location="cpu")

    def bad(why: str) -> UserError:
        return UserError(f"{path}: not a valid freetickets ticket: {why}")

    if not isinstance(payload, dict) or payload.get("format") != TICKET_FORMAT:
        raise bad(f"missing header 'format': {TICKET_FORMAT!r}")
    if payload.get("version") != TICKET_VERSION:
        raise bad(f"unsupported version {payload.get('version')!r} (this build reads {TICKET_VERSION})")
    keys, sparse, dense, meta = (payload.get(k) for k in ("keys", "sparse", "dense", "meta"))
    if not (isinstance(keys, list) and isinstance(sparse, dict) and isinstance(dense, dict)
            and isinstance(meta, dict)):
        raise bad("'keys', 'sparse', 'dense' and 'meta' must be a list and dicts")
    if set(keys) != set(sparse) | set(dense) or set(sparse) & set(dense) or len(set(keys)) != len(keys):
        raise bad("'keys' does not match the stored 'sparse' and 'dense' entries")

    state: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    for name in keys:
        if name in dense:
            if not isinstance(dense[name], torch.Tensor):
                raise bad(f"dense entry {name!r} is not a tensor")
            state[name] = dense[name].to(map_location)
            continue
        entry = sparse[name]
        if not isinstance(entry, dict):
            raise bad(f"sparse entry {name!r} is not a dict")
        values, packed, shape = entry.get("values"), entry.get("mask"), entry.get("shape")
        if not (isinstance(values, torch.Tensor) and values.dim() == 1):
            raise bad(f"{name!r}: 'values' must be a 1-D tensor")
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise bad(f"{name!r}: 'shape' must be a list of non-negative ints")
        numel = math.prod(shape)
        if not (isinstance(packed, torch.Tensor) and packed.dtype == torch.uint8 and packed.dim() == 1
                and packed.numel() == (numel + 7) // 8):
            raise bad(f"{name!r}: 'mask' must be a uint8 tensor of {(numel + 7) // 8} bytes")
        mask = unpack_mask(packed, shape)
        n_active = int(mask.sum())
        if n_active != values.numel():
            raise bad(f"{name!r}: {values.numel()} stored values but the mask has {n_active} active entries")
        full = torch.zeros(shape, dtype=values.dtype)
        full[mask] = values
        if "neg_zero" in entry:
            n_inactive = numel - n_active
            nz = entry["neg_zero"]
            if not (isinstance(nz, torch.Tensor) and nz.dtype == torch.uint8 and nz.dim() == 1
                    and nz.numel() == (n_inactive + 7) // 8 and values.is_floating_point()):
                raise bad(f"{name!r}: 'neg_zero' must be a uint8 tensor of {(n_inactive + 7) // 8} bytes")
            signs = unpack_mask(nz, [n_inactive])
            full[~mask] = torch.where(signs, -0.0, 0.0).to(values.dtype)
        state[name] = full.to(map_location)
        masks[name] = mask.to(map_location)
    return Ticket(state, masks, meta)


def ticket_to_model(ticket: Ticket, model: nn.Module) -> nn.Module:
    """Load ``ticket``'s state into ``model`` exactly (``strict=True``) and return ``model``.

    Raises :class:`~freetickets.errors.UserError` if the keys or shapes do not match the model
    (a ticket of another architecture).
    """
    target = _unwrap(model)
    own = target.state_dict()
    for name, tensor in ticket.state_dict.items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise UserError(
                f"ticket does not fit the model: {name!r} has shape {tuple(tensor.shape)} in the "
                f"ticket and {tuple(own[name].shape)} in the model"
            )
    try:
        target.load_state_dict(ticket.state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"ticket does not fit the model: {' '.join(first[:3])}") from None
    return model


def ticket_nbytes(path: str | os.PathLike) -> int:
    """Size of a ticket file on disk, in bytes."""
    return os.path.getsize(path)
