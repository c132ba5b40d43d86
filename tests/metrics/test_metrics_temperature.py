"""Temperature scaling of the ensemble's mean log-probabilities: known answers and the fit."""
from __future__ import annotations

import math

import pytest
import torch

from freetickets.metrics import accuracy, brier, ece, ensemble_nll, fit_temperature, scaled_log_probs
from freetickets.metrics import temperature_scaled_summary
from freetickets.metrics.temperature import mean_log_probs


def _members(seed: int, m: int = 3, n: int = 40, c: int = 4, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(scale * torch.randn(m, n, c, generator=g, dtype=torch.float64), dim=2)
    # Labels that follow the ensemble, less sharply than it predicts (an over-confident model).
    target = torch.softmax(probs.mean(0).log() / 1.5, dim=1)
    return probs, torch.multinomial(target, 1, generator=g).squeeze(1)


def test_temperature_one_is_the_raw_ensemble():
    probs, labels = _members(0)
    logp = scaled_log_probs(probs, 1.0)
    assert torch.allclose(logp, probs.mean(0).log(), atol=1e-12)
    nll = -logp.gather(1, labels.view(-1, 1)).mean()
    assert float(nll) == pytest.approx(float(ensemble_nll(probs, labels)), abs=1e-12)


def test_known_temperature_of_a_two_class_example():
    # log p̄ = [log 0.8, log 0.2]; T = 2 gives softmax of the halves: [2, 1] / 3.
    probs = torch.tensor([[0.8, 0.2]], dtype=torch.float64)
    assert scaled_log_probs(probs, 2.0).exp()[0].tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-12)


def test_fit_recovers_the_temperature_that_generated_the_labels():
    # Labels drawn from softmax(z / 2) while the model predicts softmax(z): T* ~ 2.
    g = torch.Generator().manual_seed(4)
    z = 3.0 * torch.randn(20000, 5, generator=g, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(z / 2.0, dim=1), 1, generator=g).squeeze(1)
    t = fit_temperature(torch.softmax(z, dim=1), labels)
    assert t == pytest.approx(2.0, rel=0.05)


def test_fitted_temperature_minimises_the_nll():
    probs, labels = _members(5)
    t = fit_temperature(probs, labels)

    def nll(temp: float) -> float:
        return float(-scaled_log_probs(probs, temp).gather(1, labels.view(-1, 1)).mean())

    assert 0.1 < t < 10.0  # an interior optimum, not an end of the search interval
    for factor in (0.98, 1.02, 0.5, 2.0):
        assert nll(t) <= nll(t * factor) + 1e-12
    assert nll(t) <= nll(1.0) + 1e-12


def test_summary_scores_the_test_set_with_the_validation_temperature():
    val, val_y = _members(6)
    test, test_y = _members(7)
    out = temperature_scaled_summary(val, val_y, test, test_y)
    assert set(out) == {"temperature", "nll", "ece", "brier"}
    t = out["temperature"]
    assert t == pytest.approx(fit_temperature(val, val_y))
    scaled = scaled_log_probs(test, t).exp()
    assert out["nll"] == pytest.approx(float(-scaled.log().gather(1, test_y.view(-1, 1)).mean()), abs=1e-9)
    assert out["ece"] == pytest.approx(float(ece(scaled, test_y)))
    assert out["brier"] == pytest.approx(float(brier(scaled, test_y)))
    # Scaling never changes the predicted class.
    assert float(accuracy(scaled, test_y)) == float(accuracy(test.mean(0), test_y))


def test_a_class_every_member_rules_out_stays_finite():
    probs = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]], dtype=torch.float32)
    logp = mean_log_probs(probs)
    assert torch.isfinite(logp).all()
    assert torch.isfinite(scaled_log_probs(probs, 0.5)).all()


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_bad_temperature_raises(bad):
    with pytest.raises(ValueError, match="temperature"):
        scaled_log_probs(torch.tensor([[0.5, 0.5]]), bad)
