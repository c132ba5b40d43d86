"""PNG plots for the report.

Every function draws one figure and writes it atomically (rendered to memory, then
:func:`freetickets.utils.io.atomic_write_bytes`), returning the path. Figures are built with
``matplotlib.figure.Figure`` and the Agg canvas directly, never through ``pyplot``: pyplot keeps
a global registry of open figures (a leak in long runs and a source of cross-talk between
threads and tests) and may pick an interactive backend. Without pyplot there is no global state
to touch and nothing to close; the figure is freed when the function returns.

A function raises ``ValueError`` when it has nothing to draw (no method carries the input it
needs); :func:`freetickets.report.markdown.write_report` checks the inputs first and skips such
plots.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from freetickets.report.seeds import METHOD_ORDER, aggregate_seeds, method_label, order_methods, seed_list
from freetickets.utils.io import atomic_write_bytes

__all__ = [
    "reliability_arrays",
    "plot_reliability",
    "plot_metric_vs_flops",
    "plot_disagreement_heatmaps",
    "plot_ood_histograms",
    "plot_corruption_severity",
]

_DPI = 110

# (axis label, scale) of metrics commonly plotted; other keys are shown as they are.
_METRIC_LABELS: dict[str, tuple[str, float]] = {
    "accuracy": ("Test accuracy (%)", 100.0),
    "nll": ("Test NLL", 1.0),
    "ece": ("ECE (%)", 100.0),
    "brier": ("Brier score", 1.0),
    "corrupted.accuracy": ("Corrupted accuracy (%)", 100.0),
    "corrupted.nll": ("Corrupted NLL", 1.0),
    "ood_mean.auroc": ("OoD AUROC (%)", 100.0),
}


def _color(method: str) -> Any:
    """A stable colour per method (the same method has the same colour in every plot)."""
    from matplotlib import colormaps

    # tab10, then tab20's light shades: 20 distinct colours (tab10 alone repeats from the 11th method on)
    palette = list(colormaps["tab10"].colors) + list(colormaps["tab20"].colors[1::2])
    if method in METHOD_ORDER:
        return palette[METHOD_ORDER.index(method) % len(palette)]
    return palette[(len(METHOD_ORDER) + sum(map(ord, method))) % len(palette)]


def _figure(n_panels: int, max_cols: int = 3, panel_size: tuple[float, float] = (4.0, 3.4)):
    """A constrained-layout figure with an Agg canvas and a grid of ``n_panels`` axes."""
    ncols = max(1, min(n_panels, max_cols))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _bins_vector(x: Any, name: str) -> np.ndarray:
    """One bin statistic as a 1-D array; a leading members axis of size 1 is dropped."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    while arr.ndim > 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise ValueError(
            f"bins: {name!r} has shape {arr.shape}; pass the bins of the ensemble prediction "
            "(probs of shape (N, C)), one vector per statistic"
        )
    return arr


def reliability_arrays(bins: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Normalise reliability-diagram bins to ``(confidence, accuracy, count, edges)`` arrays.

    Accepts what a calibration routine may return: a mapping with keys ``"confidence"``,
    ``"accuracy"``, ``"count"`` (plural spellings accepted, optional ``"edges"``/``"bin_edges"``
    of length n+1), an object with those attributes (dataclass, named tuple), or a plain
    3-tuple ``(confidence, accuracy, count)``. Values may be lists, NumPy arrays or tensors.
    Without edges the bins are taken as equal-width on [0, 1], the project's ECE convention.
    This matches ``freetickets.metrics.calibration.reliability_bins(probs, labels)`` called on
    the ensemble probabilities (N, C) (a leading members axis of size 1 is dropped too).
    """

    def pick(getter, names):
        for n in names:
            v = getter(n)
            if v is not None:
                return v
        return None

    if isinstance(bins, Mapping):
        getter = bins.get
    elif isinstance(bins, (tuple, list)) and len(bins) in (3, 4) and not hasattr(bins, "_fields"):
        parts = list(bins)
        getter = {"confidence": parts[0], "accuracy": parts[1], "count": parts[2],
                  "edges": parts[3] if len(parts) == 4 else None}.get
    else:
        getter = lambda n: getattr(bins, n, None)  # noqa: E731
    conf = pick(getter, ("confidence", "confidences", "conf"))
    acc = pick(getter, ("accuracy", "accuracies", "acc"))
    count = pick(getter, ("count", "counts"))
    if conf is None or acc is None or count is None:
        raise ValueError(
            "bins: expected (confidence, accuracy, count) or a mapping/object with keys "
            "'confidence', 'accuracy', 'count'"
        )
    conf, acc, count = (_bins_vector(v, name) for v, name in ((conf, "confidence"), (acc, "accuracy"), (count, "count")))
    if not (conf.shape == acc.shape == count.shape):
        raise ValueError(
            f"bins: confidence, accuracy and count must have the same length, got "
            f"{conf.size}, {acc.size}, {count.size}"
        )
    edges = pick(getter, ("edges", "bin_edges"))
    edges = _to_numpy(edges) if edges is not None else np.linspace(0.0, 1.0, conf.size + 1)
    if edges.size != conf.size + 1:
        raise ValueError(f"bins: expected {conf.size + 1} bin edges, got {edges.size}")
    return conf, acc, count, edges


def _ece_from_bins(conf: np.ndarray, acc: np.ndarray, count: np.ndarray) -> float:
    keep = (count > 0) & np.isfinite(conf) & np.isfinite(acc)
    total = count[keep].sum()
    if total <= 0:
        return float("nan")
    return float((count[keep] * np.abs(acc[keep] - conf[keep])).sum() / total)


def plot_reliability(per_method: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Reliability diagrams, one panel per method.

    ``per_method[method]`` holds that method's ensemble reliability bins in any form
    :func:`reliability_arrays` accepts. Bars show the accuracy of each non-empty bin, the red
    band the gap to the bin's mean confidence, the dashed line perfect calibration; the title
    carries the ECE recomputed from the bins (size-weighted mean of |accuracy − confidence|).
    """
    methods = order_methods(per_method)
    if not methods:
        raise ValueError("per_method: no reliability bins to plot")
    fig, axes = _figure(len(methods))
    for ax, method in zip(axes, methods):
        conf, acc, count, edges = reliability_arrays(per_method[method])
        keep = (count > 0) & np.isfinite(acc) & np.isfinite(conf)
        left, width = edges[:-1][keep], np.diff(edges)[keep]
        ax.bar(left, acc[keep], width=width, align="edge", color=_color(method), edgecolor="black",
               linewidth=0.6, label="accuracy")
        ax.bar(left, conf[keep] - acc[keep], bottom=acc[keep], width=width, align="edge",
               color="tab:red", alpha=0.35, edgecolor="tab:red", linewidth=0.6, label="gap to confidence")
        ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1.0)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("Confidence")
        ax.set_ylabel("Accuracy")
        ece = _ece_from_bins(conf, acc, count)
        ax.set_title(f"{method_label(method)}\nECE {ece * 100:.2f}%", fontsize=10)
    axes[0].legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def _metric_label(metric: str) -> tuple[str, float]:
    return _METRIC_LABELS.get(metric, (metric, 1.0))


def plot_metric_vs_flops(per_seed_results: Any, metric: str | Sequence[str], path: str | os.PathLike) -> Path:
    """Quality against training cost: one panel per metric, one labelled point per method.

    ``per_seed_results`` is a list of ``{method: eval_obj}`` (or one such mapping); ``metric``
    a flattened key (see :mod:`freetickets.report.tables`) or several, e.g.
    ``("accuracy", "nll")``. x is training FLOPs relative to one dense model (log scale);
    with several seeds the point is the mean with ±std error bars.
    """
    metrics = [metric] if isinstance(metric, str) else list(metric)
    if not metrics:
        raise ValueError("metric: expected at least one metric key")
    seeds = seed_list(per_seed_results)
    agg = aggregate_seeds(seeds)
    several = len(seeds) > 1
    points: dict[str, list[tuple[str, float, float, float, float]]] = {m: [] for m in metrics}
    for method, stats in agg.items():
        x = stats.get("cost.train_flops_vs_dense")
        if x is None or not x[0] > 0:
            continue
        for m in metrics:
            if m in stats:
                points[m].append((method, x[0], x[1], stats[m][0], stats[m][1]))
    if not any(points.values()):
        raise ValueError(f"per_seed_results: no method has both training FLOPs and {', '.join(metrics)}")
    fig, axes = _figure(len(metrics), max_cols=2, panel_size=(5.0, 3.8))
    labels: list[tuple[Any, list[Any], list[float], list[float]]] = []  # (axes, texts, x, y) per panel
    for ax, m in zip(axes, metrics):
        label, scale = _metric_label(m)
        texts, px, py = [], [], []
        for method, x, xs, y, ys in points[m]:
            ax.errorbar(x, y * scale, xerr=xs if several and xs > 0 else None,
                        yerr=ys * scale if several else None, fmt="o", color=_color(method),
                        capsize=3, markersize=7, label=method_label(method))
            texts.append(ax.text(x, y * scale, method_label(method), fontsize=8))
            px.append(x)
            py.append(y * scale)
        labels.append((ax, texts, px, py))
        xs_all = [p[1] for p in points[m]]
        if xs_all:
            ax.set_xscale("log")
            lo, hi = min(xs_all), max(xs_all)
            ax.set_xlim(lo / 1.6, hi * 1.6)
            # labelled ticks at 1-2-3-5 steps: a log axis spanning < 10× otherwise shows one label
            ax.xaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 3.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("Training FLOPs (× one dense model)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{label} vs training cost", fontsize=10)
        ax.margins(y=0.15)  # room above and below the extreme points for their labels
    _place_labels(fig, labels)
    return _save(fig, path)


def _place_labels(fig: Figure, panels: Sequence[tuple[Any, list[Any], list[float], list[float]]]) -> None:
    """Move point labels so that they overlap neither each other nor the points, with a thin
    line to their point when moved away (``adjustText``: methods at the same cost, e.g. dense,
    MC dropout and snapshot at 1x, otherwise print on top of each other). The layout is fixed
    first, since the placement works in display coordinates; a fixed iteration count (not
    adjustText's default time limit) keeps the result the same on a busy machine. Should labels
    still overlap, the panel also gets a legend (the colours name the methods)."""
    from adjustText import adjust_text

    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for ax, texts, x, y in panels:
        if not texts:
            continue
        adjust_text(texts, x=x, y=y, ax=ax, ensure_inside_axes=True, expand=(1.2, 1.6), force_text=(0.5, 1.0),
                    force_static=(0.3, 0.6), iter_lim=500, arrowprops={"arrowstyle": "-", "color": "0.45", "lw": 0.6})
        boxes = [t.get_window_extent(renderer) for t in texts]
        if any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]):
            ax.legend(fontsize=7)


def _first_seed(results: Any) -> Mapping[str, Any]:
    return seed_list(results)[0]


def _square_matrix(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    try:
        mat = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] < 2:
        return None
    return mat


def plot_disagreement_heatmaps(results: Any, path: str | os.PathLike) -> Path:
    """Pairwise prediction-disagreement heatmaps (M×M), one per ensemble method, values annotated.

    ``results`` is ``{method: eval_obj}`` (a list of per-seed mappings uses the first seed: a
    matrix is a property of one set of members, not something to average). Methods with
    fewer than two members are skipped. All panels share one colour scale so that diversity can
    be compared across methods.
    """
    seed = _first_seed(results)
    mats = {}
    for method in order_methods(seed):
        mat = _square_matrix((seed[method].get("diversity") or {}).get("disagreement_matrix"))
        if mat is not None:
            mats[method] = mat
    if not mats:
        raise ValueError("results: no method has a disagreement matrix with at least two members")
    vmax = max(float(np.nanmax(m)) for m in mats.values())
    vmax = vmax if vmax > 0 else 1.0
    fig, axes = _figure(len(mats), panel_size=(3.8, 3.4))
    image = None
    for ax, (method, mat) in zip(axes, mats.items()):
        n = mat.shape[0]
        image = ax.imshow(mat, cmap="viridis", vmin=0.0, vmax=vmax)
        ticks = np.arange(n)
        ax.set_xticks(ticks, [str(i + 1) for i in ticks])
        ax.set_yticks(ticks, [str(i + 1) for i in ticks])
        ax.set_xlabel("Member")
        ax.set_ylabel("Member")
        if n <= 12:
            size = 9 if n <= 5 else 6
            for i in range(n):
                for j in range(n):
                    v = mat[i, j]
                    ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=size,
                            color="black" if v > 0.6 * vmax else "white")
        off = mat[~np.eye(n, dtype=bool)]
        ax.set_title(f"{method_label(method)}\nmean disagreement {np.nanmean(off):.3f}", fontsize=10)
    fig.colorbar(image, ax=axes, shrink=0.8, label="Disagreement")
    return _save(fig, path)


def plot_ood_histograms(per_method: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Histograms of the ensemble's maximum softmax probability, ID against each OoD set.

    ``per_method[method]`` is ``{"id": scores, ood_name: scores, ...}`` (1-D arrays, lists or
    tensors). One row per method, one panel per OoD set; densities, so sets of different sizes
    compare. A method without ``"id"`` scores or without any OoD set is skipped.
    """
    rows: list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]] = []
    for method in order_methods(per_method):
        scores = per_method[method] or {}
        if "id" not in scores:
            continue
        others = [(name, _to_numpy(s)) for name, s in scores.items() if name != "id"]
        if others:
            rows.append((method, _to_numpy(scores["id"]), others))
    if not rows:
        raise ValueError("per_method: no method has both 'id' and OoD scores")
    ncols = max(len(r[2]) for r in rows)
    fig = Figure(figsize=(3.8 * ncols, 2.9 * len(rows)), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(rows), ncols, squeeze=False)
    all_scores = np.concatenate([r[1] for r in rows] + [s for r in rows for _, s in r[2]])
    finite = all_scores[np.isfinite(all_scores)]
    lo = float(finite.min()) if finite.size else 0.0
    lo = min(lo, 1.0 - 1e-3)
    edges = np.linspace(lo, 1.0, 31)
    for r, (method, id_scores, others) in enumerate(rows):
        for c in range(ncols):
            ax = grid[r, c]
            if c >= len(others):
                ax.set_visible(False)
                continue
            name, ood = others[c]
            ax.hist(id_scores, bins=edges, density=True, alpha=0.55, color=_color(method), label="ID (test)")
            ax.hist(ood, bins=edges, density=True, alpha=0.55, color="tab:gray", label=f"OoD: {name}")
            ax.set_title(f"{method_label(method)}: ID vs {name}", fontsize=9)
            ax.set_xlabel("Ensemble max softmax probability")
            ax.set_ylabel("Density")
            ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_corruption_severity(results: Any, path: str | os.PathLike) -> Path:
    """Accuracy against corruption severity, one line per method (severity 0 = clean test set).

    ``results`` is ``{method: eval_obj}`` or a list of per-seed mappings (mean ± std error bars
    over seeds). Methods without ``corrupted.by_severity`` are skipped.
    """
    seeds = seed_list(results)
    agg = aggregate_seeds(seeds)
    several = len(seeds) > 1
    fig, axes = _figure(1, panel_size=(6.0, 4.0))
    ax = axes[0]
    drawn = 0
    for method, stats in agg.items():
        sev = sorted(
            int(k.split(".")[1][len("severity_"):])
            for k in stats
            if k.startswith("corrupted.severity_") and k.endswith(".accuracy")
        )
        if not sev:
            continue
        xs = ([0] if "accuracy" in stats else []) + sev
        ys = ([stats["accuracy"]] if "accuracy" in stats else []) + [
            stats[f"corrupted.severity_{s}.accuracy"] for s in sev
        ]
        ax.errorbar(xs, [y[0] * 100 for y in ys], yerr=[y[1] * 100 for y in ys] if several else None,
                    marker="o", capsize=3, color=_color(method), label=method_label(method))
        drawn += 1
    if not drawn:
        raise ValueError("results: no method has corruption results by severity")
    ax.set_xlabel("Corruption severity (0 = clean)")
    ax.set_ylabel("Accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy under corruption", fontsize=10)
    return _save(fig, path)

