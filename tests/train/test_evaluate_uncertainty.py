"""evaluate_run's uncertainty blocks (issue 20): selective prediction, adaptive ECE, the
temperature-scaled block fitted on the validation split, and the per-score OoD blocks with
MaxLogit and energy, each recomputed independently from the run's ensemble."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from freetickets.cli.main import main
from freetickets.data import list_ood, load_data, ood_sets
from freetickets.ensembles.ensemble import Ensemble
from freetickets.errors import UserError
from freetickets.evaluation import evaluate_run
from freetickets.metrics import adaptive_ece, aurc, fit_temperature, scaled_log_probs

from _train_helpers import TINY

SCORES = ("msp", "entropy", "mutual_information", "max_logit", "energy")
OOD_KEYS = {"auroc", "aupr_in", "aupr_out", "fpr95"}


@pytest.fixture(scope="module")
def evaluated(dst_run):
    return evaluate_run(dst_run.root, device="cpu", corruptions="none")


@pytest.fixture(scope="module")
def ensemble_and_data(dst_run):
    data = load_data("mnist1d", None, num_samples=TINY["num_samples"], seed=0, device="cpu")
    return Ensemble.load(dst_run.root, device="cpu"), data


@torch.no_grad()
def _logits(ens, x, normalize=None):
    return ens.member_logits(normalize(x) if normalize is not None else x).double()


def test_evaluation_has_the_selective_and_adaptive_ece_entries(evaluated, ensemble_and_data):
    ens, data = ensemble_and_data
    probs = torch.softmax(_logits(ens, data.test.x, data.normalize), -1)
    e = evaluated["ensemble"]
    assert set(e["selective"]) == {"aurc", "risk_at_80_coverage", "coverage_at_5_risk"}
    assert e["selective"]["aurc"] == pytest.approx(float(aurc(probs, data.test.y)), abs=1e-6)
    assert e["ece_adaptive"] == pytest.approx(float(adaptive_ece(probs.mean(0), data.test.y)), abs=1e-6)
    assert 0.0 <= e["selective"]["aurc"] <= 1.0 and 0.0 <= e["selective"]["coverage_at_5_risk"] <= 1.0


def test_temperature_is_fitted_on_the_validation_split(evaluated, ensemble_and_data):
    ens, data = ensemble_and_data
    val = torch.softmax(_logits(ens, data.val.x, data.normalize), -1)
    test = torch.softmax(_logits(ens, data.test.x, data.normalize), -1)
    block = evaluated["ensemble"]["temperature_scaled"]
    assert set(block) == {"temperature", "nll", "ece", "brier"}
    t = fit_temperature(val, data.val.y)
    assert block["temperature"] == pytest.approx(t, rel=1e-4)
    nll = float(-scaled_log_probs(test, t).gather(1, data.test.y.view(-1, 1)).mean())
    assert block["nll"] == pytest.approx(nll, rel=1e-4)
    # Beside the raw metrics, never instead of them.
    for key in ("nll", "ece", "brier"):
        assert key in evaluated["ensemble"]
    # Fitted on validation, not on test: the test-optimal temperature differs.
    assert block["temperature"] != pytest.approx(fit_temperature(test, data.test.y), rel=1e-3)


def test_ood_blocks_hold_every_score_and_keep_the_default_keys(evaluated, ensemble_and_data):
    ens, data = ensemble_and_data
    names = list_ood("mnist1d")
    assert set(evaluated["ensemble"]["ood"]) == set(names)
    for name, entry in evaluated["ensemble"]["ood"].items():
        for score in SCORES:
            assert set(entry[score]) == OOD_KEYS, (name, score)
        assert {k: entry[k] for k in OOD_KEYS} == entry["msp"]  # the default score stays at the top
    # MaxLogit AUROC recomputed from the members' logits (max of the mean member logit).
    name = names[0]
    x = ood_sets("mnist1d", None, names=[name], seed=0, num_samples=TINY["num_samples"])[name]
    id_score = _logits(ens, data.test.x, data.normalize).mean(0).max(1).values.numpy()
    ood_score = _logits(ens, x).mean(0).max(1).values.numpy()
    truth = np.r_[np.ones(id_score.size), np.zeros(ood_score.size)]
    expected = roc_auc_score(truth, np.r_[id_score, ood_score])
    assert evaluated["ensemble"]["ood"][name]["max_logit"]["auroc"] == pytest.approx(expected, abs=1e-6)


def test_calibrate_none_and_a_bad_value(dst_run):
    plain = evaluate_run(dst_run.root, device="cpu", corruptions="none", ood=["none"], calibrate="none")
    assert "temperature_scaled" not in plain["ensemble"]
    with pytest.raises(UserError, match="--calibrate"):
        evaluate_run(dst_run.root, device="cpu", calibrate="platt")


def test_cli_evaluate_json_has_the_uncertainty_blocks(dst_run, capsys):
    import logging

    logger = logging.getLogger("freetickets")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        rc = main(["evaluate", str(dst_run.root), "--json", "--corruptions", "none", "--device", "cpu"])
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    e = result["ensemble"]
    assert {"selective", "ece_adaptive", "temperature_scaled"} <= set(e)
    assert "aurc" in e["selective"]
    for entry in e["ood"].values():
        assert {"max_logit", "energy"} <= set(entry)


def test_cli_user_errors_of_the_new_flags(dst_run, tmp_path, capsys):
    import logging

    bad = tmp_path / "latency.json"
    bad.write_text('{"dst": 0}')
    logger = logging.getLogger("freetickets")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        rc_latency = main(["report", str(dst_run.root), "--out", str(tmp_path / "r"), "--latency", str(bad)])
        err_latency = capsys.readouterr().err
        rc_calibrate = main(["evaluate", str(dst_run.root), "--calibrate", "platt"])
        err_calibrate = capsys.readouterr().err
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    assert rc_latency == 2 and "--latency" in err_latency and "Traceback" not in err_latency
    assert len(err_latency.strip().splitlines()) == 1
    assert rc_calibrate == 2 and "--calibrate" in err_calibrate
    assert not (tmp_path / "r").exists()
