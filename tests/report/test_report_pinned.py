"""Cost claims from ONE seed: a count has no seed-to-seed spread, so the interval is the point
``[d, d]`` with ``d = a / b - 1`` and the verdict is the comparison of ``d`` with the claim's
threshold (strict, or inclusive for ``<=`` claims) -- holds, fails, or not resolved at exact
equality of a strict claim. Also the seed helpers the claims read.
"""
from __future__ import annotations

import pytest
import torch

from freetickets.metrics.claims import FAILS, HOLDS, NOT_RESOLVED
from freetickets.report.claims import NOT_RESOLVABLE, SKIPPED, ClaimSpec, compute_claims
from freetickets.report.seeds import aggregate_seeds, flatten_metrics, order_methods, seed_list

TRAIN = ClaimSpec("EDST training FLOPs < dense", "edst", "dense", "cost.train_flops", "lower", kind="cost")
INFER = ClaimSpec("EDST inference FLOPs <= dense", "edst", "dense", "cost.inference_flops", "lower", kind="cost",
                  inclusive=True)
HALF = ClaimSpec("DST training FLOPs <= 0.5 x deep ensemble", "dst", "deep", "cost.train_flops", "lower",
                 kind="cost", threshold=-0.5, inclusive=True)
ACC = ClaimSpec("EDST accuracy > dense", "edst", "dense", "accuracy", "higher", scale=100.0, unit=" pp")


def _seed(**costs_by_method) -> dict:
    """{method: eval object} with the given ``cost`` blocks and a fixed accuracy."""
    return {m: {"ensemble": {"accuracy": 0.9}, "cost": dict(c)} for m, c in costs_by_method.items()}


def _one(spec: ClaimSpec, seeds: list[dict]) -> dict:
    (entry,) = compute_claims(seeds, specs=[spec])
    return entry


@pytest.mark.parametrize("edst, dense, verdict", [
    (3.0, 4.0, HOLDS),  # ratio 0.75
    (5.0, 4.0, FAILS),  # ratio 1.25: more FLOPs than dense
    (4.0, 4.0, NOT_RESOLVED),  # equal counts: "<" is not shown, nor refuted
])
def test_one_seed_strict_cost_claim(edst, dense, verdict):
    entry = _one(TRAIN, [_seed(edst={"train_flops": edst}, dense={"train_flops": dense})])
    d = edst / dense - 1.0
    assert entry["difference"] == pytest.approx(d, abs=1e-15)
    assert entry["interval"] == [pytest.approx(d, abs=1e-15)] * 2
    assert entry["verdict"] == verdict
    assert entry["seeds"] == 1
    assert entry["kind"] == "cost" and entry["methods"] == ["edst", "dense"]
    assert "reason" not in entry


@pytest.mark.parametrize("edst, verdict", [(4.0, HOLDS), (3.0, HOLDS), (4.4, FAILS)])
def test_one_seed_inclusive_cost_claim_holds_at_equality(edst, verdict):
    entry = _one(INFER, [_seed(edst={"inference_flops": edst}, dense={"inference_flops": 4.0})])
    assert entry["verdict"] == verdict


@pytest.mark.parametrize("dst, verdict", [(2.0, HOLDS), (1.0, HOLDS), (2.4, FAILS)])
def test_one_seed_threshold_claim_compares_the_ratio_with_the_threshold(dst, verdict):
    """DST <= 0.5 x deep: ratio exactly 0.5 holds, 0.6 fails (though it is below 1)."""
    entry = _one(HALF, [_seed(dst={"train_flops": dst}, deep={"train_flops": 4.0})])
    assert entry["difference"] == pytest.approx(dst / 4.0 - 1.0, abs=1e-15)
    assert entry["verdict"] == verdict


def test_one_seed_quality_claim_has_a_difference_but_no_interval():
    seed = _seed(edst={}, dense={})
    seed["edst"]["ensemble"]["accuracy"] = 0.93
    entry = _one(ACC, [seed])
    assert entry["difference"] == pytest.approx(0.03, abs=1e-12)
    assert entry["interval"] == [None, None]
    assert entry["verdict"] == NOT_RESOLVABLE
    assert entry["seeds"] == 1


def test_two_seeds_same_cost_ratio_give_the_point_interval():
    seeds = [_seed(edst={"train_flops": 3.0}, dense={"train_flops": 4.0}),
             _seed(edst={"train_flops": 6.0}, dense={"train_flops": 8.0})]
    entry = _one(TRAIN, seeds)
    assert entry["interval"] == [pytest.approx(-0.25, abs=1e-15)] * 2
    assert entry["verdict"] == HOLDS and entry["seeds"] == 2


def test_cost_claim_against_zero_is_skipped():
    entry = _one(TRAIN, [_seed(edst={"train_flops": 3.0}, dense={"train_flops": 0.0})])
    assert entry["verdict"] == SKIPPED
    assert "is 0 in seed 0" in entry["reason"]
    assert entry["difference"] is None


def test_flatten_metrics_keys_and_the_non_zero_fraction():
    obj = {"ensemble": {"accuracy": 0.9, "ood": {"a": {"auroc": 0.8}, "b": {"auroc": 0.6}},
                        "corrupted": {"accuracy": 0.5, "by_severity": [{"severity": 3, "accuracy": 0.4}]}},
           "members": [{"accuracy": 0.7}, {"accuracy": 0.8}],
           "diversity": {"disagreement": 0.2, "disagreement_matrix": [[0, 0.2], [0.2, 0]]},
           "cost": {"nonzero_params": 250, "dense_params": 1000, "train_flops": 7}}
    flat = flatten_metrics(obj)
    assert flat["accuracy"] == 0.9
    assert flat["ood_mean.auroc"] == pytest.approx(0.7, abs=1e-15)
    assert flat["ood.a.auroc"] == 0.8
    assert flat["corrupted.severity_3.accuracy"] == 0.4
    assert flat["members.1.accuracy"] == 0.8 and flat["members.count"] == 2.0
    assert flat["members_mean.accuracy"] == pytest.approx(0.75, abs=1e-15)
    assert flat["diversity.disagreement"] == 0.2 and "diversity.disagreement_matrix" not in flat
    assert flat["cost.nonzero_params_vs_dense"] == 0.25 and flat["cost.train_flops"] == 7.0


def test_aggregate_is_mean_and_sample_std_and_the_method_order_is_canonical():
    seeds = [{"edst": {"ensemble": {"accuracy": a}}, "dense": {"ensemble": {"accuracy": 0.5}}} for a in (0.8, 0.9, 1.0)]
    agg = aggregate_seeds(seeds)
    assert list(agg) == ["dense", "edst"]
    mean, std = agg["edst"]["accuracy"]
    assert mean == pytest.approx(0.9, abs=1e-12) and std == pytest.approx(0.1, abs=1e-12)  # ddof = 1
    assert agg["dense"]["accuracy"] == (0.5, 0.0)
    assert order_methods(["zeta", "edst", "alpha", "dense", "edst"]) == ["dense", "edst", "zeta", "alpha"]
    assert seed_list({"dense": {}}) == [{"dense": {}}]
    with pytest.raises(ValueError, match="at least one"):
        seed_list([])


def test_member_count_column_rounds_the_mean_to_the_nearest_integer():
    """Seeds with 3, 3 and 2 members (a partial run) average 2.67 members: shown as 3, not 2."""
    from freetickets.report.tables import comparison_table

    seeds = [{"deep": {"ensemble": {"accuracy": 0.9}, "members": [{"accuracy": 0.8}] * k}} for k in (3, 3, 2)]
    row = comparison_table(seeds).splitlines()[2].split("|")
    assert row[1].strip() == "Deep ensemble"
    assert row[2].strip() == "3"


def test_claims_table_renders_each_kind_of_entry():
    """Quality differences in pp (accuracy-like, 2 decimals) or raw (NLL, 4 decimals); cost claims
    as the ratio a / b; a missing difference as a dash; one seed without an interval says so."""
    from freetickets.report.claims import claims_table

    claims = [
        {"name": "EDST accuracy > dense", "kind": "quality", "difference": 0.0123, "interval": [0.001, 0.02],
         "verdict": "holds", "seeds": 3},
        {"name": "EDST NLL < dense", "difference": -0.01234, "interval": [-0.02, -0.001], "verdict": "holds",
         "seeds": 3},  # no "kind": a quality claim
        {"name": "a claim of my own", "difference": 0.5, "verdict": "not resolvable", "seeds": 1},
        {"name": "EDST training FLOPs < dense", "kind": "cost", "difference": -0.25, "interval": [-0.25, -0.25],
         "verdict": "holds", "seeds": 1},
        {"name": "DST training FLOPs <= 0.5 x deep ensemble", "kind": "cost", "difference": None,
         "interval": [None, None], "verdict": "skipped", "reason": "method 'dst' is not in the results", "seeds": 0},
        {"name": "two seeds, half-open", "difference": -0.1, "interval": [None, 0.2], "verdict": "not resolved",
         "seeds": 2},
    ]
    assert claims_table(claims).splitlines() == [
        "| Claim | Seeds | Difference | 95% interval | Verdict |",
        "|:---|---:|---:|---:|:---|",
        "| EDST accuracy > dense | 3 | +1.23 pp | [+0.10 pp, +2.00 pp] | holds |",
        "| EDST NLL < dense | 3 | -0.0123 | [-0.0200, -0.0010] | holds |",
        "| a claim of my own | 1 | +0.5000 | none (1 seed) | not resolvable |",
        "| EDST training FLOPs < dense | 1 | 0.750× | [0.750×, 0.750×] | holds |",
        "| DST training FLOPs <= 0.5 x deep ensemble | 0 | — | — | skipped: method 'dst' is not in the results |",
        "| two seeds, half-open | 2 | -0.1000 | unbounded | not resolved |",
    ]
    assert claims_table([]) == ""
    assert claims_table(claims[:1], fmt="text").splitlines()[2].split() == [
        "EDST", "accuracy", ">", "dense", "3", "+1.23", "pp", "[+0.10", "pp,", "+2.00", "pp]", "holds"]


def test_flatten_skips_what_is_not_a_real_scalar_and_reads_0d_arrays():
    import numpy as np

    obj = {"ensemble": {"accuracy": np.array(0.5), "nll": torch.tensor(0.25), "flag": True, "none": None,
                        "vector": torch.tensor([3.0]), "corrupted": {"by_severity": [
                            "junk", {"accuracy": 0.1}, {"severity": 2, "accuracy": 0.4}]}},
           "members": ["junk", {"accuracy": 0.7}],
           "cost": {"dense_params": 10}}
    flat = flatten_metrics(obj)
    assert flat["accuracy"] == 0.5 and flat["nll"] == 0.25
    assert "flag" not in flat and "none" not in flat and "vector" not in flat
    assert flat["corrupted.severity_2.accuracy"] == 0.4
    assert "corrupted.severity_2.severity" not in flat
    assert flat["members.1.accuracy"] == 0.7 and flat["members.count"] == 2.0
    assert "cost.nonzero_params_vs_dense" not in flat and flat["cost.dense_params"] == 10.0


def test_seed_helpers_messages_and_two_seed_spread():
    with pytest.raises(ValueError) as info:
        seed_list([])
    assert str(info.value) == "per_seed: expected at least one {method: evaluation} mapping, got none"
    with pytest.raises(ValueError) as info:
        seed_list([{"dense": {}}, 3])
    assert str(info.value) == "per_seed[1]: expected a mapping method -> evaluation object"
    agg = aggregate_seeds([{"edst": {"ensemble": {"accuracy": a}}} for a in (0.8, 0.9)])
    assert agg["edst"]["accuracy"][1] == pytest.approx(0.1 / 2 ** 0.5, rel=1e-12)  # two seeds: a real std


def test_claim_entries_carry_their_spec_and_incomplete_pairs_are_named():
    seeds = [_seed(dst={"train_flops": 2.4}, deep={"train_flops": 4.0}),
             _seed(dst={"train_flops": 4.8}, deep={"train_flops": 8.0})]
    entry = _one(HALF, seeds)  # two seeds, ratio 0.6 both: above the 0.5 threshold
    assert {k: entry[k] for k in ("metric", "better", "threshold", "kind")} == {
        "metric": "cost.train_flops", "better": "lower", "threshold": -0.5, "kind": "cost"}
    assert entry["verdict"] == FAILS and entry["seeds"] == 2
    # a seed that lacks one of the two methods drops out of the pairs; the rest decide the claim
    seeds[1] = _seed(dst={"train_flops": 4.8})
    entry = _one(HALF, seeds)
    assert entry["verdict"] == FAILS and entry["seeds"] == 1 and entry["interval"] == [-0.4, -0.4]
    one = _one(ACC, [_seed(edst={}, dense={})])
    assert one["reason"] == "one seed: the seed-to-seed spread cannot be estimated, so no interval"


def test_one_seed_cost_claim_that_a_should_be_higher():
    more = ClaimSpec("more weights", "edst", "dense", "cost.nonzero_params", "higher", kind="cost")
    assert _one(more, [_seed(edst={"nonzero_params": 5.0}, dense={"nonzero_params": 4.0})])["verdict"] == HOLDS
    assert _one(more, [_seed(edst={"nonzero_params": 3.0}, dense={"nonzero_params": 4.0})])["verdict"] == FAILS


def test_claims_table_fills_missing_verdict_and_seeds():
    from freetickets.report.claims import claims_table

    line = claims_table([{"name": "bare", "difference": 0.5, "interval": [0.1, 0.9]}]).splitlines()[2]
    assert line == "| bare | 0 | +0.5000 | [+0.1000, +0.9000] |  |"
