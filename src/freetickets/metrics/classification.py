"""Accuracy, negative log-likelihood and Brier score (docs/evaluation.md).

All functions take probabilities, never logits: ``probs`` is ``(M, N, C)`` (members first) or
``(N, C)`` (treated as one member), ``labels`` is ``(N,)`` int64. Per-member functions return a
float64 tensor of shape ``(M,)``, or a 0-d tensor when ``probs`` was ``(N, C)``. For the metric of
the *ensemble* prediction pass ``probs.mean(0)``, except for NLL where :func:`ensemble_nll` is the
stable form. Reductions run in float64 so that means over large test sets do not drift.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from freetickets.metrics._validate import finish, members_and_labels

__all__ = ["accuracy", "nll", "ensemble_nll", "brier"]


def _log_floor(dtype: torch.dtype) -> float:
    # The log of the smallest positive normal number of the dtype: a probability that
    # underflowed to 0 costs at most -log(tiny) (about 87.3 in float32) instead of +inf, so one
    # bad sample cannot turn the whole mean into inf.
    return math.log(torch.finfo(dtype).tiny)


def accuracy(probs: Tensor, labels: Tensor) -> Tensor:
    """Fraction in [0, 1] of samples whose argmax class equals the label.

    probs: (M, N, C) or (N, C); labels: (N,). Returns (M,) or 0-d. Ties in the argmax go to the
    lowest class index (``torch.argmax``), the same rule as :func:`~freetickets.metrics.ece`.
    """
    members, labels, was_2d = members_and_labels(probs, labels)
    correct = members.argmax(dim=-1) == labels.unsqueeze(0)  # (M, N)
    return finish(correct.to(torch.float64).mean(dim=1), was_2d)


def _label_log_probs(members: Tensor, labels: Tensor) -> Tensor:
    """log p_{m, n, y_n} as float64, shape (M, N); log 0 = -inf (callers decide how to floor)."""
    index = labels.view(1, -1, 1).expand(members.shape[0], -1, 1)
    p_y = members.gather(2, index).squeeze(2).to(torch.float64)
    return torch.log(p_y)


def nll(probs: Tensor, labels: Tensor) -> Tensor:
    """Per-member negative log-likelihood ``-mean_n log p_{m, n, y_n}``.

    probs: (M, N, C) or (N, C); labels: (N,). Returns (M,) or 0-d. A label probability of 0 is
    floored at the smallest positive normal number of the input dtype, so the result is finite.
    """
    members, labels, was_2d = members_and_labels(probs, labels)
    log_py = _label_log_probs(members, labels).clamp_min(_log_floor(members.dtype))
    return finish(-log_py.mean(dim=1), was_2d)


def ensemble_nll(probs: Tensor, labels: Tensor) -> Tensor:
    """NLL of the ensemble (mean of member probabilities), computed stably; 0-d tensor.

    ``-mean_n log((1/M) sum_m p_{m, n, y_n}) = -mean_n (logsumexp_m log p_{m, n, y_n} - log M)``.
    logsumexp ignores a member whose label probability is exactly 0 (log 0 = -inf contributes
    nothing), so the result is exact in that case; only when *every* member gives 0 is the
    log-probability floored as in :func:`nll`. probs: (M, N, C) or (N, C); labels: (N,).
    For M = 1 this equals :func:`nll`.
    """
    members, labels, _ = members_and_labels(probs, labels)
    log_py = _label_log_probs(members, labels)  # (M, N)
    log_mean = torch.logsumexp(log_py, dim=0) - math.log(members.shape[0])
    return -log_mean.clamp_min(_log_floor(members.dtype)).mean()


def brier(probs: Tensor, labels: Tensor) -> Tensor:
    """Brier score: mean over samples of ``sum_c (p_c - onehot(y)_c)^2`` (range [0, 2]).

    probs: (M, N, C) or (N, C); labels: (N,). Returns (M,) or 0-d. This is the multi-class
    form of Brier (1950) summed over classes, as in the ensemble literature (docs/evaluation.md); some
    papers divide by C as well, which we do not.
    """
    members, labels, was_2d = members_and_labels(probs, labels)
    # sum_c (p_c - 1[c=y])^2 = sum_c p_c^2 - 2 p_y + 1: avoids materialising a one-hot (M, N, C).
    p = members.to(torch.float64)
    squares = (p * p).sum(dim=2)  # (M, N)
    index = labels.view(1, -1, 1).expand(p.shape[0], -1, 1)
    p_y = p.gather(2, index).squeeze(2)
    return finish((squares - 2.0 * p_y + 1.0).mean(dim=1), was_2d)
