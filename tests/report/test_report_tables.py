"""Known-answer tests for seed aggregation and the comparison tables."""
from __future__ import annotations

import math

import pytest

from freetickets.report import (
    aggregate_seeds,
    comparison_table,
    corruption_table,
    flatten_metrics,
    member_table,
    ood_table,
    order_methods,
)


def _tiny(acc, nll, *, members=1):
    return {"ensemble": {"accuracy": acc, "nll": nll, "ece": 0.1, "brier": 0.2},
            "members": [{"accuracy": acc, "nll": nll, "ece": 0.1, "brier": 0.2}] * members,
            "cost": {"members": members, "sparsity": 0.0, "nonzero_params": 50, "dense_params": 100}}


def test_aggregate_seeds_mean_and_sample_std_on_hand_values():
    per_seed = [{"dst": _tiny(0.90, 0.3)}, {"dst": _tiny(0.92, 0.5)}, {"dst": _tiny(0.94, 0.4)}]
    agg = aggregate_seeds(per_seed)
    mean, std = agg["dst"]["accuracy"]
    assert mean == pytest.approx(0.92)
    assert std == pytest.approx(0.02)  # sample std of (0.90, 0.92, 0.94)
    assert agg["dst"]["nll"] == pytest.approx((0.4, 0.1))
    assert agg["dst"]["cost.nonzero_params_vs_dense"] == pytest.approx((0.5, 0.0))
    assert agg["dst"]["members_mean.accuracy"][0] == pytest.approx(0.92)


def test_aggregate_single_seed_has_zero_std_and_missing_keys_average_over_present_seeds():
    a, b = _tiny(0.9, 0.3), _tiny(0.8, 0.3)
    b["ensemble"]["ood"] = {"noise": {"auroc": 0.7}}
    agg = aggregate_seeds([{"x": a}, {"x": b}])
    assert agg["x"]["ood.noise.auroc"] == (0.7, 0.0)
    assert aggregate_seeds([{"x": a}])["x"]["accuracy"] == (0.9, 0.0)


def test_flatten_keys(factory):
    make_eval, _ = factory
    flat = flatten_metrics(make_eval("dst"))
    for key in ("accuracy", "ood.noise.auroc", "ood_mean.auroc", "corrupted.accuracy",
                "corrupted.severity_3.accuracy", "members.2.accuracy", "members.count",
                "diversity.disagreement", "cost.train_flops_vs_dense", "cost.nonzero_params_vs_dense"):
        assert key in flat, key
    assert not any("matrix" in k for k in flat)
    assert flat["ood_mean.auroc"] == pytest.approx(((0.92 - 0.1) + (0.92 - 0.05)) / 2)


def test_order_methods_canonical_then_extras():
    assert order_methods(["zzz", "static", "dense", "edst", "aaa", "dst"]) == ["dense", "dst", "edst", "static", "zzz", "aaa"]


def _row(table, label):
    rows = [line for line in table.splitlines() if line.startswith(f"| {label} |")]
    assert len(rows) == 1, (label, table)
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_comparison_table_one_seed_numbers_and_bolding(one_seed):
    table = comparison_table(one_seed, fmt="markdown")
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert header[:4] == ["Method", "M", "Sparsity", "Accuracy (%)"]
    labels = ["Dense (single)", "Deep ensemble", "DST ensemble", "EDST ensemble", "PF ensemble",
              "Static sparse ensemble"]
    body = table.splitlines()[2:]
    assert [line.split("|")[1].strip() for line in body] == labels  # canonical order
    assert "±" not in table

    deep = dict(zip(header, _row(table, "Deep ensemble")))
    assert deep["Accuracy (%)"] == "**93.00**"  # best accuracy, bold
    assert deep["NLL"] == "**0.250**"  # best (lowest) NLL
    assert deep["Train FLOPs (× dense)"] == "3.00"  # cost columns never bold
    dst = dict(zip(header, _row(table, "DST ensemble")))
    assert dst["M"] == "3" and dst["Sparsity"] == "0.80"
    assert dst["Accuracy (%)"] == "92.00" and dst["NLL"] == "0.270"
    assert dst["Non-zero params (× dense)"] == "0.60"
    assert dst["OoD AUROC (%)"] == "84.50"
    assert dst["Corrupted acc. (%)"] == "72.00"
    assert dst["Train FLOPs (× dense)"] == "0.85"
    dense = dict(zip(header, _row(table, "Dense (single)")))
    assert dense["Disagreement"] == "—"  # M = 1: no diversity to speak of
    assert dense["ECE (%)"] == "2.00"  # every method ties: nobody is bold


def test_comparison_table_several_seeds_shows_mean_pm_std(three_seeds):
    table = comparison_table(three_seeds, fmt="markdown")
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    deep = dict(zip(header, _row(table, "Deep ensemble")))
    assert deep["Accuracy (%)"] == "**93.00 ± 1.00**"
    assert deep["M"] == "3"  # counts and sparsity have no spread to show
    dst = dict(zip(header, _row(table, "DST ensemble")))
    assert dst["Accuracy (%)"] == "92.00 ± 1.00"


def test_text_table_is_aligned_without_markup(three_seeds):
    text = comparison_table(three_seeds, fmt="text")
    lines = text.rstrip("\n").splitlines()
    assert "**" not in text and "|" not in text
    assert len(lines) == 2 + 6
    assert set(lines[1]) <= {"-", " "}
    # right-aligned numeric columns end at the same position as their header
    end = lines[0].index("Accuracy (%)") + len("Accuracy (%)")
    for line in lines[2:]:
        assert line[:end].endswith("1.00")


def test_bad_fmt_is_rejected(one_seed):
    with pytest.raises(ValueError, match="fmt"):
        comparison_table(one_seed, fmt="html")
    with pytest.raises(ValueError, match="per_seed"):
        comparison_table([])


def test_missing_optional_parts_show_dash(factory):
    make_eval, _ = factory
    results = {"dense": make_eval("dense", ood=False, corrupted=False, diversity=False),
               "dst": make_eval("dst", ood=False, corrupted=False)}
    del results["dense"]["cost"]
    table = comparison_table([results])
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    dense = dict(zip(header, _row(table, "Dense (single)")))
    assert dense["OoD AUROC (%)"] == "—" and dense["Corrupted acc. (%)"] == "—"
    assert dense["Train FLOPs (× dense)"] == "—"
    assert dense["M"] == "1"  # falls back to the number of members
    assert ood_table([results]) == "" and corruption_table([results]) == ""
    assert "—" in member_table([results])
    # an evaluation that is almost empty still renders
    assert "odd" in comparison_table([{"odd": {"ensemble": {"accuracy": 0.5}}}], fmt="text")


def test_ood_table_rows_and_bolding(one_seed):
    table = ood_table(one_seed)
    assert table.count("\n") == 2 + 12  # header, separator, 2 sets x 6 methods
    row = [c.strip() for c in
           next(l for l in table.splitlines() if l.startswith("| shuffled | Deep ensemble")).strip("|").split("|")]
    assert row[2] == "**83.00**"  # best AUROC on this set
    assert row[5] == "**40.70**"  # lowest FPR95 (lower is better)
    text = ood_table(one_seed, fmt="text")
    assert "AUPR-Out (%)" in text and "**" not in text


def test_corruption_and_member_tables(three_seeds, one_seed):
    corr = corruption_table(three_seeds)
    assert "Severity 5" in corr and "**88.00 ± 1.00**" in corr
    members = member_table(one_seed)
    header = [c.strip() for c in members.splitlines()[0].strip("|").split("|")]
    assert header == ["Method", "M", "Member 1", "Member 2", "Member 3", "Member mean", "Ensemble", "Gain (pp)"]
    dst = dict(zip(header, _row(members, "DST ensemble")))
    assert dst["Member 1"] == "90.00" and dst["Member 3"] == "88.00"
    assert dst["Ensemble"] == "92.00" and dst["Gain (pp)"] == "3.00"
    assert dict(zip(header, _row(members, "Dense (single)")))["Member 2"] == "—"


def test_nan_values_do_not_crash(one_seed):
    one_seed[0]["dst"]["ensemble"]["nll"] = math.nan
    table = comparison_table(one_seed)
    assert "nan" in table
