"""CIFAR-10 end to end on tiny files in the official layouts: `freetickets train` with WRN-16-2,
then `freetickets evaluate` with SVHN / CIFAR-100 OoD sets and a CIFAR-10-C folder; bad inputs
end in one line on stderr, exit status 2 and no run directory.

The official validation split is the last 5000 training images; to keep the files at a few
hundred images the test lowers that constant (``cifar.VAL_SIZE``) for its own process.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from freetickets.cli.main import main
from freetickets.data import cifar as cifar_mod

PER_BATCH = 40  # 5 batches: 200 images -> 150 train + 50 validation
N_TEST = 40


def _batch(n: int, label_key: bytes, num_classes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"batch", label_key: [int(v) for v in rng.integers(0, num_classes, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(n)]}


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, num_classes: int = 10) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(1, 6):
        _dump(_batch(PER_BATCH, b"labels", num_classes, i), d / f"data_batch_{i}")
    _dump(_batch(N_TEST, b"labels", num_classes, 0), d / "test_batch")
    return d


def write_ood(root: Path) -> None:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    _dump(_batch(20, b"fine_labels", 100, 7), d / "train")
    _dump(_batch(30, b"fine_labels", 100, 8), d / "test")
    rng = np.random.default_rng(0)
    scipy.io.savemat(root / "test_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, 25), dtype=np.uint8),
                                               "y": rng.integers(1, 11, (25, 1)).astype(np.uint8)})


def write_cifar10_c(root: Path, n: int = 8) -> Path:
    d = root / "CIFAR-10-C"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for t in ("fog", "gaussian_noise"):
        np.save(d / f"{t}.npy", rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8))
    np.save(d / "labels.npy", np.tile(np.arange(n) % 10, 5).astype(np.uint8))
    return d


@pytest.fixture(autouse=True)
def _small_validation(monkeypatch):
    monkeypatch.setattr(cifar_mod, "VAL_SIZE", 50)


TRAIN = ["train", "--method", "dst", "--data", "cifar10", "--model", "wrn-16-2", "--epochs", "1", "--members", "1",
         "--batch-size", "25", "--update-interval", "2", "--device", "cpu", "--set", "eval_batch_size=50"]


def test_train_and_evaluate_cifar10(tmp_path, capsys):
    data = tmp_path / "data"
    write_cifar10(data)
    write_ood(data)
    corr = write_cifar10_c(tmp_path / "c")
    run = tmp_path / "run"
    assert main(TRAIN + ["--data-dir", str(data), "--out", str(run)]) == 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["data"] == "cifar10" and manifest["model"] == "wrn-16-2"
    assert manifest["num_classes"] == 10 and manifest["input_shape"] == [3, 32, 32]
    assert manifest["tickets"][0]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6  # 150 training images / batch 25
    capsys.readouterr()

    assert main(["evaluate", str(run), "--data-dir", str(data), "--ood", "svhn", "cifar100",
                 "--corruptions", str(corr), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    ens = result["ensemble"]
    assert 0.0 <= ens["accuracy"] <= 1.0 and ens["nll"] > 0
    assert set(ens["ood"]) == {"svhn", "cifar100"}
    assert 0.0 <= ens["ood"]["svhn"]["auroc"] <= 1.0
    assert len(ens["corrupted"]["by_severity"]) == 5
    assert result["cost"]["members"] == 1 and result["cost"]["sparsity"] == pytest.approx(0.8, abs=1e-2)

    # `--ood none` skips OoD detection: works without the SVHN / CIFAR-100 files
    bare = tmp_path / "bare"
    write_cifar10(bare)
    assert main(["evaluate", str(run), "--data-dir", str(bare), "--ood", "none", "--corruptions", "none",
                 "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ensemble"]["ood"] == {} and 0.0 <= result["ensemble"]["accuracy"] <= 1.0
    # without `--ood`, the default sets are required and their absence is one clear line
    assert main(["evaluate", str(run), "--data-dir", str(bare), "--corruptions", "none", "--device", "cpu"]) == 2
    assert "test_32x32.mat" in capsys.readouterr().err


def _one_line_failure(capsys, argv, run: Path) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("freetickets: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err  # (log lines such as warnings may precede it)
    assert not run.exists()  # nothing half-written
    return errors[0]


def test_bad_cifar_inputs_fail_cleanly(tmp_path, capsys):
    run = tmp_path / "run"
    # wrong layout: an empty directory
    (tmp_path / "empty").mkdir()
    line = _one_line_failure(capsys, TRAIN + ["--data-dir", str(tmp_path / "empty"), "--out", str(run)], run)
    assert "cifar-10-batches-py" in line
    # a corrupt batch file
    bad = tmp_path / "corrupt"
    d = write_cifar10(bad)
    (d / "data_batch_3").write_bytes(b"\x80\x02}q\x00(garbage")
    line = _one_line_failure(capsys, TRAIN + ["--data-dir", str(bad), "--out", str(run)], run)
    assert "data_batch_3" in line
    # labels of 100 classes in a CIFAR-10 layout: not CIFAR-10
    wrong = tmp_path / "hundred"
    write_cifar10(wrong, num_classes=100)
    line = _one_line_failure(capsys, TRAIN + ["--data-dir", str(wrong), "--out", str(run)], run)
    assert "labels outside 0..9" in line
    # a model head that does not match the data's 10 classes
    good = tmp_path / "good"
    write_cifar10(good)
    line = _one_line_failure(capsys, TRAIN + ["--data-dir", str(good), "--out", str(run),
                                              "--set", "model_kwargs={num_classes: 100}"], run)
    assert "num_classes" in line


def test_evaluate_with_bad_corruption_folder(tmp_path, capsys):
    data = tmp_path / "data"
    write_cifar10(data)
    write_ood(data)
    run = tmp_path / "run"
    assert main(TRAIN + ["--data-dir", str(data), "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data-dir", str(data), "--ood", "svhn", "--corruptions", str(tmp_path / "nowhere"),
                 "--json", "--device", "cpu"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("freetickets: error:")]
    assert len(errors) == 1 and "CIFAR-10-C" in errors[0]


@pytest.mark.parametrize("method", ["mimo", "batchensemble", "mcdropout", "snapshot"])
def test_efficient_ensembles_on_cifar_files(method, tmp_path, capsys):
    """Each efficient ensemble trains WRN-16-2 on the CIFAR-10 files and evaluates as 2 members."""
    data = tmp_path / "data"
    write_cifar10(data)
    run = tmp_path / "run"
    argv = ["train", "--method", method, "--data", "cifar10", "--model", "wrn-16-2", "--epochs", "2",
            "--members", "2", "--batch-size", "25", "--device", "cpu", "--set", "eval_batch_size=50",
            "--data-dir", str(data), "--out", str(run)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data-dir", str(data), "--ood", "none", "--corruptions", "none",
                 "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cost"]["members"] == 2 and len(result["members"]) == 2
    assert 0.0 <= result["ensemble"]["accuracy"] <= 1.0


def test_report_on_cifar_runs(tmp_path, capsys):
    """`report` on CIFAR runs: no built-in corruption sets (CIFAR-C is a folder for `evaluate`),
    so the report evaluates without them instead of stopping."""
    data = tmp_path / "data"
    write_cifar10(data)
    write_ood(data)
    run = tmp_path / "run"
    assert main(TRAIN + ["--data-dir", str(data), "--out", str(run)]) == 0
    out = tmp_path / "report"
    assert main(["report", str(run), "--out", str(out), "--device", "cpu"]) == 0  # data dir from the run's config
    results = json.loads((out / "results.json").read_text())
    assert "corrupted" not in results["methods"]["dst"]["ensemble"]
    assert set(results["methods"]["dst"]["ensemble"]["ood"]) == {"svhn", "cifar100"}
