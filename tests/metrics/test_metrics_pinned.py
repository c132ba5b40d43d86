"""Known answers at the boundaries of the calibration bins and of the disagreement definitions.

Each test pins one documented convention with values chosen so that an off-by-one (a closed
instead of half-open bin, a sum instead of a mean, a tie broken the other way) changes the result.
"""
from __future__ import annotations

import math

import pytest
import torch

from freetickets.ensembles.ensemble import uncertainty_from_probs
from freetickets.metrics import ece, reliability_bins
from freetickets.metrics.diversity import disagreement_matrix, offdiagonal_mean


def _two_class(confidences: list[float]) -> torch.Tensor:
    """(N, 2) probabilities whose top-label confidence is ``confidences`` (class 0 on top)."""
    c = torch.tensor(confidences, dtype=torch.float64)
    return torch.stack([c, 1.0 - c], dim=1)


def test_bins_are_left_closed_and_the_last_bin_holds_one():
    """B = 4, edges 0, .25, .5, .75, 1: a confidence on an inner edge opens the bin to its right,
    and exactly 1.0 falls into the last bin, not past it."""
    probs = _two_class([0.5, 0.6, 0.75, 0.8, 1.0])
    labels = torch.zeros(5, dtype=torch.long)
    bins = reliability_bins(probs, labels, n_bins=4)
    assert bins["count"].tolist() == [0.0, 0.0, 2.0, 3.0]
    assert bins["edges"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(v.dtype == torch.float64 for v in bins.values())  # JSON-bound statistics in float64
    assert bins["confidence"].tolist() == pytest.approx([0.0, 0.0, 0.55, (0.75 + 0.8 + 1.0) / 3], rel=1e-12)
    assert bins["accuracy"].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_lowest_edge_and_quarter_confidence_with_four_classes():
    """With four classes a confidence of exactly 0.25 (all equal) sits on the first inner edge
    (bin 1); a confidence just below it cannot occur, and 0.25 never lands in bin 0."""
    probs = torch.full((3, 4), 0.25, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0])  # ties predict class 0: two of three correct
    bins = reliability_bins(probs, labels, n_bins=4)
    assert bins["count"].tolist() == [0.0, 3.0, 0.0, 0.0]
    assert bins["accuracy"][1].item() == pytest.approx(2 / 3, rel=1e-12)
    assert ece(probs, labels, n_bins=4).item() == pytest.approx(abs(2 / 3 - 0.25), rel=1e-12)


def test_ece_weights_each_bin_by_its_share_of_samples():
    """Bin [0.5, 0.75): confidences .5, .6, both correct -> gap .45 over 2 of 4 samples;
    bin [0.75, 1]: .8 correct, .9 wrong -> accuracy .5, confidence .85, gap .35 over 2 of 4."""
    probs = _two_class([0.5, 0.6, 0.8, 0.9])
    labels = torch.tensor([0, 0, 0, 1])
    expected = 0.5 * abs(1.0 - 0.55) + 0.5 * abs(0.5 - 0.85)
    assert ece(probs, labels, n_bins=4).item() == pytest.approx(expected, rel=1e-12)
    # The same samples with one bin: |accuracy - confidence| over all of them.
    assert ece(probs, labels, n_bins=1).item() == pytest.approx(abs(0.75 - 0.7), rel=1e-12)


def test_ece_per_member_keeps_members_apart():
    """(M, N, C) input gives one ECE per member, each from that member's own bins."""
    probs = torch.stack([_two_class([1.0, 1.0]), _two_class([0.5, 0.5])])
    labels = torch.tensor([0, 1])
    assert ece(probs, labels, n_bins=4).tolist() == pytest.approx([0.5, 0.0], abs=1e-12)


def test_disagreement_matrix_is_the_fraction_of_samples_whose_argmax_differs():
    """Predictions (argmax) of three members over four samples: 0 0 1 1 / 0 1 1 0 / 1 1 1 1."""
    preds = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]])
    probs = torch.nn.functional.one_hot(preds, 3).to(torch.float64) * 0.8 + 0.2 / 3
    d = disagreement_matrix(probs)
    expected = torch.tensor([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]], dtype=torch.float64)
    assert torch.equal(d, expected)
    # The summary averages the six ordered off-diagonal pairs, not the nine entries.
    assert offdiagonal_mean(d) == 0.5
    assert offdiagonal_mean(torch.tensor([[0.0, 1.0], [1.0, 0.0]])) == 1.0


def test_disagreement_ties_go_to_the_lowest_class():
    """A member with equal top probabilities predicts the lower class: it agrees with a member
    that predicts class 0 and disagrees with one that predicts class 1."""
    probs = torch.tensor([[[0.5, 0.5]], [[0.9, 0.1]], [[0.1, 0.9]]], dtype=torch.float64)
    assert disagreement_matrix(probs)[0].tolist() == [0.0, 0.0, 1.0]


def test_per_input_disagreement_counts_members_against_the_ensemble_argmax():
    """Per input: the fraction of members whose argmax differs from the argmax of the MEAN
    probability (not from the majority vote, not from member 0)."""
    probs = torch.tensor([  # (M=3, B=2, C=2): probs[m, b]
        [[0.9, 0.1], [0.4, 0.6]],
        [[0.4, 0.6], [0.7, 0.3]],
        [[0.4, 0.6], [0.7, 0.3]],
    ], dtype=torch.float64)
    # input 0: votes 0, 1, 1 (majority 1) but the mean (.567, .433) is class 0 -> 2/3 disagree.
    # input 1: member 0 votes 1, the others 0, mean (.6, .4) is class 0 -> 1/3 (member 0 is no reference).
    got = uncertainty_from_probs(probs)["disagreement"]
    assert got.tolist() == pytest.approx([2 / 3, 1 / 3], rel=1e-12)


def test_per_input_disagreement_is_zero_when_all_agree_and_bounded_by_m_minus_one_over_m():
    probs = torch.tensor([[[0.7, 0.2, 0.1]], [[0.1, 0.3, 0.6]], [[0.2, 0.5, 0.3]], [[0.8, 0.1, 0.1]]],
                         dtype=torch.float64)  # (M=4, B=1, C=3): mean (.45, .275, .275) -> class 0
    assert uncertainty_from_probs(probs)["disagreement"].tolist() == [0.5]
    same = probs[:1].expand(4, 1, 3)
    assert uncertainty_from_probs(same)["disagreement"].tolist() == [0.0]


def test_per_input_disagreement_reaches_one_when_the_mean_picks_no_members_class():
    """Each member prefers its own class (0, 1, 2) by a little; all give class 3 a lot. The mean
    picks class 3, which no member picks: every member disagrees, so the value is 1, not (M-1)/M."""
    probs = torch.tensor([[[0.40, 0.00, 0.00, 0.35, 0.25]],
                          [[0.00, 0.40, 0.00, 0.35, 0.25]],
                          [[0.00, 0.00, 0.40, 0.35, 0.25]]], dtype=torch.float64)
    assert uncertainty_from_probs(probs)["disagreement"].tolist() == [1.0]


def test_mask_hamming_is_weighted_by_layer_size_and_zero_for_no_masks():
    from freetickets.metrics.diversity import mask_hamming, mask_hamming_matrix

    a = {"w1": torch.tensor([True, False, True, False]), "w2": torch.tensor([[True], [True]])}
    b = {"w1": torch.tensor([True, True, False, False]), "w2": torch.tensor([[True], [False]])}
    assert mask_hamming(a, b) == 3 / 6  # 2 of 4 in w1 and 1 of 2 in w2, over all 6 positions
    assert mask_hamming({}, {}) == 0.0
    matrix = mask_hamming_matrix([a, b, a])
    assert matrix.dtype == torch.float64
    assert matrix.tolist() == [[0.0, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.0]]


def test_mask_hamming_names_the_parameters_only_one_side_has():
    from freetickets.metrics.diversity import mask_hamming

    a = {"shared": torch.ones(2, dtype=torch.bool), "only_a": torch.ones(1, dtype=torch.bool)}
    b = {"shared": torch.ones(2, dtype=torch.bool), "only_b": torch.ones(1, dtype=torch.bool)}
    with pytest.raises(ValueError, match=r"differ in \['only_a', 'only_b'\]"):
        mask_hamming(a, b)


# ---- error messages: one line naming the argument and what is allowed
@pytest.mark.parametrize("call, message", [
    (lambda: ece([[0.5, 0.5]], torch.tensor([0])), "probs must be a torch.Tensor, got list"),
    (lambda: ece(torch.ones(2, 2, 2, 2), torch.tensor([0])), "probs must have shape (M, N, C) or (N, C), got (2, 2, 2, 2)"),
    (lambda: ece(torch.ones(0, 3), torch.zeros(0, dtype=torch.long)), "probs must contain at least one sample (N >= 1)"),
    (lambda: ece(torch.ones(2, 3) / 3, [0, 1]), "labels must be a torch.Tensor, got list"),
    (lambda: ece(torch.ones(2, 3) / 3, torch.tensor([0, 1, 2])), "labels must have shape (2,) to match probs, got (3,)"),
    (lambda: ece(torch.ones(2, 3) / 3, torch.tensor([[0, 1]])), "labels must have shape (2,) to match probs, got (1, 2)"),
    (lambda: ece(torch.ones(2, 3) / 3, torch.tensor([0.0, 1.0])), "labels must be integer class indices, got dtype torch.float32"),
    (lambda: ece(torch.ones(2, 3) / 3, torch.tensor([True, False])), "labels must be integer class indices, got dtype torch.bool"),
    (lambda: ece(torch.ones(2, 3) / 3, torch.tensor([0, 3])), "labels must lie in [0, 3), got range [0, 3]"),
    (lambda: ece(torch.ones(2, 3) / 3, torch.tensor([-1, 2])), "labels must lie in [0, 3), got range [-1, 2]"),
    (lambda: ece(torch.ones(2, 3) / 3, torch.tensor([0, 1]), n_bins=0), "n_bins must be a positive integer, got 0"),
    (lambda: ece(torch.ones(2, 3) / 3, torch.tensor([0, 1]), n_bins=True), "n_bins must be a positive integer, got True"),
    (lambda: reliability_bins(torch.ones(2, 3) / 3, torch.tensor([0, 1]), n_bins=2.0), "n_bins must be a positive integer, got 2.0"),
])
def test_bad_metric_inputs_are_one_clear_line(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_labels_at_the_class_range_edges_are_accepted():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]], dtype=torch.float64)
    assert ece(probs, torch.tensor([0, 2]), n_bins=1).item() == pytest.approx(abs(1.0 - 0.65), rel=1e-12)


def test_ood_scores_are_float64_and_mutual_information_is_per_sample():
    """Sample 0: both members (.5, .5) -> H(mean) = ln 2, mean member entropy ln 2, MI 0.
    Sample 1: members (1, 0) and (0, 1) -> H(mean) = ln 2, member entropies 0, MI ln 2."""
    from freetickets.metrics.ood import ood_scores

    probs = torch.tensor([[[0.5, 0.5], [1.0, 0.0]], [[0.5, 0.5], [0.0, 1.0]]], dtype=torch.float32)
    scores = ood_scores(probs)
    assert all(v.dtype == torch.float64 for v in scores.values())
    ln2 = math.log(2.0)
    assert scores["entropy"].tolist() == pytest.approx([ln2, ln2], rel=1e-12)
    assert scores["mutual_information"].tolist() == pytest.approx([0.0, ln2], abs=1e-12)
    assert scores["msp"].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="^member_probs must have shape"):
        ood_scores(torch.ones(3))


def test_corruption_summary_messages():
    from freetickets.metrics.summary import corruption_summary

    with pytest.raises(ValueError, match=r"^results must contain at least one \(type, severity\) record$"):
        corruption_summary([])
    rec = {"type": "fog", "severity": 3, "accuracy": 0.5, "nll": 1.0, "ece": 0.1}
    with pytest.raises(ValueError, match=r"^duplicate corruption result for type 'fog', severity 3$"):
        corruption_summary([rec, dict(rec)])
    with pytest.raises(ValueError, match=r"a record lacks \['nll'\]$"):
        corruption_summary([{k: v for k, v in rec.items() if k != "nll"}])


def test_ensemble_size_curve_uses_the_given_bins():
    """The curve's ECE is computed with ``n_bins``: one bin gives |accuracy - mean confidence|."""
    from freetickets.metrics.ensemble_size import ensemble_size_curve

    probs = torch.stack([_two_class([0.5, 0.6, 0.8, 0.9]), _two_class([0.5, 0.6, 0.8, 0.9])])
    labels = torch.tensor([0, 0, 0, 1])
    curve = ensemble_size_curve(probs, labels, n_bins=1)
    assert curve["k"] == [1, 2]
    assert curve["ece"] == pytest.approx([abs(0.75 - 0.7)] * 2, rel=1e-12)
    four = ensemble_size_curve(probs, labels, n_bins=4)["ece"]
    assert four == pytest.approx([0.5 * 0.45 + 0.5 * 0.35] * 2, rel=1e-12)


def test_a_confidence_equal_to_a_non_dyadic_inner_edge_opens_the_next_bin():
    """Edges are k / B in float64; a confidence equal to the edge 6/10 (as computed) is in bin 6,
    also where float32 would round the edge up past it (float32(0.6) > 0.6)."""
    edge = float(torch.linspace(0.0, 1.0, 11, dtype=torch.float64)[6])
    probs = _two_class([edge, 1.0 - 1e-9])  # second sample: confidence just below 1, last bin
    counts = reliability_bins(probs, torch.tensor([0, 0]), n_bins=10)["count"].tolist()
    assert counts == [0.0] * 6 + [1.0] + [0.0] * 2 + [1.0]


def test_the_first_bin_holds_confidences_below_one_over_b():
    """Five equal classes give confidence 0.2 < 1/4: bin 0 of four."""
    probs = torch.full((2, 5), 0.2, dtype=torch.float64)
    bins = reliability_bins(probs, torch.tensor([0, 1]), n_bins=4)
    assert bins["count"].tolist() == [2.0, 0.0, 0.0, 0.0]
    assert bins["accuracy"][0].item() == 0.5


def test_metric_outputs_are_float64_and_0d_for_one_set_of_probabilities():
    """(N, C) float32 input: every per-member metric returns a 0-d float64 tensor; (M, N, C): (M,)."""
    from freetickets.metrics import accuracy, brier, nll

    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8]], dtype=torch.float32)
    labels = torch.tensor([0, 0])
    for fn in (accuracy, nll, brier, ece):
        out = fn(probs, labels)
        assert out.shape == () and out.dtype == torch.float64, fn.__name__
        many = fn(probs.expand(3, 2, 2), labels)
        assert many.shape == (3,) and torch.allclose(many, out.expand(3)), fn.__name__
    # Brier computed in float64 from the float32 inputs: ((1 - .7)^2 + .3^2 + (1 - .2)^2 + .8^2) / 2
    p = probs.double()
    expected = (((1 - p[0, 0]) ** 2 + p[0, 1] ** 2 + (1 - p[1, 0]) ** 2 + p[1, 1] ** 2) / 2).item()
    assert brier(probs, labels).item() == pytest.approx(expected, rel=1e-14)


def test_summarize_uses_the_given_bins_for_members_and_ensemble():
    from freetickets.metrics.summary import summarize

    probs = torch.stack([_two_class([0.5, 0.6, 0.8, 0.9]), _two_class([0.5, 0.6, 0.8, 0.9])])
    labels = torch.tensor([0, 0, 0, 1])
    one = summarize(probs, labels, n_bins=1)
    assert one["ensemble"]["ece"] == pytest.approx(0.05, rel=1e-12)
    assert [m["ece"] for m in one["members"]] == pytest.approx([0.05, 0.05], rel=1e-12)
    four = summarize(probs, labels, n_bins=4)
    assert four["ensemble"]["ece"] == pytest.approx(0.4, rel=1e-12)


def test_diversity_input_errors_are_one_clear_line():
    from freetickets.metrics.diversity import kl_matrix

    empty = torch.ones(2, 0, 3)
    for fn in (disagreement_matrix, kl_matrix):
        with pytest.raises(ValueError) as info:
            fn(empty)
        assert str(info.value) == "probs must contain at least one sample (N >= 1)"
    with pytest.raises(ValueError) as info:
        disagreement_matrix([[0.5, 0.5]])
    assert str(info.value) == "probs must be a torch.Tensor, got list"
    for eps in (0.0, -1e-3):
        with pytest.raises(ValueError) as info:
            kl_matrix(torch.ones(2, 1, 2) / 2, eps=eps)
        assert str(info.value) == f"eps must be positive, got {eps!r}"
    for bad in (torch.zeros(2, 3), torch.zeros(3), torch.zeros(2, 2, 2)):
        with pytest.raises(ValueError) as info:
            offdiagonal_mean(bad)
        assert str(info.value) == f"matrix must be square (M, M), got {tuple(bad.shape)}"


def test_kl_and_offdiagonal_mean_reduce_in_float64():
    from freetickets.metrics.diversity import kl_matrix

    probs = torch.tensor([[[0.9, 0.1]], [[0.3, 0.7]]], dtype=torch.float32)
    kl = kl_matrix(probs)
    assert kl.dtype == torch.float64
    p, q = probs.double()[0, 0], probs.double()[1, 0]
    expected = float((p * (p.log() - q.log())).sum())
    assert kl[0, 1].item() == pytest.approx(expected, rel=1e-6)
    # The mean of float32 entries is taken in float64 (float32 would round 0.1 + 0.2).
    m = torch.tensor([[0.0, 0.1], [0.2, 0.0]], dtype=torch.float32)
    assert offdiagonal_mean(m) == (float(m[0, 1]) + float(m[1, 0])) / 2


def test_fpr_at_tpr_threshold_rank_at_small_and_fractional_counts():
    """k = ceil(tpr * n) (at least 1): with 10 ID scores and tpr 0.1 the threshold is the top
    score (k = 1); with 30 scores and tpr 0.95, 28.5 rounds UP to k = 29; tpr = 1 takes all."""
    from freetickets.metrics.ood import fpr_at_tpr

    ids = [float(v) for v in range(10, 0, -1)]  # 10 .. 1
    assert fpr_at_tpr(ids, [9.5, 10.0, 11.0], tpr=0.1) == pytest.approx(2 / 3)  # accepted: score >= 10
    ids30 = [float(v) for v in range(1, 31)]  # sorted descending: 30 .. 1; the 29th is 2
    assert fpr_at_tpr(ids30, [1.5, 2.0, 2.5], tpr=0.95) == pytest.approx(2 / 3)  # accepted: >= 2
    assert fpr_at_tpr(ids30, [0.5, 1.0], tpr=1.0) == 0.5  # threshold: the lowest ID score


@pytest.mark.parametrize("tpr", [0.0, -0.5, 1.5])
def test_fpr_at_tpr_refuses_a_rate_outside_0_1(tpr):
    from freetickets.metrics.ood import fpr_at_tpr

    with pytest.raises(ValueError) as info:
        fpr_at_tpr([1.0], [0.0], tpr=tpr)
    assert str(info.value) == f"tpr must lie in (0, 1], got {tpr!r}"


def test_ood_score_errors_name_the_argument():
    from freetickets.metrics.ood import fpr_at_tpr, ood_metrics

    for fn in (fpr_at_tpr, ood_metrics):
        with pytest.raises(ValueError) as info:
            fn([1.0, 2.0], [])
        assert str(info.value) == "ood_score must be a non-empty 1-D array of scores, got shape (0,)"
        with pytest.raises(ValueError) as info:
            fn([[1.0]], [0.5])
        assert str(info.value) == "id_score must be a non-empty 1-D array of scores, got shape (1, 1)"
        with pytest.raises(ValueError) as info:
            fn([1.0, float("nan")], [0.5])
        assert str(info.value) == "id_score contains NaN or infinite scores"
        with pytest.raises(ValueError) as info:
            fn([1.0], torch.tensor([float("inf")]))
        assert str(info.value) == "ood_score contains NaN or infinite scores"


def test_paired_interval_messages_and_a_unit_variance():
    from freetickets.metrics.claims import claim, paired_interval

    for diffs, message in (([], "paired_interval needs at least one difference"),
                           ([1.0, float("nan")], "paired differences must be finite")):
        with pytest.raises(ValueError) as info:
            paired_interval(diffs)
        assert str(info.value) == message
    for confidence in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError) as info:
            paired_interval([1.0, 2.0], confidence)
        assert str(info.value) == "confidence must be in (0, 1)"
    # differences 1, 2, 3: mean 2, sample variance exactly 1 -- a real interval, not a point
    mean, lo, hi = paired_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / 3 ** 0.5  # t_{0.975, 2} * sqrt(1 / 3)
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half), rel=1e-9)
    entry = claim("c", [1.0, 2.0, 3.0], [0.0, 0.0, 0.0], confidence=0.5)
    assert entry["name"] == "c"
    assert entry["interval"][1] - 2.0 == pytest.approx(0.8164965809277259 / 3 ** 0.5, rel=1e-9)  # t_{0.75, 2}
    with pytest.raises(ValueError) as info:
        claim("c", [1.0], [1.0, 2.0])
    assert str(info.value) == "claim 'c': 1 vs 2 seeds; pairs need equal counts"
