"""Adaptive (equal-mass) ECE and the logit OoD scores (MaxLogit, energy): known answers."""
from __future__ import annotations

import math

import pytest
import torch

from freetickets.metrics import OOD_SCORE_SIGNS, adaptive_ece, ece, logit_scores, ood_scores


def _binary(confidence: list[float], correct: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.tensor(confidence, dtype=torch.float64)
    return torch.stack([c, 1 - c], dim=1), torch.tensor([0 if ok else 1 for ok in correct])


def test_adaptive_ece_known_answer_two_equal_bins():
    # Sorted confidences [0.6, 0.7 | 0.8, 0.9], correct [1, 0 | 1, 1]:
    # bin 1 |0.5 - 0.65| = 0.15, bin 2 |1 - 0.85| = 0.15, each half the samples.
    probs, labels = _binary([0.9, 0.6, 0.8, 0.7], [True, True, True, False])
    assert float(adaptive_ece(probs, labels, n_bins=2)) == pytest.approx(0.15, abs=1e-15)


def test_adaptive_ece_uneven_bins_follow_array_split():
    # N = 5, B = 2: bins of 3 and 2 samples.
    probs, labels = _binary([0.6, 0.7, 0.8, 0.9, 0.95], [False, True, True, True, True])
    low = abs(2 / 3 - (0.6 + 0.7 + 0.8) / 3) * 3 / 5
    high = abs(1.0 - (0.9 + 0.95) / 2) * 2 / 5
    assert float(adaptive_ece(probs, labels, n_bins=2)) == pytest.approx(low + high, abs=1e-15)


def test_adaptive_ece_with_a_bin_per_sample_is_the_mean_absolute_gap():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(7, 3, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 3, (7,), generator=g)
    conf, pred = probs.max(1)
    expected = ((pred == labels).double() - conf).abs().mean()
    for bins in (7, 20):  # more bins than samples: the extra bins are empty
        assert float(adaptive_ece(probs, labels, n_bins=bins)) == pytest.approx(float(expected), abs=1e-15)


def test_adaptive_ece_one_bin_equals_equal_width_ece_with_one_bin():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(3, 40, 4, generator=g), dim=2)
    labels = torch.randint(0, 4, (40,), generator=g)
    assert adaptive_ece(probs, labels, 1).tolist() == pytest.approx(ece(probs, labels, 1).tolist(), abs=1e-12)
    assert adaptive_ece(probs, labels).shape == (3,)
    assert adaptive_ece(probs[0], labels).shape == ()


def test_adaptive_ece_rejects_bad_bins():
    probs, labels = _binary([0.9], [True])
    with pytest.raises(ValueError, match="n_bins"):
        adaptive_ece(probs, labels, 0)


def test_logit_scores_known_answer():
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    out = logit_scores(logits)
    assert out["max_logit"].tolist() == pytest.approx([math.log(3.0)], abs=1e-15)
    assert out["energy"].tolist() == pytest.approx([-math.log(4.0)], abs=1e-15)


def test_logit_scores_of_an_ensemble_are_scores_of_the_mean_logit():
    members = torch.tensor([[[0.0, 0.0], [1.0, -1.0]],
                            [[2.0, 0.0], [-1.0, 3.0]]], dtype=torch.float64)  # (M=2, N=2, C=2)
    out = logit_scores(members)
    # Mean logits: [1, 0] and [0, 1].
    assert out["max_logit"].tolist() == pytest.approx([1.0, 1.0], abs=1e-15)
    assert out["energy"].tolist() == pytest.approx([-math.log(math.e + 1.0)] * 2, abs=1e-15)
    # Sample 1's members disagree (class 0 vs class 1): its score is below the mean member score.
    mean_member_max = members.max(2).values.mean(0)
    assert mean_member_max.tolist() == pytest.approx([1.0, 2.0])
    assert out["max_logit"][1] < mean_member_max[1]


def test_one_member_gives_the_single_model_scores():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64)
    for inp in (z, z.unsqueeze(0)):
        out = logit_scores(inp)
        assert torch.equal(out["max_logit"], z.max(1).values)
        assert torch.allclose(out["energy"], -torch.logsumexp(z, 1), atol=0, rtol=0)


def test_logit_scores_read_what_softmax_forgets():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    shifted = logits + 3.0
    a, b = logit_scores(logits), logit_scores(shifted)
    assert (b["max_logit"] - a["max_logit"]).tolist() == pytest.approx([3.0] * 5)
    assert (b["energy"] - a["energy"]).tolist() == pytest.approx([-3.0] * 5)
    pa, pb = ood_scores(torch.softmax(logits, -1)), ood_scores(torch.softmax(shifted, -1))
    assert torch.allclose(pa["msp"], pb["msp"])


def test_ood_scores_with_logits_hold_every_score():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 6, 5, generator=g)
    out = ood_scores(torch.softmax(logits, -1), logits)
    assert set(out) == set(OOD_SCORE_SIGNS) == {"msp", "entropy", "mutual_information", "max_logit", "energy"}
    assert all(v.shape == (6,) and v.dtype == torch.float64 for v in out.values())
    assert set(ood_scores(torch.softmax(logits, -1))) == {"msp", "entropy", "mutual_information"}
    with pytest.raises(ValueError, match="member_logits"):
        ood_scores(torch.softmax(logits, -1), logits[:, :3])


def test_ood_entry_keeps_msp_at_the_top_and_orients_every_score():
    from freetickets.metrics import ood_entry, ood_metrics

    g = torch.Generator().manual_seed(6)
    id_logits, ood_logits = 3 * torch.randn(2, 40, 5, generator=g), torch.randn(2, 30, 5, generator=g)
    ids = ood_scores(torch.softmax(id_logits, -1), id_logits)
    oods = ood_scores(torch.softmax(ood_logits, -1), ood_logits)
    entry = ood_entry(ids, oods, members=2)
    assert {k: entry[k] for k in ("auroc", "aupr_in", "aupr_out", "fpr95")} == entry["msp"]
    assert entry["energy"] == ood_metrics(-ids["energy"], -oods["energy"])
    assert entry["max_logit"] == ood_metrics(ids["max_logit"], oods["max_logit"])
    assert entry["entropy"]["auroc"] == pytest.approx(1 - ood_metrics(ids["entropy"], oods["entropy"])["auroc"])
    assert "mutual_information" not in ood_entry(ids, oods, members=1)
    assert set(ood_entry(ood_scores(torch.softmax(id_logits, -1)), ood_scores(torch.softmax(ood_logits, -1)),
                         members=2)) == {"auroc", "aupr_in", "aupr_out", "fpr95", "msp", "entropy", "mutual_information"}
