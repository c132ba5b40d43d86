"""The recipe layer: one registered recipe per method name, the import direction, and the
snapshot ensemble's plan and ticket selection (known answers)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from freetickets.errors import UserError
from freetickets.methods import RECIPES, get_recipe
from freetickets.methods.snapshot import snapshot_plan
from freetickets.names import METHODS
from freetickets.train import train
from freetickets.train.config import TrainConfig, validate

TINY = dict(model="cnn1d", model_kwargs={"width": 8}, num_samples=600, batch_size=64, device="cpu", seed=0)


def test_every_method_name_has_one_recipe():
    assert tuple(RECIPES) == METHODS
    for name, recipe in RECIPES.items():
        assert recipe.name == name and get_recipe(name) is recipe


def test_recipes_never_import_the_loop():
    """Importing every recipe leaves the training loop unimported (docs/architecture.md: no cycle)."""
    import subprocess
    import sys

    code = "import sys, freetickets.methods; print('freetickets.train.runner' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_snapshot_plan_known_answer():
    cfg = validate(TrainConfig(method="snapshot", epochs=7, members=3, lr=0.1))
    plan = snapshot_plan(cfg)
    # cycles of 2, 2 and 3 epochs (left-over epochs go to the last); lr = 0.05 (1 + cos(pi i / len))
    assert [s.phase_index for s in plan] == [0, 0, 1, 1, 2, 2, 2]
    expected = [0.1, 0.05, 0.1, 0.05, 0.1, 0.075, 0.025]
    assert [s.lr for s in plan] == pytest.approx(expected, abs=1e-12)
    assert [s.epoch for s in plan if s.phase_end] == [1, 3, 6]
    assert all(s.phase == "cycle" and s.takes_ticket for s in plan)


@pytest.mark.parametrize("overrides, flag", [(dict(members=1), "--members"), (dict(epochs=2, members=3), "--epochs"),
                                             (dict(member=0), "--member")])
def test_snapshot_rejects_bad_settings(overrides, flag):
    with pytest.raises(UserError, match=flag):
        validate(TrainConfig(method="snapshot", **{**dict(epochs=6, members=3), **overrides}))


def test_snapshot_members_are_cycle_ends(tmp_path, monkeypatch):
    """Each member is the model at the end of its cycle, even when an earlier epoch validated better
    (validation accuracy is made to fall every epoch, so best-validation selection would differ)."""
    from freetickets.train import runner

    real = runner.evaluate_sharded
    calls = []

    def falling(*args, **kwargs):
        loss, _ = real(*args, **kwargs)
        calls.append(None)
        return loss, 1.0 / len(calls)

    monkeypatch.setattr(runner, "evaluate_sharded", falling)
    from freetickets import Ensemble
    from freetickets.ensembles.tickets import load_ticket

    cfg = TrainConfig(method="snapshot", epochs=5, members=2, lr=0.05, **TINY)
    manifest = train(cfg, tmp_path / "snap")
    assert manifest["members"] == 2 and manifest["seeds"] == [0] and manifest["sparsity"] == 0.0
    assert [t["epoch"] for t in manifest["tickets"]] == [2, 5]  # 1-based
    assert [t["phase"] for t in manifest["tickets"]] == ["cycle", "cycle"]
    rows = [json.loads(l) for l in (tmp_path / "snap" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([0.05, 0.025, 0.05, 0.0375, 0.0125])
    assert [r["val_accuracy"] for r in rows] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    # the val accuracy stored with each ticket is that of the cycle's last epoch
    for t in manifest["tickets"]:
        assert t["val_accuracy"] == rows[t["epoch"] - 1]["val_accuracy"]
        assert load_ticket(tmp_path / "snap" / t["file"]).meta["epoch"] == t["epoch"]
    ens = Ensemble.load(tmp_path / "snap")
    import torch

    x = torch.randn(5, 1, 40)
    assert ens.member_probs(x).shape == (2, 5, 10)
    assert manifest["flops"]["train_total"] == pytest.approx(
        manifest["flops"]["dense_train_reference"] * 5 / 5, rel=0.02)
    assert math.isfinite(manifest["flops"]["inference_per_sample"])
