"""JSON-ready summaries of the metrics (docs/evaluation.md: "ensemble", "members", "diversity",
"corrupted"). Values are plain Python floats and lists, fractions in [0, 1]."""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from torch import Tensor

from freetickets.metrics._validate import members_and_labels
from freetickets.metrics.calibration import adaptive_ece, ece
from freetickets.metrics.classification import accuracy, brier, ensemble_nll, nll
from freetickets.metrics.diversity import disagreement_matrix, kl_matrix, offdiagonal_mean
from freetickets.metrics.selective import selective_summary

__all__ = ["summarize", "corruption_summary", "CORRUPTION_METRICS"]

CORRUPTION_METRICS = ("accuracy", "nll", "ece")


def summarize(member_probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, Any]:
    """Ensemble, per-member and diversity metrics of one evaluation set.

    member_probs: (M, N, C) member softmax probabilities ((N, C) = one member); labels: (N,).
    The ensemble prediction is the mean of member probabilities (docs/evaluation.md); its NLL is
    :func:`ensemble_nll`. Returns::

        {"ensemble": {"accuracy", "nll", "ece", "brier", "ece_adaptive",
                      "selective": {"aurc", "risk_at_80_coverage", "coverage_at_5_risk"}},
         "members": [{"accuracy", "nll", "ece", "brier"}, ...],          # M entries
         "diversity": {"disagreement", "disagreement_matrix", "kl", "kl_matrix"}}

    where the matrices are M lists of M floats and the scalars are their means over ordered
    pairs i != j (0.0 for M = 1). ``ece_adaptive`` is :func:`~freetickets.metrics.adaptive_ece`
    with ``n_bins`` equal-mass bins; ``selective`` is
    :func:`~freetickets.metrics.selective.selective_summary` of the ensemble.
    """
    members, labels, _ = members_and_labels(member_probs, labels)
    mean = members.mean(dim=0)
    per_member = {
        "accuracy": accuracy(members, labels).tolist(),
        "nll": nll(members, labels).tolist(),
        "ece": ece(members, labels, n_bins).tolist(),
        "brier": brier(members, labels).tolist(),
    }
    disagreement = disagreement_matrix(members)
    kl = kl_matrix(members)
    return {
        "ensemble": {
            "accuracy": float(accuracy(mean, labels)),
            "nll": float(ensemble_nll(members, labels)),
            "ece": float(ece(mean, labels, n_bins)),
            "brier": float(brier(mean, labels)),
            "ece_adaptive": float(adaptive_ece(mean, labels, n_bins)),
            "selective": selective_summary(members, labels),
        },
        "members": [{key: values[m] for key, values in per_member.items()}
                    for m in range(members.shape[0])],
        "diversity": {
            "disagreement": offdiagonal_mean(disagreement),
            "disagreement_matrix": disagreement.tolist(),
            "kl": offdiagonal_mean(kl),
            "kl_matrix": kl.tolist(),
        },
    }


def corruption_summary(results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Aggregate metrics over corrupted test sets (docs/evaluation.md).

    results: one record per (corruption type, severity) split, each a mapping with keys
    ``"type"`` (str), ``"severity"`` (int), ``"accuracy"``, ``"nll"``, ``"ece"`` (numbers, e.g.
    the ensemble entries of :func:`summarize` on that split). Extra keys are ignored.
    Returns::

        {"accuracy", "nll", "ece",                       # mean over all (type, severity) splits
         "by_severity": [{"severity": s, "accuracy", "nll", "ece"}, ...]}   # mean over types

    with ``by_severity`` sorted by severity. Every split has equal weight (the CIFAR-10-C
    convention), whatever its size. A repeated (type, severity) pair raises ``ValueError``.
    """
    records = list(results)
    if not records:
        raise ValueError("results must contain at least one (type, severity) record")
    seen: set[tuple[str, Any]] = set()
    by_severity: dict[Any, list[Mapping[str, Any]]] = {}
    for record in records:
        missing = [k for k in ("type", "severity", *CORRUPTION_METRICS) if k not in record]
        if missing:
            raise ValueError(f"each corruption result needs keys type, severity, accuracy, nll, "
                             f"ece; a record lacks {missing}")
        key = (record["type"], record["severity"])
        if key in seen:
            raise ValueError(f"duplicate corruption result for type {key[0]!r}, severity {key[1]!r}")
        seen.add(key)
        by_severity.setdefault(record["severity"], []).append(record)

    def mean_of(group: list[Mapping[str, Any]]) -> dict[str, float]:
        return {k: math.fsum(float(r[k]) for r in group) / len(group) for k in CORRUPTION_METRICS}

    return {
        **mean_of(records),
        "by_severity": [{"severity": severity, **mean_of(by_severity[severity])}
                        for severity in sorted(by_severity)],
    }
