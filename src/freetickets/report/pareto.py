"""Pareto plot: quality (accuracy, NLL) of every method against its cost.

Costs on the x axis, each relative to one dense model of the same architecture:

* training FLOPs (``cost.train_flops_vs_dense`` of the evaluation), always;
* measured inference latency, when a latency file is given: a JSON object
  ``{method: latency ratio}`` (the method's measured inference time per batch divided by one
  dense model's, e.g. from ``benchmarks/ensemble.py``), read by :func:`load_latency`. Without
  it the latency panels are left out (:func:`write_report` says so in the report).

A method is on the Pareto front of a panel when no other method is at most as costly and at
least as good with one of the two strictly better (:func:`pareto_front`). Front points are
filled and joined by a step line (the best quality reachable at each cost); dominated points
are hollow. Figures use the Agg canvas without pyplot, like :mod:`freetickets.report.plots`.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from freetickets.errors import UserError
from freetickets.report.plots import _color, _save
from freetickets.report.seeds import aggregate_seeds, method_label, seed_list

__all__ = ["pareto_front", "pareto_points", "load_latency", "plot_pareto", "METRICS"]

#: Quality metrics of the plot: (flattened key, axis label, display scale, "high"/"low" is better).
METRICS: tuple[tuple[str, str, float, str], ...] = (
    ("accuracy", "Test accuracy (%)", 100.0, "high"),
    ("nll", "Test NLL", 1.0, "low"),
)

_TRAIN_KEY = "cost.train_flops_vs_dense"


def pareto_front(costs: Sequence[float], values: Sequence[float], better: str = "high") -> list[int]:
    """Indices of the non-dominated points, ordered by increasing cost.

    Point ``i`` is dominated when some ``j`` has ``cost_j <= cost_i`` and ``value_j`` at least as
    good, with one of the two strictly better. Exact duplicates do not dominate each other (both
    stay on the front). ``better``: ``"high"`` or ``"low"``.
    """
    if better not in ("high", "low"):
        raise ValueError(f"better: expected 'high' or 'low', got {better!r}")
    if len(costs) != len(values):
        raise ValueError(f"costs and values must have the same length, got {len(costs)} and {len(values)}")
    sign = 1.0 if better == "high" else -1.0
    good = [sign * v for v in values]

    def dominated(i: int) -> bool:
        return any(costs[j] <= costs[i] and good[j] >= good[i] and (costs[j] < costs[i] or good[j] > good[i])
                   for j in range(len(costs)))

    return sorted((i for i in range(len(costs)) if not dominated(i)), key=lambda i: (costs[i], -good[i]))


def load_latency(path: str | os.PathLike) -> dict[str, float]:
    """Read a latency file: a JSON object ``{method: latency ratio to one dense model}``.

    Every ratio must be a positive finite number; a bad file raises :class:`UserError` naming
    the file and what is wrong.
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--latency: no such file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--latency: {path} is not a readable JSON file ({exc})") from None
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"--latency: {path} must hold a JSON object {{method: latency ratio to dense}}")
    out: dict[str, float] = {}
    for method, value in obj.items():
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok:
            raise UserError(f"--latency: {path}: the ratio of '{method}' must be a positive number, got {value!r}")
        out[str(method)] = float(value)
    return out


def pareto_points(per_seed_results: Any, latency: Mapping[str, float] | None = None
                  ) -> dict[str, dict[str, dict[str, float]]]:
    """``{cost axis: {method: {"cost", metric keys...}}}`` (means over seeds) for the plot.

    Cost axes: ``"train_flops"`` for methods with positive training FLOPs and, given
    ``latency``, ``"latency"`` for the methods it names. A method enters an axis only with at
    least one metric of :data:`METRICS`.
    """
    agg = aggregate_seeds(seed_list(per_seed_results))
    axes: dict[str, dict[str, dict[str, float]]] = {"train_flops": {}}
    if latency:
        axes["latency"] = {}
    for method, stats in agg.items():
        quality = {key: stats[key][0] for key, *_ in METRICS if key in stats and math.isfinite(stats[key][0])}
        if not quality:
            continue
        flops = stats.get(_TRAIN_KEY)
        if flops is not None and flops[0] > 0:
            axes["train_flops"][method] = {"cost": flops[0], **quality}
        if latency and method in latency:
            axes["latency"][method] = {"cost": latency[method], **quality}
    return {axis: points for axis, points in axes.items() if points}


_AXIS_LABELS = {"train_flops": "Training FLOPs (× one dense model)",
                "latency": "Inference latency (× one dense model)"}
_AXIS_TITLES = {"train_flops": "training FLOPs", "latency": "inference latency"}


def _panel(ax, points: Mapping[str, Mapping[str, float]], metric: str, label: str, scale: float,
           better: str, cost_label: str) -> None:
    methods = [m for m in points if metric in points[m]]
    costs = [points[m]["cost"] for m in methods]
    values = [points[m][metric] * scale for m in methods]
    front = pareto_front(costs, values, better)
    for i, method in enumerate(methods):
        on_front = i in front
        ax.scatter(costs[i], values[i], s=55, color=_color(method), edgecolors=_color(method),
                   facecolors=_color(method) if on_front else "none", linewidths=1.6, zorder=3)
    if len(front) > 1:
        ax.step([costs[i] for i in front], [values[i] for i in front], where="post", color="0.35",
                linewidth=1.0, linestyle="--", zorder=2)
    if costs:
        ax.set_xscale("log")
        lo, hi = min(costs), max(costs)
        ax.set_xlim(lo / 1.5, hi * 1.5)
        # labelled ticks at 1-2-5 steps as plain ratios ("0.2×"), none on the minor ticks
        ax.xaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(cost_label)
    ax.set_ylabel(label + (" (higher is better)" if better == "high" else " (lower is better)"), fontsize=9)
    ax.grid(True, alpha=0.3)


def plot_pareto(per_seed_results: Any, path: str | os.PathLike,
                latency: Mapping[str, float] | None = None) -> Path:
    """Draw accuracy and NLL against training FLOPs (and latency, when given) to ``path`` (PNG).

    One row of panels per cost axis, one column per metric; one legend (colour = method) for all.
    Raises ``ValueError`` when no method has a cost and a metric to draw.
    """
    axes_points = pareto_points(per_seed_results, latency)
    if not axes_points:
        raise ValueError("per_seed_results: no method has training FLOPs (or a latency) and accuracy/NLL")
    rows = list(axes_points)
    fig = Figure(figsize=(10.0, 3.9 * len(rows) + 0.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(rows), len(METRICS), squeeze=False)
    for r, axis in enumerate(rows):
        for c, (metric, label, scale, better) in enumerate(METRICS):
            _panel(grid[r][c], axes_points[axis], metric, label, scale, better, _AXIS_LABELS[axis])
            grid[r][c].set_title(f"{label.split(' (')[0]} vs {_AXIS_TITLES[axis]}", fontsize=10)
    methods = list(dict.fromkeys(m for points in axes_points.values() for m in points))
    handles = [Line2D([], [], marker="o", linestyle="", color=_color(m), label=method_label(m)) for m in methods]
    handles += [Line2D([], [], color="0.35", linestyle="--", label="Pareto front (filled: on it)"),
                Line2D([], [], marker="o", linestyle="", color="0.35", markerfacecolor="none",
                       label="dominated (hollow)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False)
    return _save(fig, path)
