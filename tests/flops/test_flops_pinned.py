"""The planned number of gradient-growth update steps equals the number of updates the engine
performs: steps ``t = 1 .. steps`` with ``t % update_interval == 0`` and ``t < end_step``, where
``end_step`` is what the recipe gives the engine (``update_end_fraction`` of the job's steps,
the last step for a cosine prune schedule, none otherwise)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from freetickets.flops.plan import _update_steps
from freetickets.methods.base import EngineSetup, Job, sparse_engine
from freetickets.train.config import TrainConfig


def _engine_updates(cfg: TrainConfig, steps: int) -> int:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    setup = EngineSetup(cfg, Job("train", 0, 0, []), model, torch.optim.SGD(model.parameters(), lr=0.1), steps,
                        load_parent=lambda m: None)
    engine = sparse_engine(setup, update_interval=cfg.update_interval)
    end = engine.end_step
    return sum(1 for t in range(1, steps + 1) if t % engine.update_interval == 0 and (end is None or t < end))


@pytest.mark.parametrize("steps, interval, fraction, schedule", [
    (10, 5, 0.5, "constant"),  # end step 5: the update due at 5 is not performed
    (10, 5, 0.6, "constant"),  # end step 6: one update
    (12, 4, 1.0, "constant"),  # end step 12: updates at 4 and 8 only
    (12, 4, None, "constant"),  # no end: 4, 8, 12
    (12, 4, None, "cosine"),  # cosine ends at the last step: 4, 8
    (13, 4, None, "cosine"),  # 4, 8, 12
    (7, 1, 0.5, "constant"),  # end step 3: 1, 2
    (3, 5, None, "constant"),  # fewer steps than one interval
    (9, 2, 0.05, "constant"),  # end step max(1, 0) = 1: none
    (9, 1, 0.05, "constant"),  # end step 1 with updates every step: still none
])
def test_planned_updates_match_the_engines_schedule(steps, interval, fraction, schedule):
    cfg = TrainConfig(method="dst", update_interval=interval, update_end_fraction=fraction, prune_schedule=schedule,
                      sparsity=0.5, grow="gradient")
    assert _update_steps(cfg, steps) == _engine_updates(cfg, steps)


@pytest.mark.parametrize("overrides", [{"grow": "random"}, {"grow": "momentum"}, {"update_interval": None}])
def test_no_dense_gradient_updates_without_gradient_growth_or_updates(overrides):
    cfg = TrainConfig(method="dst", **{"update_interval": 2, "grow": "gradient", **overrides})
    assert _update_steps(cfg, 20) == 0
