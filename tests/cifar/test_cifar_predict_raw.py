"""train -> `freetickets predict` on raw CIFAR-format uint8 images (CHW and HWC) gives the same
probabilities as the Python path on the data set's normalised images; `--normalized` takes
normalised inputs; NaN rows and already-normalised inputs without the flag are refused in one line.
"""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from freetickets.cli.main import main
from freetickets.data import cifar as cifar_mod
from freetickets.data import load_data
from freetickets.ensembles.ensemble import Ensemble

from test_cifar_end_to_end import N_TEST, write_cifar10

TRAIN = ["train", "--method", "dst", "--data", "cifar10", "--model", "lenet5", "--epochs", "1", "--members", "1",
         "--batch-size", "25", "--update-interval", "2", "--device", "cpu", "--set", "eval_batch_size=50"]


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(cifar_mod, "VAL_SIZE", 50)
    root = tmp_path_factory.mktemp("cifar_predict")
    data_dir = root / "data"
    batches = write_cifar10(data_dir)
    assert main([*TRAIN, "--data-dir", str(data_dir), "--out", str(root / "run")]) == 0
    with open(batches / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"].reshape(-1, 3, 32, 32)  # uint8 as stored
    data = load_data("cifar10", data_dir, device="cpu")
    yield root, root / "run", raw, data
    mp.undo()


def _predict(args, capsys):
    capsys.readouterr()
    code = main(["predict", *map(str, args), "--device", "cpu"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_manifest_records_the_cifar_normalisation(cifar_run):
    _, run, _, _ = cifar_run
    norm = json.loads((run / "manifest.json").read_text())["normalization"]
    mean, std = cifar_mod.CIFAR_STATS["cifar10"]
    assert norm == {"mean": list(mean), "std": list(std), "scale": 255.0, "raw_dtype": "uint8"}


def test_predict_on_raw_uint8_equals_predict_proba_on_normalised(cifar_run, capsys):
    root, run, raw, data = cifar_run
    assert raw.dtype == np.uint8 and raw.shape == (N_TEST, 3, 32, 32)
    assert torch.equal(data.test.x, torch.from_numpy(raw))  # the test split is these images
    ens = Ensemble.load(run)
    expected = ens.predict_proba(data.normalize(data.test.x)).numpy()
    unnormalised = ens.predict_proba(torch.from_numpy(raw).float()).numpy()  # the old bug's numbers
    assert np.abs(unnormalised - expected).max() > 1e-2
    for name, arr in (("chw", raw), ("hwc", raw.transpose(0, 2, 3, 1).copy())):
        np.save(root / f"{name}.npy", arr)
        code, err = _predict([run, "--input", root / f"{name}.npy"], capsys)
        assert code == 0, err
        got = np.load(root / f"{name}.pred.npz")["probs"]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)
    # the Python API in one call, from the raw images
    np.testing.assert_allclose(ens.predict_proba(ens.preprocess(raw)).numpy(), expected, rtol=1e-5, atol=1e-6)
    # --normalized: the inputs are used as they are
    np.save(root / "norm.npy", data.normalize(data.test.x).numpy())
    code, err = _predict([run, "--input", root / "norm.npy", "--normalized"], capsys)
    assert code == 0, err
    np.testing.assert_allclose(np.load(root / "norm.pred.npz")["probs"], expected, rtol=1e-5, atol=1e-6)


def test_normalised_inputs_without_the_flag_are_refused(cifar_run, capsys):
    root, run, _, data = cifar_run
    np.save(root / "norm2.npy", data.normalize(data.test.x).numpy())
    code, err = _predict([run, "--input", root / "norm2.npy"], capsys)
    assert code == 2 and len(err) == 1 and "raw uint8" in err[0] and "--normalized" in err[0]
    assert not (root / "norm2.pred.npz").exists()


def test_nan_rows_are_refused_with_their_count(cifar_run, capsys):
    root, run, _, data = cifar_run
    x = data.normalize(data.test.x).numpy()
    x[3, 0, 5, 5] = np.nan
    x[7, 2, 0, 0] = np.inf
    np.save(root / "nan.npy", x)
    code, err = _predict([run, "--input", root / "nan.npy", "--normalized"], capsys)
    assert code == 2 and len(err) == 1
    assert f"2 of {N_TEST} rows hold NaN or infinite values" in err[0]
    assert not (root / "nan.pred.npz").exists()
