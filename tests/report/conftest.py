"""Synthetic evaluation objects (docs/evaluation.md) for the report tests (hand-chosen numbers, no training)."""
from __future__ import annotations

import pytest

from freetickets.report import analysis_plots, plots

_SPEC = {  # method: (members, sparsity, accuracy, nll, train_flops_vs_dense)
    "dense": (1, 0.0, 0.90, 0.40, 1.0),
    "deep": (3, 0.0, 0.93, 0.25, 3.0),
    "dst": (3, 0.8, 0.92, 0.27, 0.85),
    "edst": (3, 0.8, 0.91, 0.30, 0.4),
    "pf": (3, 0.8, 0.915, 0.29, 3.3),
    "static": (3, 0.8, 0.88, 0.35, 0.7),
}


def make_eval(method, *, shift=0.0, ood=True, corrupted=True, diversity=True):
    """One evaluation object; ``shift`` is added to accuracy so seeds differ by known amounts."""
    m, s, acc, nll, flops = _SPEC[method]
    acc = acc + shift
    ens = {"accuracy": acc, "nll": nll, "ece": 0.02, "brier": 0.15}
    if ood:
        ens["ood"] = {
            "shuffled": {"auroc": acc - 0.1, "aupr_in": 0.8, "aupr_out": 0.7, "fpr95": 0.5 - acc / 10},
            "noise": {"auroc": acc - 0.05, "aupr_in": 0.85, "aupr_out": 0.75, "fpr95": 0.3},
        }
    if corrupted:
        ens["corrupted"] = {
            "accuracy": acc - 0.2, "nll": 1.0, "ece": 0.1,
            "by_severity": [
                {"severity": k, "accuracy": acc - 0.05 * k, "nll": 0.5 + 0.1 * k, "ece": 0.02 * k}
                for k in range(1, 6)
            ],
        }
    members = [{"accuracy": acc - 0.02 - 0.01 * i, "nll": nll + 0.1, "ece": 0.03, "brier": 0.18} for i in range(m)]
    out = {
        "ensemble": ens,
        "members": members,
        "cost": {
            "members": m, "sparsity": s, "nonzero_params": int(1000 * m * (1 - s)), "dense_params": 1000,
            "train_flops": flops * 1e12, "train_flops_vs_dense": flops,
            "inference_flops": m * (1 - s) * 1e6, "inference_flops_vs_dense": m * (1 - s) if s else float(m),
            "checkpoint_bytes": 4000 * m, "checkpoint_bytes_vs_dense": m * (1 - s) * 1.1 if s else float(m),
        },
    }
    if diversity:
        if m > 1:
            mat = [[0.0 if i == j else 0.05 + 0.01 * (i + j) for j in range(m)] for i in range(m)]
            off = [mat[i][j] for i in range(m) for j in range(m) if i != j]
            out["diversity"] = {"disagreement": sum(off) / len(off), "disagreement_matrix": mat,
                                "kl": 0.1, "kl_matrix": mat}
        else:
            out["diversity"] = {"disagreement": 0.0, "disagreement_matrix": [[0.0]], "kl": 0.0, "kl_matrix": [[0.0]]}
    return out


def make_results(methods=tuple(_SPEC), **kwargs):
    return {m: make_eval(m, **kwargs) for m in methods}


@pytest.fixture
def one_seed():
    return [make_results()]


@pytest.fixture
def three_seeds():
    return [make_results(shift=d) for d in (-0.01, 0.0, 0.01)]


@pytest.fixture
def factory():
    return make_eval, make_results


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plot functions save, in order (``_save`` of both plot modules wrapped)."""
    captured = []
    original = plots._save

    def save(fig, path):
        captured.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    monkeypatch.setattr(analysis_plots, "_save", save)
    return captured
