"""Plots a reader can read (issue 18 item 7): point labels of the FLOPs plot do not overlap,
the ensemble-size legend sits outside the panels, the t-SNE plot has a legend. The figures are
captured before saving and their artists' display boxes compared."""
from __future__ import annotations

import numpy as np

from freetickets.report.analysis_plots import plot_ensemble_size, plot_tsne_trajectories
from freetickets.report.plots import plot_metric_vs_flops
from freetickets.report.seeds import method_label



def _boxes(fig, artists):
    renderer = fig.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists]


def _crowded(make_eval):
    """Three methods at 1x cost with nearly equal accuracy and NLL, two at 3x: the labels of the
    demo that used to print on top of each other (Dense / MC dropout / Snapshot, BatchEnsemble / PF)."""
    res = {m: make_eval(m) for m in ("dense", "deep", "dst", "edst", "pf", "static")}
    for method, acc, nll, flops in (("dense", 0.460, 1.343, 1.0), ("static", 0.462, 1.347, 1.0),
                                    ("deep", 0.458, 1.345, 1.0), ("pf", 0.436, 1.359, 3.1),
                                    ("dst", 0.437, 1.358, 3.0), ("edst", 0.51, 1.21, 0.5)):
        res[method]["ensemble"].update(accuracy=acc, nll=nll)
        res[method]["cost"]["train_flops_vs_dense"] = flops
    return res


def test_flops_plot_labels_do_not_overlap_and_name_every_point(tmp_path, figures, factory):
    res = _crowded(factory[0])
    plot_metric_vs_flops([res], ("accuracy", "nll"), tmp_path / "f.png")
    fig = figures[0]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    for ax, key, scale in zip(axes, ("accuracy", "nll"), (100.0, 1.0)):
        labels = [t for t in ax.texts if t.get_text()]
        assert sorted(t.get_text() for t in labels) == sorted(method_label(m) for m in res)
        boxes = _boxes(fig, labels)
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert not boxes[i].overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
        # the points themselves stay where the data puts them
        points = sorted((float(l.get_xdata()[0]), float(l.get_ydata()[0])) for l in ax.lines)
        expect = sorted((r["cost"]["train_flops_vs_dense"], r["ensemble"][key] * scale) for r in res.values())
        assert np.allclose(points, expect, rtol=1e-12)


def _with_curves(res):
    for ev in res.values():
        m = ev["cost"]["members"]
        ev["ensemble_size"] = {"k": list(range(1, m + 1)), "accuracy": [0.8 + 0.01 * k for k in range(m)],
                               "nll": [0.5 - 0.02 * k for k in range(m)], "ece": [0.05 - 0.005 * k for k in range(m)]}
    return res


def test_ensemble_size_legend_is_outside_every_panel(tmp_path, figures, factory):
    res = _with_curves(factory[1]())
    plot_ensemble_size([res], tmp_path / "e.png")
    fig = figures[0]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert all(ax.get_legend() is None for ax in axes)
    (legend,) = fig.legends
    assert sorted(t.get_text() for t in legend.get_texts()) == sorted(method_label(m) for m in res)
    (box,) = _boxes(fig, [legend])
    assert not any(box.overlaps(ax_box) for ax_box in _boxes(fig, axes))


def _job(job, member, tickets, phases, phase_index, kind="train", seed=0):
    rng = np.random.default_rng(seed + 10 * job)
    probs = rng.dirichlet(np.ones(3), size=(len(phases), 6))
    return {"job": job, "member": member, "kind": kind, "tickets": tickets, "probs": probs.astype(np.float32),
            "epoch": np.arange(len(phases)), "phase": np.asarray(phases), "phase_index": np.asarray(phase_index)}


def test_tsne_plot_has_a_legend_for_colours_and_markers(tmp_path, figures):
    deep = {"jobs": [_job(0, 0, "best", ["train"] * 3, [0] * 3), _job(1, 1, "best", ["train"] * 3, [0] * 3)],
            "tickets": [{"member": 0, "epoch": 2}, {"member": 1, "epoch": 1}]}
    edst = {"jobs": [_job(0, 0, "phase", ["explore", "refine", "refine", "refine", "refine"], [0, 0, 0, 1, 1],
                          seed=5)],
            "tickets": [{"member": 0, "epoch": 2}, {"member": 1, "epoch": 4}]}
    plot_tsne_trajectories({"deep": deep, "edst": edst}, tmp_path / "t.png")
    (legend,) = figures[0].legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "member / EDST phase 0", "member / EDST phase 1", "EDST exploration", "first epoch", "ticket"]
    plot_tsne_trajectories({"deep": deep}, tmp_path / "d.png")
    assert [t.get_text() for t in figures[1].legends[0].get_texts()] == ["member 0", "member 1", "first epoch",
                                                                          "ticket"]
