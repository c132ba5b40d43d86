"""Pinned behaviour of ``freetickets.metrics.temperature``: known answers for ``log p̄``, the
bounds check and its message, the fit's stated precision, the end-of-interval warning (its
exact text, and its absence for an interior optimum), and the summary's ``n_bins``."""
from __future__ import annotations

import logging
import math
import warnings

import pytest
import torch

from freetickets.metrics import ece
from freetickets.metrics.temperature import (
    fit_temperature, mean_log_probs, scaled_log_probs, temperature_scaled_summary)

LOGGER = "freetickets.metrics.temperature"


def _data(seed: int, m: int = 2, n: int = 30, c: int = 3):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2.0 * torch.randn(m, n, c, generator=g, dtype=torch.float64), dim=2)
    return probs, torch.randint(0, c, (n,), generator=g)


def _exact_temperature(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Oracle: the NLL is convex in beta = 1 / T, so bisect the sign of its derivative
    d NLL / d beta = mean(E_softmax(beta z)[z] - z_y) to float64 precision."""
    z = mean_log_probs(probs)
    z_y = z.gather(1, labels.view(-1, 1)).squeeze(1)

    def grad(beta: float) -> float:
        p = torch.softmax(beta * z, dim=1)
        return float(((p * z).sum(1) - z_y).mean())

    lo, hi = 1.0 / 20.0, 20.0
    assert grad(lo) < 0.0 < grad(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if grad(mid) < 0.0 else (lo, mid)
    return 2.0 / (lo + hi)


# --- mean_log_probs ------------------------------------------------------------------------

def test_mean_log_probs_is_log_of_the_member_mean_for_m_unequal_n():
    # M = 2 members, N = 3 samples: log p̄ = log((p_1 + p_2) / 2), shape (N, C).
    p = torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]],
                      [[0.1, 0.9], [0.3, 0.7], [0.6, 0.4]]], dtype=torch.float64)
    out = mean_log_probs(p)
    assert out.shape == (3, 2)
    assert torch.allclose(out, p.mean(0).log(), atol=1e-12)
    assert out[0].tolist() == pytest.approx([math.log(0.3), math.log(0.7)], abs=1e-12)


def test_mean_log_probs_of_one_prediction_n_c_is_its_log():
    p = torch.tensor([[0.25, 0.75], [0.6, 0.4], [0.5, 0.5]], dtype=torch.float64)
    out = mean_log_probs(p)
    assert out.shape == (3, 2)
    assert torch.allclose(out, p.log(), atol=1e-12)


def test_mean_log_probs_computes_in_float64_from_float32_input():
    p = torch.tensor([[[0.25, 0.75]], [[0.75, 0.25]]], dtype=torch.float32)
    out = mean_log_probs(p)
    assert out.dtype == torch.float64
    assert out[0].tolist() == pytest.approx([math.log(0.5)] * 2, abs=1e-7)


# --- fit_temperature: bounds ----------------------------------------------------------------

@pytest.mark.parametrize("bounds", [(0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_fit_rejects_bounds_not_strictly_positive_and_increasing(bounds):
    probs, labels = _data(2)
    with pytest.raises(ValueError) as info:
        fit_temperature(probs, labels, bounds=bounds)
    assert str(info.value) == f"bounds must satisfy 0 < low < high, got {bounds!r}"


# --- fit_temperature: precision -------------------------------------------------------------

@pytest.mark.parametrize("seed", [2, 3])
def test_fit_is_exact_to_well_below_1e6_relative(seed):
    """The docstring promises T exact to ~1e-6 relative (xatol = 1e-6 on log T); the bounded
    search converges past that, to ~1e-8 here, and emits no solver warning."""
    probs, labels = _data(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = fit_temperature(probs, labels)
    assert abs(t / _exact_temperature(probs, labels) - 1.0) < 1e-7


# --- fit_temperature: end-of-interval warning -----------------------------------------------

def _warnings(caplog):
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.mark.parametrize("probs, labels, end, printed", [
    # An under-confident but always-right model: sharpening forever lowers the NLL (T -> 0).
    ([[0.6, 0.4]] * 8, [0] * 8, 0.05, "0.05"),
    # A confident model right on half the samples, wrong on the other half: the flattest
    # prediction (T -> infinity) is best.
    ([[0.9, 0.1]] * 8, [0, 1] * 4, 20.0, "20"),
], ids=["lower end", "upper end"])
def test_fit_warns_with_exact_text_when_the_optimum_is_an_end_of_the_interval(caplog, probs, labels, end, printed):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        t = fit_temperature(torch.tensor(probs, dtype=torch.float64), torch.tensor(labels))
    assert t == pytest.approx(end, rel=1e-4)
    (record,) = _warnings(caplog)
    assert record.getMessage() == (
        f"temperature scaling: the fitted temperature {printed} lies at the end of the search "
        "interval (0.05, 20.0); the held-out data may be too small or degenerate")


def test_fit_does_not_warn_for_an_interior_optimum_in_a_narrow_interval(caplog):
    # Optimum at T*, interval (T*/2, 2 T*): log-distance 0.69 from each end, far above 1e-3.
    probs, labels = _data(2)
    t_star = _exact_temperature(probs, labels)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        t = fit_temperature(probs, labels, bounds=(t_star / 2.0, t_star * 2.0))
    assert t == pytest.approx(t_star, rel=1e-6)
    assert _warnings(caplog) == []


# --- temperature_scaled_summary --------------------------------------------------------------

def _informative(seed: int, n: int = 80):
    # Labels drawn from the ensemble's own prediction, softened: T* > 1 and spread confidences.
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3.0 * torch.randn(2, n, 3, generator=g, dtype=torch.float64), dim=2)
    target = torch.softmax(probs.mean(0).log() / 1.5, dim=1)
    return probs, torch.multinomial(target, 1, generator=g).squeeze(1)


def test_summary_ece_uses_the_requested_number_of_bins():
    val, val_y = _informative(2)
    test, test_y = _informative(3)
    out = temperature_scaled_summary(val, val_y, test, test_y, n_bins=4)
    scaled = scaled_log_probs(test, out["temperature"]).exp()
    assert out["ece"] == pytest.approx(float(ece(scaled, test_y, 4)), abs=1e-12)
    assert abs(float(ece(scaled, test_y, 4)) - float(ece(scaled, test_y, 15))) > 1e-3
