"""Function-space trajectories (issue 9 item 5): the probe file's shape and round trip, the probe
fixed by the data, determinism, resume (bitwise tickets, no duplicated rows), EDST phases, and
evaluation/report of runs with and without trajectories."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from freetickets.data import load_data
from freetickets.ensembles.tickets import load_ticket, ticket_to_model
from freetickets.evaluation import report_runs
from freetickets.models import create_model
from freetickets.train import train
from freetickets.train.trajectories import (PROBE_SIZE, load_trajectories, probe_indices, trajectory_array)

from _reliability_helpers import BASE, assert_same_tickets, config, run_interrupted

_RUNS: dict[str, object] = {}


def _run(name, tmp_path_factory, method, **extra):
    if name not in _RUNS:
        out = tmp_path_factory.mktemp(name)
        train(config(method, **extra), out)
        _RUNS[name] = out
    return _RUNS[name]


def _files(out):
    return {p.name: p.read_bytes() for p in sorted((out / "trajectories").glob("*.npz"))}


def test_probe_indices_fixed_by_data():
    assert probe_indices(80).tolist() == list(range(80))
    idx = probe_indices(1000)
    assert len(idx) == PROBE_SIZE and idx[0] == 0 and idx[-1] < 1000
    assert torch.equal(idx, probe_indices(1000)) and len(set(idx.tolist())) == PROBE_SIZE
    assert probe_indices(0).numel() == 0


def test_deep_round_trip_shape_and_ticket_row(tmp_path_factory):
    out = _run("traj-deep", tmp_path_factory, "deep")
    arr = trajectory_array(out)
    data = load_data("mnist1d", None, num_samples=BASE["num_samples"], seed=0, device="cpu")
    n_val = data.val.x.shape[0]
    assert arr.shape == (2, 2, min(PROBE_SIZE, n_val), data.num_classes)  # (epochs, members, probes, classes)
    assert arr.dtype == np.float32
    np.testing.assert_allclose(arr.sum(-1), 1.0, atol=5e-3)  # float16 probabilities
    jobs = load_trajectories(out)
    assert [j["member"] for j in jobs] == [0, 1] and all(j["epoch"].tolist() == [1, 2] for j in jobs)
    # the row of a ticket's epoch is the ticket's own prediction on the probe (float16)
    import json
    manifest = json.loads((out / "manifest.json").read_text())
    t = manifest["tickets"][1]
    model = create_model(manifest["model"], num_classes=data.num_classes, input_shape=tuple(data.input_shape),
                         **(manifest.get("model_kwargs") or {}))
    ticket_to_model(load_ticket(out / t["file"]), model)
    model.eval()
    with torch.no_grad():
        x = data.normalize(data.val.x[probe_indices(n_val)]) if data.normalize else data.val.x[probe_indices(n_val)]
        expected = torch.softmax(model(x).float(), 1).numpy().astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(arr[t["epoch"] - 1, 1], expected)


def test_deterministic_for_a_fixed_seed(tmp_path, tmp_path_factory):
    ref = _run("traj-deep", tmp_path_factory, "deep")
    train(config("deep"), tmp_path / "again")
    assert _files(tmp_path / "again") == _files(ref)


def test_resume_keeps_tickets_bitwise_and_rows_unique(tmp_path, tmp_path_factory, monkeypatch):
    ref = _run("traj-edst", tmp_path_factory, "edst")
    out = tmp_path / "run"
    # 12 steps per epoch: crash inside the exploration epoch and inside the second refinement
    # phase, with step checkpoints (epochs are re-run after the last checkpoint)
    assert run_interrupted(config("edst", checkpoint_every_steps=5), out, monkeypatch, [7, 20]) == 2
    assert_same_tickets(ref, out)
    jobs = load_trajectories(out)
    assert len(jobs) == 1 and jobs[0]["epoch"].tolist() == [1, 2, 3, 4]  # no duplicated rows
    ref_jobs = load_trajectories(ref)
    np.testing.assert_array_equal(jobs[0]["probs"], ref_jobs[0]["probs"])


def test_edst_phases_recorded(tmp_path_factory):
    out = _run("traj-edst", tmp_path_factory, "edst")
    (job,) = load_trajectories(out)
    assert job["tickets"] == "phase" and job["kind"] != "parent"
    assert job["phase"].tolist() == ["explore", "refine", "refine", "refine"]
    assert job["phase_index"][1:].tolist() == [0, 1, 2]
    assert trajectory_array(out).shape[:2] == (4, 1)


def test_report_draws_tsne_and_old_runs_still_report(tmp_path, tmp_path_factory):
    deep = _run("traj-deep", tmp_path_factory, "deep")
    edst = _run("traj-edst", tmp_path_factory, "edst")
    report = report_runs([deep, edst], tmp_path / "rep", device="cpu").read_text()
    assert (tmp_path / "rep" / "tsne_trajectories.png").stat().st_size > 1000
    assert "tsne_trajectories.png" in report
    old = tmp_path / "old"
    shutil.copytree(deep, old)
    shutil.rmtree(old / "trajectories")  # a run directory from before trajectories were recorded
    with pytest.raises(ValueError):
        trajectory_array(old)
    assert load_trajectories(old) == []
    report = report_runs([old], tmp_path / "rep-old", device="cpu").read_text()
    assert "tsne_trajectories.png" not in report and not (tmp_path / "rep-old" / "tsne_trajectories.png").exists()


def test_tsne_embedding_deterministic(tmp_path_factory):
    from freetickets.report.analysis_plots import _ticket_rows, tsne_embedding

    out = _run("traj-edst", tmp_path_factory, "edst")
    jobs = load_trajectories(out)
    a, b = tsne_embedding(jobs), tsne_embedding(jobs)
    assert a.shape == (4, 2) and np.array_equal(a, b)
    import json
    tickets = json.loads((out / "manifest.json").read_text())["tickets"]
    # 1 exploration epoch, then one epoch per refinement phase: ticket k sits at row k + 1
    assert [(row, member) for _, row, member in _ticket_rows(jobs, tickets)] == [(1, 0), (2, 1), (3, 2)]


def test_a_network_of_m_members_records_its_mean_probability(tmp_path):
    """MIMO (one network, M heads): each epoch's row is the mean of the members' probabilities."""
    import numpy as np

    from freetickets.train import train
    from freetickets.train.config import resolve
    from freetickets.train.trajectories import load_trajectories

    cfg = resolve(None, {"method": "mimo", "model": "mlp", "num_samples": 1000, "epochs": 2, "members": 2,
                         "batch_size": 64, "device": "cpu"})
    train(cfg, tmp_path / "run")
    (job,) = load_trajectories(tmp_path / "run")
    assert job["probs"].shape[0] == 2 and job["probs"].shape[2] == 10
    np.testing.assert_allclose(job["probs"].astype(np.float64).sum(-1), 1.0, atol=3e-3)
