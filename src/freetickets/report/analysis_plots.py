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
from freetickets.report.seeds import method_label, order_methods, seed_list

__all__ = ["ensemble_size_curves", "plot_ensemble_size", "tsne_embedding", "plot_tsne_trajectories"]

SIZE_METRICS = ("accuracy", "nll", "ece")


def ensemble_size_curves(per_seed_results: Any) -> dict[str, dict[str, np.ndarray]]:
    """Per method, the first-k curves averaged over the seeds that have them with the same M.

    Returns ``{method: {"k": (M,), "accuracy": (M,), "nll": (M,), "ece": (M,)}}`` from each
    evaluation object's ``"ensemble_size"`` entry; methods without it (old results) are left
    out; seeds whose M differs from the first seed's are ignored for that method.
    """
    seeds = seed_list(per_seed_results)
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
    handles, names = axes[0].get_legend_handles_labels()
    # outside the panels: inside, a legend of up to ten methods hides points (the k = 1 column)
    fig.legend(handles, names, loc="outside right upper", fontsize=8, title="Method", title_fontsize=8)
    return _save(fig, path)



def _ticket_rows(jobs: list[Mapping[str, Any]], tickets: list[Mapping[str, Any]]) -> list[tuple[int, int, int]]:
    """``(job position, row, ticket member)`` of each ticket's epoch in the trajectories."""
    marks = []
    for t in tickets:
        member, epoch = int(t.get("member", -1)), int(t.get("epoch", -1))
        for j, job in enumerate(jobs):
            if job["kind"] == "parent":
                continue
            rows = np.nonzero(np.asarray(job["epoch"]) == epoch)[0]
            if job["tickets"] == "phase":
                rows = [r for r in rows if int(job["phase_index"][r]) == member]
            elif int(job["member"]) != member:
                continue
            if len(rows):
                marks.append((j, int(rows[-1]), member))
                break
    return marks


def tsne_embedding(jobs: list[Mapping[str, Any]], seed: int = 0) -> np.ndarray:
    """``(rows, 2)`` t-SNE of every recorded epoch of every job (rows in job order), each row the
    flattened ``(probes * classes)`` probability vector. Deterministic: fixed ``random_state``,
    PCA initialisation and the exact gradient for up to 1000 rows."""
    from sklearn.manifold import TSNE

    x = np.concatenate([np.asarray(j["probs"], dtype=np.float64).reshape(len(j["probs"]), -1) for j in jobs])
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 recorded epochs, got {n}")
    perplexity = float(min(30.0, (n - 1) / 3.0))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                method="exact" if n <= 1000 else "barnes_hut")
    return tsne.fit_transform(x)


def plot_tsne_trajectories(per_method: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """One panel per method: the t-SNE of the run's function-space trajectories.

    ``per_method[m] = {"jobs": load_trajectories(run), "tickets": manifest["tickets"]}``. Each
    job is a line (colour = member; EDST's single job is coloured by refinement phase, its
    exploration grey; PF's dense parents dashed); the final tickets are stars.
    """
    from matplotlib import colormaps

    usable = {m: v for m, v in per_method.items()
              if v and v.get("jobs") and sum(len(j["probs"]) for j in v["jobs"]) >= 4}
    if not usable:
        raise ValueError("per_method: no run has at least 4 recorded trajectory epochs")
    cmap = colormaps["tab10"]
    fig, axes = _figure(len(usable), max_cols=3, panel_size=(4.2, 3.8))
    for ax, (method, v) in zip(axes, usable.items()):
        jobs = list(v["jobs"])
        emb = tsne_embedding(jobs)
        offsets = np.cumsum([0] + [len(j["probs"]) for j in jobs])
        for j, job in enumerate(jobs):
            pts = emb[offsets[j]:offsets[j + 1]]
            if job["tickets"] == "phase":
                colours = [("0.6" if str(ph) != "refine" else cmap(int(pi) % 10))
                           for ph, pi in zip(job["phase"], job["phase_index"])]
                ax.plot(pts[:, 0], pts[:, 1], color="0.75", linewidth=0.8, zorder=1)
                ax.scatter(pts[:, 0], pts[:, 1], c=colours, s=12, zorder=2)
            else:
                style = "--" if job["kind"] == "parent" else "-"
                ax.plot(pts[:, 0], pts[:, 1], style, marker=".", markersize=4, linewidth=1.0,
                        color=cmap(int(job["member"]) % 10), zorder=2)
            ax.scatter(pts[:1, 0], pts[:1, 1], marker="o", facecolors="none", edgecolors="k", s=30, zorder=3)
        for j, row, member in _ticket_rows(jobs, list(v.get("tickets") or [])):
            pt = emb[offsets[j] + row]
            ax.scatter([pt[0]], [pt[1]], marker="*", s=140, color=cmap(member % 10), edgecolors="k",
                       linewidths=0.8, zorder=4)
        ax.set_title(f"{method_label(method)}: function-space trajectories", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = _tsne_legend(usable.values(), cmap)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize=8, frameon=False)
    return _save(fig, path)


def _tsne_legend(runs: Any, cmap: Any) -> list[Any]:
    """Legend entries of :func:`plot_tsne_trajectories`: one colour per member (EDST: per
    refinement phase), EDST's exploration, PF's dense parents, first epoch and ticket markers."""
    from matplotlib.lines import Line2D

    jobs = [job for v in runs for job in v["jobs"]]
    members = sorted({int(job["member"]) for job in jobs if job["tickets"] != "phase"}
                     | {int(pi) for job in jobs if job["tickets"] == "phase"
                        for ph, pi in zip(job["phase"], job["phase_index"]) if str(ph) == "refine"})
    phases = any(job["tickets"] == "phase" for job in jobs)
    others = any(job["tickets"] != "phase" for job in jobs)
    word = "member / EDST phase" if phases and others else ("refinement phase" if phases else "member")
    handles = [Line2D([], [], color=cmap(k % 10), marker=".", label=f"{word} {k}") for k in members]
    if any(job["tickets"] == "phase" and any(str(ph) != "refine" for ph in job["phase"]) for job in jobs):
        handles.append(Line2D([], [], color="0.6", marker=".", linestyle="none", label="EDST exploration"))
    if any(job["kind"] == "parent" for job in jobs):
        handles.append(Line2D([], [], color="0.3", linestyle="--", label="dense parent (PF)"))
    handles.append(Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="k", linestyle="none",
                          label="first epoch"))
    handles.append(Line2D([], [], marker="*", markersize=11, color="0.5", markeredgecolor="k", linestyle="none",
                          label="ticket"))
    return handles
