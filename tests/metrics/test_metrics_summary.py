"""summarize and corruption_summary: structure, JSON-readiness, consistency, M = 1."""
from __future__ import annotations

import json
import math

import pytest
import torch

from freetickets.metrics import (
    accuracy,
    adaptive_ece,
    aurc,
    coverage_at_risk,
    risk_at_coverage,
    brier,
    corruption_summary,
    ece,
    ensemble_nll,
    kl_matrix,
    nll,
    summarize,
)


def _probs(m: int, n: int = 50, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(m, n, c, generator=g) * 2, dim=-1)
    labels = torch.randint(0, c, (n,), generator=g)
    return probs, labels


def test_summarize_structure_and_values():
    probs, labels = _probs(3)
    out = summarize(probs, labels)
    json.dumps(out)  # plain Python types only
    assert set(out) == {"ensemble", "members", "diversity"}
    assert set(out["ensemble"]) == {"accuracy", "nll", "ece", "brier", "ece_adaptive", "selective"}
    mean = probs.mean(0)
    assert out["ensemble"]["ece_adaptive"] == pytest.approx(adaptive_ece(mean, labels).item())
    assert out["ensemble"]["selective"] == {
        "aurc": pytest.approx(aurc(probs, labels).item()),
        "risk_at_80_coverage": pytest.approx(risk_at_coverage(probs, labels, 0.8).item()),
        "coverage_at_5_risk": pytest.approx(coverage_at_risk(probs, labels, 0.05).item()),
    }
    assert out["ensemble"]["accuracy"] == pytest.approx(accuracy(mean, labels).item())
    assert out["ensemble"]["nll"] == pytest.approx(ensemble_nll(probs, labels).item())
    # The stable form equals -mean log of the averaged probabilities.
    assert out["ensemble"]["nll"] == pytest.approx(nll(mean, labels).item(), rel=1e-6)
    assert out["ensemble"]["ece"] == pytest.approx(ece(mean, labels).item())
    assert out["ensemble"]["brier"] == pytest.approx(brier(mean, labels).item())
    assert len(out["members"]) == 3
    assert out["members"][1]["accuracy"] == pytest.approx(accuracy(probs[1], labels).item())
    assert out["members"][2]["nll"] == pytest.approx(nll(probs[2], labels).item())
    div = out["diversity"]
    assert len(div["disagreement_matrix"]) == 3 and len(div["kl_matrix"][0]) == 3
    kl = kl_matrix(probs)
    assert div["kl"] == pytest.approx((kl.sum() / 6).item())
    for key in ("accuracy", "ece"):
        assert 0.0 <= out["ensemble"][key] <= 1.0
    assert 0.0 <= div["disagreement"] <= 1.0


def test_summarize_single_member():
    probs, labels = _probs(1)
    for inp in (probs, probs[0]):
        out = summarize(inp, labels)
        assert len(out["members"]) == 1
        assert out["diversity"] == {"disagreement": 0.0, "disagreement_matrix": [[0.0]],
                                    "kl": 0.0, "kl_matrix": [[0.0]]}
        for key in ("accuracy", "nll", "ece", "brier"):
            assert out["ensemble"][key] == pytest.approx(out["members"][0][key], rel=1e-6)


def test_corruption_summary_means():
    records = [
        {"type": "noise", "severity": 1, "accuracy": 0.9, "nll": 0.3, "ece": 0.02},
        {"type": "noise", "severity": 2, "accuracy": 0.7, "nll": 0.9, "ece": 0.10, "brier": 0.4},
        {"type": "shear", "severity": 2, "accuracy": 0.5, "nll": 1.5, "ece": 0.20},
        {"type": "shear", "severity": 1, "accuracy": 0.8, "nll": 0.5, "ece": 0.04},
    ]
    out = corruption_summary(records)
    json.dumps(out)
    assert out["accuracy"] == pytest.approx((0.9 + 0.7 + 0.5 + 0.8) / 4)
    assert out["nll"] == pytest.approx((0.3 + 0.9 + 1.5 + 0.5) / 4)
    assert out["ece"] == pytest.approx((0.02 + 0.10 + 0.20 + 0.04) / 4)
    assert [row["severity"] for row in out["by_severity"]] == [1, 2]
    assert out["by_severity"][0] == pytest.approx(
        {"severity": 1, "accuracy": 0.85, "nll": 0.4, "ece": 0.03})
    assert out["by_severity"][1] == pytest.approx(
        {"severity": 2, "accuracy": 0.6, "nll": 1.2, "ece": 0.15})
    with pytest.raises(ValueError, match="duplicate"):
        corruption_summary(records + [records[0]])
    with pytest.raises(ValueError, match="lacks"):
        corruption_summary([{"type": "noise", "severity": 1, "accuracy": 0.5}])
    with pytest.raises(ValueError):
        corruption_summary([])
    assert math.isfinite(out["nll"])
