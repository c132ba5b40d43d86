"""Known answers for the recipes' plans: EDST's learning-rate split, PF's fine-tuning rate, the
snapshot cycles, member seeds, and the step at which a job's topology updates end.

Plans are pure functions of the config, so these run without training.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from freetickets.methods import get_recipe
from freetickets.methods.base import EngineSetup, Job, sparse_engine
from freetickets.methods.edst import edst_plan
from freetickets.methods.pf import finetune_plan
from freetickets.methods.snapshot import snapshot_plan
from freetickets.train.config import TrainConfig


def _lrs(plan) -> list[float]:
    return [s.lr for s in plan]


@pytest.mark.parametrize("length, first_half", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)])
def test_edst_phase_of_any_length_splits_at_its_midpoint(length, first_half):
    """A refinement phase of L epochs runs ceil(L / 2) epochs at the first factor and the rest
    at the second: for odd L the middle epoch belongs to the FIRST half (i < L / 2)."""
    cfg = TrainConfig(method="edst", epochs=length, explore_epochs=0, members=1, lr=1.0,
                      refine_lr_factors=[0.5, 0.25])
    plan = edst_plan(cfg)
    assert _lrs(plan) == [0.5] * first_half + [0.25] * (length - first_half)
    assert [(s.phase_start, s.phase_end) for s in plan] == [(i == 0, i == length - 1) for i in range(length)]


def test_edst_plan_with_an_odd_last_phase():
    """1 exploration + 2 x 3 refinement epochs + 1 left over for the last phase (4 epochs)."""
    cfg = TrainConfig(method="edst", epochs=12, explore_epochs=1, members=3, lr=0.2,
                      refine_lr_factors=[0.5, 0.25])
    plan = edst_plan(cfg)
    assert [s.epoch for s in plan] == list(range(12))
    assert [s.phase for s in plan] == ["explore"] + ["refine"] * 11
    assert [s.phase_index for s in plan] == [0] + [0] * 3 + [1] * 3 + [2] * 5
    assert [s.takes_ticket for s in plan] == [False] + [True] * 11
    assert _lrs(plan) == pytest.approx([0.2] + [0.1, 0.1, 0.05] * 2 + [0.1, 0.1, 0.1, 0.05, 0.05], rel=1e-12)
    assert [s.epoch for s in plan if s.phase_end] == [0, 3, 6, 11]
    assert [s.epoch for s in plan if s.phase_start] == [0, 1, 4, 7]


def test_edst_without_exploration_starts_refining_at_epoch_zero():
    cfg = TrainConfig(method="edst", epochs=4, explore_epochs=0, members=2, lr=1.0)
    plan = edst_plan(cfg)
    assert [(s.phase, s.phase_index) for s in plan] == [("refine", 0)] * 2 + [("refine", 1)] * 2
    assert _lrs(plan) == pytest.approx([0.1, 0.01, 0.1, 0.01], rel=1e-12)


def test_pf_fine_tunes_at_pf_lr_whatever_the_training_lr_and_schedule():
    """Every fine-tuning epoch runs at ``pf_lr`` (not ``lr``, no decay), one phase of ``pf_epochs``."""
    cfg = TrainConfig(method="pf", lr=0.1, pf_lr=0.003, pf_epochs=3, lr_schedule="cosine")
    plan = finetune_plan(cfg)
    assert _lrs(plan) == [0.003, 0.003, 0.003]
    assert [(s.epoch, s.phase, s.phase_index, s.phase_start, s.phase_end) for s in plan] == [
        (0, "finetune", 0, True, False), (1, "finetune", 0, False, False), (2, "finetune", 0, False, True)]


def test_pf_jobs_parent_then_finetune_per_member_with_member_seeds():
    cfg = TrainConfig(method="pf", members=2, seed=7, epochs=2, pf_epochs=1, pf_lr=0.01, lr=0.1)
    jobs = get_recipe("pf").jobs(cfg)
    assert [(j.kind, j.member, j.seed, j.warmup) for j in jobs] == [
        ("parent", 0, 7, True), ("finetune", 0, 7, False), ("parent", 1, 8, True), ("finetune", 1, 8, False)]
    assert _lrs(jobs[1].plan) == [0.01]
    assert len(jobs[0].plan) == 2


def test_snapshot_cycles_restart_at_lr_and_the_last_takes_the_leftover():
    cfg = TrainConfig(method="snapshot", epochs=5, members=2, lr=1.0)
    plan = snapshot_plan(cfg)
    assert [s.phase_index for s in plan] == [0, 0, 1, 1, 1]
    assert _lrs(plan) == pytest.approx([1.0, 0.5, 1.0, 0.75, 0.25], rel=1e-12)
    assert [s.epoch for s in plan if s.phase_end] == [1, 4]


@pytest.mark.parametrize("method, seeds", [("dst", [3, 4, 5]), ("deep", [3, 4, 5]), ("edst", [3]),
                                           ("snapshot", [3])])
def test_member_seeds(method, seeds):
    assert get_recipe(method).seeds(3, 3) == seeds


def _setup(total_steps: int, **cfg_overrides) -> EngineSetup:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    cfg = TrainConfig(method="dst", sparsity=0.5, **cfg_overrides)
    job = Job("train", 0, 0, [])
    return EngineSetup(cfg, job, model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps,
                       load_parent=lambda m: None)


@pytest.mark.parametrize("fraction, total, end", [(0.5, 10, 5), (0.75, 10, 7), (0.01, 10, 1), (1.0, 9, 9)])
def test_updates_end_at_the_floor_of_the_fraction_of_the_jobs_steps_and_at_least_one(fraction, total, end):
    engine = sparse_engine(_setup(total, update_end_fraction=fraction), update_interval=2)
    assert engine.end_step == end
    assert engine.update_interval == 2


def test_cosine_schedule_anneals_to_the_jobs_last_step_and_constant_may_update_on_the_last_step():
    assert sparse_engine(_setup(12, prune_schedule="cosine"), update_interval=3).end_step == 12
    # the presets' constant schedule keeps updating through the job's last step (end_step = total + 1)
    assert sparse_engine(_setup(12, prune_schedule="constant"), update_interval=3).end_step == 13
    static = sparse_engine(_setup(12), update_interval=None)
    assert static.update_interval is None


def test_standard_plan_is_one_train_phase_with_the_configured_schedule():
    """Every member trained from scratch runs one "train" phase: start flag on epoch 0, end flag
    on the last epoch, rates from ``lr_schedule`` (``epochs`` may be given instead of cfg's)."""
    from freetickets.epoch_plans import standard_plan

    cfg = TrainConfig(method="dense", epochs=4, lr=0.2, lr_schedule="cosine")
    plan = standard_plan(cfg)
    assert [(s.epoch, s.phase, s.phase_index, s.phase_start, s.phase_end, s.takes_ticket) for s in plan] == [
        (0, "train", 0, True, False, True), (1, "train", 0, False, False, True),
        (2, "train", 0, False, False, True), (3, "train", 0, False, True, True)]
    assert _lrs(plan) == pytest.approx([0.2, 0.1 * (1 + 2 ** -0.5), 0.1, 0.1 * (1 - 2 ** -0.5)], rel=1e-12)
    short = standard_plan(cfg, epochs=2)
    assert _lrs(short) == pytest.approx([0.2, 0.1], rel=1e-12)
    assert [s.phase_end for s in short] == [False, True]
    constant = TrainConfig(method="dense", epochs=3, lr=0.2, lr_schedule="constant")
    assert _lrs(standard_plan(constant)) == [0.2, 0.2, 0.2]
    step = TrainConfig(method="dense", epochs=4, lr=1.0, lr_schedule="multistep", lr_milestones=[0.5], lr_gamma=0.5)
    assert _lrs(standard_plan(step)) == [1.0, 1.0, 0.5, 0.5]


def test_warmup_factor_without_warmup_is_one():
    from freetickets.epoch_plans import warmup_factor

    assert warmup_factor(0, 0) == 1.0
    assert warmup_factor(0, -3) == 1.0
    assert [warmup_factor(s, 2) for s in range(3)] == [0.5, 1.0, 1.0]


# ---- what the recipes hand to the loop: engines, jumps, sources (called directly, no training)
class _JumpRecorder:
    def __init__(self) -> None:
        self.fractions: list[float] = []

    def update_topology(self, fraction: float) -> None:
        self.fractions.append(fraction)


def test_edst_jumps_after_every_refinement_phase_but_the_last():
    cfg = TrainConfig(method="edst", epochs=7, explore_epochs=1, members=3, jump_fraction=0.3)
    recipe, engine = get_recipe("edst"), _JumpRecorder()
    (job,) = recipe.jobs(cfg)
    assert (job.kind, job.member, job.tickets, job.select, job.seed) == ("train", 0, "phase", "best", cfg.seed)
    jumped_after = []
    for spec in job.plan:
        if spec.phase_end:
            before = len(engine.fractions)
            recipe.end_of_phase(cfg, job, spec, engine)
            if len(engine.fractions) > before:
                jumped_after.append((spec.phase, spec.phase_index))
    assert jumped_after == [("refine", 0), ("refine", 1)]  # not after exploration, not after the last phase
    assert engine.fractions == [0.3, 0.3]
    assert recipe.job_masks(cfg, job) == "dynamic"


def test_edst_engine_updates_every_update_interval():
    setup = _setup(20, update_interval=4)
    engine = get_recipe("edst").make_engine(setup)
    assert engine.update_interval == 4 and engine.sparsity() == pytest.approx(0.5, abs=0.02)


def test_edst_refuses_plans_without_refinement_epochs():
    from freetickets.errors import UserError

    recipe = get_recipe("edst")
    with pytest.raises(UserError, match=r"^--explore-epochs: 4 must be below --epochs 4 \(refinement needs epochs\)$"):
        recipe.validate(TrainConfig(method="edst", epochs=4, explore_epochs=4, members=2))
    with pytest.raises(UserError, match="fewer than one epoch per refinement phase for 3 members"):
        recipe.validate(TrainConfig(method="edst", epochs=4, explore_epochs=2, members=3))
    recipe.validate(TrainConfig(method="edst", epochs=5, explore_epochs=2, members=3))  # one epoch each
    recipe.validate(TrainConfig(method="edst", epochs=5, explore_epochs=4, members=1))  # one epoch left


def test_pf_finetune_engine_keeps_the_parents_largest_weights_fixed():
    """The fine-tuning job loads its dense parent, keeps the largest |w| globally at the run's
    sparsity and never updates the masks; the parent job trains dense (no engine)."""
    setup = _setup(10)
    loaded = []
    with torch.no_grad():
        for p in setup.model.parameters():
            p.copy_(torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape) - p.numel() / 2)
    setup.load_parent = loaded.append
    recipe = get_recipe("pf")
    engine = recipe.make_engine(setup)
    assert loaded == [setup.model]
    assert engine.update_interval is None
    weights = {n: p for n, p in setup.model.named_parameters() if n in engine.masks}
    kept = torch.cat([p[engine.masks[n]].abs().flatten() for n, p in weights.items()])
    dropped = torch.cat([p[~engine.masks[n]].flatten() for n, p in weights.items()])
    assert torch.all(dropped == 0)  # masked weights are zeroed: the parent is pruned once
    assert engine.sparsity() == pytest.approx(0.5, abs=1e-9)
    assert kept.min() > 0
    parent = EngineSetup(setup.cfg, Job("parent", 0, 0, []), setup.model, setup.optimizer, 10, loaded.append)
    assert recipe.make_engine(parent) is None
    assert recipe.job_masks(setup.cfg, Job("parent", 0, 0, [])) is None
    assert recipe.job_masks(setup.cfg, Job("finetune", 0, 0, [])) == "static"


@pytest.mark.parametrize("manifest, message", [
    ({"method": "dst", "model": "mlp", "data": "mnist1d", "tickets": [{}, {}]},
     "is a 'dst' run; PF needs dense parents (a deep or dense run)$"),
    ({"method": "deep", "model": "cnn1d", "data": "mnist1d", "tickets": [{}, {}]}, "trained cnn1d on mnist1d, not mlp"),
    ({"method": "deep", "model": "mlp", "data": "cifar10", "tickets": [{}, {}]}, "trained mlp on cifar10"),
    ({"method": "dense", "model": "mlp", "data": "mnist1d", "tickets": [{}]}, "has 1 dense models; --members 2"),
    ({"method": "deep", "model": "mlp", "data": "mnist1d", "tickets": [{}, {}]}, None),
    ({"method": "dense", "model": "mlp", "data": "mnist1d", "tickets": [{}, {}, {}]}, None),
])
def test_pf_from_run_checks_the_parents(manifest, message):
    from freetickets.errors import UserError

    def read(path):
        assert path == "parents"
        return manifest

    cfg = TrainConfig(method="pf", members=2, model="mlp", data="mnist1d", from_run="parents")
    recipe = get_recipe("pf")
    if message is None:
        assert recipe.check_sources(cfg, read) is manifest
    else:
        with pytest.raises(UserError, match="^--from: parents .*" + message.replace("(", r"\(").replace(")", r"\)")):
            recipe.check_sources(cfg, read)
    assert recipe.check_sources(TrainConfig(method="pf", members=2), read) is None
    assert [j.kind for j in recipe.jobs(cfg)] == ["finetune", "finetune"]  # parents come from the run


def test_pf_from_run_names_the_flag_when_the_run_cannot_be_read():
    from freetickets.errors import UserError

    def unreadable(path):
        raise UserError(f"{path}: run directory not found")

    with pytest.raises(UserError, match="^--from: nowhere: run directory not found$"):
        get_recipe("pf").check_sources(TrainConfig(method="pf", from_run="nowhere"), unreadable)


def test_pf_finetuning_never_rescales_the_parents_weights():
    """Even with ``sparse_init="rescale"`` in the run's settings, PF keeps the parent's surviving
    weights as they are (rescaling is for random sparse initialisation, not a trained parent)."""
    setup = _setup(10, sparse_init="rescale")
    with torch.no_grad():
        for p in setup.model.parameters():
            p.copy_(torch.linspace(-1.0, 1.0, p.numel()).reshape(p.shape))
    parent = {n: p.detach().clone() for n, p in setup.model.named_parameters()}
    engine = get_recipe("pf").make_engine(setup)
    for n, p in setup.model.named_parameters():
        if n in engine.masks:
            assert torch.equal(p[engine.masks[n]], parent[n][engine.masks[n]])


@pytest.mark.parametrize("method, expected", [
    ("dense", [("train", 0, 5)]),
    ("deep", [("train", 0, 5), ("train", 1, 6), ("train", 2, 7)]),
    ("dst", [("train", 0, 5), ("train", 1, 6), ("train", 2, 7)]),
    ("static", [("train", 0, 5), ("train", 1, 6), ("train", 2, 7)]),
])
def test_from_scratch_recipes_train_one_job_per_member_with_its_seed(method, expected):
    cfg = TrainConfig(method=method, members=3, seed=5, epochs=2)
    jobs = get_recipe(method).jobs(cfg)
    assert [(j.kind, j.member, j.seed) for j in jobs] == expected
    assert all(len(j.plan) == 2 and j.tickets == "best" and j.select == "best" for j in jobs)
    if method != "dense":  # --member K trains member K alone, with its own seed
        one = TrainConfig(method=method, members=3, seed=5, epochs=2, member=2)
        assert [(j.member, j.seed) for j in get_recipe(method).jobs(one)] == [(2, 7)]


def test_dst_and_static_engines_and_planned_masks():
    from freetickets.errors import UserError

    dst, static = get_recipe("dst"), get_recipe("static")
    assert dst.make_engine(_setup(10, update_interval=3)).update_interval == 3
    assert static.make_engine(_setup(10, update_interval=3)).update_interval is None
    job = Job("train", 0, 0, [])
    assert dst.job_masks(TrainConfig(method="dst"), job) == "dynamic"
    assert static.job_masks(TrainConfig(method="static"), job) == "static"
    with pytest.raises(UserError) as info:
        dst.validate(TrainConfig(method="dst", update_interval=None))
    assert str(info.value) == ("--update-interval: dst needs a topology update interval "
                               "(use --method static for fixed masks)")


def test_sparse_engine_takes_every_sparsity_setting_of_the_run():
    setup = _setup(20, prune="set", grow="random", prune_fraction=0.3, prune_schedule="cosine",
                   distribution="uniform", sparse_init="rescale", regrow_pruned=False)
    setup.job = Job("train", 1, 42, [])
    setup.check_consistency = True
    engine = sparse_engine(setup, update_interval=4)
    assert (engine.prune, engine.grow, engine.prune_fraction, engine.prune_schedule, engine.distribution) == (
        "set", "random", 0.3, "cosine", "uniform")
    assert (engine.seed, engine.sparse_init, engine.regrow_pruned, engine.check_consistency) == (
        42, "rescale", False, True)
    assert engine.optimizer is setup.optimizer and engine.end_step == 20


def test_snapshot_cycles_flags_job_and_the_one_epoch_per_cycle_edge():
    from freetickets.errors import UserError

    cfg = TrainConfig(method="snapshot", epochs=5, members=2, lr=1.0, seed=3)
    plan = snapshot_plan(cfg)
    assert [(s.phase, s.phase_start, s.phase_end) for s in plan] == [
        ("cycle", True, False), ("cycle", False, True), ("cycle", True, False), ("cycle", False, False),
        ("cycle", False, True)]
    (job,) = get_recipe("snapshot").jobs(cfg)
    assert (job.kind, job.member, job.seed, job.tickets, job.select) == ("train", 0, 3, "phase", "last")
    recipe = get_recipe("snapshot")
    recipe.validate(TrainConfig(method="snapshot", epochs=3, members=3))  # one epoch per cycle is enough
    with pytest.raises(UserError, match="^--epochs: 2 is fewer than one epoch per cycle for 3 members$"):
        recipe.validate(TrainConfig(method="snapshot", epochs=2, members=3))
