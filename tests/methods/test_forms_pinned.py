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
    assert (job.kind, job.seed, len(job.plan)) == ("train", 7, 4)


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
