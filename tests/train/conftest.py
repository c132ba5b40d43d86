"""Tiny training runs shared by the tests in tests/train (each is trained once per session).

Settings are the smallest that still exercise every code path: MNIST-1D with 1000 samples
(720 train / 80 val / 200 test), ``cnn1d`` of width 16, batch 64 (12 steps per epoch, the last
one of 16 samples), a topology update every 5 steps.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from freetickets.train import train
from freetickets.train.config import TrainConfig

from _train_helpers import TINY, Run, read_metrics, tiny_config


@pytest.fixture(scope="session")
def train_env(tmp_path_factory):
    """Root directory of the shared runs (the data cache is set for the session in tests/conftest.py)."""
    return tmp_path_factory.mktemp("train_runs")


@pytest.fixture(scope="session")
def tiny_data(train_env):
    from freetickets.data import load_data

    return load_data("mnist1d", None, num_samples=TINY["num_samples"], seed=0, device="cpu")


@pytest.fixture(scope="session")
def layer_flops(tiny_data):
    from freetickets.flops import dense_layer_flops
    from freetickets.models import create_model

    model = create_model("cnn1d", num_classes=tiny_data.num_classes, input_shape=tuple(tiny_data.input_shape),
                         **TINY["model_kwargs"])
    return dense_layer_flops(model, tuple(tiny_data.input_shape))


def _train(root: Path, cfg: TrainConfig, recorded: dict | None = None) -> Run:
    manifest = train(cfg, root)
    return Run(root, cfg, manifest, read_metrics(root), recorded or {})


@pytest.fixture(scope="session")
def edst_run(train_env):
    """EDST, M = 3: 1 exploration epoch + 3 refinement phases of 2 epochs (7 epochs, 84 steps).

    Records every ``SparseEngine.update_topology`` call (the jumps) with the step it happened at
    and the masks before and after, and every ticket file written (its metadata).
    """
    from freetickets.ensembles import tickets as tickets_mod
    from freetickets.sparse import SparseEngine

    recorded = {"jumps": [], "saves": []}
    original_jump = SparseEngine.update_topology
    original_save = tickets_mod.save_ticket

    def jump(self, fraction):
        before = {k: v.clone() for k, v in self.masks.items()}
        original_jump(self, fraction)
        recorded["jumps"].append({"fraction": fraction, "step": self.step_count, "before": before,
                                  "after": {k: v.clone() for k, v in self.masks.items()}})

    def save(path, model, masks, meta):
        recorded["saves"].append(dict(meta))
        return original_save(path, model, masks, meta)

    cfg = tiny_config(method="edst", members=3, epochs=7, explore_epochs=1, jump_fraction=0.8)
    mp = pytest.MonkeyPatch()
    mp.setattr(SparseEngine, "update_topology", jump)
    mp.setattr(tickets_mod, "save_ticket", save)
    try:
        return _train(train_env / "edst", cfg, recorded)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def dst_run(train_env):
    return _train(train_env / "dst", tiny_config(method="dst", members=2, epochs=2))


@pytest.fixture(scope="session")
def static_run(train_env):
    return _train(train_env / "static", tiny_config(method="static", members=2, epochs=2))


@pytest.fixture(scope="session")
def deep_run(train_env):
    return _train(train_env / "deep", tiny_config(method="deep", members=2, epochs=2))


@pytest.fixture(scope="session")
def pf_from_deep_run(train_env, deep_run):
    cfg = tiny_config(method="pf", members=2, epochs=2, pf_epochs=2, from_run=str(deep_run.root))
    return _train(train_env / "pf_from", cfg)


@pytest.fixture(scope="session")
def pf_own_run(train_env):
    """PF without --from: trains its own dense parents first (kept in RUN_DIR/parents/)."""
    return _train(train_env / "pf_own", tiny_config(method="pf", members=2, epochs=2, pf_epochs=1))
