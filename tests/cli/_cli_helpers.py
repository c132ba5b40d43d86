"""Helpers shared by tests/cli (imported by its conftest and tests; a unique module name)."""
from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

import pytest

from freetickets.cli.main import main

#: Tiny settings: MNIST-1D with 1000 samples, cnn1d of width 16, a few seconds per method.
TINY_ARGS = ["--num-samples", "1000", "--batch-size", "64", "--device", "cpu", "--update-interval", "5",
             "--set", "model_kwargs={width: 16}"]

METHOD_ARGS = {
    "dense": ["--epochs", "2"],
    "deep": ["--epochs", "2", "--members", "2"],
    "dst": ["--epochs", "2", "--members", "2"],
    "edst": ["--epochs", "3", "--explore-epochs", "1", "--members", "2"],
    "static": ["--epochs", "2", "--members", "2"],
}


@contextlib.contextmanager
def quiet_cli():
    """Restore the ``freetickets`` logger after ``main`` reconfigured it."""
    logger = logging.getLogger("freetickets")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def train_cli(out: Path, method: str, *extra: str) -> int:
    with quiet_cli():
        return main(["train", "--method", method, "--out", str(out), *TINY_ARGS, *extra])


def manifest_of(run: Path) -> dict:
    return json.loads((Path(run) / "manifest.json").read_text())


ENSEMBLE_KEYS = {"accuracy", "nll", "ece", "brier", "ood", "corrupted", "ece_adaptive", "selective",
                 "temperature_scaled"}
SELECTIVE_KEYS = {"aurc", "risk_at_80_coverage", "coverage_at_5_risk"}
OOD_SCORE_BLOCKS = {"msp", "entropy", "max_logit", "energy"}  # + mutual_information for M > 1
OOD_KEYS = {"auroc", "aupr_in", "aupr_out", "fpr95"}
CORRUPTED_KEYS = {"accuracy", "nll", "ece", "by_severity"}
MEMBER_KEYS = {"accuracy", "nll", "ece", "brier"}
DIVERSITY_KEYS = {"disagreement", "disagreement_matrix", "kl", "kl_matrix"}
COST_KEYS = {"members", "sparsity", "nonzero_params", "dense_params", "train_flops", "train_flops_vs_dense",
             "inference_flops", "inference_flops_vs_dense", "checkpoint_bytes", "checkpoint_bytes_vs_dense"}


def check_evaluation(result: dict, members: int, sparse: bool, form: str | None = None) -> None:
    """Every key of the evaluation JSON (docs/evaluation.md), fractions in [0, 1], matrices M x M."""
    assert {"ensemble", "members", "diversity", "cost"} <= set(result)
    ens = result["ensemble"]
    assert ENSEMBLE_KEYS <= set(ens)
    for key in ("accuracy", "ece"):
        assert 0.0 <= ens[key] <= 1.0
    assert ens["nll"] > 0 and 0.0 <= ens["brier"] <= 2.0
    assert ens["ood"], "at least one OoD set"
    for name, o in ens["ood"].items():
        assert OOD_KEYS <= set(o), name
        assert all(0.0 <= o[k] <= 1.0 for k in OOD_KEYS), name
        blocks = OOD_SCORE_BLOCKS | ({"mutual_information"} if members > 1 else set())
        assert blocks <= set(o), name
        assert all(0.0 <= o[b][k] <= 1.0 for b in blocks for k in OOD_KEYS), name
    assert set(ens["selective"]) == SELECTIVE_KEYS
    assert all(0.0 <= ens["selective"][k] <= 1.0 for k in SELECTIVE_KEYS)
    assert 0.0 <= ens["ece_adaptive"] <= 1.0
    scaled = ens["temperature_scaled"]
    assert set(scaled) == {"temperature", "nll", "ece", "brier"} and scaled["temperature"] > 0
    assert scaled["nll"] > 0 and 0.0 <= scaled["ece"] <= 1.0 and 0.0 <= scaled["brier"] <= 2.0
    assert CORRUPTED_KEYS <= set(ens["corrupted"])
    assert 0.0 <= ens["corrupted"]["accuracy"] <= 1.0
    assert isinstance(ens["corrupted"]["by_severity"], list) and ens["corrupted"]["by_severity"]
    assert len(result["members"]) == members
    for m in result["members"]:
        assert MEMBER_KEYS <= set(m)
        assert 0.0 <= m["accuracy"] <= 1.0
    size = result["ensemble_size"]  # first-k curve: k = M is the ensemble row, k = 1 member 0
    assert size["k"] == list(range(1, members + 1))
    for key in ("accuracy", "nll", "ece"):
        assert size[key][-1] == ens[key], key
    assert size["accuracy"][0] == result["members"][0]["accuracy"]
    assert size["ece"][0] == result["members"][0]["ece"]
    assert size["nll"][0] == pytest.approx(result["members"][0]["nll"], rel=1e-12)
    div = result["diversity"]
    assert DIVERSITY_KEYS <= set(div)
    assert len(div["disagreement_matrix"]) == members and all(len(r) == members for r in div["disagreement_matrix"])
    assert len(div["kl_matrix"]) == members and all(len(r) == members for r in div["kl_matrix"])
    assert 0.0 <= div["disagreement"] <= 1.0
    cost = result["cost"]
    assert COST_KEYS <= set(cost)
    assert cost["members"] == members
    assert cost["train_flops"] > 0 and cost["inference_flops"] > 0
    for key in ("train_flops_vs_dense", "inference_flops_vs_dense", "checkpoint_bytes_vs_dense"):
        assert isinstance(cost[key], float) and math.isfinite(cost[key]) and cost[key] > 0, key
    if sparse:
        assert cost["sparsity"] == pytest.approx(0.8, abs=1e-3)
        assert cost["nonzero_params"] < members * cost["dense_params"]
        assert cost["inference_flops_vs_dense"] < members
    elif form is not None:  # one network holding the members (MIMO, BatchEnsemble, MC dropout, ...)
        assert cost["sparsity"] == 0.0
        if form != "packed":  # a packed network may be smaller than one base model (alpha^2 / (M gamma) < 1)
            assert cost["nonzero_params"] >= cost["dense_params"]
        inference = cost["inference_flops_vs_dense"]
        if form in ("mcdropout", "masksembles"):  # M forwards of the base network, its parameters
            assert inference == pytest.approx(members) and cost["nonzero_params"] == cost["dense_params"]
        elif form == "packed":  # one forward in training and at test: the same ratio at equal epochs
            assert inference == pytest.approx(cost["train_flops_vs_dense"], rel=1e-9)
        elif form == "batchensemble":
            assert members < inference < members * 1.1
        else:
            assert 1.0 <= inference < members
    else:
        assert cost["sparsity"] == 0.0
        assert cost["nonzero_params"] == members * cost["dense_params"]
        assert cost["inference_flops_vs_dense"] == pytest.approx(members)
