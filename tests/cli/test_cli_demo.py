"""`freetickets demo` (README, docs/evaluation.md): every method, every key, report and plots."""
from __future__ import annotations

import json

import pytest

from freetickets import demo
from freetickets.cli.main import main

from _cli_helpers import check_evaluation

METHODS = ("dense", "deep", "dst", "edst", "pf", "static", "snapshot", "mimo", "batchensemble", "mcdropout",
           "packed", "masksembles")
FORMS = ("mimo", "batchensemble", "mcdropout", "packed", "masksembles")
SPARSE = ("dst", "edst", "pf", "static")


def _check_demo_output(out, members: dict[str, int]) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == "mnist1d"
    assert set(results["methods"]) == set(METHODS)
    for method, res in results["methods"].items():
        check_evaluation(res, members[method], sparse=method in SPARSE,
                         form=method if method in FORMS else None)
    dense = results["methods"]["dense"]["cost"]
    assert dense["train_flops_vs_dense"] == pytest.approx(1.0)  # the reference is the dense run
    assert results["methods"]["deep"]["cost"]["train_flops_vs_dense"] == pytest.approx(members["deep"], rel=1e-9)
    assert results["methods"]["edst"]["cost"]["train_flops_vs_dense"] < results["methods"]["deep"]["cost"][
        "train_flops_vs_dense"]
    report = (out / "report.md").read_text()
    for name in ("Dense", "Deep ensemble", "DST ensemble", "EDST ensemble", "PF ensemble", "Static", "Snapshot",
                 "MIMO", "BatchEnsemble", "MC dropout", "Packed-Ensembles", "Masksembles"):
        assert name in report
    assert list(out.glob("*.png"))
    return results


def test_demo_all_methods_tiny(tmp_path, monkeypatch, cli_env, capsys):
    """The demo pipeline with tiny settings (a few seconds): run_demo through the CLI."""
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "members": 2, "update_interval": 5,
                                        "pf_epochs": 1, "model_kwargs": {"hidden_sizes": [32, 32]}, "batch_size": 64})
    monkeypatch.setattr(demo, "QUICK_EDST", {"epochs": 3, "explore_epochs": 1})
    out = tmp_path / "demo"
    capsys.readouterr()
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "EDST ensemble" in printed and "results.json" in printed
    _check_demo_output(out, {m: (1 if m == "dense" else 2) for m in METHODS})


def test_demo_quick(tmp_path, cli_env, capsys):
    """The real `freetickets demo --quick` (about 45 s on a busy 2-core CPU with one thread)."""
    out = tmp_path / "demo"
    capsys.readouterr()
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    results = _check_demo_output(out, {m: (1 if m == "dense" else 3) for m in METHODS})
    assert results["quick"] is True
    # even the smoke run learns something: well above chance (10%) for every method
    for method, res in results["methods"].items():
        assert res["ensemble"]["accuracy"] > 0.3, method


def test_demo_methods_selects_a_subset(tmp_path, monkeypatch, cli_env, capsys):
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "members": 2, "model_kwargs": {"hidden_sizes": [32, 32]},
                                        "batch_size": 64})
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu", "--methods", "dense", "mimo"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"dense", "mimo"}
    assert results["methods"]["mimo"]["cost"]["members"] == 2
    capsys.readouterr()
    assert main(["demo", "--quick", "--out", str(out), "--methods", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--methods" in err[0]


def test_demo_regimes(tmp_path, monkeypatch, cli_env):
    """headroom (default) trains the MLP; saturated keeps the presets' cnn1d (width from --quick)."""
    assert demo.demo_config("edst", 0, quick=False).model == "mlp"
    assert demo.demo_config("mimo", 0, quick=True).model == "mlp"
    saturated = demo.demo_config("edst", 0, quick=False, regime="saturated")
    assert saturated.model == "cnn1d" and saturated.model_kwargs == {"width": 128}
    assert demo.demo_config("dst", 0, quick=True, regime="saturated").model_kwargs == {"width": 64}
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "members": 2, "batch_size": 64})
    monkeypatch.setattr(demo, "QUICK_SATURATED", {"model_kwargs": {"width": 8}})
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--regime", "saturated", "--out", str(out), "--device", "cpu",
                 "--methods", "dense", "dst"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["regime"] == "saturated" and results["methods"]["dst"]["model"] == "cnn1d"


def test_demo_two_seeds_claims_block(tmp_path, monkeypatch, cli_env, capsys):
    """`demo --seeds 2` (tiny settings, three methods): results.json carries the claims block,
    the DST claims are skipped (no 'dst'), the report and the terminal show the claims table."""
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "members": 2, "update_interval": 5,
                                        "pf_epochs": 1, "model_kwargs": {"hidden_sizes": [32, 32]}, "batch_size": 64})
    monkeypatch.setattr(demo, "QUICK_EDST", {"epochs": 3, "explore_epochs": 1})
    out = tmp_path / "demo"
    demo.run_demo(out, quick=True, seeds=2, device="cpu", methods=("dense", "deep", "edst"), print_fn=print)
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    claims = {c["name"]: c for c in results["claims"]}
    acc = claims["EDST accuracy > dense"]
    assert acc["seeds"] == 2 and acc["verdict"] in ("holds", "not resolved", "fails")
    edst = [s["edst"]["ensemble"]["accuracy"] - s["dense"]["ensemble"]["accuracy"] for s in results["seeds"]]
    assert acc["difference"] == pytest.approx(sum(edst) / 2, abs=1e-12)
    assert acc["interval"][0] <= acc["difference"] <= acc["interval"][1]
    assert claims["DST accuracy within 0.5 pp of deep ensemble"]["verdict"] == "skipped"
    assert claims["EDST training FLOPs < dense"]["verdict"] == "holds"
    assert "## Claims" in (out / "report.md").read_text()
    assert "EDST accuracy > dense" in printed
