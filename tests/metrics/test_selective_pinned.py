"""Pinned behaviour of freetickets.metrics.selective: defaults, error messages, boundaries, dtypes.

Known answers on tiny binary problems; each test names the behaviour it fixes.
"""
from __future__ import annotations

import pytest
import torch

from freetickets.metrics import coverage_at_risk, risk_at_coverage, risk_coverage_curve


def _binary(confidence: list[float], correct: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) float64 probabilities predicting class 0 with the given confidence (> 0.5)."""
    c = torch.tensor(confidence, dtype=torch.float64)
    return torch.stack([c, 1 - c], dim=1), torch.tensor([0 if ok else 1 for ok in correct])


# Curve r(k) = [0, 1/2, 1/3, 2/4, 3/5]
_PROBS, _LABELS = _binary([0.9, 0.8, 0.7, 0.6, 0.55], [True, False, True, False, False])


def test_confidence_is_averaged_in_float64_so_float32_near_ties_stay_ordered():
    """Member means are taken in float64: two float32 samples whose float32 means would round to
    the same value keep their true order (no spurious tie)."""
    high = torch.tensor([[0.75, 0.25], [0.75 + 2**-24, 0.25]], dtype=torch.float32)  # mean 0.75 + 2^-25
    low = torch.tensor([[0.75, 0.25], [0.75, 0.25]], dtype=torch.float32)  # mean 0.75
    members = torch.stack([high, low], dim=1)  # (M=2, N=2, C=2)
    labels = torch.tensor([0, 1])  # the more confident sample is right, the other wrong
    curve = risk_coverage_curve(members, labels)
    assert curve.dtype == torch.float64
    assert curve.tolist() == [0.0, 0.5]  # a tie would give r(1) = 0.5


def test_risk_at_coverage_default_is_80_percent():
    """Default coverage 0.8: with N = 5 the risk among the 4 most confident samples."""
    assert float(risk_at_coverage(_PROBS, _LABELS)) == pytest.approx(0.5, abs=1e-15)


def test_risk_at_zero_coverage_is_the_risk_of_the_single_most_confident_sample():
    """Coverage 0 (and any coverage below 1/N) reads r(1): at least one sample is answered."""
    assert float(risk_at_coverage(_PROBS, _LABELS, coverage=0.0)) == 0.0
    assert float(risk_at_coverage(_PROBS, _LABELS, coverage=0.1)) == 0.0
    assert float(risk_at_coverage(_PROBS, _LABELS, coverage=0.2)) == 0.0
    assert float(risk_at_coverage(_PROBS, _LABELS, coverage=0.2000001)) == pytest.approx(0.5)


def test_risk_at_coverage_reads_coverage_within_1e9_of_a_grid_point_as_that_point():
    """c N within 1e-9 above an integer k reads r(k), not r(k + 1) (round-off guard on ceil)."""
    assert float(risk_at_coverage(_PROBS, _LABELS, coverage=0.80000000002)) == pytest.approx(0.5, abs=1e-15)
    assert float(risk_at_coverage(_PROBS, _LABELS, coverage=0.8000001)) == pytest.approx(0.6, abs=1e-15)


@pytest.mark.parametrize("bad", [-0.1, 1.5, True, "0.5", None])
def test_risk_at_coverage_rejects_bad_coverage_naming_it(bad):
    with pytest.raises(ValueError, match=r"^coverage must be a number in \[0, 1\], got "):
        risk_at_coverage(_PROBS, _LABELS, coverage=bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, False, "0.05", None])
def test_coverage_at_risk_rejects_bad_risk_naming_it(bad):
    with pytest.raises(ValueError, match=r"^risk must be a number in \[0, 1\], got "):
        coverage_at_risk(_PROBS, _LABELS, risk=bad)


def test_coverage_at_risk_default_is_5_percent_risk():
    """Default risk 0.05: only r(1) = 0 qualifies here, so coverage 1/5."""
    out = coverage_at_risk(_PROBS, _LABELS)
    assert out.dtype == torch.float64
    assert float(out) == pytest.approx(0.2, abs=1e-15)


def test_coverage_at_risk_is_float64_and_exact_on_the_grid():
    """The coverage k / N is computed in float64 (1/3, not float32's 0.3333333432674408)."""
    probs, labels = _binary([0.9, 0.8, 0.7], [True, False, False])  # r = [0, 1/2, 2/3]
    out = coverage_at_risk(probs, labels, risk=0.1)
    assert out.dtype == torch.float64
    assert float(out) == 1 / 3


def test_coverage_at_risk_is_float64_zero_when_no_coverage_reaches_the_risk():
    probs, labels = _binary([0.9, 0.8], [False, True])  # r = [1, 1/2]
    out = coverage_at_risk(probs, labels, risk=0.4)
    assert out.dtype == torch.float64
    assert out.shape == ()
    assert float(out) == 0.0


def test_coverage_at_risk_tolerance_boundary_is_inclusive():
    """r(k) <= risk + 1e-12 admits k, the boundary itself included."""
    risk = 0.5 - 1e-12
    assert risk + 1e-12 == 0.5  # the boundary lands exactly on r(2) = 0.5
    probs, labels = _binary([0.9, 0.8, 0.7], [True, False, False])  # r = [0, 1/2, 2/3]
    assert float(coverage_at_risk(probs, labels, risk=risk)) == 2 / 3


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_probabilities_are_rejected(bad):
    """A NaN confidence would rank first and yield a finite, meaningless AURC: refuse it."""
    probs = _PROBS.clone()
    probs[2, 1] = bad
    with pytest.raises(ValueError, match=r"^probs contains NaN or infinite probabilities$"):
        risk_coverage_curve(probs, _LABELS)
    with pytest.raises(ValueError, match=r"^probs contains NaN or infinite probabilities$"):
        risk_at_coverage(probs, _LABELS)
