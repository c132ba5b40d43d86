"""Out-of-distribution detection scores and metrics (docs/evaluation.md).

Scores come from the ensemble's predictive distribution; the detection metrics treat
in-distribution (ID) as the *positive* class and assume that a *higher score means more ID*.

Logit scores (:func:`logit_scores`: MaxLogit, Hendrycks et al. 2022; energy, Liu et al. 2020)
need the members' logits, not their probabilities: softmax forgets the logits' per-sample
offset, which is what these scores read. For an ensemble they are the scores of the **mean
member logit** ``z̄ = mean_m z_m``, not the mean of the member scores, for two reasons:

- averaging logits first lets the members' disagreement lower the score: by Jensen,
  ``logsumexp(z̄) <= mean_m logsumexp(z_m)`` and ``max_c z̄_c <= mean_m max_c z_{m, c}``, with
  the gap growing as members favour different classes, which is the signal an ensemble adds
  for OoD detection; the mean of member scores cannot see whether the members agree;
- it is torch-uncertainty's convention (its ``MaxLogitCriterion`` and ``EnergyCriterion``
  average the estimators' logits), so the numbers compare with what users of that library
  report, and the cross-check tests verify them against it.

For ``M = 1`` both readings are the single model's score.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from freetickets.metrics._validate import as_members

__all__ = ["ood_scores", "logit_scores", "ood_metrics", "ood_entry", "fpr_at_tpr", "OOD_SCORE_SIGNS"]

#: Sign that makes each score of :func:`ood_scores` "higher = more in-distribution", the
#: orientation :func:`ood_metrics` expects: pass ``sign * score``.
OOD_SCORE_SIGNS: dict[str, float] = {
    "msp": 1.0, "entropy": -1.0, "mutual_information": -1.0, "max_logit": 1.0, "energy": -1.0,
}


def logit_scores(member_logits: Tensor) -> dict[str, Tensor]:
    """MaxLogit and energy of an ensemble from its members' logits; each float64 of shape (N,).

    member_logits: (M, N, C) member logits, or (N, C) for a single model. With the mean member
    logit ``z̄ = mean_m z_m`` (why the mean logit: module docstring):

    - ``"max_logit"``: max_c z̄_c. **Higher = more in-distribution.**
    - ``"energy"``: the free energy ``E = -logsumexp_c z̄_c`` (temperature 1). **Higher = more
      OoD**; pass ``-energy`` (the "energy score" logsumexp) to :func:`ood_metrics`.
    """
    members, _ = as_members(member_logits, "member_logits")
    mean = members.to(torch.float64).mean(dim=0)  # (N, C)
    return {
        "max_logit": mean.max(dim=1).values,
        "energy": -torch.logsumexp(mean, dim=1),
    }


def ood_scores(member_probs: Tensor, member_logits: Tensor | None = None) -> dict[str, Tensor]:
    """Per-sample uncertainty scores of an ensemble; each value is float64 of shape (N,).

    member_probs: (M, N, C) member softmax probabilities, or (N, C) for a single model.
    With ``p̄ = mean_m p_m``:

    - ``"msp"``: max_c p̄_c, the maximum softmax probability (Hendrycks & Gimpel 2017).
      **Higher = more in-distribution**; pass it to :func:`ood_metrics` directly.
    - ``"entropy"``: H(p̄) = -sum_c p̄_c log p̄_c in nats (0 log 0 = 0). Total uncertainty,
      **higher = more OoD**; pass ``-entropy`` to :func:`ood_metrics`.
    - ``"mutual_information"``: H(p̄) - mean_m H(p_m), the members' disagreement (epistemic
      part). **Higher = more OoD**; pass its negation. It is non-negative in exact arithmetic
      (Jensen) and clamped at 0 against round-off; identically 0 for M = 1.

    With ``member_logits`` (M, N, C) (the logits the probabilities came from) the result also
    holds ``"max_logit"`` and ``"energy"`` of :func:`logit_scores`.
    """
    members, _ = as_members(member_probs, "member_probs")
    p = members.to(torch.float64)
    mean = p.mean(dim=0)  # (N, C)
    entropy = -torch.special.xlogy(mean, mean).sum(dim=1)
    member_entropy = -torch.special.xlogy(p, p).sum(dim=2).mean(dim=0)
    scores = {
        "msp": mean.max(dim=1).values,
        "entropy": entropy,
        "mutual_information": (entropy - member_entropy).clamp_min(0.0),
    }
    if member_logits is not None:
        logits, _ = as_members(member_logits, "member_logits")
        if logits.shape != members.shape:
            raise ValueError(f"member_logits must have the shape of member_probs {tuple(members.shape)}, "
                             f"got {tuple(logits.shape)}")
        scores.update(logit_scores(logits))
    return scores


def _as_numpy_scores(scores, name: str) -> np.ndarray:
    if isinstance(scores, Tensor):
        scores = scores.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite scores")
    return array


def fpr_at_tpr(id_score, ood_score, tpr: float = 0.95) -> float:
    """Fraction of OoD samples accepted at the threshold that accepts ``tpr`` of the ID samples.

    Samples with ``score >= t`` are accepted (called ID). ``t`` is the *largest* threshold that
    accepts at least a ``tpr`` fraction of ID samples: with the ID scores sorted in descending
    order ``s_1 >= ... >= s_n`` and ``k = ceil(tpr * n)``, ``t = s_k``. Ties at ``t`` are all
    accepted, ID and OoD alike, so the reached TPR may exceed ``tpr`` and tied OoD samples count
    as false positives (the pessimistic reading; a detector cannot split equal scores).

    Why not ``sklearn.metrics.roc_curve``: published FPR95 code differs in whether it
    interpolates, uses ``>`` or ``>=`` and which side of the first point with TPR >= 0.95 it
    takes, and ``roc_curve`` drops intermediate thresholds by default; a few lines with one
    exact definition make the number reproducible and tie handling explicit.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr!r}")
    ids = _as_numpy_scores(id_score, "id_score")
    oods = _as_numpy_scores(ood_score, "ood_score")
    # round() guards ceil against products like 0.95 * 60 = 57.00000000000001.
    k = max(1, math.ceil(round(tpr * ids.size, 9)))
    threshold = np.sort(ids)[::-1][k - 1]
    return float(np.mean(oods >= threshold))


def ood_metrics(id_score, ood_score) -> dict[str, float]:
    """Detection metrics for separating ID from OoD samples by a score (higher = more ID).

    id_score: (N_id,), ood_score: (N_ood,) tensors or arrays. Returns plain floats in [0, 1]:

    - ``"auroc"``: area under the ROC curve, ID positive.
    - ``"aupr_in"``: average precision with ID positive and the score as given.
    - ``"aupr_out"``: average precision with OoD positive, ranked by the negated score.
    - ``"fpr95"``: :func:`fpr_at_tpr` at TPR = 0.95 (lower is better).

    AUROC and AUPR use scikit-learn's ``roc_auc_score`` and ``average_precision_score`` on
    purpose: they are the field-standard definitions used by the OoD literature's reference code
    (Hendrycks & Gimpel 2017 onward), with ties handled exactly, and ``average_precision_score``
    is the step-wise sum (no optimistic trapezoidal interpolation), so our numbers are comparable
    to published ones.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    ids = _as_numpy_scores(id_score, "id_score")
    oods = _as_numpy_scores(ood_score, "ood_score")
    scores = np.concatenate([ids, oods])
    is_id = np.concatenate([np.ones(ids.size), np.zeros(oods.size)])
    return {
        "auroc": float(roc_auc_score(is_id, scores)),
        "aupr_in": float(average_precision_score(is_id, scores)),
        "aupr_out": float(average_precision_score(1.0 - is_id, -scores)),
        "fpr95": fpr_at_tpr(ids, oods, 0.95),
    }


def ood_entry(id_scores: dict[str, Tensor], ood_set_scores: dict[str, Tensor], members: int) -> dict[str, object]:
    """The evaluation JSON entry of one OoD set from the :func:`ood_scores` of both sets.

    The top level holds the :func:`ood_metrics` of the MSP (the default score, the keys every
    reader has used); beside them one block of the same four metrics per score present in both
    (``msp``, ``entropy``, ``mutual_information`` only for ``members > 1`` where it is not
    identically 0, ``max_logit``, ``energy``), each oriented by :data:`OOD_SCORE_SIGNS`.
    """
    entry: dict[str, object] = dict(ood_metrics(id_scores["msp"], ood_set_scores["msp"]))
    for key, sign in OOD_SCORE_SIGNS.items():
        if key not in id_scores or key not in ood_set_scores or (key == "mutual_information" and members <= 1):
            continue
        entry[key] = ood_metrics(sign * id_scores[key], sign * ood_set_scores[key])
    return entry
