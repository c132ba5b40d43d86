"""The paper's analysis plots: ensemble size (``ensemble_size.png``) and function-space
trajectories (``tsne_trajectories.png``).

Same conventions as :mod:`freetickets.report.plots` (Figure + Agg canvas, no pyplot, atomic
writes, ``ValueError`` when there is nothing to draw).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from freetickets.report.plots import _color, _figure, _metric_label, _save
from freetickets.report.tables import _seed_list, method_label, order_methods

__all__ = ["ensemble_size_curves", "plot_ensemble_size"]

SIZE_METRICS = ("accuracy", "nll", "ece")


def ensemble_size_curves(per_seed_results: Any) -> dict[str, dict[str, np.ndarray]]:
    """Per method, the first-k curves averaged over the seeds that have them with the same M.

    Returns ``{method: {"k": (M,), "accuracy": (M,), "nll": (M,), "ece": (M,)}}`` from each
    evaluation object's ``"ensemble_size"`` entry; methods without it (old results) are left
    out; seeds whose M differs from the first seed's are ignored for that method.
    """
    seeds = _seed_list(per_seed_results)
    out: dict[str, dict[str, np.ndarray]] = {}
    for method in order_methods(m for s in seeds for m in s):
        curves = [s[method].get("ensemble_size") for s in seeds if method in s]
        curves = [c for c in curves if isinstance(c, Mapping) and c.get("k")]
        if not curves:
            continue
        k = list(curves[0]["k"])
        same = [c for c in curves if list(c["k"]) == k and all(len(c.get(m) or []) == len(k) for m in SIZE_METRICS)]
        if not same:
            continue
        entry = {"k": np.asarray(k, dtype=np.int64)}
        for m in SIZE_METRICS:
            entry[m] = np.mean(np.asarray([c[m] for c in same], dtype=np.float64), axis=0)
        out[method] = entry
    return out


def plot_ensemble_size(per_seed_results: Any, path: str | os.PathLike) -> Path:
    """Accuracy, NLL and ECE of the ensemble of the first k members against k, per method.

    Single-model methods (M = 1, e.g. dense) are drawn as a dashed horizontal reference line.
    With several seeds each point is the mean over seeds.
    """
    curves = ensemble_size_curves(per_seed_results)
    if not curves:
        raise ValueError("per_seed_results: no method has an 'ensemble_size' curve")
    k_max = max(int(c["k"][-1]) for c in curves.values())
    fig, axes = _figure(len(SIZE_METRICS), max_cols=3, panel_size=(4.2, 3.4))
    for ax, metric in zip(axes, SIZE_METRICS):
        label, scale = _metric_label(metric)
        for method, c in curves.items():
            y = c[metric] * scale
            if len(c["k"]) == 1:
                ax.axhline(y[0], color=_color(method), linestyle="--", linewidth=1.2, label=method_label(method))
            else:
                ax.plot(c["k"], y, marker="o", color=_color(method), label=method_label(method))
        ax.set_xlabel("Ensemble size k (first k members)")
        ax.set_ylabel(label)
        ax.set_xticks(range(1, k_max + 1))
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, path)

