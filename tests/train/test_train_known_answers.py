"""Known answers for what the training loop does with the numbers of the config (issue 13).

Each expected value is computed here by hand (a formula in the test), never by the function
under test: the learning rate the optimizer actually uses at every step (multistep, cosine,
warm-up), label smoothing in the logged loss, gradient clipping in the gradient the optimizer
sees, ``update_end_fraction`` in the number of topology updates, the EDST jump (exactly
ceil(q x active) weights per layer, pruned by magnitude, regrown by gradient), the training FLOPs
meter (the dense-gradient term only for gradient growth), the resume guard, and the selection of
the best epoch when it is not the last one.

Runs are tiny (MNIST-1D, 1000 samples: 720 training examples), a few seconds each.
"""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from freetickets.errors import UserError
from freetickets.train import train
from freetickets.epoch_plans import cosine_lr, multistep_lr, standard_plan, warmup_factor

from _train_helpers import read_manifest, read_metrics, tiny_config

TRAIN_SIZE = 720  # 1000 samples: 800 train+val, 10% of it validation


# ----------------------------------------------------------------- pure schedules at boundaries
def test_multistep_boundaries_of_the_released_schedule():
    # 250 epochs, milestones (0.5, 0.75): the rate drops at epochs 125 and 187 (int(0.75 * 250))
    expect = {0: 0.1, 124: 0.1, 125: 0.01, 186: 0.01, 187: 0.001, 249: 0.001}
    for epoch, lr in expect.items():
        assert multistep_lr(0.1, epoch, 250, [0.5, 0.75], 0.1) == pytest.approx(lr, rel=1e-12), epoch


def test_cosine_boundaries():
    assert cosine_lr(0.2, 0, 10) == pytest.approx(0.2, rel=1e-12)
    assert cosine_lr(0.2, 5, 10) == pytest.approx(0.1, rel=1e-12)
    assert cosine_lr(0.2, 10, 10) == pytest.approx(0.0, abs=1e-15)
    assert cosine_lr(0.2, 9, 10) == pytest.approx(0.1 * (1 + math.cos(0.9 * math.pi)), rel=1e-12)


def test_warmup_factor_boundaries():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_standard_plan_rates():
    cfg = tiny_config(method="dense", epochs=4, lr=0.1, lr_milestones=[0.5, 0.75], lr_gamma=0.1)
    assert [s.lr for s in standard_plan(cfg)] == pytest.approx([0.1, 0.1, 0.01, 0.001], rel=1e-12)


@pytest.mark.parametrize("epochs, expect", [
    (1, [0.1]),                  # int(0.5) = int(0.75) = 0 -> both moved to epoch 1 (outside the run)
    (2, [0.1, 0.001]),           # int(1.0) = int(1.5) = 1: both milestones at epoch 1
    (3, [0.1, 0.01, 0.001]),     # int(1.5) = 1, int(2.25) = 2
])
def test_short_multistep_plans_start_at_the_base_lr(epochs, expect):
    """A milestone never falls on the first epoch: ``--epochs 1`` trains at the base lr."""
    cfg = tiny_config(method="dense", epochs=epochs, lr=0.1, lr_milestones=[0.5, 0.75], lr_gamma=0.1)
    assert [s.lr for s in standard_plan(cfg)] == pytest.approx(expect, rel=1e-12)
    assert [multistep_lr(0.1, e, epochs, [0.5, 0.75], 0.1) for e in range(epochs)] == pytest.approx(expect, rel=1e-12)


# ----------------------------------------------------------------- what the optimizer receives
@pytest.fixture
def sgd_spy(monkeypatch):
    """Records, at every ``SGD.step``: the lr of each group and the global gradient norm."""
    calls: list[dict] = []
    original = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        grads = [p.grad.detach().flatten() for g in self.param_groups for p in g["params"] if p.grad is not None]
        calls.append({"lr": [g["lr"] for g in self.param_groups],
                      "grad_norm": float(torch.cat(grads).double().norm())})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    return calls


def test_lr_of_every_step_multistep_with_warmup(tmp_path, sgd_spy):
    # batch 360 -> 2 steps per epoch; warm-up 1 epoch = 2 steps: factors 1/2, 2/2;
    # milestones at epochs int(0.5*4) = 2 and int(0.75*4) = 3
    cfg = tiny_config(method="dense", epochs=4, batch_size=360, lr=0.1, warmup_epochs=1,
                      lr_milestones=[0.5, 0.75], lr_gamma=0.1)
    train(cfg, tmp_path / "run")
    expect = [0.05, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert [c["lr"][0] for c in sgd_spy] == pytest.approx(expect, rel=1e-12)


def test_one_epoch_run_trains_at_the_base_lr(tmp_path, sgd_spy):
    """``--epochs 1``: every optimizer step and the logged row use the base lr (not lr x 0.01)."""
    cfg = tiny_config(method="dense", epochs=1, batch_size=360, lr=0.1)
    train(cfg, tmp_path / "run")
    assert [c["lr"][0] for c in sgd_spy] == pytest.approx([0.1, 0.1], rel=1e-12)
    assert [r["lr"] for r in read_metrics(tmp_path / "run")] == pytest.approx([0.1], rel=1e-12)


def test_lr_of_every_step_cosine(tmp_path, sgd_spy):
    cfg = tiny_config(method="dense", epochs=3, batch_size=360, lr=0.1, lr_schedule="cosine")
    train(cfg, tmp_path / "run")
    per_epoch = [0.05 * (1 + math.cos(math.pi * e / 3)) for e in range(3)]
    assert [c["lr"][0] for c in sgd_spy] == pytest.approx([lr for lr in per_epoch for _ in range(2)], rel=1e-12)


def test_gradient_clipping_sets_the_global_norm(tmp_path, sgd_spy):
    cfg = tiny_config(method="dense", epochs=1, batch_size=360, grad_clip=1e-3)
    train(cfg, tmp_path / "run")
    assert len(sgd_spy) == 2
    for c in sgd_spy:  # unclipped norms of this model are ~1 (far above 1e-3)
        assert c["grad_norm"] == pytest.approx(1e-3, rel=1e-4)


def test_label_smoothing_in_the_logged_training_loss(tmp_path, monkeypatch):
    """One step per epoch (batch >= 720): the logged loss is the smoothed loss of that batch,
    -(1-e) mean log p_y - e mean_c mean log p_c, computed here from the recorded logits."""
    from freetickets.methods.base import Recipe

    seen = []
    original = Recipe.training_logits

    def record(self, output, targets):
        logits, t = original(self, output, targets)
        seen.append((logits.detach().double().clone(), t.clone()))
        return logits, t

    monkeypatch.setattr(Recipe, "training_logits", record)
    eps = 0.3
    cfg = tiny_config(method="dense", epochs=1, batch_size=1024, label_smoothing=eps)
    train(cfg, tmp_path / "run")
    (logits, targets), = seen
    logp = torch.log_softmax(logits, dim=1)
    expect = float(-(1 - eps) * logp.gather(1, targets[:, None]).mean() - eps * logp.mean(1).mean())
    plain = float(-logp.gather(1, targets[:, None]).mean())
    assert abs(expect - plain) > 1e-3  # 100x the tolerance below: the check tells them apart
    (row,) = read_metrics(tmp_path / "run")
    assert row["train_loss"] == pytest.approx(expect, abs=1e-5)


# ----------------------------------------------------------------- sparse schedule and FLOPs
def _count_updates(monkeypatch):
    from freetickets.sparse import SparseEngine

    steps: list[int] = []
    original = SparseEngine._update

    def update(self, fraction):
        steps.append(self.step_count)
        return original(self, fraction)

    monkeypatch.setattr(SparseEngine, "_update", update)
    return steps


def test_update_end_fraction_stops_the_updates(tmp_path, monkeypatch):
    # 12 steps per epoch x 4 epochs = 48 steps; end at int(0.5 * 48) = 24; an update every 5 steps
    steps = _count_updates(monkeypatch)
    train(tiny_config(method="dst", members=1, epochs=4, update_end_fraction=0.5), tmp_path / "run")
    assert len(steps) == 4  # steps 5, 10, 15, 20 (25 is past the end)
    steps.clear()
    train(tiny_config(method="dst", members=1, epochs=4), tmp_path / "full")
    assert len(steps) == 9  # 5, 10, ..., 45 without an end


@pytest.mark.parametrize("grow", ["gradient", "random"])
def test_train_flops_meter_dense_gradient_term_only_for_gradient_growth(tmp_path, grow, layer_flops):
    from freetickets.ensembles.tickets import load_ticket
    from freetickets.flops import forward_flops

    run = tmp_path / grow
    cfg = tiny_config(method="dst", members=1, epochs=1, grow=grow)
    train(cfg, run)
    manifest = read_manifest(run)
    # the ticket's per-layer densities (prune-and-regrow keeps each layer's count all run)
    masks = load_ticket(run / manifest["tickets"][0]["file"]).masks
    f_s = forward_flops(layer_flops, {n: int(m.sum()) / m.numel() for n, m in masks.items()})
    f_d = layer_flops.total
    # 720 samples, batch 64: 11 steps of 64 and one of 16; updates at steps 5 and 10 (batches of 64)
    updates = 2 if grow == "gradient" else 0
    expect = 720 * 3 * f_s + updates * 64 * (f_d - f_s)
    assert manifest["tickets"][0]["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert manifest["flops"]["train_total"] == pytest.approx(expect, rel=1e-6)


# ----------------------------------------------------------------- EDST jump by hand
def test_edst_jump_moves_ceil_q_active_weights_by_magnitude_and_gradient(tmp_path, monkeypatch):
    """regrow_pruned=False so pruned and regrown sets are disjoint and visible in the masks."""
    from freetickets.sparse import SparseEngine

    jumps = []
    original = SparseEngine.update_topology

    def jump(self, fraction):
        params = dict(zip(self._names, self._params))
        before = {n: (m.clone(), params[n].detach().abs().clone(), params[n].grad.detach().abs().clone())
                  for n, m in self.masks.items()}
        original(self, fraction)
        jumps.append((fraction, before, {n: m.clone() for n, m in self.masks.items()}))

    monkeypatch.setattr(SparseEngine, "update_topology", jump)
    q = 0.3  # not the prune fraction (0.5): a jump by the wrong fraction fails
    cfg = tiny_config(method="edst", members=2, epochs=3, explore_epochs=1, jump_fraction=q, regrow_pruned=False)
    train(cfg, tmp_path / "run")
    assert len(jumps) == 1
    fraction, before, after = jumps[0]
    assert fraction == q
    for name, (mask, w, g) in before.items():
        active = int(mask.sum())
        k = min(math.ceil(Fraction(repr(q)) * active), mask.numel() - active)  # q as written (0.8 = 4/5)
        removed = mask & ~after[name]
        added = after[name] & ~mask
        assert int(removed.sum()) == k and int(added.sum()) == k, name
        kept = mask & after[name]
        # pruned by magnitude: every removed |w| <= every kept |w|
        if kept.any():
            assert float(w[removed].max()) <= float(w[kept].min()), name
        # regrown by gradient among the weights that were inactive: every added |g| >= the rest
        rest = ~mask & ~after[name]
        if rest.any():  # (a small layer may regrow every inactive weight)
            assert float(g[added].min()) >= float(g[rest].max()), name



# ----------------------------------------------------------------- resume guard
def test_resume_with_changed_settings_is_refused(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(method="dense", epochs=3, checkpoint_every_steps=5)  # a checkpoint inside epoch 0

    class Stop(Exception):
        pass

    def stop_after_first_epoch(row):
        raise Stop

    from freetickets.train.runner import Trainer

    with pytest.raises(Stop):
        Trainer(cfg, run, callback=stop_after_first_epoch).fit()
    changed = tiny_config(method="dense", epochs=3, checkpoint_every_steps=5, lr=0.05)
    with pytest.raises(UserError, match="'lr' differs from the saved run"):
        train(changed, run, resume=True)
    train(cfg, run, resume=True)  # the same settings resume
    assert read_manifest(run)["status"] == "complete"


# ----------------------------------------------------------------- best epoch != last epoch
def test_ticket_is_the_best_epoch_when_the_last_is_worse(tmp_path, monkeypatch):
    """Validation accuracies scripted 0.5, 0.9, 0.7: the ticket must be epoch 2's weights (1-based)."""
    import freetickets.train.runner as runner
    from freetickets.ensembles.tickets import load_ticket

    scripted = iter([0.5, 0.9, 0.7])
    states = []
    real = runner.evaluate_sharded

    def fake(model, *args, **kwargs):
        loss, _ = real(model, *args, **kwargs)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return loss, next(scripted)

    monkeypatch.setattr(runner, "evaluate_sharded", fake)
    train(tiny_config(method="dense", epochs=3), tmp_path / "run")
    manifest = read_manifest(tmp_path / "run")
    (t,) = manifest["tickets"]
    assert t["epoch"] == 2 and t["val_accuracy"] == 0.9
    state = load_ticket(tmp_path / "run" / t["file"]).state_dict
    assert any(not torch.equal(states[1][k], states[2][k]) for k in states[1])  # epochs 2 and 3 (1-based) differ
    for k, v in states[1].items():
        assert torch.equal(state[k], v), k
