"""EDST (docs/algorithms.md): one run, exploration then M refinement phases, M-1 jumps, one ticket per phase."""
from __future__ import annotations

import itertools

import pytest
import torch

from freetickets.ensembles.tickets import load_ticket
from freetickets.train.config import TrainConfig
from freetickets.methods.edst import edst_plan

M = 3
EXPLORE = 1
REFINE = 2  # epochs per refinement phase


def phase_epochs(m: int) -> range:
    """The epochs of refinement phase m, 1-based as in the manifest and metrics.jsonl."""
    start = EXPLORE + m * REFINE + 1
    return range(start, start + REFINE)


def test_lr_of_every_epoch(edst_run):
    """Exploration at lr; each refinement phase lr x 0.1 for its first half, lr x 0.01 after."""
    lr = edst_run.cfg.lr
    rows = edst_run.metrics
    assert [r["epoch"] for r in rows] == list(range(1, EXPLORE + M * REFINE + 1))  # 1-based
    expected = [("explore", 0, lr)]
    for m in range(M):
        expected += [("refine", m, lr * 0.1), ("refine", m, lr * 0.01)]
    got = [(r["phase"], r["phase_index"], r["lr"]) for r in rows]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert [g[2] for g in got] == pytest.approx([e[2] for e in expected], rel=1e-12)


def test_plan_gives_leftover_epochs_to_the_last_phase():
    """With 1 + 8 epochs and M = 3: phases of 2, 2 and 4 epochs; halves split at the midpoint."""
    cfg = TrainConfig(method="edst", epochs=9, explore_epochs=1, members=3, lr=0.1)
    plan = edst_plan(cfg)
    assert [(s.phase, s.phase_index) for s in plan] == [("explore", 0)] + [("refine", 0)] * 2 + [
        ("refine", 1)] * 2 + [("refine", 2)] * 4
    assert [s.lr for s in plan] == pytest.approx([0.1, 0.01, 0.001, 0.01, 0.001, 0.01, 0.01, 0.001, 0.001])
    assert [s.epoch for s in plan if s.phase_end] == [0, 2, 4, 8]


def test_m_minus_one_jumps_between_refinement_phases(edst_run):
    jumps = edst_run.recorded["jumps"]
    assert len(jumps) == M - 1
    steps_per_epoch = edst_run.metrics[0]["step"]
    for m, jump in enumerate(jumps):
        assert jump["fraction"] == pytest.approx(edst_run.cfg.jump_fraction)
        # after the last step of refinement phase m, i.e. before phase m + 1
        assert jump["step"] == steps_per_epoch * (EXPLORE + (m + 1) * REFINE)
        # the jump moves weights but keeps every layer's active count
        assert any(not torch.equal(jump["before"][k], jump["after"][k]) for k in jump["before"])
        for k in jump["before"]:
            assert int(jump["before"][k].sum()) == int(jump["after"][k].sum())


def test_one_ticket_per_refinement_phase(edst_run):
    tickets = edst_run.manifest["tickets"]
    assert edst_run.manifest["status"] == "complete"
    assert edst_run.manifest["members"] == M
    assert edst_run.manifest["seeds"] == [edst_run.cfg.seed]  # one run, one seed
    assert [t["phase_index"] for t in tickets] == list(range(M))
    assert [t["member"] for t in tickets] == list(range(M))
    assert all(t["phase"] == "refine" for t in tickets)
    for m, t in enumerate(tickets):
        meta = load_ticket(edst_run.root / t["file"]).meta
        assert (meta["phase"], meta["phase_index"], meta["member"]) == ("refine", m, m)
        assert t["epoch"] in phase_epochs(m), "ticket m must come from refinement phase m"


def test_exploration_saves_no_ticket(edst_run):
    assert edst_run.recorded["saves"], "tickets were saved"
    assert all(meta["phase"] == "refine" for meta in edst_run.recorded["saves"])
    explore = [r for r in edst_run.metrics if r["phase"] == "explore"]
    assert explore and not any(r["best"] for r in explore)
    assert sorted(p.name for p in (edst_run.root / "tickets").iterdir()) == [f"member_{m}.pt" for m in range(M)]


def test_tickets_are_different_subnetworks(edst_run):
    masks = [load_ticket(edst_run.root / t["file"]).masks for t in edst_run.manifest["tickets"]]
    for a, b in itertools.combinations(range(M), 2):
        hamming = sum(int((masks[a][k] ^ masks[b][k]).sum()) for k in masks[a])
        assert hamming > 0, f"tickets {a} and {b} have identical masks"
    total = sum(m.numel() for m in masks[0].values())
    for mk in masks:  # every ticket keeps the target sparsity exactly
        active = sum(int(m.sum()) for m in mk.values())
        assert 1 - active / total == pytest.approx(edst_run.cfg.sparsity, abs=1.0 / total * len(mk))


def test_dst_updates_continue_in_refinement(edst_run):
    """The explored fraction (ever-active share) keeps growing inside the refinement phases."""
    explored = [r["explored_fraction"] for r in edst_run.metrics]
    assert all(b >= a for a, b in zip(explored, explored[1:]))
    assert explored[-1] > explored[EXPLORE]
    assert all(r["sparsity"] == pytest.approx(edst_run.cfg.sparsity, abs=1e-3) for r in edst_run.metrics)
