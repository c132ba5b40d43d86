"""MIMO, BatchEnsemble and MC dropout as methods: train, load, evaluate, predict, report and
cost them like every other method; bad settings are one line and exit 2; `freetickets flops`
knows them and takes schedule defaults from the method's preset (hand-computed answers)."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from freetickets.cli.main import main
from freetickets.ensembles.ensemble import Ensemble
from freetickets.evaluation import evaluate_run
from freetickets.flops import dense_layer_flops, forward_flops
from freetickets.methods import get_recipe
from freetickets.models import create_model
from freetickets.sparse import layer_densities, sparsifiable_parameters
from freetickets.train import train
from freetickets.train.config import resolve

FORMS = ("mimo", "batchensemble", "mcdropout")
BASE = dict(model="mlp", num_samples=1000, batch_size=64, device="cpu", members=3, epochs=2, eval_batch_size=256,
            mimo_batch_repetitions=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = {}
    for method in FORMS:
        path = tmp_path_factory.mktemp(method)
        train(resolve(None, {**BASE, "method": method}), path, overwrite=True)
        out[method] = path
    return out


@pytest.mark.parametrize("method", FORMS)
def test_run_holds_one_network_with_m_members(method, runs):
    run = runs[method]
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "complete" and m["members"] == 3 and len(m["tickets"]) == 1
    assert m["model_form"]["kind"] == method and m["model_form"]["members"] == 3
    assert m["seeds"] == [0] and m["sparsity"] == 0.0
    ens = Ensemble.load(run)
    assert ens.members == 3 and ens.form is not None
    x = torch.randn(5, 1, 40)
    probs = ens.member_probs(x)
    assert probs.shape == (3, 5, 10)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 5))
    assert not torch.equal(probs[0], probs[1])  # members are different functions
    assert torch.equal(Ensemble.load(run).member_probs(x), probs)  # reproducible after a reload (MC dropout too)
    # the ensemble's members are the trained network's own forward: the ticket in a freshly built form
    from freetickets.ensembles.tickets import load_ticket, ticket_to_model
    from freetickets.models.efficient import build_form

    net = build_form(m["model_form"], create_model("mlp", num_classes=10, input_shape=(1, 40)))
    ticket_to_model(load_ticket(run / m["tickets"][0]["file"]), net)
    with torch.no_grad():
        own = torch.softmax(net.eval().member_logits(x), dim=-1)
    torch.testing.assert_close(probs, own, rtol=0, atol=0)
    if method == "mimo":  # M distinct heads: each head's logits are its own block of the output units
        flat = net.model(torch.cat([x] * 3, dim=1))
        assert torch.equal(net.member_logits(x)[2], flat[:, 20:30])


@pytest.mark.parametrize("method", FORMS)
def test_recorded_costs_are_the_measured_form_costs(method, runs):
    run = runs[method]
    m = json.loads((run / "manifest.json").read_text())
    cfg = resolve(None, {**BASE, "method": method})
    recipe = get_recipe(method)
    torch.manual_seed(0)
    form = recipe.build_model(create_model("mlp", num_classes=10, input_shape=(1, 40)), cfg)
    train_fwd, inference = recipe.form_flops(form, (1, 40), cfg)
    n_train = 1000 * 8 // 10 - 80  # MNIST-1D: 80% train, a tenth of it validation
    assert m["flops"]["train_total"] == pytest.approx(3 * train_fwd * n_train * cfg.epochs, rel=1e-12)
    assert m["flops"]["inference_per_sample"] == inference
    dense = dense_layer_flops(create_model("mlp", num_classes=10, input_shape=(1, 40)), (1, 40)).total
    result = evaluate_run(run, corruptions="none", ood=["none"], device="cpu")
    cost = result["cost"]
    assert cost["members"] == 3
    if method == "mcdropout":  # one dense training, three dense forwards, the dense parameters
        assert cost["train_flops_vs_dense"] == pytest.approx(1.0, rel=1e-12)
        assert cost["inference_flops_vs_dense"] == pytest.approx(3.0, rel=1e-12)
        assert cost["nonzero_params_vs_dense"] == 1.0
    elif method == "batchensemble":  # every member on every example: ~M dense, plus rank-1 products
        assert 3.0 < cost["train_flops_vs_dense"] < 3.1 and 3.0 < cost["inference_flops_vs_dense"] < 3.1
        assert cost["nonzero_params_vs_dense"] > 1.0  # + r, s and per-member biases
    else:  # MIMO, r = 2: twice the rows of one dense forward (wider first/last layers on top)
        assert cost["train_flops_vs_dense"] == pytest.approx(2 * inference / dense, rel=1e-12)
        # by hand: mlp 40 -> 256 -> 256 -> 10 against MIMO's 120 -> 256 -> 256 -> 30
        hand = (120 * 256 + 256 * 256 + 256 * 30) / (40 * 256 + 256 * 256 + 256 * 10)
        assert cost["inference_flops_vs_dense"] == pytest.approx(hand, rel=1e-12)
    assert len(result["members"]) == 3


def test_predict_and_report_include_the_new_methods(runs, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((4, 1, 40)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(runs["mimo"]), "--input", str(tmp_path / "x.npy"), "--device", "cpu"]) == 0
    pred = np.load(tmp_path / "x.pred.npz")
    expected = Ensemble.load(runs["mimo"]).predict_proba(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(pred["probs"], expected, rtol=1e-5, atol=1e-6)
    out = tmp_path / "report"
    assert main(["report", *(str(runs[m]) for m in FORMS), "--out", str(out), "--device", "cpu"]) == 0
    text = (out / "report.md").read_text()
    for label in ("MIMO", "BatchEnsemble", "MC dropout"):
        assert label in text


@pytest.mark.parametrize("argv, flag", [
    (["--method", "mimo", "--members", "1"], "--members"),
    (["--method", "batchensemble", "--members", "1"], "--members"),
    (["--method", "mcdropout", "--dropout-rate", "1.5"], "--dropout-rate"),
    (["--method", "mcdropout", "--dropout-rate", "0"], "--dropout-rate"),
    (["--method", "mimo", "--mimo-batch-repetitions", "0"], "--mimo-batch-repetitions"),
    (["--method", "mimo", "--mimo-input-repetition", "1.2"], "--mimo-input-repetition"),
    (["--method", "batchensemble", "--batchensemble-init", "zeros"], "--batchensemble-init"),
    (["--method", "mimo", "--member", "0"], "--member"),
    (["--method", "packed", "--packed-alpha", "0"], "--packed-alpha"),
    (["--method", "packed", "--packed-gamma", "0"], "--packed-gamma"),
    (["--method", "packed", "--packed-gamma", "3"], "--packed-gamma"),  # 10 classes do not split into 3
    (["--method", "packed", "--members", "1"], "--members"),
    (["--method", "masksembles", "--masksembles-scale", "0.5"], "--masksembles-scale"),
    (["--method", "masksembles", "--member", "0"], "--member"),
])
def test_bad_settings_are_one_line_and_exit_2(argv, flag, tmp_path, capsys):
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0], err
    assert not (tmp_path / "r").exists()


def _flops(capsys, *argv) -> str:
    capsys.readouterr()
    assert main(["flops", *argv]) == 0
    return capsys.readouterr().out


def _ratio(out: str, label: str) -> float:
    line = next(line for line in out.splitlines() if line.strip().startswith(label))
    return float(re.search(r"\(([\d.]+)x", line).group(1))


def test_flops_edst_cifar_takes_the_preset_schedule(capsys):
    """EDST of the paper on CIFAR-10 (preset: 150 + 3 x 100 epochs at S = 0.8, ERK, RigL updates
    every 1000 steps) against the 250-epoch dense recipe, by hand from per-layer densities."""
    out = _flops(capsys, "--model", "wrn-28-10", "--data", "cifar10", "--method", "edst")
    net = create_model("wrn-28-10", num_classes=10, input_shape=(3, 32, 32))
    lf = dense_layer_flops(net, (3, 32, 32))
    named = dict(sparsifiable_parameters(net))
    f_s = forward_flops(lf, layer_densities({n: tuple(p.shape) for n, p in named.items()}, 0.8, "erk"))
    per_epoch = math.ceil(45000 / 128)
    steps, updates = 450 * per_epoch, 450 * per_epoch // 1000
    edst = 128 * ((steps - updates) * 3 * f_s + updates * (2 * f_s + lf.total))
    dense = 128 * 250 * per_epoch * 3 * lf.total
    assert _ratio(out, "training FLOPs") == pytest.approx(round(edst / dense, 3), abs=1e-9)
    assert _ratio(out, "training FLOPs") == 0.612  # the number for the paper's recipe
    assert _ratio(out, "inference FLOPs") == pytest.approx(round(3 * f_s / lf.total, 3), abs=1e-9)
    assert "preset cifar10_wrn28x10_edst" in out
    # a flag given explicitly overrides the preset
    short = _flops(capsys, "--model", "wrn-28-10", "--data", "cifar10", "--method", "edst", "--epochs", "250",
                   "--explore-epochs", "100")
    assert _ratio(short, "training FLOPs") < 0.612


def test_flops_of_the_efficient_ensembles(capsys):
    net = create_model("cnn1d", num_classes=10, input_shape=(1, 40), width=128)
    dense = dense_layer_flops(net, (1, 40)).total
    out = _flops(capsys, "--model", "cnn1d", "--method", "mcdropout")
    assert _ratio(out, "training FLOPs") == 1.0 and _ratio(out, "inference FLOPs") == 3.0
    out = _flops(capsys, "--model", "cnn1d", "--method", "mimo", "--mimo-batch-repetitions", "4")
    assert 4.0 <= _ratio(out, "training FLOPs") < 4.2 and 1.0 <= _ratio(out, "inference FLOPs") < 1.05
    out = _flops(capsys, "--model", "cnn1d", "--method", "batchensemble", "--members", "4")
    assert 4.0 <= _ratio(out, "training FLOPs") < 4.1
    assert _number(out, "dense forward FLOPs / sample") == dense


def _number(text: str, label: str) -> float:
    line = next(line for line in text.splitlines() if line.strip().startswith(label))
    return float(re.search(r"[\d,.]+", line.split(label, 1)[1]).group().replace(",", ""))


@pytest.mark.parametrize("argv, flag", [
    (["--train-size", "-3"], "--train-size"),
    (["--update-interval", "0"], "--update-interval"),
    (["--sparsity", "1.5"], "--sparsity"),
    (["--method", "mimo", "--members", "1"], "--members"),
    (["--data", "svhn"], "--data"),
])
def test_flops_bad_flags_are_one_line(argv, flag, capsys):
    capsys.readouterr()
    assert main(["flops", "--model", "mlp", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0], err


def test_mimo_on_a_model_it_cannot_widen_is_one_line(tmp_path, monkeypatch, capsys):
    """A registry model whose first layer normalises its input (BatchNorm) cannot take M stacked
    inputs: refused before any directory or data is made."""
    from torch import nn

    from freetickets.models import registry

    monkeypatch.setattr(registry, "_FIXED", dict(registry._FIXED))

    @registry.register_model("bn-first", default_input_shape=(1, 40))
    def bn_first(num_classes, input_shape):
        return nn.Sequential(nn.BatchNorm1d(input_shape[0]), nn.Flatten(), nn.Linear(40, num_classes))

    capsys.readouterr()
    assert main(["train", "--method", "mimo", "--model", "bn-first", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model" in err[0] and "MIMO" in err[0], err
    assert not (tmp_path / "r").exists()
    # the same model trains as a plain dense model
    assert main(["train", "--method", "dense", "--model", "bn-first", "--epochs", "1", "--num-samples", "500",
                 "--out", str(tmp_path / "d"), "--device", "cpu"]) == 0
