"""Non-finite grow scores: no update on that step, the update on the next finite one."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from freetickets.sparse import SparseEngine, layer_active_counts, sparsifiable_parameters
from freetickets.sparse.selection import select_largest, select_smallest

from _sparse_models import MLP, batch


def _setup(grow="gradient", interval=2, **kw):
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    engine = SparseEngine(model, opt, sparsity=0.7, update_interval=interval, grow=grow, **kw)
    return model, opt, engine


def _backward(model, index):
    x, y = batch(model, index)
    F.cross_entropy(model(x), y).backward()


def _masks(engine):
    return {n: m.clone() for n, m in engine.masks.items()}


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_injected_nonfinite_gradient_postpones_update(bad, caplog):
    model, opt, engine = _setup()
    params = dict(sparsifiable_parameters(model))
    _backward(model, 0); opt.step(); engine.step(); opt.zero_grad()  # step 1: no update due
    # step 2: update due, one entry of one layer's gradient is non-finite; the optimizer step is
    # skipped (as GradScaler does), the engine must not touch the masks.
    _backward(model, 1)
    params["net.2.weight"].grad[3, 4] = bad
    before = _masks(engine)
    with caplog.at_level(logging.WARNING, logger="freetickets.sparse.engine"):
        engine.step()
    opt.zero_grad()
    assert engine.step_count == 2 and engine.update_count == 0 and engine.topology_version == 0
    assert not engine.last_step_was_update and engine.update_pending
    assert engine.pruned_total == 0 and engine.postponed_steps == 1
    assert all(torch.equal(before[n], m) for n, m in engine.masks.items())
    assert any("non-finite grow scores in 1 layer(s) (net.2.weight)" in r.getMessage() for r in caplog.records)
    # step 3 (not itself due): finite gradients -> the postponed update runs, on this gradient
    _backward(model, 2)
    opt.step()
    expected = {}
    for n, m in engine.masks.items():
        k = min(-(-int(m.sum()) // 2), m.numel())
        removed = select_smallest((params[n].detach() * m).abs(), m, k)
        expected[n] = (m & ~removed) | select_largest(params[n].grad.abs(), ~(m & ~removed), k)
    engine.step()
    opt.zero_grad()
    assert engine.last_step_was_update and engine.update_count == 1 and not engine.update_pending
    assert all(torch.equal(expected[n], m) for n, m in engine.masks.items())
    counts = layer_active_counts({n: tuple(p.shape) for n, p in params.items()}, 0.7, "erk")
    assert {n: int(m.sum()) for n, m in engine.masks.items()} == counts
    # step 4: due on schedule again, runs normally
    _backward(model, 3); opt.step(); engine.step(); opt.zero_grad()
    assert engine.last_step_was_update and engine.update_count == 2 and engine.step_count == 4


def test_pending_update_survives_several_bad_steps_and_resume():
    model, opt, engine = _setup(interval=1)
    params = dict(sparsifiable_parameters(model))
    for i in range(3):
        _backward(model, i)
        params["net.0.weight"].grad.fill_(float("nan"))
        engine.step()
        opt.zero_grad()
    assert engine.update_count == 0 and engine.postponed_steps == 3 and engine.update_pending
    state = engine.state_dict()
    assert state["pending_update"] == [3, 0.5]
    fresh = _setup(interval=1)[2]
    fresh.load_state_dict(state)
    assert fresh.update_pending and fresh.postponed_steps == 3


def test_momentum_scores_checked_and_random_growth_not_blocked():
    model, opt, engine = _setup(grow="momentum", interval=2)
    params = dict(sparsifiable_parameters(model))
    _backward(model, 0); opt.step(); engine.step(); opt.zero_grad()
    _backward(model, 1)
    opt.step()
    opt.state[params["net.4.weight"]]["momentum_buffer"][0, 0] = float("inf")
    engine.step()
    assert engine.update_count == 0 and engine.update_pending
    # grow='random' ranks no gradient: an inf gradient does not block its update
    model, opt, engine = _setup(grow="random", interval=1)
    _backward(model, 0)
    dict(sparsifiable_parameters(model))["net.0.weight"].grad[0, 0] = float("inf")
    engine.step()
    assert engine.update_count == 1 and engine.last_step_was_update


def test_real_gradscaler_overflow_step():
    """fp16 autocast on CPU with a huge initial loss scale: GradScaler finds inf gradients and
    skips optimizer.step(); the engine's due update waits for the next (finite) step."""
    model, opt, engine = _setup(interval=1)
    try:
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, backoff_factor=2.0**-35)
        with torch.autocast("cpu", dtype=torch.float16):
            model(batch(model, 0)[0])
    except (RuntimeError, TypeError, AttributeError) as exc:  # pragma: no cover - older CPU builds
        pytest.skip(f"CPU GradScaler/fp16 autocast not supported by this build: {exc}")
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = []
    for i in range(2):
        before = _masks(engine)
        x, y = batch(model, i)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        finite = all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
        scaler.step(opt)
        scaler.update()
        engine.step()
        opt.zero_grad()
        changed = any(not torch.equal(before[n], m) for n, m in engine.masks.items())
        history.append((finite, engine.last_step_was_update, changed, scaler.get_scale()))
        if i == 0:  # the skipped step moved no weight
            assert all(torch.equal(weights[n], p.detach()) for n, p in model.named_parameters())
    assert history[0][:3] == (False, False, False) and history[0][3] == 32.0
    assert history[1][:3] == (True, True, True)
    assert engine.step_count == 2 and engine.update_count == 1
