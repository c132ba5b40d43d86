"""Report parts of the uncertainty toolbox: calibration (raw and temperature-scaled), selective
prediction and per-score OoD tables, the Pareto front and plot, the latency file."""
from __future__ import annotations

import json

import pytest
from matplotlib.image import imread

from freetickets.errors import UserError
from freetickets.report import write_report
from freetickets.report.pareto import load_latency, pareto_front, pareto_points, plot_pareto
from freetickets.report.uncertainty_tables import calibration_table, ood_score_table, selective_table



@pytest.fixture
def make_results(factory):
    """The shared synthetic evaluations (tests/report/conftest.py)."""
    return factory[1]


def _with_uncertainty(results: dict, t_shift: float = 0.0) -> dict:
    """Add the blocks evaluate now writes, with per-method numbers that differ by known amounts."""
    for k, (method, ev) in enumerate(results.items()):
        e = ev["ensemble"]
        e["ece_adaptive"] = 0.03 + 0.01 * k
        e["selective"] = {"aurc": 0.05 + 0.01 * k, "risk_at_80_coverage": 0.02 + 0.01 * k,
                          "coverage_at_5_risk": 0.9 - 0.1 * k}
        e["temperature_scaled"] = {"temperature": 1.5 + t_shift, "nll": e["nll"] - 0.05, "ece": 0.01, "brier": 0.14}
        for name, entry in e["ood"].items():
            for i, score in enumerate(("msp", "entropy", "max_logit", "energy")):
                entry[score] = {"auroc": 0.6 + 0.05 * i + 0.01 * k, "aupr_in": 0.7, "aupr_out": 0.6, "fpr95": 0.4}
            if ev["cost"]["members"] > 1:
                entry["mutual_information"] = {"auroc": 0.8, "aupr_in": 0.7, "aupr_out": 0.6, "fpr95": 0.4}
    return results


def _row(table: str, label: str) -> list[str]:
    line = next(l for l in table.splitlines() if l.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_calibration_table_shows_raw_beside_scaled(make_results):
    table = calibration_table([_with_uncertainty(make_results(("dense", "edst")))])
    assert "| T |" in table and "NLL (T)" in table and "Adaptive ECE (%)" in table
    dense = _row(table, "Dense (single)")
    # NLL, ECE %, adaptive ECE %, Brier | T, NLL (T), ECE (T) %, Brier (T); ties are not bold
    assert dense[1:] == ["0.400", "2.00", "**3.00**", "0.1500", "1.500", "0.350", "1.00", "0.1400"]
    assert _row(table, "EDST ensemble")[1:] == ["**0.300**", "2.00", "4.00", "0.1500", "1.500", "**0.250**", "1.00",
                                                "0.1400"]


def test_calibration_table_mean_and_std_over_seeds(make_results):
    seeds = [_with_uncertainty(make_results(("dense",)), t_shift=d) for d in (-0.1, 0.1)]
    assert _row(calibration_table(seeds), "Dense (single)")[5] == "1.500 ± 0.141"


def test_selective_table_known_values_and_best_bold(make_results):
    table = selective_table([_with_uncertainty(make_results(("dense", "deep")))])
    assert _row(table, "Dense (single)")[1:] == ["**5.00**", "**2.00**", "**90.00**"]
    assert _row(table, "Deep ensemble")[1:] == ["6.00", "3.00", "80.00"]


def test_ood_score_table_per_set_and_score(make_results):
    table = ood_score_table([_with_uncertainty(make_results(("dense", "deep")))])
    line = next(l for l in table.splitlines() if l.startswith("| noise | Deep ensemble |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # MSP, entropy, mutual information, MaxLogit, energy (deep is best everywhere; dense has no MI)
    assert cells[2:] == ["**61.00**", "**66.00**", "80.00", "**71.00**", "**76.00**"]
    dense = next(l for l in table.splitlines() if l.startswith("| noise | Dense (single) |"))
    assert "—" in dense


def test_tables_are_empty_for_old_evaluations(make_results):
    old = [make_results(("dense", "edst"))]
    assert calibration_table(old) == selective_table(old) == ood_score_table(old) == ""


def test_pareto_front_known_answer():
    # _SPEC costs and accuracies: edst (0.4, .91), static (0.7, .88), dst (0.85, .92),
    # dense (1.0, .90), deep (3.0, .93), pf (3.3, .915): edst, dst and deep are not dominated.
    names = ["dense", "deep", "dst", "edst", "pf", "static"]
    costs = [1.0, 3.0, 0.85, 0.4, 3.3, 0.7]
    acc = [0.90, 0.93, 0.92, 0.91, 0.915, 0.88]
    nll = [0.40, 0.25, 0.27, 0.30, 0.29, 0.35]
    assert [names[i] for i in pareto_front(costs, acc, "high")] == ["edst", "dst", "deep"]
    assert [names[i] for i in pareto_front(costs, nll, "low")] == ["edst", "dst", "deep"]


def test_pareto_front_ties():
    assert pareto_front([1.0, 1.0], [0.5, 0.5]) == [0, 1]  # duplicates do not dominate each other
    assert pareto_front([1.0, 1.0], [0.5, 0.6]) == [1]  # same cost, better value dominates
    assert pareto_front([1.0, 2.0], [0.5, 0.5]) == [0]  # same value, cheaper dominates
    with pytest.raises(ValueError, match="better"):
        pareto_front([1.0], [0.5], "more")


def test_pareto_points_and_latency_axis(make_results):
    seeds = [make_results(("dense", "deep", "edst"))]
    points = pareto_points(seeds)
    assert set(points) == {"train_flops"}
    assert points["train_flops"]["edst"] == {"cost": 0.4, "accuracy": 0.91, "nll": 0.30}
    points = pareto_points(seeds, {"dense": 1.0, "deep": 2.8, "other": 5.0})
    assert set(points["latency"]) == {"dense", "deep"}
    assert points["latency"]["deep"]["cost"] == 2.8


def test_plot_pareto_writes_a_png_with_a_row_per_cost(make_results, tmp_path):
    seeds = [make_results()]
    one = imread(plot_pareto(seeds, tmp_path / "a.png"))
    two = imread(plot_pareto(seeds, tmp_path / "b.png", {"dense": 1.0, "deep": 3.0}))
    assert two.shape[0] > 1.6 * one.shape[0]  # a second row of panels
    with pytest.raises(ValueError):
        plot_pareto([{"x": {"ensemble": {"accuracy": 0.5}}}], tmp_path / "c.png")


def test_load_latency_accepts_ratios_and_rejects_bad_files(tmp_path):
    good = tmp_path / "lat.json"
    good.write_text(json.dumps({"dense": 1, "edst": 2.5}))
    assert load_latency(good) == {"dense": 1.0, "edst": 2.5}
    for text, match in (("[1, 2]", "JSON object"), ("{}", "JSON object"), ('{"edst": -1}', "edst"),
                        ('{"edst": "fast"}', "edst"), ("{oops", "not a readable JSON")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(UserError, match=match):
            load_latency(bad)
    with pytest.raises(UserError, match="no such file"):
        load_latency(tmp_path / "missing.json")


def test_report_has_the_new_sections_and_says_when_latency_is_missing(make_results, tmp_path):
    seeds = [_with_uncertainty(make_results())]
    text = write_report(tmp_path / "a", seeds, data_name="mnist1d").read_text()
    for title in ("## Calibration and temperature scaling", "## Selective prediction", "## OoD detection by score",
                  "### Pareto front: quality against cost"):
        assert title in text
    assert (tmp_path / "a" / "pareto.png").is_file()
    assert "latency panels are skipped" in text
    text = write_report(tmp_path / "b", seeds, data_name="mnist1d", latency={"dense": 1.0, "edst": 3.0}).read_text()
    assert "latency panels are skipped" not in text and "measured inference latency" in text
