"""Ensemble diversity: prediction disagreement, pairwise KL, mask Hamming distance (docs/evaluation.md).

Prediction matrices take ``probs`` (M, N, C) (members first; (N, C) is one member) and return an
(M, M) float64 tensor with a zero diagonal. Their scalar summaries average over *ordered* pairs
``i != j`` (:func:`offdiagonal_mean`), which is 0 for a single member.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor

from freetickets.metrics._validate import as_members

__all__ = [
    "disagreement_matrix",
    "kl_matrix",
    "offdiagonal_mean",
    "mask_hamming",
    "mask_hamming_matrix",
]


def disagreement_matrix(probs: Tensor) -> Tensor:
    """D[i, j] = fraction of samples whose argmax differs between members i and j; (M, M).

    probs: (M, N, C). Symmetric, zero diagonal, values in [0, 1] (Fort et al. 2019's
    prediction disagreement, as in the FreeTickets paper). Argmax ties go to the lowest index.
    """
    members, _ = as_members(probs)
    if members.shape[1] == 0:
        raise ValueError("probs must contain at least one sample (N >= 1)")
    predictions = members.argmax(dim=2)  # (M, N)
    differs = predictions.unsqueeze(1) != predictions.unsqueeze(0)  # (M, M, N)
    return differs.to(torch.float64).mean(dim=2)


def kl_matrix(probs: Tensor, eps: float = 1e-12) -> Tensor:
    """K[i, j] = mean over samples of KL(p_i || p_j) in nats; (M, M).

    ``KL(p_i || p_j) = sum_c p_ic (log max(p_ic, eps) - log max(p_jc, eps))``. Flooring both
    logs at ``eps`` keeps the value finite when p_j assigns 0 where p_i does not, makes terms
    with p_ic = 0 exactly 0 (the 0 log 0 = 0 convention) and keeps the diagonal exactly 0.
    Not symmetric. probs: (M, N, C).
    """
    if not eps > 0.0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    members, _ = as_members(probs)
    if members.shape[1] == 0:
        raise ValueError("probs must contain at least one sample (N >= 1)")
    log_p = members.clamp_min(eps).log()  # (M, N, C)
    rows = []
    # One row at a time: (M, N, C) temporaries instead of (M, M, N, C).
    for i in range(members.shape[0]):
        terms = members[i] * (log_p[i] - log_p)  # (M, N, C)
        rows.append(terms.sum(dim=2, dtype=torch.float64).mean(dim=1))
    return torch.stack(rows)


def offdiagonal_mean(matrix: Tensor) -> float:
    """Mean of an (M, M) matrix over ordered pairs i != j; 0.0 for M = 1."""
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square (M, M), got {tuple(matrix.shape)}")
    m = matrix.shape[0]
    if m < 2:
        return 0.0
    off = ~torch.eye(m, dtype=torch.bool, device=matrix.device)
    return float(matrix[off].to(torch.float64).mean())


def _mask_counts(masks_a: Mapping[str, Tensor], masks_b: Mapping[str, Tensor]) -> tuple[int, int]:
    if set(masks_a) != set(masks_b):
        missing = sorted(set(masks_a) ^ set(masks_b))
        raise ValueError(f"masks_a and masks_b must cover the same parameters; differ in {missing}")
    differ = total = 0
    for name, a in masks_a.items():
        b = masks_b[name]
        if a.shape != b.shape:
            raise ValueError(f"mask {name!r} has shape {tuple(a.shape)} in masks_a but "
                             f"{tuple(b.shape)} in masks_b")
        differ += int((a.bool() != b.to(a.device).bool()).sum())
        total += a.numel()
    return differ, total


def mask_hamming(masks_a: Mapping[str, Tensor], masks_b: Mapping[str, Tensor]) -> float:
    """Normalised Hamming distance between two tickets' masks, in [0, 1].

    masks_a, masks_b: parameter name -> bool tensor (the ``SparseEngine.masks`` layout), with
    the same names and shapes. Returns (number of positions whose bit differs) / (total number
    of mask positions over all layers), i.e. weighted by layer size. 0.0 for empty masks.
    """
    differ, total = _mask_counts(masks_a, masks_b)
    return differ / total if total else 0.0


def mask_hamming_matrix(tickets: Sequence[Mapping[str, Tensor]]) -> Tensor:
    """H[i, j] = :func:`mask_hamming` of tickets i and j; (M, M) float64, symmetric."""
    m = len(tickets)
    matrix = torch.zeros(m, m, dtype=torch.float64)
    for i in range(m):
        for j in range(i + 1, m):
            matrix[i, j] = matrix[j, i] = mask_hamming(tickets[i], tickets[j])
    return matrix
