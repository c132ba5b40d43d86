"""End-to-end report writing on synthetic results: report.md, PNG plots, results.json."""
from __future__ import annotations

import json

import numpy as np
import pytest

from freetickets.report import (
    plot_corruption_severity,
    plot_disagreement_heatmaps,
    plot_metric_vs_flops,
    plot_ood_histograms,
    plot_reliability,
    reliability_arrays,
    write_report,
    write_results_json,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 100


def _artifacts(methods):
    rng = np.random.default_rng(0)
    conf = np.linspace(1 / 30, 29 / 30, 15)
    return {
        m: {
            "reliability": {"confidence": conf, "accuracy": conf - 0.03, "count": np.r_[np.zeros(4), np.ones(11) * 10]},
            "ood_scores": {"id": rng.beta(8, 1, 200), "noise": rng.beta(2, 2, 100), "shuffled": rng.beta(3, 2, 100)},
        }
        for m in methods
    }


def test_write_report_with_artifacts(tmp_path, three_seeds):
    out = tmp_path / "rep"
    path = write_report(out, three_seeds, data_name="mnist1d", artifacts=_artifacts(["dense", "dst"]),
                        command="freetickets demo --quick", notes=["synthetic numbers"])
    assert path == out / "report.md"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# FreeTickets report: mnist1d")
    assert "freetickets demo --quick" in text and "synthetic numbers" in text
    for section in ("## Main comparison", "## Out-of-distribution detection", "## Corruption robustness",
                    "## Ensemble members", "## Plots", "## Conventions"):
        assert section in text
    for label in ("Dense (single)", "Deep ensemble", "DST ensemble", "EDST ensemble", "PF ensemble",
                  "Static sparse ensemble"):
        assert label in text
    assert "±" in text
    assert "logsumexp" in text and "15 equal-width bins" in text and "FPR95" in text
    assert "validation split" in text and "never the test set" in text
    images = [line[line.index("](") + 2:-1] for line in text.splitlines() if line.startswith("![")]
    assert len(images) == 6  # flops, pareto, corruption, disagreement, reliability, OoD histograms
    for name in images:
        assert "/" not in name  # relative to report.md
        assert _is_png(out / name)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_write_report_without_artifacts_or_optional_parts(tmp_path, factory):
    make_eval, _ = factory
    results = {"dense": make_eval("dense", ood=False, corrupted=False, diversity=False),
               "dst": make_eval("dst", ood=False, corrupted=False)}
    path = write_report(tmp_path, [results], data_name="toy")
    text = path.read_text(encoding="utf-8")
    assert "## Out-of-distribution detection" not in text and "## Corruption robustness" not in text
    assert "Command:" not in text
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["accuracy_nll_vs_flops.png", "disagreement.png", "pareto.png"]
    assert all(_is_png(tmp_path / p) for p in pngs)
    # nothing plottable at all: still a report
    bare = write_report(tmp_path / "bare", [{"dense": {"ensemble": {"accuracy": 0.5}}}], data_name="toy")
    assert "## Plots" not in bare.read_text(encoding="utf-8") and not list((tmp_path / "bare").glob("*.png"))


def test_results_json_layout(tmp_path, three_seeds):
    three_seeds[0]["dst"]["members"][0]["nll"] = np.float32(0.5)  # numpy scalars become plain numbers
    three_seeds[0]["dst"]["ensemble"]["brier"] = float("nan")  # strict JSON: NaN becomes null
    path = write_results_json(tmp_path / "results.json", "mnist1d", three_seeds, extra={"command": "x"})
    obj = json.loads(path.read_text(encoding="utf-8"))
    assert set(obj) == {"data", "methods", "seeds", "summary", "num_seeds", "command", "claims", "ensemble_size"}
    assert obj["data"] == "mnist1d" and obj["num_seeds"] == 3 and len(obj["seeds"]) == 3
    assert list(obj["methods"]) == ["dense", "deep", "dst", "edst", "pf", "static"]
    dst = obj["methods"]["dst"]
    assert set(dst) == {"ensemble", "members", "diversity", "cost"}
    assert dst["ensemble"]["accuracy"] == pytest.approx(0.91) and dst["ensemble"]["brier"] is None
    assert dst["members"][0]["nll"] == pytest.approx(0.5)
    assert obj["summary"]["dst"]["accuracy"]["mean"] == pytest.approx(0.92)
    assert obj["summary"]["dst"]["accuracy"]["std"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="reserved"):
        write_results_json(tmp_path / "r2.json", "mnist1d", three_seeds, extra={"methods": {}})


@pytest.mark.parametrize("form", ["dict", "tuple", "object"])
def test_reliability_adapter_forms(form):
    from collections import namedtuple

    conf, acc, count = [0.1, 0.5, 0.9], [0.0, 0.5, 1.0], [0, 4, 6]
    bins = {"dict": {"confidence": conf, "accuracy": acc, "count": count},
            "tuple": (conf, acc, count),
            "object": namedtuple("Bins", "confidence accuracy count")(conf, acc, count)}[form]
    c, a, n, edges = reliability_arrays(bins)
    assert c.tolist() == conf and a.tolist() == acc and n.tolist() == count
    assert edges.tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1])
    with pytest.raises(ValueError, match="bins"):
        reliability_arrays({"confidence": conf})


def test_plot_functions_write_pngs_and_refuse_empty_input(tmp_path, one_seed):
    conf = np.linspace(0.05, 0.95, 10)
    assert _is_png(plot_reliability({"dst": (conf, conf, np.ones(10))}, tmp_path / "r.png"))
    assert _is_png(plot_metric_vs_flops(one_seed, "accuracy", tmp_path / "f.png"))
    assert _is_png(plot_disagreement_heatmaps(one_seed[0], tmp_path / "d.png"))
    assert _is_png(plot_corruption_severity(one_seed[0], tmp_path / "c.png"))
    assert _is_png(plot_ood_histograms({"dst": {"id": [0.9, 0.95, 1.0], "noise": [0.3, 0.5]}}, tmp_path / "o.png"))
    with pytest.raises(ValueError):
        plot_reliability({}, tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_disagreement_heatmaps({"dense": {"diversity": {"disagreement_matrix": [[0.0]]}}}, tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_ood_histograms({"dst": {"id": [0.9]}}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_no_pyplot_figures_leak(tmp_path, one_seed):
    import sys

    plot_metric_vs_flops(one_seed, ("accuracy", "nll"), tmp_path / "f.png")
    if "matplotlib.pyplot" in sys.modules:  # another test may have imported it; we must not add figures
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []


def test_adapter_accepts_metrics_reliability_bins(tmp_path):
    import torch

    from freetickets.metrics import calibration

    from freetickets.report.plots import _ece_from_bins

    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(300, 10, generator=gen), dim=-1)
    labels = torch.randint(0, 10, (300,), generator=gen)
    conf, acc, count, edges = reliability_arrays(calibration.reliability_bins(probs, labels, n_bins=15))
    assert conf.shape == (15,) and edges.shape == (16,) and count.sum() == 300
    assert _ece_from_bins(conf, acc, count) == pytest.approx(float(calibration.ece(probs[None], labels)), abs=1e-6)
    assert _is_png(plot_reliability({"dst": calibration.reliability_bins(probs, labels)}, tmp_path / "r.png"))
