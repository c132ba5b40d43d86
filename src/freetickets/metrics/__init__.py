"""Evaluation metrics: pure functions on probability tensors (docs/evaluation.md).

Shapes: ``probs`` is ``(M, N, C)`` member softmax probabilities, members first, or ``(N, C)``
for one set of probabilities; ``labels`` is ``(N,)`` int64. Per-member metrics return a float64
tensor ``(M,)`` (0-d for ``(N, C)`` input); for the ensemble prediction pass ``probs.mean(0)``,
except NLL, whose ensemble form is :func:`ensemble_nll`. :func:`summarize` and
:func:`corruption_summary` produce the JSON objects of the evaluation output (docs/evaluation.md).
"""
from freetickets.metrics.calibration import ece, reliability_bins
from freetickets.metrics.classification import accuracy, brier, ensemble_nll, nll
from freetickets.metrics.diversity import (
    disagreement_matrix,
    kl_matrix,
    mask_hamming,
    mask_hamming_matrix,
    offdiagonal_mean,
)
from freetickets.metrics.ensemble_size import ensemble_size_curve
from freetickets.metrics.ood import fpr_at_tpr, ood_metrics, ood_scores
from freetickets.metrics.summary import corruption_summary, summarize

__all__ = [
    "accuracy",
    "nll",
    "ensemble_nll",
    "brier",
    "ece",
    "reliability_bins",
    "ood_scores",
    "ood_metrics",
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
