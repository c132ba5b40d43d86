"""Exact resume, in-process: a run that crashes at a chosen step (an exception from a forward hook)
and is resumed from its last checkpoint ends with tickets bitwise identical to an uninterrupted
run, for every method and at every kind of boundary (inside an epoch, between DST members, right
after an EDST jump, in a PF parent or fine-tuning job)."""
from __future__ import annotations

import random

import pytest

from freetickets.sparse import SparseEngine
from freetickets.train import train

from _reliability_helpers import (METHODS, Interrupt, StepCounter, assert_same_tickets, config, metrics_rows,
                                  run_interrupted)

_REFERENCE: dict[str, tuple] = {}

# Every method with the defaults, plus variants whose resume needs more state: the engine's
# generator (random growth), torch's global RNG (dropout), Adam's moments, momentum growth, a CNN
# with BatchNorm running statistics, a cosine prune schedule (end step) and lr warm-up.
VARIANTS = {m: (m, {}) for m in METHODS}
VARIANTS.update({
    "dst-random-grow": ("dst", {"grow": "random", "prune": "set"}),
    "deep-dropout": ("deep", {"model_kwargs": {"dropout": 0.2}}),
    "static-adam": ("static", {"optimizer": "adam", "lr": 0.01}),
    "dst-momentum-cosine": ("dst", {"grow": "momentum", "prune_schedule": "cosine", "warmup_epochs": 1}),
    "edst-cnn1d": ("edst", {"model": "cnn1d", "model_kwargs": {"width": 16}}),
})


def reference(variant: str, tmp_path_factory, monkeypatch):
    """An uninterrupted run (no step checkpoints) and its number of training steps, once per variant."""
    if variant not in _REFERENCE:
        method, extra = VARIANTS[variant]
        out = tmp_path_factory.mktemp(f"ref-{variant}")
        counter = StepCounter(monkeypatch)
        train(config(method, **extra), out)
        _REFERENCE[variant] = (out, counter.steps)
    return _REFERENCE[variant]


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


@pytest.mark.parametrize("trial", [0, 1])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_resume_after_random_crashes_is_bitwise_exact(variant, trial, tmp_path, tmp_path_factory, monkeypatch):
    ref, total = reference(variant, tmp_path_factory, monkeypatch)
    method, extra = VARIANTS[variant]
    rng = random.Random(f"resume-{variant}-{trial}")  # seeded: a failure reproduces
    stops = [rng.randint(1, total // 2), rng.randint(1, total // 2)]
    every = rng.choice([2, 3, 5])
    out = tmp_path / "run"
    crashes = run_interrupted(config(method, checkpoint_every_steps=every, **extra), out, monkeypatch, stops)
    assert crashes == 2, stops
    assert_same_tickets(ref, out)
    # metrics.jsonl: the rows of re-run epochs were dropped on resume, so it reads like one run
    assert _without_time(metrics_rows(out)) == _without_time(metrics_rows(ref))


def test_resume_with_epoch_checkpoints_only(tmp_path, tmp_path_factory, monkeypatch):
    ref, total = reference("edst", tmp_path_factory, monkeypatch)
    out = tmp_path / "run"
    # 12 steps per epoch: crash in the exploration epoch, then in the second refinement phase
    run_interrupted(config("edst"), out, monkeypatch, [7, 20])
    assert_same_tickets(ref, out)


def test_dst_crash_between_members_does_not_retrain_the_first(tmp_path, tmp_path_factory, monkeypatch):
    ref, total = reference("dst", tmp_path_factory, monkeypatch)
    per_member = total // 2
    out = tmp_path / "run"
    StepCounter(monkeypatch, stop_at=per_member + 1)  # the first step of member 1
    with pytest.raises(Interrupt):
        train(config("dst"), out)
    assert (out / "tickets" / "member_0.pt").is_file()
    counter = StepCounter(monkeypatch)
    train(config("dst"), out, resume=True)
    assert counter.steps == per_member  # member 0 was complete in the checkpoint
    assert_same_tickets(ref, out)


def test_edst_jump_happens_exactly_once(tmp_path, tmp_path_factory, monkeypatch):
    """A crash right after the jump (before the next checkpoint) redoes it from the checkpoint
    taken before it; a crash after that checkpoint does not jump again."""
    ref, total = reference("edst", tmp_path_factory, monkeypatch)
    cfg = config("edst", checkpoint_every_steps=5)
    jumps: list[float] = []
    original = SparseEngine.update_topology

    def jump_then_crash(self, fraction):
        original(self, fraction)
        jumps.append(fraction)
        if crash_after_jump:
            raise Interrupt("crash right after the jump")

    monkeypatch.setattr(SparseEngine, "update_topology", jump_then_crash)
    out = tmp_path / "run"
    crash_after_jump = True
    StepCounter(monkeypatch)
    with pytest.raises(Interrupt):
        train(cfg, out)
    assert jumps == [cfg.jump_fraction]
    # Resume; crash again inside the second refinement phase (after the jump was checkpointed).
    crash_after_jump = False
    jumps.clear()
    StepCounter(monkeypatch, stop_at=8)
    with pytest.raises(Interrupt):
        train(cfg, out, resume=True)
    assert jumps == [cfg.jump_fraction]  # the lost jump, redone once
    jumps.clear()
    StepCounter(monkeypatch)
    train(cfg, out, resume=True)
    assert jumps == [cfg.jump_fraction]  # only the jump before the third phase
    assert_same_tickets(ref, out)


@pytest.mark.parametrize("stops", [[5, 30], [26, 40]], ids=["parent-then-finetune", "finetune-then-parent2"])
def test_pf_crash_in_parent_and_finetune_jobs(stops, tmp_path, tmp_path_factory, monkeypatch):
    ref, total = reference("pf", tmp_path_factory, monkeypatch)
    out = tmp_path / "run"
    assert run_interrupted(config("pf", checkpoint_every_steps=4), out, monkeypatch, stops) == 2
    assert_same_tickets(ref, out)


def test_resume_of_a_complete_run_changes_nothing(tmp_path, tmp_path_factory, monkeypatch):
    ref, _ = reference("static", tmp_path_factory, monkeypatch)
    out = tmp_path / "run"
    train(config("static"), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    counter = StepCounter(monkeypatch)
    train(config("static"), out, resume=True)
    assert counter.steps == 0
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert_same_tickets(ref, out)
