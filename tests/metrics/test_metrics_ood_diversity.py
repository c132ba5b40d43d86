"""Known-answer tests for OoD scores/metrics, diversity matrices and mask Hamming distance."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from freetickets.metrics import (
    disagreement_matrix,
    fpr_at_tpr,
    kl_matrix,
    mask_hamming,
    mask_hamming_matrix,
    offdiagonal_mean,
    ood_metrics,
    ood_scores,
)


def test_ood_metrics_hand_example():
    id_score = torch.tensor([0.9, 0.8, 0.7, 0.4])
    ood_score = torch.tensor([0.6, 0.5, 0.3, 0.2])
    result = ood_metrics(id_score, ood_score)
    # AUROC: P(id > ood) over 16 pairs; 0.9, 0.8, 0.7 beat all 4, 0.4 beats 0.3 and 0.2 -> 14/16.
    assert result["auroc"] == pytest.approx(14 / 16)
    # Ranking: I I I O O I O O. AP-in = (1 + 1 + 1 + 4/6) / 4.
    assert result["aupr_in"] == pytest.approx((3 + 4 / 6) / 4)
    # Negated scores, OoD positive: O O I O O I I I. AP-out = (1 + 1 + 3/4 + 4/5) / 4.
    assert result["aupr_out"] == pytest.approx((2 + 0.75 + 0.8) / 4)
    # k = ceil(0.95 * 4) = 4 -> threshold = 0.4 (lowest ID); OoD >= 0.4: 0.6, 0.5 -> 2/4.
    assert result["fpr95"] == pytest.approx(0.5)
    assert all(isinstance(v, float) for v in result.values())


def test_fpr95_ties_and_threshold_choice():
    id_score = np.arange(1, 21) / 20  # 0.05 .. 1.0
    # k = ceil(0.95 * 20) = 19 -> threshold = 19th largest = 0.10; tied OoD 0.10 is accepted.
    assert fpr_at_tpr(id_score, [0.10, 0.05, 0.5]) == pytest.approx(2 / 3)
    # All ID tied: threshold 0.5 accepts every ID sample and the tied OoD sample.
    assert fpr_at_tpr([0.5] * 20, [0.5, 0.4]) == pytest.approx(0.5)
    # Perfect separation.
    assert fpr_at_tpr([0.9, 0.8], [0.1, 0.2]) == 0.0
    with pytest.raises(ValueError, match="id_score"):
        fpr_at_tpr([], [0.1])
    with pytest.raises(ValueError, match="ood_score"):
        ood_metrics([0.1], [float("nan")])


def test_fpr95_agrees_with_roc_curve_without_ties():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    ids, oods = rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, 200)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(300), np.zeros(200)], np.r_[ids, oods],
                            drop_intermediate=False)
    assert fpr_at_tpr(ids, oods) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])


def test_ood_scores_hand_values():
    # Two confident members that disagree: mean (0.5, 0.5).
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    scores = ood_scores(probs)
    assert scores["msp"].tolist() == pytest.approx([0.5])
    assert scores["entropy"].tolist() == pytest.approx([math.log(2)])
    assert scores["mutual_information"].tolist() == pytest.approx([math.log(2)])
    # M = 1 ((N, C) input): MI is exactly 0, entropy of the single distribution.
    single = ood_scores(torch.tensor([[0.25, 0.75], [1.0, 0.0]]))
    assert single["mutual_information"].tolist() == [0.0, 0.0]
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert single["entropy"].tolist() == pytest.approx([h, 0.0])
    assert single["msp"].tolist() == pytest.approx([0.75, 1.0])


def test_disagreement_matrix_hand_example():
    predictions = torch.tensor([[0, 1, 2, 0], [0, 1, 2, 1], [1, 0, 2, 1]])
    probs = torch.nn.functional.one_hot(predictions, 3).float() * 0.8 + 0.2 / 3
    matrix = disagreement_matrix(probs)
    expected = torch.tensor([[0, 1 / 4, 3 / 4], [1 / 4, 0, 2 / 4], [3 / 4, 2 / 4, 0]],
                            dtype=torch.float64)
    assert torch.allclose(matrix, expected)
    assert offdiagonal_mean(matrix) == pytest.approx(0.5)
    one = disagreement_matrix(probs[:1])
    assert one.tolist() == [[0.0]] and offdiagonal_mean(one) == 0.0


def test_kl_matrix_hand_example_and_zero_probabilities():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    probs = torch.stack([torch.stack([p, p]), torch.stack([q, p])])  # (2, N=2, 2)
    matrix = kl_matrix(probs)
    kl_pq = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_qp = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert matrix[0, 1].item() == pytest.approx(kl_pq / 2)  # second sample identical -> KL 0
    assert matrix[1, 0].item() == pytest.approx(kl_qp / 2)
    assert matrix[0, 0].item() == 0.0 and matrix[1, 1].item() == 0.0
    assert offdiagonal_mean(matrix) == pytest.approx((kl_pq + kl_qp) / 4)
    # A zero in p_i contributes 0; a zero in p_j is floored at eps (finite).
    hard = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])
    m = kl_matrix(hard, eps=1e-12)
    assert m[0, 1].item() == pytest.approx(math.log(2))
    assert m[1, 0].item() == pytest.approx(0.5 * math.log(0.5) + 0.5 * (math.log(0.5) - math.log(1e-12)))
    assert torch.isfinite(m).all()


def test_mask_hamming():
    a = {"w": torch.tensor([True, False, True, False]), "v": torch.tensor([[True, True]])}
    b = {"w": torch.tensor([True, True, False, False]), "v": torch.tensor([[True, False]])}
    assert mask_hamming(a, b) == pytest.approx(3 / 6)
    assert mask_hamming(a, a) == 0.0
    matrix = mask_hamming_matrix([a, b, a])
    assert matrix.tolist() == [[0.0, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.0]]
    with pytest.raises(ValueError, match="same parameters"):
        mask_hamming(a, {"w": b["w"]})
    with pytest.raises(ValueError, match="shape"):
        mask_hamming(a, {"w": b["w"], "v": torch.ones(3, dtype=torch.bool)})
