"""Expected calibration error and reliability-diagram bins (docs/evaluation.md).

Convention (Guo et al. 2017, top-label): confidence = max_c p_c, prediction = argmax_c p_c (ties
to the lowest class index, as in :func:`~freetickets.metrics.accuracy`). ``n_bins`` equal-width
bins on [0, 1]: bin k holds confidences in ``[k/B, (k+1)/B)``, except that the last bin is closed
``[(B-1)/B, 1]`` so that a confidence of exactly 1.0 lands in it. Empty bins are skipped and
each bin is weighted by its share of the samples:
``ECE = sum_k (n_k / N) |accuracy_k - confidence_k|``.

:func:`adaptive_ece` (equal-mass bins, Nixon et al. 2019's adaptive calibration error) uses the
same gap formula on bins of (nearly) equal *count* instead of equal width: the samples sorted
by increasing confidence are split into ``B`` consecutive runs, the first ``N mod B`` of
``ceil(N / B)`` samples and the rest of ``floor(N / B)`` (``numpy.array_split``'s rule; bins are
empty only when ``N < B``). Ties in confidence keep the sample order (stable sort), so tied
samples split across a bin boundary are assigned by their index.
"""
from __future__ import annotations

import torch
from torch import Tensor

from freetickets.metrics._validate import finish, members_and_labels

__all__ = ["ece", "adaptive_ece", "reliability_bins"]


def _check_bins(n_bins: int) -> None:
    if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def _bin_stats(members: Tensor, labels: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per member and bin: summed confidence, summed correctness, count; each (M, B) float64."""
    confidence, prediction = members.max(dim=2)  # (M, N); max's index = first maximum
    confidence = confidence.to(torch.float64)
    correct = (prediction == labels.unsqueeze(0)).to(torch.float64)
    # Inner edges 1/B .. (B-1)/B; right=True gives index k with edge[k-1] <= x < edge[k]
    # (left-closed bins). 1.0 exceeds every inner edge, so it falls into the last bin, B-1.
    inner = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=members.device)[1:-1]
    index = torch.bucketize(confidence, inner, right=True).clamp_(0, n_bins - 1)
    shape = (members.shape[0], n_bins)
    conf_sum = torch.zeros(shape, dtype=torch.float64, device=members.device)
    acc_sum = torch.zeros_like(conf_sum)
    count = torch.zeros_like(conf_sum)
    conf_sum.scatter_add_(1, index, confidence)
    acc_sum.scatter_add_(1, index, correct)
    count.scatter_add_(1, index, torch.ones_like(confidence))
    return conf_sum, acc_sum, count


def ece(probs: Tensor, labels: Tensor, n_bins: int = 15) -> Tensor:
    """Top-label expected calibration error in [0, 1] (convention in the module docstring).

    probs: (M, N, C) or (N, C); labels: (N,). Returns float64 (M,) (one per member) or 0-d.
    For the ensemble pass ``probs.mean(0)``.
    """
    _check_bins(n_bins)
    members, labels, was_2d = members_and_labels(probs, labels)
    conf_sum, acc_sum, count = _bin_stats(members, labels, n_bins)
    # |sum acc - sum conf| / N == (n_k / N) * |acc_k - conf_k|; empty bins contribute exactly 0.
    gaps = (acc_sum - conf_sum).abs().sum(dim=1) / members.shape[1]
    return finish(gaps, was_2d)


def adaptive_ece(probs: Tensor, labels: Tensor, n_bins: int = 15) -> Tensor:
    """Top-label ECE on ``n_bins`` equal-mass bins (convention in the module docstring), in [0, 1].

    probs: (M, N, C) or (N, C); labels: (N,). Returns float64 (M,) or 0-d. Equal-mass bins put
    as many samples in the sparse high- or low-confidence tail as anywhere else, where
    equal-width bins leave most bins nearly empty and one bin with most of the samples.
    """
    _check_bins(n_bins)
    members, labels, was_2d = members_and_labels(probs, labels)
    confidence, prediction = members.max(dim=2)  # (M, N)
    confidence = confidence.to(torch.float64)
    correct = (prediction == labels.unsqueeze(0)).to(torch.float64)
    order = torch.argsort(confidence, dim=1, stable=True)
    n = members.shape[1]
    # Bin of the i-th sorted sample under array_split: sizes q + 1 (first r bins), then q.
    q, r = divmod(n, n_bins)
    rank = torch.arange(n, device=members.device)
    big = r * (q + 1)
    index = torch.where(rank < big, rank // (q + 1), r + (rank - big) // max(q, 1))
    index = index.unsqueeze(0).expand(members.shape[0], -1)
    gap = torch.zeros((members.shape[0], n_bins), dtype=torch.float64, device=members.device)
    gap.scatter_add_(1, index, correct.gather(1, order) - confidence.gather(1, order))
    return finish(gap.abs().sum(dim=1) / n, was_2d)


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, Tensor]:
    """Per-bin statistics for a reliability diagram (same bins as :func:`ece`).

    probs: (M, N, C) or (N, C); labels: (N,). Returns a dict of float64 tensors, each of shape
    (M, B), or (B,) for (N, C) input:

    - ``"confidence"``: mean confidence of the bin,
    - ``"accuracy"``: accuracy of the bin,
    - ``"count"``: number of samples in the bin,

    plus ``"edges"`` (B + 1,): the bin boundaries 0, 1/B, ..., 1. Empty bins have
    confidence = accuracy = 0 and count = 0 (not NaN, so the values stay JSON-safe);
    plot only bins with ``count > 0``. ``ece == sum(count * |accuracy - confidence|) / N``.
    """
    _check_bins(n_bins)
    members, labels, was_2d = members_and_labels(probs, labels)
    conf_sum, acc_sum, count = _bin_stats(members, labels, n_bins)
    safe = count.clamp_min(1.0)
    return {
        "confidence": finish(conf_sum / safe, was_2d),
        "accuracy": finish(acc_sum / safe, was_2d),
        "count": finish(count, was_2d),
        "edges": torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=members.device),
    }
