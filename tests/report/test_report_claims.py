"""The claims block (paired differences over seeds, Student-t interval, verdicts) on hand-made results."""
from __future__ import annotations

import json
import math

import pytest

from freetickets.metrics.claims import FAILS, HOLDS, NOT_RESOLVED
from freetickets.report import write_report, write_results_json
from freetickets.report.claims import CLAIMS, NOT_RESOLVABLE, SKIPPED, claims_table, compute_claims



@pytest.fixture
def make_results(factory):
    """The synthetic results builder of tests/report/conftest.py."""
    return factory[1]

T_1 = 12.706204736174698  # t_{0.975, 1}


def _seeds(make_results, edst_acc, dense_acc, **kwargs):
    seeds = []
    for a, b in zip(edst_acc, dense_acc):
        res = make_results(**kwargs)
        res["edst"]["ensemble"]["accuracy"] = a
        res["dense"]["ensemble"]["accuracy"] = b
        seeds.append(res)
    return seeds


def _by_name(claims):
    return {c["name"]: c for c in claims}


def test_every_claim_present_in_order_with_keys(make_results):
    claims = compute_claims(_seeds(make_results, [0.92, 0.94], [0.91, 0.92]))
    assert [c["name"] for c in claims] == [s.name for s in CLAIMS]
    for c in claims:
        assert {"name", "difference", "interval", "verdict", "seeds"} <= set(c)
        present = all(m in ("dense", "deep", "dst", "edst", "pf", "static") for m in c["methods"])
        if present:
            assert c["seeds"] == 2
        else:  # the synthetic results have no efficient ensembles: those claims are skipped, saying why
            assert c["verdict"] == SKIPPED and "is not in the results" in c["reason"]


def test_two_seeds_known_interval_not_resolved(make_results):
    c = _by_name(compute_claims(_seeds(make_results, [0.92, 0.94], [0.91, 0.92])))["EDST accuracy > dense"]
    # d = [0.01, 0.02]: mean 0.015, sd 0.01/sqrt(2), se 0.005
    assert c["difference"] == pytest.approx(0.015, abs=1e-12)
    assert c["interval"] == [pytest.approx(0.015 - T_1 * 0.005, abs=1e-9), pytest.approx(0.015 + T_1 * 0.005, abs=1e-9)]
    assert c["verdict"] == NOT_RESOLVED


def test_holds_and_fails(make_results):
    seeds = _seeds(make_results, [0.93, 0.95, 0.94], [0.91, 0.925, 0.92])  # d = [0.02, 0.025, 0.02]
    for k, s in enumerate(seeds):  # EDST NLL consistently worse: the claim fails
        s["edst"]["ensemble"]["nll"] = 0.5 + 0.01 * k
        s["dense"]["ensemble"]["nll"] = 0.4 + 0.011 * k
    by = _by_name(compute_claims(seeds))
    assert by["EDST accuracy > dense"]["verdict"] == HOLDS
    assert by["EDST NLL < dense"]["verdict"] == FAILS
    assert by["EDST NLL < dense"]["difference"] == pytest.approx(0.1 - 0.001, abs=1e-12)


def test_one_seed_quality_not_resolvable_costs_decided(make_results):
    by = _by_name(compute_claims([make_results()]))
    for name in ("EDST accuracy > dense", "EDST NLL < dense", "EDST ECE < dense", "EDST OoD AUROC > dense",
                 "EDST corrupted accuracy > dense", "DST accuracy within 0.5 pp of deep ensemble"):
        c = by[name]
        assert c["verdict"] == NOT_RESOLVABLE and c["interval"] == [None, None] and c["seeds"] == 1
        assert "one seed" in c["reason"]
    assert by["EDST accuracy > dense"]["difference"] == pytest.approx(0.01, abs=1e-12)
    # conftest costs: EDST train 0.4e12 vs dense 1e12, inference 0.6e6 vs 1e6, non-zero 600 vs 1000
    for name, ratio in (("EDST training FLOPs < dense", 0.4), ("EDST inference FLOPs <= dense", 0.6),
                        ("EDST non-zero parameters < dense", int(1000 * 3 * (1 - 0.8)) / 1000),
                        ("DST training FLOPs <= 0.5 x deep ensemble", 0.85 / 3.0)):
        c = by[name]
        assert c["difference"] == pytest.approx(ratio - 1.0, abs=1e-12)
        assert c["interval"] == [pytest.approx(ratio - 1.0, abs=1e-12)] * 2
        assert c["verdict"] == HOLDS, name


def test_inclusive_cost_claim_at_equality_holds(make_results):
    seeds = [make_results(), make_results()]
    for s in seeds:
        s["edst"]["cost"]["inference_flops"] = s["dense"]["cost"]["inference_flops"]
    c = _by_name(compute_claims(seeds))["EDST inference FLOPs <= dense"]
    assert c["difference"] == 0.0 and c["interval"] == [0.0, 0.0] and c["verdict"] == HOLDS


def test_missing_method_or_metric_is_skipped_with_reason(make_results):
    seeds = [make_results(methods=("dense", "edst", "deep"), ood=False) for _ in range(2)]
    by = _by_name(compute_claims(seeds))
    for name in ("DST accuracy within 0.5 pp of deep ensemble", "DST training FLOPs <= 0.5 x deep ensemble"):
        assert by[name]["verdict"] == SKIPPED and "'dst'" in by[name]["reason"]
        assert by[name]["difference"] is None and by[name]["seeds"] == 0
    assert by["EDST OoD AUROC > dense"]["verdict"] == SKIPPED
    assert "ood_mean.auroc" in by["EDST OoD AUROC > dense"]["reason"]
    assert by["EDST accuracy > dense"]["verdict"] == HOLDS  # zero spread: d = 0.01 in both seeds


def test_table_and_report_and_results_json(make_results, tmp_path):
    seeds = _seeds(make_results, [0.92, 0.94], [0.91, 0.92])
    text = claims_table(compute_claims(seeds), "text")
    assert "EDST accuracy > dense" in text and "+1.50 pp" in text and "not resolved" in text
    assert "0.400×" in text  # the training FLOPs ratio
    one = claims_table(compute_claims([make_results()]), "markdown")
    assert "none (1 seed)" in one and NOT_RESOLVABLE in one
    report = write_report(tmp_path, seeds, data_name="mnist1d").read_text()
    assert "## Claims" in report and "Student-t" in report and "| EDST NLL < dense |" in report
    path = write_results_json(tmp_path / "results.json", "mnist1d", seeds)
    block = json.loads(path.read_text())["claims"]
    assert [c["name"] for c in block] == [s.name for s in CLAIMS]
    acc = block[0]
    assert acc["seeds"] == 2 and acc["verdict"] == NOT_RESOLVED and math.isclose(acc["difference"], 0.015)
    with pytest.raises(ValueError):
        write_results_json(tmp_path / "r.json", "mnist1d", seeds, extra={"claims": []})
