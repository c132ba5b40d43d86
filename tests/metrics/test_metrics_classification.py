"""Known-answer tests for accuracy, NLL, ensemble NLL, Brier and ECE."""
from __future__ import annotations

import math

import pytest
import torch

from freetickets.metrics import accuracy, brier, ece, ensemble_nll, nll, reliability_bins

TINY32 = torch.finfo(torch.float32).tiny


def test_accuracy_known_answer_and_shapes():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.4, 0.4, 0.2]])
    labels = torch.tensor([0, 2, 2, 1])  # correct, wrong, correct, tie -> class 0 -> wrong
    assert accuracy(probs, labels).item() == pytest.approx(0.5)
    assert accuracy(probs, labels).shape == ()
    stacked = torch.stack([probs, probs.flip(-1)])
    per_member = accuracy(stacked, labels)
    assert per_member.shape == (2,)
    # flipped rows argmax -> [2, 1, 0, 1] (the tie [0.2, 0.4, 0.4] goes to index 1): 1 of 4 correct
    assert per_member.tolist() == pytest.approx([0.5, 0.25])


def test_brier_known_answer():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    labels = torch.tensor([0, 2])
    # (0.3^2 + 0.2^2 + 0.1^2) = 0.14 and (0.1^2 + 0.6^2 + 0.7^2) = 0.86 -> mean 0.5
    assert brier(probs, labels).item() == pytest.approx(0.5)
    assert brier(torch.eye(3), torch.arange(3)).item() == pytest.approx(0.0)
    assert brier(torch.eye(2), torch.tensor([1, 0])).item() == pytest.approx(2.0)


def test_nll_and_ensemble_nll_with_zero_probability_member():
    a = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    b = torch.tensor([[0.0, 1.0], [0.25, 0.75]])
    labels = torch.tensor([1, 1])
    probs = torch.stack([a, b])
    # Ensemble: sample 1 mean p_y = (0 + 1)/2 = 0.5, sample 2 = (0.5 + 0.75)/2 = 0.625.
    expected = (-math.log(0.5) - math.log(0.625)) / 2
    value = ensemble_nll(probs, labels)
    assert value.shape == ()
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(expected, rel=1e-12)
    # Member a puts 0 on the label of sample 1: floored at float32 tiny, finite.
    per_member = nll(probs, labels)
    assert per_member.shape == (2,)
    assert torch.isfinite(per_member).all()
    assert per_member[0].item() == pytest.approx((-math.log(TINY32) - math.log(0.5)) / 2)
    assert per_member[1].item() == pytest.approx((0.0 - math.log(0.75)) / 2)


def test_ensemble_nll_all_members_zero_is_finite_and_m1_matches_nll():
    probs = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    labels = torch.tensor([1])
    assert ensemble_nll(probs, labels).item() == pytest.approx(-math.log(TINY32))
    single = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    y = torch.tensor([1, 1])
    assert ensemble_nll(single, y).item() == pytest.approx(nll(single, y).item(), rel=1e-12)
    assert ensemble_nll(single[None], y).item() == pytest.approx(
        (-math.log(0.8) - math.log(0.1)) / 2, rel=1e-6)


def test_ece_known_answer_with_confidence_one_and_empty_bins():
    probs = torch.tensor([
        [1.0, 0.0, 0.0],    # conf 1.0 -> last bin (14), correct
        [1.0, 0.0, 0.0],    # conf 1.0 -> bin 14, wrong
        [0.95, 0.05, 0.0],  # conf 0.95 -> bin 14 ([14/15, 1]), correct
        [0.5, 0.3, 0.2],    # conf 0.5 -> bin 7 ([7/15, 8/15)), correct
        [0.2, 0.7, 0.1],    # conf 0.7 -> bin 10 ([10/15, 11/15)), wrong
    ], dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 0, 0])
    # Bins 0-6, 8, 9, 11-13 are empty and skipped.
    # bin 14: n=3, acc 2/3, conf 2.95/3 -> 3/5 * |2/3 - 2.95/3| = |2 - 2.95| / 5
    # bin 7:  n=1, acc 1, conf 0.5      -> |1 - 0.5| / 5
    # bin 10: n=1, acc 0, conf 0.7      -> |0 - 0.7| / 5
    expected = (0.95 + 0.5 + 0.7) / 5  # 0.43
    assert ece(probs, labels).item() == pytest.approx(expected, abs=1e-12)
    bins = reliability_bins(probs, labels)
    assert bins["count"].shape == (15,)
    assert bins["count"].tolist() == [0] * 7 + [1, 0, 0, 1, 0, 0, 0, 3]
    assert bins["confidence"][14].item() == pytest.approx(2.95 / 3)
    assert bins["accuracy"][14].item() == pytest.approx(2 / 3)
    assert bins["accuracy"][3].item() == 0.0 and bins["confidence"][3].item() == 0.0
    assert bins["edges"].shape == (16,)
    recomputed = (bins["count"] * (bins["accuracy"] - bins["confidence"]).abs()).sum() / 5
    assert recomputed.item() == pytest.approx(expected)


def test_ece_perfectly_calibrated_and_per_member():
    # Confidence 0.75 (bin 11) with 3 of 4 correct: calibrated, ECE 0.
    probs = torch.tensor([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])
    assert ece(probs, labels).item() == pytest.approx(0.0, abs=1e-12)
    overconfident = torch.tensor([[1.0, 0.0]] * 4)
    members = torch.stack([probs, overconfident])
    per_member = ece(members, labels)
    assert per_member.shape == (2,)
    assert per_member.tolist() == pytest.approx([0.0, 0.25])
    assert ece(probs, labels, n_bins=1).item() == pytest.approx(0.0, abs=1e-12)


def test_bad_arguments_raise_value_error():
    probs = torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="labels"):
        accuracy(probs, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="labels"):
        nll(probs, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="probs"):
        brier(torch.ones(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="n_bins"):
        ece(probs, torch.tensor([0, 1]), n_bins=0)
