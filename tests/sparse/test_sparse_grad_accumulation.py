"""Gradient accumulation: update_interval counts optimizer steps, and gradient growth ranks the
gradient accumulated over the micro-batches of the update step."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from freetickets.sparse import SparseEngine, sparsifiable_parameters
from freetickets.sparse.selection import ceil_product, select_largest, select_smallest

from _sparse_models import MLP, batch


def test_update_interval_counts_optimizer_steps_and_growth_ranks_accumulated_gradient():
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    engine = SparseEngine(model, opt, sparsity=0.7, update_interval=2, regrow_pruned=False)
    params = dict(sparsifiable_parameters(model))
    accumulate = 3
    micro = 0
    for step in range(1, 5):  # 4 optimizer steps of 3 micro-batches each
        per_micro = []
        for _ in range(accumulate):
            x, y = batch(model, micro)
            micro += 1
            before = {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in params.items()}
            (F.cross_entropy(model(x), y) / accumulate).backward()
            per_micro.append({n: p.grad - before[n] for n, p in params.items()})
        opt.step()
        masks = {n: m.clone() for n, m in engine.masks.items()}
        weights = {n: params[n].detach().clone() for n in params}
        engine.step()
        assert engine.step_count == step  # one engine step per optimizer step, not per micro-batch
        assert engine.last_step_was_update == (step % 2 == 0)
        if engine.last_step_was_update:
            differs = False
            for n, m in masks.items():
                accumulated = sum(g[n] for g in per_micro)
                assert torch.allclose(accumulated, params[n].grad, atol=1e-6)  # what the optimizer saw
                k = min(ceil_product(0.5, int(m.sum())), m.numel() - int(m.sum()))
                removed = select_smallest((weights[n] * m).abs(), m, k)
                grown = select_largest(params[n].grad.abs(), ~m, k)
                assert torch.equal(engine.masks[n], (m & ~removed) | grown), n
                differs |= not torch.equal(select_largest(per_micro[-1][n].abs(), ~m, k), grown)
            assert differs  # ranking only the last micro-batch's gradient would have grown other positions
        opt.zero_grad()
    assert engine.update_count == 2 and micro == 12
