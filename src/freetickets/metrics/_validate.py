"""Shape checks shared by the metric functions (private).

Every metric takes ``probs`` of shape ``(M, N, C)`` (members first, docs/architecture.md) or ``(N, C)``
(one set of probabilities, treated as ``M = 1``) and ``labels`` of shape ``(N,)`` with integer
class indices in ``[0, C)``. Bad shapes raise ``ValueError`` naming the argument.
"""
from __future__ import annotations

import torch
from torch import Tensor


def as_members(probs: Tensor, name: str = "probs") -> tuple[Tensor, bool]:
    """Return ``(probs as (M, N, C), was_2d)``; ``(N, C)`` becomes ``(1, N, C)``."""
    if not isinstance(probs, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(probs).__name__}")
    if probs.dim() == 2:
        return probs.unsqueeze(0), True
    if probs.dim() == 3:
        return probs, False
    raise ValueError(f"{name} must have shape (M, N, C) or (N, C), got {tuple(probs.shape)}")


def check_labels(labels: Tensor, n: int, num_classes: int) -> Tensor:
    """Validate ``labels`` (N,) against N samples and C classes; return them as int64."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match probs, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return labels.long()


def members_and_labels(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Validate both; return ``(probs (M, N, C), labels (N,) int64 on probs' device, was_2d)``."""
    members, was_2d = as_members(probs)
    if members.shape[1] == 0:
        raise ValueError("probs must contain at least one sample (N >= 1)")
    labels = check_labels(labels, members.shape[1], members.shape[2]).to(members.device)
    return members, labels, was_2d


def finish(values: Tensor, was_2d: bool) -> Tensor:
    """Per-member results ``(M,)`` -> 0-d tensor when the input was ``(N, C)``."""
    return values[0] if was_2d else values
