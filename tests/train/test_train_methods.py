"""DST, static, PF and deep ensembles (docs/algorithms.md): what distinguishes each method's members."""
from __future__ import annotations

import itertools
import math

import torch

from freetickets.ensembles.tickets import load_ticket, ticket_to_model
from freetickets.models import create_model
from freetickets.sparse import SparseEngine, global_magnitude_masks

from _train_helpers import TINY


def _tickets(run):
    return [load_ticket(run.root / t["file"]) for t in run.manifest["tickets"]]


def _model(data):
    return create_model("cnn1d", num_classes=data.num_classes, input_shape=tuple(data.input_shape),
                        **TINY["model_kwargs"])


def _hamming(a: dict, b: dict) -> int:
    assert a.keys() == b.keys()
    return sum(int((a[k] ^ b[k]).sum()) for k in a)


def _weights_differ(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_dst_members_use_their_own_seeds_and_differ(dst_run):
    m = dst_run.manifest
    assert m["status"] == "complete" and m["method"] == "dst"
    assert m["seeds"] == [0, 1]
    assert [t["seed"] for t in m["tickets"]] == [0, 1]
    t0, t1 = _tickets(dst_run)
    assert _hamming(t0.masks, t1.masks) > 0
    assert _weights_differ(t0.state_dict, t1.state_dict)
    # the topology really moved: more weights were active at some point than at any one time
    rows = [r for r in dst_run.metrics if r["member"] == 0]
    assert rows[-1]["explored_fraction"] > 1 - dst_run.cfg.sparsity + 0.05
    for t in m["tickets"]:
        assert abs(t["sparsity"] - dst_run.cfg.sparsity) < 1e-3


def test_static_masks_never_change(static_run, tiny_data):
    """Each ticket's mask is exactly the random ERK mask the engine draws for the member's seed."""
    for t, ticket in zip(static_run.manifest["tickets"], _tickets(static_run)):
        engine = SparseEngine(_model(tiny_data), None, sparsity=static_run.cfg.sparsity,
                              distribution=static_run.cfg.distribution, update_interval=None, seed=t["seed"])
        assert ticket.masks.keys() == engine.masks.keys()
        for name in engine.masks:
            assert torch.equal(ticket.masks[name], engine.masks[name]), name
    for r in static_run.metrics:  # nothing was ever explored beyond the initial mask
        assert abs(r["explored_fraction"] - (1 - r["sparsity"])) < 1e-12
    t0, t1 = _tickets(static_run)
    assert _hamming(t0.masks, t1.masks) > 0  # different seeds, different random masks


def _check_pf(run, parents, tiny_data):
    """PF ticket k = global magnitude pruning of dense parent k (exact count), mask fixed after."""
    sparsity = run.cfg.sparsity
    for k, ticket in enumerate(_tickets(run)):
        total = sum(m.numel() for m in ticket.masks.values())
        active = sum(int(m.sum()) for m in ticket.masks.values())
        assert active == math.floor((1 - sparsity) * total + 0.5)
        parent = _model(tiny_data)
        ticket_to_model(parents[k], parent)
        expected = global_magnitude_masks(parent, sparsity)
        assert expected.keys() == ticket.masks.keys()
        for name in expected:
            assert torch.equal(expected[name], ticket.masks[name]), name
        # fine-tuning changed the surviving weights (the ticket is not just the pruned parent)
        assert _weights_differ(ticket.state_dict, parents[k].state_dict)
        # masked weights are exactly zero
        for name, mask in ticket.masks.items():
            assert not ticket.state_dict[name][~mask].any()


def test_pf_from_deep_run(pf_from_deep_run, deep_run, tiny_data):
    assert pf_from_deep_run.manifest["status"] == "complete"
    assert not (pf_from_deep_run.root / "parents").exists()
    assert {r["kind"] for r in pf_from_deep_run.metrics} == {"finetune"}
    assert all(r["lr"] == pf_from_deep_run.cfg.pf_lr for r in pf_from_deep_run.metrics)
    _check_pf(pf_from_deep_run, _tickets(deep_run), tiny_data)


def test_pf_trains_its_own_parents(pf_own_run, tiny_data):
    run = pf_own_run
    assert run.manifest["status"] == "complete"
    kinds = [(r["kind"], r["member"]) for r in run.metrics]
    epochs, pf_epochs = run.cfg.epochs, run.cfg.pf_epochs
    assert kinds == ([("parent", 0)] * epochs + [("finetune", 0)] * pf_epochs
                     + [("parent", 1)] * epochs + [("finetune", 1)] * pf_epochs)
    parents = [load_ticket(run.root / "parents" / f"member_{k}.pt") for k in range(2)]
    assert all(not p.masks for p in parents)  # dense parents
    assert _weights_differ(parents[0].state_dict, parents[1].state_dict)
    _check_pf(run, parents, tiny_data)


def test_deep_members_differ(deep_run):
    m = deep_run.manifest
    assert m["seeds"] == [0, 1] and m["sparsity"] == 0.0
    t0, t1 = _tickets(deep_run)
    assert not t0.masks and not t1.masks
    assert _weights_differ(t0.state_dict, t1.state_dict)
    for a, b in itertools.combinations(m["tickets"], 2):
        assert a["file"] != b["file"]
