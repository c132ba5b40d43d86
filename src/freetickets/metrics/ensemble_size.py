"""Ensemble-size curves (the paper's "ensemble size" analysis, issue 9 item 5).

Accuracy, NLL and ECE of the ensemble of the first ``k`` members, ``k = 1..M``, from member
probabilities that are already computed (no retraining, no extra forward passes). Member order
is the order of the tickets in the run (EDST: the order the refinement phases produced them), so
the curve answers "what would stopping after k tickets have given". The ensemble of ``k``
members is built exactly as :func:`freetickets.metrics.summarize` builds the full ensemble (mean
of member probabilities; NLL via :func:`ensemble_nll`), so the point ``k = M`` is the ensemble
row of the evaluation and ``k = 1`` is member 0.
"""
from __future__ import annotations

from typing import Any

from torch import Tensor

from freetickets.metrics._validate import members_and_labels
from freetickets.metrics.calibration import ece
from freetickets.metrics.classification import accuracy, ensemble_nll

__all__ = ["ensemble_size_curve"]


def ensemble_size_curve(member_probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, Any]:
    """``{"k": [1..M], "accuracy": [...], "nll": [...], "ece": [...]}`` (lists of M floats).

    member_probs: ``(M, N, C)`` member softmax probabilities ((N, C) = one member); labels:
    ``(N,)``. Entry ``k - 1`` is the ensemble of members ``0..k-1``.
    """
    members, labels, _ = members_and_labels(member_probs, labels)
    out: dict[str, Any] = {"k": [], "accuracy": [], "nll": [], "ece": []}
    for k in range(1, members.shape[0] + 1):
        first = members[:k]
        mean = first.mean(dim=0)
        out["k"].append(k)
        out["accuracy"].append(float(accuracy(mean, labels)))
        out["nll"].append(float(ensemble_nll(first, labels)))
        out["ece"].append(float(ece(mean, labels, n_bins)))
    return out
