"""`freetickets demo` (README, docs/evaluation.md): every method, every key, report and plots."""
from __future__ import annotations

import json

import pytest

from freetickets import demo
from freetickets.cli.main import main
from freetickets.names import DENSE_EDST_EPOCHS

from _cli_helpers import check_evaluation

METHODS = ("dense", "deep", "dst", "edst", "pf", "static", "snapshot", "mimo", "batchensemble", "mcdropout",
           "packed", "masksembles")
FORMS = ("mimo", "batchensemble", "mcdropout", "packed", "masksembles")
SPARSE = ("dst", "edst", "pf", "static")


def _check_demo_output(out, members: dict[str, int]) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == "mnist1d"
    assert set(results["methods"]) == {*METHODS, DENSE_EDST_EPOCHS}  # with the equal-epochs control
    for method, res in results["methods"].items():
        check_evaluation(res, members.get(method, 1), sparse=method in SPARSE,
                         form=method if method in FORMS else None)
    _check_equal_epochs_control(out, results["methods"])
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


def _check_equal_epochs_control(out, methods) -> None:
    """The control is the dense preset trained for EDST's epochs: same settings otherwise, its
    training FLOPs the dense run's times the epoch ratio, and the per-method plots leave it out."""
    edst = (out / "seed0" / "edst" / "config.yaml").read_text()
    dense = (out / "seed0" / "dense" / "config.yaml").read_text().splitlines()
    control = (out / "seed0" / DENSE_EDST_EPOCHS / "config.yaml").read_text().splitlines()
    epochs = {name: int(next(line for line in text if line.startswith("epochs:")).split()[1])
              for name, text in (("edst", edst.splitlines()), ("dense", dense), ("control", control))}
    assert epochs["control"] == epochs["edst"] > epochs["dense"]
    differ = {line.split(":")[0] for line in set(control) ^ set(dense)}
    assert differ == {"epochs", "reference_epochs"}, differ
    ratio = methods[DENSE_EDST_EPOCHS]["cost"]["train_flops"] / methods["dense"]["cost"]["train_flops"]
    assert ratio == pytest.approx(epochs["control"] / epochs["dense"], rel=1e-9)
    assert methods[DENSE_EDST_EPOCHS]["cost"]["train_flops_vs_dense"] == pytest.approx(ratio, rel=1e-9)
    assert "Dense (EDST's epochs)" in (out / "report.md").read_text()


def test_demo_all_methods_tiny(tmp_path, monkeypatch, cli_env, capsys):
    """The demo pipeline with tiny settings (a few seconds): run_demo through the CLI."""
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "members": 2, "update_interval": 5,
                                        "pf_epochs": 1, "model_kwargs": {"width": 8}, "batch_size": 64})
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
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "members": 2, "model_kwargs": {"width": 8},
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
    """converged (default) trains cnn1d of width 16, headroom the MLP; saturated keeps the presets'
    cnn1d (width from --quick)."""
    converged = demo.demo_config("edst", 0, quick=False)
    assert converged.model == "cnn1d" and converged.model_kwargs == {"width": 16}
    assert demo.demo_config("mimo", 0, quick=True).model_kwargs == {"width": 16}
    assert demo.demo_config("edst", 0, quick=False, regime="headroom").model == "mlp"
    assert demo.demo_config("mimo", 0, quick=True, regime="headroom").model == "mlp"
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
                                        "pf_epochs": 1, "model_kwargs": {"width": 8}, "batch_size": 64})
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


def test_demo_quick_two_seeds_equal_epochs_claims(tmp_path, monkeypatch, cli_env, capsys):
    """`freetickets demo --quick --seeds 2` (tiny settings, dense and EDST): results.json, the
    report and the terminal carry the equal-epochs claims, paired seed by seed with the control."""
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "update_interval": 5,
                                        "model_kwargs": {"width": 8}, "batch_size": 64})
    monkeypatch.setattr(demo, "QUICK_EDST", {"epochs": 4, "explore_epochs": 1})
    out = tmp_path / "demo"
    capsys.readouterr()
    assert main(["demo", "--quick", "--seeds", "2", "--out", str(out), "--device", "cpu",
                 "--methods", "dense", "edst"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    claims = {c["name"]: c for c in results["claims"]}
    for metric, name in (("accuracy", "EDST accuracy > dense at equal epochs"),
                         ("nll", "EDST NLL < dense at equal epochs")):
        c = claims[name]
        assert c["methods"] == ["edst", DENSE_EDST_EPOCHS] and c["seeds"] == 2
        d = [s["edst"]["ensemble"][metric] - s[DENSE_EDST_EPOCHS]["ensemble"][metric] for s in results["seeds"]]
        assert c["difference"] == pytest.approx(sum(d) / 2, abs=1e-12)
        assert c["interval"][0] <= c["difference"] <= c["interval"][1]
        assert c["verdict"] in ("holds", "not resolved", "fails")
        assert name in printed
    flops = claims["EDST training FLOPs < dense at equal epochs"]
    ratio = [s["edst"]["cost"]["train_flops"] / s[DENSE_EDST_EPOCHS]["cost"]["train_flops"]
             for s in results["seeds"]]
    assert 1 + flops["difference"] == pytest.approx(ratio[0]) and flops["verdict"] == "holds"  # 0.2 density
    assert claims["EDST accuracy > dense"]["methods"] == ["edst", "dense"]  # the equal-cost claim stays
    for s in results["seeds"]:  # the control: the dense preset at EDST's 4 epochs, 4 / 2 = 2x the dense FLOPs
        assert s[DENSE_EDST_EPOCHS]["cost"]["train_flops_vs_dense"] == pytest.approx(2.0, rel=1e-9)
    report = (out / "report.md").read_text()
    assert "| EDST NLL < dense at equal epochs |" in report and "Dense (EDST's epochs)" in report
    # without EDST there is nothing to control for
    assert demo.demo_entries(("dense", "deep")) == ["dense", "deep"]
    assert demo.demo_entries(("dense", "edst", "static")) == ["dense", "edst", DENSE_EDST_EPOCHS, "static"]


def test_demo_in_two_processes_matches_one_process(tmp_path, monkeypatch, cli_env, capsys):
    """--jobs 2 trains the same runs as --jobs 1 (one thread each): equal test metrics per seed and
    method, PF fine-tuning its own seed's deep ensemble, one printed line per finished run."""
    import torch

    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "members": 2, "update_interval": 5,
                                        "pf_epochs": 1, "model_kwargs": {"width": 4}, "batch_size": 64})
    monkeypatch.setattr(demo, "QUICK_EDST", {"epochs": 3, "explore_epochs": 1})
    methods = ("dense", "deep", "pf", "edst")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = demo.run_demo(tmp_path / "one", quick=True, seeds=2, device="cpu", methods=methods, jobs=1)
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    two = demo.run_demo(tmp_path / "two", quick=True, seeds=2, device="cpu", methods=methods, jobs=2, print_fn=print)
    printed = capsys.readouterr().out
    assert "in 2 processes" in printed
    assert sum("test accuracy" in line for line in printed.splitlines()) == 2 * 5  # 4 methods + the control
    for s in range(2):
        assert list(two["seeds"][s]) == list(one["seeds"][s]) == ["dense", "deep", "pf", "edst", "dense_edst_epochs"]
        for m in one["seeds"][s]:
            assert two["seeds"][s][m]["ensemble"]["accuracy"] == one["seeds"][s][m]["ensemble"]["accuracy"], (s, m)
            assert two["seeds"][s][m]["ensemble"]["nll"] == pytest.approx(one["seeds"][s][m]["ensemble"]["nll"], abs=1e-6)
        pf_cfg = (tmp_path / "two" / f"seed{s}" / "pf" / "config.yaml").read_text()
        assert f"seed{s}/deep" in pf_cfg


def test_demo_jobs_must_be_positive(tmp_path, cli_env, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--jobs" in err[0] and ">= 1" in err[0]


@pytest.mark.parametrize("regime", sorted(demo.REGIMES))
def test_demo_schedules_follow_the_released_proportions(regime):
    """Every per-member method trains the dense model's E epochs (snapshot: E in all, PF's dense
    parents are the deep ensemble's E-epoch models); EDST trains 0.6 E of exploration and M
    refinement phases of 0.4 E (1.8 E <= 2 E); the equal-epochs control trains EDST's epochs."""
    e = demo.demo_config("dense", 0, quick=False, regime=regime).epochs
    assert e == 20
    for method in demo.METHODS:
        cfg = demo.demo_config(method, 0, quick=False, regime=regime)
        if method == "edst":
            assert cfg.explore_epochs == round(0.6 * e) and cfg.refine_epochs == round(0.4 * e)
            assert cfg.epochs == cfg.explore_epochs + cfg.members * cfg.refine_epochs == 36 <= 2 * e
            assert cfg.reference_epochs == e
        else:
            assert cfg.epochs == e, method
    assert demo.equal_epochs_config(0, quick=False, regime=regime).epochs == 36
    quick = demo.demo_config("edst", 0, quick=True, regime=regime)
    assert (quick.explore_epochs, quick.refine_epochs, quick.epochs) == (2, 1, 5)  # E = 3: 0.6 E = 2, 0.4 E = 1
