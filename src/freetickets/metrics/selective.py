"""Selective prediction: the risk-coverage curve of the ensemble, AURC and its two read-outs.

A selective classifier answers only its most confident inputs. With confidence = the ensemble's
maximum softmax probability ``max_c p̄_c`` (``p̄ = mean_m p_m``) and prediction ``argmax_c p̄_c``
(ties to the lowest class, as :func:`~freetickets.metrics.accuracy`), order the ``N`` samples by
decreasing confidence; the *risk at coverage* ``k / N`` is the error rate among the first ``k``.

Ties in confidence: samples of equal confidence cannot be told apart by a threshold, so their
order is not chosen arbitrarily; ``r(k)`` is the *expected* error rate over all orders of the
tied samples. Inside a tie group of ``n_g`` samples with ``e_g`` errors that starts after ``s``
samples with ``E`` errors, ``r(s + j) = (E + j e_g / n_g) / (s + j)`` for ``j = 1..n_g``. The
result depends only on the multiset of (confidence, correct) pairs, never on the sample order;
without ties it is the plain cumulative error rate.

* :func:`risk_coverage_curve` ``r(k)``, k = 1..N;
* :func:`aurc` = ``mean_k r(k)`` (Geifman et al. 2019's area under the risk-coverage curve,
  on the grid of coverages ``k / N``);
* :func:`risk_at_coverage` = ``r(ceil(c N))``;
* :func:`coverage_at_risk` = the largest ``k / N`` with ``r(k) <= risk``, 0.0 when no
  coverage reaches that risk.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from freetickets.metrics._validate import members_and_labels

__all__ = ["risk_coverage_curve", "aurc", "risk_at_coverage", "coverage_at_risk", "selective_summary"]


def _check_fraction(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def risk_coverage_curve(probs: Tensor, labels: Tensor) -> Tensor:
    """Expected error rate ``r(k)`` among the ``k`` most confident samples, k = 1..N.

    probs: (M, N, C) member probabilities or (N, C); labels: (N,). Returns float64 (N,); entry
    ``k - 1`` is the risk at coverage ``k / N`` (ties averaged, see the module docstring).
    NaN or infinite probabilities raise ``ValueError``: a NaN confidence would sort as the most
    confident sample and give a finite but meaningless curve.
    """
    members, labels, _ = members_and_labels(probs, labels)
    mean = members.to(torch.float64).mean(dim=0)  # (N, C)
    confidence, prediction = mean.max(dim=1)
    errors = (prediction != labels).to(torch.float64)
    order = torch.argsort(confidence, descending=True, stable=True)
    confidence, errors = confidence[order], errors[order]
    _, group_size = torch.unique_consecutive(confidence, return_counts=True)
    group = torch.repeat_interleave(torch.arange(group_size.numel(), device=mean.device), group_size)
    group_errors = torch.zeros(group_size.numel(), dtype=torch.float64, device=mean.device)
    group_errors.scatter_add_(0, group, errors)
    errors_before = torch.cumsum(group_errors, 0) - group_errors  # E of each group
    start = torch.cumsum(group_size, 0) - group_size  # s of each group
    k = torch.arange(1, errors.numel() + 1, dtype=torch.float64, device=mean.device)
    within = k - start[group].to(torch.float64)  # j = 1..n_g
    expected_errors = errors_before[group] + within * group_errors[group] / group_size[group].to(torch.float64)
    if not bool(torch.isfinite(mean).all()):
        raise ValueError("probs contains NaN or infinite probabilities")
    return expected_errors / k


def aurc(probs: Tensor, labels: Tensor) -> Tensor:
    """Area under the risk-coverage curve: ``mean_{k=1..N} r(k)``, in [0, 1], lower is better.

    probs: (M, N, C) or (N, C); labels: (N,). Returns a 0-d float64 tensor. A perfect ranking
    (all errors least confident) gives the smallest AURC for the given accuracy; a constant
    confidence gives the error rate itself (every order of the tie is averaged).
    """
    return risk_coverage_curve(probs, labels).mean()


def risk_at_coverage(probs: Tensor, labels: Tensor, coverage: float = 0.8) -> Tensor:
    """Error rate among the ``ceil(coverage * N)`` most confident samples (at least 1); 0-d float64.

    ``coverage = 1`` gives the plain error rate. probs: (M, N, C) or (N, C); labels: (N,).
    """
    return _risk_at(risk_coverage_curve(probs, labels), _check_fraction(coverage, "coverage"))


def _risk_at(curve: Tensor, coverage: float) -> Tensor:
    # round() guards ceil against products like 0.8 * 5 = 4.000000000000001.
    k = min(curve.numel(), max(1, math.ceil(round(coverage * curve.numel(), 9))))
    return curve[k - 1]


def coverage_at_risk(probs: Tensor, labels: Tensor, risk: float = 0.05) -> Tensor:
    """The largest coverage ``k / N`` whose risk ``r(k) <= risk``; 0.0 if no coverage reaches it.

    probs: (M, N, C) or (N, C); labels: (N,). Returns a 0-d float64 tensor in [0, 1]. The risk
    curve need not be monotone, so this is the largest admissible coverage, not the first
    crossing. (torch-uncertainty's ``CovAtxRisk`` returns NaN where we return 0.0.)
    """
    return _coverage_at(risk_coverage_curve(probs, labels), _check_fraction(risk, "risk"))


def _coverage_at(curve: Tensor, risk: float) -> Tensor:
    admissible = torch.nonzero(curve <= risk + 1e-12).flatten()  # tolerance for round-off in r(k)
    n = curve.numel()
    if admissible.numel() == 0:
        return torch.zeros((), dtype=torch.float64, device=curve.device)
    return (admissible[-1] + 1).to(torch.float64) / n


def selective_summary(probs: Tensor, labels: Tensor) -> dict[str, float]:
    """The ``"selective"`` block of the evaluation JSON: ``{"aurc", "risk_at_80_coverage",
    "coverage_at_5_risk"}`` as plain floats. probs: (M, N, C) or (N, C); labels: (N,)."""
    curve = risk_coverage_curve(probs, labels)
    return {
        "aurc": float(curve.mean()),
        "risk_at_80_coverage": float(_risk_at(curve, 0.8)),
        "coverage_at_5_risk": float(_coverage_at(curve, 0.05)),
    }
