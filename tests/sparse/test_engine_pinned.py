"""Known answers for ``SparseEngine``'s bookkeeping: what it reports, saves, restores and checks.

* ``stats()`` has a fixed set of keys with exact values; ``memory_bytes()`` is an exact integer
  (one byte per bool mask entry plus one bit per weight for the "ever active" set).
* ``mask_checksum()`` is a fixed polynomial hash of the masks modulo the Mersenne prime 2**61 - 1.
* ``check_consistency=True`` is a no-op without ``torch.distributed`` and, with it, refuses masks
  that differ across ranks whichever rank holds the larger checksum.
* ``state_dict()`` has a fixed layout; ``load_state_dict`` restores every counter, reads states
  written before a counter existed with that counter at its start value, and names what is wrong.
* Channel-structured updates (``structure="channel"``) keep the same counters as unstructured
  ones: the ever-active set grows, regrown positions start without optimizer state, every update
  counts once, and each logs one debug line.
"""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from freetickets.sparse import SparseEngine

from _sparse_models import MLP, batch

ENGINE_LOGGER = "freetickets.sparse.engine"


def _mlp_engine(**kwargs) -> tuple[SparseEngine, nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    kwargs = {"sparsity": 0.5, "distribution": "uniform", "seed": 0, "update_interval": 2, **kwargs}
    return SparseEngine(model, opt, **kwargs), model, opt


def _train(engine: SparseEngine, model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    x, y = batch(model, 0)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        engine.step()


# ----------------------------------------------------------------------------- stats / memory
def test_stats_reports_every_counter_under_its_documented_key():
    engine, model, opt = _mlp_engine(update_interval=2)
    _train(engine, model, opt, 3)  # one update, at step 2
    stats = engine.stats()
    # MLP: Linear(20, 32), Linear(32, 24), Linear(24, 5): 640 + 768 + 120 sparse weights, 61 biases
    assert set(stats) == {"densities", "sparsity", "explored_fraction", "itop_rate", "active_params",
                          "sparse_params", "nonzero_params", "steps", "updates", "topology_version",
                          "pruned_total", "regrown_total", "reactivated_total", "postponed_steps",
                          "update_pending"}
    assert stats["active_params"] == 320 + 384 + 60
    assert stats["sparse_params"] == 1528
    assert stats["nonzero_params"] == 764 + 61 == engine.nonzero_params()
    assert stats["steps"] == 3 and stats["updates"] == 1 and stats["topology_version"] == 1
    assert stats["pruned_total"] == stats["regrown_total"] == 160 + 192 + 30  # ceil(0.5 * active) per layer
    assert stats["reactivated_total"] == engine.reactivated_total
    assert stats["postponed_steps"] == 0
    assert stats["update_pending"] is False


def test_stats_reports_a_postponed_update_as_pending_and_counts_the_step():
    engine, model, opt = _mlp_engine(update_interval=1)
    x, y = batch(model, 0)
    F.cross_entropy(model(x), y).backward()
    model.net[2].weight.grad[0, 0] = float("nan")  # non-finite grow score: the due update waits
    opt.step()
    engine.step()
    stats = engine.stats()
    assert stats["update_pending"] is True and engine.update_pending
    assert stats["postponed_steps"] == 1 and stats["updates"] == 0


def test_memory_bytes_is_one_byte_per_mask_entry_plus_one_bit_per_weight():
    engine, _, _ = _mlp_engine()
    # bool masks: 1528 bytes; packed ever-active bits: ceil(640/8) + ceil(768/8) + ceil(120/8) = 80 + 96 + 15
    assert engine.memory_bytes() == 1528 + 191
    assert type(engine.memory_bytes()) is int


# ----------------------------------------------------------------------------- mask checksum
def _chain(masks: list[list[list[int]]]) -> SparseEngine:
    """A stack of bias-free Linear(2, 2) layers with the given 2x2 masks (no optimizer)."""
    model = nn.Sequential(*[nn.Linear(2, 2, bias=False) for _ in masks])
    given = {f"{i}.weight": torch.tensor(m, dtype=torch.bool) for i, m in enumerate(masks)}
    return SparseEngine(model, None, masks=given, update_interval=None)


def test_mask_checksum_is_the_documented_polynomial_hash_modulo_2_61_minus_1():
    # per layer i: checksum = (checksum * 1_000_003 + 31 * sum(flat active indices) + count_i + i) mod 2**61 - 1
    one = _chain([[[1, 0], [1, 1]]])  # active flat indices 0, 2, 3: 31 * 5 + 3 + 0
    assert one.mask_checksum() == 158
    two = _chain([[[1, 0], [1, 1]], [[0, 1], [0, 0]]])  # second layer: index 1, count 1, i = 1
    assert two.mask_checksum() == 158 * 1_000_003 + 31 + 1 + 1
    # five layers: the running value passes 2**61 and is reduced (by hand: Python's big ints, then mod)
    masks = [[[1, 0], [1, 1]], [[0, 1], [0, 0]], [[1, 1], [1, 1]], [[0, 0], [0, 1]], [[1, 0], [0, 1]]]
    raw = 0
    for i, (index_sum, count) in enumerate([(5, 3), (1, 1), (6, 4), (3, 1), (3, 2)]):
        raw = raw * 1_000_003 + 31 * index_sum + count + i
    assert raw > 2**61
    assert _chain(masks).mask_checksum() == raw % (2**61 - 1) == 2_018_517_477_037_992_044


def test_mask_checksum_depends_on_layer_order():
    a, b = [[1, 0], [1, 1]], [[0, 1], [0, 0]]
    assert _chain([a, b]).mask_checksum() != _chain([b, a]).mask_checksum()


# ----------------------------------------------------------------------------- rank consistency
def test_consistency_check_is_a_no_op_without_torch_distributed():
    import torch.distributed as dist

    assert not (dist.is_available() and dist.is_initialized())
    engine, model, opt = _mlp_engine(update_interval=1, check_consistency=True)
    _train(engine, model, opt, 2)
    assert engine.update_count == 2


def _fake_world(monkeypatch, other_offset: int) -> None:
    """Pretend to be rank 3 of a group whose other rank's checksum is ours + ``other_offset``.

    The fake all-reduce combines our (checksum, -checksum) with the other rank's pair using the
    requested op, defaulting to SUM like ``torch.distributed.all_reduce``."""
    import torch.distributed as dist

    def all_reduce(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        mine = int(tensor[0])
        other = torch.tensor([mine + other_offset, -(mine + other_offset)], dtype=tensor.dtype)
        if op == dist.ReduceOp.MAX:
            tensor.copy_(torch.maximum(tensor, other))
        elif op == dist.ReduceOp.SUM:
            tensor.add_(other)
        else:
            raise AssertionError(f"unexpected reduce op {op}")

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 3)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)


def test_consistency_check_passes_when_every_rank_has_the_same_masks(monkeypatch):
    engine, _, _ = _mlp_engine(update_interval=None, check_consistency=True)
    _fake_world(monkeypatch, 0)
    engine.update_topology(0.5)
    assert engine.update_count == 1


@pytest.mark.parametrize("offset", [1, -1])
def test_consistency_check_refuses_masks_that_differ_on_another_rank(monkeypatch, offset):
    """The other rank's checksum may be larger or smaller: MAX of (c, -c) catches both."""
    engine, _, _ = _mlp_engine(update_interval=None, check_consistency=True)
    _fake_world(monkeypatch, offset)
    with pytest.raises(RuntimeError) as info:
        engine.update_topology(0.5)
    assert str(info.value) == (f"sparse masks differ across ranks after update 1 "
                               f"(checksum {engine.mask_checksum()} on rank 3)")


# ----------------------------------------------------------------------------- state_dict layout
def test_state_dict_layout_and_config_are_exact():
    engine, model, opt = _mlp_engine(update_interval=2, prune_fraction=0.3, end_step=50, seed=4,
                                     include=["net.0.weight"], exclude=["net.4.weight"], regrow_pruned=False)
    _train(engine, model, opt, 2)
    state = engine.state_dict()
    assert set(state) == {"format", "version", "masks", "ever_active", "step_count", "update_count",
                          "topology_version", "pruned_total", "regrown_total", "last_step_was_update",
                          "reactivated_total", "postponed_steps", "pending_update", "generator_state", "config"}
    assert state["format"] == "freetickets-sparse-engine" and state["version"] == 2
    assert state["last_step_was_update"] is True and state["reactivated_total"] == 0
    assert state["pending_update"] is None
    assert state["config"] == {
        "sparsity": 0.5, "distribution": "uniform", "prune": "magnitude", "grow": "gradient",
        "prune_fraction": 0.3, "prune_schedule": "constant", "update_interval": 2, "end_step": 50,
        "total_steps": None, "seed": 4, "sparse_init": "none", "regrow_pruned": False,
        "include": ["net.0.weight"], "exclude": ["net.4.weight"],
    }


# ----------------------------------------------------------------------------- load_state_dict
def test_load_refuses_anything_but_an_engine_state_in_one_line():
    engine, _, _ = _mlp_engine()
    for bad in ({"format": "other"}, [1, 2]):
        with pytest.raises(ValueError) as info:
            engine.load_state_dict(bad)
        assert str(info.value) == "state: not a SparseEngine state_dict"


def test_load_refuses_an_ever_active_map_of_other_layers_even_when_the_masks_match():
    engine, _, _ = _mlp_engine()
    state = engine.state_dict()
    state["ever_active"] = {k: v for k, v in state["ever_active"].items() if k != "net.4.weight"}
    with pytest.raises(ValueError, match=r"mask names do not match .*\(missing \[\], unexpected \[\]\)"):
        engine.load_state_dict(state)


def test_load_names_at_most_five_missing_and_five_unexpected_layers():
    model = nn.Sequential(*[nn.Linear(3, 3) for _ in range(7)])
    engine = SparseEngine(model, None, sparsity=0.5, distribution="uniform", update_interval=None)
    state = engine.state_dict()
    state["masks"] = {f"x{k}": v for k, v in state["masks"].items()}
    with pytest.raises(ValueError) as info:
        engine.load_state_dict(state)
    assert str(info.value) == (
        "state: mask names do not match this model's sparse layers "
        "(missing ['0.weight', '1.weight', '2.weight', '3.weight', '4.weight'], "
        "unexpected ['x0.weight', 'x1.weight', 'x2.weight', 'x3.weight', 'x4.weight'])"
    )


def test_load_restores_every_counter_as_saved():
    engine, model, opt = _mlp_engine(update_interval=2)
    _train(engine, model, opt, 2)
    state = engine.state_dict()
    assert state["last_step_was_update"] is True
    state.update(reactivated_total=7, postponed_steps=5, pending_update=[6, 0.25])
    fresh, _, _ = _mlp_engine(update_interval=2)
    fresh.load_state_dict(state)
    assert fresh.last_step_was_update is True
    assert fresh.reactivated_total == 7 and fresh.postponed_steps == 5
    assert fresh.update_pending and fresh.state_dict()["pending_update"] == [6, 0.25]
    assert (fresh.step_count, fresh.update_count) == (2, 1)


def test_load_of_a_state_without_the_newer_counters_starts_them_at_their_initial_values(caplog):
    engine, model, opt = _mlp_engine(update_interval=2, end_step=40)
    _train(engine, model, opt, 2)
    state = engine.state_dict()
    for key in ("last_step_was_update", "reactivated_total", "postponed_steps", "pending_update", "config"):
        del state[key]
    fresh, _, _ = _mlp_engine(update_interval=2, end_step=40)
    with caplog.at_level(logging.WARNING, logger=ENGINE_LOGGER):
        fresh.load_state_dict(state)
    assert fresh.last_step_was_update is False
    assert fresh.reactivated_total == 0 and fresh.postponed_steps == 0 and not fresh.update_pending
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no config: nothing to compare end_step with


def test_load_of_a_config_without_end_step_does_not_warn(caplog):
    engine, _, _ = _mlp_engine(end_step=40)
    state = engine.state_dict()
    del state["config"]["end_step"]
    with caplog.at_level(logging.WARNING, logger=ENGINE_LOGGER):
        engine.load_state_dict(state)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_load_warns_in_one_line_when_the_saved_end_step_differs():
    engine, _, _ = _mlp_engine(end_step=30)
    state = engine.state_dict()
    other, _, _ = _mlp_engine(end_step=60)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger(ENGINE_LOGGER).addHandler(handler)
    try:
        other.load_state_dict(state)
    finally:
        logging.getLogger(ENGINE_LOGGER).removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        "SparseEngine: the loaded state stopped updates at step 30, this engine at step 60 "
        "(different end_step/total_steps); continuing with 60"
    ]
    assert other.end_step == 60


def test_load_reads_ever_active_entries_as_truth_values_whatever_their_dtype():
    """Non-zero = was active: an ever-active map stored as counts (0, 1, 2, ...) reads the same
    as its bool form."""
    engine, _, _ = _mlp_engine()
    state = engine.state_dict()
    expected = engine.explored_fraction()
    g = torch.Generator().manual_seed(0)
    counts = {}
    for name, ever in state["ever_active"].items():
        counts[name] = ever.to(torch.int64) * torch.randint(1, 4, ever.shape, generator=g)
        counts[name].view(-1)[-1] = 2 if bool(ever.view(-1)[-1]) else 0
    state["ever_active"] = counts
    fresh, _, _ = _mlp_engine(seed=1)
    fresh.load_state_dict(state)
    assert fresh.explored_fraction() == expected
    for name, ever in fresh.state_dict()["ever_active"].items():
        assert torch.equal(ever, counts[name] != 0), name


# ----------------------------------------------------------------------------- channel structure
SHAPE = (1, 40)


def _channel_engine(**kwargs):
    from freetickets.models import create_model

    torch.manual_seed(0)
    model = create_model("mlp", num_classes=10, input_shape=SHAPE)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    engine = SparseEngine(model, opt, sparsity=0.3, structure="channel", example_inputs=torch.zeros(2, *SHAPE),
                          seed=0, update_interval=None, **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):  # momentum buffers everywhere
        x, y = torch.randn(8, *SHAPE, generator=g), torch.randint(0, 10, (8,), generator=g)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        engine.step()
        opt.zero_grad()
    return engine, model, opt


def test_channel_update_of_fraction_one_restarts_every_active_weight_and_counts_each_update(caplog):
    """With ``regrow_pruned=True`` a full channel update prunes every kept channel and regrows as
    many from all channels, so every active weight restarts: the update moves all of them, and
    those active before and after restart in place (``reactivated_total``) with their optimizer
    state zeroed."""
    engine, model, opt = _channel_engine(regrow_pruned=True)
    params = dict(model.named_parameters())
    assert engine.stats()["structure"] == "channel"
    assert engine.state_dict()["config"]["structure"] == "channel"
    expected_reactivated, expected_moved = 0, 0
    messages = []
    for update in (1, 2):
        old = {n: m.clone() for n, m in engine.masks.items()}
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger=ENGINE_LOGGER):
            engine.update_topology(1.0)
        messages += [r.getMessage() for r in caplog.records if r.name == ENGINE_LOGGER]
        moved = sum(int(m.sum()) for m in engine.masks.values())
        expected_moved += moved
        expected_reactivated += sum(int((old[n] & m).sum()) for n, m in engine.masks.items())
        assert engine.topology_version == update and engine.update_count == update
        assert messages[-1] == f"channel update {update} at step 2: fraction 1.0000, {moved} weights moved"
        for name in engine.masks:  # every active weight restarted: no momentum left anywhere
            assert not opt.state[params[name]]["momentum_buffer"].any(), name
    assert len(messages) == 2
    assert engine.pruned_total == engine.regrown_total == expected_moved
    assert engine.reactivated_total == expected_reactivated > 0


def test_channel_update_grows_the_ever_active_set_and_zeroes_state_at_regrown_positions():
    engine, model, opt = _channel_engine(regrow_pruned=False)
    old = {n: m.clone() for n, m in engine.masks.items()}
    ever_before = engine.state_dict()["ever_active"]
    assert all(torch.equal(ever_before[n], old[n]) for n in old)  # no update yet: the initial masks
    engine.update_topology(0.5)
    params = dict(model.named_parameters())
    ever = engine.state_dict()["ever_active"]
    grown_any = False
    for name, mask in engine.masks.items():
        assert torch.equal(ever[name], old[name] | mask), name  # the union, never less
        fresh = mask & ~old[name]
        grown_any |= bool(fresh.any())
        momentum = opt.state[params[name]]["momentum_buffer"]
        assert torch.all(momentum[fresh] == 0), name  # regrown weights start without momentum
    assert grown_any
    assert engine.explored_fraction() > 1 - engine.sparsity()
    # regrown channels' BatchNorm/bias state restarts too: features.2 follows features.1
    grown_rows = engine.masks["features.1.weight"].any(dim=1) & ~old["features.1.weight"].any(dim=1)
    assert bool(grown_rows.any())
    for tensor in (model.features[2].weight, model.features[2].bias):
        assert torch.all(opt.state[tensor]["momentum_buffer"][grown_rows] == 0)


# ----------------------------------------------------------------------------- construction
def test_defaults_are_the_documented_ones():
    torch.manual_seed(0)
    model = MLP()
    engine = SparseEngine(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.5)
    assert engine.state_dict()["config"] == {
        "sparsity": 0.5, "distribution": "erk", "prune": "magnitude", "grow": "gradient", "prune_fraction": 0.5,
        "prune_schedule": "constant", "update_interval": 1000, "end_step": None, "total_steps": None, "seed": 0,
        "sparse_init": "none", "regrow_pruned": True, "include": [], "exclude": [],
    }
    assert engine.check_consistency is False and engine.structure == "unstructured"
    assert "structure" not in engine.stats()
    seeded = SparseEngine(MLP(), None, sparsity=0.5, seed=0)
    assert all(torch.equal(engine.masks[n], seeded.masks[n]) for n in engine.masks)  # default seed 0
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    SparseEngine(model, None, sparsity=0.5)  # sparse_init "none": kept weights are not rescaled
    assert all(torch.equal(weights[n], p) for n, p in model.named_parameters())


def test_a_fresh_engine_starts_every_counter_at_zero():
    engine, _, _ = _mlp_engine()
    assert (engine.step_count, engine.update_count, engine.topology_version) == (0, 0, 0)
    assert (engine.pruned_total, engine.regrown_total, engine.reactivated_total, engine.postponed_steps) == (0, 0, 0, 0)
    assert engine.last_step_was_update is False and engine.update_pending is False
    assert engine.explored_fraction() == 1 - engine.sparsity() == 0.5


def test_sparsity_target_is_the_requested_value_or_the_masks_own():
    torch.manual_seed(0)
    engine = SparseEngine(MLP(), None, sparsity=0.8, distribution="erk")
    assert engine.sparsity_target == 0.8 and engine.sparsity() != 0.8  # ERK rounds per layer
    given = SparseEngine(MLP(), None, masks=engine.masks)
    assert given.sparsity_target == engine.sparsity()
    assert given.state_dict()["config"]["sparsity"] == engine.sparsity()


def test_custom_rules_are_named_by_their_function_name_or_custom():
    import functools

    from freetickets.sparse.rules import grow_random, prune_magnitude

    def my_prune(weight, active, k):
        return prune_magnitude(weight, active, k)

    torch.manual_seed(0)
    named = SparseEngine(MLP(), None, sparsity=0.5, prune=my_prune, grow=grow_random, update_interval=None)
    assert (named.prune, named.grow) == ("my_prune", "grow_random")
    anonymous = SparseEngine(MLP(), None, sparsity=0.5, distribution="uniform",
                             prune=functools.partial(prune_magnitude), grow=functools.partial(grow_random),
                             update_interval=None)
    assert (anonymous.prune, anonymous.grow) == ("custom", "custom")
    anonymous.update_topology(0.5)  # the partials are the rules in use
    assert anonymous.update_count == 1 and anonymous.pruned_total == 382


def test_construction_logs_one_info_line_with_the_layer_counts(caplog):
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(5)])
    with caplog.at_level(logging.INFO, logger=ENGINE_LOGGER):
        SparseEngine(model, None, sparsity=0.5, distribution="uniform", grow="random", update_interval=None)
    assert [r.getMessage() for r in caplog.records if r.name == ENGINE_LOGGER] == [
        "SparseEngine: 5 sparse layers, 40 of 80 sparse weights active (sparsity 0.5000), uniform/magnitude/random"
    ]


# ----------------------------------------------------------------------------- postponed updates
def _grads(model: nn.Module, step: int, nan_layers: int) -> None:
    """Finite gradients everywhere except the weights of the first ``nan_layers`` layers (NaN)."""
    g = torch.Generator().manual_seed(step)
    for i, layer in enumerate(model):
        layer.weight.grad = torch.randn(layer.weight.shape, generator=g)
        if i < nan_layers:
            layer.weight.grad[0, 0] = float("nan")


def test_postponed_updates_log_which_layers_and_which_due_step(caplog):
    """A due update with non-finite scores logs a warning (a debug line on the later steps it
    still waits); a new due step replaces it with a warning; the first finite step performs it.
    At most three layer names are listed, then " ..."."""
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(5)])
    engine = SparseEngine(model, None, sparsity=0.5, distribution="uniform", update_interval=2)
    records = []
    for step, nan_layers in ((1, 5), (2, 5), (3, 3), (4, 4), (5, 0)):
        _grads(model, step, nan_layers)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger=ENGINE_LOGGER):
            engine.step()
        records += [(step, r.levelname, r.getMessage()) for r in caplog.records if r.name == ENGINE_LOGGER
                    and not r.getMessage().startswith("topology update")]
        if step < 5:
            assert engine.update_count == 0 and engine.last_step_was_update is False
    tail = "is postponed to the next step with finite scores"
    assert records == [
        (2, "WARNING", "SparseEngine: step 2: non-finite grow scores in 5 layer(s) (0.weight, 1.weight, 2.weight ...); "
                       f"the topology update due at step 2 {tail}"),
        (3, "DEBUG", "SparseEngine: step 3: non-finite grow scores in 3 layer(s) (0.weight, 1.weight, 2.weight); "
                     f"the topology update due at step 2 {tail}"),
        (4, "WARNING", "SparseEngine: the update due at step 2 was never performed (grow scores stayed non-finite); "
                       "the update due at step 4 replaces it"),
        (4, "WARNING", "SparseEngine: step 4: non-finite grow scores in 4 layer(s) (0.weight, 1.weight, 2.weight ...); "
                       f"the topology update due at step 4 {tail}"),
    ]
    assert engine.postponed_steps == 3
    assert engine.update_count == 1 and engine.last_step_was_update and not engine.update_pending
    assert engine.pruned_total == 5 * 4  # ceil(0.5 * 8) in each of the five layers
    _grads(model, 6, 0)
    engine.step()  # step 6: due, finite: on schedule again
    assert engine.update_count == 2 and engine.postponed_steps == 3


def test_a_dense_layer_with_a_non_finite_gradient_does_not_postpone_an_update():
    """Only layers an update would change are checked: a dense layer never changes."""
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(3)])
    masks = {f"{i}.weight": torch.rand(4, 4) < 0.5 for i in (1, 2)}  # layer 0 not given: dense
    engine = SparseEngine(model, None, masks=masks, update_interval=1)
    assert engine.densities()["0.weight"] == 1.0
    _grads(model, 0, 1)  # NaN only in the dense layer 0
    engine.step()
    assert engine.update_count == 1 and engine.postponed_steps == 0


def test_dense_layers_are_skipped_by_the_masking_step():
    """A layer at density 1 is not multiplied by its mask: its weights stay bitwise as they are
    (a -0.0 keeps its sign), while masked layers' zeros are +0.0."""
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    masks = {"1.weight": torch.tensor([[True, False] * 2] * 4)}  # layer 0 not given: dense
    engine = SparseEngine(model, None, masks=masks, update_interval=None)
    with torch.no_grad():
        model[0].weight.fill_(-0.0)
        model[1].weight.fill_(-0.0)
    engine.step()
    assert torch.signbit(model[0].weight).all()  # untouched
    assert not torch.signbit(model[1].weight).any()  # masked layer: +0.0 everywhere


def test_momentum_growth_before_the_first_optimizer_step_is_not_postponed(caplog):
    """Before the optimizer has created its state there is no momentum to check: a due update
    happens (growing at random, with the rule's warning), it is not postponed."""
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = SparseEngine(model, opt, sparsity=0.5, distribution="uniform", grow="momentum", update_interval=1)
    assert not opt.state
    with caplog.at_level(logging.WARNING, logger="freetickets.sparse.rules"):
        engine.step()
    assert engine.update_count == 1 and engine.postponed_steps == 0
    assert any("has no momentum buffer yet" in r.getMessage() for r in caplog.records)


def test_rescale_divides_each_sparse_layer_by_the_square_root_of_its_density():
    """``sparse_init="rescale"``: weights of a layer at density d are multiplied by 1/sqrt(d)
    (d = 1/4: exactly 2); dense layers and empty layers (d = 0) are left as they are."""
    model = nn.Sequential(*[nn.Linear(4, 4, bias=False) for _ in range(3)])
    with torch.no_grad():
        for layer in model:
            layer.weight.copy_(torch.arange(1.0, 17.0).view(4, 4))
    quarter = torch.zeros(4, 4, dtype=torch.bool)
    quarter[:, 0] = True
    masks = {"0.weight": quarter, "2.weight": torch.zeros(4, 4, dtype=torch.bool)}  # 1.weight: dense
    engine = SparseEngine(model, None, masks=masks, update_interval=None, sparse_init="rescale")
    assert engine.densities() == {"0.weight": 0.25, "1.weight": 1.0, "2.weight": 0.0}
    original = torch.arange(1.0, 17.0).view(4, 4)
    assert torch.equal(model[0].weight, 2.0 * original * quarter)
    assert torch.equal(model[1].weight, original)
    assert torch.equal(model[2].weight, torch.zeros(4, 4))


def test_initial_channel_masks_come_from_the_engine_seed_alone():
    """The kept channels are drawn from the engine's generator (``seed``), not torch's global RNG,
    so every rank and every rerun with the same seed starts from the same channels."""
    from freetickets.models import create_model

    masks = []
    for global_seed in (1, 2):
        torch.manual_seed(0)
        model = create_model("mlp", num_classes=10, input_shape=SHAPE)
        torch.manual_seed(global_seed)
        engine = SparseEngine(model, None, sparsity=0.3, structure="channel", example_inputs=torch.zeros(2, *SHAPE),
                              seed=5, update_interval=None)
        masks.append(engine.masks)
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])
