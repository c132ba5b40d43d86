"""Runs that used to end with exit 0 and a wrong answer (issue 18): MNIST-1D predict on the raw
layouts, tickets at chance level flagged, PF from barely trained parents keeping every layer."""
from __future__ import annotations

import json

import numpy as np
import torch

from freetickets.cli.main import main
from freetickets.ensembles.ensemble import Ensemble
from freetickets.ensembles.tickets import load_ticket
from freetickets.sparse.params import sparsifiable_parameters
from freetickets.train.rundir import chance_threshold

from _train_helpers import read_manifest

SMALL = ["--data", "mnist1d", "--model", "cnn1d", "--num-samples", "1000", "--batch-size", "64", "--device", "cpu",
         "--set", "model_kwargs={width: 16}"]


def test_mnist1d_predict_on_raw_layouts_equals_the_python_path(tmp_path, tiny_data, capsys):
    run = tmp_path / "run"
    assert main(["train", "--method", "dst", "--members", "1", "--epochs", "1", "--update-interval", "5", *SMALL,
                 "--out", str(run)]) == 0
    assert read_manifest(run)["normalization"] == {"mean": [0.0], "std": [1.0], "scale": 1.0, "raw_dtype": "float32"}
    ens = Ensemble.load(run)
    raw = tiny_data.test.x.numpy()  # (200, 1, 40) float32, as the package generates it
    expected = ens.predict_proba(tiny_data.normalize(tiny_data.test.x)).numpy()
    for name, arr in (("n140", raw), ("n40", raw[:, 0, :])):
        np.save(tmp_path / f"{name}.npy", arr)
        assert main(["predict", str(run), "--input", str(tmp_path / f"{name}.npy"), "--device", "cpu"]) == 0
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.pred.npz")["probs"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ens.predict_proba(ens.preprocess(raw[:, 0, :])).numpy(), expected, rtol=1e-5, atol=1e-6)
    bad = raw.copy()
    bad[[0, 5, 9], 0, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(tmp_path / "nan.npy"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 of 200 rows hold NaN or infinite values" in err[0]


def test_chance_tickets_flagged_and_pf_keeps_every_layer(tmp_path, capsys):
    """Parents trained one epoch at lr 1e-6 (as good as untrained): their tickets are at chance
    and flagged; one global magnitude threshold over them would empty ``classifier.weight``
    (its weights are small by initialisation), and PF keeps at least one weight per output unit."""
    deep, pf = tmp_path / "deep", tmp_path / "pf"
    capsys.readouterr()
    assert main(["train", "--method", "deep", "--members", "2", "--epochs", "1", "--lr", "1e-6", *SMALL,
                 "--out", str(deep)]) == 0
    out = capsys.readouterr().out
    m = read_manifest(deep)
    threshold = chance_threshold(10, 80)  # 80 validation samples of 1000
    assert m["chance_level"] == {"accuracy": 0.1, "threshold": threshold, "val_size": 80, "tickets": [0, 1]}
    assert all(t["at_chance"] and t["val_accuracy"] <= threshold for t in m["tickets"])
    assert out.count("AT CHANCE LEVEL") == 2 and "warning: 2 ticket(s) at chance level" in out

    parent = load_ticket(deep / m["tickets"][0]["file"]).state_dict
    named = [(n, parent[n]) for n, _ in sparsifiable_parameters(Ensemble.load(deep).models[0])]
    scores = torch.cat([w.abs().flatten() for _, w in named])
    cut = scores.topk(round(0.2 * scores.numel())).values[-1]  # sparsity 0.8 by one threshold
    assert int((parent["classifier.weight"].abs() >= cut).sum()) == 0  # the old PF emptied it

    assert main(["train", "--method", "pf", "--from", str(deep), "--members", "2", "--pf-epochs", "1", *SMALL,
                 "--out", str(pf)]) == 0
    for t in read_manifest(pf)["tickets"]:
        assert abs(t["sparsity"] - 0.8) < 1e-3
        masks = load_ticket(pf / t["file"]).masks
        for name, mask in masks.items():
            assert mask.reshape(mask.shape[0], -1).any(dim=1).all(), f"{name}: an output unit lost every weight"
        assert t["densities"]["classifier.weight"] > 0
    assert json.loads((pf / "manifest.json").read_text())["status"] == "complete"
