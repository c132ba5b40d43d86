"""The report names the tickets a run flagged at chance level (manifest ``chance_level``)."""
from __future__ import annotations

import json

from freetickets.report import write_report, write_results_json


def _results(flagged):
    chance = {"accuracy": 0.1, "threshold": 0.1285, "val_size": 1000, "tickets": flagged}
    return {"dst": {"ensemble": {"accuracy": 0.8, "nll": 0.6}, "chance_level": {**chance, "tickets": []}},
            "pf": {"ensemble": {"accuracy": 0.12, "nll": 2.3}, "chance_level": chance}}


def test_report_warns_about_chance_level_tickets(tmp_path):
    text = write_report(tmp_path / "a", [_results([0, 2])], data_name="mnist1d").read_text(encoding="utf-8")
    assert "## Warning: tickets at chance level" in text
    section = text.split("## Warning: tickets at chance level", 1)[1].split("\n## ", 1)[0]
    assert "member(s) 0, 2 at or below 12.8% validation accuracy (chance 10.0%)" in section
    assert "PF" in section or "pf" in section
    assert "DST" not in section and "dst" not in section
    # results.json carries the flag per method unchanged
    path = write_results_json(tmp_path / "a" / "results.json", "mnist1d", [_results([0, 2])])
    assert json.loads(path.read_text())["methods"]["pf"]["chance_level"]["tickets"] == [0, 2]


def test_no_warning_without_flagged_tickets(tmp_path):
    text = write_report(tmp_path, [_results([])], data_name="mnist1d").read_text(encoding="utf-8")
    assert "chance level" not in text
