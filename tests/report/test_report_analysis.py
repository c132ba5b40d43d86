"""Ensemble-size curves in the report and results.json (synthetic evaluation objects)."""
from __future__ import annotations

import json

import pytest

from freetickets.report import write_report, write_results_json
from freetickets.report.analysis_plots import ensemble_size_curves, plot_ensemble_size



@pytest.fixture
def make_results(factory):
    """The synthetic results builder of tests/report/conftest.py."""
    return factory[1]


def _with_curves(make_results, shift):
    res = make_results()
    for method, ev in res.items():
        m = ev["cost"]["members"]
        ev["ensemble_size"] = {"k": list(range(1, m + 1)),
                               "accuracy": [0.8 + 0.01 * k + shift for k in range(m)],
                               "nll": [0.5 - 0.02 * k for k in range(m)],
                               "ece": [0.05 - 0.005 * k for k in range(m)]}
    return res


def test_curves_mean_over_seeds_and_old_results_left_out(make_results):
    seeds = [_with_curves(make_results, 0.0), _with_curves(make_results, 0.02)]
    del seeds[0]["pf"]["ensemble_size"], seeds[1]["pf"]["ensemble_size"]  # an old evaluation
    curves = ensemble_size_curves(seeds)
    assert "pf" not in curves and list(curves["deep"]["k"]) == [1, 2, 3]
    assert curves["deep"]["accuracy"].tolist() == pytest.approx([0.81, 0.82, 0.83], abs=1e-12)
    assert curves["dense"]["nll"].tolist() == [0.5]


def test_report_draws_ensemble_size_and_json_has_block(make_results, tmp_path):
    seeds = [_with_curves(make_results, 0.0), _with_curves(make_results, 0.02)]
    report = write_report(tmp_path, seeds, data_name="mnist1d").read_text()
    assert (tmp_path / "ensemble_size.png").stat().st_size > 1000
    assert "ensemble_size.png" in report
    obj = json.loads(write_results_json(tmp_path / "results.json", "mnist1d", seeds).read_text())
    assert obj["ensemble_size"]["edst"]["k"] == [1, 2, 3]
    assert obj["seeds"][1]["edst"]["ensemble_size"]["accuracy"][0] == pytest.approx(0.82)


def test_no_curves_no_plot(make_results, tmp_path):
    report = write_report(tmp_path, [make_results()], data_name="mnist1d").read_text()
    assert not (tmp_path / "ensemble_size.png").exists() and "ensemble_size.png" not in report
    with pytest.raises(ValueError):
        plot_ensemble_size([make_results()], tmp_path / "x.png")
