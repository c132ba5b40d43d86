"""Ensemble-size curve: k = M is the ensemble row of summarize, k = 1 is member 0, known answers."""
import torch

from freetickets.metrics import summarize
from freetickets.metrics.ensemble_size import ensemble_size_curve


def _probs(m=4, n=50, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(m, n, c, generator=g), dim=-1), torch.randint(0, c, (n,), generator=g)


def test_endpoints_equal_ensemble_and_member0_exactly():
    probs, labels = _probs()
    curve = ensemble_size_curve(probs, labels)
    s = summarize(probs, labels)
    assert curve["k"] == [1, 2, 3, 4]
    for key in ("accuracy", "nll", "ece"):
        assert curve[key][-1] == s["ensemble"][key], key
        assert len(curve[key]) == 4
    assert curve["accuracy"][0] == s["members"][0]["accuracy"]
    assert curve["ece"][0] == s["members"][0]["ece"]
    assert abs(curve["nll"][0] - s["members"][0]["nll"]) <= 1e-12
    # k = 2 is the summary of the first two members alone
    s2 = summarize(probs[:2], labels)
    assert [curve[k][1] for k in ("accuracy", "nll", "ece")] == [s2["ensemble"][k] for k in ("accuracy", "nll", "ece")]


def test_known_answer_two_members():
    # two points, two classes; member 0 wrong on point 1, member 1 right on both
    probs = torch.tensor([[[0.9, 0.1], [0.7, 0.3]],
                          [[0.6, 0.4], [0.2, 0.8]]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    curve = ensemble_size_curve(probs, labels)
    assert curve["accuracy"] == [0.5, 1.0]  # mean of members: [0.75, 0.25], [0.45, 0.55]
    expected_nll = -(torch.log(torch.tensor(0.75, dtype=torch.float64)) + torch.log(torch.tensor(0.55, dtype=torch.float64))) / 2
    assert abs(curve["nll"][1] - float(expected_nll)) < 1e-12


def test_single_member_2d_input():
    probs, labels = _probs(m=1)
    assert ensemble_size_curve(probs[0], labels)["k"] == [1]
