"""Every method end to end from the command line, and `evaluate --json` (README, docs/evaluation.md)."""
from __future__ import annotations

import json

import pytest

from freetickets.cli.main import main

from _cli_helpers import check_evaluation, manifest_of, train_cli

METHODS = ["dense", "deep", "dst", "edst", "static", "pf"]
MEMBERS = {"dense": 1, "deep": 2, "dst": 2, "edst": 2, "static": 2, "pf": 2}


@pytest.mark.parametrize("method", METHODS)
def test_train_writes_a_complete_run(method, cli_runs):
    run = cli_runs[method]
    m = manifest_of(run)
    assert (m["status"], m["method"], m["members"]) == ("complete", method, MEMBERS[method])
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    assert sorted(p.name for p in (run / "tickets").iterdir()) == [f"member_{k}.pt" for k in range(MEMBERS[method])]
    assert m["model_kwargs"] == {"width": 16}


@pytest.mark.parametrize("method", METHODS)
def test_evaluate_json_prints_one_object_with_every_key(method, cli_runs, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(cli_runs[method]), "--json", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)  # the whole of stdout is one JSON object
    assert isinstance(result, dict)
    check_evaluation(result, MEMBERS[method], sparse=method in ("dst", "edst", "static", "pf"))
    assert result["method"] == method


def test_evaluate_without_json_prints_a_table(cli_runs, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(cli_runs["edst"]), "--device", "cpu", "--corruptions", "none"]) == 0
    out = capsys.readouterr().out
    assert "ensemble" in out and "accuracy" in out and "member 1" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_train_prints_one_line_per_ticket(tmp_path, cli_env, capsys):
    capsys.readouterr()
    assert train_cli(tmp_path / "run", "static", "--epochs", "1", "--members", "2") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("static: 2 ticket(s)")
    assert sum(line.strip().startswith("member ") for line in out) == 2
