"""Pinned messages of :func:`freetickets.ensembles.predict.load_inputs` for files numpy cannot
read as a plain array: object arrays and pickled files are refused as such (never unpickled),
any other unreadable file is named with numpy's reason."""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from freetickets.ensembles.predict import load_inputs, predict_file
from freetickets.errors import UserError


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([1, "a"], dtype=object))
    with pytest.raises(UserError, match="^" + re.escape(f"{path}: object arrays are not accepted; save a numeric "
                                                        "array") + "$"):
        load_inputs(path)


def test_a_pickle_is_refused_like_an_object_array(tmp_path):
    path = tmp_path / "data.npy"
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(UserError, match="object arrays are not accepted"):
        load_inputs(path)


def test_a_broken_header_names_numpys_reason(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.arange(3.0))
    bad = tmp_path / "bad.npy"
    bad.write_bytes(good.read_bytes().replace(b"'descr': '<f8'", b"'descr': 'zz'"))
    with pytest.raises(UserError, match="^" + re.escape(f"{bad}: not a readable .npy array (Cannot parse header")):
        load_inputs(bad)


def test_missing_empty_and_archive_files(tmp_path):
    missing = tmp_path / "none.npy"
    with pytest.raises(UserError, match="^" + re.escape(f"{missing}: input file not found") + "$"):
        load_inputs(missing)
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="^" + re.escape(f"{empty}: not a readable .npy array (")):
        load_inputs(empty)
    archive = tmp_path / "two.npy"
    with open(archive, "wb") as f:
        np.savez(f, a=np.zeros(2))
    with pytest.raises(UserError, match="^" + re.escape(f"{archive}: expected a single .npy array, got an archive")
                       + "$"):
        load_inputs(archive)


def test_bools_become_uint8_and_non_real_dtypes_are_refused(tmp_path):
    path = tmp_path / "b.npy"
    np.save(path, np.array([[True, False]]))
    arr = load_inputs(path)
    assert arr.dtype == np.uint8 and arr.tolist() == [[1, 0]]
    for bad, name in ((np.array(["a", "b"]), "<U1"), (np.array([1 + 2j]), "complex128")):
        np.save(path, bad)
        with pytest.raises(UserError, match="^" + re.escape(f"{path}: expected a real numeric array, got dtype {name}")
                           + "$"):
            load_inputs(path)


def test_other_byte_orders_are_read_in_native_order_keeping_the_dtype(tmp_path):
    path = tmp_path / "big.npy"
    values = np.array([1.5, -2.0, 3.25], dtype=">f4" if np.little_endian else "<f4")
    np.save(path, values)
    arr = load_inputs(path)
    assert arr.dtype == np.float32 and arr.dtype.byteorder in ("=", "|")
    assert arr.tolist() == [1.5, -2.0, 3.25]


def test_batch_size_must_be_a_positive_int(tmp_path):
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="^" + re.escape(f"batch_size: expected a positive int, got {bad!r}")
                           + "$"):
            predict_file(tmp_path, tmp_path / "x.npy", batch_size=bad)


def test_normalized_inputs_skip_the_runs_normalisation_and_errors_name_the_file(tmp_path):
    import json

    import torch

    from freetickets.ensembles.ensemble import Ensemble

    from _ensemble_helpers import make_run

    run, _ = make_run(tmp_path, members=2)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["normalization"] = {"mean": [0.5], "std": [2.0]}
    (run / "manifest.json").write_text(json.dumps(manifest))
    x = np.random.default_rng(3).normal(size=(3, 1, 40)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = np.load(predict_file(run, tmp_path / "x.npy", normalized=True))
    ref = Ensemble.load(run).predict_proba(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(res["probs"], ref, atol=1e-6)
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 40), np.float32))
    with pytest.raises(UserError, match="^" + re.escape(f"{tmp_path / 'bad.npy'}: input shape mismatch")):
        predict_file(run, tmp_path / "bad.npy")


def test_an_unfinished_run_needs_partial(tmp_path):
    from _ensemble_helpers import make_run

    run, _ = make_run(tmp_path, status="running", members=2)
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 40), np.float32))
    with pytest.raises(UserError):
        predict_file(run, tmp_path / "x.npy")
    assert predict_file(run, tmp_path / "x.npy", partial=True).is_file()


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_an_empty_input_file_gives_empty_outputs_of_the_right_shapes(tmp_path, suffix):
    from _ensemble_helpers import make_run

    run, _ = make_run(tmp_path, members=2)
    np.save(tmp_path / "none.npy", np.zeros((0, 1, 40), np.float32))
    out = predict_file(run, tmp_path / "none.npy", tmp_path / f"none{suffix}")
    if suffix == ".csv":
        assert out.read_text().splitlines() == [",".join([f"prob_{c}" for c in range(10)] + [
            "pred", "entropy", "mutual_information", "disagreement"])]
        return
    res = np.load(out)
    assert res["probs"].shape == (0, 10) and res["probs"].dtype == np.float32
    assert res["pred"].shape == (0,) and res["pred"].dtype == np.int64
    for k in ("entropy", "mutual_information", "disagreement"):
        assert res[k].shape == (0,) and res[k].dtype == np.float32


def test_predictions_are_int64_class_indices(tmp_path):
    from _ensemble_helpers import make_run

    run, _ = make_run(tmp_path, members=2)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(4, 1, 40)).astype(np.float32))
    res = np.load(predict_file(run, tmp_path / "x.npy"))
    assert res["pred"].dtype == np.int64 and res["probs"].dtype == np.float32
    assert res["pred"].tolist() == res["probs"].argmax(axis=1).tolist()
