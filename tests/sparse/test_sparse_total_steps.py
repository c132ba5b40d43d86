"""``SparseEngine(total_steps=...)``: which steps update, with which fraction, the once-only
warning when updates may run to the end with a constant fraction, validation and resume."""
from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from freetickets.sparse import SparseEngine


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4))


def _run(engine, model, steps):
    """Train ``steps`` steps; return [(step, fraction)] of the updates performed."""
    done = []
    update = engine._update

    def record(fraction):
        done.append((engine.step_count, fraction))
        update(fraction)

    engine._update = record
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 12, generator=g)
        model(x).square().mean().backward()
        engine.optimizer.step()
        engine.step()
        engine.optimizer.zero_grad()
    return done


def test_constant_updates_stop_at_three_quarters_of_total_steps():
    model = _model()
    engine = SparseEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.8, update_interval=4,
                          total_steps=20)
    assert engine.end_step == 15  # floor(0.75 * 20)
    assert _run(engine, model, 20) == [(4, 0.5), (8, 0.5), (12, 0.5)]


def test_cosine_anneals_to_zero_at_the_derived_end():
    model = _model()
    engine = SparseEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.8, update_interval=4,
                          prune_schedule="cosine", prune_fraction=0.4, total_steps=16)
    assert engine.end_step == 12
    done = _run(engine, model, 16)
    assert [s for s, _ in done] == [4, 8]
    assert done[0][1] == pytest.approx(0.2 * (1 + math.cos(math.pi * 4 / 12)))  # 0.3
    assert done[1][1] == pytest.approx(0.2 * (1 + math.cos(math.pi * 8 / 12)))  # 0.1


def test_explicit_end_step_wins_and_tiny_runs_never_update():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = SparseEngine(model, opt, sparsity=0.8, update_interval=2, total_steps=10, end_step=5)
    assert engine.end_step == 5 and _run(engine, model, 10) == [(2, 0.5), (4, 0.5)]
    assert SparseEngine(model, opt, sparsity=0.8, update_interval=1, total_steps=1).end_step == 1  # no update


def _end_warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and "topology update" in r.getMessage()]


def test_warns_once_when_updates_may_run_to_the_end(caplog):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with caplog.at_level(logging.WARNING, logger="freetickets.sparse.engine"):
        engine = SparseEngine(model, opt, sparsity=0.8, update_interval=2)  # no end known
        _run(engine, model, 6)
        assert len(_end_warnings(caplog)) == 1 and "total_steps" in _end_warnings(caplog)[0].getMessage()
        caplog.clear()
        SparseEngine(model, opt, sparsity=0.8, update_interval=2, total_steps=6, end_step=7)  # update on step 6
        assert len(_end_warnings(caplog)) == 1 and "last of the run's 6 steps" in _end_warnings(caplog)[0].getMessage()
        caplog.clear()
        for quiet in ({"total_steps": 6}, {"end_step": 6}, {"total_steps": 7, "end_step": 8},
                      {"update_interval": None}, {"prune_schedule": "cosine", "end_step": 6}):
            SparseEngine(model, opt, **{"sparsity": 0.8, "update_interval": 2, **quiet})
        assert _end_warnings(caplog) == []


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_total_steps_validation(bad):
    model = _model()
    with pytest.raises(ValueError, match="total_steps must be a positive integer"):
        SparseEngine(model, None, sparsity=0.5, total_steps=bad)


def test_cosine_needs_an_end():
    model = _model()
    with pytest.raises(ValueError, match="end_step or total_steps"):
        SparseEngine(model, None, sparsity=0.5, prune_schedule="cosine")


def test_state_dict_keeps_total_steps_and_resume_continues_the_schedule(caplog):
    model = _model()
    engine = SparseEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.8, update_interval=3,
                          total_steps=20)
    _run(engine, model, 7)
    state = engine.state_dict()
    assert state["config"]["total_steps"] == 20 and state["config"]["end_step"] == 15
    resumed = SparseEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.8, update_interval=3,
                           total_steps=20, masks=state["masks"])
    resumed.load_state_dict(state)
    assert [s for s, _ in _run(resumed, model, 13)] == [9, 12]  # 15 is the end: no update there
    with caplog.at_level(logging.WARNING, logger="freetickets.sparse.engine"):
        other = SparseEngine(model, None, sparsity=0.8, update_interval=3, total_steps=40, masks=state["masks"])
        other.load_state_dict(state)
    assert any("stopped updates at step 15, this engine at step 30" in r.getMessage() for r in caplog.records)
