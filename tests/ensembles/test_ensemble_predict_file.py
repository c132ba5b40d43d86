"""predict_file: .npy in, probabilities and uncertainty out (.npz or .csv)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from freetickets.ensembles.ensemble import Ensemble
from freetickets.ensembles.predict import predict_file
from freetickets.errors import UserError

from _ensemble_helpers import make_run as _make_run


@pytest.fixture
def run(tmp_path):
    return _make_run(tmp_path, members=2)[0]


def test_npz_default_path_matches_ensemble(run, tmp_path):
    x = np.random.default_rng(0).normal(size=(7, 1, 40)).astype(np.float32)
    np.save(tmp_path / "inputs.npy", x)
    out = predict_file(run, tmp_path / "inputs.npy", batch_size=3)
    assert out == tmp_path / "inputs.pred.npz"
    res = np.load(out, allow_pickle=False)
    assert set(res.files) == {"probs", "entropy", "mutual_information", "disagreement", "pred"}
    ens = Ensemble.load(run)
    ref = ens.predict_proba(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(res["probs"], ref, atol=1e-6)
    np.testing.assert_array_equal(res["pred"], ref.argmax(1))
    unc = ens.uncertainty(torch.from_numpy(x))
    for k in ("entropy", "mutual_information", "disagreement"):
        assert res[k].shape == (7,)
        np.testing.assert_allclose(res[k], unc[k].numpy(), atol=1e-6)


def test_csv_and_single_input(run, tmp_path):
    x = np.random.default_rng(1).normal(size=(1, 40)).astype(np.float64)  # one input, no batch dim
    np.save(tmp_path / "one.npy", x)
    out = predict_file(run, tmp_path / "one.npy", tmp_path / "sub" / "one.csv")
    lines = out.read_text().splitlines()
    header = lines[0].split(",")
    assert header == [f"prob_{c}" for c in range(10)] + ["pred", "entropy", "mutual_information", "disagreement"]
    assert len(lines) == 2
    row = [float(v) for v in lines[1].split(",")]
    assert abs(sum(row[:10]) - 1) < 1e-5 and int(row[10]) == int(np.argmax(row[:10]))


def test_shape_mismatch_names_expected_and_got(run, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((4, 2, 40), np.float32))
    with pytest.raises(UserError, match=r"expected \(N, 1, 40\).*got \(4, 2, 40\)"):
        predict_file(run, tmp_path / "bad.npy")


def test_object_array_and_bad_suffix_refused(run, tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(UserError, match="object arrays"):
        predict_file(run, tmp_path / "obj.npy")
    np.save(tmp_path / "ok.npy", np.zeros((2, 1, 40), np.float32))
    with pytest.raises(UserError, match="suffix"):
        predict_file(run, tmp_path / "ok.npy", tmp_path / "out.txt")
    with pytest.raises(UserError, match="not found"):
        predict_file(run, tmp_path / "missing.npy")


def test_manifest_normalization_is_applied(run, tmp_path):
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["normalization"] = {"mean": [0.5], "std": [2.0]}
    (run / "manifest.json").write_text(json.dumps(manifest))
    raw = np.random.default_rng(2).normal(size=(3, 1, 40)).astype(np.float32)
    np.save(tmp_path / "raw.npy", raw)
    res = np.load(predict_file(run, tmp_path / "raw.npy"))
    ref = Ensemble.load(run).predict_proba(torch.from_numpy((raw - 0.5) / 2.0)).numpy()
    np.testing.assert_allclose(res["probs"], ref, atol=1e-6)
