"""Pinned behaviour of the model-form recipes (MIMO, BatchEnsemble, MC dropout, Packed-Ensembles,
Masksembles) and of :mod:`freetickets.flops.efficient`: option boundaries with their exact
messages, the manifest's ``model_form`` entries, the one-job plan, and hand-counted FLOPs."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from freetickets.errors import UserError
from freetickets.flops.efficient import form_forward_flops, rank1_flops
from freetickets.methods import get_recipe
from freetickets.methods.forms import ensemble_log_probs
from freetickets.data.base import derive_seed
from freetickets.methods.base import Job
from freetickets.methods.mimo import step_generator
from freetickets.train.config import TrainConfig

FORMS = ["mimo", "batchensemble", "mcdropout", "packed", "masksembles"]


def _cfg(method: str, **overrides) -> TrainConfig:
    return TrainConfig(**{"method": method, "members": 3, "seed": 7, "epochs": 4, **overrides})


@pytest.mark.parametrize("method", FORMS)
def test_two_members_are_the_minimum(method):
    get_recipe(method).validate(_cfg(method, members=2))
    with pytest.raises(UserError, match=rf"^--members: {method} needs at least 2 members, got 1$"):
        get_recipe(method).validate(_cfg(method, members=1))


@pytest.mark.parametrize("method", FORMS)
def test_one_network_one_seed_one_job(method):
    recipe, cfg = get_recipe(method), _cfg(method)
    assert recipe.independent_members is False
    assert recipe.seeds(11, 3) == [11]
    assert recipe.members_per_ticket(cfg) == 3
    (job,) = recipe.jobs(cfg)
    assert (job.kind, job.member, job.seed, len(job.plan)) == ("train", 0, 7, 4)


def test_model_forms_record_every_setting():
    s = _cfg("x", members="4", seed="9", batchensemble_init="ones", dropout_rate="0.25", packed_alpha="3",
             packed_gamma="2", masksembles_scale="1.5").to_dict()
    assert get_recipe("mimo").model_form(s) == {"kind": "mimo", "members": 4}
    assert get_recipe("batchensemble").model_form(s) == {"kind": "batchensemble", "members": 4, "init": "ones"}
    assert get_recipe("mcdropout").model_form(s) == {"kind": "mcdropout", "members": 4, "rate": 0.25, "seed": 9}
    assert get_recipe("packed").model_form(s) == {"kind": "packed", "members": 4, "alpha": 3.0, "gamma": 2}
    assert get_recipe("masksembles").model_form(s) == {"kind": "masksembles", "members": 4, "scale": 1.5,
                                                       "seed": 9}


@pytest.mark.parametrize("rho", [0.0, 1.0, 0, 1, 0.5])
def test_mimo_input_repetition_accepts_probabilities(rho):
    get_recipe("mimo").validate(_cfg("mimo", mimo_input_repetition=rho))


@pytest.mark.parametrize("rho", [-0.01, 1.01, True, "0.5", None])
def test_mimo_input_repetition_rejects_the_rest(rho):
    with pytest.raises(UserError, match=rf"^--mimo-input-repetition: expected a probability in \[0, 1\], "
                                        rf"got {re_escape(repr(rho))}$"):
        get_recipe("mimo").validate(_cfg("mimo", mimo_input_repetition=rho))


@pytest.mark.parametrize("reps, ok", [(1, True), (3, True), (0, False), (True, False), (2.0, False), ("2", False)])
def test_mimo_batch_repetitions_are_integers_from_one(reps, ok):
    cfg = _cfg("mimo", mimo_batch_repetitions=reps)
    if ok:
        get_recipe("mimo").validate(cfg)
    else:
        with pytest.raises(UserError, match=rf"^--mimo-batch-repetitions: expected an integer >= 1, "
                                            rf"got {re_escape(repr(reps))}$"):
            get_recipe("mimo").validate(cfg)


@pytest.mark.parametrize("rate, ok", [(0.5, True), (1e-6, True), (0.999, True), (0.0, False), (1.0, False),
                                      (True, False), ("0.5", False)])
def test_dropout_rate_is_an_open_interval(rate, ok):
    cfg = _cfg("mcdropout", dropout_rate=rate)
    if ok:
        get_recipe("mcdropout").validate(cfg)
    else:
        with pytest.raises(UserError, match=rf"^--dropout-rate: expected a probability in \(0, 1\), "
                                            rf"got {re_escape(repr(rate))}$"):
            get_recipe("mcdropout").validate(cfg)


def test_batchensemble_init_names_the_choices():
    for init in ("random_sign", "normal", "ones"):
        get_recipe("batchensemble").validate(_cfg("batchensemble", batchensemble_init=init))
    with pytest.raises(UserError, match=r"^--batchensemble-init: 'zeros' is not one of random_sign, normal, ones$"):
        get_recipe("batchensemble").validate(_cfg("batchensemble", batchensemble_init="zeros"))


def test_packed_and_masksembles_check_their_options():
    with pytest.raises(UserError, match="^--packed-alpha"):
        get_recipe("packed").validate(_cfg("packed", packed_alpha=0))
    with pytest.raises(UserError, match="^--packed-gamma"):
        get_recipe("packed").validate(_cfg("packed", packed_gamma=0))
    with pytest.raises(UserError, match="^--masksembles-scale"):
        get_recipe("masksembles").validate(_cfg("masksembles", masksembles_scale=0.5))


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_ensemble_log_probs_is_the_log_of_the_mean_probability():
    logits = torch.tensor([[[0.0, math.log(3.0)]], [[math.log(3.0), 0.0]], [[0.0, 0.0]]])  # (M=3, B=1, C=2)
    # member probabilities (1/4, 3/4), (3/4, 1/4), (1/2, 1/2): mean (1/2, 1/2)
    torch.testing.assert_close(ensemble_log_probs(logits), torch.log(torch.tensor([[0.5, 0.5]])))
    big = torch.tensor([[[1000.0, 0.0]], [[1000.0, 0.0]]])  # stable: no overflow
    torch.testing.assert_close(ensemble_log_probs(big), torch.tensor([[0.0, -1000.0]]))
    assert ensemble_log_probs(logits.double()).dtype == torch.float32


def test_mimo_step_generator_is_a_function_of_seed_and_step():
    draw = lambda seed, step: torch.rand(4, generator=step_generator(seed, step, torch.device("cpu")))  # noqa: E731
    torch.testing.assert_close(draw(1, 5), draw(1, 5))
    assert not torch.equal(draw(1, 5), draw(1, 6))
    assert not torch.equal(draw(1, 5), draw(2, 5))


def test_form_forward_flops_restores_training_flags_and_matches_the_model_dtype():
    net = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2)).double()
    net[1].eval()  # a mixed state must come back as it was
    assert form_forward_flops(net, torch.zeros(5, 4)) == 5 * 2 * (4 * 3 + 3 * 2)  # float32 example, float64 model
    assert [m.training for m in net.modules()] == [True, True, False, True]


def test_rank1_flops_is_zero_without_batchensemble_layers_and_leaves_no_hooks():
    net = nn.Sequential(nn.Linear(4, 3))
    assert rank1_flops(net, torch.zeros(1, 4)) == 0.0
    be = get_recipe("batchensemble").build_model(nn.Sequential(nn.Linear(4, 3)), _cfg("batchensemble", members=2))
    assert rank1_flops(be, torch.zeros(2, 4)) == 2 * (4 + 3)
    assert all(not m._forward_hooks for m in be.modules())


@pytest.mark.parametrize("method, expected", [
    # one Linear 6 -> 5 -> heads; MIMO: 3 stacked inputs (18) and 3 heads (15), batch repeated twice
    ("mimo", (2 * 2 * (18 * 5 + 5 * 15), 2 * (18 * 5 + 5 * 15))),
    # MC dropout: one dense forward to train, 3 to infer
    ("mcdropout", (2 * (6 * 5 + 5 * 5), 3 * 2 * (6 * 5 + 5 * 5))),
])
def test_form_flops_hand_counts(method, expected):
    cfg = _cfg(method, mimo_batch_repetitions=2)
    recipe = get_recipe(method)
    base = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 5))
    assert recipe.form_flops(recipe.build_model(base, cfg), (1, 6), cfg) == expected


def test_mimo_step_stream_is_the_named_derived_seed():
    """Resumed runs redraw a step's shuffles from this stream: it must stay ``derive_seed("mimo-step",
    seed, step)``, so that a checkpoint written by one version resumes the same in the next."""
    expected = torch.rand(4, generator=torch.Generator().manual_seed(derive_seed("mimo-step", 3, 8)))
    torch.testing.assert_close(torch.rand(4, generator=step_generator(3, 8, torch.device("cpu"))), expected)


def test_mimo_training_batch_ignores_the_global_rng():
    """The step's shuffles come from (job seed, step), not torch's global generator."""
    recipe, cfg = get_recipe("mimo"), _cfg("mimo", members=2, mimo_batch_repetitions=2)
    x, y = torch.arange(12.0).reshape(6, 1, 2), torch.arange(6)
    job = Job("train", 0, 5, [])
    torch.manual_seed(0)
    first = recipe.training_batch(cfg, x, y, job, 3)
    torch.manual_seed(1)
    second = recipe.training_batch(cfg, x, y, job, 3)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    other = recipe.training_batch(cfg, x, y, job, 4)
    assert not torch.equal(first[1], other[1])


def test_form_validation_logits_are_the_ensemble_log_probabilities():
    class TwoMembers(nn.Module):
        def member_logits(self, x):
            return torch.stack([x, -x])  # (M=2, B, C)

    x = torch.tensor([[0.0, math.log(3.0)]])
    torch.testing.assert_close(get_recipe("mimo").validation_logits(TwoMembers(), x),
                               torch.log(torch.tensor([[0.5, 0.5]])))


def test_packed_training_rows_repeat_the_targets_per_member_and_sum_member_losses():
    recipe, cfg = get_recipe("packed"), _cfg("packed", members=3)
    output = torch.arange(24.0).reshape(3, 2, 4) / 10  # (M=3, B=2, C=4): member k in rows 2k, 2k + 1
    logits, targets = recipe.training_logits(output, torch.tensor([0, 3]))
    assert torch.equal(logits, output.reshape(6, 4)) and torch.equal(targets, torch.tensor([0, 3, 0, 3, 0, 3]))
    expected = 3 * torch.nn.functional.cross_entropy(logits, targets)
    torch.testing.assert_close(recipe.training_loss(logits, targets, cfg), expected)


def test_packed_and_masksembles_form_flops_hand_counts():
    """Packed (alpha 1, gamma 1, M = 2) of Linear 6 -> 4 -> 4 keeps the total width 4: the first
    layer reads the plain input (6 -> 4, 24 multiply-adds), the head is grouped in M groups and
    gives the 2 heads (4 -> 2 x 4 in 2 groups: 4 x 8 / 2 = 16): one forward costs ``2 (24 + 16)``,
    for training and inference alike. Masksembles trains one row (one mask) and infers M rows."""
    base = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 4))
    cfg = _cfg("packed", members=2, packed_alpha=1.0, packed_gamma=1)
    packed = get_recipe("packed")
    forward = 2 * (6 * 4 + 4 * 8 // 2)
    assert packed.form_flops(packed.build_model(base, cfg), (1, 6), cfg) == (forward, forward)
    base = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 4))
    cfg = _cfg("masksembles", members=3)
    masks = get_recipe("masksembles")
    one = 2 * (6 * 4 + 4 * 4)
    assert masks.form_flops(masks.build_model(base, cfg), (1, 6), cfg) == (one, 3 * one)
