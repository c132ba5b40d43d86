"""benchmarks/quality.py refuses one seed; benchmarks/sparsity.py end to end at tiny settings;
benchmarks/compact.py on a tiny trained channel run (its checks, rows and refusals);
benchmarks/structure.py's channel allocation option and --compare; benchmarks/ensemble.py --structure channel rows."""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from _cli_helpers import train_cli
from freetickets import demo
from freetickets.ensembles.ensemble import Ensemble

_ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", _ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up while the file executes)
    spec.loader.exec_module(module)
    return module


def test_quality_needs_two_seeds(capsys):
    with pytest.raises(SystemExit) as exc:
        _load("quality").main(["--seeds", "1"])
    assert exc.value.code == 2 and "at least 2" in capsys.readouterr().err


def test_sparsity_sweep_tiny(tmp_path, monkeypatch, cli_env):
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "members": 2, "update_interval": 5,
                                        "pf_epochs": 1, "model_kwargs": {"width": 8}, "batch_size": 64})
    monkeypatch.setattr(demo, "QUICK_EDST", {"epochs": 3, "explore_epochs": 1})
    out = tmp_path / "sp"
    assert _load("sparsity").main(["--quick", "--out", str(out), "--device", "cpu", "--sparsities", "0.5", "0.9"]) == 0
    result = json.loads((out / "sparsity.json").read_text())
    assert result["sparsities"] == [0.5, 0.9]
    for method in ("dst", "edst"):
        assert sorted(result["sweep"][method]) == ["0.5", "0.9"]
        for runs in result["sweep"][method].values():
            assert len(runs) == 1 and 0.0 <= runs[0]["accuracy"] <= 1.0 and runs[0]["nll"] > 0
        # fewer active weights, fewer training FLOPs
        assert result["sweep"][method]["0.9"][0]["train_flops"] < result["sweep"][method]["0.5"][0]["train_flops"]
    assert len(result["levels"]["dense"]) == len(result["levels"]["deep"]) == 1
    assert (out / "sparsity.png").stat().st_size > 1000


def test_diversity_study_tiny(tmp_path, monkeypatch, cli_env):
    """benchmarks/diversity.py at tiny settings: one row per candidate, validation-only measures, a plot."""
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "members": 2, "update_interval": 5,
                                        "model_kwargs": {"width": 8}, "batch_size": 64})
    monkeypatch.setattr(demo, "QUICK_EDST", {"epochs": 4, "explore_epochs": 1})
    out = tmp_path / "div"
    assert _load("diversity").main(["--quick", "--out", str(out), "--seeds", "2", "--first-seed", "1",
                                    "--candidates", "baseline", "jump-0.5"]) == 0
    rows = json.loads((out / "diversity.json").read_text())
    assert [r["candidate"] for r in rows] == ["baseline", "jump-0.5"]
    assert rows[0]["seeds"] == [100, 200] and [r["seed"] for r in rows[1]["per_seed"]] == [100, 200]
    # the paired comparison with the baseline: the mean of the per-seed differences, inside its interval
    for k, cmp in rows[1]["vs_baseline"].items():
        diffs = [c[k] - b[k] for c, b in zip(rows[1]["per_seed"], rows[0]["per_seed"])]
        assert cmp["difference"] == pytest.approx(sum(diffs) / 2)
        lo, hi = cmp["interval"]
        assert lo <= cmp["difference"] <= hi
    assert "vs_baseline" not in rows[0]
    for r in rows:
        assert 0.0 <= r["disagreement"] <= 1.0 and 0.0 < r["mask_hamming"] <= 1.0
        assert 0.0 <= r["accuracy"] <= 1.0 and r["nll"] > 0 and 0.0 <= r["ood_auroc"] <= 1.0
    # equal training cost: the jump fraction does not change the FLOPs by more than the jump itself
    assert abs(rows[1]["train_flops"] / rows[0]["train_flops"] - 1) < 0.05
    assert (out / "diversity.png").is_file()


def test_schedule_control_pairs_dense_runs_with_the_quality_runs_edst(tmp_path, monkeypatch, cli_env):
    """benchmarks/schedule_control.py: dense at each --epochs, paired seed by seed with EDST's numbers."""
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 1, "members": 2,
                                        "model_kwargs": {"width": 4}, "batch_size": 64})
    q = tmp_path / "q"
    q.mkdir()
    edst = [{"edst": {"ensemble": {"accuracy": a, "nll": n}, "cost": {"train_flops_vs_dense": 0.8}}}
            for a, n in ((0.9, 0.3), (0.8, 0.5))]
    (q / "results.json").write_text(json.dumps({"quick": True, "regime": "converged", "seeds": edst}))
    out = tmp_path / "s"
    mod = _load("schedule_control")
    assert mod.main(["--quick", "--quality", str(q), "--epochs", "1", "2", "--out", str(out)]) == 0
    rows = json.loads((out / "schedule_control.json").read_text())
    assert [r["dense_epochs"] for r in rows] == [1, 2]
    for r in rows:
        for i in range(2):  # one dense run per seed of the quality run, trained for the row's epochs
            cfg = (out / f"dense_e{r['dense_epochs']}" / f"seed{i}" / "config.yaml").read_text()
            assert f"epochs: {r['dense_epochs']}\n" in cfg and f"seed: {100 * i}\n" in cfg
        mean, (lo, hi) = r["edst_minus_dense_accuracy"]["difference"], r["edst_minus_dense_accuracy"]["interval"]
        assert mean == pytest.approx((0.9 + 0.8) / 2 - r["dense_accuracy"])
        assert lo <= mean <= hi
        assert r["edst_minus_dense_nll"]["difference"] == pytest.approx(0.4 - r["dense_nll"])
        # the dense run's measured cost against the demo's dense run (QUICK: 1 epoch)
        assert r["train_flops_vs_demo_dense"] == pytest.approx(r["dense_epochs"] / 1)
    with pytest.raises(SystemExit):  # a full-settings control against a --quick quality run is refused
        mod.main(["--quality", str(q), "--out", str(out)])


def test_every_mutation_target_is_in_the_code_exactly_once():
    """benchmarks/mutations.py plants its bugs by exact text: a refactor that moves or rewrites a
    target line must update the list in the same change, not when someone next runs the benchmark."""
    mod = _load("mutations")
    for m in mod.MUTATIONS:
        source = (mod.PACKAGE / m.file).read_text()
        assert source.count(m.old) == 1, f"{m.name}: {m.old!r} occurs {source.count(m.old)} times in {m.file}"
        assert m.new != m.old and all((_ROOT / t).is_file() for t in m.tests), m.name


def _rows(values):
    """rows.jsonl rows from ``{epochs: [(accuracy, nll) per seed]}`` (seeds 0, 100, ...)."""
    return [{"seed": 100 * k, "epochs": e, "val_accuracy": a, "val_nll": n, "seconds": 1.0}
            for e, per_seed in values.items() for k, (a, n) in enumerate(per_seed)]


def test_select_epochs_rule_known_answers():
    """The rule: the first E whose doubling improves neither accuracy nor NLL beyond its interval."""
    mod = _load("select_epochs")
    # 10 -> 20: a clear gain in accuracy (NLL flat); 20 -> 40: noise around 0 on both -> E = 20
    rows = _rows({10: [(0.70, 0.5), (0.71, 0.6), (0.72, 0.4)],
                  20: [(0.80, 0.5), (0.80, 0.6), (0.83, 0.4)],
                  40: [(0.81, 0.49), (0.79, 0.62), (0.83, 0.41)]})
    s = mod.summarise(rows)
    assert s["selected_epochs"] == 20 and s["seeds"] == [0, 100, 200]
    first, second = s["doublings"]
    assert first["improves"] and not second["improves"]
    assert first["accuracy_gain"]["difference"] == pytest.approx((0.10 + 0.09 + 0.11) / 3)
    lo, hi = first["accuracy_gain"]["interval"]
    assert 0 < lo < first["accuracy_gain"]["difference"] < hi
    assert first["nll_change"]["difference"] == pytest.approx(0.0, abs=1e-12)
    assert s["per_epochs"][0]["val_accuracy"] == pytest.approx(0.71)
    # NLL alone counts: accuracy flat, NLL clearly lower at 2E -> that doubling improves
    rows = _rows({10: [(0.8, 0.50), (0.8, 0.60), (0.8, 0.55)], 20: [(0.8, 0.40), (0.8, 0.52), (0.8, 0.44)]})
    s = mod.summarise(rows)
    assert s["doublings"][0]["improves"] and s["selected_epochs"] is None  # no converged E in the sequence
    # a seed missing at one E is left out of every comparison (all pairs stay paired)
    rows = _rows({10: [(0.7, 0.5), (0.7, 0.6), (0.7, 0.4)], 20: [(0.8, 0.5), (0.8, 0.6)]})
    assert mod.summarise(rows)["seeds"] == [0, 100]
    with pytest.raises(ValueError, match="at least 2 seeds"):
        mod.summarise(_rows({10: [(0.7, 0.5)], 20: [(0.8, 0.5)]}))


def test_select_epochs_tiny_with_resume(tmp_path, cli_env, capsys):
    """benchmarks/select_epochs.py end to end at tiny settings; --resume trains only the new runs."""
    mod = _load("select_epochs")
    out = tmp_path / "sel"
    tiny = ["--set", "num_samples=1000", "--set", "model_kwargs={width: 4}", "--set", "batch_size=64",
            "--seeds", "2", "--out", str(out)]
    assert mod.main(["--epochs", "1", "2", *tiny]) == 0
    rows = mod.read_rows(out / "rows.jsonl")
    assert sorted((r["seed"], r["epochs"]) for r in rows) == [(0, 1), (0, 2), (100, 1), (100, 2)]
    for r in rows:
        assert 0.1 < r["val_accuracy"] <= 1.0 and r["val_nll"] > 0 and r["regime"] == "converged"
        assert r["overrides"]["num_samples"] == 1000
        cfg = (out / f"e{r['epochs']}_seed{r['seed']}" / "config.yaml").read_text()
        assert f"epochs: {r['epochs']}\n" in cfg and "model: cnn1d\n" in cfg and "method: dense\n" in cfg
    with pytest.raises(SystemExit) as exc:  # an existing output without --resume is refused
        mod.main(["--epochs", "1", "2", *tiny])
    assert exc.value.code == 2
    assert mod.main(["--epochs", "1", "2", "4", "--resume", *tiny]) == 0
    assert len(mod.read_rows(out / "rows.jsonl")) == 6  # only the two E=4 runs were added
    summary = json.loads((out / "select_epochs.json").read_text())
    assert summary["epochs"] == [1, 2, 4] and len(summary["doublings"]) == 2
    assert summary == json.loads(json.dumps(mod.summarise(mod.read_rows(out / "rows.jsonl"))))
    assert "| doubling |" in capsys.readouterr().out
    for bad in (["--epochs", "1", "3"], ["--set", "epochs=4"], ["--seeds", "1"]):  # not a doubling sequence,
        with pytest.raises(SystemExit) as exc:  # E outside --epochs, no interval from one seed
            mod.main([*bad, "--out", str(tmp_path / "x")])
        assert exc.value.code == 2
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def tiny_channel_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("compact_bench") / "edst_channel"
    assert train_cli(run, "edst", "--epochs", "4", "--explore-epochs", "1", "--members", "3",
                     "--structure", "channel") == 0
    return run


def test_compact_benchmark_rows_of_a_trained_channel_run(tiny_channel_run, capsys):
    """benchmarks/compact.py: the must-show check and timing, one row per batch size, exit 0."""
    mod = _load("compact")
    assert mod.main([str(tiny_channel_run), "--rounds", "1", "--batches", "1", "4", "--threads", "1"]) == 0
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| cnn1d |")]
    assert [r[2] for r in rows] == ["1", "4"]
    assert [r[6] for r in rows] == ["packed: graph", "packed: graph"]  # 4 signals: 160 values <= 320
    for model, members, _, dense_ms, ratio, flops, path, diff in rows:
        assert members == "3"
        assert float(dense_ms) > 0 and float(ratio) > 0
        assert 0 < float(flops) < 3 * 0.5  # three slim members at sparsity 0.8 (as test_cli_compact)
        assert float(diff) <= 1e-4


@pytest.mark.parametrize("bug, why", [
    (lambda p: p.roll(1, dims=0), "max diff"),  # members' outputs swapped: right shape, wrong values
    (lambda p: p[:, :, :-1], "member_probs shape"),  # a class dropped
    (lambda p: p.index_fill(1, torch.tensor([0]), float("nan")), "member_probs hold NaN"),  # max() skips NaN
])
def test_compact_benchmark_fails_on_wrong_compact_output(tiny_channel_run, monkeypatch, capsys, bug, why):
    """A compact form whose probabilities are not the masked form's fails the benchmark (exit 1)."""
    load = Ensemble.load.__func__

    def buggy_load(cls, run, **kwargs):
        ens = load(cls, run, **kwargs)
        if kwargs.get("compact"):
            probs = ens.member_probs
            ens.member_probs = lambda x: bug(probs(x))
        return ens

    monkeypatch.setattr(Ensemble, "load", classmethod(buggy_load))
    assert _load("compact").main([str(tiny_channel_run), "--rounds", "1", "--batches", "4", "--threads", "1"]) == 1
    out, err = capsys.readouterr()
    assert f"(FAIL: {why}" in out and err.startswith("FAIL:") and err.count("\n") == 1


def test_compact_benchmark_refuses_runs_without_a_compact_form(tmp_path, capsys):
    """Exit 2 with one line, before any timing: a missing directory, a run not trained with --structure channel."""
    mod = _load("compact")
    assert mod.main([str(tmp_path / "missing"), "--rounds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run directory not found" in err
    dense = tmp_path / "dense"
    assert train_cli(dense, "dense", "--epochs", "1") == 0
    capsys.readouterr()  # the training log
    assert mod.main([str(dense), "--rounds", "1"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "not a channel run" in err and "|" not in out


def test_structure_distribution_applies_to_channel_runs_and_pairs_with_compare(tmp_path, monkeypatch, capsys, cli_env):
    """benchmarks/structure.py --distribution: the channel runs only, recorded per row; --compare
    pairs them with another run seed by seed; an OUT trained with another distribution is refused."""
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "members": 2, "update_interval": 5,
                                        "pf_epochs": 1, "model_kwargs": {"width": 8}, "batch_size": 64})
    monkeypatch.setattr(demo, "QUICK_EDST", {"epochs": 3, "explore_epochs": 1})
    bench = _load("structure")
    erk, uni = tmp_path / "erk", tmp_path / "uni"
    assert bench.main(["--quick", "--seeds", "2", "--out", str(erk)]) == 0
    assert bench.main(["--quick", "--seeds", "2", "--out", str(uni), "--distribution", "uniform",
                       "--compare", str(erk / "structure.json")]) == 0
    a, b = (json.loads((d / "structure.json").read_text()) for d in (uni, erk))
    assert (a["distribution"], b["distribution"]) == ("uniform", "erk")
    for name, rows in a["per_seed"].items():
        channel = name in bench.CHANNEL
        assert [r["distribution"] for r in rows] == ["uniform" if channel else "erk"] * 2
        # slim FLOPs exist exactly for the channel runs (they load compact), and the allocation changes them
        assert all((r["slim_inference_flops_vs_dense"] is not None) == channel for r in rows)
        if channel:
            assert [r["slim_inference_flops_vs_dense"] for r in rows] != \
                [r["slim_inference_flops_vs_dense"] for r in b["per_seed"][name]]
    # the runs --distribution does not touch are the same runs in both
    assert a["compare"]["unchanged_max_abs_diff"] == {"accuracy_pp": 0.0, "nll": 0.0}
    claims = {c["name"]: c for c in a["compare"]["claims"]}
    assert len(claims) == 2 * len(bench.CHANNEL)
    for name in bench.CHANNEL:
        c = claims[f"{name}: uniform - erk, accuracy (pp)"]
        diffs = [100 * (x["accuracy"] - y["accuracy"]) for x, y in zip(a["per_seed"][name], b["per_seed"][name])]
        assert c["difference"] == pytest.approx(sum(diffs) / 2) and c["seeds"] == 2
    out = capsys.readouterr().out
    assert "| edst-channel | uniform |" in out and "static-channel: uniform - erk, NLL" in out
    # the ERK OUT again with --distribution uniform: refused (one line, exit 2), nothing retrained
    before = (erk / "seed0" / "edst-channel.json").stat().st_mtime_ns
    with pytest.raises(SystemExit) as exc:
        bench.main(["--quick", "--seeds", "2", "--out", str(erk), "--distribution", "uniform"])
    assert exc.value.code == 2 and "another --distribution" in capsys.readouterr().err
    assert (erk / "seed0" / "edst-channel.json").stat().st_mtime_ns == before


def test_structure_reuses_rows_and_refuses_rows_of_other_channel_settings(tmp_path, monkeypatch, capsys, cli_env):
    """benchmarks/structure.py: rows record their prune and jump fractions and update interval; after a channel constant
    changes, the old rows are refused (exit 2, nothing retrained); once deleted, the
    summarising command retrains only them and reuses every other row as it is."""
    monkeypatch.setattr(demo, "QUICK", {"num_samples": 1000, "epochs": 2, "members": 2, "update_interval": 5,
                                        "pf_epochs": 1, "model_kwargs": {"width": 8}, "batch_size": 64})
    monkeypatch.setattr(demo, "QUICK_EDST", {"epochs": 3, "explore_epochs": 1})
    bench = _load("structure")
    out = tmp_path / "out"
    assert bench.main(["--quick", "--seeds", "2", "--out", str(out)]) == 0
    first = json.loads((out / "structure.json").read_text())["per_seed"]
    assert [r["jump_fraction"] for r in first["edst-channel"]] == [bench.CHANNEL_JUMP_FRACTION] * 2
    assert [r["prune_fraction"] for r in first["dst-channel"]] == [bench.CHANNEL_PRUNE_FRACTION] * 2
    # --quick keeps the quick interval (CHANNEL_UPDATE_INTERVAL is for the full runs), recorded per row
    assert {r["update_interval"] for rows in first.values() for r in rows} == {5}
    # a row of another update interval is stale; a row without one (written before rows recorded it)
    # was trained with the preset's
    row_path = out / "seed1" / "dst-channel.json"
    text = row_path.read_text()
    row_path.write_text(json.dumps({**json.loads(text), "update_interval": 50}))
    assert bench.stale_rows(out, [0, 1], True, "cpu", None) == ["seed1/dst-channel (update_interval 50, not 5)"]
    row_path.write_text(json.dumps({k: v for k, v in json.loads(text).items() if k != "update_interval"}))
    assert bench.stale_rows(out, [0, 1], True, "cpu", None) == []
    row_path.write_text(text)
    rows = {p: p.stat().st_mtime_ns for p in out.glob("seed*/*.json")}
    assert len(rows) == 2 * len(bench.METHODS)
    new_jump = 0.25 if bench.CHANNEL_JUMP_FRACTION != 0.25 else 0.3
    monkeypatch.setattr(bench, "CHANNEL_JUMP_FRACTION", new_jump)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        bench.main(["--quick", "--seeds", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err  # (argparse: the usage, then the one error line)
    assert f"seed0/edst-channel (jump_fraction {first['edst-channel'][0]['jump_fraction']}, not {new_jump})" in err
    assert [r.split(" ")[0] for r in bench.stale_rows(out, [0, 1], True, "cpu", None)] == \
        ["seed0/edst-channel", "seed1/edst-channel"]  # only channel-EDST uses the jump
    for s in (0, 1):
        (out / f"seed{s}" / "edst-channel.json").unlink()
    assert bench.main(["--quick", "--seeds", "2", "--out", str(out)]) == 0
    again = json.loads((out / "structure.json").read_text())["per_seed"]
    for path, mtime in rows.items():
        assert (path.stat().st_mtime_ns == mtime) == (path.name != "edst-channel.json"), path
    assert [r["jump_fraction"] for r in again["edst-channel"]] == [new_jump] * 2
    assert {n: r for n, r in again.items() if n != "edst-channel"} == \
        {n: r for n, r in first.items() if n != "edst-channel"}
    # the retrained rows' FLOPs ratios use the dense rows left in place
    assert [r["train_flops_vs_dense"] for r in again["edst-channel"]] == \
        [r["train_flops"] / d["train_flops"] for r, d in zip(again["edst-channel"], first["dense"])]


def test_structure_channel_settings_apply_where_they_act():
    """benchmarks/structure.py's full-run configs: channel-EDST and channel-DST train with
    CHANNEL_UPDATE_INTERVAL (and EDST with CHANNEL_JUMP_FRACTION); static-channel never updates, so
    it keeps the preset's (unused) interval; the unstructured runs keep every preset setting."""
    bench = _load("structure")
    for name, (method, structure) in bench.METHODS.items():
        cfg, preset = bench._config(name, 0, False, "cpu"), demo.demo_config(method, 0, quick=False, device="cpu")
        assert cfg.structure == (structure or preset.structure)
        updates = structure == "channel" and method in ("edst", "dst")
        assert cfg.update_interval == (bench.CHANNEL_UPDATE_INTERVAL if updates else preset.update_interval), name
        assert cfg.jump_fraction == (bench.CHANNEL_JUMP_FRACTION if name == "edst-channel" else preset.jump_fraction)
        assert cfg.prune_fraction == (bench.CHANNEL_PRUNE_FRACTION if structure else preset.prune_fraction)
    assert bench.CHANNEL_UPDATE_INTERVAL != demo.demo_config("dst", 0, quick=False, device="cpu").update_interval


@pytest.mark.parametrize("case,routes", [("mlp", ("graph", "graph")), ("cnn1d", ("graph", "folded"))])
def test_ensemble_channel_table_rows(case, routes, capsys):
    bench = _load("ensemble")
    args = argparse.Namespace(cases=[case], members=2, sparsity=0.8, distribution="erk", batches=[1, 9], rounds=1)
    bench.channel_main(args, torch.device("cpu"))  # benchmarks/ensemble.py --structure channel, tiny
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("case | batch | dense eager ms")
    rows = [line.split(" | ") for line in lines[1:]]
    assert [(r[0], r[1], r[4]) for r in rows] == [(case, "1", routes[0]), (case, "9", routes[1])]
    for r in rows:
        numbers = [float(r[i]) for i in (2, 3, 5, 6, 8, 9)]
        assert all(v > 0 for v in numbers)
        assert 0.3 < float(r[6]) < 1.0  # two members at S = 0.8 cost less than one dense model
