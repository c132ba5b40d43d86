"""Evaluation metrics: pure functions on probability tensors (docs/evaluation.md).

Shapes: ``probs`` is ``(M, N, C)`` member softmax probabilities, members first, or ``(N, C)``
for one set of probabilities; ``labels`` is ``(N,)`` int64. Per-member metrics return a float64
tensor ``(M,)`` (0-d for ``(N, C)`` input); for the ensemble prediction pass ``probs.mean(0)``,
except NLL, whose ensemble form is :func:`ensemble_nll`, and the selective-prediction metrics
(:func:`aurc` and friends), which are defined on the ensemble's MSP and take ``(M, N, C)``.
Temperature scaling: :mod:`freetickets.metrics.temperature`. :func:`summarize` and
:func:`corruption_summary` produce the JSON objects of the evaluation output (docs/evaluation.md).
"""
from freetickets.metrics.calibration import adaptive_ece, ece, reliability_bins
from freetickets.metrics.classification import accuracy, brier, ensemble_nll, nll
from freetickets.metrics.diversity import (
    disagreement_matrix,
    kl_matrix,
    mask_hamming,
    mask_hamming_matrix,
    offdiagonal_mean,
)
from freetickets.metrics.ensemble_size import ensemble_size_curve
from freetickets.metrics.ood import OOD_SCORE_SIGNS, fpr_at_tpr, logit_scores, ood_entry, ood_metrics, ood_scores
from freetickets.metrics.selective import aurc, coverage_at_risk, risk_at_coverage, risk_coverage_curve, selective_summary
from freetickets.metrics.summary import corruption_summary, summarize
from freetickets.metrics.temperature import fit_temperature, scaled_log_probs, temperature_scaled_summary

__all__ = [
    "accuracy",
    "nll",
    "ensemble_nll",
    "brier",
    "ece",
    "adaptive_ece",
    "reliability_bins",
    "aurc",
    "risk_coverage_curve",
    "risk_at_coverage",
    "coverage_at_risk",
    "selective_summary",
    "fit_temperature",
    "scaled_log_probs",
    "temperature_scaled_summary",
    "ood_scores",
    "logit_scores",
    "OOD_SCORE_SIGNS",
    "ood_metrics",
    "ood_entry",
    "fpr_at_tpr",
    "disagreement_matrix",
    "kl_matrix",
    "offdiagonal_mean",
    "mask_hamming",
    "mask_hamming_matrix",
    "summarize",
    "corruption_summary",
    "ensemble_size_curve",
]
