"""Known answers of :func:`freetickets.flops.plan.planned_cost` (``freetickets flops``), worked by hand.

The model is the registry MLP with one hidden layer of 8 units on CIFAR-100's shape: its forward
costs ``f_D = 2 (3072 x 8 + 8 x 100) = 50 752`` FLOPs per sample (BatchNorm is not counted by
``FlopCounterMode``), which only holds when the plan builds the model with the data set's shape,
its 100 classes and the configured ``hidden_sizes``. Ten training examples in batches of 4 give
``ceil(10 / 4) = 3`` steps per epoch; two epochs give 6 steps per job.
"""
from __future__ import annotations

import pytest

from freetickets.flops.plan import planned_cost
from freetickets.train.config import TrainConfig

F_D = 2 * (3072 * 8 + 8 * 100)  # 50 752
HIDDEN_W, CLASSIFIER_W = 3072 * 8, 8 * 100
BATCH, STEPS = 4, 6


def _cfg(method: str, **overrides) -> TrainConfig:
    base = dict(method=method, model="mlp", data="cifar100", epochs=2, batch_size=BATCH, members=2,
                sparsity=0.5, distribution="uniform", update_interval=2,
                model_kwargs={"num_classes": 100, "hidden_sizes": [8]})  # num_classes is the data set's
    return TrainConfig(**{**base, **overrides})


def test_dense_plan_counts_three_forwards_per_sample_and_step():
    plan = planned_cost(_cfg("dense", reference_epochs=5), 10)
    assert plan.dense_forward == plan.sparse_forward == F_D
    assert (plan.steps, plan.steps_per_epoch) == (STEPS, 3)
    assert plan.train_flops == 3 * F_D * BATCH * STEPS
    assert plan.dense_train_flops == 3 * F_D * BATCH * 5 * 3  # the reference trains 5 epochs
    assert plan.inference_flops == F_D
    # A dense method keeps every sparse-layer weight, whatever cfg.sparsity says.
    assert plan.active_weights == plan.sparse_weights == HIDDEN_W + CLASSIFIER_W


def test_dst_plan_sums_jobs_and_counts_gradient_updates():
    """Two members of 6 steps each; uniform density 0.5 halves every layer (f_S = f_D / 2). With
    ``update_interval=2`` and no end, steps 2, 4, 6 of each job are gradient-growth updates costing
    ``2 f_S + f_D`` per sample instead of ``3 f_S``."""
    plan = planned_cost(_cfg("dst"), 10)
    f_s = F_D / 2
    assert plan.sparse_forward == f_s and plan.dense_forward == F_D
    assert plan.steps == 2 * STEPS
    per_job = BATCH * ((STEPS - 3) * 3 * f_s + 3 * (2 * f_s + F_D))
    assert plan.train_flops == 2 * per_job
    assert plan.dense_train_flops == 3 * F_D * BATCH * STEPS
    assert plan.inference_flops == 2 * f_s
    assert (plan.active_weights, plan.sparse_weights) == ((HIDDEN_W + CLASSIFIER_W) // 2, HIDDEN_W + CLASSIFIER_W)


def test_static_plan_never_updates():
    plan = planned_cost(_cfg("static"), 10)
    assert plan.train_flops == 2 * BATCH * STEPS * 3 * (F_D / 2)


def test_plan_uses_the_configured_distribution():
    """On the MNIST-1D CNN the convolutions' FLOPs are not proportional to their weights (each
    weight is used once per output position), so ERK (the default) and uniform densities with the
    same weight budget give different sparse forwards; uniform halves every layer."""
    cnn = dict(model="cnn1d", data="mnist1d", model_kwargs={"width": 4})
    uniform = planned_cost(_cfg("static", **cnn), 10)
    erk = planned_cost(_cfg("static", distribution="erk", **cnn), 10)
    assert uniform.sparse_forward == uniform.dense_forward / 2
    assert erk.active_weights == uniform.active_weights
    assert erk.sparse_forward != uniform.sparse_forward


def test_excluded_layers_stay_dense_in_the_plan():
    plan = planned_cost(_cfg("static", exclude=["classifier.weight"]), 10)
    assert plan.sparse_weights == HIDDEN_W and plan.active_weights == HIDDEN_W // 2
    assert plan.sparse_forward == 2 * (HIDDEN_W / 2 + CLASSIFIER_W)


@pytest.mark.parametrize("option", ["include", "exclude"])
def test_unmatched_include_or_exclude_pattern_is_an_error_in_the_plan_too(option):
    with pytest.raises(ValueError, match="nothing_here"):
        planned_cost(_cfg("static", **{option: ["nothing_here*"]}), 10)


def test_mimo_plan_counts_the_form_with_batch_repetitions():
    """MIMO with M = 2 reads 2 x 3 input channels: its first layer is 2 x 3072 -> 8 and its head
    8 -> 2 x 100, so one forward costs ``2 (6144 x 8 + 8 x 200)``; a data sample is trained
    ``mimo_batch_repetitions`` (2) times, inference is one forward for the whole ensemble."""
    plan = planned_cost(_cfg("mimo", mimo_batch_repetitions=2), 10)
    forward = 2 * (6144 * 8 + 8 * 200)
    assert plan.steps == STEPS
    assert plan.inference_flops == forward
    assert plan.train_flops == 3 * 2 * forward * BATCH * STEPS
    assert plan.dense_train_flops == 3 * F_D * BATCH * STEPS
    assert plan.active_weights == plan.sparse_weights == HIDDEN_W + CLASSIFIER_W


def test_mc_dropout_plan_trains_one_forward_and_infers_m():
    plan = planned_cost(_cfg("mcdropout"), 10)
    assert plan.train_flops == 3 * F_D * BATCH * STEPS
    assert plan.inference_flops == 2 * F_D


@pytest.mark.parametrize("method", ["static", "dst"])
def test_channel_plan_uses_the_channel_masks_densities_and_no_dense_gradient_steps(method):
    """MNIST-1D CNN of width 4 (convolutions 1 -> 4 -> 4 -> 4, kernel 5, length 40; head 40 -> 10):
    dense layer FLOPs 1600, 3200, 1600 and 800. Keeping half the channels of every layer (uniform
    0.5) halves the first convolution and the head, and quarters the two inner convolutions, whose
    inputs lost half their channels too: ``f_S = 800 + 800 + 400 + 400``; active weights
    ``10 + 20 + 20 + 200`` of 580. Channel updates never use the dense gradient (DST included)."""
    cfg = _cfg(method, model="cnn1d", data="mnist1d", model_kwargs={"width": 4}, structure="channel")
    plan = planned_cost(cfg, 10)
    assert plan.dense_forward == 7200
    assert plan.sparse_forward == 2400
    assert (plan.active_weights, plan.sparse_weights) == (250, 580)
    assert plan.train_flops == 2 * BATCH * STEPS * 3 * 2400
