"""Selective prediction (AURC, risk at coverage, coverage at risk): known answers, ties, oracle."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from freetickets.metrics import aurc, coverage_at_risk, risk_at_coverage, risk_coverage_curve, selective_summary


def _binary(confidence: list[float], correct: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) probabilities predicting class 0 with the given confidence (all > 0.5), and labels
    that make the prediction right or wrong as asked."""
    c = torch.tensor(confidence, dtype=torch.float64)
    probs = torch.stack([c, 1 - c], dim=1)
    labels = torch.tensor([0 if ok else 1 for ok in correct])
    return probs, labels


def test_curve_and_aurc_without_ties():
    probs, labels = _binary([0.9, 0.8, 0.7, 0.6], [True, False, True, False])
    curve = risk_coverage_curve(probs, labels)
    assert curve.tolist() == pytest.approx([0.0, 1 / 2, 1 / 3, 2 / 4], abs=1e-15)
    assert float(aurc(probs, labels)) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4, abs=1e-15)


def test_aurc_is_order_invariant_and_ignores_input_order():
    probs, labels = _binary([0.9, 0.8, 0.7, 0.6, 0.55], [True, False, True, False, True])
    perm = torch.tensor([3, 0, 4, 2, 1])
    assert float(aurc(probs[perm], labels[perm])) == pytest.approx(float(aurc(probs, labels)), abs=1e-15)


def test_ties_are_averaged_over_orders():
    # Group at 0.7 holds one error in two samples: r(2) = (0 + 1/2) / 2 whichever comes first.
    probs, labels = _binary([0.9, 0.7, 0.7, 0.55], [True, False, True, False])
    expected = [0.0, 0.25, 1 / 3, 0.5]
    assert risk_coverage_curve(probs, labels).tolist() == pytest.approx(expected, abs=1e-15)
    swapped = torch.tensor([0, 2, 1, 3])
    assert risk_coverage_curve(probs[swapped], labels[swapped]).tolist() == pytest.approx(expected, abs=1e-15)
    assert float(aurc(probs, labels)) == pytest.approx(sum(expected) / 4, abs=1e-15)


def test_constant_confidence_gives_the_error_rate_everywhere():
    probs, labels = _binary([0.6] * 4, [True, True, False, True])
    assert risk_coverage_curve(probs, labels).tolist() == pytest.approx([0.25] * 4, abs=1e-15)
    assert float(aurc(probs, labels)) == pytest.approx(0.25, abs=1e-15)


def _brute_force_aurc(confidence: list[float], errors: list[int]) -> float:
    """Mean over every order of the samples consistent with decreasing confidence (all orders
    of each tie group) of the mean cumulative error rate."""
    n = len(confidence)
    values = []
    for order in itertools.permutations(range(n)):
        if any(confidence[order[i]] < confidence[order[i + 1]] for i in range(n - 1)):
            continue
        cum = 0
        total = 0.0
        for k, i in enumerate(order, start=1):
            cum += errors[i]
            total += cum / k
        values.append(total / n)
    return sum(values) / len(values)


@pytest.mark.parametrize("seed", range(6))
def test_aurc_equals_brute_force_expectation_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    n = 7
    confidence = (0.55 + 0.1 * torch.randint(0, 3, (n,), generator=g)).tolist()  # 3 levels: many ties
    correct = (torch.rand(n, generator=g) < 0.6).tolist()
    probs, labels = _binary(confidence, correct)
    expected = _brute_force_aurc(confidence, [0 if ok else 1 for ok in correct])
    assert float(aurc(probs, labels)) == pytest.approx(expected, abs=1e-12)


def test_ensemble_confidence_is_the_msp_of_the_mean():
    # Member 0 is confident in sample 1 and member 1 in sample 0, but the mean ranks sample 0
    # first (0.8 vs 0.7): with sample 0 wrong the curve starts at 1.
    members = torch.tensor([[[0.65, 0.35], [0.95, 0.05]],
                            [[0.95, 0.05], [0.45, 0.55]]], dtype=torch.float64)
    labels = torch.tensor([1, 0])
    mean = members.mean(0)
    assert mean[:, 0].tolist() == pytest.approx([0.8, 0.7])
    assert risk_coverage_curve(members, labels).tolist() == pytest.approx([1.0, 0.5])
    assert float(aurc(members, labels)) == pytest.approx(float(aurc(mean, labels)), abs=1e-15)


def test_risk_at_coverage_takes_ceil_of_coverage_times_n():
    probs, labels = _binary([0.95, 0.9, 0.8, 0.7, 0.6], [True, True, False, True, False])
    # 0.8 * 5 = 4 samples: one error of four.
    assert float(risk_at_coverage(probs, labels, 0.8)) == pytest.approx(0.25)
    assert float(risk_at_coverage(probs, labels, 0.5)) == pytest.approx(1 / 3)  # ceil(2.5) = 3
    assert float(risk_at_coverage(probs, labels, 1.0)) == pytest.approx(0.4)  # the error rate
    assert float(risk_at_coverage(probs, labels, 0.0)) == pytest.approx(0.0)  # at least one sample


def test_coverage_at_risk_is_the_largest_admissible_coverage():
    # Errors only at rank 2: r(1) = 0, r(2) = 0.5, ..., r(20) = 1/20 = 0.05 -> admissible again.
    correct = [True, False] + [True] * 18
    probs, labels = _binary([0.99 - 0.01 * i for i in range(20)], correct)
    assert float(coverage_at_risk(probs, labels, 0.05)) == pytest.approx(1.0)
    assert float(coverage_at_risk(probs, labels, 0.04)) == pytest.approx(1 / 20)


def test_coverage_at_risk_is_zero_when_no_coverage_reaches_the_risk():
    probs, labels = _binary([0.9, 0.8, 0.7], [False, True, True])
    assert float(coverage_at_risk(probs, labels, 0.05)) == 0.0
    assert float(coverage_at_risk(probs, labels, 1.0)) == 1.0


def test_selective_summary_block():
    probs, labels = _binary([0.9, 0.8, 0.7, 0.6, 0.55], [True, True, True, True, False])
    out = selective_summary(probs.unsqueeze(0), labels)
    assert set(out) == {"aurc", "risk_at_80_coverage", "coverage_at_5_risk"}
    assert out["aurc"] == pytest.approx(0.2 / 5)  # only r(5) = 1/5 is non-zero
    assert out["risk_at_80_coverage"] == 0.0
    assert out["coverage_at_5_risk"] == pytest.approx(0.8)
    assert all(isinstance(v, float) for v in out.values())


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, True, "0.8"])
def test_bad_fractions_raise(bad):
    probs, labels = _binary([0.9, 0.8], [True, False])
    with pytest.raises(ValueError, match="coverage"):
        risk_at_coverage(probs, labels, bad)
    with pytest.raises(ValueError, match="risk"):
        coverage_at_risk(probs, labels, bad)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 25), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_risk_curve_invariants(members, n, classes, seed):
    g = torch.Generator().manual_seed(seed)
    # Probabilities rounded to 0.25 steps: many tied confidences.
    raw = torch.randint(0, 4, (members, n, classes), generator=g).double() + 0.25
    probs = raw / raw.sum(-1, keepdim=True)
    labels = torch.randint(0, classes, (n,), generator=g)
    curve = risk_coverage_curve(probs, labels)
    mean = probs.mean(0)
    error_rate = 1.0 - float((mean.argmax(1) == labels).double().mean())
    assert curve.shape == (n,)
    assert float(curve[-1]) == pytest.approx(error_rate, abs=1e-12)  # full coverage: the error rate
    assert 0.0 <= float(aurc(probs, labels)) <= 1.0
    perm = torch.randperm(n, generator=g)
    assert risk_coverage_curve(probs[:, perm], labels[perm]).tolist() == pytest.approx(curve.tolist(), abs=1e-12)
    # Expected number of errors among the first k never decreases and grows by at most 1 per step.
    errors = curve * torch.arange(1, n + 1, dtype=torch.float64)
    steps = torch.diff(errors, prepend=torch.zeros(1, dtype=torch.float64))
    assert bool(((steps >= -1e-12) & (steps <= 1 + 1e-12)).all())
