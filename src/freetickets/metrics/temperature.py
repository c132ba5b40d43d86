"""Post-hoc temperature scaling of the ensemble prediction (Guo et al. 2017).

One temperature ``T > 0`` for the whole ensemble, applied to the log of its mean prediction:
``scaled = softmax(log p̄ / T)`` with ``p̄ = mean_m p_m``. It is fitted on held-out data (the
run's validation split, never the test set) by minimising the NLL of the scaled prediction
over ``log T`` in ``[log T_min, log T_max]`` with SciPy's bounded scalar minimiser (Brent's
method on an interval): the NLL is smooth and convex in ``1 / T`` (hence unimodal in ``log T``), so a bounded 1-D search
finds the optimum without gradients, and searching ``log T`` keeps ``T`` positive and treats
sharpening and softening symmetrically. ``T > 1`` softens an over-confident ensemble, ``T < 1``
sharpens an under-confident one; argmax (and so accuracy) is unchanged.

Why ``log p̄`` and not the mean logit: the ensemble's prediction is the mean of member
probabilities (design of freetickets), so scaling its log keeps ``T = 1`` exactly the raw
ensemble and leaves the raw metrics comparable with the scaled ones.
"""
from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from freetickets.metrics._validate import members_and_labels
from freetickets.metrics.calibration import ece
from freetickets.metrics.classification import brier

__all__ = ["mean_log_probs", "scaled_log_probs", "fit_temperature", "temperature_scaled_summary",
           "TEMPERATURE_BOUNDS"]

log = logging.getLogger(__name__)

#: The search interval of :func:`fit_temperature` (a fitted value at an end is logged).
TEMPERATURE_BOUNDS: tuple[float, float] = (0.05, 20.0)


def mean_log_probs(probs: Tensor) -> Tensor:
    """``log p̄`` of the ensemble, float64 (N, C), computed stably from members (M, N, C) or (N, C).

    ``log p̄ = logsumexp_m log p_m - log M``; a class that every member gives probability 0 is
    floored at the log of the smallest positive float64 (finite, so that ``/ T`` stays defined).
    """
    members = probs.unsqueeze(0) if probs.dim() == 2 else probs
    logp = torch.log(members.to(torch.float64))
    out = torch.logsumexp(logp, dim=0) - math.log(members.shape[0])
    return out.clamp_min(math.log(torch.finfo(torch.float64).tiny))


def scaled_log_probs(probs: Tensor, temperature: float) -> Tensor:
    """``log_softmax(log p̄ / T)``, float64 (N, C). probs: (M, N, C) or (N, C); T > 0."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return torch.log_softmax(mean_log_probs(probs) / float(temperature), dim=1)


def _nll(log_probs: Tensor, labels: Tensor) -> float:
    return float(-log_probs.gather(1, labels.view(-1, 1)).mean())


def fit_temperature(probs: Tensor, labels: Tensor,
                    bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The temperature minimising the NLL of ``softmax(log p̄ / T)`` on (probs, labels).

    probs: (M, N, C) or (N, C) held-out member probabilities; labels: (N,). Returns T in
    ``bounds`` (a float). ``xatol = 1e-6`` on ``log T``: the fitted T is exact to ~1e-6 relative.
    """
    from scipy.optimize import minimize_scalar

    lo, hi = bounds
    if not 0.0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds!r}")
    members, labels, _ = members_and_labels(probs, labels)
    logp = mean_log_probs(members)

    def objective(log_t: float) -> float:
        return _nll(torch.log_softmax(logp / math.exp(log_t), dim=1), labels)

    found = minimize_scalar(objective, bounds=(math.log(lo), math.log(hi)), method="bounded",
                            options={"xatol": 1e-6})
    temperature = math.exp(float(found.x))
    if min(abs(found.x - math.log(lo)), abs(found.x - math.log(hi))) < 1e-3:
        log.warning("temperature scaling: the fitted temperature %.4g lies at the end of the search "
                    "interval %s; the held-out data may be too small or degenerate", temperature, bounds)
    return temperature


def temperature_scaled_summary(val_probs: Tensor, val_labels: Tensor, test_probs: Tensor,
                               test_labels: Tensor, n_bins: int = 15) -> dict[str, float]:
    """Fit T on the validation set, then score the test set: the ``"temperature_scaled"`` block.

    val_probs / test_probs: (M, N_val, C) / (M, N_test, C) member probabilities; labels (N,).
    Returns ``{"temperature", "nll", "ece", "brier"}`` as plain floats; ECE uses ``n_bins``
    equal-width bins like the raw ECE.
    """
    temperature = fit_temperature(val_probs, val_labels)
    members, labels, _ = members_and_labels(test_probs, test_labels)
    logp = scaled_log_probs(members, temperature)
    scaled = logp.exp()
    return {
        "temperature": temperature,
        "nll": _nll(logp, labels),
        "ece": float(ece(scaled, labels, n_bins)),
        "brier": float(brier(scaled, labels)),
    }
