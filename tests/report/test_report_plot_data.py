"""The plots draw the numbers they are given (issue 13): each figure is captured before it is
saved and its artists are compared with the input data (bar heights, point coordinates, image
arrays, histogram densities, the ECE in the title), not only the PNG header."""
from __future__ import annotations

import numpy as np
import pytest

from freetickets.report import plots
from freetickets.report.plots import (plot_corruption_severity, plot_disagreement_heatmaps, plot_metric_vs_flops,
                                      plot_ood_histograms, plot_reliability)



def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def test_reliability_bars_are_the_bin_accuracies(tmp_path, figures):
    conf = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    acc = np.array([0.0, 0.2, 0.6, 0.65, 0.95])
    count = np.array([0, 10, 20, 30, 40])
    plot_reliability({"dst": (conf, acc, count)}, tmp_path / "r.png")
    (ax,) = _visible_axes(figures[0])
    bars = ax.containers[0]
    assert [b.get_height() for b in bars] == pytest.approx(acc[1:].tolist())  # the empty bin is not drawn
    assert [b.get_x() for b in bars] == pytest.approx([0.2, 0.4, 0.6, 0.8])  # left edges of 5 equal bins
    ece = (10 * 0.1 + 20 * 0.1 + 30 * 0.05 + 40 * 0.05) / 100  # sum n_k/N |acc_k - conf_k| by hand
    assert f"ECE {ece * 100:.2f}%" in ax.get_title()


def test_metric_vs_flops_points(tmp_path, figures, one_seed):
    plot_metric_vs_flops(one_seed, ("accuracy", "nll"), tmp_path / "f.png")
    acc_ax, nll_ax = _visible_axes(figures[0])
    for ax, key, scale in ((acc_ax, "accuracy", 100.0), (nll_ax, "nll", 1.0)):
        points = sorted((float(l.get_xdata()[0]), float(l.get_ydata()[0])) for l in ax.lines)
        expect = sorted((r["cost"]["train_flops_vs_dense"], r["ensemble"][key] * scale) for r in one_seed[0].values())
        assert np.allclose(points, expect, rtol=1e-12) and len(points) == len(expect) == 6
        assert ax.get_xscale() == "log"


def test_disagreement_heatmaps_show_the_matrices(tmp_path, figures, one_seed):
    plot_disagreement_heatmaps(one_seed[0], tmp_path / "d.png")
    axes = _visible_axes(figures[0])
    ensembles = [m for m in plots.order_methods(one_seed[0]) if one_seed[0][m]["cost"]["members"] > 1]
    assert len(axes) == len(ensembles)
    for ax, method in zip(axes, ensembles):
        assert np.allclose(np.asarray(ax.images[0].get_array()), one_seed[0][method]["diversity"]["disagreement_matrix"])


def test_corruption_severity_lines(tmp_path, figures, one_seed):
    plot_corruption_severity(one_seed[0], tmp_path / "c.png")
    (ax,) = _visible_axes(figures[0])
    lines = [l for l in ax.lines if len(l.get_xdata()) > 1]
    assert len(lines) == len(one_seed[0])
    got = sorted(tuple(np.round(np.asarray(l.get_ydata(), dtype=float), 9)) for l in lines)
    expect = sorted(tuple(np.round([100 * r["ensemble"]["accuracy"]] +
                                   [100 * s["accuracy"] for s in r["ensemble"]["corrupted"]["by_severity"]], 9))
                    for r in one_seed[0].values())
    assert got == expect
    assert all(list(np.asarray(l.get_xdata(), dtype=float)) == [0, 1, 2, 3, 4, 5] for l in lines)


def test_ood_histograms_are_densities_of_the_scores(tmp_path, figures):
    rng = np.random.default_rng(0)
    ids, ood = rng.beta(8, 1, 200), rng.beta(2, 2, 100)
    plot_ood_histograms({"dst": {"id": ids, "noise": ood}}, tmp_path / "o.png")
    (ax,) = _visible_axes(figures[0])
    edges = np.linspace(min(ids.min(), ood.min()), 1.0, 31)
    heights = [p.get_height() for p in ax.patches]
    assert len(heights) == 60
    assert heights[:30] == pytest.approx(np.histogram(ids, edges, density=True)[0].tolist())
    assert heights[30:] == pytest.approx(np.histogram(ood, edges, density=True)[0].tolist())
