"""Planned costs of a training configuration, without training (``freetickets flops``).

The same accounting as a real run's meter (:mod:`freetickets.flops.training`), applied to the
method's own jobs and epoch plans (:meth:`freetickets.methods.base.Recipe.jobs`):

- a job trains ``len(job.plan) x ceil(train_size / batch_size)`` optimizer steps;
- dense job: ``3 f_D`` per sample and step; sparse job (``Recipe.job_masks``): ``3 f_S``, and
  ``2 f_S + f_D`` on each gradient-growth update step (``dynamic`` masks with ``grow:
  gradient``: the steps ``s = 1 .. steps`` with ``s % update_interval == 0`` before the
  ``update_end_fraction`` end, as ``SparseEngine`` performs them); static masks never update;
- a model form (MIMO, BatchEnsemble, MC dropout): ``3 x`` its measured training forward per data
  sample (``Recipe.form_flops``);
- inference per test sample: the form's measured cost, else M x ``f_S`` (sparse) or ``f_D``;
- the reference is one dense model trained ``reference_epochs`` (default ``epochs``).

The training-time meter counts the final partial batch and DDP exactly; this plan uses
``ceil(n / batch)`` full batches, so it over-counts by at most one partial batch per epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# Classes and one sample's shape per data set (no data is loaded to plan): the model check's table.
from freetickets.train.config import DATA_SHAPES

__all__ = ["PlannedCost", "planned_cost"]


@dataclass
class PlannedCost:
    """Planned totals of one configuration (FLOPs; ratios to one dense model)."""

    steps: int  # optimizer steps over all jobs
    steps_per_epoch: int
    train_flops: float
    dense_train_flops: float  # one dense model trained reference_epochs
    inference_flops: float  # per test sample, whole ensemble
    dense_forward: float  # f_D per sample
    sparse_forward: float  # f_S per sample (= f_D for dense methods)
    active_weights: int  # active sparse-layer weights of one sparse member
    sparse_weights: int  # all sparse-layer weights of one member


def _update_steps(cfg, steps: int) -> int:
    """Gradient-growth update steps among ``steps`` (see the module docstring)."""
    if cfg.update_interval is None or cfg.grow != "gradient":
        return 0
    last = steps
    if cfg.update_end_fraction is not None:
        last = max(1, int(cfg.update_end_fraction * steps)) - 1  # updates happen strictly before the end step
    elif cfg.prune_schedule == "cosine":
        last = steps - 1
    return max(0, last) // cfg.update_interval


def planned_cost(cfg, train_size: int) -> PlannedCost:
    """Planned costs of the validated :class:`~freetickets.train.config.TrainConfig` ``cfg`` with
    ``train_size`` training examples per epoch (see the module docstring)."""
    import torch

    from freetickets.flops.counter import LayerFlops, dense_layer_flops
    from freetickets.flops.training import estimate_train_flops, forward_flops
    from freetickets.methods import get_recipe
    from freetickets.models import create_model
    from freetickets.sparse import layer_densities, sparsifiable_parameters

    classes, shape = DATA_SHAPES[cfg.data]
    kwargs = {k: v for k, v in cfg.model_kwargs.items() if k != "num_classes"}
    recipe = get_recipe(cfg.method)
    with torch.random.fork_rng(devices=[]):
        net = create_model(cfg.model, num_classes=classes, input_shape=shape, **kwargs)
        lf = dense_layer_flops(net, shape)
        named = dict(sparsifiable_parameters(net, include=cfg.include or None, exclude=cfg.exclude or None))
        form_cost = recipe.form_flops(recipe.build_model(net, cfg), shape, cfg)
    if cfg.structure == "channel" and recipe.sparse:  # whole channels: the densities their masks give
        from freetickets.sparse.channels import channel_densities

        dens = channel_densities(net, list(named.items()), cfg.sparsity, cfg.distribution, torch.zeros(2, *shape))
    else:
        dens = layer_densities({n: tuple(p.shape) for n, p in named.items()}, cfg.sparsity, cfg.distribution)
    f_s = forward_flops(lf, dens) if recipe.sparse else lf.total
    per_epoch = math.ceil(train_size / cfg.batch_size)
    total_steps, train = 0, 0.0
    for job in recipe.jobs(cfg):
        steps = len(job.plan) * per_epoch
        total_steps += steps
        masks = recipe.job_masks(cfg, job)
        if form_cost is not None:
            train += estimate_train_flops(LayerFlops(other=form_cost[0]), {}, steps, cfg.batch_size)
        elif masks is None:
            train += estimate_train_flops(lf, {}, steps, cfg.batch_size)
        else:
            updates = _update_steps(cfg, steps) if masks == "dynamic" and cfg.structure != "channel" else 0
            train += estimate_train_flops(lf, dens, steps, cfg.batch_size, update_steps=updates)
    if form_cost is not None:
        inference = form_cost[1]
    else:
        inference = cfg.num_members * f_s
    ref_steps = (cfg.reference_epochs or cfg.epochs) * per_epoch
    active = sum(int(round(dens[k] * named[k].numel())) for k in named) if recipe.sparse else \
        sum(p.numel() for p in named.values())
    return PlannedCost(steps=total_steps, steps_per_epoch=per_epoch, train_flops=train,
                       dense_train_flops=estimate_train_flops(lf, {}, ref_steps, cfg.batch_size),
                       inference_flops=inference, dense_forward=lf.total, sparse_forward=f_s,
                       active_weights=active, sparse_weights=sum(p.numel() for p in named.values()))
