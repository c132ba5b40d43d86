"""Training FLOPs of actual runs (docs/flops.md) against closed forms built from the ticket densities.

Per sample: a normal step costs 3 f_S, a gradient-growth update step 2 f_S + f_D (f_S: sparse
forward from ``forward_flops`` on the ticket densities, f_D: dense forward). Every epoch sees each
of the n_train training samples once (the last batch is short), so a run without updates costs
epochs x n_train x 3 f_S per member.
"""
from __future__ import annotations

import math

import pytest

from freetickets.flops import forward_flops


def _batch_sizes(n_train: int, batch_size: int) -> list[int]:
    steps = math.ceil(n_train / batch_size)
    return [min(batch_size, n_train - i * batch_size) for i in range(steps)]


def _update_samples(n_train: int, batch_size: int, epochs: int, interval: int) -> int:
    """Samples processed on the steps where the engine updates (global step t % interval == 0)."""
    sizes = _batch_sizes(n_train, batch_size) * epochs
    return sum(b for t, b in enumerate(sizes, start=1) if t % interval == 0)


def test_static_run_is_epochs_times_samples_times_three_sparse_forwards(static_run, tiny_data, layer_flops):
    n = tiny_data.train.x.shape[0]
    m = static_run.manifest
    expected = 0.0
    for t in m["tickets"]:
        f_s = forward_flops(layer_flops, t["densities"])
        assert f_s < layer_flops.total
        per_member = static_run.cfg.epochs * n * 3 * f_s
        assert t["train_flops"] == pytest.approx(per_member, rel=1e-12)
        expected += per_member
    assert m["flops"]["train_total"] == pytest.approx(expected, rel=1e-12)
    assert m["flops"]["dense_train_reference"] == pytest.approx(3 * layer_flops.total * n * static_run.cfg.epochs)
    assert m["flops"]["inference_per_sample"] == pytest.approx(
        sum(forward_flops(layer_flops, t["densities"]) for t in m["tickets"]), rel=1e-12)
    assert m["flops"]["dense_inference_per_sample"] == layer_flops.total


def test_dst_run_adds_the_dense_gradient_on_update_steps(dst_run, tiny_data, layer_flops):
    cfg, m = dst_run.cfg, dst_run.manifest
    n = tiny_data.train.x.shape[0]
    upd = _update_samples(n, cfg.batch_size, cfg.epochs, cfg.update_interval)
    assert upd > 0
    total = 0.0
    for t in m["tickets"]:
        f_s = forward_flops(layer_flops, t["densities"])
        # 3 f_S on every sample; (2 f_S + f_D) - 3 f_S = f_D - f_S more on update-step samples
        per_member = cfg.epochs * n * 3 * f_s + upd * (layer_flops.total - f_s)
        assert t["train_flops"] == pytest.approx(per_member, rel=1e-12)
        total += per_member
    assert m["flops"]["train_total"] == pytest.approx(total, rel=1e-12)
    # the extra term is really there: more than a static run of the same densities
    f_s0 = forward_flops(layer_flops, m["tickets"][0]["densities"])
    assert m["tickets"][0]["train_flops"] > cfg.epochs * n * 3 * f_s0


def test_edst_total_is_the_sum_over_its_phases(edst_run, tiny_data, layer_flops):
    cfg, m = edst_run.cfg, edst_run.manifest
    n = tiny_data.train.x.shape[0]
    rows = edst_run.metrics
    f_s = forward_flops(layer_flops, m["tickets"][0]["densities"])
    for t in m["tickets"]:  # jumps keep every layer's density
        assert forward_flops(layer_flops, t["densities"]) == pytest.approx(f_s, rel=1e-15)
    # phase boundaries: cumulative train_flops at the last epoch of each phase
    phases = [("explore", 0)] + [("refine", k) for k in range(cfg.members)]
    at_end = [[r for r in rows if (r["phase"], r["phase_index"]) == ph][-1]["train_flops"] for ph in phases]
    per_phase = [at_end[0]] + [b - a for a, b in zip(at_end, at_end[1:])]
    sizes = _batch_sizes(n, cfg.batch_size)
    step = 0
    expected_phases = []
    for ph in phases:
        epochs = sum(1 for r in rows if (r["phase"], r["phase_index"]) == ph)
        flops = 0.0
        for b in sizes * epochs:
            step += 1
            dense_grad = step % cfg.update_interval == 0
            flops += b * (2 * f_s + layer_flops.total if dense_grad else 3 * f_s)
        expected_phases.append(flops)
    assert per_phase == pytest.approx(expected_phases, rel=1e-12)
    assert m["flops"]["train_total"] == pytest.approx(sum(per_phase), rel=1e-12)
    assert m["flops"]["train_total"] == rows[-1]["train_flops"]
    # ticket m records the cost of the run up to the end of its phase
    assert [t["train_flops"] for t in m["tickets"]] == pytest.approx(at_end[1:], rel=1e-15)
    # one EDST run of E epochs costs about one DST member of E epochs, well below dense
    assert m["flops"]["train_total"] < m["flops"]["dense_train_reference"]


def test_pf_counts_parents_and_fine_tuning(pf_own_run, pf_from_deep_run, deep_run, tiny_data, layer_flops):
    n = tiny_data.train.x.shape[0]
    for run in (pf_own_run, pf_from_deep_run):
        cfg = run.cfg
        parent = cfg.epochs * n * 3 * layer_flops.total
        expected = 0.0
        for t in run.manifest["tickets"]:
            per = parent + cfg.pf_epochs * n * 3 * forward_flops(layer_flops, t["densities"])
            assert t["train_flops"] == pytest.approx(per, rel=1e-12)
            expected += per
        assert run.manifest["flops"]["train_total"] == pytest.approx(expected, rel=1e-12)
    assert deep_run.manifest["flops"]["train_total"] == pytest.approx(
        deep_run.cfg.members * deep_run.cfg.epochs * n * 3 * layer_flops.total, rel=1e-12)
