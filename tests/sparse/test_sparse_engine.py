"""SparseEngine invariants, checked exactly after every step and every update."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from freetickets.sparse import SparseEngine, layer_active_counts, sparsifiable_parameters
from freetickets.sparse.selection import ceil_product, select_largest, select_smallest

from _sparse_models import ARCHITECTURES, CNN1d, CNN2d, MLP, batch

OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "sgd_momentum_wd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=5e-3),
    "sgd_nesterov": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3),
    "adam_amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
}


def make(arch: str, optimizer: str = "sgd_momentum_wd", seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    model = ARCHITECTURES[arch]()
    opt = OPTIMIZERS[optimizer](model.parameters())
    kwargs.setdefault("sparsity", 0.5 if arch == "erk_dense" else 0.7)
    kwargs.setdefault("update_interval", 2)
    # Tests that count moved positions from masks alone need just-pruned positions not to be
    # regrown; the default (regrow_pruned=True) is covered where it is parametrised and in
    # test_sparse_regrowth.py.
    kwargs.setdefault("regrow_pruned", False)
    engine = SparseEngine(model, opt, **kwargs)
    return model, opt, engine


def train_step(model, opt, engine, index):
    x, y = batch(model, index)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    engine.step()
    opt.zero_grad()


def expected_k(fraction, active, numel, regrow_pruned=False):
    """regrow_pruned=False: k = min(ceil(p * n_active), n - n_active) (just-pruned positions are
    not regrown); True: k = ceil(p * n_active). Dense layers: 0."""
    if active == numel:
        return 0
    k = ceil_product(fraction, active)
    return k if regrow_pruned else min(k, numel - active)


def assert_masked_zero(model, engine):
    params = dict(sparsifiable_parameters(model))
    for name, mask in engine.masks.items():
        assert mask.dtype == torch.bool and mask.shape == params[name].shape
        assert bool((params[name].detach()[~mask] == 0).all()), name


def expected_counts(model, sparsity, distribution="erk"):
    shapes = {n: tuple(p.shape) for n, p in sparsifiable_parameters(model)}
    return layer_active_counts(shapes, sparsity, distribution)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("grow", ["gradient", "random", "momentum"])
@pytest.mark.parametrize("optimizer", ["sgd_nesterov", "adamw"])
@pytest.mark.parametrize("regrow_pruned", [False, True])
def test_invariants_every_step(arch, grow, optimizer, regrow_pruned):
    """Exact per-layer counts and zero masked weights after every step; regrown weights and their
    optimizer state are zero right after the update; only non-dense layers change. With
    regrow_pruned=True, r of the k regrown positions may be just-pruned ones: the masks then show
    k - r moved, and the engine's reactivated_total counts the r."""
    model, opt, engine = make(arch, optimizer, grow=grow, regrow_pruned=regrow_pruned)
    counts = expected_counts(model, engine.sparsity_target)
    params = dict(sparsifiable_parameters(model))
    assert {n: int(m.sum()) for n, m in engine.masks.items()} == counts
    assert_masked_zero(model, engine)
    for i in range(6):
        before = {n: m.clone() for n, m in engine.masks.items()}
        reactivated = engine.reactivated_total
        pruned = engine.pruned_total
        train_step(model, opt, engine, i)
        assert {n: int(m.sum()) for n, m in engine.masks.items()} == counts
        assert_masked_zero(model, engine)
        assert engine.last_step_was_update == ((i + 1) % 2 == 0)
        if engine.last_step_was_update:
            total_k = sum(expected_k(0.5, counts[n], m.numel(), regrow_pruned) for n, m in engine.masks.items())
            assert engine.pruned_total - pruned == total_k
            moved = sum(int((m & ~before[n]).sum()) for n, m in engine.masks.items())
            assert moved == total_k - (engine.reactivated_total - reactivated)
        if not regrow_pruned:
            assert engine.reactivated_total == 0
        for n, m in engine.masks.items():
            grown = m & ~before[n]
            if engine.last_step_was_update and counts[n] < m.numel():
                k = expected_k(0.5, counts[n], m.numel(), regrow_pruned)
                assert int(grown.sum()) == int((before[n] & ~m).sum()) <= k
                if not regrow_pruned:
                    assert int(grown.sum()) == k
            elif counts[n] == m.numel() or not engine.last_step_was_update:
                assert torch.equal(m, before[n])
            assert bool((params[n].detach()[grown] == 0).all())
            for value in opt.state[params[n]].values():
                if isinstance(value, torch.Tensor) and value.shape == m.shape:
                    assert bool((value[grown] == 0).all())
    assert engine.step_count == 6 and engine.update_count == 3


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_masked_weights_stay_zero_with_every_optimizer(optimizer):
    model, opt, engine = make("cnn2d", optimizer, update_interval=None)
    first = {n: m.clone() for n, m in engine.masks.items()}
    for i in range(4):
        train_step(model, opt, engine, i)
        assert_masked_zero(model, engine)
    assert all(torch.equal(first[n], m) for n, m in engine.masks.items())  # static masks
    assert engine.update_count == 0 and engine.topology_version == 0


@pytest.mark.parametrize("regrow_pruned", [False, True])
def test_update_selects_documented_entries(regrow_pruned):
    """The engine's update equals magnitude prune / gradient grow computed by hand, with
    just-pruned positions eligible for regrowth exactly when regrow_pruned."""
    model, opt, engine = make("mlp", "sgd_momentum_wd", update_interval=3, prune_fraction=0.3,
                              regrow_pruned=regrow_pruned)
    params = dict(sparsifiable_parameters(model))
    for i in range(2):
        train_step(model, opt, engine, i)
    x, y = batch(model, 2)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    expected = {}
    for n, m in engine.masks.items():
        k = expected_k(0.3, int(m.sum()), m.numel(), regrow_pruned)
        w = params[n].detach() * m
        removed = select_smallest(w.abs(), m, k)
        eligible = ~(m & ~removed) if regrow_pruned else ~m
        grown = select_largest(params[n].grad.abs(), eligible, k)
        expected[n] = (m & ~removed) | grown
    engine.step()
    assert engine.last_step_was_update
    for n, m in engine.masks.items():
        assert torch.equal(m, expected[n]), n


def test_update_state_zeroed_adam():
    model, opt, engine = make("mlp", "adam_amsgrad", update_interval=None)
    for i in range(3):
        train_step(model, opt, engine, i)
    params = dict(sparsifiable_parameters(model))
    before = {n: m.clone() for n, m in engine.masks.items()}
    x, y = batch(model, 9)
    F.cross_entropy(model(x), y).backward()
    engine.update_topology(0.5)
    for n, m in engine.masks.items():
        grown = m & ~before[n]
        assert int(grown.sum()) == expected_k(0.5, int(before[n].sum()), m.numel())
        state = opt.state[params[n]]
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert bool((state[key][grown] == 0).all())
            assert bool((state[key][~m] != 0).any())  # untouched elsewhere (stale state is kept)
        assert bool((params[n].detach()[grown] == 0).all())
    assert engine.topology_version == 1 and engine.update_count == 1
    assert engine.step_count == 3  # update_topology does not count as an optimizer step


def test_set_prune_and_cosine_schedule_and_end_step():
    model, opt, engine = make("cnn1d", prune="set", grow="random", prune_schedule="cosine",
                              update_interval=2, end_step=6, prune_fraction=0.5)
    counts = expected_counts(model, engine.sparsity_target)
    moved = []
    for i in range(10):
        before = {n: m.clone() for n, m in engine.masks.items()}
        train_step(model, opt, engine, i)
        moved.append(sum(int((before[n] & ~m).sum()) for n, m in engine.masks.items()))
        assert {n: int(m.sum()) for n, m in engine.masks.items()} == counts
        assert_masked_zero(model, engine)
    # updates at steps 2 and 4 only (end_step=6 is exclusive), with p_t = 0.25 * (1 + cos(pi t / 6))
    assert [s for s, m in enumerate(moved, start=1) if m] == [2, 4]
    import math
    for step in (2, 4):
        p_t = 0.25 * (1 + math.cos(math.pi * step / 6))
        assert moved[step - 1] == sum(expected_k(p_t, c, engine.masks[n].numel()) for n, c in counts.items())


def test_explored_fraction_increases_and_stats():
    model, opt, engine = make("mlp", grow="random", update_interval=1)
    stats0 = engine.stats()
    assert stats0["explored_fraction"] == pytest.approx(1 - stats0["sparsity"])
    previous = stats0["explored_fraction"]
    for i in range(3):
        train_step(model, opt, engine, i)
        now = engine.stats()["explored_fraction"]
        assert now > previous
        previous = now
    stats = engine.stats()
    assert stats["itop_rate"] == stats["explored_fraction"] <= 1.0
    assert stats["steps"] == 3 and stats["updates"] == 3 and stats["topology_version"] == 3
    assert stats["pruned_total"] == stats["regrown_total"] > 0
    assert stats["sparsity"] == pytest.approx(engine.sparsity_target, abs=0.01)
    dense = sum(p.numel() for n, p in model.named_parameters() if n not in engine.masks)
    assert engine.nonzero_params() == stats["active_params"] + dense
    assert engine.densities() == stats["densities"]


def test_erk_dense_layer_never_changes():
    model, opt, engine = make("erk_dense", grow="gradient", update_interval=1)
    assert bool(engine.masks["small.weight"].all())
    for i in range(3):
        train_step(model, opt, engine, i)
    assert bool(engine.masks["small.weight"].all()) and bool(engine.masks["out.weight"].all())
    assert engine.densities()["small.weight"] == 1.0


def test_engine_memory_is_small():
    model, _, engine = make("cnn2d")
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert engine.memory_bytes() / param_bytes <= 0.3


def _run(resume_at, total, arch="cnn1d", grow="random", optimizer="sgd_nesterov", tmp=None):
    model, opt, engine = make(arch, optimizer, grow=grow, update_interval=3, seed=0)
    for i in range(resume_at):
        train_step(model, opt, engine, i)
    if resume_at < total:
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "engine": engine.state_dict()}, buf)
        buf.seek(0)
        saved = torch.load(buf, weights_only=True)
        # a fresh model with a different initialisation: everything must come from the checkpoint
        model, opt, engine = make(arch, optimizer, grow=grow, update_interval=3, seed=123)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        engine.load_state_dict(saved["engine"])
        for i in range(resume_at, total):
            train_step(model, opt, engine, i)
    return model, opt, engine


@pytest.mark.parametrize("grow,optimizer", [("random", "sgd_nesterov"), ("gradient", "adam"), ("momentum", "sgd_momentum_wd")])
def test_state_dict_round_trip_is_bitwise(grow, optimizer):
    ref_model, ref_opt, ref_engine = _run(10, 10, grow=grow, optimizer=optimizer)
    model, opt, engine = _run(4, 10, grow=grow, optimizer=optimizer)
    for (n, a), (_, b) in zip(ref_model.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), n
    for n in ref_engine.masks:
        assert torch.equal(ref_engine.masks[n], engine.masks[n])
    assert ref_engine.stats() == engine.stats()
    assert ref_engine.mask_checksum() == engine.mask_checksum()
    sa, sb = ref_engine.state_dict(), engine.state_dict()
    assert torch.equal(sa["generator_state"], sb["generator_state"])
    assert all(torch.equal(sa["ever_active"][n], sb["ever_active"][n]) for n in sa["ever_active"])


def test_given_masks_and_rescale():
    torch.manual_seed(0)
    model = CNN2d()
    original = {n: p.detach().clone() for n, p in sparsifiable_parameters(model)}
    masks = {"conv2.weight": torch.rand(16, 8, 3, 3) < 0.25}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = SparseEngine(model, opt, sparsity=None, masks=masks, update_interval=None, sparse_init="rescale")
    assert torch.equal(engine.masks["conv2.weight"], masks["conv2.weight"])
    assert bool(engine.masks["conv1.weight"].all()) and bool(engine.masks["fc.weight"].all())
    d = engine.densities()["conv2.weight"]
    w = dict(sparsifiable_parameters(model))["conv2.weight"].detach()
    m = masks["conv2.weight"]
    assert torch.allclose(w[m], original["conv2.weight"][m] / d**0.5)
    assert torch.equal(dict(sparsifiable_parameters(model))["conv1.weight"].detach(), original["conv1.weight"])
    with pytest.raises(ValueError, match="masks"):
        SparseEngine(CNN2d(), None, 0.5, masks={"nope.weight": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        SparseEngine(CNN2d(), None, 0.5, masks={"fc.weight": torch.ones(2, dtype=torch.bool)})


def test_initial_masks_depend_only_on_seed():
    m1 = SparseEngine(MLP(), None, 0.8, seed=5).masks
    m2 = SparseEngine(MLP(), None, 0.8, seed=5).masks
    m3 = SparseEngine(MLP(), None, 0.8, seed=6).masks
    assert all(torch.equal(m1[n], m2[n]) for n in m1)
    assert any(not torch.equal(m1[n], m3[n]) for n in m1)


def test_uniform_and_er_exact_counts():
    for dist in ("uniform", "er"):
        model, _, engine = make("grouped", distribution=dist, sparsity=0.6)
        assert {n: int(m.sum()) for n, m in engine.masks.items()} == expected_counts(model, 0.6, dist)


def _bad(**kwargs):
    model = MLP()
    opt = kwargs.pop("opt", torch.optim.SGD(model.parameters(), lr=0.1))
    args = {"sparsity": 0.5, **kwargs}
    return SparseEngine(model, opt, **args)


@pytest.mark.parametrize("kwargs,match", [
    ({"sparsity": 1.0}, "sparsity must be in \\[0, 1\\)"),
    ({"sparsity": -0.1}, "sparsity"),
    ({"distribution": "gauss"}, "distribution must be one of uniform, er, erk"),
    ({"prune": "random"}, "prune must be one of magnitude, set"),
    ({"grow": "best"}, "grow must be one of gradient, momentum, random"),
    ({"prune_schedule": "linear"}, "prune_schedule must be one of constant, cosine"),
    ({"prune_schedule": "cosine"}, "end_step"),
    ({"update_interval": 0}, "update_interval must be a positive integer"),
    ({"update_interval": -5}, "update_interval"),
    ({"update_interval": 2.5}, "update_interval"),
    ({"prune_fraction": 1.5}, "prune_fraction must be in \\[0, 1\\]"),
    ({"prune_fraction": -0.1}, "prune_fraction"),
    ({"end_step": -1}, "end_step"),
    ({"sparse_init": "kaiming"}, "sparse_init must be one of none, rescale"),
    ({"grow": "momentum"}, "grow='momentum' needs an optimizer with momentum"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _bad(**kwargs)


def test_bad_update_topology_fraction_and_no_layer():
    _, _, engine = make("mlp")
    with pytest.raises(ValueError, match="fraction must be in \\[0, 1\\]"):
        engine.update_topology(1.2)
    with pytest.raises(ValueError, match="model: no sparsifiable layer"):
        SparseEngine(torch.nn.Sequential(torch.nn.ReLU()), None, 0.5)
    with pytest.raises(ValueError, match="state"):
        engine.load_state_dict({"masks": {}})


def test_momentum_grow_accepted_for_adam_and_sgd_momentum():
    _bad(grow="momentum", opt=torch.optim.Adam(MLP().parameters()))
    _bad(grow="momentum", opt=torch.optim.SGD(MLP().parameters(), lr=0.1, momentum=0.9))


def test_custom_rule_must_select_exactly_k():
    from freetickets.sparse.rules import PRUNE_RULES

    def lazy_prune(weight, active, k):
        return torch.zeros_like(active)

    PRUNE_RULES["lazy"] = lazy_prune
    try:
        _, _, engine = make("mlp", prune="lazy")
        with pytest.raises(RuntimeError, match="exactly"):
            engine.update_topology(0.5)
    finally:
        del PRUNE_RULES["lazy"]


def test_library_does_not_print(capsys):
    model, opt, engine = make("mlp", update_interval=1)
    train_step(model, opt, engine, 0)
    engine.update_topology(0.8)
    engine.stats()
    assert capsys.readouterr().out == ""


def test_global_magnitude_masks_exact_and_ties():
    from freetickets.sparse import global_magnitude_masks

    named = {"a": torch.tensor([[1.0, -3.0], [2.0, 0.5]]), "b": torch.tensor([2.0, -2.0, 0.1, 4.0])}
    masks = global_magnitude_masks(named, 0.5)  # keep 4 of 8: 4, 3, then two of the tied 2.0s
    assert masks["a"].tolist() == [[False, True], [True, False]]
    assert masks["b"].tolist() == [True, False, False, True]
    model = CNN2d()
    masks = global_magnitude_masks(model, 0.8)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.2 * total)
    params = dict(sparsifiable_parameters(model))
    # apart from each output unit's largest weight (the per-layer minimum), one global threshold
    row_max = {n: params[n].detach().abs().reshape(params[n].shape[0], -1).max(1).values for n in masks}
    kept_min = min(params[n].detach().abs()[m & (params[n].detach().abs().reshape(params[n].shape[0], -1)
                                                < row_max[n][:, None]).view(m.shape)].min() for n, m in masks.items())
    pruned_max = max(params[n].detach().abs()[~m].max() for n, m in masks.items())
    assert kept_min >= pruned_max
    engine = SparseEngine(model, None, masks=masks, update_interval=None)
    assert engine.sparsity() == pytest.approx(0.8, abs=1e-3)


def test_global_magnitude_masks_never_empty_a_layer():
    """A layer of small weights beside large ones: one threshold would empty it; every output
    unit keeps its largest weight instead, and the total stays exact."""
    from freetickets.sparse import global_magnitude_masks

    g = torch.Generator().manual_seed(0)
    named = {"big": torch.randn(8, 50, generator=g) * 10.0,  # 400 weights of |w| ~ 10
             "small": torch.randn(3, 40, generator=g) * 1e-3}  # 120 weights of |w| ~ 1e-3
    masks = global_magnitude_masks(named, 0.8)  # keep round(0.2 * 520) = 104 < 400 big ones
    assert sum(int(m.sum()) for m in masks.values()) == 104
    small = named["small"].abs()
    assert masks["small"].sum(1).tolist() == [1, 1, 1]  # exactly the minimum, nothing more
    assert masks["small"].nonzero()[:, 1].tolist() == small.argmax(1).tolist()  # each row's largest
    assert masks["big"].sum(1).min() >= 1
    # 11 output units need 11 weights: sparsity 0.99 keeps round(5.2) = 5 -> refused in one line
    with pytest.raises(ValueError, match=r"fewer than the 11 output units.*at most 0\.9788"):
        global_magnitude_masks(named, 0.99)


def test_consistency_check_single_rank_process_group(tmp_path):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = CNN1d()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        engine = SparseEngine(ddp, opt, 0.7, update_interval=1, check_consistency=True)
        assert "conv1.weight" in engine.masks  # names of the unwrapped model
        x, y = batch(model, 0)
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
        engine.step()
        assert engine.last_step_was_update
        assert_masked_zero(model, engine)
    finally:
        dist.destroy_process_group()


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 24), min_size=2, max_size=4),
    kernel=st.integers(1, 3),
    sparsity=st.floats(0.0, 0.98),
    distribution=st.sampled_from(["uniform", "er", "erk"]),
    fraction=st.floats(0.0, 1.0),
    prune=st.sampled_from(["magnitude", "set"]),
    regrow_pruned=st.booleans(),
)
def test_exact_counts_property(widths, kernel, sparsity, distribution, fraction, prune, regrow_pruned):
    """Random conv/linear shapes: exact counts at init and after prune-and-regrow of any fraction."""
    torch.manual_seed(0)
    layers = [torch.nn.Conv1d(2, widths[0], kernel)]
    layers += [torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    model = torch.nn.Sequential(*layers)
    engine = SparseEngine(model, None, sparsity, distribution=distribution, prune=prune, grow="random",
                          regrow_pruned=regrow_pruned)
    counts = expected_counts(model, sparsity, distribution)
    assert {n: int(m.sum()) for n, m in engine.masks.items()} == counts
    before = {n: m.clone() for n, m in engine.masks.items()}
    engine.update_topology(fraction)
    params = dict(sparsifiable_parameters(model))
    for n, m in engine.masks.items():
        assert int(m.sum()) == counts[n]
        k = expected_k(fraction, counts[n], m.numel(), regrow_pruned)
        moved = int((m & ~before[n]).sum())
        assert moved == int((before[n] & ~m).sum()) and (moved == k if not regrow_pruned else moved <= k)
        assert bool((params[n].detach()[~m] == 0).all())
    total = sum(expected_k(fraction, c, engine.masks[n].numel(), regrow_pruned) for n, c in counts.items())
    assert engine.pruned_total == engine.regrown_total == total
    assert sum(int((m & ~before[n]).sum()) for n, m in engine.masks.items()) == total - engine.reactivated_total


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_masks_follow_device_and_match_cpu():
    """New tensors follow the parameter's device; the CPU generator makes masks device-independent."""
    masks = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = CNN2d().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        engine = SparseEngine(model, opt, 0.7, grow="random", update_interval=1)
        masks[device] = {n: m.cpu().clone() for n, m in engine.masks.items()}  # initial masks: seed only (clone: on the CPU .cpu() is the same tensor, which the update changes in place)
        x, y = batch(model, 0)
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()
        opt.step()
        engine.step()
        assert all(m.device.type == device for m in engine.masks.values())
        assert_masked_zero(model, engine)
        assert engine.densities() == {n: int(m.sum()) / m.numel() for n, m in masks[device].items()}
    assert all(torch.equal(masks["cpu"][n], masks["cuda"][n]) for n in masks["cpu"])


def test_fast_update_helpers_match_torch():
    """The CPU helpers of the update path give exactly the torch results."""
    from freetickets.sparse.engine import _pack_bits_fast, _zero_at
    from freetickets.sparse.masks import pack_bits

    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 8, 1001, 4096):
        m = torch.rand(n, generator=g) < 0.3
        assert torch.equal(_pack_bits_fast(m.view(-1, 1)), pack_bits(m.view(-1, 1)))
    where = torch.rand(30, 40, generator=g) < 0.2
    for make_t in (lambda x: x, lambda x: torch.nn.Parameter(x), lambda x: x.t().contiguous().t(),
                   lambda x: x.double(), lambda x: x.half()):
        base = -torch.rand(30, 40, generator=g)  # negative values: zeros must be +0.0
        base[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
        where[0, :2] = True  # NaN and inf selected: become +0.0; -inf and -0.0 kept bitwise
        where[0, 2:4] = False
        t = make_t(base.clone())
        version = t._version
        _zero_at(t, where)
        expected = make_t(base.clone()).detach().masked_fill(where, 0)
        assert torch.equal(t.detach().contiguous().view(torch.uint8), expected.contiguous().view(torch.uint8))
        assert not torch.signbit(t.detach()[where]).any()
        if isinstance(t, torch.nn.Parameter):
            assert t._version > version
