"""`predict`, `flops`, `models`, `report`, and one real subprocess smoke test (README, Command line)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from freetickets.cli.main import main
from freetickets.ensembles.ensemble import Ensemble
from freetickets.flops import dense_layer_flops
from freetickets.models import create_model, list_models

from _cli_helpers import METHOD_ARGS, train_cli


def test_predict_on_a_npy_file(cli_runs, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((7, 1, 40)).astype(np.float32)
    inp = tmp_path / "inputs.npy"
    np.save(inp, x)
    capsys.readouterr()
    assert main(["predict", str(cli_runs["edst"]), "--input", str(inp)]) == 0  # default --device auto
    out_path = tmp_path / "inputs.pred.npz"
    assert str(out_path) in capsys.readouterr().out
    pred = np.load(out_path)
    probs = pred["probs"]
    assert probs.shape == (7, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert np.array_equal(pred["pred"], probs.argmax(1))
    for key in ("entropy", "mutual_information", "disagreement"):
        assert pred[key].shape == (7,)
    # the same numbers as the Python API (MNIST-1D inputs are used as they are)
    ens = Ensemble.load(cli_runs["edst"])
    expected = ens.predict_proba(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)

    csv = tmp_path / "p.csv"
    assert main(["predict", str(cli_runs["dense"]), "--input", str(inp), "--output", str(csv), "--device", "cpu"]) == 0
    assert csv.is_file() and len(csv.read_text().strip().splitlines()) >= 7


def test_predict_rejects_bad_input_in_one_line(cli_runs, tmp_path, capsys):
    inp = tmp_path / "bad.npy"
    np.save(inp, np.zeros((3, 17), np.float32))
    capsys.readouterr()
    assert main(["predict", str(cli_runs["dst"]), "--input", str(inp)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("freetickets: error:") and "shape" in err[0]


def _number(text: str, label: str) -> float:
    """The first number after ``label`` on its line (thousands separators removed)."""
    line = next(line for line in text.splitlines() if line.strip().startswith(label))
    return float(re.search(r"[\d,.]+", line.split(label, 1)[1]).group().replace(",", ""))


def test_flops_prints_dense_and_sparse_costs(capsys):
    capsys.readouterr()
    assert main(["flops", "--model", "cnn1d", "--data", "mnist1d"]) == 0
    out = capsys.readouterr().out
    dense = dense_layer_flops(create_model("cnn1d", num_classes=10, input_shape=(1, 40)), (1, 40)).total
    assert _number(out, "dense forward FLOPs / sample") == pytest.approx(dense)
    sparse = _number(out, "sparse forward FLOPs / sample")
    assert 0 < sparse < dense
    ratios = re.findall(r"\(([\d.]+)x", out)
    assert ratios and all(0 < float(r) < 1 for r in ratios)  # DST of 3 members at S 0.8: below one dense model
    assert "training FLOPs" in out and "inference FLOPs" in out

    assert main(["flops", "--model", "cnn1d", "--method", "dense", "--members", "1"]) == 0
    out = capsys.readouterr().out
    assert "(1.000x one dense model" in out


def test_flops_bad_sparsity_is_one_line(capsys):
    capsys.readouterr()
    assert main(["flops", "--model", "cnn1d", "--sparsity", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sparsity" in err[0]


def test_models_lists_the_registry(capsys):
    capsys.readouterr()
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines]
    assert names == list_models()
    assert {"mlp", "cnn1d", "wrn-D-K", "resnet50"} <= set(names)
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # every entry has a description


def test_report_writes_markdown(cli_runs, tmp_path, capsys):
    out = tmp_path / "report"
    capsys.readouterr()
    assert main(["report", str(cli_runs["dst"]), str(cli_runs["edst"]), "--out", str(out), "--device", "cpu"]) == 0
    assert str(out / "report.md") in capsys.readouterr().out
    text = (out / "report.md").read_text()
    assert "DST ensemble" in text and "EDST ensemble" in text
    assert "|" in text  # tables
    results = json.loads((out / "results.json").read_text())
    assert "data" in results
    assert list(out.glob("*.png"))


def test_report_pairs_seeds_and_uses_each_runs_dense_reference(cli_runs, tmp_path, capsys):
    """A second DST run that differs only in --seed is seed 1 of 'dst' (not 'dst_2'); without a
    dense run the cost claims against dense use each run's own dense reference."""
    seed1 = tmp_path / "dst_seed1"
    assert train_cli(seed1, "dst", *METHOD_ARGS["dst"], "--seed", "1") == 0
    out = tmp_path / "report"
    runs = [str(cli_runs["dst"]), str(seed1), str(cli_runs["edst"])]
    assert main(["report", *runs, "--out", str(out), "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["num_seeds"] == 2 and [sorted(s) for s in results["seeds"]] == [["dst", "edst"], ["dst"]]
    assert results["runs"] == {"dst": runs[:2], "edst": runs[2:]}
    assert results["summary"]["dst"]["accuracy"]["std"] > 0  # two different runs averaged
    claims = {c["name"]: c for c in results["claims"]}
    edst = claims["EDST training FLOPs < dense"]
    assert edst["verdict"] != "skipped" and edst["reference"] == "each run's own dense reference"
    assert edst["difference"] == pytest.approx(
        results["seeds"][0]["edst"]["cost"]["train_flops_vs_dense"] - 1.0)
    text = (out / "report.md").read_text()
    assert "dst_2" not in text and "2 seeds" in text
    assert f"DST ensemble: 2 seed(s), runs {runs[0]}, {runs[1]}" in text
    assert main(["report", runs[0], runs[0], "--out", str(out), "--device", "cpu"]) == 2
    assert "same method, settings and seed" in capsys.readouterr().err


def _subprocess(args: list[str], env_dir) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FREETICKETS_CACHE": str(env_dir / "cache")}
    return subprocess.run([sys.executable, "-m", "freetickets", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_subprocess_smoke(tmp_path):
    """The real entry point: train then evaluate --json in fresh processes; a user error is one line."""
    run = tmp_path / "run"
    p = _subprocess(["train", "--method", "dst", "--out", str(run), "--epochs", "1", "--members", "1",
                     "--num-samples", "1000", "--set", "model_kwargs={width: 16}", "--update-interval", "5",
                     "--device", "cpu"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "dst: 1 ticket(s)" in p.stdout
    p = _subprocess(["evaluate", str(run), "--json", "--device", "cpu", "--corruptions", "none"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["cost"]["members"] == 1
    p = _subprocess(["train", "--method", "dst", "--out", str(tmp_path / "bad"), "--members", "0"], tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["freetickets: error: --members: must be >= 1, got 0"]
    assert not (tmp_path / "bad").exists()
