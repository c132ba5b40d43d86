"""Runs that differ only in seed are seeds of one method (``pair_seeds``); claims pair methods by
seed; cost claims against dense use each run's own dense reference when no dense run is given."""
from __future__ import annotations

import math

import pytest

from freetickets.report.claims import OWN_REFERENCE, SKIPPED, claims_table, compute_claims
from freetickets.report.seeds import RunResult, aggregate_seeds, pair_seeds

T_1 = 12.706204736174698  # t_{0.975, 1}


@pytest.fixture
def make_eval(factory):
    return factory[0]


def _run(make_eval, method, seed, accuracy, **config):
    result = make_eval(method)
    result["ensemble"]["accuracy"] = accuracy
    cfg = {"method": method, "seed": seed, "epochs": 2, "sparsity": 0.8, "device": "cpu", **config}
    return RunResult(f"runs/{method}_s{seed}", method, cfg, result)


def test_same_settings_different_seeds_are_one_method(make_eval):
    runs = [_run(make_eval, "dst", 1, 0.80, data_dir="/a"), _run(make_eval, "dst", 0, 0.70, data_dir="/b")]
    per_seed, sources = pair_seeds(runs)
    assert sources == {"dst": ["runs/dst_s0", "runs/dst_s1"]}  # where/how a run ran is not a setting
    assert [list(s) for s in per_seed] == [["dst"], ["dst"]]
    assert [s["dst"]["ensemble"]["accuracy"] for s in per_seed] == [0.70, 0.80]  # seed order
    mean, std = aggregate_seeds(per_seed)["dst"]["accuracy"]
    assert mean == pytest.approx(0.75) and std == pytest.approx(0.1 / math.sqrt(2))


def test_other_settings_are_another_entry_and_a_repeated_seed_is_refused(make_eval):
    runs = [_run(make_eval, "dst", 0, 0.7), _run(make_eval, "dst", 0, 0.7, sparsity=0.9),
            _run(make_eval, "dst", 1, 0.7, sparsity=0.9)]
    per_seed, sources = pair_seeds(runs)
    assert sources == {"dst": ["runs/dst_s0"], "dst_2": ["runs/dst_s0", "runs/dst_s1"]}
    assert [sorted(s) for s in per_seed] == [["dst", "dst_2"], ["dst_2"]]
    with pytest.raises(ValueError, match="same method, settings and seed"):
        pair_seeds([_run(make_eval, "dst", 0, 0.7), _run(make_eval, "dst", 0, 0.7, device="cuda")])


def _dst_vs_deep(per_seed):
    return next(c for c in compute_claims(per_seed) if c["name"] == "DST accuracy within 0.5 pp of deep ensemble")


def test_claims_pair_the_kth_seed_of_each_method(make_eval):
    """DST at seeds 2, 0, 1 (given out of order) and deep at seeds 0, 1: slots pair equal seeds
    0 and 1; DST's third seed has no partner and stays out of the claim."""
    runs = [_run(make_eval, "dst", s, a) for s, a in ((2, 0.50), (0, 0.91), (1, 0.93))]
    runs += [_run(make_eval, "deep", s, a, sparsity=0.0) for s, a in ((1, 0.92), (0, 0.92))]
    per_seed, _ = pair_seeds(runs)
    assert [sorted(s) for s in per_seed] == [["deep", "dst"], ["deep", "dst"], ["dst"]]
    claim = _dst_vs_deep(per_seed)
    assert claim["seeds"] == 2
    assert claim["difference"] == pytest.approx(0.0)  # d = [-0.01, +0.01]
    half = T_1 * 0.01  # sd of d = 0.01 * sqrt(2), se = 0.01
    assert claim["interval"] == [pytest.approx(-half), pytest.approx(half)]
    # other seeds per method: independent replicates, still one pair per slot
    apart, _ = pair_seeds([_run(make_eval, "dst", 0, 0.9), _run(make_eval, "deep", 7, 0.95, sparsity=0.0)])
    assert [sorted(s) for s in apart] == [["deep", "dst"]]
    assert _dst_vs_deep(apart)["difference"] == pytest.approx(-0.05) and _dst_vs_deep(apart)["seeds"] == 1
    unpaired = _dst_vs_deep([{"dst": make_eval("dst")}, {"deep": make_eval("deep")}])  # hand-made, no common slot
    assert unpaired["verdict"] == SKIPPED and "share no seed" in unpaired["reason"]


def test_cost_claims_without_dense_use_each_runs_own_reference(make_eval):
    """EDST's synthetic runs carry train_flops_vs_dense 0.4, 599 non-zero of 1000 dense parameters
    and inference_flops_vs_dense 0.6: the cost claims against dense are decided from them."""
    per_seed, _ = pair_seeds([_run(make_eval, "dst", 0, 0.9), _run(make_eval, "edst", 0, 0.9),
                              _run(make_eval, "edst", 1, 0.9)])
    by_name = {c["name"]: c for c in compute_claims(per_seed)}
    flops = by_name["EDST training FLOPs < dense"]
    assert flops["reference"] == OWN_REFERENCE and flops["seeds"] == 2
    assert flops["difference"] == pytest.approx(0.4 - 1.0) and flops["verdict"] == "holds"
    assert by_name["EDST non-zero parameters < dense"]["difference"] == pytest.approx(0.599 - 1.0)
    assert by_name["EDST inference FLOPs <= dense"]["difference"] == pytest.approx(0.6 - 1.0)
    quality = by_name["EDST accuracy > dense"]  # a quality claim needs a dense run
    assert quality["verdict"] == SKIPPED and "'dense' is not in the results" in quality["reason"]
    assert "reference" not in by_name["DST training FLOPs <= 0.5 x deep ensemble"]
    table = claims_table(list(by_name.values()))
    assert "| EDST training FLOPs < dense | 2 | 0.400× | [0.400×, 0.400×] | holds (vs each run's own dense " \
           "reference) |" in table.replace("  ", " ")


def test_a_dense_run_is_preferred_to_the_own_reference(make_eval):
    per_seed, _ = pair_seeds([_run(make_eval, "edst", 0, 0.9), _run(make_eval, "dense", 0, 0.9, sparsity=0.0)])
    flops = next(c for c in compute_claims(per_seed) if c["name"] == "EDST training FLOPs < dense")
    assert "reference" not in flops and flops["difference"] == pytest.approx(0.4 / 1.0 - 1.0)
