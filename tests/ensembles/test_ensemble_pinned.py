"""``predict``'s CSV: one row per input, in input order, across batch boundaries, each row the
ensemble's mean probability, its argmax and the three uncertainty columns of that input.

The expected values are computed here from the member networks themselves (softmax of each
member, mean over members, entropy in nats, ...), not through the package's own helpers.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from freetickets.ensembles.predict import predict_file

from _ensemble_helpers import make_run


def _expected_rows(models, x: np.ndarray) -> list[list[float]]:
    with torch.no_grad():
        member = torch.stack([torch.softmax(m(torch.from_numpy(x)).double(), dim=1) for m in models])  # (M, N, C)
    rows = []
    for i in range(x.shape[0]):
        p = member[:, i]  # (M, C)
        mean = p.mean(dim=0)
        pred = int(mean.argmax())
        h = -sum(float(v) * math.log(float(v)) for v in mean if v > 0)
        h_members = [-sum(float(v) * math.log(float(v)) for v in row if v > 0) for row in p]
        mi = max(h - sum(h_members) / len(h_members), 0.0)
        disagree = sum(int(row.argmax()) != pred for row in p) / p.shape[0]
        rows.append([*mean.tolist(), pred, h, mi, disagree])
    return rows


@pytest.mark.parametrize("batch_size", [1, 2, 5, 64])
def test_csv_rows_are_the_inputs_in_order(tmp_path, batch_size):
    run, models = make_run(tmp_path, members=3)
    x = np.random.default_rng(3).normal(size=(5, 1, 40)).astype(np.float32) * 3
    np.save(tmp_path / "x.npy", x)
    out = predict_file(run, tmp_path / "x.npy", tmp_path / "x.csv", batch_size=batch_size)
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join([f"prob_{c}" for c in range(10)] + ["pred", "entropy", "mutual_information",
                                                                     "disagreement"])
    assert len(lines) == 1 + 5
    expected = _expected_rows(models, x)
    for line, want in zip(lines[1:], expected):
        cells = line.split(",")
        assert len(cells) == 14
        got = [float(c) for c in cells]
        assert got[:10] == pytest.approx(want[:10], abs=1e-6)
        assert cells[10] == str(want[10])  # the class index, written as an integer
        assert got[11:] == pytest.approx(want[11:], abs=1e-5)


def test_csv_and_npz_hold_the_same_rows(tmp_path):
    run, _ = make_run(tmp_path, members=3)
    x = np.random.default_rng(4).normal(size=(4, 1, 40)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    csv = predict_file(run, tmp_path / "x.npy", tmp_path / "x.csv", batch_size=3)
    npz = np.load(predict_file(run, tmp_path / "x.npy", tmp_path / "x.npz", batch_size=3))
    rows = [line.split(",") for line in csv.read_text().splitlines()[1:]]
    for i, cells in enumerate(rows):
        # float32 values are written with repr(float(v)), which reads back exactly
        assert np.array_equal(np.array([float(c) for c in cells[:10]], dtype=np.float32), npz["probs"][i])
        assert int(cells[10]) == int(npz["pred"][i])
        for j, key in enumerate(("entropy", "mutual_information", "disagreement")):
            assert np.float32(float(cells[11 + j])) == npz[key][i]


def test_disagreement_column_takes_thirds_with_three_members(tmp_path):
    """With three members the per-input disagreement is one of 0, 1/3, 2/3, 1 (1 when the mean's
    top class is no member's top class)."""
    run, models = make_run(tmp_path, members=3)
    x = np.random.default_rng(5).normal(size=(30, 1, 40)).astype(np.float32) * 5
    np.save(tmp_path / "x.npy", x)
    npz = np.load(predict_file(run, tmp_path / "x.npy", tmp_path / "x.npz"))
    d = npz["disagreement"]
    assert set(np.round(d * 3).astype(int).tolist()) <= {0, 1, 2, 3}
    want = [r[13] for r in _expected_rows(models, x)]
    assert d.tolist() == pytest.approx(want, abs=1e-6)
